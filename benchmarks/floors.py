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
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TSTV_PYTHON = ROOT / ".bench-envs" / "tstv" / "bin" / "python"

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


def best_pair(a: Callable[[], Any], b: Callable[[], Any], rounds: int) -> tuple[float, float]:
    """Best seconds of ``a`` and of ``b`` over alternating rounds (one warm-up each)."""
    a()
    b()
    ta, tb = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        a()
        ta.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        b()
        tb.append(time.perf_counter() - t0)
    return min(ta), min(tb)


# -- the two libraries ------------------------------------------------------------------------


class Vocabcore:
    name = "vocabcore"

    def __init__(self) -> None:
        sys.path.insert(0, str(ROOT / "src"))
        import vocab_adapters

        self.va = vocab_adapters

    def plan(self, tok: Any, texts: list[str]) -> Any:
        return self.va.plan_from_texts(tok, texts)

    def kept(self, plan: Any) -> list[int]:
        return list(plan.kept)

    def reduce(self, plan: Any, **parts: Any) -> Any:
        return self.va.apply_plan(plan, **parts)

    def restore(self, handle: Any) -> None:
        self.va.revert_plan(handle)

    def track(self, handle: Any, optimizer: Any) -> None:
        handle.track(optimizer)


class Tstv:
    name = "transformer-smaller-training-vocab"

    def __init__(self) -> None:
        from transformer_smaller_training_vocab import modify_model, modify_tokenizer, token_stats

        self.mm, self.mt, self.ts = modify_model, modify_tokenizer, token_stats

    def plan(self, tok: Any, texts: list[str]) -> Any:
        return self.ts.get_token_stats(tok, texts)

    def kept(self, plan: Any) -> list[int]:
        return list(plan)

    def reduce(self, plan: Any, model: Any = None, tokenizer: Any = None) -> Any:
        saved_emb = saved_vocab = None
        if model is not None:
            saved_emb = self.mm.reduce_embedding(model, plan, empty_cuda_cache=False)
        if tokenizer is not None:
            saved_vocab = self.mt.reduce_tokenizer(tokenizer, plan)
        return (plan, model, tokenizer, saved_emb, saved_vocab)

    def restore(self, handle: Any) -> None:
        plan, model, tokenizer, saved_emb, saved_vocab = handle
        if model is not None:
            self.mm.recreate_embedding(model, saved_emb, plan, empty_cuda_cache=False)
        if tokenizer is not None:
            self.mt.recreate_tokenizer(tokenizer, saved_vocab)

    def track(self, handle: Any, optimizer: Any) -> None:
        pass


# -- measurements (run inside one library's process) ------------------------------------------


def measure_plans(lib: Any, job: dict[str, Any]) -> list[dict[str, Any]]:
    from transformers import AutoTokenizer

    texts = json.loads(Path(job["texts"]).read_text())
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
            floor, lambda tok=tok, result=result: result.append(lib.plan(tok, texts)), job["rounds"]
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
    import torch
    import transformers

    config = transformers.AutoConfig.for_model("xlm-roberta", **cfg)
    torch.manual_seed(0)
    return transformers.AutoModelForTokenClassification.from_config(config)


def measure_apply_revert(lib: Any, job: dict[str, Any]) -> dict[str, Any]:
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    texts = json.loads(Path(job["texts"]).read_text())
    tok = AutoTokenizer.from_pretrained(job["unigram_dir"])
    plan = lib.plan(tok, texts)
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

    words = json.loads(Path(job["words"]).read_text())[: job["small_texts"]]
    texts = [" ".join(w) for w in words]
    tok = AutoTokenizer.from_pretrained(job["minilm_dir"])
    model = AutoModelForTokenClassification.from_pretrained(job["minilm_dir"], num_labels=9)

    def plan() -> Any:
        return lib.plan(tok, texts)

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


def measure_steps(lib: Any, job: dict[str, Any]) -> dict[str, Any]:
    """Step time of the library-reduced model vs the same model reduced by hand."""
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    words = json.loads(Path(job["words"]).read_text())
    tok = AutoTokenizer.from_pretrained(job["minilm_dir"])
    plan = lib.plan(tok, [" ".join(w) for w in words])
    kept = lib.kept(plan)

    def model() -> Any:
        torch.manual_seed(0)
        m = AutoModelForTokenClassification.from_pretrained(job["minilm_dir"], num_labels=9)
        m.train()
        return m

    ours = model()
    handle = lib.reduce(plan, model=ours, tokenizer=tok)
    batches = []
    for b in range(job["steps"]):
        enc = tok(
            words[b * 16 : (b + 1) * 16],
            is_split_into_words=True,
            truncation=True,
            max_length=48,
            padding=True,
            return_tensors="pt",
        )
        labels = torch.where(enc["attention_mask"].bool(), enc["input_ids"] % 9, -100)
        batches.append((enc["input_ids"], enc["attention_mask"], labels))
    lib.restore(handle)

    # the hand-reduced twin: same kept rows, a plain nn.Embedding, nothing else
    twin = model()
    emb = twin.get_input_embeddings()
    small = torch.nn.Embedding(len(kept), emb.weight.shape[1])
    with torch.no_grad():
        small.weight.copy_(emb.weight[torch.tensor(kept)])
    twin.set_input_embeddings(small)
    twin.config.vocab_size = len(kept)

    handle = lib.reduce(plan, model=ours, tokenizer=tok)
    opt_ours = torch.optim.AdamW(ours.parameters(), lr=1e-5)
    lib.track(handle, opt_ours)
    opt_twin = torch.optim.AdamW(twin.parameters(), lr=1e-5)

    def step(m: Any, opt: Any, batch: Any) -> float:
        ids, mask, labels = batch
        t0 = time.perf_counter()
        loss = m(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        return time.perf_counter() - t0

    step(ours, opt_ours, batches[0])
    step(twin, opt_twin, batches[0])
    t_ours, t_twin = [], []
    for batch in batches:
        t_ours.append(step(ours, opt_ours, batch))
        t_twin.append(step(twin, opt_twin, batch))
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
    import transformers

    torch.set_num_threads(1)
    job = json.loads(Path(job_path).read_text())
    lib = Vocabcore() if lib_name == "vocabcore" else Tstv()
    res: dict[str, Any] = {
        "lib": lib.name,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    try:
        import tokenizers

        res["tokenizers"] = tokenizers.__version__
    except ImportError:
        pass
    res["small"] = measure_small(lib, job)  # first: its first call pays the imports
    res["plans"] = measure_plans(lib, job)
    res["apply_revert"] = measure_apply_revert(lib, job)
    res["steps"] = measure_steps(lib, job)
    json.dump(res, sys.stdout)


# -- orchestration ----------------------------------------------------------------------------


def run_worker(python: str | Path, lib: str, job_path: Path) -> dict[str, Any]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run(
        [str(python), __file__, "--worker", lib, str(job_path)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    sys.stderr.write(proc.stderr[-4000:])
    if proc.returncode != 0:
        return {"error": f"worker exited {proc.returncode}: {proc.stderr[-1500:]}"}
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def run(quick: bool, rounds: int) -> dict[str, Any]:
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(ROOT / "src"))
    import _corpus
    import _tokenizers
    import transformers
    from side_by_side import XLMR_QUICK
    from transformers import AutoTokenizer

    from vocab_adapters import plan_from_texts
    from vocab_adapters.stages.fast_tokenizer import reduce_tokenizer_json
    from vocab_adapters.tokenization.tokenizer_backend import dump_json, load_json

    n = 2_000 if quick else 30_000
    sentences = _corpus.training_set(n)
    work = Path(tempfile.mkdtemp(prefix="vocabcore-floors-"))
    (work / "texts.json").write_text(json.dumps([" ".join(s) for s in sentences]))
    (work / "words.json").write_text(json.dumps([list(s) for s in sentences]))
    unigram_dir = str(_tokenizers.build("xlmr", quick=quick))
    tok = AutoTokenizer.from_pretrained(unigram_dir)
    plan = plan_from_texts(tok, [" ".join(s) for s in sentences])
    reduced = dump_json(reduce_tokenizer_json(plan, load_json(tok.backend_tokenizer.to_str())))
    job = {
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
    job_path = work / "job.json"
    job_path.write_text(json.dumps(job))
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


if __name__ == "__main__":
    main()


# -- the page section ---------------------------------------------------------------------------


def _ms(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s * 1e3:,.1f} ms" if s < 1 else f"{s:,.2f} s"


def _x(a: float | None, b: float | None) -> str:
    return "-" if not a or not b else f"{a / b:,.2f}x"


def render(results: list[dict[str, Any]]) -> str:
    """The 'floors' section of docs/benchmarks.md: one column group per transformers major."""
    results = sorted(results, key=lambda r: r["transformers"])
    heads = [f"transformers {r['transformers']}" for r in results]
    lines = ["## Floors and the predecessor, under both transformers majors\n"]
    lines.append(
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
        + ".\n"
    )
    lines.append(_targets(results))
    lines.append("### Plan build (30,000 texts)\n")
    lines.append(
        "Floor: the backend's `encode_batch_fast` over the same batches of 1,000 texts "
        "(encoding every text). vocabcore: `plan_from_texts` (counting, special tokens, "
        "closure, fingerprint); it encodes each distinct space-separated piece once and "
        "weights its ids by the piece's count, which equals encoding every text for these four "
        "pipelines (see docs/concepts.md), so it can run below the floor. Predecessor: "
        "`get_token_stats` (counting only, one text at a time).\n"
    )
    header = ["tokenizer", "measure", *heads]
    rows = []
    kinds = [p["kind"] for p in results[0]["vocabcore"].get("plans", [])]
    for kind in kinds:

        def cell(r: dict[str, Any], key: str, kind: str = kind) -> dict[str, Any]:
            for p in r[key].get("plans", []):
                if p["kind"] == kind:
                    return dict(p)
            return {}

        size = cell(results[0], "vocabcore").get("vocab_size", 0)
        label = f"{kind} ({size:,})"
        vc = [cell(r, "vocabcore") for r in results]
        ts = [cell(r, "tstv") for r in results]
        rows.append([label, "floor", *[_ms(v.get("floor_s")) for v in vc]])
        rows.append(["", "vocabcore", *[_ms(v.get("plan_s")) for v in vc]])
        rows.append(
            ["", "**vocabcore / floor**", *[_x(v.get("plan_s"), v.get("floor_s")) for v in vc]]
        )
        rows.append(["", "predecessor (4.57)", *[_ms(t.get("plan_s")) for t in ts]])
        rows.append(
            [
                "",
                "**predecessor / vocabcore**",
                *[_x(t.get("plan_s"), v.get("plan_s")) for v, t in zip(vc, ts, strict=True)],
            ]
        )
        rows.append(
            [
                "",
                "same, each over the floor of its own run",
                *[_floor_ratio(t, v, "plan_s", "floor_s") for v, t in zip(vc, ts, strict=True)],
            ]
        )
    lines.append(_table(header, rows) + "\n")
    lines.append(
        "The two libraries run one after the other, in separate processes, so a change of load "
        "between them moves *predecessor / vocabcore*; the last row divides each library's "
        "time by the floor measured beside it in its own process, which cancels that.\n"
    )

    lines.append("### Apply + revert (250,002-piece Unigram, XLM-R-base embedding, 2 layers)\n")
    rows = []

    def ar(r: dict[str, Any], lib: str) -> dict[str, Any]:
        return dict(r.get(lib, {}).get("apply_revert", {}))

    vc = [ar(r, "vocabcore") for r in results]
    ts = [ar(r, "tstv") for r in results]
    rows.append(["tokenizer part", "floor: one `to_str` + one `from_str` of the reduced JSON"])
    rows[-1] += [_ms(v.get("tokenizer_floor_s")) for v in vc]
    rows.append(["", "vocabcore"] + [_ms(v.get("tokenizer_s")) for v in vc])
    rows.append(["", "**vocabcore / floor**"])
    rows[-1] += [_x(v.get("tokenizer_s"), v.get("tokenizer_floor_s")) for v in vc]
    rows.append(["model part", "floor: one `index_select` + one `index_copy_`"])
    rows[-1] += [_ms(v.get("model_floor_s")) for v in vc]
    rows.append(["", "vocabcore"] + [_ms(v.get("model_s")) for v in vc])
    rows.append(["", "**vocabcore / floor**"])
    rows[-1] += [_x(v.get("model_s"), v.get("model_floor_s")) for v in vc]
    rows.append(["model + tokenizer", "vocabcore"] + [_ms(v.get("both_s")) for v in vc])
    rows.append(["", "predecessor (4.57)"] + [_ms(t.get("both_s")) for t in ts])
    rows.append(["", "**predecessor / vocabcore**"])
    rows[-1] += [_x(t.get("both_s"), v.get("both_s")) for v, t in zip(vc, ts, strict=True)]
    lines.append(_table(["part", "measure", *heads], rows) + "\n")

    lines.append(
        "### Flair-sized: plan, reduce and restore the real all-MiniLM-L6-v2 (30,522 tokens)\n"
    )
    lines.append(
        "What a Flair `fine_tune` with vocabulary reduction pays around training: token "
        "statistics of 200 training sentences, then reduce model (token-classification head) "
        "and tokenizer, then restore. *First call* is the first in a fresh process (the "
        "library's own imports included; torch and transformers already loaded); the others "
        "are the best of the later rounds.\n"
    )
    rows = []
    for lib, label in (("vocabcore", "vocabcore"), ("tstv", "predecessor (4.57)")):
        sm = [dict(r.get(lib, {}).get("small", {})) for r in results]
        rows.append([label, "kept rows"] + [str(s.get("kept", "")) for s in sm])
        rows.append(["", "plan"] + [_ms(s.get("plan_s")) for s in sm])
        rows.append(["", "reduce + restore"] + [_ms(s.get("reduce_restore_s")) for s in sm])
        rows.append(["", "**all three**"] + [_ms(s.get("total_s")) for s in sm])
        rows.append(["", "first call"] + [_ms(s.get("first_s")) for s in sm])
    vs = [dict(r.get("vocabcore", {}).get("small", {})) for r in results]
    tsm = [dict(r.get("tstv", {}).get("small", {})) for r in results]
    rows.append(["", "**predecessor / vocabcore**, all three"])
    rows[-1] += [_x(t.get("total_s"), v.get("total_s")) for v, t in zip(vs, tsm, strict=True)]
    lines.append(_table(["library", "measure", *heads], rows) + "\n")

    lines.append(
        "### Step time while reduced (Flair-like: MiniLM, 30,522 rows, token classification)\n"
    )
    lines.append(
        "Median step (forward + backward + AdamW step) of the model reduced by the library, "
        "against the same model reduced by hand (a plain `nn.Embedding` of the same kept "
        "rows), steps alternating in one process, batches of 16 sentences cut at 48 tokens. "
        "A ratio near 1.00 means the library costs nothing per step.\n"
    )
    rows = []
    for lib, label in (("vocabcore", "vocabcore"), ("tstv", "predecessor (4.57)")):
        st = [dict(r.get(lib, {}).get("steps", {})) for r in results]
        rows.append([label, "reduced by the library"] + [_ms(s.get("step_s")) for s in st])
        rows.append(["", "reduced by hand"] + [_ms(s.get("twin_step_s")) for s in st])
        rows.append(["", "**library / by hand**"])
        rows[-1] += [_x(s.get("step_s"), s.get("twin_step_s")) for s in st]
    lines.append(_table(["library", "measure", *heads], rows) + "\n")
    return "\n".join(lines) + "\n"


def _targets(results: list[dict[str, Any]]) -> str:
    """The targets table: one row per target, one measured cell per transformers major."""
    heads = [f"transformers {r['transformers']}" for r in results]

    def ratio(a: Any, b: Any) -> float | None:
        return a / b if isinstance(a, float) and isinstance(b, float) and b > 0 else None

    def plan(r: dict[str, Any], lib: str, kind: str) -> dict[str, Any]:
        return next((p for p in r.get(lib, {}).get("plans", []) if p["kind"] == kind), {})

    rows: list[list[str]] = []

    def add(label: str, values: list[float | None], limit: float, above: bool = False) -> None:
        cells = ["-" if v is None else f"{v:,.2f}x" for v in values]
        ok = all(v is not None and (v >= limit if above else v <= limit) for v in values)
        rows.append([label, *cells, "met" if ok else "not met"])

    for kind, limit in (
        ("WordPiece", 1.15),
        ("Unigram", 1.15),
        ("WordLevel", 1.15),
        ("byte-level BPE", 1.3),
    ):
        add(
            f"plan build, {kind}: vocabcore / floor <= {limit}x",
            [
                ratio(
                    plan(r, "vocabcore", kind).get("plan_s"),
                    plan(r, "vocabcore", kind).get("floor_s"),
                )
                for r in results
            ],
            limit,
        )
    for kind in ("WordPiece", "Unigram", "WordLevel", "byte-level BPE"):
        values = []
        for r in results:
            v, t = plan(r, "vocabcore", kind), plan(r, "tstv", kind)
            a, b = (
                ratio(t.get("plan_s"), t.get("floor_s")),
                ratio(v.get("plan_s"), v.get("floor_s")),
            )
            values.append(ratio(a, b))
        add(
            f"plan build, {kind}: predecessor / vocabcore >= 2x (over own floors)",
            values,
            2.0,
            True,
        )
    ar = [
        (r.get("vocabcore", {}).get("apply_revert", {}), r.get("tstv", {}).get("apply_revert", {}))
        for r in results
    ]
    add(
        "apply + revert, model + tokenizer: predecessor / vocabcore >= 20x",
        [ratio(t.get("both_s"), v.get("both_s")) for v, t in ar],
        20.0,
        True,
    )
    add(
        "tokenizer part: vocabcore / (to_str + from_str) <= 1.3x",
        [ratio(v.get("tokenizer_s"), v.get("tokenizer_floor_s")) for v, _ in ar],
        1.3,
    )
    add(
        "model part: vocabcore / (index_select + index_copy_) <= 1.3x",
        [ratio(v.get("model_s"), v.get("model_floor_s")) for v, _ in ar],
        1.3,
    )
    sm = [
        (r.get("vocabcore", {}).get("small", {}), r.get("tstv", {}).get("small", {}))
        for r in results
    ]
    add(
        "Flair-sized plan + reduce + restore: predecessor / vocabcore >= 1x",
        [ratio(t.get("total_s"), v.get("total_s")) for v, t in sm],
        1.0,
        True,
    )
    st = [r.get("vocabcore", {}).get("steps", {}) for r in results]
    rows.append(
        ["step while reduced: library / hand-reduced twin (median; 1.00 = no per-step cost)"]
        + [
            "-"
            if ratio(s.get("step_s"), s.get("twin_step_s")) is None
            else f"{ratio(s.get('step_s'), s.get('twin_step_s')):,.3f}x"
            for s in st
        ]
        + ["(reported)"]
    )
    return "### Targets\n\n" + _table(["target", *heads, "status"], rows) + "\n"


def _floor_ratio(t: dict[str, Any], v: dict[str, Any], key: str, floor: str) -> str:
    """(predecessor / its floor) / (vocabcore / its floor), as ``_x`` prints ratios."""
    if not all(isinstance(d.get(k), float) and d[k] > 0 for d in (t, v) for k in (key, floor)):
        return "-"
    return _x(t[key] / t[floor], v[key] / v[floor])


def _table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)
