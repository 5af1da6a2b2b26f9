"""Shared pieces of the integration tests: a tiny BERT, data, a training loop, a launcher.

Imported both by the tests (in the pytest process) and by the worker scripts under
``workers/`` (in processes started by ``torchrun``), so a multi-process run and its
single-process reference use the very same model, data and steps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from vocabcore import VocabPlan

VOCAB = 1000
HIDDEN = 16
SEQ = 8
GLOBAL_BATCH = 4  # split evenly over 2 ranks
STEPS = 3
SPECIAL = (0, 1, 2, 3)
HERE = Path(__file__).resolve().parent
WORKERS = HERE / "workers"


def tiny_bert(seed: int = 0, vocab: int = VOCAB) -> Any:
    """A 1-layer BERT masked LM (tied head), no dropout, weights fixed by ``seed``."""
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(
        vocab_size=vocab,
        hidden_size=HIDDEN,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        pad_token_id=0,
    )
    torch.manual_seed(seed)
    return BertForMaskedLM(config)


def tiny_classifier(seed: int = 0, vocab: int = VOCAB) -> Any:
    """A 1-layer BERT sequence classifier (2 labels), no dropout, weights fixed by ``seed``.

    Its loss doesn't depend on the vocabulary's size (unlike a masked LM's softmax over every
    token), so a reduced run and a full-vocabulary run are the same computation.
    """
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=vocab,
        hidden_size=HIDDEN,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        pad_token_id=0,
        num_labels=2,
    )
    torch.manual_seed(seed)
    return BertForSequenceClassification(config)


def sequence_labels(ids: torch.Tensor) -> torch.Tensor:
    """One label per row of a batch of old ids (the parity of its first id)."""
    return ids[:, 0] % 2


def global_batches(steps: int = STEPS, seed: int = 1) -> list[torch.Tensor]:
    """``steps`` batches of old ids drawn from 40 of the vocabulary's ids."""
    generator = torch.Generator().manual_seed(seed)
    used = torch.randperm(VOCAB - len(SPECIAL), generator=generator)[:40] + len(SPECIAL)
    return [
        used[torch.randint(0, len(used), (GLOBAL_BATCH, SEQ), generator=generator)]
        for _ in range(steps)
    ]


def plan_for(batches: list[torch.Tensor]) -> VocabPlan:
    """The plan keeping the ids of ``batches`` and the special ids."""
    return VocabPlan.from_ids((b.flatten().tolist() for b in batches), VOCAB, keep=SPECIAL)


def remap(plan: VocabPlan, ids: torch.Tensor) -> torch.Tensor:
    """Old ids to the reduced vocabulary's ids."""
    table = torch.tensor(plan.old_to_new_table(), dtype=torch.long)
    return table[ids]


def train(
    model: Any, optimizer: Any, batches: list[torch.Tensor], rank: int = 0, world: int = 1
) -> None:
    """One optimizer step per batch; rank ``r`` of ``world`` takes rows ``r::world``."""
    model.train()
    for ids in batches:
        local = ids[rank::world].contiguous()
        loss = model(input_ids=local, labels=local).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def reference_state(steps: int = STEPS) -> tuple[VocabPlan, dict[str, torch.Tensor]]:
    """Single-process run of the same steps: apply, train on global batches, revert."""
    from vocab_adapters import apply_plan, revert_plan

    batches = global_batches(steps)
    plan = plan_for(batches)
    model = tiny_bert()
    applied = apply_plan(plan, model=model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    train(model, optimizer, [remap(plan, b) for b in batches])
    revert_plan(applied, optimizer=optimizer)
    return plan, {k: v.detach().clone() for k, v in model.state_dict().items()}


def torchrun(script: str, out: Path, *args: str, nproc: int = 2, timeout: float = 120) -> float:
    """Run ``workers/<script>`` under ``torchrun --standalone`` with ``nproc`` CPU processes.

    Returns the wall time in seconds; raises ``AssertionError`` with the output on failure.
    """
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PYTHONWARNINGS="ignore",
        DS_ACCELERATOR="cpu",
        PYTHONPATH=os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]),
    )
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        str(WORKERS / script),
        str(out),
        *args,
    ]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    elapsed = time.perf_counter() - start
    assert done.returncode == 0, f"{script} failed:\n{done.stdout[-4000:]}\n{done.stderr[-8000:]}"
    return elapsed


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON (workers report messages and flags this way)."""
    path.write_text(json.dumps(data, indent=1, sort_keys=True))


def assert_same_state(
    got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], atol: float = 1e-5
) -> None:
    """Same keys, shapes and (within ``atol``) values."""
    assert got.keys() == want.keys()
    for key in want:
        assert got[key].shape == want[key].shape, key
        torch.testing.assert_close(got[key], want[key], atol=atol, rtol=1e-4, msg=key)
