"""apply_plan / revert_plan / reduced_vocab over the real all-MiniLM-L6-v2 tokenizer."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from fixtures.tiny_bert import tiny_bert as make_tiny_bert
from vocab_adapters import (
    apply_plan,
    plan_from_texts,
    reduced_vocab,
    revert_plan,
    track_optimizer,
)
from vocab_adapters.demo import demo_corpus
from vocabcore import PlanMismatchError, VocabError, VocabPlan

TEXTS = demo_corpus(120)


@pytest.fixture
def tok(minilm_dir: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_dir)


@pytest.fixture(scope="module")
def plan(minilm_dir: str) -> VocabPlan:
    from transformers import AutoTokenizer

    return plan_from_texts(AutoTokenizer.from_pretrained(minilm_dir), TEXTS)


def tiny_bert(vocab_size: int, seed: int = 0) -> Any:
    return make_tiny_bert(vocab_size, seed).eval()


def snapshot(model: Any, tok: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any], str, int]:
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return state, model.config.to_dict(), tok.backend_tokenizer.to_str(), len(tok)


def assert_same(model: Any, tok: Any, snap: tuple[Any, ...]) -> None:
    state, config, tok_json, size = snap
    now = model.state_dict()
    assert now.keys() == state.keys()
    for key, value in state.items():
        assert now[key].shape == value.shape, key
        assert torch.equal(now[key], value), key
    assert model.config.to_dict() == config
    assert tok.backend_tokenizer.to_str() == tok_json
    assert len(tok) == size


def test_apply_then_revert_is_bit_exact(tok: Any, plan: VocabPlan) -> None:
    model = tiny_bert(len(tok))
    before = snapshot(model, tok)
    embedding = model.get_input_embeddings().weight
    applied = apply_plan(plan, model=model, tokenizer=tok)
    assert len(tok) == plan.new_size
    assert model.config.vocab_size == plan.new_size
    assert model.get_input_embeddings().weight.shape[0] == plan.new_size
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    revert_plan(applied)
    assert model.get_input_embeddings().weight is embedding
    assert model.get_output_embeddings().weight is embedding
    assert_same(model, tok, before)


def test_reduced_logits_equal_original_logits_on_kept_ids(tok: Any, plan: VocabPlan) -> None:
    model = tiny_bert(len(tok))
    batch = tok(TEXTS[:8], truncation=True, max_length=48, padding=True, return_tensors="pt")
    with torch.no_grad():
        full = model(**batch).logits
    kept = torch.tensor(plan.kept)
    with reduced_vocab(model, tok, plan=plan):
        reduced_batch = tok(
            TEXTS[:8], truncation=True, max_length=48, padding=True, return_tensors="pt"
        )
        expected_ids = [plan.remap(row) for row in batch["input_ids"].tolist()]
        assert reduced_batch["input_ids"].tolist() == expected_ids
        with torch.no_grad():
            reduced = model(**reduced_batch).logits
    torch.testing.assert_close(reduced, full[..., kept], rtol=0, atol=1e-6)


def _train_steps(model: Any, tok: Any, optimizer: Any, steps: int = 3) -> None:
    model.train()
    for step in range(steps):
        batch = tok(
            TEXTS[step * 4 : step * 4 + 4],
            truncation=True,
            max_length=32,
            padding=True,
            return_tensors="pt",
        )
        loss = model(**batch, labels=batch["input_ids"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


def test_training_then_revert_keeps_trained_rows(tok: Any, plan: VocabPlan) -> None:
    model = tiny_bert(len(tok))
    original = model.get_input_embeddings().weight.detach().clone()
    applied = apply_plan(plan, model=model, tokenizer=tok)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    _train_steps(model, tok, optimizer)
    revert_plan(applied, optimizer=optimizer)
    weight = model.get_input_embeddings().weight
    kept = torch.tensor(plan.kept)
    dropped = torch.ones(plan.vocab_size, dtype=torch.bool)
    dropped[kept] = False
    assert weight.shape == original.shape
    assert torch.equal(weight[dropped], original[dropped])
    assert not torch.equal(weight[kept], original[kept])
    # the optimizer now holds the model's full parameters and can go on training
    model_params = {id(p) for p in model.parameters()}
    assert all(id(p) in model_params for g in optimizer.param_groups for p in g["params"])
    assert any(p is weight for g in optimizer.param_groups for p in g["params"])
    _train_steps(model, tok, optimizer, steps=1)


def test_misuse_raises_clear_errors(tok: Any, plan: VocabPlan) -> None:
    model = tiny_bert(len(tok))
    applied = apply_plan(plan, model=model, tokenizer=tok)
    with pytest.raises(VocabError, match="already has a plan applied"):
        apply_plan(plan, model=model)
    revert_plan(applied)
    with pytest.raises(VocabError, match="already reverted"):
        revert_plan(applied)
    with pytest.raises(VocabError, match="at least one of"):
        apply_plan(plan)
    with pytest.raises(VocabError, match="AppliedPlan"):
        revert_plan(plan)  # type: ignore[arg-type]


def test_wrong_tokenizer_is_refused_and_nothing_changes(tok: Any, plan: VocabPlan) -> None:
    model = tiny_bert(len(tok))
    before = snapshot(model, tok)
    other = VocabPlan(plan.vocab_size, plan.kept, "sha256:" + "0" * 64)
    with pytest.raises(PlanMismatchError):
        apply_plan(other, model=model, tokenizer=tok)
    assert_same(model, tok, before)
    small = tiny_bert(1000)
    with pytest.raises(PlanMismatchError):
        apply_plan(plan, model=small)


def test_model_only_plan_without_fingerprint(tok: Any, plan: VocabPlan) -> None:
    model = tiny_bert(len(tok))
    before = snapshot(model, tok)
    bare = VocabPlan(plan.vocab_size, plan.kept)
    applied = apply_plan(bare, model=model)
    assert model.get_input_embeddings().num_embeddings == plan.new_size
    revert_plan(applied)
    assert_same(model, tok, before)


def test_context_manager_restores_when_the_block_raises(tok: Any, plan: VocabPlan) -> None:
    model = tiny_bert(len(tok))
    before = snapshot(model, tok)

    class Boom(Exception):
        pass

    with pytest.raises(Boom), reduced_vocab(model, tok, plan=plan):
        assert len(tok) == plan.new_size
        raise Boom
    assert_same(model, tok, before)


def test_context_manager_builds_the_plan_from_texts(tok: Any) -> None:
    model = tiny_bert(len(tok))
    before = snapshot(model, tok)
    with reduced_vocab(model, tok, texts=TEXTS[:20]) as built:
        assert built.fingerprint is not None
        assert len(tok) == built.new_size < built.vocab_size
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        track_optimizer(model, optimizer)
    assert_same(model, tok, before)
    assert any(
        p is model.get_input_embeddings().weight
        for g in optimizer.param_groups
        for p in g["params"]
    )


@pytest.mark.parametrize("stage", ["tokenizer", "embeddings", "config", "optimizer"])
def test_a_failing_stage_leaves_everything_unchanged(
    tok: Any, plan: VocabPlan, stage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault injection: make each stage's commit raise in turn."""
    from vocab_adapters.stages import config, embeddings, fast_tokenizer
    from vocab_adapters.stages import optimizer as optimizer_adapter

    module = {
        "tokenizer": fast_tokenizer,
        "embeddings": embeddings,
        "config": config,
        "optimizer": optimizer_adapter,
    }[stage]
    model = tiny_bert(len(tok))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    _train_steps(model, tok, optimizer, steps=1)
    before = snapshot(model, tok)
    state_before = copy.deepcopy(optimizer.state_dict())
    real_prepare = module.prepare

    def failing_prepare(*args: Any, **kwargs: Any) -> Any:
        prepared = real_prepare(*args, **kwargs)

        class Failing:
            swaps = getattr(prepared, "swaps", ())

            def commit(self) -> Any:
                raise RuntimeError(f"injected failure in {stage}")

        return Failing()

    monkeypatch.setattr(module, "prepare", failing_prepare)
    with pytest.raises(RuntimeError, match="injected"):
        apply_plan(plan, model=model, tokenizer=tok, optimizer=optimizer)
    assert_same(model, tok, before)
    after = optimizer.state_dict()
    assert after["param_groups"] == state_before["param_groups"]
    for key, value in state_before["state"].items():
        for name, tensor in value.items():
            assert torch.equal(after["state"][key][name], tensor)
    # and the objects are free to be reduced again
    monkeypatch.undo()
    revert_plan(apply_plan(plan, model=model, tokenizer=tok, optimizer=optimizer))


def test_torch_compile_after_apply(tok: Any, plan: VocabPlan) -> None:
    """Compile after apply: the compiled model sees the reduced shapes; revert, compile again."""
    model = tiny_bert(len(tok))
    batch = tok(TEXTS[:2], padding=True, return_tensors="pt")
    with torch.no_grad():
        full = model(**batch).logits
    applied = apply_plan(plan, model=model, tokenizer=tok)
    compiled = torch.compile(model, backend="aot_eager", dynamic=False)
    small = tok(TEXTS[:2], padding=True, return_tensors="pt")
    with torch.no_grad():
        reduced = compiled(**small).logits
    torch.testing.assert_close(reduced, full[..., torch.tensor(plan.kept)], rtol=0, atol=1e-6)
    revert_plan(applied)
    torch._dynamo.reset()
    with torch.no_grad():
        again = torch.compile(model, backend="aot_eager", dynamic=False)(**batch).logits
    torch.testing.assert_close(again, full, rtol=0, atol=1e-6)


def test_a_failing_embedding_revert_changes_nothing(
    tok: Any, plan: VocabPlan, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault injection in revert: the embeddings stage fails before it installs anything."""
    from vocab_adapters.stages import embeddings

    model = tiny_bert(len(tok))
    before = snapshot(model, tok)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    applied = apply_plan(plan, model=model, tokenizer=tok, optimizer=optimizer)
    reduced_weight = model.get_input_embeddings().weight

    def fail(self: Any) -> None:
        raise RuntimeError("injected failure while installing the full embeddings")

    with monkeypatch.context() as patch:  # the trained rows' writes into the held tensor
        patch.setattr(embeddings.RowWrites, "apply", fail)
        with pytest.raises(RuntimeError, match="injected"):
            revert_plan(applied)
    assert applied.active
    assert model.get_input_embeddings().weight is reduced_weight
    assert len(tok) == model.config.vocab_size == plan.new_size
    assert any(p is reduced_weight for g in optimizer.param_groups for p in g["params"])
    revert_plan(applied)
    assert_same(model, tok, before)
