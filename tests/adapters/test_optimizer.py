"""Optimizer adapter: state sliced and scattered back, param_groups by identity, refusals."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from vocab_adapters.stages import embeddings
from vocab_adapters.stages import optimizer as optimizer_adapter
from vocabcore import VocabError, VocabPlan

PLAN = VocabPlan(40, [0, 3, 4, 9, 17, 30, 39])


class Tiny(nn.Module):
    """An LM with a tied head and a per-token bias, small enough to reason about."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(40, 6)
        self.mid = nn.Linear(6, 6)
        self.head = nn.Linear(6, 40)
        self.head.weight = self.emb.weight

    def get_input_embeddings(self) -> nn.Module:
        return self.emb

    def get_output_embeddings(self) -> nn.Module:
        return self.head

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(torch.tanh(self.mid(self.emb(ids))))
        return out


def make() -> Tiny:
    torch.manual_seed(0)
    return Tiny()


def step(model: Tiny, optimizer: torch.optim.Optimizer, ids: torch.Tensor) -> None:
    model(ids).pow(2).mean().backward()
    optimizer.step()
    optimizer.zero_grad()


KEPT_IDS = torch.tensor([[3, 4, 9, 17], [30, 39, 0, 3]])
NEW_IDS = torch.tensor([PLAN.remap(r) for r in KEPT_IDS.tolist()])


OPTIMIZERS = {
    "adam": lambda p: torch.optim.Adam(p, lr=0.01),
    "adam-amsgrad": lambda p: torch.optim.Adam(p, lr=0.01, amsgrad=True),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1),
    "sgd-momentum": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
    "adagrad": lambda p: torch.optim.Adagrad(p, lr=0.1),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=0.01, momentum=0.5, centered=True),
}


@pytest.mark.parametrize("kind", OPTIMIZERS)
def test_resume_slices_and_scatters_state(kind: str) -> None:
    model = make()
    opt = OPTIMIZERS[kind](model.parameters())
    step(model, opt, torch.tensor([[1, 2, 3, 4, 5]]))  # state on dropped rows too
    weight = model.emb.weight
    state_before = {k: v.clone() for k, v in opt.state[weight].items()}
    shaped = [k for k, v in state_before.items() if v.shape == weight.shape]
    assert shaped

    applied_emb = embeddings.apply(PLAN, model)
    applied = optimizer_adapter.apply(opt, applied_emb.swaps)
    reduced = model.emb.weight
    kept = torch.tensor(PLAN.kept)
    assert opt.param_groups[0]["params"][0] is reduced and weight not in opt.state
    for key, value in opt.state[reduced].items():
        expected = state_before[key][kept] if key in shaped else state_before[key]
        assert torch.equal(value, expected), key

    step(model, opt, NEW_IDS)
    trained = {k: v.clone() for k, v in opt.state[reduced].items()}
    applied.revert()
    applied_emb.revert()
    assert opt.param_groups[0]["params"][0] is weight and model.emb.weight is weight
    assert reduced not in opt.state
    dropped = torch.ones(40, dtype=torch.bool)
    dropped[kept] = False
    for key, value in opt.state[weight].items():
        if key in shaped:
            assert value.shape == weight.shape
            assert torch.equal(value[kept], trained[key])
            assert torch.equal(value[dropped], state_before[key][dropped])
        else:
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(trained[key]))
    step(model, opt, KEPT_IDS)  # training goes on after revert


def test_param_groups_found_by_identity_not_order() -> None:
    model = make()
    params = [model.mid.weight, model.head.bias, model.mid.bias]
    opt = torch.optim.Adam([{"params": params}, {"params": [model.emb.weight], "lr": 0.5}])
    applied_emb = embeddings.apply(PLAN, model)
    applied = optimizer_adapter.apply(opt, applied_emb.swaps)
    assert opt.param_groups[0]["params"][1] is model.head.bias
    assert opt.param_groups[0]["params"][1].shape == (len(PLAN.kept),)
    assert opt.param_groups[1]["params"] == [model.emb.weight]
    assert opt.param_groups[1]["lr"] == 0.5
    step(model, opt, NEW_IDS)
    applied.revert()
    applied_emb.revert()
    assert opt.param_groups[0]["params"] == [model.mid.weight, model.head.bias, model.mid.bias]
    assert opt.param_groups[1]["params"][0] is model.emb.weight


def test_created_while_reduced_restores_with_zero_state() -> None:
    model = make()
    weight = model.emb.weight
    applied_emb = embeddings.apply(PLAN, model)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    step(model, opt, NEW_IDS)
    reduced_state = {k: v.clone() for k, v in opt.state[model.emb.weight].items()}
    prepared = optimizer_adapter.prepare_restore(opt, applied_emb.swaps)
    assert opt.param_groups[0]["params"][0] is model.emb.weight  # nothing changed yet
    applied_emb.revert()
    prepared.commit()
    assert opt.param_groups[0]["params"][0] is weight
    kept = torch.tensor(PLAN.kept)
    state = opt.state[weight]
    assert torch.equal(state["exp_avg"][kept], reduced_state["exp_avg"])
    dropped = torch.ones(40, dtype=torch.bool)
    dropped[kept] = False
    assert not state["exp_avg"][dropped].any() and not state["exp_avg_sq"][dropped].any()
    assert torch.equal(state["step"], reduced_state["step"])
    step(model, opt, KEPT_IDS)


def test_attach_reverts_and_restore_rolls_back() -> None:
    model = make()
    applied_emb = embeddings.apply(PLAN, model)
    reduced = model.emb.weight
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    attached = optimizer_adapter.attach(opt, applied_emb.swaps)
    step(model, opt, NEW_IDS)
    buf = opt.state[reduced]["momentum_buffer"]

    restored = optimizer_adapter.prepare_restore(opt, applied_emb.swaps)
    restored.commit()
    assert opt.param_groups[0]["params"][0] is applied_emb.swaps[0].full
    restored.undo()
    assert opt.param_groups[0]["params"][0] is reduced
    assert opt.state[reduced]["momentum_buffer"] is buf

    attached.check_revert()
    attached.revert()
    applied_emb.revert()
    assert opt.state[model.emb.weight]["momentum_buffer"].shape == (40, 6)
    with pytest.raises(VocabError, match="already reverted"):
        attached.revert()


def test_rollback_is_exact() -> None:
    model = make()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    step(model, opt, KEPT_IDS)
    params = [list(g["params"]) for g in opt.param_groups]
    state = {p: dict(s) for p, s in opt.state.items()}
    applied_emb = embeddings.apply(PLAN, model)
    applied = optimizer_adapter.prepare(opt, applied_emb.swaps).commit()
    applied.rollback()
    applied_emb.rollback()
    assert [list(g["params"]) for g in opt.param_groups] == params
    assert {p: dict(s) for p, s in opt.state.items()} == state


def test_frozen_embeddings_not_in_optimizer_are_skipped() -> None:
    model = make()
    model.emb.weight.requires_grad_(False)
    opt = torch.optim.Adam([model.mid.weight], lr=0.01)
    applied_emb = embeddings.apply(PLAN, model)
    applied = optimizer_adapter.apply(opt, applied_emb.swaps)
    assert opt.param_groups[0]["params"] == [model.mid.weight]
    applied.revert()
    applied_emb.revert()
    assert not model.emb.weight.requires_grad


def test_misuse_is_refused() -> None:
    model = make()
    applied_emb = embeddings.apply(PLAN, model)
    late = torch.optim.Adam(model.parameters())
    with pytest.raises(VocabError, match="use prepare_restore/attach"):
        optimizer_adapter.prepare(late, applied_emb.swaps)
    with pytest.raises(VocabError, match="param_groups"):
        optimizer_adapter.prepare(object(), applied_emb.swaps)
    with pytest.raises(VocabError, match="offload"):
        optimizer_adapter.prepare(late, applied_emb.swaps, offload="disk")
    applied_emb.rollback()

    model = make()
    opt = torch.optim.Adam(model.parameters())
    applied_emb = embeddings.apply(PLAN, model)
    applied = optimizer_adapter.apply(opt, applied_emb.swaps)
    opt.param_groups[0]["params"].pop(0)
    with pytest.raises(VocabError, match="no longer in the optimizer"):
        applied.revert()


def test_row_mixing_state_refused_on_resume_reset_on_restore() -> None:
    model = make()
    opt = torch.optim.Adafactor(model.parameters(), lr=0.01)
    step(model, opt, KEPT_IDS)
    applied_emb = embeddings.prepare(PLAN, model)
    with pytest.raises(VocabError, match="can't be split by token"):
        optimizer_adapter.prepare(opt, applied_emb.swaps)

    model = make()
    applied_emb2 = embeddings.apply(PLAN, model)
    opt = torch.optim.Adafactor(model.parameters(), lr=0.01)
    step(model, opt, NEW_IDS)
    with pytest.warns(UserWarning, match="starts afresh"):
        prepared = optimizer_adapter.prepare_restore(opt, applied_emb2.swaps)
    applied_emb2.revert()
    prepared.commit()
    assert model.emb.weight not in opt.state
    step(model, opt, KEPT_IDS)


def test_real_bitsandbytes_if_installed() -> None:
    bnb = pytest.importorskip("bitsandbytes")
    model = make()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt = bnb.optim.Adam8bit(model.parameters(), lr=0.01, min_8bit_size=16)
    applied_emb = embeddings.prepare(PLAN, model)
    with pytest.raises(VocabError, match="8-bit state"):
        optimizer_adapter.prepare(opt, applied_emb.swaps)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("offload", [None, "cpu"])
def test_cuda_resume_state(offload: str | None) -> None:
    model = make().cuda()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    step(model, opt, KEPT_IDS.cuda())
    weight = model.emb.weight
    before = opt.state[weight]["exp_avg"].clone()
    applied_emb = embeddings.apply(PLAN, model, offload=offload)
    applied = optimizer_adapter.apply(opt, applied_emb.swaps, offload=offload)
    assert opt.state[model.emb.weight]["exp_avg"].is_cuda
    step(model, opt, NEW_IDS.cuda())
    applied.revert()
    applied_emb.revert()
    state = opt.state[weight]["exp_avg"]
    assert state.is_cuda and weight.is_cuda and state.shape == before.shape
    dropped = torch.ones(40, dtype=torch.bool, device="cuda")
    dropped[list(PLAN.kept)] = False
    assert torch.equal(state[dropped], before[dropped])
