"""DeepSpeed ZeRO-2 on 2 CPU processes (DeepSpeed's CPU accelerator), where it is installed.

``nox -s deepspeed`` builds an environment with DeepSpeed and runs this file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _integration import global_batches, plan_for, tiny_classifier, torchrun

pytest.importorskip("deepspeed")
pytestmark = pytest.mark.slow

EMBEDDING = "bert.embeddings.word_embeddings.weight"
# One AdamW step moves a weight by about lr = 1e-2. Both runs do the same float operations on
# the same values (the flat ZeRO buffers only differ in length and partition boundaries), so
# they can differ by rounding alone (a vectorized loop's tail, say): 1e-6 is 1e-4 of one
# step's update. Measured: bit-identical.
ATOL = 1e-6


def build_comm_op() -> None:
    """JIT-build DeepSpeed's shared-memory comm op once, here, before the ranks load it.

    The first build in an environment compiles C++ (minutes on a loaded machine); done here it
    neither races between the ranks nor counts against the worker's timeout.
    """
    env = dict(os.environ, DS_ACCELERATOR="cpu", PYTHONWARNINGS="ignore")
    code = "from deepspeed.comm.torch import build_shm_op; build_shm_op()"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-8000:]


def test_deepspeed_zero2_reduced_equals_full_vocabulary(tmp_path: Path) -> None:
    build_comm_op()
    torchrun("deepspeed_worker.py", tmp_path, timeout=600)
    plan = plan_for(global_batches())
    initial = tiny_classifier().state_dict()
    states = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    for run in ("full", "reduced"):
        assert states[0][run].keys() == initial.keys()
        for key in initial:
            assert torch.equal(states[0][run][key], states[1][run][key]), (run, key)
    full, reduced = states[0]["full"], states[0]["reduced"]

    dropped = [i for i in range(plan.vocab_size) if plan.old_to_new(i) is None]
    kept = list(plan.kept)
    assert reduced[EMBEDDING].shape == initial[EMBEDDING].shape
    assert torch.equal(reduced[EMBEDDING][dropped], initial[EMBEDDING][dropped])
    assert not torch.equal(reduced[EMBEDDING][kept], initial[EMBEDDING][kept])
    assert torch.equal(full[EMBEDDING][dropped], initial[EMBEDDING][dropped])  # zero gradients
    for key in initial:
        torch.testing.assert_close(reduced[key], full[key], atol=ATOL, rtol=0, msg=key)

    messages = json.loads((tmp_path / "rank0.json").read_text())
    assert "the model is a DeepSpeedEngine" in messages["apply_engine"]
    assert "a DeepSpeedEngine still wraps it" in messages["apply_inner"]
