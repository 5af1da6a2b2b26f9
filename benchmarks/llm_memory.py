"""Memory of one SFT step on LLM-shaped models, full and reduced, beside ``memory_estimate``.

Three shapes with their real vocabularies and hidden sizes, tied heads and 2 decoder layers
(their other dimensions real):

* ``llama``: Llama-3.2-1B-like, 128,256 x 2048;
* ``qwen``: Qwen2.5-0.5B-like, 151,936 rows x 896 (151,665 tokens: padded rows);
* ``gemma``: Gemma-3-1B-like, 262,144 tokens in 262,208 rows x 1152, Gemma 3's scaled embedding.

Plans come from a generated chat corpus (``_corpus``'s sentences as user/assistant turns). A
byte-level BPE tokenizer of 32,000 tokens is trained on the general tokenizer corpus, and its
ids are placed at seeded random positions of each real vocabulary (its special tokens at the
vocabulary's reserved block), since training a tokenizer with the real vocabulary's size is too
slow here. ``VocabPlan.from_ids`` keeps the ids the chat corpus uses plus the specials.

Each measurement runs in a fresh process: build the model (fp32, seed 0), apply the plan for
the reduced run (``apply_plan``; the handle keeps the full-size tensors for revert), take one
warm-up AdamW step at 8 tokens so the optimizer state exists, reset the peak RSS
(``/proc/self/clear_refs``), then time one step at batch 1 x ``--seq`` tokens (causal-LM loss,
labels = inputs) and read the peak RSS (VmHWM) of that step. A process that imports the same
modules and builds nothing gives the baseline.

Run: ``python benchmarks/llm_memory.py`` (about 5-10 minutes on 2 cores, peak about 9 GiB);
``--quick`` for a smoke run at seq 64. Writes ``benchmarks/llm_memory.json``,
``docs/llm_memory.md`` and ``docs/img/llm_memory.png``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

GIB = 1024**3
SEED = 20240611
BPE_SIZE = 32_000
CHAT_SPECIALS = ("<|begin|>", "<|user|>", "<|assistant|>", "<|end|>")

# Real configs, written by hand from the published config.json files.
SHAPES: dict[str, dict[str, Any]] = {
    "llama": {
        "label": "Llama-3.2-1B-like",
        "config": "LlamaConfig",
        "tokens": 128_256,
        "reserved": (128_000, 128_256),
        "kwargs": {
            "vocab_size": 128_256,
            "hidden_size": 2048,
            "intermediate_size": 8192,
            "num_hidden_layers": 16,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "head_dim": 64,
            "max_position_embeddings": 131_072,
            "rms_norm_eps": 1e-5,
            "bos_token_id": 128_000,
            "eos_token_id": 128_001,
            "tie_word_embeddings": True,
            "architectures": ["LlamaForCausalLM"],
        },
    },
    "qwen": {
        "label": "Qwen2.5-0.5B-like",
        "config": "Qwen2Config",
        "tokens": 151_665,
        "reserved": (151_643, 151_665),
        "kwargs": {
            "vocab_size": 151_936,
            "hidden_size": 896,
            "intermediate_size": 4864,
            "num_hidden_layers": 24,
            "num_attention_heads": 14,
            "num_key_value_heads": 2,
            "max_position_embeddings": 32_768,
            "rms_norm_eps": 1e-6,
            "bos_token_id": 151_643,
            "eos_token_id": 151_645,
            "tie_word_embeddings": True,
            "architectures": ["Qwen2ForCausalLM"],
        },
    },
    "gemma": {
        "label": "Gemma-3-1B-like",
        "config": "Gemma3TextConfig",
        "tokens": 262_144,
        "reserved": (0, 8),
        "kwargs": {
            "vocab_size": 262_208,
            "hidden_size": 1152,
            "intermediate_size": 6912,
            "num_hidden_layers": 26,
            "num_attention_heads": 4,
            "num_key_value_heads": 1,
            "head_dim": 256,
            "sliding_window": 512,
            "query_pre_attn_scalar": 256,
            "max_position_embeddings": 32_768,
            "rms_norm_eps": 1e-6,
            "pad_token_id": 0,
            "eos_token_id": 1,
            "bos_token_id": 2,
            "tie_word_embeddings": True,
            "architectures": ["Gemma3ForCausalLM"],
        },
    },
}


def make_config(shape: str, layers: int | None = None) -> Any:
    """The shape's transformers config; ``layers`` overrides the real depth."""
    import transformers

    spec = SHAPES[shape]
    kwargs = dict(spec["kwargs"])
    if layers is not None:
        kwargs["num_hidden_layers"] = layers
    return getattr(transformers, spec["config"])(**kwargs)


# ---------------------------------------------------------------- corpus, tokenizer, plans


def chat_corpus(n_conversations: int = 3000) -> list[str]:
    """User/assistant conversations over the CoNLL-like training sentences."""
    import _corpus

    sentences = [" ".join(s) for s in _corpus.training_set()]
    rng = random.Random(SEED)
    texts = []
    for _ in range(n_conversations):
        turns = ["<|begin|>"]
        for _ in range(rng.randint(1, 3)):
            question = rng.choice(sentences).rstrip(" .") + "?"
            answer = " ".join(rng.choice(sentences) for _ in range(rng.randint(1, 4)))
            turns += [f"<|user|>\n{question}<|end|>", f"<|assistant|>\n{answer}<|end|>"]
        texts.append("\n".join(turns))
    return texts


def cache() -> Path:
    from _tokenizers import cache_dir

    path = cache_dir() / "llm_memory"
    path.mkdir(parents=True, exist_ok=True)
    return path


def trained_bpe() -> Any:
    """A byte-level BPE tokenizer of 32,000 tokens trained on the general corpus (cached)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    path = cache() / f"bpe{BPE_SIZE}.json"
    if path.is_file():
        return Tokenizer.from_file(str(path))
    import _corpus

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_SIZE,
        special_tokens=list(CHAT_SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus.tokenizer_corpus(), trainer=trainer)
    tok.save(str(path))
    return tok


def id_map(shape: str, bpe_size: int) -> list[int]:
    """Where each BPE id sits in the shape's vocabulary: specials in the reserved block, the
    rest at seeded random positions outside it."""
    spec = SHAPES[shape]
    lo, hi = spec["reserved"]
    ordinary = [i for i in range(spec["tokens"]) if not lo <= i < hi]
    rng = random.Random(SEED + len(shape))
    placed = rng.sample(ordinary, bpe_size - len(CHAT_SPECIALS))
    return [lo + k for k in range(len(CHAT_SPECIALS))] + placed


def prepare(shape: str) -> tuple[Path, Path]:
    """Write the shape's plan and a training sequence (full ids); return their paths."""
    from vocabcore import VocabPlan

    plan_path, ids_path = cache() / f"{shape}.plan.json", cache() / f"{shape}.ids.json"
    if plan_path.is_file() and ids_path.is_file():
        return plan_path, ids_path
    tok = trained_bpe()
    mapping = id_map(shape, tok.get_vocab_size())
    encoded = [[mapping[i] for i in e.ids] for e in tok.encode_batch(chat_corpus())]
    lo, hi = SHAPES[shape]["reserved"]
    plan = VocabPlan.from_ids(encoded, vocab_size=SHAPES[shape]["tokens"], keep=range(lo, hi))
    plan = plan.with_metadata(corpus=f"{len(encoded)} generated conversations", shape=shape)
    plan.save(plan_path)
    stream = [i for seq in encoded[:400] for i in seq]
    ids_path.write_text(json.dumps(stream[:8192]))
    return plan_path, ids_path


# ---------------------------------------------------------------- one measurement (subprocess)


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(key)  # pragma: no cover


def _imports() -> None:
    import torch
    import transformers  # noqa: F401

    import vocab_adapters.embeddings
    import vocab_adapters.session  # noqa: F401

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))


def measure_baseline() -> dict[str, Any]:
    """RSS of a process that imports what a measurement imports, and builds nothing."""
    _imports()
    import transformers

    for spec in SHAPES.values():
        cls = spec["kwargs"]["architectures"][0]
        getattr(transformers, cls)  # import the modeling modules too
    gc.collect()
    return {"rss_bytes": _status("VmRSS"), "hwm_bytes": _status("VmHWM")}


def measure(shape: str, mode: str, seq: int) -> dict[str, Any]:
    """One SFT step at batch 1 x ``seq``: peak RSS, time, parameters, Adam state."""
    _imports()
    import torch
    import transformers

    from vocab_adapters import apply_plan, memory_estimate
    from vocabcore import VocabPlan

    plan_path, ids_path = prepare(shape)
    plan = VocabPlan.load(plan_path)
    config = make_config(shape, layers=2)
    torch.manual_seed(0)
    model = getattr(transformers, SHAPES[shape]["kwargs"]["architectures"][0])(config)
    ids = json.loads(ids_path.read_text())[:seq]
    retained = 0
    if mode == "reduced":
        applied = apply_plan(plan, model=model)
        retained = sum(s.full.numel() * s.full.element_size() for s in applied.swaps)
        ids = plan.remap(ids)
    est = memory_estimate(model, batch_size=1, seq_len=seq, optimizer="adamw").full
    inputs = torch.tensor([ids])
    params = {id(p): p for p in model.parameters()}
    # fused: one kernel per tensor, no temporaries the size of a parameter
    optimizer = torch.optim.AdamW(list(params.values()), lr=1e-5, fused=True)

    def step(batch: Any) -> None:
        # the causal-LM loss, computed here: Gemma3ForCausalLM's own loss reads a vocab_size
        # attribute that apply_plan leaves at the full size
        logits = model(input_ids=batch).logits.float()
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1)
        )
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    step(inputs[:, :8])  # warm-up: the optimizer state exists from here on
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS to the current RSS
    before = _status("VmRSS")
    start = time.perf_counter()
    step(inputs)
    seconds = time.perf_counter() - start
    peak = _status("VmHWM")
    state = sum(
        t.numel() * t.element_size()
        for s in optimizer.state.values()
        for t in s.values()
        if isinstance(t, torch.Tensor) and t.dim() > 0
    )
    return {
        "shape": shape,
        "mode": mode,
        "seq": seq,
        "kept": plan.new_size,
        "tokens": plan.vocab_size,
        "parameters": sum(p.numel() for p in params.values()),
        "adam_state_bytes": state,
        "rss_before_step_bytes": before,
        "peak_rss_bytes": peak,
        "retained_full_bytes": retained,
        "step_seconds": seconds,
        "estimate_of_model": est.as_dict(),
    }


def run_child(args: list[str]) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(HERE)])}
    done = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, env=env, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{args} failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# ---------------------------------------------------------------- the whole benchmark


def real_depth_table(seqs: tuple[int, ...] = (2048, 8192)) -> list[dict[str, Any]]:
    from vocab_adapters import memory_estimate
    from vocabcore import VocabPlan

    rows = []
    for shape in SHAPES:
        plan = VocabPlan.load(prepare(shape)[0])
        config = make_config(shape)
        for seq in seqs:
            start = time.perf_counter()
            est = memory_estimate(config, plan, seq_len=seq, optimizer="adamw", dtype="float32")
            seconds = time.perf_counter() - start
            bf16 = memory_estimate(config, plan, seq_len=seq, optimizer="adamw", dtype="bfloat16")
            assert est.reduced is not None and bf16.reduced is not None
            rows.append(
                {
                    "shape": shape,
                    "layers": config.num_hidden_layers,
                    "seq": seq,
                    "full": est.full.as_dict(),
                    "reduced": est.reduced.as_dict(),
                    "bf16_full_total": bf16.full.total_bytes,
                    "bf16_reduced_total": bf16.reduced.total_bytes,
                    "estimate_seconds": seconds,
                }
            )
    return rows


def run(seq: int, partial: Path | None = None) -> dict[str, Any]:
    from vocab_adapters import memory_estimate
    from vocabcore import VocabPlan

    for shape in SHAPES:
        prepare(shape)
    baseline = run_child(["--baseline"])
    print(f"baseline RSS {baseline['rss_bytes'] / GIB:.2f} GiB", flush=True)
    rows: list[dict[str, Any]] = []
    for shape in ("gemma", "llama", "qwen"):
        plan = VocabPlan.load(prepare(shape)[0])
        est = memory_estimate(make_config(shape, layers=2), plan, seq_len=seq, dtype="float32")
        assert est.reduced is not None
        for mode in ("full", "reduced"):
            result = run_child(["--measure", shape, mode, "--seq", str(seq)])
            figures = est.full if mode == "full" else est.reduced
            result["estimate"] = figures.as_dict()
            predicted = baseline["rss_bytes"] + figures.total_bytes + result["retained_full_bytes"]
            result["predicted_peak_bytes"] = predicted
            result["peak_error"] = predicted / result["peak_rss_bytes"] - 1
            result["param_error"] = figures.parameters / result["parameters"] - 1
            result["state_error"] = figures.optimizer_state_bytes / result["adam_state_bytes"] - 1
            print(
                f"{shape:6} {mode:8} peak {result['peak_rss_bytes'] / GIB:6.2f} GiB, "
                f"predicted {predicted / GIB:6.2f} GiB ({result['peak_error']:+.1%}), "
                f"step {result['step_seconds']:.1f} s",
                flush=True,
            )
            rows.append(result)
            if partial is not None:
                partial.write_text(json.dumps({"baseline": baseline, "rows": rows}, indent=2))
    return {
        "seq": seq,
        "threads": int(os.environ.get("BENCH_THREADS", "2")),
        "baseline": baseline,
        "rows": rows,
        "real_depth": real_depth_table(),
        "versions": _versions(),
    }


def _versions() -> dict[str, str]:
    import platform

    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cpu_threads": str(torch.get_num_threads()),
    }


def _gib(n: float) -> str:
    return f"{n / GIB:.2f}"


def plot(results: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = list(SHAPES)
    by = {(r["shape"], r["mode"]): r for r in results["rows"]}
    fig, ax = plt.subplots(figsize=(7.5, 4))
    width = 0.35
    for k, mode in enumerate(("full", "reduced")):
        xs = [i + (k - 0.5) * width for i in range(len(shapes))]
        peaks = [by[(s, mode)]["peak_rss_bytes"] / GIB for s in shapes]
        predicted = [by[(s, mode)]["predicted_peak_bytes"] / GIB for s in shapes]
        ax.bar(xs, peaks, width, label=f"{mode}: measured peak RSS")
        ax.scatter(xs, predicted, color="black", marker="_", s=400, zorder=3)
    ax.scatter([], [], color="black", marker="_", s=200, label="baseline + estimate")
    ax.set_xticks(range(len(shapes)), [SHAPES[s]["label"] for s in shapes])
    ax.set_ylabel("GiB")
    ax.set_title(f"One AdamW SFT step, 2 decoder layers, batch 1 x {results['seq']} tokens, CPU")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def write_doc(results: dict[str, Any], out: Path) -> None:
    rows = results["rows"]
    by = {(r["shape"], r["mode"]): r for r in rows}
    seq = results["seq"]
    base = results["baseline"]["rss_bytes"]
    lines = [
        "# Memory on LLM-shaped models",
        "",
        "What a reduced vocabulary saves in one supervised fine-tuning step of three current "
        "decoder shapes, measured, beside `memory_estimate`'s figures "
        "(`vocabcore stats --model DIR --batch-size N --seq-len N --optimizer NAME`). "
        "Reproduce with `python benchmarks/llm_memory.py` (results in "
        "`benchmarks/llm_memory.json`).",
        "",
        "## Setup",
        "",
        "- Shapes, with real vocabulary and hidden sizes and tied heads: "
        "Llama-3.2-1B-like (128,256 x 2048), Qwen2.5-0.5B-like (151,936 rows x 896 for "
        "151,665 tokens), Gemma-3-1B-like (262,144 tokens in 262,208 rows x 1152, Gemma 3's "
        "scaled embedding). The measured models have 2 decoder layers with the real layer "
        "dimensions (intermediate size, heads, KV heads, head size), fp32, random weights.",
        "- Plans: a byte-level BPE tokenizer of 32,000 tokens is trained on a general generated "
        "corpus, and its ids are placed at seeded random positions of each real vocabulary "
        "(its special tokens in the vocabulary's reserved block), because training a tokenizer "
        "of the real size is too slow on this machine. The plan is "
        "`VocabPlan.from_ids` over 3,000 generated chat conversations (user/assistant turns) "
        "encoded with it. So the kept counts below are those of a 32k tokenizer on a narrow "
        "domain, not of the real tokenizers; the memory arithmetic only depends on the count.",
        f"- One step: batch 1 x {seq} tokens of the chat corpus, the causal-LM loss "
        "(`cross_entropy` of the fp32 logits against the next token), backward, "
        "`torch.optim.AdamW(fused=True)` step (the fused kernel makes no parameter-sized "
        "temporaries; the unfused CPU loop adds two temporaries the size of the largest "
        "parameter, 2 GiB for the Gemma-like embedding), `zero_grad()`. The reduced run "
        "applies the plan with `apply_plan(plan, model=model)` first.",
        "- Peak memory is the process's peak RSS (VmHWM), measured in a fresh subprocess per "
        "row: the model is built, one warm-up step at 8 tokens creates the optimizer state, "
        "the peak is reset (`/proc/self/clear_refs`), then the measured step runs. Step time "
        f"is that step's wall time on {results['threads']} CPU threads of a machine shared "
        "with other jobs (load average about 13 during the run), so the times are inflated "
        "and only their full/reduced ratio means something.",
        f"- Process RSS includes the interpreter and libraries: a process that imports the same "
        f"modules and builds nothing has an RSS of {_gib(base)} GiB (the *baseline*). The "
        "prediction compared with the measured peak is *baseline + estimate `total_bytes` "
        "(+ for the reduced run, the full-size tensors the `apply_plan` handle keeps for "
        "revert, on the CPU here; on a GPU they are in device memory unless "
        "`offload='cpu'`)*. The estimate has no term for activations and temporaries, so the "
        "remaining difference is exactly those.",
        "",
        f"## Measured: one step at seq {seq}, 2 layers",
        "",
        "| shape | run | kept rows | parameters | est. params | Adam state GiB | est. GiB "
        "| peak RSS GiB | predicted GiB | peak error | step s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        est = r["estimate"]
        kept = r["kept"] if r["mode"] == "reduced" else SHAPES[r["shape"]]["kwargs"]["vocab_size"]
        lines.append(
            f"| {SHAPES[r['shape']]['label']} | {r['mode']} | {kept:,} | {r['parameters']:,} "
            f"| {est['parameters']:,} | {_gib(r['adam_state_bytes'])} "
            f"| {_gib(est['optimizer_state_bytes'])} | {_gib(r['peak_rss_bytes'])} "
            f"| {_gib(r['predicted_peak_bytes'])} | {r['peak_error']:+.1%} "
            f"| {r['step_seconds']:.1f} |"
        )
    lines += [
        "",
        "![Measured peak RSS of one step, full and reduced, and baseline + estimate]"
        "(img/llm_memory.png)",
        "",
        "Estimate against measurement:",
        "",
    ]
    worst_param = max(abs(r["param_error"]) for r in rows)
    worst_state = max(abs(r["state_error"]) for r in rows)
    worst_peak = max(abs(r["peak_error"]) for r in rows)
    verdict = "met" if worst_peak <= 0.10 else "not met"

    def with_loss(r: dict[str, Any]) -> float:
        # cross_entropy's backward holds the log-softmax, its gradient and the logits'
        # gradient beside the logits: three more logits-sized fp32 tensors
        predicted = r["predicted_peak_bytes"] + 3 * r["estimate"]["logits_bytes"]
        return float(predicted / r["peak_rss_bytes"] - 1)

    worst_loss = max(abs(with_loss(r)) for r in rows)
    lines += [
        f"- parameters: largest error {worst_param:.2%} (target 1%: "
        f"{'met' if worst_param <= 0.01 else 'not met'});",
        f"- Adam state: largest error {worst_state:.2%} (target 1%: "
        f"{'met' if worst_state <= 0.01 else 'not met'});",
        f"- peak step memory, baseline + estimate (see Setup): largest error {worst_peak:.1%} "
        f"(target 10%: {verdict}); per row in the table. A negative error means the step "
        "needed more than the prediction. The estimate counts the fp32 logits once, and a "
        "plain `cross_entropy` holds three more tensors of that size at its peak (the "
        "log-softmax, its gradient and the logits' gradient); the rest is activations.",
        "- the same with those three logits-sized tensors added (baseline + `total_bytes` + "
        "3 x `logits_bytes`): "
        + ", ".join(f"{SHAPES[r['shape']]['label']} {r['mode']} {with_loss(r):+.1%}" for r in rows)
        + f"; largest error {worst_loss:.1%}. This rule is read off how the loss works, not "
        "part of `total_bytes`; fused linear cross-entropy removes all four tensors (below).",
    ]
    g_full, g_red = by[("gemma", "full")], by[("gemma", "reduced")]
    ratio = g_red["peak_rss_bytes"] / g_full["peak_rss_bytes"]
    no_copy = (g_red["peak_rss_bytes"] - g_red["retained_full_bytes"]) / g_full["peak_rss_bytes"]
    lines += [
        "",
        "### Gemma-3-1B-like at seq 1024: is the reduced peak at most half the full one?"
        if seq == 1024
        else f"### Gemma-3-1B-like at seq {seq}: reduced against full peak",
        "",
        "Worked out beforehand: the tied 262,208 x 1152 embedding is 302 M parameters, 1.13 "
        "GiB in fp32, and with its gradient and two AdamW moments 4.5 GiB; the fp32 logits of "
        "1,024 tokens are 1.0 GiB, and the loss holds about as much again for the log-softmax "
        "and for the logits' gradient. Two decoder layers are 54 M parameters (0.8 GiB with "
        "gradient and moments). So the full step needs roughly 7-8 GiB over the baseline, and "
        "a plan keeping a few tens of thousands of rows brings the vocabulary part to a few "
        "hundred MiB: at 2 layers, at most half is plausible, also with the full-size copy "
        "that the handle keeps for revert (1.13 GiB). At the real depth (26 layers, 700 M "
        "decoder parameters) the vocabulary is a smaller share: the estimate saves about a "
        "third at seq 2048 and about half at seq 8192 (next table), before activations, which "
        "a reduction does not change; at seq 1024 a real-depth step would not halve.",
        "",
        f"Measured: reduced peak / full peak = {ratio:.2f} with the revert copy in host "
        f"memory (this CPU run), {no_copy:.2f} without it (the device side of a GPU run with "
        f"`offload='cpu'`). Target at most 0.5: "
        f"{'met' if ratio <= 0.5 else 'not met'} as measured"
        f"{'' if ratio <= 0.5 else (', met without the copy' if no_copy <= 0.5 else '')}.",
        "",
        "## Estimated: real depth, seq 2048 and 8192",
        "",
        "`memory_estimate` on the real configs (written by hand: Llama-3.2-1B 16 layers, "
        "Qwen2.5-0.5B 24 layers, Gemma-3-1B 26 layers), built on the meta device (each answers "
        "in well under a second once transformers is imported), with the same plans, batch 1, "
        "AdamW. fp32 totals first, then pure-bf16 totals (parameters, gradients and moments "
        "in bf16; logits fp32). Activations not included.",
        "",
        "| shape | seq | parameters full | reduced | logits GiB full | reduced "
        "| total GiB full | reduced | saved | bf16 total GiB full | reduced |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["real_depth"]:
        full, red = r["full"], r["reduced"]
        saved = 1 - red["total_bytes"] / full["total_bytes"]
        lines.append(
            f"| {SHAPES[r['shape']]['label']} ({r['layers']} layers) | {r['seq']:,} "
            f"| {full['parameters']:,} | {red['parameters']:,} | {_gib(full['logits_bytes'])} "
            f"| {_gib(red['logits_bytes'])} | {_gib(full['total_bytes'])} "
            f"| {_gib(red['total_bytes'])} | {saved:.0%} | {_gib(r['bf16_full_total'])} "
            f"| {_gib(r['bf16_reduced_total'])} |"
        )
    lines += [
        "",
        "## With fused linear cross-entropy (Liger, Cut Cross-Entropy)",
        "",
        "Liger Kernel's fused linear cross-entropy and Apple's Cut Cross-Entropy compute the "
        "loss from the hidden states and the head's weight in chunks, so the logits (and the "
        "log-softmax and the logits' gradient) are never held for the whole sequence: they "
        "remove the `logits_bytes` term and its companions. They leave the embedding and the "
        "head in place, with their gradients and optimizer state: on a tied 262k x 1152 head "
        "that is still 4.5 GiB in fp32 with AdamW. vocabcore removes the dropped rows from "
        "all of those and makes the logits smaller too, so the two compose: with both, the "
        "logits term is gone and the vocabulary-sized tensors are `new_size` rows. Both "
        "kernels take the head's weight as it is, so they see the reduced head like any "
        "other; nothing in vocabcore changes for them. In `memory_estimate` terms the "
        "combination is `reduced.total_bytes - reduced.logits_bytes`. Not measured: needs a "
        "GPU (both are Triton kernels).",
        "",
        "## Environment",
        "",
        ", ".join(f"{k} {v}" for k, v in results["versions"].items()) + ".",
        "",
    ]
    out.write_text("\n".join(lines), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--measure", nargs=2, metavar=("SHAPE", "MODE"), help=argparse.SUPPRESS)
    parser.add_argument("--seq", type=int, default=1024, help="tokens of the measured step")
    parser.add_argument("--quick", action="store_true", help="seq 64, no doc written")
    parser.add_argument("--doc-only", action="store_true", help="rewrite the doc from the JSON")
    args = parser.parse_args()
    if args.baseline:
        print(json.dumps(measure_baseline()))
        return
    if args.measure:
        print(json.dumps(measure(args.measure[0], args.measure[1], args.seq)))
        return
    out_json = HERE / ("llm_memory.quick.json" if args.quick else "llm_memory.json")
    if args.doc_only:
        results = json.loads(out_json.read_text())
    else:
        results = run(64 if args.quick else args.seq, out_json.with_suffix(".partial.json"))
        out_json.write_text(json.dumps(results, indent=2) + "\n")
    if not args.quick:
        write_doc(results, ROOT / "docs" / "llm_memory.md")
        plot(results, ROOT / "docs" / "img" / "llm_memory.png")


if __name__ == "__main__":
    main()
