"""N steps reduced then revert == N steps of the full model whose dropped rows get no gradient.

Which runs are exact (see :mod:`vocab_adapters.stages.optimizer`): with element-wise optimizers,
kept rows and every other parameter match bit for bit; dropped rows match too unless weight decay
(or momentum left over from before apply) moves them in the full run. Models whose loss is over
the vocabulary (MLM, causal LM) compare against a full run whose loss is over the kept logits
only (what the reduced model computes); their head matmul has another shape, so the comparison
is up to rounding there.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from fixtures.models import TinyModel, remap, sample_batch
from vocab_adapters.stages import config as config_adapter
from vocab_adapters.stages import embeddings
from vocab_adapters.stages import optimizer as optimizer_adapter
from vocabcore import VocabPlan

STEPS = 3

OPTIMIZERS: dict[str, Callable[[Any], torch.optim.Optimizer]] = {
    "adam": lambda p: torch.optim.Adam(p, lr=0.01),
    "adamw-decay": lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1),
    "sgd-momentum": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
    "sgd-momentum-decay": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.1),
}


def batches(tiny: TinyModel, plan: VocabPlan, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of kept ids only, with token-classification labels."""
    generator = torch.Generator().manual_seed(7)
    pool = torch.tensor(plan.kept)
    out = []
    for _ in range(n):
        ids = pool[torch.randint(len(pool), (2, 10), generator=generator)]
        labels = torch.randint(5, (2, 10), generator=generator)
        out.append((ids, labels))
    return out


def loss_full(tiny: TinyModel, ids: torch.Tensor, labels: torch.Tensor, kept: Any) -> Any:
    if tiny.kind == "token_classification":
        return tiny.model(input_ids=ids, labels=labels).loss
    scores = tiny.model(**tiny.inputs(ids)).logits.index_select(-1, kept)
    return nn.functional.cross_entropy(scores.flatten(0, 1), labels.flatten())


def loss_reduced(tiny: TinyModel, ids: torch.Tensor, labels: torch.Tensor) -> Any:
    if tiny.kind == "token_classification":
        return tiny.model(input_ids=ids, labels=labels).loss
    scores = tiny.model(**tiny.inputs(ids)).logits
    return nn.functional.cross_entropy(scores.flatten(0, 1), labels.flatten())


def train(tiny: TinyModel, opt: torch.optim.Optimizer, loss: Callable[..., Any], data: Any) -> None:
    for ids, labels in data:
        loss(ids, labels).backward()
        opt.step()
        opt.zero_grad()


def compare(
    full: nn.Module,
    reduced: nn.Module,
    initial: dict[str, torch.Tensor],
    plan: VocabPlan,
    *,
    exact_dropped: bool,
    atol: float,
) -> None:
    weight = full.get_input_embeddings().weight
    rows = weight.shape[0]
    dropped = torch.ones(rows, dtype=torch.bool)
    dropped[list(plan.kept)] = False
    full_state, reduced_state = full.state_dict(), reduced.state_dict()
    assert full_state.keys() == reduced_state.keys()
    for name, a in full_state.items():
        b = reduced_state[name]
        assert a.shape == b.shape, name
        vocab_rows = a.dim() >= 1 and a.shape[0] == rows
        if vocab_rows:
            assert torch.equal(b[dropped], initial[name][dropped]), f"{name}: dropped rows moved"
            if exact_dropped:
                assert torch.equal(a[dropped], b[dropped]), name
            else:  # weight decay shrinks the full model's dropped rows
                assert not torch.equal(a[dropped], b[dropped]), name
            a, b = a[~dropped], b[~dropped]
        torch.testing.assert_close(a, b, rtol=0, atol=atol, msg=name)


@pytest.mark.parametrize("kind", OPTIMIZERS)
@pytest.mark.parametrize("created", ["while-reduced", "resume"])
def test_token_classification_exact(make_tiny_model: Any, kind: str, created: str) -> None:
    tiny_full = make_tiny_model("bert-tokcls")
    tiny = TinyModel(tiny_full.name, copy.deepcopy(tiny_full.model), *_rest(tiny_full))
    _, plan = sample_batch(tiny, seed=3)
    data = batches(tiny, plan, STEPS + 2)
    initial = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    kept = torch.tensor(plan.kept)

    opt_full = OPTIMIZERS[kind](tiny_full.model.parameters())
    opt = None
    if created == "resume":  # both start with one full-vocabulary step
        opt = OPTIMIZERS[kind](tiny.model.parameters())
        train(tiny_full, opt_full, lambda i, lab: loss_full(tiny_full, i, lab, kept), data[:1])
        train(tiny, opt, lambda i, lab: loss_full(tiny, i, lab, kept), data[:1])
        initial = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    train(tiny_full, opt_full, lambda i, lab: loss_full(tiny_full, i, lab, kept), data[1:STEPS])

    applied_embeddings = embeddings.apply(plan, tiny.model)
    applied_config = config_adapter.apply(plan, tiny.model)
    if opt is not None:
        applied_opt: Any = optimizer_adapter.apply(opt, applied_embeddings.swaps)
    else:
        opt = OPTIMIZERS[kind](tiny.model.parameters())
        applied_opt = optimizer_adapter.attach(opt, applied_embeddings.swaps)
    remapped = [(remap(plan, ids), labels) for ids, labels in data[1:STEPS]]
    train(tiny, opt, lambda i, lab: loss_reduced(tiny, i, lab), remapped)
    applied_opt.revert()
    applied_config.revert()
    applied_embeddings.revert()

    decay = kind.endswith("decay")
    compare(tiny_full.model, tiny.model, initial, plan, exact_dropped=not decay, atol=0)

    # Training goes on after revert: one more full step on each.
    if not decay:
        train(tiny_full, opt_full, lambda i, lab: loss_full(tiny_full, i, lab, kept), data[-1:])
        train(tiny, opt, lambda i, lab: loss_full(tiny, i, lab, kept), data[-1:])
        for (name, a), b in zip(
            tiny_full.model.state_dict().items(), tiny.model.state_dict().values(), strict=True
        ):
            assert torch.equal(a, b), name


def _rest(tiny: TinyModel) -> tuple[int, int | None, str]:
    return tiny.vocab_size, tiny.pad_token_id, tiny.kind


LM_OPTIMIZERS: dict[str, Callable[[Any], torch.optim.Optimizer]] = {
    # A larger eps: Adam turns rounding noise in a zero gradient (GPT-2's key bias) into
    # full-size steps, which would swamp the comparison.
    "adam": lambda p: torch.optim.Adam(p, lr=0.01, eps=1e-3),
    "sgd-momentum": OPTIMIZERS["sgd-momentum"],
}


@pytest.mark.parametrize("name", ["bert-mlm", "gpt2-lm", "t5-v1_1"])
@pytest.mark.parametrize("kind", LM_OPTIMIZERS)
def test_lm_heads_match_kept_logit_training(make_tiny_model: Any, name: str, kind: str) -> None:
    tiny_full = make_tiny_model(name)
    tiny = TinyModel(tiny_full.name, copy.deepcopy(tiny_full.model), *_rest(tiny_full))
    _, plan = sample_batch(tiny, seed=4)
    kept = torch.tensor(plan.kept)
    data = [(ids, remap(plan, ids)) for ids, _ in batches(tiny, plan, STEPS)]
    initial = {k: v.clone() for k, v in tiny.model.state_dict().items()}

    opt_full = LM_OPTIMIZERS[kind](tiny_full.model.parameters())
    train(tiny_full, opt_full, lambda i, lab: loss_full(tiny_full, i, lab, kept), data)

    applied_embeddings = embeddings.apply(plan, tiny.model)
    applied_config = config_adapter.apply(plan, tiny.model)
    opt = LM_OPTIMIZERS[kind](tiny.model.parameters())
    train(tiny, opt, lambda i, lab: loss_reduced(tiny, i, lab), [(n, n) for _, n in data])
    restore = optimizer_adapter.prepare_restore(opt, applied_embeddings.swaps)
    applied_config.revert()
    applied_embeddings.revert()
    restore.commit()
    compare(tiny_full.model, tiny.model, initial, plan, exact_dropped=True, atol=1e-5)


def test_amp_autocast_and_grad_scaler(make_tiny_model: Any) -> None:
    tiny = make_tiny_model("bert-mlm")
    model = tiny.model.train()
    ids, plan = sample_batch(tiny, seed=5)
    weight = model.get_input_embeddings().weight
    initial = weight.detach().clone()
    applied = embeddings.apply(plan, model)
    applied_config = config_adapter.apply(plan, model)
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu")
    new_ids = remap(plan, ids)
    for _ in range(2):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=new_ids, labels=new_ids).loss
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad()
    optimizer_adapter.prepare_restore(opt, applied.swaps).commit()
    applied_config.revert()
    applied.revert()
    assert model.get_input_embeddings().weight is weight is model.cls.predictions.decoder.weight
    dropped = torch.ones(weight.shape[0], dtype=torch.bool)
    dropped[list(plan.kept)] = False
    assert torch.equal(weight.detach()[dropped], initial[dropped])
    assert not torch.equal(weight.detach()[~dropped], initial[~dropped])
    assert opt.state[weight]["exp_avg"].shape == weight.shape


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_training(make_tiny_model: Any, dtype: torch.dtype) -> None:
    tiny = make_tiny_model("gpt2-lm")
    model = tiny.model.to(dtype)
    ids, plan = sample_batch(tiny, seed=6)
    weight = model.get_input_embeddings().weight
    initial = weight.detach().clone()
    applied = embeddings.apply(plan, model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(input_ids=remap(plan, ids)).logits.float().pow(2).mean().backward()
    opt.step()
    applied.revert()
    assert weight.dtype == dtype and model.lm_head.weight is weight
    dropped = torch.ones(weight.shape[0], dtype=torch.bool)
    dropped[list(plan.kept)] = False
    assert torch.equal(weight.detach()[dropped], initial[dropped])
    assert not torch.equal(weight.detach()[~dropped], initial[~dropped])


@pytest.mark.parametrize("name", ["bert-mlm", "t5-v1_0"])
def test_gradient_checkpointing(make_tiny_model: Any, name: str) -> None:
    tiny = make_tiny_model(name)
    reference = TinyModel(tiny.name, copy.deepcopy(tiny.model), *_rest(tiny))
    ids, plan = sample_batch(tiny, seed=8)
    new_ids = remap(plan, ids)
    grads = []
    for run, checkpointing in ((tiny, True), (reference, False)):
        model = run.model.train()
        if checkpointing:
            model.gradient_checkpointing_enable()
        applied = embeddings.apply(plan, model)
        applied_config = config_adapter.apply(plan, model)
        torch.manual_seed(0)
        model(**run.inputs(new_ids), labels=new_ids).loss.backward()
        grads.append(model.get_input_embeddings().weight.grad.clone())
        applied_config.revert()
        applied.revert()
    torch.testing.assert_close(grads[0], grads[1])
