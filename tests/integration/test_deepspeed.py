"""DeepSpeed ZeRO-2 on 2 CPU processes (DeepSpeed's CPU accelerator), where it is installed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _integration import global_batches, plan_for, tiny_bert, torchrun

pytest.importorskip("deepspeed")
pytestmark = pytest.mark.slow


def test_deepspeed_zero2_apply_before_initialize(tmp_path: Path) -> None:
    torchrun("deepspeed_worker.py", tmp_path)
    plan = plan_for(global_batches())
    initial = tiny_bert().state_dict()
    states = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    for key in initial:
        assert torch.equal(states[0][key], states[1][key]), key
    embedding = "bert.embeddings.word_embeddings.weight"
    dropped = [i for i in range(plan.vocab_size) if plan.old_to_new(i) is None]
    assert states[0][embedding].shape == initial[embedding].shape
    assert torch.equal(states[0][embedding][dropped], initial[embedding][dropped])
    kept = list(plan.kept)
    assert not torch.equal(states[0][embedding][kept], initial[embedding][kept])

    messages = json.loads((tmp_path / "rank0.json").read_text())
    assert "the model is a DeepSpeedEngine" in messages["apply_engine"]
    assert "a DeepSpeedEngine still wraps it" in messages["apply_inner"]
