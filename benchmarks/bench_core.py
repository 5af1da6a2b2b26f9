"""Core (pure Python) timings: VocabPlan.from_counts, remap, JSON, for a 250,002 vocabulary.

python benchmarks/bench_core.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import random
from typing import Any

import _harness as h

h.setup()

from vocabcore import VocabPlan  # noqa: E402

VOCAB = 250_002


def run(quick: bool = False) -> dict[str, Any]:
    rng = random.Random(0)
    repeats = 3 if quick else 7
    kept_target = 17_000
    used = rng.sample(range(VOCAB), kept_target)
    dense = [0] * VOCAB
    for i in used:
        dense[i] = rng.randint(1, 1000)
    sparse = {i: dense[i] for i in used}
    rows: list[dict[str, Any]] = []

    def add(name: str, fn: Any) -> Any:
        best, med, out = h.best_and_median(fn, repeats)
        rows.append({"op": name, "best_s": best, "median_s": med})
        return out

    plan = add(
        "from_counts, dense list of 250,002 counts",
        lambda: VocabPlan.from_counts(dense, VOCAB, keep=(0, 1, 2, 3)),
    )
    add(
        "from_counts, dict of 17,000 ids",
        lambda: VocabPlan.from_counts(sparse, VOCAB, keep=(0, 1, 2, 3)),
    )
    kept = list(plan.kept)
    ids = [rng.choice(kept) for _ in range(1_000_000)]
    add("remap 1,000,000 ids", lambda: plan.remap(ids))
    mixed = [rng.randrange(VOCAB) for _ in range(1_000_000)]
    add("remap 1,000,000 ids, unk for dropped", lambda: plan.remap(mixed, unk=0))
    text = add("to_json", plan.to_json)
    back = add("from_json", lambda: VocabPlan.from_json(text))
    assert back == plan
    return {
        "vocab_size": VOCAB,
        "kept": plan.new_size,
        "json_bytes": len(text.encode()),
        "repeats": repeats,
        "rows": rows,
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    res = run(ap.parse_args().quick)
    for r in res["rows"]:
        print(
            f"{r['op']:45s} best {r['best_s'] * 1e3:8.1f} ms  median {r['median_s'] * 1e3:8.1f} ms"
        )
    print(json.dumps({k: v for k, v in res.items() if k != "rows"}))
