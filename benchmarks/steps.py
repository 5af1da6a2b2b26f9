"""Training step time, full vs reduced vocabulary (vocabcore), token classification and MLM.

XLM-R-base config (250,002 x 768, random weights), the benchmark XLM-R-style tokenizer, a
plan from the CoNLL-like training set, AdamW, batches of 8 sentences cut at 32 tokens. One
warm-up step, then the median of the timed steps (forward + backward + optimizer step +
zero_grad). The optimizer is created after ``apply_plan`` (the usual order) and registered
with the applied plan so ``revert_plan`` restores it.

    python benchmarks/steps.py [--quick] [--threads N] [--steps N]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from typing import Any

import _harness as h

h.setup()

import _corpus  # noqa: E402
import _tokenizers  # noqa: E402
from side_by_side import XLMR_BASE, XLMR_QUICK  # noqa: E402


def _model(kind: str, quick: bool) -> Any:
    head = "tc" if kind == "token classification" else "mlm"
    return h.model_from_config("xlm-roberta", XLMR_QUICK if quick else XLMR_BASE, head)


def _batches(tok: Any, texts: list[list[str]], n: int, batch: int) -> list[Any]:
    import torch

    out = []
    for b in range(n):
        enc = h.encode_words(tok, texts[b * batch : (b + 1) * batch], 32)
        mask = enc["attention_mask"].bool()
        gen = torch.Generator().manual_seed(b)
        out.append((enc, mask, gen))
    return out


def _loss(kind: str, model: Any, enc: Any, mask: Any, gen: Any) -> Any:
    import torch

    ids = enc["input_ids"]
    if kind == "token classification":
        labels = torch.where(mask, ids % 9, -100)
        return model(input_ids=ids, attention_mask=enc["attention_mask"], labels=labels).loss
    pick = (torch.rand(ids.shape, generator=gen) < 0.15) & mask
    labels = torch.where(pick, ids, -100)
    return model(input_ids=ids, attention_mask=enc["attention_mask"], labels=labels).loss


def measure(
    kind: str,
    mode: str,
    plan: Any,
    tok: Any,
    texts: list[list[str]],
    steps: int,
    batch: int,
    quick: bool,
    amp: bool = False,
) -> dict[str, Any]:
    import contextlib

    import torch

    from vocab_adapters import apply_plan, revert_plan

    model = _model(kind, quick)
    model.train()
    applied = apply_plan(plan, model=model, tokenizer=tok) if mode == "reduced" else None
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    if applied is not None:
        applied.track(opt)
    data = _batches(tok, texts, steps + 1, batch)
    times = []
    for enc, mask, gen in data:
        t0 = time.perf_counter()
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if amp else contextlib.nullcontext()
        with autocast:
            loss = _loss(kind, model, enc, mask, gen)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    params = sum(p.numel() for p in model.parameters())
    state = h.state_bytes(opt)
    if applied is not None:
        revert_plan(applied)
    del model, opt, applied
    gc.collect()
    return {
        "task": kind + (", bf16 autocast" if amp else ""),
        "mode": mode,
        "step_s": statistics.median(times[1:]),
        "first_step_s": times[0],
        "steps": steps,
        "params": params,
        "adam_state_bytes": state,
    }


def run(quick: bool = False, threads: int = 1, steps: int = 3, batch: int = 8) -> dict[str, Any]:
    import torch
    from transformers import AutoTokenizer

    from vocab_adapters import plan_from_texts

    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(_tokenizers.build("xlmr", quick=quick))
    texts = _corpus.word_lists(quick)
    plan = plan_from_texts(tok, texts)
    rows = []
    tasks = [("token classification", False), ("masked LM", False), ("masked LM", True)]
    for kind, amp in tasks:
        for mode in ("full", "reduced"):
            row = measure(kind, mode, plan, tok, texts, 1 if quick else steps, batch, quick, amp)
            print(f"[steps] {row['task']} {mode}: {row['step_s']:.3f}s/step", file=sys.stderr)
            rows.append(row)
    return {
        "threads": torch.get_num_threads(),
        "batch": batch,
        "max_length": 32,
        "kept": plan.new_size,
        "vocab_size": plan.vocab_size,
        "rows": rows,
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    a = ap.parse_args()
    print(json.dumps(run(a.quick, a.threads, a.steps), indent=1))
