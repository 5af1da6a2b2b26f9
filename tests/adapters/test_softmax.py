"""apply_plan(..., softmax="full" | "shifted"): the full-vocabulary loss while reduced.

References are computed with the untouched full model: cross-entropy over every output row,
labels in the original numbering. Chunks are kept smaller than the dropped rows throughout, so
the chunked normaliser is what is being checked.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from torch import nn

from fixtures.models import TinyModel, build_tiny_model, remap, sample_batch, tiny_llama_lm
from vocab_adapters import apply_plan, reduced_vocab, revert_plan
from vocab_adapters.stages import softmax as softmax_adapter
from vocabcore import VocabError, VocabPlan

CHUNK = 7
VOCAB = 211


def _llama(tied: bool) -> Callable[[], Any]:
    def build() -> Any:
        model = tiny_llama_lm(VOCAB, tied=tied, seed=3).eval()
        assert (model.lm_head.weight is model.model.embed_tokens.weight) == tied
        return model

    return build


def tiny(name: str) -> TinyModel:
    if name.startswith("llama"):
        return TinyModel(name, _llama(name == "llama-tied")(), VOCAB, None, "causal")
    return build_tiny_model(name)


MODELS = ["gpt2-lm", "llama-tied", "llama-untied", "bert-mlm", "bart-cg"]
CAUSAL = ["gpt2-lm", "llama-tied", "llama-untied"]


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(softmax_adapter, "DEFAULT_CHUNK_ROWS", CHUNK)
    yield


def batch(t: TinyModel, seed: int = 1) -> tuple[torch.Tensor, VocabPlan]:
    ids, plan = sample_batch(t, seed, fraction=0.3)
    return ids, plan


def forward_kwargs(t: TinyModel, ids: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    """Inputs of a loss call (seq2seq models build decoder inputs from the labels)."""
    return {"input_ids": ids, "labels": labels}


def full_loss(model: nn.Module, t: TinyModel, ids: torch.Tensor) -> torch.Tensor:
    """The full model's own loss: cross-entropy over every output row."""
    out = model(**forward_kwargs(t, ids, ids))
    rows = model.get_output_embeddings().weight.shape[0]
    assert out.logits.shape[-1] == rows
    return out.loss


def dropped_ids(plan: VocabPlan, rows: int) -> list[int]:
    kept = set(plan.kept)
    return [i for i in range(rows) if i not in kept]


def named_grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", MODELS)
def test_full_loss_and_gradients_equal_the_full_model(name: str) -> None:
    t = tiny(name)
    ids, plan = batch(t)
    reference = copy.deepcopy(t.model).train()
    model = t.model.train()
    torch.manual_seed(0)
    expected = full_loss(reference, t, ids)
    expected.backward()
    ref_grads = named_grads(reference)
    kept = torch.tensor(plan.kept)

    applied = apply_plan(plan, model=model, softmax="full")
    small = remap(plan, ids)
    torch.manual_seed(0)
    out = model(**forward_kwargs(t, small, small))
    assert out.logits.shape[-1] == plan.new_size  # the normaliser column stays inside the loss
    torch.testing.assert_close(out.loss, expected, rtol=1e-6, atol=1e-6)
    out.loss.backward()
    grads = named_grads(model)
    assert grads.keys() == ref_grads.keys()
    for key, grad in grads.items():
        ref = ref_grads[key]
        if ref.shape != grad.shape:  # vocabulary-sized: compare the kept rows
            dim = [i for i, (a, b) in enumerate(zip(ref.shape, grad.shape, strict=True)) if a != b]
            ref = ref.index_select(dim[0], kept)
        torch.testing.assert_close(grad, ref, rtol=1e-5, atol=1e-6, msg=key)
    # the config reads new_size again outside the labelled call
    assert model.config.vocab_size == plan.new_size
    revert_plan(applied)


@pytest.mark.parametrize("name", ["llama-tied", "bert-mlm"])
def test_dropped_rows_get_no_gradient_and_no_optimizer_state(name: str) -> None:
    t = tiny(name)
    ids, plan = batch(t)
    model = t.model.train()
    full_weights = [p for p in model.parameters() if p.shape[0] in (VOCAB, 224)]
    applied = apply_plan(plan, model=model, softmax="full")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    small = remap(plan, ids)
    for _ in range(2):
        model(**forward_kwargs(t, small, small)).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert all(p.grad is None for p in full_weights)
    for p in full_weights:
        assert p not in optimizer.state
    for state in optimizer.state.values():
        for value in state.values():
            assert value.dim() == 0 or VOCAB not in value.shape
    revert_plan(applied, optimizer=optimizer)


def test_the_normaliser_never_holds_the_dropped_logits_at_once() -> None:
    """Nothing saved for backward has a dropped-rows-sized dimension; chunks are small."""
    t = tiny("gpt2-lm")
    ids, plan = batch(t)
    model = t.model.train()
    applied = apply_plan(plan, model=model, softmax="full")
    dropped = VOCAB - plan.new_size
    assert dropped > 3 * CHUNK
    shapes: list[tuple[int, ...]] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        shapes.append(tuple(tensor.shape))
        return tensor

    small = remap(plan, ids)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        loss = model(**forward_kwargs(t, small, small)).loss
    loss.backward()
    assert shapes
    for shape in shapes:
        assert dropped not in shape and VOCAB not in shape, shape
    revert_plan(applied)


def test_bad_chunk_rows_and_mode_are_refused() -> None:
    t = tiny("gpt2-lm")
    _, plan = batch(t)
    with pytest.raises(VocabError, match="'softmax' must be 'reduced', 'full' or 'shifted'"):
        apply_plan(plan, model=t.model, softmax="fulll")
    with pytest.raises(VocabError, match="'softmax' must be"):
        apply_plan(plan, model=t.model, softmax=None)  # type: ignore[arg-type]
    with pytest.raises(VocabError, match="chunk_rows"):
        softmax_adapter.prepare(plan, t.model, (), "full", chunk_rows=0)
    with (
        pytest.raises(VocabError, match="'softmax' must be"),
        reduced_vocab(t.model, plan=plan, softmax="Full"),
    ):
        pass
    assert t.model.get_input_embeddings().weight.shape[0] == VOCAB
    assert type(t.model).__dict__.get("_vocabcore_softmax_base") is None


@pytest.mark.parametrize("name", CAUSAL)
def test_generation_never_produces_a_dropped_id(name: str) -> None:
    t = tiny(name)
    ids, plan = batch(t)
    prompt = ids[:1, :4]
    reference = copy.deepcopy(t.model)
    rows = reference.get_output_embeddings().weight.shape[0]
    settings: dict[str, Any] = {"max_new_tokens": 10, "do_sample": False}
    expected = reference.generate(
        prompt, suppress_tokens=dropped_ids(plan, rows), min_new_tokens=10, **settings
    )
    applied = apply_plan(plan, model=t.model, softmax="shifted")
    got = t.model.generate(remap(plan, prompt), min_new_tokens=10, **settings)
    assert torch.equal(got, remap(plan, expected))
    torch.manual_seed(0)
    sampled = t.model.generate(remap(plan, prompt), max_new_tokens=30, do_sample=True, top_k=0)
    assert int(sampled.max()) < plan.new_size
    revert_plan(applied)


@pytest.mark.parametrize(
    ("name", "mode"),
    [
        ("gpt2-lm", "full"),
        ("llama-tied", "shifted"),
        ("llama-untied", "full"),
        ("llama-untied", "shifted"),
        ("bert-mlm", "shifted"),
    ],
)
def test_trained_loss_carries_over_to_the_full_model(name: str, mode: str) -> None:
    """Train while reduced; the full model after revert has exactly the loss seen before."""
    t = tiny(name)
    ids, plan = batch(t)
    model = t.model.train()
    head = model.get_output_embeddings()
    original = head.weight.detach().clone()
    original_bias = None if head.bias is None else head.bias.detach().clone()
    applied = apply_plan(plan, model=model, softmax=mode)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    small = remap(plan, ids)
    for _ in range(3):
        model(**forward_kwargs(t, small, small)).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()  # no dropout in the two measurements
    with torch.no_grad():
        before = model(**forward_kwargs(t, small, small)).loss
    kept_rows = model.get_output_embeddings().weight.detach().clone()
    shift = getattr(head, softmax_adapter.SHIFT, None)
    shift_bias = getattr(head, softmax_adapter.SHIFT_BIAS, None)
    if mode == "shifted":
        assert shift is not None and bool((shift != 0).any())
        assert (shift_bias is not None) == (original_bias is not None)
        shift = shift.detach().clone()
        shift_bias = None if shift_bias is None else shift_bias.detach().clone()
    else:
        assert shift is None and shift_bias is None
    revert_plan(applied, optimizer=optimizer)
    assert not any("vocab_shift" in n for n, _ in model.named_parameters())
    with torch.no_grad():
        after = model(**forward_kwargs(t, ids, ids)).loss
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    weight = model.get_output_embeddings().weight.detach()
    drop = torch.tensor(dropped_ids(plan, weight.shape[0]))
    assert torch.equal(weight[torch.tensor(plan.kept)], kept_rows)
    want = original[drop] + shift if mode == "shifted" else original[drop]
    assert torch.equal(weight[drop], want)
    if original_bias is not None:
        bias = model.get_output_embeddings().bias.detach()
        want_bias = original_bias[drop] + (shift_bias if mode == "shifted" else 0)
        assert torch.equal(bias[drop], want_bias)


@pytest.mark.parametrize("name", ["llama-tied", "bert-mlm", "bart-cg"])
@pytest.mark.parametrize("mode", ["full", "shifted"])
def test_apply_then_revert_without_training_is_exact(name: str, mode: str) -> None:
    t = tiny(name)
    _, plan = batch(t)
    model = t.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cls, config = type(model), model.config.to_dict()
    hooks = dict(model.get_output_embeddings()._forward_hooks)
    applied = apply_plan(plan, model=model, softmax=mode)
    assert type(model) is not cls and type(model).__name__ == cls.__name__
    assert isinstance(model, cls)
    revert_plan(applied)
    after = model.state_dict()
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    assert type(model) is cls and model.config.to_dict() == config
    assert dict(model.get_output_embeddings()._forward_hooks) == hooks
    assert "_vocabcore_softmax" not in vars(model)


def test_shifted_starts_equal_to_full() -> None:
    t = tiny("llama-untied")
    ids, plan = batch(t)
    small = remap(plan, ids)
    losses = []
    for mode in ("full", "shifted"):
        model = copy.deepcopy(t.model)
        applied = apply_plan(plan, model=model, softmax=mode)
        losses.append(model(**forward_kwargs(t, small, small)).loss)
        revert_plan(applied)
    assert torch.equal(losses[0], losses[1])


def test_a_failure_while_committing_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault injection at the last step of this stage's commit, then in a later stage."""
    t = tiny("bert-mlm")
    _, plan = batch(t)
    model = t.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cls = type(model)

    def fail(model: Any, cls: type) -> None:
        raise RuntimeError("injected failure while installing the class")

    with monkeypatch.context() as patch:
        patch.setattr(softmax_adapter, "_install_class", fail)
        with pytest.raises(RuntimeError, match="injected"):
            apply_plan(plan, model=model, softmax="shifted")
    from vocab_adapters.stages import optimizer as optimizer_adapter

    def failing_prepare(*args: Any, **kwargs: Any) -> Any:
        class Failing:
            def commit(self) -> Any:
                raise RuntimeError("injected failure in the optimizer stage")

        return Failing()

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    with monkeypatch.context() as patch:
        patch.setattr(optimizer_adapter, "prepare", failing_prepare)
        with pytest.raises(RuntimeError, match="injected"):
            apply_plan(plan, model=model, optimizer=optimizer, softmax="shifted")
    assert type(model) is cls
    assert "_vocabcore_softmax" not in vars(model)
    head = model.get_output_embeddings()
    assert not head._forward_hooks and "vocab_shift" not in head._parameters
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    revert_plan(apply_plan(plan, model=model, softmax="shifted"))


def test_a_model_without_a_vocabulary_head_ignores_the_choice() -> None:
    t = tiny("bert-tokcls")
    ids, plan = batch(t)
    cls = type(t.model)
    applied = apply_plan(plan, model=t.model, softmax="shifted")
    assert type(t.model) is cls
    labels = torch.zeros_like(ids)
    assert t.model(input_ids=remap(plan, ids), labels=labels).logits.shape[-1] == 5
    revert_plan(applied)


def test_logit_softcapping_is_refused() -> None:
    from transformers import Gemma2Config, Gemma2ForCausalLM

    config = Gemma2Config(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        final_logit_softcapping=30.0,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    model = Gemma2ForCausalLM(config)
    plan = VocabPlan.from_ids([list(range(50))], vocab_size=VOCAB)
    with pytest.raises(VocabError, match="final_logit_softcapping"):
        apply_plan(plan, model=model, softmax="full")
    assert model.get_input_embeddings().weight.shape[0] == VOCAB
    revert_plan(apply_plan(plan, model=model))  # "reduced" is fine


@pytest.mark.parametrize("mode", ["full", "shifted"])
def test_a_model_whose_loss_reads_its_own_vocab_size(mode: str) -> None:
    """Gemma3ForCausalLM passes ``self.vocab_size`` (not the config's) to its loss."""
    import transformers

    if not hasattr(transformers, "Gemma3ForCausalLM"):
        pytest.skip("this transformers has no Gemma 3")
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        sliding_window=8,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=1,
        tie_word_embeddings=True,
    )
    torch.manual_seed(5)
    model = Gemma3ForCausalLM(config)
    ids = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(1))
    plan = VocabPlan.from_ids(ids.tolist(), vocab_size=VOCAB, keep=range(3))
    expected = model(input_ids=ids, labels=ids).loss
    applied = apply_plan(plan, model=model, softmax=mode)
    small = remap(plan, ids)
    out = model(input_ids=small, labels=small)
    assert out.logits.shape[-1] == plan.new_size
    torch.testing.assert_close(out.loss, expected, rtol=1e-6, atol=1e-6)
    assert model.vocab_size == plan.new_size  # back outside the labelled call
    revert_plan(applied)
    assert model.vocab_size == VOCAB


def test_a_loss_outside_the_model_can_use_the_extra_column() -> None:
    t = tiny("llama-untied")
    ids, plan = batch(t)
    reference = copy.deepcopy(t.model)
    expected = full_loss(reference, t, ids)
    model = t.model
    applied = apply_plan(plan, model=model, softmax="full")
    small = remap(plan, ids)
    hidden = model.model(input_ids=small).last_hidden_state
    logits = model.lm_head(hidden)
    assert logits.shape[-1] == plan.new_size
    column = softmax_adapter.dropped_logsumexp(model, hidden)
    scores = torch.cat([logits, column.unsqueeze(-1)], dim=-1)[:, :-1]
    loss = nn.functional.cross_entropy(scores.flatten(0, 1), small[:, 1:].flatten())
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-6)
    revert_plan(applied)
    with pytest.raises(VocabError, match="not reduced"):
        softmax_adapter.dropped_logsumexp(model, hidden)


def test_hf_trainer_trains_the_shift(tmp_path: Any) -> None:
    """A real Trainer run: its loss is the model's labelled loss, and it trains the shift."""
    from transformers import Trainer, TrainingArguments

    t = tiny("llama-tied")
    ids, plan = batch(t)
    model = t.model.train()
    small = remap(plan, ids)
    rows = [{"input_ids": row, "labels": row} for row in small]
    applied = apply_plan(plan, model=model, softmax="shifted")
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2,
        max_steps=3,
        learning_rate=1e-2,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=rows)
    trainer.train()
    shift = model.get_output_embeddings().vocab_shift
    assert bool((shift != 0).any())
    model.eval()
    with torch.no_grad():
        before = model(input_ids=small, labels=small).loss
    revert_plan(applied, optimizer=trainer.optimizer)
    with torch.no_grad():
        after = model(input_ids=ids, labels=ids).loss
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
