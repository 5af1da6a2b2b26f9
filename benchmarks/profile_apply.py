"""Where vocabcore's apply + revert time goes, on the side-by-side setup (XLM-R-base, 250k).

python benchmarks/profile_apply.py [model|tokenizer|both] [--top N]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

import _harness as h

h.setup()

import _corpus  # noqa: E402
import _tokenizers  # noqa: E402
from side_by_side import XLMR_BASE  # noqa: E402


def main() -> None:
    import torch
    import transformers

    from vocab_adapters import apply_plan, plan_from_texts, revert_plan

    ap = argparse.ArgumentParser()
    ap.add_argument("part", nargs="?", default="both", choices=("model", "tokenizer", "both"))
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    tok = transformers.AutoTokenizer.from_pretrained(_tokenizers.build("xlmr"))
    texts = [list(s) for s in _corpus.training_set()]
    plan = plan_from_texts(tok, texts)
    model = h.model_from_config("xlm-roberta", XLMR_BASE, "tc")
    kwargs = {
        "model": {"model": model},
        "tokenizer": {"tokenizer": tok},
        "both": {"model": model, "tokenizer": tok},
    }[a.part]
    revert_plan(apply_plan(plan, **kwargs))  # warm-up
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    applied = apply_plan(plan, **kwargs)
    t1 = time.perf_counter()
    revert_plan(applied)
    prof.disable()
    t2 = time.perf_counter()
    print(
        f"{a.part}: apply {(t1 - t0) * 1e3:.1f} ms, revert {(t2 - t1) * 1e3:.1f} ms "
        "(under cProfile)"
    )
    pstats.Stats(prof).sort_stats("cumulative").print_stats(a.top)


if __name__ == "__main__":
    main()
