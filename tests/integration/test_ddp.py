"""DistributedDataParallel on 2 CPU processes (gloo): apply before wrapping, revert after."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _integration import assert_same_state, reference_state, tiny_bert, torchrun

from vocab_adapters import apply_plan, revert_plan
from vocabcore import VocabError

pytestmark = pytest.mark.slow


def test_ddp_two_processes_match_single_process(tmp_path: Path) -> None:
    torchrun("ddp_worker.py", tmp_path)
    plan, want = reference_state()
    initial = tiny_bert().state_dict()
    states = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    for state in states:
        assert_same_state(state, want)
    for key in want:  # identical on every rank, bit for bit
        assert torch.equal(states[0][key], states[1][key]), key
    embedding = "bert.embeddings.word_embeddings.weight"
    dropped = [i for i in range(plan.vocab_size) if plan.old_to_new(i) is None]
    assert torch.equal(states[0][embedding][dropped], initial[embedding][dropped])
    kept = list(plan.kept[4:])
    assert not torch.equal(states[0][embedding][kept], initial[embedding][kept])

    messages = json.loads((tmp_path / "rank0.json").read_text())
    assert messages["active_after_revert"] == "False"
    assert "DistributedDataParallel" in messages["apply_wrapper"]
    assert "before wrapping" in messages["apply_wrapper"]
    assert "still wraps it" in messages["apply_inner"]
    assert "unwrap first" in messages["revert_wrapped"]
    assert json.loads((tmp_path / "rank1.json").read_text()).keys() == messages.keys()


def test_wrapped_model_refused_in_one_process(tmp_path: Path) -> None:
    # A world of one is enough to build the wrappers; the same checks run on every rank.
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from vocabcore import VocabPlan

    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        model = tiny_bert()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        plan = VocabPlan(model.config.vocab_size, range(50))
        ddp = DistributedDataParallel(model)
        with pytest.raises(VocabError, match="apply the plan to the bare model before wrapping"):
            apply_plan(plan, model=ddp)
        with pytest.raises(VocabError, match="a DistributedDataParallel still wraps it"):
            apply_plan(plan, model=model.bert)
        assert_same_state(model.state_dict(), before, atol=0)
        del ddp
        applied = apply_plan(plan, model=model)  # the wrapper is gone: fine
        revert_plan(applied)
        assert_same_state(model.state_dict(), before, atol=0)
    finally:
        dist.destroy_process_group()
