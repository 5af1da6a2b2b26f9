"""bitsandbytes 8-bit optimizers (CPU build): 8-bit embedding state is refused, 32-bit works."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from _integration import global_batches, plan_for, remap, tiny_bert

from vocab_adapters import apply_plan, revert_plan
from vocabcore import VocabError

bnb = pytest.importorskip("bitsandbytes")


@pytest.fixture
def manager() -> Iterator[Any]:
    mng = bnb.optim.GlobalOptimManager.get_instance()
    mng.initialize()  # a process-wide singleton: start and end clean
    yield mng
    mng.initialize()


def step(model: Any, optimizer: Any, ids: torch.Tensor) -> None:
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    optimizer.zero_grad()


def test_existing_8bit_state_is_refused(manager: Any) -> None:
    batches = global_batches()
    plan = plan_for(batches)
    model = tiny_bert()
    optimizer = bnb.optim.AdamW8bit(model.parameters(), lr=1e-2)
    step(model, optimizer, batches[0])
    weight = model.bert.embeddings.word_embeddings.weight
    assert optimizer.state[weight]["state1"].dtype == torch.uint8  # really 8-bit on CPU
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(VocabError, match=r'register_module_override.*"optim_bits": 32'):
        apply_plan(plan, model=model, optimizer=optimizer)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert optimizer.param_groups[0]["params"][0] is weight


def test_created_while_reduced_8bit_is_refused_at_revert(manager: Any) -> None:
    batches = global_batches()
    plan = plan_for(batches)
    model = tiny_bert()
    applied = apply_plan(plan, model=model)
    optimizer = bnb.optim.AdamW8bit(model.parameters(), lr=1e-2, min_8bit_size=16)
    step(model, optimizer, remap(plan, batches[0]))
    with pytest.raises(VocabError, match="8-bit state for a vocabulary-sized"):
        revert_plan(applied, optimizer=optimizer)
    assert applied.active
    revert_plan(applied)  # without that optimizer the model can still be restored
    assert not applied.active


def test_32bit_override_round_trip(manager: Any) -> None:
    batches = global_batches()
    plan = plan_for(batches)
    model = tiny_bert()
    applied = apply_plan(plan, model=model)
    embedding = model.get_input_embeddings()
    manager.register_parameters(model.parameters())
    # Every vocabulary-sized parameter: the (tied) embedding and the LM head's bias.
    manager.register_module_override(embedding, "weight", {"optim_bits": 32})
    manager.register_module_override(model.cls.predictions, "bias", {"optim_bits": 32})
    optimizer = bnb.optim.AdamW8bit(model.parameters(), lr=1e-2, min_8bit_size=16)
    for ids in batches:
        step(model, optimizer, remap(plan, ids))
    reduced_state = {
        k: v.clone()
        for k, v in optimizer.state[embedding.weight].items()
        if isinstance(v, torch.Tensor) and v.dim() == 2
    }
    assert reduced_state and all(v.dtype == torch.float32 for v in reduced_state.values())
    trained = embedding.weight.detach().clone()
    revert_plan(applied, optimizer=optimizer)

    full = model.get_input_embeddings().weight
    kept = torch.tensor(plan.kept)
    assert full.shape[0] == plan.vocab_size
    assert torch.equal(full[kept], trained)
    state = optimizer.state[full]
    for key, value in reduced_state.items():
        assert state[key].shape == full.shape
        assert torch.equal(state[key][kept], value)
        dropped = torch.ones(plan.vocab_size, dtype=torch.bool)
        dropped[kept] = False
        assert not state[key][dropped].any()
    step(model, optimizer, batches[0])  # the full model trains on with the restored state
