"""revert_plan is all or nothing: a fault at any stage, computing or installing, changes nothing.

Every test reduces a tiny BERT, the real all-MiniLM-L6-v2 tokenizer, an optimizer that existed
before apply (resume) and one created while reduced, trains a step, injects a fault into one
stage of revert, and checks that model, tokenizer, config and both optimizers are exactly as
they were before the attempt, that the plan is still active, and that a retry succeeds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

from fixtures.tiny_bert import tiny_bert
from vocab_adapters import apply_plan, plan_from_texts, revert_plan
from vocab_adapters.demo import demo_corpus
from vocab_adapters.stages import config as config_adapter
from vocab_adapters.stages import embeddings, fast_tokenizer
from vocab_adapters.stages import optimizer as optimizer_adapter
from vocab_adapters.stages import softmax as softmax_adapter
from vocab_adapters.stages.reversible import RevertStep
from vocabcore import VocabError

TEXTS = demo_corpus(60)


class Injected(Exception):
    pass


@pytest.fixture(params=["reduced", "shifted"], ids=["softmax=reduced", "softmax=shifted"])
def setup(minilm_dir: str, request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_dir)
    plan = plan_from_texts(tok, TEXTS)
    model = tiny_bert(len(tok), 0)
    resumed = torch.optim.AdamW(model.parameters(), lr=1e-2)
    _step(model, tok, resumed)
    original = {
        "embedding": model.get_input_embeddings().weight,
        "tokenizer": tok.backend_tokenizer.to_str(),
        "config": model.config.to_dict(),
        "state": {k: v.clone() for k, v in model.state_dict().items()},
    }
    applied = apply_plan(plan, model=model, tokenizer=tok, optimizer=resumed, softmax=request.param)
    late = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    _step(model, tok, resumed, late)
    applied.track(late)
    yield {"tok": tok, "model": model, "applied": applied, "opts": (resumed, late), **original}
    if applied.active:
        revert_plan(applied)


def _step(model: Any, tok: Any, *optimizers: Any) -> None:
    batch = tok(TEXTS[:4], padding=True, return_tensors="pt")
    loss = model(**batch, labels=batch["input_ids"]).loss
    loss.backward()
    for opt in optimizers:
        opt.step()
        opt.zero_grad()


def _snapshot(s: dict[str, Any]) -> dict[str, Any]:
    model, tok = s["model"], s["tok"]
    optimizers = []
    for opt in s["opts"]:
        params = [p for group in opt.param_groups for p in group["params"]]
        state = {
            id(p): {k: v.clone() for k, v in opt.state[p].items() if isinstance(v, torch.Tensor)}
            for p in params
            if p in opt.state
        }
        optimizers.append(([id(p) for p in params], state))
    return {
        "params": {k: (id(v), v.detach().clone()) for k, v in model.named_parameters()},
        "buffers": {k: v.clone() for k, v in model.named_buffers()},
        "modules": {
            name: (getattr(m, "num_embeddings", None), getattr(m, "out_features", None))
            for name, m in model.named_modules()
        },
        "backend": id(tok.backend_tokenizer),
        "tokenizer": tok.backend_tokenizer.to_str(),
        "len": len(tok),
        "config": model.config.to_dict(),
        "optimizers": optimizers,
    }


def _assert_unchanged(before: dict[str, Any], after: dict[str, Any]) -> None:
    assert before["params"].keys() == after["params"].keys()
    for key, (ident, value) in before["params"].items():
        assert after["params"][key][0] == ident, key
        assert torch.equal(after["params"][key][1], value), key
    for key, value in before["buffers"].items():
        assert torch.equal(after["buffers"][key], value), key
    for key in ("modules", "backend", "tokenizer", "len", "config"):
        assert after[key] == before[key], key
    for (ids_b, state_b), (ids_a, state_a) in zip(
        before["optimizers"], after["optimizers"], strict=True
    ):
        assert ids_a == ids_b
        assert state_a.keys() == state_b.keys()
        for pid, entries in state_b.items():
            assert state_a[pid].keys() == entries.keys()
            for k, v in entries.items():
                assert torch.equal(state_a[pid][k], v), k


def _assert_reverted(s: dict[str, Any]) -> None:
    model, tok = s["model"], s["tok"]
    assert not s["applied"].active
    assert model.get_input_embeddings().weight is s["embedding"]
    assert type(model).__name__ == "BertForMaskedLM" and not hasattr(
        model.get_output_embeddings(), softmax_adapter.SHIFT
    )
    assert tok.backend_tokenizer.to_str() == s["tokenizer"]
    assert model.config.to_dict() == s["config"]
    full = s["embedding"]
    for opt in s["opts"]:
        params = [p for group in opt.param_groups for p in group["params"]]
        assert any(p is full for p in params)
        for value in opt.state[full].values():
            if isinstance(value, torch.Tensor) and value.dim():
                assert value.shape == full.shape
    _step(model, tok, *s["opts"])  # training goes on after revert


def _after_compute(method: Callable[..., Any], error: BaseException) -> Callable[..., Any]:
    """``method`` that does all its work (allocations included), then raises ``error``."""

    def faulty(self: Any, *args: Any, **kwargs: Any) -> Any:
        method(self, *args, **kwargs)
        raise error

    return faulty


STAGE_CLASSES = {
    "tokenizer": fast_tokenizer.AppliedFastTokenizer,
    "embeddings": embeddings.AppliedEmbeddings,
    "config": config_adapter.AppliedConfig,
    "optimizer (resumed)": optimizer_adapter.AppliedOptimizer,
    "optimizer (created while reduced)": optimizer_adapter.AttachedOptimizer,
    "softmax": softmax_adapter.AppliedSoftmax,
}


@pytest.mark.parametrize("stage", list(STAGE_CLASSES))
def test_fault_while_computing_any_stage_changes_nothing(
    setup: dict[str, Any], stage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cls = STAGE_CLASSES[stage]
    if stage == "softmax" and "softmax" not in setup["applied"].stages:
        pytest.skip("no softmax stage with softmax='reduced'")
    before = _snapshot(setup)
    with monkeypatch.context() as m:
        m.setattr(cls, "_prepare_revert", _after_compute(cls._prepare_revert, Injected(stage)))
        with pytest.raises(Injected):
            revert_plan(setup["applied"])
    _assert_unchanged(before, _snapshot(setup))
    assert setup["applied"].active
    revert_plan(setup["applied"])
    _assert_reverted(setup)


def test_out_of_memory_in_the_optimizer_scatter_changes_nothing(
    setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}
    real = optimizer_adapter._scatter

    def scatter(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:  # the second optimizer's full-size state does not fit
            raise torch.OutOfMemoryError("injected: out of memory allocating optimizer state")
        return real(*args, **kwargs)

    before = _snapshot(setup)
    with monkeypatch.context() as m:
        m.setattr(optimizer_adapter, "_scatter", scatter)
        with pytest.raises(torch.OutOfMemoryError):
            revert_plan(setup["applied"])
    assert calls["n"] == 2
    _assert_unchanged(before, _snapshot(setup))
    assert setup["applied"].active
    revert_plan(setup["applied"])
    _assert_reverted(setup)


@pytest.mark.parametrize("failing", range(6))
def test_fault_while_installing_any_stage_undoes_the_others(
    setup: dict[str, Any], failing: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    if failing >= len(setup["applied"].stages) + 1:
        pytest.skip("fewer stages")
    real = RevertStep.commit
    seen = {"n": 0}

    def commit(step: RevertStep) -> None:
        if seen["n"] == failing:
            raise Injected(f"install of step {failing}")
        seen["n"] += 1
        real(step)

    before = _snapshot(setup)
    with monkeypatch.context() as m:
        m.setattr(RevertStep, "commit", commit)
        with pytest.raises(Injected):
            revert_plan(setup["applied"])
    assert seen["n"] == failing  # that many stages were installed, then undone
    _assert_unchanged(before, _snapshot(setup))
    assert setup["applied"].active
    revert_plan(setup["applied"])
    _assert_reverted(setup)


def test_a_refused_revert_changes_nothing_and_can_be_retried(setup: dict[str, Any]) -> None:
    model = setup["model"]
    saved = model.config.vocab_size
    model.config.vocab_size = saved + 1  # changed behind the plan's back
    before = _snapshot(setup)
    with pytest.raises(VocabError, match="vocab_size was changed"):
        revert_plan(setup["applied"])
    _assert_unchanged(before, _snapshot(setup))
    model.config.vocab_size = saved
    revert_plan(setup["applied"])
    _assert_reverted(setup)
