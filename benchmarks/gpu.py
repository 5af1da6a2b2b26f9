"""One GPU run: the CUDA tests, then LLM-shaped training steps in bf16 beside fused CE kernels.

On a CUDA machine, from the repository root (no install needed: ``_harness.setup`` puts
``src/`` on ``sys.path``)::

    PYTHONPATH=src python benchmarks/gpu.py        # or: nox -s gpu

1. ``pytest -m cuda tests`` in a subprocess (JUnit XML read back: passed, failed, skipped);
2. one training step (``model(input_ids, labels=...).loss``, backward, fused AdamW) per variant
   on the three shapes of ``llm_memory.py`` (Llama-3.2-1B-, Qwen2.5-0.5B-, Gemma-3-1B-like;
   their vocabularies and hidden sizes, 2 decoder layers, the same plans and training ids),
   weights in bf16, batch 2 x 4,096 tokens:

   * ``full``: the full vocabulary; ``reduced`` and ``shifted``: ``apply_plan(plan,
     model=model, softmax=...)`` (the full-size copy kept for revert stays on the GPU);
     ``shifted, sampled 8192``: the same with ``normaliser="sampled:8192"``;
   * where they import: the full model's loss computed from its hidden states and output
     weight by torch's ``torch.nn.functional.linear_cross_entropy`` (chunked options), Liger
     Kernel's ``LigerFusedLinearCrossEntropyLoss`` and Apple's Cut Cross-Entropy
     (``cut_cross_entropy.linear_cross_entropy``); the last two also on the reduced model.

   Per variant: step times after the warm-up steps (``torch.cuda.synchronize()`` around each),
   their median and best, the peak of ``torch.cuda.max_memory_allocated`` over the timed steps,
   the loss of the first step (the same initial weights everywhere, so ``shifted`` and every
   full-vocabulary variant give the full-vocabulary loss) and ratios to ``full`` and
   ``reduced``. The whole run stays within a time budget (``--budget``, 420 s): a variant that
   would not fit is skipped and listed as such;
3. writes ``benchmarks/gpu.json`` and renders ``docs/gpu.md`` from it (``--render``: the page
   alone, from the stored results; without results it says that none are recorded).

Optional kernels: ``pip install --no-deps liger-kernel cut-cross-entropy`` into the environment
that has the CUDA build of torch and triton (``nox -s gpu`` tries that and goes on without them;
offline, install them from wheels brought along). A kernel that does not import is recorded
with the reason, never an error.

``--cpu`` (automatic without CUDA): a check of the script, not a measurement: tiny models of
the same three architectures (hidden 64, 4,096 rows), fp32, batch 1 x 64 tokens, one warm-up
and two timed steps per variant, no CUDA tests; writes ``--out`` (by default a file in the
temporary directory, never ``benchmarks/gpu.json``) and ``--doc`` only when given.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import importlib.metadata
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _harness as h

h.setup(quiet=True, tokenizer_threads=True)

OUT = h.HERE / "gpu.json"
DOC = h.ROOT / "docs" / "gpu.md"
CPU_OUT = Path(tempfile.gettempdir()) / "vocabcore-gpu-cpu.json"
COMMAND = "PYTHONPATH=src python benchmarks/gpu.py"
SHAPES = ("llama", "qwen", "gemma")

# variant -> (apply_plan softmax or None for the full vocabulary, fused loss kernel or None)
VARIANTS: dict[str, tuple[str | None, str | None]] = {
    "full": (None, None),
    "reduced": ("reduced", None),
    "shifted": ("shifted", None),
    "shifted, sampled 8192": ("shifted:sampled:8192", None),
    "full + torch LCE": (None, "torch LCE"),
    "full + Liger FLCE": (None, "Liger FLCE"),
    "full + CCE": (None, "CCE"),
    "reduced + Liger FLCE": ("reduced", "Liger FLCE"),
    "reduced + CCE": ("reduced", "CCE"),
}
ALWAYS = ("full", "reduced", "shifted")
KERNELS = {
    "torch LCE": "torch.nn.functional.linear_cross_entropy with LinearCrossEntropyOptions()",
    "Liger FLCE": "liger_kernel's LigerFusedLinearCrossEntropyLoss (pip: liger-kernel)",
    "CCE": "cut_cross_entropy.linear_cross_entropy (pip: cut-cross-entropy)",
}

SETTINGS: dict[str, dict[str, Any]] = {
    "gpu": {
        "mode": "gpu",
        "shapes": list(SHAPES),
        "layers": 2,
        "batch": 2,
        "seq": 4096,
        "dtype": "bfloat16",
        "warmup": 2,
        "steps": 5,
        "lr": 1e-5,
        "budget_s": 420,
        "tests_timeout_s": 180,
        "guess_s": 20,
    },
    "cpu": {
        "mode": "cpu",
        "shapes": list(SHAPES),
        "layers": 2,
        "batch": 1,
        "seq": 64,
        "dtype": "float32",
        "warmup": 1,
        "steps": 2,
        "lr": 1e-5,
        "budget_s": 50,
        "tests_timeout_s": 0,
        "guess_s": 0,
        "tiny": {"vocab": 4096, "hidden": 64, "used": 600},
    },
}

# the tiny models of the CPU subset: each shape's architecture, small dimensions
TINY: dict[str, dict[str, Any]] = {
    "llama": {"num_key_value_heads": 2, "head_dim": 16, "bos_token_id": 1, "eos_token_id": 2},
    "qwen": {"num_key_value_heads": 2, "bos_token_id": 1, "eos_token_id": 2},
    "gemma": {
        "num_key_value_heads": 1,
        "head_dim": 16,
        "query_pre_attn_scalar": 16,
        "sliding_window": 32,
    },
}


# -- optional fused cross-entropy kernels -------------------------------------------------------


def _first(out: Any) -> Any:
    """The loss of a kernel that may return a tuple (loss, extras) or an output object."""
    if isinstance(out, tuple):
        return out[0]
    return getattr(out, "loss", out)


def _torch_lce() -> tuple[Callable[..., Any] | None, str]:
    import torch
    import torch.nn.functional as F

    if not hasattr(F, "linear_cross_entropy") or not hasattr(torch.nn, "LinearCrossEntropyOptions"):
        return None, f"torch {torch.__version__} has no torch.nn.functional.linear_cross_entropy"

    def loss(hidden: Any, weight: Any, labels: Any) -> Any:
        options = torch.nn.LinearCrossEntropyOptions()
        return F.linear_cross_entropy(hidden, weight, labels, options=options)

    return loss, ""


def _liger() -> tuple[Callable[..., Any] | None, str]:
    from liger_kernel.transformers.fused_linear_cross_entropy import (
        LigerFusedLinearCrossEntropyLoss,
    )

    module = LigerFusedLinearCrossEntropyLoss()
    return lambda hidden, weight, labels: _first(module(weight, hidden, labels)), ""


def _cce() -> tuple[Callable[..., Any] | None, str]:
    from cut_cross_entropy import linear_cross_entropy

    return lambda hidden, weight, labels: _first(linear_cross_entropy(hidden, weight, labels)), ""


def kernel_losses(device: str) -> tuple[dict[str, Callable[..., Any]], dict[str, str]]:
    """The fused losses ``f(hidden, weight, labels)`` that import here, and why the others not."""
    found: dict[str, Callable[..., Any]] = {}
    missing: dict[str, str] = {}
    for name, load in (("torch LCE", _torch_lce), ("Liger FLCE", _liger), ("CCE", _cce)):
        if name != "torch LCE" and device != "cuda":
            missing[name] = "needs a CUDA device (Triton kernel)"
            continue
        try:
            fn, reason = load()
        except Exception as exc:  # ImportError, or a triton/torch mismatch at import
            fn, reason = None, f"does not import: {type(exc).__name__}: {exc}"[:300]
        if fn is None:
            missing[name] = reason
        else:
            found[name] = fn
    return found, missing


def versions() -> dict[str, str]:
    """Python, torch, transformers, CUDA and the optional kernels' versions where installed."""
    import torch

    out = h.runtime_versions()
    if torch.version.cuda:
        out["cuda"] = str(torch.version.cuda)
    for dist in ("triton", "liger-kernel", "cut-cross-entropy"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[dist] = importlib.metadata.version(dist)
    return out


def device_info(device: str) -> dict[str, Any]:
    """The accelerator's name, memory and compute capability (the CPU's model name on CPU)."""
    import torch

    if device != "cuda":
        return {"name": h.machine().get("cpu", "cpu"), "type": "cpu"}
    props = torch.cuda.get_device_properties(0)
    return {
        "name": torch.cuda.get_device_name(0),
        "type": "cuda",
        "memory_bytes": props.total_memory,
        "capability": f"{props.major}.{props.minor}",
        "count": torch.cuda.device_count(),
    }


# -- models, plans, ids -------------------------------------------------------------------------


def _tiny_inputs(shape: str, settings: dict[str, Any]) -> dict[str, Any]:
    """A tiny model of the shape's architecture, a plan over a seeded id stream, the stream."""
    import llm_memory as lm
    import transformers

    from vocabcore import VocabPlan

    spec, tiny = lm.SHAPES[shape], settings["tiny"]
    rows = tiny["vocab"]
    # padded rows beyond the tokenizer's tokens where the real shape has them
    tokens = rows - 64 if spec["tokens"] < spec["kwargs"]["vocab_size"] else rows
    kwargs = {
        **spec["kwargs"],
        **TINY[shape],
        "vocab_size": rows,
        "hidden_size": tiny["hidden"],
        "intermediate_size": 2 * tiny["hidden"],
        "num_attention_heads": 4,
        "num_hidden_layers": settings["layers"],
    }
    config = getattr(transformers, spec["config"])(**kwargs)
    rng = random.Random(lm.SEED + len(shape))
    used = list(range(8)) + rng.sample(range(8, tokens), tiny["used"])
    # the plan counts a longer stream than one batch, so it keeps most of the used ids
    ids = [rng.choice(used) for _ in range(8 * tiny["used"])]
    plan = VocabPlan.from_ids([ids], vocab_size=tokens, keep=range(8))
    return {"config": config, "plan": plan, "ids": ids, "tokens": tokens}


def shape_inputs(shape: str, settings: dict[str, Any]) -> dict[str, Any]:
    """Config, plan and training ids of a shape: ``llm_memory``'s, or tiny ones (CPU subset)."""
    import llm_memory as lm

    from vocabcore import VocabPlan

    if "tiny" in settings:
        out = _tiny_inputs(shape, settings)
    else:
        plan_path, ids_path = lm.prepare(shape)
        ids = json.loads(ids_path.read_text())
        out = {
            "config": lm.make_config(shape, layers=settings["layers"]),
            "plan": VocabPlan.load(plan_path),
            "ids": ids,
            "tokens": lm.SHAPES[shape]["tokens"],
        }
    need = settings["batch"] * settings["seq"]
    out["ids"] = (out["ids"] * (need // len(out["ids"]) + 1))[:need]
    out["arch"] = lm.SHAPES[shape]["kwargs"]["architectures"][0]
    return out


def build(
    inputs: dict[str, Any], softmax: str | None, settings: dict[str, Any], device: str
) -> Any:
    """Model (seed 0, on ``device`` in the run's dtype), reduced unless ``softmax`` is None;
    the plan's handle; fused AdamW created after apply; the batch (batch x seq ids)."""
    import torch
    import transformers

    from vocab_adapters import apply_plan

    torch.manual_seed(0)
    with torch.device(device):
        # apply_plan changes the config: each model gets its own copy
        model = getattr(transformers, inputs["arch"])(copy.deepcopy(inputs["config"]))
    model.to(getattr(torch, settings["dtype"]))
    ids, applied = inputs["ids"], None
    if softmax is not None:  # "MODE" or "MODE:NORMALISER"
        mode, _, normaliser = softmax.partition(":")
        applied = apply_plan(
            inputs["plan"], model=model, softmax=mode, normaliser=normaliser or "exact"
        )
        ids = inputs["plan"].remap(ids)
    batch = torch.tensor(ids, device=device).view(settings["batch"], settings["seq"])
    optimizer = torch.optim.AdamW(list(model.parameters()), lr=settings["lr"], fused=True)
    return model, applied, optimizer, batch


def make_step(model: Any, optimizer: Any, kernel: Callable[..., Any] | None) -> Any:
    """One optimizer step: the model's own loss (``softmax_speed.step_fn``), or a fused
    kernel's over the backbone's hidden states and the output weight (labels shifted by one)."""
    import softmax_speed

    if kernel is None:
        return softmax_speed.step_fn(model, optimizer, None, lce=False)
    head = model.get_output_embeddings()

    # the decoder stack without the head (``base_model`` is the causal LM itself for some
    # classes in transformers 4)
    backbone = model.get_decoder() if hasattr(model, "get_decoder") else model.base_model

    def step(batch: Any) -> float:
        hidden = backbone(input_ids=batch).last_hidden_state[:, :-1]
        hidden = hidden.reshape(-1, hidden.shape[-1])
        loss = kernel(hidden, head.weight, batch[:, 1:].reshape(-1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return float(loss)

    return step


# -- measurement --------------------------------------------------------------------------------


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def timed_steps(step: Any, batch: Any, settings: dict[str, Any], device: str) -> dict[str, Any]:
    """Warm-up steps (the first one's loss kept: the initial weights), then the timed steps."""
    import torch

    loss = step(batch)
    for _ in range(settings["warmup"] - 1):
        step(batch)
    _sync(device)
    gc.collect()
    before = peak = None
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    seconds = []
    for _ in range(settings["steps"]):
        _sync(device)
        start = time.perf_counter()
        step(batch)
        _sync(device)
        seconds.append(time.perf_counter() - start)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated()
    return {
        "median_s": h.median(seconds),
        "best_s": min(seconds),
        "times_s": seconds,
        "loss": loss,
        "before_bytes": before,
        "peak_bytes": peak,
    }


def _release(device: str) -> None:
    import torch

    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def _measure(
    inputs: dict[str, Any],
    variant: str,
    settings: dict[str, Any],
    device: str,
    kernels: dict[str, Callable[..., Any]],
) -> dict[str, Any]:
    softmax, kernel = VARIANTS[variant]
    model, applied, optimizer, batch = build(inputs, softmax, settings, device)
    rows = model.get_output_embeddings().weight.shape[0]
    step = make_step(model, optimizer, None if kernel is None else kernels[kernel])
    out = {"head_rows": rows, **timed_steps(step, batch, settings, device)}
    del applied  # kept alive until here, as a training run keeps it for revert
    return out


def measure_variant(
    inputs: dict[str, Any],
    variant: str,
    settings: dict[str, Any],
    device: str,
    kernels: dict[str, Callable[..., Any]],
) -> dict[str, Any]:
    """Build, warm up and time one variant; an exception (out of memory, ...) is recorded."""
    start = time.perf_counter()
    try:
        out = _measure(inputs, variant, settings, device, kernels)
    except Exception as exc:
        traceback.print_exc()
        out = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    _release(device)
    out["wall_s"] = time.perf_counter() - start
    return out


def add_ratios(times: dict[str, dict[str, Any]]) -> None:
    """Each measured variant's median time and peak memory over ``full``'s and ``reduced``'s,
    and its first-step loss minus ``full``'s."""
    for _name, t in times.items():
        if "median_s" not in t:
            continue
        for base in ("full", "reduced"):
            b = times.get(base, {})
            if "median_s" in b:
                t[f"time_vs_{base}"] = t["median_s"] / b["median_s"]
            if t.get("peak_bytes") and b.get("peak_bytes"):
                t[f"peak_vs_{base}"] = t["peak_bytes"] / b["peak_bytes"]
        if "loss" in times.get("full", {}):
            t["loss_minus_full"] = t["loss"] - times["full"]["loss"]


def run_shape(shape: str, run: dict[str, Any], kernels: dict[str, Callable[..., Any]]) -> None:
    """Every variant of one shape, within the run's time budget; results saved as they come."""
    import llm_memory as lm

    settings, device = run["settings"], run["device"]["type"]
    inputs = shape_inputs(shape, settings)
    entry = {
        "shape": shape,
        "label": lm.SHAPES[shape]["label"] + (" (tiny)" if "tiny" in settings else ""),
        "rows": inputs["config"].vocab_size,
        "tokens": inputs["tokens"],
        "kept": inputs["plan"].new_size,
        "hidden": inputs["config"].hidden_size,
        "times": {},
    }
    run["shapes"].append(entry)
    for variant, (_, kernel) in VARIANTS.items():
        if kernel is not None and kernel not in kernels:
            continue  # listed once under "kernels_missing"
        used = time.monotonic() - run["_start"]
        guess = max([settings["guess_s"], *run["_walls"]])
        if used + guess > settings["budget_s"]:
            entry["times"][variant] = {"skipped": f"time budget ({settings['budget_s']} s)"}
            run["budget"]["skipped"].append(f"{shape}: {variant}")
            continue
        entry["times"][variant] = measure_variant(inputs, variant, settings, device, kernels)
        run["_walls"].append(entry["times"][variant]["wall_s"])
        print(json.dumps({"shape": shape, variant: entry["times"][variant]}), flush=True)
        add_ratios(entry["times"])
        save(run)


# -- the CUDA tests -----------------------------------------------------------------------------


def junit_counts(path: Path) -> dict[str, Any]:
    """Passed, failed (failures and errors), skipped test cases of a JUnit XML report."""
    counts: dict[str, Any] = {"passed": 0, "failed": 0, "skipped": 0, "failed_tests": []}
    for case in ET.parse(path).getroot().iter("testcase"):
        tags = {child.tag for child in case}
        name = f"{case.get('classname')}::{case.get('name')}"
        if tags & {"failure", "error"}:
            counts["failed"] += 1
            counts["failed_tests"].append(name)
        elif "skipped" in tags:
            counts["skipped"] += 1
        else:
            counts["passed"] += 1
    return counts


def cuda_tests(timeout: float) -> dict[str, Any]:
    """``pytest -m cuda tests`` in a subprocess: counts from its JUnit XML, or what went wrong."""
    import importlib.util

    if importlib.util.find_spec("pytest") is None:
        return {"error": "pytest is not installed"}
    env = h.worker_env(h.ROOT / "src", TRANSFORMERS_OFFLINE="1")
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "cuda.xml"
        command = ["-m", "pytest", "-m", "cuda", "tests", "-q", "-p", "no:cacheprovider"]
        start = time.perf_counter()
        try:
            proc = subprocess.run(
                [sys.executable, *command, f"--junitxml={report}"],
                cwd=h.ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s"}
        seconds = time.perf_counter() - start
        sys.stderr.write(proc.stdout[-3000:])
        if not report.is_file():
            return {"error": f"pytest exited {proc.returncode}: {proc.stdout[-800:]}"}
        counts = junit_counts(report)
    return {**counts, "exit_code": proc.returncode, "seconds": seconds}


# -- the run ------------------------------------------------------------------------------------


def save(run: dict[str, Any]) -> None:
    """Write the run's results (the keys starting with ``_`` are its bookkeeping)."""
    results = {k: v for k, v in run.items() if not k.startswith("_")}
    results["budget"]["used_s"] = time.monotonic() - run["_start"]
    h.write_json(run["_out"], results, indent=1, newline=True)


def run_all(settings: dict[str, Any], out: Path, tests: bool) -> dict[str, Any]:
    """The CUDA tests (GPU mode) and every shape; returns the results as written to ``out``."""
    import torch

    device = "cuda" if settings["mode"] == "gpu" else "cpu"
    if device == "cpu":
        # one thread: tiny matmuls gain nothing from more, and suffer on a busy machine
        torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    kernels, missing = kernel_losses(device)
    run: dict[str, Any] = {
        "_start": time.monotonic(),
        "_out": out,
        "_walls": [],
        "mode": settings["mode"],
        "device": device_info(device),
        "versions": versions(),
        "machine": h.machine(),
        "settings": dict(settings),
        "kernels_missing": missing,
        "budget": {"limit_s": settings["budget_s"], "skipped": []},
        "shapes": [],
    }
    if device == "cuda" and tests:
        limit = min(settings["tests_timeout_s"], settings["budget_s"] / 2)
        run["cuda_tests"] = cuda_tests(limit)
    else:
        run["cuda_tests"] = {"not_run": "no CUDA device" if device == "cpu" else "--no-tests"}
    save(run)
    for shape in settings["shapes"]:
        missing_class = _missing_class(shape)
        if missing_class:  # an older transformers (Gemma 3 came with 4.50)
            run.setdefault("shapes_unavailable", {})[shape] = missing_class
            continue
        run_shape(shape, run, kernels)
    save(run)
    result: dict[str, Any] = h.read_json(out)
    return result


def _missing_class(shape: str) -> str:
    """What the installed transformers lacks to build ``shape`` ('' when nothing)."""
    import llm_memory as lm
    import transformers

    spec = lm.SHAPES[shape]
    for name in (spec["config"], spec["kwargs"]["architectures"][0]):
        if not hasattr(transformers, name):
            return f"transformers {transformers.__version__} has no {name}"
    return ""


# -- the page -----------------------------------------------------------------------------------

INTRO = [
    "# GPU: training steps in bf16, and the CUDA tests",
    "",
    "`benchmarks/gpu.py` times one training step (forward with the model's causal-LM loss, "
    "backward, fused AdamW) on the three LLM shapes of [llm_memory.md](llm_memory.md) "
    "(Llama-3.2-1B-, Qwen2.5-0.5B- and Gemma-3-1B-like: their vocabularies and hidden sizes, "
    "tied heads, 2 decoder layers; the same plans and training ids), with the weights in bf16, "
    "and runs the tests marked `cuda` (`pytest -m cuda tests`). Variants per shape:",
    "",
    "- `full`: the full vocabulary;",
    '- `reduced`, `shifted`: `apply_plan(plan, model=model, softmax="reduced" | "shifted")` '
    "(the full-size copy kept for revert stays on the GPU and counts in the peak);",
    '- `shifted, sampled 8192`: `softmax="shifted", normaliser="sampled:8192"` (the normaliser '
    "over 8,192 dropped rows drawn afresh each step; its loss is an estimate of the full one);",
    "- where they import: the full model's loss computed from its hidden states and output "
    "weight by a fused linear cross-entropy, without full logits: torch's "
    "`torch.nn.functional.linear_cross_entropy` (chunked), Liger Kernel's "
    "`LigerFusedLinearCrossEntropyLoss` (`full + Liger FLCE`) and Apple's Cut Cross-Entropy "
    "(`full + CCE`); the last two also on the reduced model (`reduced + ...`).",
    "",
    "Each variant builds its model from the same seed, so every run starts from the same "
    "weights: the loss is the first step's (before any update), and `shifted` and the "
    "full-vocabulary variants should agree up to bf16 rounding (`reduced` normalises over the "
    "kept ids only, so its loss is lower). Times are per step after the warm-up steps, with "
    "`torch.cuda.synchronize()` around each; peak memory is `torch.cuda.max_memory_allocated()` "
    "over the timed steps (model, optimizer state and the step's own tensors).",
    "",
]


def _settings_lines() -> list[str]:
    s = SETTINGS["gpu"]
    return [
        f"Settings: batch {s['batch']} x {s['seq']:,} tokens, {s['layers']} decoder layers, "
        f"{s['warmup']} warm-up and {s['steps']} timed steps per variant, AdamW (fused, lr "
        f"{s['lr']}). The weights are bf16 themselves (`model.to(torch.bfloat16)` before "
        "`apply_plan`), not fp32 under autocast: gradients and AdamW state are bf16 too, as "
        "in a memory-bound fine-tuning run, and the logits are bf16 until the loss takes them "
        "to fp32. The whole run, CUDA tests included, keeps to a budget of "
        f"{s['budget_s']} s (the tests get at most {s['tests_timeout_s']} s): a variant that "
        "would not fit in what is left is skipped and listed below the table.",
        "",
    ]


def _reproduce(results: dict[str, Any] | None) -> list[str]:
    lines = [
        "## Reproduce",
        "",
        f"On a machine with a CUDA device, from the repository root: `{COMMAND}` (about 8 "
        "minutes at most; it writes `benchmarks/gpu.json` and this page), or `nox -s gpu`. "
        "`python benchmarks/gpu.py --render` rewrites this page from `benchmarks/gpu.json`.",
        "",
        "The fused kernels are optional: `pip install --no-deps liger-kernel cut-cross-entropy` "
        "into the environment that has torch's CUDA build and triton (`nox -s gpu` does that "
        "in a virtual environment that sees the system's packages, and goes on without them "
        "where the install fails; offline, install them from wheels). A kernel that does not "
        "import is listed with the reason instead of measured.",
        "",
        "Without a CUDA device (or with `--cpu`) the script runs a CPU subset to check itself: "
        "tiny models of the same architectures, fp32, three steps per variant, no CUDA tests, "
        f"written to `--out` (default `{CPU_OUT.name}` in the temporary directory).",
    ]
    if results:
        env = ", ".join(f"{k} {v}" for k, v in results["versions"].items())
        lines += ["", f"Environment of the figures above: {env}."]
    return [*lines, ""]


def _tests_line(tests: dict[str, Any]) -> str:
    if "not_run" in tests:
        return f"CUDA tests: not run ({tests['not_run']})."
    if "error" in tests:
        return f"CUDA tests (`pytest -m cuda tests`): no result ({tests['error']})."
    line = (
        f"CUDA tests (`pytest -m cuda tests`): {tests['passed']} passed, {tests['failed']} "
        f"failed, {tests['skipped']} skipped ({tests['seconds']:.0f} s)."
    )
    if tests["failed_tests"]:
        line += " Failed: " + ", ".join(f"`{t}`" for t in tests["failed_tests"]) + "."
    return line


def step_table(results: dict[str, Any]) -> str:
    """Markdown: per shape and variant, step times, ratios, peak memory and first-step loss."""
    rows = []
    for entry in results["shapes"]:
        label = f"{entry['label']}, {entry['kept']:,} of {entry['rows']:,} rows"
        for name, t in entry["times"].items():
            if "median_s" not in t:
                why = t.get("skipped") or t.get("error", "")
                rows.append([label, name, f"not measured: {why}"[:120], *["-"] * 7])
                continue
            peak = t.get("peak_bytes")
            rows.append(
                [
                    label,
                    name,
                    h.ms(t["median_s"]),
                    h.ms(t["best_s"]),
                    h.times(t["median_s"], entry["times"]["full"].get("median_s")),
                    h.times(t["median_s"], entry["times"].get("reduced", {}).get("median_s")),
                    "-" if peak is None else h.gib(peak),
                    h.times(peak, entry["times"]["full"].get("peak_bytes")),
                    f"{t['loss']:.4f}",
                    f"{t.get('loss_minus_full', float('nan')):+.1e}",
                ]
            )
    header = ["shape", "variant", "median step", "best", "/ full", "/ reduced"]
    header += ["peak GiB", "peak / full", "loss", "loss - full"]
    return h.table(header, rows)


def _results(results: dict[str, Any]) -> list[str]:
    s, dev = results["settings"], results["device"]
    head = "## Measured" if results["mode"] == "gpu" else "## CPU subset (a check, not figures)"
    memory = f", {dev['memory_bytes'] / h.GIB:.0f} GiB" if "memory_bytes" in dev else ""
    lines = [
        head,
        "",
        f"Device: {dev['name']}{memory}. Batch {s['batch']} x {s['seq']:,} tokens, "
        f"{s['layers']} decoder layers, weights in {s['dtype']}, AdamW (fused, lr {s['lr']}), "
        f"{s['warmup']} warm-up and {s['steps']} timed steps per variant.",
        "",
        _tests_line(results["cuda_tests"]),
        "",
        step_table(results),
        "",
    ]
    for name, why in results["kernels_missing"].items():
        lines.append(f"- not measured, {name} ({KERNELS[name]}): {why}")
    for shape, why in results.get("shapes_unavailable", {}).items():
        lines.append(f"- not measured, the {shape} shape: {why}")
    if results["budget"]["skipped"]:
        lines.append(
            f"- skipped to stay within the {results['budget']['limit_s']} s budget: "
            + "; ".join(results["budget"]["skipped"])
        )
    lines.append(f"- the whole run took {results['budget'].get('used_s', 0):.0f} s.")
    return [*lines, ""]


def render(results: dict[str, Any] | None) -> str:
    """The page: the method, the results (or that none are recorded), how to reproduce."""
    lines = [*INTRO, *_settings_lines()]
    if results is None:
        lines += [
            "## Measured",
            "",
            "No GPU figures are recorded yet (`benchmarks/gpu.json` does not exist). To "
            f"produce them, run `{COMMAND}` on a machine with a CUDA device (or `nox -s gpu`).",
            "",
        ]
    else:
        lines += _results(results)
    return "\n".join(lines + _reproduce(results))


def arguments() -> Any:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="the CPU subset (tiny models)")
    parser.add_argument("--out", type=Path, help=f"results JSON (GPU default {OUT.name})")
    parser.add_argument("--doc", type=Path, help="page to write (GPU default docs/gpu.md)")
    parser.add_argument("--render", action="store_true", help="write the page from --out only")
    parser.add_argument("--shapes", help="comma-separated subset of llama,qwen,gemma")
    parser.add_argument("--budget", type=float, help="seconds for the whole run")
    parser.add_argument("--no-tests", action="store_true", help="skip the CUDA tests")
    return parser.parse_args()


def main() -> None:
    import torch

    args = arguments()
    # float(loss) of a loss that requires grad, in softmax_speed.step_fn: harmless here
    warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad")
    if args.render:
        out = args.out or OUT
        page = render(h.read_json(out) if out.is_file() else None)
        (args.doc or DOC).write_text(page, encoding="utf-8")
        return
    gpu = torch.cuda.is_available() and not args.cpu
    settings = dict(SETTINGS["gpu" if gpu else "cpu"])
    if args.shapes:
        settings["shapes"] = args.shapes.split(",")
    if args.budget:
        settings["budget_s"] = args.budget
    out = args.out or (OUT if gpu else CPU_OUT)
    if not gpu:
        print("no CUDA device (or --cpu): the CPU subset, tiny models", file=sys.stderr)
    results = run_all(settings, out, tests=not args.no_tests)
    doc = args.doc or (DOC if gpu else None)
    if doc is not None:
        doc.write_text(render(results), encoding="utf-8")
    print(step_table(results))
    print(f"results: {out}" + (f"; page: {doc}" if doc else ""))


if __name__ == "__main__":
    main()
