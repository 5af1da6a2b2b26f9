"""FSDP2 (``fully_shard``) and FSDP1 on 2 CPU processes: apply before sharding, revert on the
gathered full state dict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _integration import assert_same_state, reference_state, tiny_bert, torchrun

from vocab_adapters import apply_plan, revert_plan
from vocab_adapters.integrations.distributed import load_reduced_state_dict
from vocabcore import VocabError, VocabPlan

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("kind", ["fsdp2", "fsdp1"])
def test_fsdp_two_processes_match_single_process(tmp_path: Path, kind: str) -> None:
    torchrun("fsdp_worker.py", tmp_path, kind)
    _, want = reference_state()
    states = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    for state in states:
        assert_same_state(state, want)
    for key in want:
        assert torch.equal(states[0][key], states[1][key]), key

    messages = json.loads((tmp_path / "rank0.json").read_text())
    assert set(messages) == {"revert_sharded", "apply_sharded", "apply_inner"}
    assert "load_reduced_state_dict" in messages["revert_sharded"]
    assert "before wrapping" in messages["apply_sharded"]
    if kind == "fsdp2":
        assert "FSDP2 (fully_shard)" in messages["apply_sharded"]
    else:
        assert "FullyShardedDataParallel" in messages["apply_inner"]


def test_load_reduced_state_dict_round_trip() -> None:
    model = tiny_bert()
    plan = VocabPlan(model.config.vocab_size, range(0, 1000, 3))
    applied = apply_plan(plan, model=model)
    with torch.no_grad():
        model.bert.embeddings.word_embeddings.weight.add_(1.0)  # "training"
    reduced = {k: v.clone() for k, v in model.state_dict().items()}
    revert_plan(applied)
    want = model.state_dict()

    fresh = tiny_bert()
    load_reduced_state_dict(plan, fresh, reduced)
    assert_same_state(fresh.state_dict(), want, atol=0)

    wrong = VocabPlan(model.config.vocab_size, range(0, 1000, 2))
    untouched = tiny_bert()
    before = {k: v.clone() for k, v in untouched.state_dict().items()}
    with pytest.raises(VocabError, match="doesn't fit the model reduced by this plan"):
        load_reduced_state_dict(wrong, untouched, reduced)
    assert_same_state(untouched.state_dict(), before, atol=0)
