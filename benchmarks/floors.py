"""Plan build, apply + revert and step time against their floors, and against the predecessor.

    python benchmarks/floors.py [--quick] [--rounds N] [--out results-floors-X.json]

One run measures, for vocabcore (this interpreter) and transformer-smaller-training-vocab (its
venv at ``.bench-envs/tstv``, when present), one after the other on the same inputs:

* **plan build** (``plan_from_texts`` / ``get_token_stats``) on 30,000 CoNLL-like texts for a
  WordPiece (the real all-MiniLM-L6-v2), a Unigram (250,002, XLM-R-style), a WordLevel
  (30,000) and a byte-level BPE (50,265) tokenizer, against the floor: the backend's
  ``encode_batch_fast`` over the same batches;
* **apply + revert** of a 250,002-piece Unigram tokenizer and an XLM-R-base-sized model
  (2 layers), split into the tokenizer part (floor: one ``to_str()`` of the tokenizer and one
  ``Tokenizer.from_str`` of the reduced document) and the model part (floor: one
  ``index_select`` of the kept rows and one ``index_copy_`` back);
* **step time while reduced**, Flair-like: the real all-MiniLM-L6-v2 body (30,522 rows) with a
  token-classification head, reduced by the library, AdamW made after reducing (as Flair's
  ``fine_tune`` does), against the same model reduced by hand (a plain ``nn.Embedding`` of the
  kept rows, nothing else): steps of the two models alternate, so any per-step cost of the
  library (hooks, wrapper checks, optimizer tracking) shows as a ratio above 1.

The machine may be shared: every figure is the best of ``--rounds`` rounds, and floor and
library rounds alternate, so each ratio compares two measurements taken side by side.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _harness as h
import _libraries

h.setup(quiet=True)

HERE, ROOT, TSTV_PYTHON = h.HERE, h.ROOT, h.TSTV_PYTHON
best_pair = h.best_pair
ms, times, table = h.ms, h.times, h.table

PLAN_TOKENIZERS = (
    ("WordPiece", "bert"),
    ("Unigram", "xlmr"),
    ("WordLevel", "wordlevel"),
    ("byte-level BPE", "roberta"),
)
XLMR_2_LAYERS = {
    "vocab_size": 250_002,
    "hidden_size": 768,
    "num_hidden_layers": 2,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "max_position_embeddings": 514,
    "type_vocab_size": 1,
    "pad_token_id": 1,
    "num_labels": 9,
}


# -- measurements (run inside one library's process) ------------------------------------------


def measure_plans(lib: Any, job: dict[str, Any]) -> list[dict[str, Any]]:
    from transformers import AutoTokenizer

    texts = h.read_json(job["texts"])
    rows = []
    for kind, tok_dir in job["plan_tokenizers"]:
        tok = AutoTokenizer.from_pretrained(tok_dir)
        backend = tok.backend_tokenizer
        encode = getattr(backend, "encode_batch_fast", None) or backend.encode_batch

        def floor(tok: Any = tok, encode: Any = encode) -> None:
            for i in range(0, len(texts), 1000):
                encode(texts[i : i + 1000], add_special_tokens=True)

        result: list[Any] = []
        floor_s, plan_s = best_pair(
            floor,
            lambda tok=tok, result=result: result.append(lib.count(tok, texts)),
            job["rounds"],
        )
        rows.append(
            {
                "kind": kind,
                "vocab_size": len(tok),
                "floor_s": floor_s,
                "plan_s": plan_s,
                "kept": len(lib.kept(result[-1])),
            }
        )
        print(f"[{lib.name}] plan {kind}: {rows[-1]}", file=sys.stderr)
        del tok
        gc.collect()
    return rows


def _xlmr_model(cfg: dict[str, Any]) -> Any:
    return h.model_from_config("xlm-roberta", cfg, "tc")


def measure_apply_revert(lib: Any, job: dict[str, Any]) -> dict[str, Any]:
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    texts = h.read_json(job["texts"])
    tok = AutoTokenizer.from_pretrained(job["unigram_dir"])
    plan = lib.count(tok, texts)
    kept = lib.kept(plan)
    model = _xlmr_model(job["model_config"])
    weight = model.get_input_embeddings().weight
    idx = torch.tensor(kept, dtype=torch.long)
    rounds = job["rounds"]
    out: dict[str, Any] = {"kept": len(kept), "rows": weight.shape[0], "dim": weight.shape[1]}

    def model_floor() -> None:
        with torch.no_grad():
            small = weight.index_select(0, idx)
            weight.index_copy_(0, idx, small)

    backend = tok.backend_tokenizer
    reduced_text = job.get("reduced_tokenizer_json")

    def tokenizer_floor() -> None:
        backend.to_str()
        Tokenizer.from_str(reduced_text)

    def cycle(**parts: Any) -> Callable[[], None]:
        return lambda: lib.restore(lib.reduce(plan, **parts))

    out["model_floor_s"], out["model_s"] = best_pair(model_floor, cycle(model=model), rounds)
    if reduced_text is not None:
        out["tokenizer_floor_s"], out["tokenizer_s"] = best_pair(
            tokenizer_floor, cycle(tokenizer=tok), rounds
        )
    else:
        out["tokenizer_s"] = best_pair(cycle(tokenizer=tok), lambda: None, rounds)[0]
    out["both_s"] = best_pair(cycle(model=model, tokenizer=tok), lambda: None, rounds)[0]
    print(f"[{lib.name}] apply+revert: {out}", file=sys.stderr)
    return out


def measure_small(lib: Any, job: dict[str, Any]) -> dict[str, Any]:
    """Flair-sized: plan from a small corpus, reduce and restore the real all-MiniLM-L6-v2.

    What Flair's ``fine_tune(reduce_transformer_vocab=True)`` pays around training: token
    statistics of the training sentences, then reduce model and tokenizer, then restore.
    ``first_s`` is the first call in the process (imports of the library's modules included),
    ``*_s`` the best of the later rounds.
    """
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    words = h.read_json(job["words"])[: job["small_texts"]]
    texts = [" ".join(w) for w in words]
    tok = AutoTokenizer.from_pretrained(job["minilm_dir"])
    model = AutoModelForTokenClassification.from_pretrained(job["minilm_dir"], num_labels=9)

    def plan() -> Any:
        return lib.count(tok, texts)

    def all_three() -> None:
        lib.restore(lib.reduce(plan(), model=model, tokenizer=tok))

    t0 = time.perf_counter()
    all_three()
    out: dict[str, Any] = {"first_s": time.perf_counter() - t0, "rows": len(tok)}
    the_plan = plan()
    out["kept"] = len(lib.kept(the_plan))
    out["plan_s"], out["reduce_restore_s"] = best_pair(
        plan,
        lambda: lib.restore(lib.reduce(the_plan, model=model, tokenizer=tok)),
        job["rounds"] * 4,
    )
    out["total_s"] = best_pair(all_three, lambda: None, job["rounds"] * 4)[0]
    print(f"[{lib.name}] small: {out}", file=sys.stderr)
    return out


def _step_batches(tok: Any, words: list[list[str]], steps: int) -> list[tuple[Any, Any, Any]]:
    batches = []
    for b in range(steps):
        enc = h.encode_words(tok, words[b * 16 : (b + 1) * 16], 48)
        batches.append((enc["input_ids"], enc["attention_mask"], h.tc_labels(enc)))
    return batches


def _hand_reduced(model: Any, kept: list[int]) -> Any:
    """``model`` with a plain ``nn.Embedding`` of the kept rows, nothing else."""
    import torch

    emb = model.get_input_embeddings()
    small = torch.nn.Embedding(len(kept), emb.weight.shape[1])
    with torch.no_grad():
        small.weight.copy_(emb.weight[torch.tensor(kept)])
    model.set_input_embeddings(small)
    model.config.vocab_size = len(kept)
    return model


def _timed_step(m: Any, opt: Any, batch: Any) -> float:
    ids, mask, labels = batch

    def step() -> None:
        loss = m(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()

    return h.timed(step)[0]


def measure_steps(lib: Any, job: dict[str, Any]) -> dict[str, Any]:
    """Step time of the library-reduced model vs the same model reduced by hand."""
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    words = h.read_json(job["words"])
    tok = AutoTokenizer.from_pretrained(job["minilm_dir"])
    plan = lib.count(tok, [" ".join(w) for w in words])
    kept = lib.kept(plan)

    def model() -> Any:
        torch.manual_seed(0)
        m = AutoModelForTokenClassification.from_pretrained(job["minilm_dir"], num_labels=9)
        m.train()
        return m

    ours = model()
    handle = lib.reduce(plan, model=ours, tokenizer=tok)
    batches = _step_batches(tok, words, job["steps"])
    lib.restore(handle)
    twin = _hand_reduced(model(), kept)
    handle = lib.reduce(plan, model=ours, tokenizer=tok)
    opt_ours = torch.optim.AdamW(ours.parameters(), lr=1e-5)
    lib.track(handle, opt_ours)
    opt_twin = torch.optim.AdamW(twin.parameters(), lr=1e-5)
    _timed_step(ours, opt_ours, batches[0])
    _timed_step(twin, opt_twin, batches[0])
    t_ours, t_twin = [], []
    for batch in batches:
        t_ours.append(_timed_step(ours, opt_ours, batch))
        t_twin.append(_timed_step(twin, opt_twin, batch))
    lib.restore(handle)
    out = {
        "kept": len(kept),
        "rows": len(tok),
        "steps": len(batches),
        "step_s": statistics.median(t_ours),
        "step_best_s": min(t_ours),
        "twin_step_s": statistics.median(t_twin),
        "twin_step_best_s": min(t_twin),
    }
    print(f"[{lib.name}] steps: {out}", file=sys.stderr)
    return out


def worker(lib_name: str, job_path: str) -> None:
    import torch

    torch.set_num_threads(1)
    job = h.read_json(job_path)
    lib = _libraries.load(lib_name)
    res: dict[str, Any] = {"lib": lib.name, **h.runtime_versions()}
    res["small"] = measure_small(lib, job)  # first: its first call pays the imports
    res["plans"] = measure_plans(lib, job)
    res["apply_revert"] = measure_apply_revert(lib, job)
    res["steps"] = measure_steps(lib, job)
    json.dump(res, sys.stdout)


# -- orchestration ----------------------------------------------------------------------------


def run_worker(python: str | Path, lib: str, job_path: Path) -> dict[str, Any]:
    return h.worker_json([__file__, "--worker", lib, job_path], python)


def _job(quick: bool, rounds: int, work: Path) -> dict[str, Any]:
    """Write the inputs both workers read; the job that names them."""
    import _corpus
    import _tokenizers
    from side_by_side import XLMR_QUICK
    from transformers import AutoTokenizer

    from vocab_adapters import plan_from_texts
    from vocab_adapters.stages.fast_tokenizer import reduce_tokenizer_json
    from vocab_adapters.tokenization.tokenizer_backend import dump_json, load_json

    sentences = _corpus.training_set(2_000 if quick else 30_000)
    h.write_json(work / "texts.json", [" ".join(s) for s in sentences], indent=None)
    h.write_json(work / "words.json", [list(s) for s in sentences], indent=None)
    unigram_dir = str(_tokenizers.build("xlmr", quick=quick))
    tok = AutoTokenizer.from_pretrained(unigram_dir)
    plan = plan_from_texts(tok, [" ".join(s) for s in sentences])
    reduced = dump_json(reduce_tokenizer_json(plan, load_json(tok.backend_tokenizer.to_str())))
    return {
        "texts": str(work / "texts.json"),
        "words": str(work / "words.json"),
        "plan_tokenizers": [
            (kind, str(_tokenizers.build(fam, quick=quick and fam != "bert")))
            for kind, fam in PLAN_TOKENIZERS
        ],
        "unigram_dir": unigram_dir,
        "minilm_dir": str(_tokenizers.minilm_dir()),
        "model_config": XLMR_QUICK if quick else XLMR_2_LAYERS,
        "reduced_tokenizer_json": reduced,
        "rounds": rounds,
        "steps": 4 if quick else 24,
        "small_texts": 200,
    }


def run(quick: bool, rounds: int) -> dict[str, Any]:
    import transformers

    n = 2_000 if quick else 30_000
    work = Path(tempfile.mkdtemp(prefix="vocabcore-floors-"))
    job_path = work / "job.json"
    h.write_json(job_path, _job(quick, rounds, work), indent=None)
    out: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "quick": quick,
        "rounds": rounds,
        "n_texts": n,
        "transformers": transformers.__version__,
        "load_average": os.getloadavg()[0],
    }
    out["vocabcore"] = run_worker(sys.executable, "vocabcore", job_path)
    if TSTV_PYTHON.exists():
        out["tstv"] = run_worker(TSTV_PYTHON, "tstv", job_path)
    else:
        out["tstv"] = {"skipped": f"no predecessor venv at {TSTV_PYTHON.relative_to(ROOT)}"}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small inputs: checks the pipeline")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--worker", nargs=2, metavar=("LIB", "JOB"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    result = run(args.quick, 1 if args.quick else args.rounds)
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text)
        print(f"results: {args.out}", file=sys.stderr)
    else:
        print(text)
    failed = [lib for lib in ("vocabcore", "tstv") if "error" in result[lib]]
    if failed:
        sys.exit(f"a worker failed: {failed}")


# -- the page section ---------------------------------------------------------------------------

LIBS = (("vocabcore", "vocabcore"), ("tstv", "predecessor (4.57)"))


def render(results: list[dict[str, Any]]) -> str:
    """The 'floors' section of docs/benchmarks.md: one column group per transformers major."""
    results = sorted(results, key=lambda r: r["transformers"])
    heads = [f"transformers {r['transformers']}" for r in results]
    lines = [
        *_intro(results),
        _targets(results),
        *_plan_build(results, heads),
        *_apply_revert(results, heads),
        *_flair_sized(results, heads),
        *_step_time(results, heads),
    ]
    return "\n".join(lines) + "\n"


def _intro(results: list[dict[str, Any]]) -> list[str]:
    return [
        "## Floors and the predecessor, under both transformers majors\n",
        "`python benchmarks/floors.py --out benchmarks/results-floors-MAJOR.json`, run once in "
        "an environment with transformers 5 and once with transformers 4.57; the predecessor "
        "always runs in its own venv (transformers 4.57). Each column says which "
        "transformers the figure comes from. The machine is shared with other jobs, so timings "
        "are noisy: every figure is the **best of "
        + ", ".join(str(r["rounds"]) for r in results)
        + " rounds**, floor and library rounds alternate, and the ratios compare two "
        "measurements taken side by side in one run. "
        + "; ".join(
            f"transformers {r['transformers']}: {r['date']}, load average {r['load_average']:.1f}"
            for r in results
        )
        + ".\n",
    ]


def _plans(r: dict[str, Any], lib: str, kind: str) -> dict[str, Any]:
    """One library's plan-build figures for one tokenizer kind (empty when not measured)."""
    return dict(next((p for p in r.get(lib, {}).get("plans", []) if p["kind"] == kind), {}))


def _part(results: list[dict[str, Any]], lib: str, part: str) -> list[dict[str, Any]]:
    """One library's figures of one part (``apply_revert``, ``small``, ``steps``) per run."""
    return [dict(r.get(lib, {}).get(part, {})) for r in results]


def _plan_rows(results: list[dict[str, Any]], kind: str) -> list[list[str]]:
    size = _plans(results[0], "vocabcore", kind).get("vocab_size", 0)
    vc = [_plans(r, "vocabcore", kind) for r in results]
    ts = [_plans(r, "tstv", kind) for r in results]
    pairs = list(zip(vc, ts, strict=True))
    return [
        [f"{kind} ({size:,})", "floor", *[ms(v.get("floor_s")) for v in vc]],
        ["", "vocabcore", *[ms(v.get("plan_s")) for v in vc]],
        ["", "**vocabcore / floor**", *[times(v.get("plan_s"), v.get("floor_s")) for v in vc]],
        ["", "predecessor (4.57)", *[ms(t.get("plan_s")) for t in ts]],
        [
            "",
            "**predecessor / vocabcore**",
            *[times(t.get("plan_s"), v.get("plan_s")) for v, t in pairs],
        ],
        [
            "",
            "same, each over the floor of its own run",
            *[_floor_ratio(t, v, "plan_s", "floor_s") for v, t in pairs],
        ],
    ]


def _plan_build(results: list[dict[str, Any]], heads: list[str]) -> list[str]:
    kinds = [p["kind"] for p in results[0]["vocabcore"].get("plans", [])]
    rows = [row for kind in kinds for row in _plan_rows(results, kind)]
    return [
        "### Plan build (30,000 texts)\n",
        "Floor: the backend's `encode_batch_fast` over the same batches of 1,000 texts "
        "(encoding every text). vocabcore: `plan_from_texts` (counting, special tokens, "
        "closure, fingerprint); it encodes each distinct space-separated piece once and "
        "weights its ids by the piece's count, which equals encoding every text for these four "
        "pipelines (see docs/concepts.md), so it can run below the floor. Predecessor: "
        "`get_token_stats` (counting only, one text at a time).\n",
        table(["tokenizer", "measure", *heads], rows) + "\n",
        "The two libraries run one after the other, in separate processes, so a change of load "
        "between them moves *predecessor / vocabcore*; the last row divides each library's "
        "time by the floor measured beside it in its own process, which cancels that.\n",
    ]


def _apply_revert(results: list[dict[str, Any]], heads: list[str]) -> list[str]:
    vc = _part(results, "vocabcore", "apply_revert")
    ts = _part(results, "tstv", "apply_revert")
    pairs = list(zip(vc, ts, strict=True))

    def over(key: str, floor: str) -> list[str]:
        return [times(v.get(key), v.get(floor)) for v in vc]

    rows = [
        ["tokenizer part", "floor: one `to_str` + one `from_str` of the reduced JSON"]
        + [ms(v.get("tokenizer_floor_s")) for v in vc],
        ["", "vocabcore"] + [ms(v.get("tokenizer_s")) for v in vc],
        ["", "**vocabcore / floor**", *over("tokenizer_s", "tokenizer_floor_s")],
        ["model part", "floor: one `index_select` + one `index_copy_`"]
        + [ms(v.get("model_floor_s")) for v in vc],
        ["", "vocabcore"] + [ms(v.get("model_s")) for v in vc],
        ["", "**vocabcore / floor**", *over("model_s", "model_floor_s")],
        ["model + tokenizer", "vocabcore"] + [ms(v.get("both_s")) for v in vc],
        ["", "predecessor (4.57)"] + [ms(t.get("both_s")) for t in ts],
        ["", "**predecessor / vocabcore**"]
        + [times(t.get("both_s"), v.get("both_s")) for v, t in pairs],
    ]
    return [
        "### Apply + revert (250,002-piece Unigram, XLM-R-base embedding, 2 layers)\n",
        table(["part", "measure", *heads], rows) + "\n",
    ]


def _flair_sized(results: list[dict[str, Any]], heads: list[str]) -> list[str]:
    rows = []
    for lib, label in LIBS:
        sm = _part(results, lib, "small")
        rows.append([label, "kept rows"] + [str(s.get("kept", "")) for s in sm])
        rows.append(["", "plan"] + [ms(s.get("plan_s")) for s in sm])
        rows.append(["", "reduce + restore"] + [ms(s.get("reduce_restore_s")) for s in sm])
        rows.append(["", "**all three**"] + [ms(s.get("total_s")) for s in sm])
        rows.append(["", "first call"] + [ms(s.get("first_s")) for s in sm])
    vs, tsm = _part(results, "vocabcore", "small"), _part(results, "tstv", "small")
    rows.append(["", "**predecessor / vocabcore**, all three"])
    rows[-1] += [times(t.get("total_s"), v.get("total_s")) for v, t in zip(vs, tsm, strict=True)]
    return [
        "### Flair-sized: plan, reduce and restore the real all-MiniLM-L6-v2 (30,522 tokens)\n",
        "What a Flair `fine_tune` with vocabulary reduction pays around training: token "
        "statistics of 200 training sentences, then reduce model (token-classification head) "
        "and tokenizer, then restore. *First call* is the first in a fresh process (the "
        "library's own imports included; torch and transformers already loaded); the others "
        "are the best of the later rounds.\n",
        table(["library", "measure", *heads], rows) + "\n",
    ]


def _step_time(results: list[dict[str, Any]], heads: list[str]) -> list[str]:
    rows = []
    for lib, label in LIBS:
        st = _part(results, lib, "steps")
        rows.append([label, "reduced by the library"] + [ms(s.get("step_s")) for s in st])
        rows.append(["", "reduced by hand"] + [ms(s.get("twin_step_s")) for s in st])
        rows.append(["", "**library / by hand**"])
        rows[-1] += [times(s.get("step_s"), s.get("twin_step_s")) for s in st]
    return [
        "### Step time while reduced (Flair-like: MiniLM, 30,522 rows, token classification)\n",
        "Median step (forward + backward + AdamW step) of the model reduced by the library, "
        "against the same model reduced by hand (a plain `nn.Embedding` of the same kept "
        "rows), steps alternating in one process, batches of 16 sentences cut at 48 tokens. "
        "A ratio near 1.00 means the library costs nothing per step.\n",
        table(["library", "measure", *heads], rows) + "\n",
    ]


# -- the targets table --------------------------------------------------------------------------

PLAN_LIMITS = (("WordPiece", 1.15), ("Unigram", 1.15), ("WordLevel", 1.15), ("byte-level BPE", 1.3))


def _quotient(a: Any, b: Any) -> float | None:
    return a / b if isinstance(a, float) and isinstance(b, float) and b > 0 else None


def _target_row(
    label: str, values: list[float | None], limit: float, above: bool = False
) -> list[str]:
    cells = ["-" if v is None else f"{v:,.2f}x" for v in values]
    ok = all(v is not None and (v >= limit if above else v <= limit) for v in values)
    return [label, *cells, "met" if ok else "not met"]


def _plan_targets(results: list[dict[str, Any]]) -> list[list[str]]:
    def over_floor(r: dict[str, Any], lib: str, kind: str) -> float | None:
        p = _plans(r, lib, kind)
        return _quotient(p.get("plan_s"), p.get("floor_s"))

    rows = [
        _target_row(
            f"plan build, {kind}: vocabcore / floor <= {limit}x",
            [over_floor(r, "vocabcore", kind) for r in results],
            limit,
        )
        for kind, limit in PLAN_LIMITS
    ]
    rows += [
        _target_row(
            f"plan build, {kind}: predecessor / vocabcore >= 2x (over own floors)",
            [
                _quotient(over_floor(r, "tstv", kind), over_floor(r, "vocabcore", kind))
                for r in results
            ],
            2.0,
            True,
        )
        for kind, _ in PLAN_LIMITS
    ]
    return rows


def _apply_targets(results: list[dict[str, Any]]) -> list[list[str]]:
    ar = list(
        zip(
            _part(results, "vocabcore", "apply_revert"),
            _part(results, "tstv", "apply_revert"),
            strict=True,
        )
    )
    sm = list(
        zip(_part(results, "vocabcore", "small"), _part(results, "tstv", "small"), strict=True)
    )
    return [
        _target_row(
            "apply + revert, model + tokenizer: predecessor / vocabcore >= 20x",
            [_quotient(t.get("both_s"), v.get("both_s")) for v, t in ar],
            20.0,
            True,
        ),
        _target_row(
            "tokenizer part: vocabcore / (to_str + from_str) <= 1.3x",
            [_quotient(v.get("tokenizer_s"), v.get("tokenizer_floor_s")) for v, _ in ar],
            1.3,
        ),
        _target_row(
            "model part: vocabcore / (index_select + index_copy_) <= 1.3x",
            [_quotient(v.get("model_s"), v.get("model_floor_s")) for v, _ in ar],
            1.3,
        ),
        _target_row(
            "Flair-sized plan + reduce + restore: predecessor / vocabcore >= 1x",
            [_quotient(t.get("total_s"), v.get("total_s")) for v, t in sm],
            1.0,
            True,
        ),
    ]


def _targets(results: list[dict[str, Any]]) -> str:
    """The targets table: one row per target, one measured cell per transformers major."""
    heads = [f"transformers {r['transformers']}" for r in results]
    steps = [
        _quotient(s.get("step_s"), s.get("twin_step_s"))
        for s in _part(results, "vocabcore", "steps")
    ]
    rows = _plan_targets(results) + _apply_targets(results)
    rows.append(
        ["step while reduced: library / hand-reduced twin (median; 1.00 = no per-step cost)"]
        + ["-" if q is None else f"{q:,.3f}x" for q in steps]
        + ["(reported)"]
    )
    return "### Targets\n\n" + table(["target", *heads, "status"], rows) + "\n"


def _floor_ratio(t: dict[str, Any], v: dict[str, Any], key: str, floor: str) -> str:
    """(predecessor / its floor) / (vocabcore / its floor), as ``times`` prints ratios."""
    if not all(isinstance(d.get(k), float) and d[k] > 0 for d in (t, v) for k in (key, floor)):
        return "-"
    return times(t[key] / t[floor], v[key] / v[floor])


if __name__ == "__main__":
    main()
