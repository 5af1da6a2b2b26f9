"""Speed of ``softmax="shifted"``: the output layer and loss alone, and one model step.

Shapes, plans and training ids are those of ``llm_memory.py`` (Llama-3.2-1B-like,
Qwen2.5-0.5B-like, Gemma-3-1B-like; 2 decoder layers; batch 1 x ``--seq`` tokens; CPU fp32).
Every variant of a table runs in this one process, in alternating rounds after one warm-up
each; a table gives the best time of each variant over the rounds, so the ratios compare
variants measured under the same load.

Head + loss (``hidden`` random, the output weight initialised as the models do; forward and
backward, the weight's gradient included where it is trained):

* ``full``: logits over every row, cross-entropy;
* ``torch LCE``, ``torch LCE chunked``: ``torch.nn.functional.linear_cross_entropy`` with
  ``options=None`` and with ``LinearCrossEntropyOptions()`` (torch's chunked path);
* ``reduced``: the kept rows only;
* ``shifted, 3-pass (old)``: the kept rows plus the normaliser as it was before
  ``stages/normaliser.py`` (a row gather per chunk, the chunks recomputed in backward);
* ``shifted``: the kept rows plus :func:`vocab_adapters.stages.normaliser.dropped_logsumexp_exact`;
* ``sampled m``: the kept rows plus :class:`vocab_adapters.stages.normaliser.SampledDropped`.

Model step (``model(input_ids, labels=...).loss``, backward, fused AdamW): ``full``, ``full +
torch LCE chunked`` (the same full model, its loss from the backbone's hidden states through
``linear_cross_entropy``), ``reduced``, ``shifted`` (``apply_plan(..., softmax=...)``). For each
step the script also reads how far the process's peak RSS rose above the RSS before the step
(``/proc/self/clear_refs`` then ``VmHWM``).

``--profile`` adds a torch profiler table (self CPU time per op) of the old, the new and the bf16
normalisers on the Gemma-like head. ``--repeat N`` and ``--repeat-steps N``: more rounds of the main
variants (kept apart: ``heads_repeat``, ``steps_repeat``). ``--quality SEEDS``: exact and bf16
normalisers through ``softmax_quality.py`` and ``softmax_mlm.py``. ``--tables`` prints the tables.

Run: ``python benchmarks/softmax_speed.py`` (``--quick``: seq 64, one round). Writes
``benchmarks/softmax_speed.json`` and prints the markdown tables.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
from collections.abc import Callable
from typing import Any

import _harness as h

h.setup(quiet=True, tokenizer_threads=True)

OUT = h.HERE / "softmax_speed.json"
HEAD_VARIANTS = (
    "full",
    "torch LCE chunked",
    "reduced",
    "shifted, 3-pass (old)",
    "shifted",
    "shifted, bf16 matmuls",
    "sampled 8192",
)
STEP_VARIANTS = (
    "full",
    "full + torch LCE chunked",
    "reduced",
    "shifted",
    "shifted, bf16 matmuls",
    "shifted, sampled 8192",
)
BUILDS = {
    "full": (None, "exact"),
    "reduced": ("reduced", "exact"),
    "shifted": ("shifted", "exact"),
    "shifted, bf16 matmuls": ("shifted", "bfloat16"),
    "shifted, sampled 8192": ("shifted", "sampled:8192"),
}
"""How each model-step variant's model is built: softmax mode (None: full) and normaliser."""


# -- the normaliser as it was (softmax.py's _DroppedLSE at 0e78bf9), for comparison ------------


def _old_chunks(source: Any, rows: Any, n: int, size: int) -> Any:
    for start in range(0, n, size):
        stop = min(start + size, n)
        yield start, stop, source.index_select(0, rows[start:stop])


def old_lse_function() -> Any:
    """The three-pass normaliser of softmax.py before stages/normaliser.py (bias-free copy)."""
    import torch

    class OldLSE(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, hidden: Any, source: Any, rows: Any, chunk: int) -> Any:
            n = len(rows)
            running = torch.full((hidden.shape[0],), float("-inf"))
            total = torch.zeros((hidden.shape[0],))
            for _, _, weight in _old_chunks(source, rows, n, chunk):
                logits = (hidden @ weight.t()).float()
                new = torch.maximum(running, logits.amax(dim=1))
                safe = torch.where(torch.isinf(new), torch.zeros_like(new), new)
                total = total * torch.exp(running - safe) + torch.exp(
                    logits - safe.unsqueeze(1)
                ).sum(dim=1)
                running = new
            safe = torch.where(torch.isinf(running), torch.zeros_like(running), running)
            lse = torch.log(total) + safe
            ctx.save_for_backward(hidden, lse)
            ctx.source, ctx.rows, ctx.chunk = source, rows, chunk
            return lse

        @staticmethod
        def backward(ctx: Any, grad: Any) -> Any:
            hidden, lse = ctx.saved_tensors
            acc = torch.zeros(hidden.shape, dtype=torch.float32)
            scale = grad.float().unsqueeze(1)
            for _, _, weight in _old_chunks(ctx.source, ctx.rows, len(ctx.rows), ctx.chunk):
                logits = (hidden @ weight.t()).float()
                acc += (torch.exp(logits - lse.unsqueeze(1)) * scale) @ weight.float()
            return acc, None, None, None

    return OldLSE


# -- head + loss --------------------------------------------------------------------------------


def head_inputs(shape: str, seq: int) -> dict[str, Any]:
    """Hidden states, the full output weight, kept/dropped rows and labels of one shape."""
    import llm_memory as lm
    import torch

    from vocabcore import VocabPlan

    plan = VocabPlan.load(lm.prepare(shape)[0])
    ids = json.loads(lm.prepare(shape)[1].read_text())[: seq + 1]
    spec = lm.SHAPES[shape]["kwargs"]
    rows, size = spec["vocab_size"], spec["hidden_size"]
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(rows, size, generator=g) * 0.02
    keep = torch.tensor(list(plan.kept))
    mask = torch.ones(rows, dtype=torch.bool)
    mask[keep] = False
    return {
        "hidden": torch.randn(seq, size, generator=g),
        "weight": weight,
        "kept": weight.index_select(0, keep).clone(),
        "dropped": mask.nonzero().squeeze(1),
        "labels": torch.tensor(ids[1:]),
        "reduced_labels": torch.tensor(plan.remap(ids)[1:]),
        "shape": {"positions": seq, "hidden": size, "rows": rows, "kept": len(keep)},
    }


def _head_step(hidden: Any, weight: Any, labels: Any, column: Callable[[Any], Any] | None) -> Any:
    import torch
    import torch.nn.functional as F

    h0 = hidden.detach().requires_grad_(True)
    w = weight.detach().requires_grad_(True)
    logits = h0 @ w.t()
    if column is not None:
        logits = torch.cat([logits, column(h0).unsqueeze(1)], dim=1)
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    return float(loss)


def head_variants(x: dict[str, Any]) -> dict[str, Callable[[], Any]]:
    """One forward + backward of each head + loss variant."""
    import torch
    import torch.nn.functional as F

    from vocab_adapters.stages.normaliser import (
        DroppedRows,
        SampledDropped,
        dropped_logsumexp_bf16,
    )

    old = old_lse_function()
    rows = DroppedRows(x["weight"], x["dropped"])
    hid, kept, lab = x["hidden"], x["kept"], x["reduced_labels"]

    def lce(options: Any) -> Callable[[], Any]:
        def run() -> Any:
            h0 = hid.detach().requires_grad_(True)
            w = x["weight"].detach().requires_grad_(True)
            loss = F.linear_cross_entropy(h0, w, x["labels"], options=options)
            loss.backward()
            return float(loss)

        return run

    def with_column(column: Callable[[Any], Any] | None) -> Callable[[], Any]:
        return lambda: _head_step(hid, kept, lab, column)

    g = torch.Generator().manual_seed(0)
    return {
        "full": lambda: _head_step(hid, x["weight"], x["labels"], None),
        "torch LCE chunked": lce(torch.nn.LinearCrossEntropyOptions()),
        "reduced": with_column(None),
        "shifted, 3-pass (old)": with_column(
            lambda h0: old.apply(h0, x["weight"], x["dropped"], 8192)
        ),
        "shifted": with_column(lambda h0: rows.logsumexp(h0, 8192)),
        "shifted, bf16 matmuls": with_column(lambda h0: dropped_logsumexp_bf16(h0, rows, 8192)),
        "sampled 8192": with_column(lambda h0: SampledDropped(rows, 8192, g).logsumexp(h0)),
    }


def alternate(
    variants: dict[str, Callable[[], Any]], rounds: int, warm_up: bool = True
) -> dict[str, Any]:
    """Best and all seconds of each variant over alternating rounds (after one warm-up each)."""
    values = {name: fn() for name, fn in variants.items()} if warm_up else {}
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            gc.collect()
            took, values[name] = h.timed(fn)
            seconds[name].append(took)
    return {
        name: {"best": min(ts), "all": ts, "value": values[name]} for name, ts in seconds.items()
    }


def _earlier(key: str, shapes: list[str]) -> list[dict[str, Any]]:
    """Rows of ``key`` in the results file for shapes other than ``shapes`` (kept on rerun)."""
    rows: list[dict[str, Any]] = h.read_json(OUT).get(key, []) if OUT.exists() else []
    return [r for r in rows if r["shape"] not in shapes]


def _without(variants: dict[str, Any], skip: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in variants.items() if not any(word in k for word in skip)}


def measure_heads(
    shapes: list[str], seq: int, rounds: int, skip: tuple[str, ...] = (), key: str = "heads"
) -> list[dict[str, Any]]:
    out = _earlier(key, shapes)
    for shape in shapes:
        x = head_inputs(shape, seq)
        times = alternate(_without(head_variants(x), skip), rounds)
        out.append({"shape": shape, **x["shape"], "times": times})
        print(json.dumps(out[-1]), flush=True)
        save({key: out, f"{key}_rounds": rounds})
        del x
        gc.collect()
    return out


# -- model step ---------------------------------------------------------------------------------


def _status(key: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(key)  # pragma: no cover


def _peak_above(fn: Callable[[], Any]) -> tuple[Any, int]:
    """``fn()`` and how far the peak RSS rose above the RSS before it."""
    with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
        f.write("5")
    before = _status("VmRSS")
    value = fn()
    return value, _status("VmHWM") - before


def build_model(
    shape: str, softmax: str | None, normaliser: str = "exact"
) -> tuple[Any, Any, Any, Any]:
    """The 2-layer model (seed 0), reduced with ``softmax`` unless None; AdamW; ids; plan.

    ``normaliser``: as in ``apply_plan``.
    """
    import llm_memory as lm
    import torch
    import transformers

    from vocab_adapters import apply_plan
    from vocabcore import VocabPlan

    plan_path, ids_path = lm.prepare(shape)
    plan = VocabPlan.load(plan_path)
    torch.manual_seed(0)
    arch = lm.SHAPES[shape]["kwargs"]["architectures"][0]
    model = getattr(transformers, arch)(lm.make_config(shape, layers=2))
    ids = json.loads(ids_path.read_text())
    if softmax is not None:
        apply_plan(plan, model=model, softmax=softmax, normaliser=normaliser)
        ids = plan.remap(ids)
    optimizer = torch.optim.AdamW(list(model.parameters()), lr=1e-5, fused=True)
    return model, optimizer, torch.tensor([ids]), plan


def step_fn(model: Any, optimizer: Any, ids: Any, lce: bool) -> Callable[[Any], float]:
    """One optimizer step on ``batch``: the model's own loss, or torch's chunked LCE."""
    import torch
    import torch.nn.functional as F

    def step(batch: Any) -> float:
        if lce:
            hidden = model.model(input_ids=batch).last_hidden_state[0, :-1]
            weight = model.get_output_embeddings().weight
            options = torch.nn.LinearCrossEntropyOptions()
            loss = F.linear_cross_entropy(hidden, weight, batch[0, 1:], options=options)
        else:
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return float(loss)

    return step


def _chosen(names: tuple[str, ...]) -> list[str]:
    """The model-step variants to run: ``names`` (all when empty), always with full, reduced."""
    wanted = set(names) | {"full", "reduced"} if names else set(STEP_VARIANTS)
    unknown = wanted - set(STEP_VARIANTS)
    if unknown:
        raise SystemExit(f"unknown step variants {sorted(unknown)}; known: {STEP_VARIANTS}")
    return [n for n in STEP_VARIANTS if n in wanted]


def step_variants(
    shape: str, seq: int, names: tuple[str, ...] = ()
) -> tuple[dict[str, Callable[[], Any]], list[Any]]:
    """One timed step of each model-step variant; the models are kept alive in the list."""
    chosen = _chosen(names)
    bases = {n.removesuffix(" + torch LCE chunked") for n in chosen}
    built = {name: build_model(shape, *BUILDS[name]) for name in BUILDS if name in bases}
    out: dict[str, Callable[[], Any]] = {}
    for name in chosen:
        model, optimizer, ids, _ = built[name.removesuffix(" + torch LCE chunked")]
        step = step_fn(model, optimizer, ids, lce="LCE" in name)
        step(ids[:, :8])  # the optimizer state exists from here on
        out[name] = lambda step=step, batch=ids[:, :seq]: _peak_above(lambda: step(batch))
    return out, list(built.values())


def one_by_one(shape: str, seq: int, names: tuple[str, ...] = ()) -> dict[str, Any]:
    """One step of each variant, one model in memory at a time (torch LCE left out)."""
    times: dict[str, Any] = {}
    for name in (n for n in _chosen(names) if "LCE" not in n):
        model, optimizer, ids, _ = build_model(shape, *BUILDS[name])
        step = step_fn(model, optimizer, ids, lce=False)
        step(ids[:, :8])
        gc.collect()
        batch = ids[:, :seq]
        took, (loss, peak) = h.timed(functools.partial(_peak_above, functools.partial(step, batch)))
        times[name] = {"best": took, "all": [took], "loss": loss, "peak_above_bytes": peak}
        del model, optimizer, step
        gc.collect()
    return times


def measure_steps(
    shapes: list[str],
    seq: int,
    rounds: int,
    skip: tuple[str, ...] = (),
    sequential: bool = False,
    key: str = "steps",
    names: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    out = _earlier(key, shapes)
    for shape in shapes:
        if sequential:
            out.append({"shape": shape, "seq": seq, "times": one_by_one(shape, seq, names)})
            out[-1]["one_model_at_a_time"] = True
            print(json.dumps(out[-1]), flush=True)
            save({key: out, f"{key}_rounds": rounds})
            continue
        variants, keep = step_variants(shape, seq, names)
        times = alternate(_without(variants, skip), rounds, warm_up=False)  # warmed up at 8 tokens
        for t in times.values():
            t["loss"], t["peak_above_bytes"] = t.pop("value")
        out.append({"shape": shape, "seq": seq, "times": times})
        print(json.dumps(out[-1]), flush=True)
        save({key: out, f"{key}_rounds": rounds})
        del variants, keep
        gc.collect()
    return out


# -- quality of the approximate normaliser (softmax_quality.py, softmax_mlm.py runs) -----------

QUALITY = {
    "clm": ("softmax_quality", "~/.cache/vocabcore-softmax"),
    "mlm": ("softmax_mlm", "~/.cache/vocabcore-softmax-mlm"),
}


def quality_run(task: str, normaliser: str, seed: int) -> dict[str, Any]:
    """One ``softmax="shifted"`` fine-tuning run of ``task`` with ``normaliser``, in-process."""
    import importlib
    from pathlib import Path

    name, cache = QUALITY[task]
    module = importlib.import_module(name)
    folder = Path(os.path.expanduser(cache))
    folder.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = module.run("shifted", seed, folder, normaliser)
    return {"task": task, "normaliser": normaliser, **result}


def measure_quality(seeds: int, tasks: list[str], normalisers: list[str]) -> list[dict[str, Any]]:
    """``normalisers``, ``seeds`` seeds per task, each run a fresh process.

    Runs of other tasks, normalisers or seeds already in the results file are kept.
    """
    done = h.read_json(OUT).get("quality", []) if OUT.exists() else []
    for task in tasks:
        for seed in range(1, seeds + 1):
            for normaliser in normalisers:
                command = [__file__, "--quality-run", task, normaliser, str(seed)]
                run = h.child_json(command, what=f"{task} {normaliser} {seed}")
                key = (task, normaliser, seed)
                done = [r for r in done if (r["task"], r["normaliser"], r["seed"]) != key]
                done.append(run)
                print(json.dumps(run), flush=True)
                save({"quality": done})
    return done


def save(update: dict[str, Any]) -> None:
    """Merge ``update`` into the results file (speed and quality are written by separate runs)."""
    results = h.read_json(OUT) if OUT.exists() else {}
    results.update(update)
    h.write_json(OUT, results, newline=True)


# -- profile, tables, main ----------------------------------------------------------------------


def profile_normalisers(seq: int) -> dict[str, list[list[Any]]]:
    """Self CPU seconds of the top ops of the old and the new normaliser (Gemma-like head)."""
    from torch.profiler import ProfilerActivity, profile

    variants = head_variants(head_inputs("gemma", seq))
    out = {}
    for name in ("shifted, 3-pass (old)", "shifted", "shifted, bf16 matmuls"):
        variants[name]()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            variants[name]()
        events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:10]
        out[name] = [[e.key, e.self_cpu_time_total / 1e6, e.count] for e in events]
    return out


def _labelled(results: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """Rows of ``key`` then of ``key_repeat``, the latter's shape marked with its rounds."""
    repeat = results.get(f"{key}_repeat", [])
    rounds = results.get(f"{key}_repeat_rounds")
    marked = [{**r, "shape": f"{r['shape']} (best of {rounds})"} for r in repeat]
    return list(results.get(key, [])) + marked


def head_table(results: dict[str, Any]) -> str:
    """Markdown: best seconds and ratios to full and reduced, per shape (head + loss)."""
    rows = []
    for r in _labelled(results, "heads"):
        t = r["times"]
        full, reduced = t["full"]["best"], t["reduced"]["best"]
        for name in (n for n in HEAD_VARIANTS if n in t):
            s = t[name]["best"]
            loss = t[name]["value"]
            rows.append(
                [
                    r["shape"],
                    name,
                    h.ms(s),
                    f"{s / full:.2f}x",
                    f"{s / reduced:.2f}x",
                    f"{loss:.6f}",
                ]
            )
    header = ["shape", "head + loss", "best", "/ full", "/ reduced", "loss"]
    return h.table(header, rows)


def step_table(results: dict[str, Any]) -> str:
    """Markdown: best step seconds, ratios, peak RSS rise, per shape."""
    rows = []
    later = [{**r, "shape": f"{r['shape']} (later run)"} for r in results.get("steps_later", [])]
    for r in _labelled(results, "steps") + later:
        t = r["times"]
        full, reduced = t["full"]["best"], t["reduced"]["best"]
        for name in (n for n in STEP_VARIANTS if n in t):
            s = t[name]["best"]
            peak = max(0, t[name]["peak_above_bytes"])
            rows.append(
                [
                    r["shape"],
                    name,
                    h.ms(s),
                    f"{s / full:.2f}x",
                    f"{s / reduced:.2f}x",
                    h.mb(peak),
                    f"{t[name]['loss']:.4f}",
                ]
            )
    header = ["shape", "model step", "best", "/ full", "/ reduced", "peak RSS rise", "loss"]
    return h.table(header, rows)


APPROXIMATE = {
    "bfloat16": "bf16 matmuls",
    "sampled:1/32": "sampled 1/32",
    "sampled:1/8": "sampled 1/8",
}
"""The approximate normalisers of the quality table, in its order, and their labels."""


def _quality_rows(task: str, runs: list[dict[str, Any]], normaliser: str) -> list[list[Any]]:
    """Rows of ``normaliser`` against exact for ``task``: per held-out set, per seed."""
    by_seed = {
        n: {r["seed"]: r for r in runs if r["task"] == task and r["normaliser"] == n}
        for n in ("exact", normaliser)
    }
    seeds = sorted(set(by_seed["exact"]) & set(by_seed[normaliser]))
    if not seeds:
        return []
    rows = []
    for key in ("domain_test", "general_test"):
        exact = [by_seed["exact"][s][key]["loss"] for s in seeds]
        approx = [by_seed[normaliser][s][key]["loss"] for s in seeds]
        gap = [100 * (a - e) / e for a, e in zip(approx, exact, strict=True)]
        seconds = [
            h.median([by_seed[n][s]["train_seconds"] for s in seeds]) for n in ("exact", normaliser)
        ]
        rows.append(
            [
                task,
                APPROXIMATE[normaliser],
                key,
                len(seeds),
                " / ".join(f"{x:.5f}" for x in exact),
                " / ".join(f"{x:.5f}" for x in approx),
                " / ".join(f"{g:+.3f}%" for g in gap),
                f"{max(abs(g) for g in gap):.3f}%",
                " / ".join(f"{x:.0f}" for x in seconds),
            ]
        )
    return rows


def quality_table(results: dict[str, Any]) -> str:
    """Markdown: held-out full-vocabulary loss after revert, exact vs approximate normalisers.

    Each approximate run is paired with the exact run of the same task and seed.
    """
    runs = results.get("quality", [])
    rows = [
        row
        for task in QUALITY
        for normaliser in APPROXIMATE
        for row in _quality_rows(task, runs, normaliser)
    ]
    header = [
        "task",
        "normaliser",
        "held-out",
        "seeds",
        "exact (per seed)",
        "approximate (per seed)",
        "difference",
        "largest",
        "train s, median (exact / approximate)",
    ]
    return h.table(header, rows)


def profile_table(results: dict[str, Any]) -> str:
    """Markdown: self CPU seconds of the top ops of each profiled normaliser."""
    rows = []
    for name, events in results.get("profile", {}).items():
        for key, seconds, count in events[:6]:
            rows.append([name, key, f"{seconds:.2f} s", count])
    return h.table(["normaliser (Gemma-like head + loss)", "op", "self CPU", "calls"], rows)


def arguments() -> Any:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--step-rounds", type=int, default=1)
    parser.add_argument("--shapes", default="llama,qwen,gemma")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--no-steps", action="store_true")
    parser.add_argument("--no-heads", action="store_true")
    parser.add_argument("--repeat", type=int, default=0, metavar="ROUNDS")
    parser.add_argument("--repeat-steps", type=int, default=0, metavar="ROUNDS")
    parser.add_argument("--one-by-one", action="store_true", help="steps: one model at a time")
    parser.add_argument("--skip-lce", default="", help="'steps', 'heads': leave torch LCE out")
    parser.add_argument("--tables", action="store_true", help="print the tables of the results")
    parser.add_argument("--quality", type=int, default=0, metavar="SEEDS")
    parser.add_argument("--quality-tasks", default="clm,mlm")
    parser.add_argument(
        "--quality-normalisers",
        default="exact,bfloat16",
        help="comma-separated: exact, bfloat16, sampled:M (M rows) or sampled:1/K",
    )
    parser.add_argument(
        "--step-variants", default="", help="semicolon-separated subset of the model-step variants"
    )
    parser.add_argument("--steps-key", default="steps", help="results key of the model steps")
    parser.add_argument("--quality-run", nargs=3, metavar=("TASK", "NORMALISER", "SEED"))
    return parser.parse_args()


def main() -> None:
    import torch

    args = arguments()
    if args.tables:
        results = h.read_json(OUT)
        for render in (head_table, step_table, profile_table, quality_table):
            print(render(results) + "\n")
        return
    if args.quality_run:
        task, normaliser, seed = args.quality_run
        print(json.dumps(quality_run(task, normaliser, int(seed))))
        return
    if args.quality:
        normalisers = args.quality_normalisers.split(",")
        measure_quality(args.quality, args.quality_tasks.split(","), normalisers)
        return
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    seq = 64 if args.quick else args.seq
    rounds = 1 if args.quick else args.rounds
    shapes = args.shapes.split(",")
    results: dict[str, Any] = {"machine": h.machine(), "seq": seq}
    save(results)
    if not args.no_steps:
        skip = ("LCE",) if "steps" in args.skip_lce else ()
        rounds = 1 if args.quick else args.step_rounds
        names = tuple(n for n in args.step_variants.split(";") if n)
        measure_steps(shapes, seq, rounds, skip, args.one_by_one, args.steps_key, names)
    if not args.no_heads:
        measure_heads(shapes, seq, rounds, ("LCE",) if "heads" in args.skip_lce else ())
    if args.repeat:  # more rounds of the main variants, kept apart from the full table
        skip = ("LCE", "old", "sampled")
        measure_heads(shapes, seq, args.repeat, skip, "heads_repeat")
    if args.repeat_steps:
        measure_steps(shapes, seq, args.repeat_steps, ("LCE",), key="steps_repeat")
    if args.profile:
        save({"profile": profile_normalisers(seq)})
    results = h.read_json(OUT)
    if "heads" in results:
        print(head_table(results))
    if "steps" in results:
        print(step_table(results))


if __name__ == "__main__":
    main()
