"""accelerate ``Accelerator.prepare`` and the Hugging Face ``Trainer`` under torchrun (2 CPUs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _integration import (
    assert_same_state,
    global_batches,
    plan_for,
    reference_state,
    tiny_bert,
    torchrun,
)

pytestmark = pytest.mark.slow


def test_accelerate_two_processes_match_single_process(tmp_path: Path) -> None:
    torchrun("accelerate_worker.py", tmp_path)
    _, want = reference_state()
    states = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    for state in states:
        assert_same_state(state, want)
    for key in want:
        assert torch.equal(states[0][key], states[1][key]), key


def test_trainer_under_torchrun(tmp_path: Path) -> None:
    torchrun("trainer_worker.py", tmp_path)
    plan = plan_for(global_batches())
    initial = tiny_bert().state_dict()
    states = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    for key in initial:
        assert torch.equal(states[0][key], states[1][key]), key
    embedding = "bert.embeddings.word_embeddings.weight"
    dropped = [i for i in range(plan.vocab_size) if plan.old_to_new(i) is None]
    kept = list(plan.kept[4:])
    assert states[0][embedding].shape == initial[embedding].shape
    assert torch.equal(states[0][embedding][dropped], initial[embedding][dropped])
    assert not torch.equal(states[0][embedding][kept], initial[embedding][kept])
    for rank in (0, 1):
        message = json.loads((tmp_path / f"rank{rank}.json").read_text())["callback"]
        assert "DistributedDataParallel still wraps it" in message
