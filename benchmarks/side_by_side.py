"""Side by side: vocabcore vs transformer-smaller-training-vocab, one run, one machine.

Both libraries run ``_worker.py`` in a subprocess of their own environment (vocabcore: this
interpreter; the predecessor: ``.bench-envs/tstv``) on the same job: the same XLM-R-style
250,002-piece Unigram tokenizer files, the same CoNLL-like texts, the same XLM-R-base config
(250,002 x 768, random weights). The workers run one after the other, never together.

    python benchmarks/side_by_side.py [--quick] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import _harness as h

h.setup()

import _corpus  # noqa: E402
import _tokenizers  # noqa: E402

ROOT, TSTV_PYTHON = h.ROOT, h.TSTV_PYTHON

XLMR_BASE = {
    "vocab_size": 250_002,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "max_position_embeddings": 514,
    "type_vocab_size": 1,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "layer_norm_eps": 1e-5,
    "num_labels": 9,
}
XLMR_QUICK = {
    **XLMR_BASE,
    "vocab_size": 20_002,
    "hidden_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 128,
}


def run_worker(python: str | Path, lib: str, job_path: Path, timeout: int = 1800) -> dict[str, Any]:
    env = h.worker_env(ROOT / "src") if lib == "vocabcore" else h.worker_env()
    worker = Path(__file__).with_name("_worker.py")
    result = h.worker_json(
        [worker, "--lib", lib, job_path], python, env=env, timeout=timeout, echo=6000
    )
    return {"lib": lib, **result} if "error" in result else result


def run(quick: bool = False, threads: int = 1, workdir: Path | None = None) -> dict[str, Any]:
    tok_dir = _tokenizers.build("xlmr", quick=quick)
    texts = _corpus.word_lists(quick)
    tmp = Path(workdir or tempfile.mkdtemp(prefix="vocabcore-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    h.write_json(tmp / "texts.json", texts, indent=None)
    job = {
        "tokenizer_dir": str(tok_dir),
        "texts": str(tmp / "texts.json"),
        "model_config": XLMR_QUICK if quick else XLMR_BASE,
        "model_type": "xlm-roberta",
        "repeats": 1 if quick else 5,
        "threads": threads,
        "checks": True,
        "memory": True,
    }
    job_path = tmp / "job.json"
    h.write_json(job_path, job)
    out: dict[str, Any] = {
        "job": {k: v for k, v in job.items() if k != "texts"},
        "n_texts": len(texts),
        "n_words": sum(map(len, texts)),
    }
    out["vocabcore"] = run_worker(sys.executable, "vocabcore", job_path)
    if TSTV_PYTHON.exists():
        out["tstv"] = run_worker(TSTV_PYTHON, "tstv", job_path)
    else:
        out["tstv"] = {"skipped": f"no predecessor venv at {TSTV_PYTHON}"}
    ids = {lib: set(out[lib].get("count", {}).pop("kept_ids", [])) for lib in ("vocabcore", "tstv")}
    out["kept_only_vocabcore"] = sorted(ids["vocabcore"] - ids["tstv"])[:50]
    out["kept_only_tstv"] = sorted(ids["tstv"] - ids["vocabcore"])[:50]
    out["kept_both"] = len(ids["vocabcore"] & ids["tstv"])
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("-o", "--output", type=Path)
    a = ap.parse_args()
    result = run(a.quick, a.threads)
    text = json.dumps(result, indent=1)
    if a.output:
        a.output.write_text(text)
    else:
        print(text)
