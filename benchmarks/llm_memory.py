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

Each measurement runs in a fresh process: build the model (fp32, seed 0), for the reduced runs
apply the plan with ``softmax="reduced" | "full" | "shifted"`` (``apply_plan``; the handle keeps
the full-size tensors for revert), create the AdamW optimizer (after apply: ``"shifted"``'s
vector is one of its parameters), take one warm-up step at 8 tokens so the optimizer state
exists, reset the peak RSS (``/proc/self/clear_refs``), then time one step at batch 1 x
``--seq`` tokens (the model's own causal-LM loss: ``model(input_ids, labels=...)``, output dropped
before backward) and read the peak RSS (VmHWM) of that step and the bytes autograd saved for
backward. A process that imports the same modules and builds nothing gives the baseline. The
estimates are computed when the page is written (``attach``), so ``--doc-only`` refreshes them
from the stored measurements.

Run: ``python benchmarks/llm_memory.py`` (about 25 minutes on 2 busy cores, peak about 9 GiB);
``--quick`` for a smoke run at seq 64. Writes ``benchmarks/llm_memory.json``,
``docs/llm_memory.md`` and ``docs/img/llm_memory.png``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import time
from pathlib import Path
from typing import Any

import _harness as h

h.setup(tokenizer_threads=True)

HERE, ROOT, GIB = h.HERE, h.ROOT, h.GIB
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


MODES = ("full", "reduced", "softmax-full", "shifted")
"""Runs per shape: full vocabulary, then ``apply_plan`` with ``softmax=`` reduced/full/shifted."""

MODE_LABELS = {
    "full": "full vocabulary",
    "reduced": "reduced",
    "softmax-full": 'reduced, softmax="full"',
    "shifted": 'reduced, softmax="shifted"',
}


def softmax_of(mode: str) -> str:
    """The ``apply_plan(..., softmax=)`` value of a reduced run."""
    return {"reduced": "reduced", "softmax-full": "full", "shifted": "shifted"}[mode]


class SavedBytes:
    """Bytes of the tensors autograd saves for backward, parameters excluded, each storage once.

    Split at the output layer: what the decoder saves (``decoder``) and what the output layer,
    the normaliser and the loss save (``head``).
    """

    def __init__(self, model: Any) -> None:
        self.params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self.seen: set[int] = set()
        self.bytes = {"decoder": 0, "head": 0}
        self.phase = "decoder"

    def pack(self, tensor: Any) -> Any:
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key not in self.params and key not in self.seen:
            self.seen.add(key)
            self.bytes[self.phase] += storage.nbytes()
        return tensor

    @staticmethod
    def unpack(tensor: Any) -> Any:
        return tensor


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
    if mode != "full":
        applied = apply_plan(plan, model=model, softmax=softmax_of(mode))
        retained = sum(s.full.numel() * s.full.element_size() for s in applied.swaps)
        ids = plan.remap(ids)
    est = memory_estimate(model, batch_size=1, seq_len=seq, optimizer="adamw").full
    inputs = torch.tensor([ids])
    # created after apply_plan: with "shifted" the shift vector is one of its parameters
    params = {id(p): p for p in model.parameters()}
    # fused: one kernel per tensor, no temporaries the size of a parameter
    optimizer = torch.optim.AdamW(list(params.values()), lr=1e-5, fused=True)
    head = model.get_output_embeddings()
    marks: dict[str, int] = {}

    def step(batch: Any, saved: SavedBytes | None = None) -> None:
        # the model's own causal-LM loss, as a Trainer computes it: called with labels (so
        # softmax "full"/"shifted" add the normaliser column), the output dropped before
        # backward
        if saved is None:
            loss = model(input_ids=batch, labels=batch).loss
        else:
            hook = head.register_forward_pre_hook(lambda *_: setattr(saved, "phase", "head"))
            with torch.autograd.graph.saved_tensors_hooks(saved.pack, saved.unpack):
                loss = model(input_ids=batch, labels=batch).loss
            hook.remove()
            marks["rss_after_forward_bytes"] = _status("VmRSS")
        loss.backward()
        if saved is not None:
            marks["rss_after_backward_bytes"] = _status("VmRSS")
        optimizer.step()
        optimizer.zero_grad()

    step(inputs[:, :8])  # warm-up: the optimizer state exists from here on
    gc.collect()
    saved = SavedBytes(model)
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS to the current RSS
    before = _status("VmRSS")
    start = time.perf_counter()
    step(inputs, saved)
    seconds = time.perf_counter() - start
    peak = _status("VmHWM")
    state = h.state_bytes(optimizer)
    return {
        "shape": shape,
        "mode": mode,
        "seq": seq,
        "kept": plan.new_size,
        "tokens": plan.vocab_size,
        "parameters": sum(p.numel() for p in params.values()),
        "adam_state_bytes": state,
        "rss_before_step_bytes": before,
        **marks,
        "peak_rss_bytes": peak,
        "retained_full_bytes": retained,
        "saved_decoder_bytes": saved.bytes["decoder"],
        "saved_head_bytes": saved.bytes["head"],
        "attn_implementation": str(model.config._attn_implementation),
        "step_seconds": seconds,
        "estimate_of_model": est.as_dict(),
    }


def run_child(args: list[str]) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(HERE)])}
    result: dict[str, Any] = h.child_json([__file__, *args], env=env, what=str(args))
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
            shifted = memory_estimate(
                config, plan, seq_len=seq, optimizer="adamw", dtype="float32", softmax="shifted"
            )
            assert est.reduced is not None and bf16.reduced is not None
            assert shifted.reduced is not None
            rows.append(
                {
                    "shape": shape,
                    "layers": config.num_hidden_layers,
                    "seq": seq,
                    "full": est.full.as_dict(),
                    "reduced": est.reduced.as_dict(),
                    "shifted": shifted.reduced.as_dict(),
                    "bf16_full_total": bf16.full.total_bytes,
                    "bf16_reduced_total": bf16.reduced.total_bytes,
                    "bf16_full": bf16.full.as_dict(),
                    "bf16_reduced": bf16.reduced.as_dict(),
                    "estimate_seconds": seconds,
                }
            )
    return rows


def run(seq: int, partial: Path | None = None, shapes: tuple[str, ...] = ()) -> dict[str, Any]:
    """Measure every shape and mode, each in a fresh process (no estimates: see ``attach``)."""
    shapes = shapes or ("gemma", "llama", "qwen")
    for shape in shapes:
        prepare(shape)
    baseline = run_child(["--baseline"])
    print(f"baseline RSS {baseline['rss_bytes'] / GIB:.2f} GiB", flush=True)
    rows: list[dict[str, Any]] = []
    for shape in shapes:
        for mode in MODES:
            result = run_child(["--measure", shape, mode, "--seq", str(seq)])
            print(
                f"{shape:6} {mode:12} peak {result['peak_rss_bytes'] / GIB:6.2f} GiB, "
                f"saved {result['saved_decoder_bytes'] / GIB:.3f} + "
                f"{result['saved_head_bytes'] / GIB:.3f} GiB, step {result['step_seconds']:.1f} s",
                flush=True,
            )
            rows.append(result)
            if partial is not None:
                h.write_json(partial, {"baseline": baseline, "rows": rows}, indent=2)
    return {
        "seq": seq,
        "threads": int(os.environ.get("BENCH_THREADS", "2")),
        "baseline": baseline,
        "rows": rows,
        "versions": _versions(),
    }


def attach(results: dict[str, Any]) -> dict[str, Any]:
    """Add ``memory_estimate``'s figures (as the code computes them now) beside each row."""
    from vocab_adapters import memory_estimate
    from vocabcore import VocabPlan

    seq = results["seq"]
    base = results["baseline"]["rss_bytes"]
    for result in results["rows"]:
        shape, mode = result["shape"], result["mode"]
        plan = VocabPlan.load(prepare(shape)[0])
        config = make_config(shape, layers=2)
        config._attn_implementation = result.get("attn_implementation", "sdpa")
        if mode == "full":
            figures = memory_estimate(config, seq_len=seq, dtype="float32").full
        else:
            est = memory_estimate(
                config, plan, seq_len=seq, dtype="float32", softmax=softmax_of(mode)
            )
            assert est.reduced is not None
            figures = est.reduced
        result["estimate"] = figures.as_dict()
        # the held full-size copy is measured (``retained``), so the estimate's own figure of it
        # (``held_bytes``, part of the reduced totals) is not counted twice
        retained = result["retained_full_bytes"] - figures.held_bytes
        predicted = base + figures.total_bytes + retained
        result["predicted_peak_bytes"] = predicted
        result["peak_error"] = predicted / result["peak_rss_bytes"] - 1
        result["predicted_step_peak_bytes"] = base + figures.peak_bytes + retained
        peak = result["peak_rss_bytes"]
        result["step_peak_error"] = result["predicted_step_peak_bytes"] / peak - 1
        result["activation_error"] = (
            figures.activation_bytes / result["saved_decoder_bytes"] - 1
            if figures.activation_bytes is not None
            else None
        )
        result["param_error"] = figures.parameters / result["parameters"] - 1
        result["state_error"] = figures.optimizer_state_bytes / result["adam_state_bytes"] - 1
    results["real_depth"] = real_depth_table()
    return results


def _versions() -> dict[str, str]:
    import torch

    versions = h.runtime_versions()
    return {
        **{k: versions[k] for k in ("python", "torch", "transformers")},
        "cpu_threads": str(torch.get_num_threads()),
    }


_gib = h.gib


def plot(results: dict[str, Any], out: Path) -> None:
    plt = h.pyplot()
    shapes = [s for s in SHAPES if any(r["shape"] == s for r in results["rows"])]
    by = {(r["shape"], r["mode"]): r for r in results["rows"]}
    fig, ax = plt.subplots(figsize=(9, 4.2))
    width = 0.2
    for k, mode in enumerate(MODES):
        xs = [i + (k - 1.5) * width for i in range(len(shapes))]
        peaks = [by[(s, mode)]["peak_rss_bytes"] / GIB for s in shapes]
        predicted = [by[(s, mode)]["predicted_step_peak_bytes"] / GIB for s in shapes]
        ax.bar(xs, peaks, width, label=MODE_LABELS[mode], color=f"C{k}")
        ax.scatter(xs, predicted, color="black", marker="_", s=250, zorder=3)
    ax.scatter([], [], color="black", marker="_", s=150, label="baseline + peak_bytes (+ copy)")
    ax.set_xticks(range(len(shapes)), [SHAPES[s]["label"] for s in shapes])
    ax.set_ylabel("peak RSS, GiB")
    ax.set_title(f"One AdamW SFT step, 2 decoder layers, batch 1 x {results['seq']} tokens, CPU")
    ax.legend(fontsize=8)
    h.save_figure(fig, out)


def write_doc(results: dict[str, Any], out: Path) -> None:
    """docs/llm_memory.md from the measurements with their estimates attached."""
    by = {(r["shape"], r["mode"]): r for r in results["rows"]}
    lines = [
        *_doc_setup(results),
        *_doc_measured(results, by),
        *_doc_shifted(by),
        *_doc_estimates(results),
        *_doc_errors(results),
        *_doc_gemma_half(by, results["seq"]),
        *_doc_real_depth(results),
        *_doc_fused_and_environment(results),
    ]
    out.write_text("\n".join(lines), encoding="utf-8")


Rows = dict[tuple[str, str], dict[str, Any]]


def _doc_setup(results: dict[str, Any]) -> list[str]:
    seq = results["seq"]
    base = results["baseline"]["rss_bytes"]
    return [
        "# Memory on LLM-shaped models",
        "",
        "What a reduced vocabulary saves in one supervised fine-tuning step of three current "
        "decoder shapes, measured, beside `memory_estimate`'s figures "
        "(`vocabcore stats --model DIR --batch-size N --seq-len N --optimizer NAME`). "
        "Reproduce with `python benchmarks/llm_memory.py` (results in "
        "`benchmarks/llm_memory.json`; `--doc-only` recomputes the estimates and rewrites this "
        "page from the measurements).",
        "",
        "## Setup",
        "",
        "- Shapes, with real vocabulary and hidden sizes and tied heads: "
        "Llama-3.2-1B-like (128,256 x 2048), Qwen2.5-0.5B-like (151,936 rows x 896 for "
        "151,665 tokens), Gemma-3-1B-like (262,144 tokens in 262,208 rows x 1152, Gemma 3's "
        "scaled embedding). The measured models have 2 decoder layers with the real layer "
        "dimensions (intermediate size, heads, KV heads, head size; Gemma's two layers are "
        "sliding-window layers of window 512), fp32, random weights, SDPA attention.",
        "- Plans: a byte-level BPE tokenizer of 32,000 tokens is trained on a general generated "
        "corpus, and its ids are placed at seeded random positions of each real vocabulary "
        "(its special tokens in the vocabulary's reserved block), because training a tokenizer "
        "of the real size is too slow on this machine. The plan is "
        "`VocabPlan.from_ids` over 3,000 generated chat conversations (user/assistant turns) "
        "encoded with it. So the kept counts below are those of a 32k tokenizer on a narrow "
        "domain, not of the real tokenizers; the memory arithmetic only depends on the count.",
        f"- One step: batch 1 x {seq} tokens of the chat corpus, the model's own causal-LM loss "
        "(`model(input_ids=..., labels=...).loss`, the output dropped before `backward()`, as "
        "the `Trainer` does), backward, `torch.optim.AdamW(fused=True)` step (the fused "
        "kernel makes no parameter-sized temporaries; the unfused CPU loop adds two "
        "temporaries the size of the largest parameter, 2 GiB for the Gemma-like embedding), "
        "`zero_grad()`. Four runs per shape: the full vocabulary, and `apply_plan(plan, "
        'model=model, softmax=...)` with `"reduced"`, `"full"` and `"shifted"`; the optimizer '
        'is created after `apply_plan`, so with `"shifted"` it holds the shift vector.',
        "- Peak memory is the process's peak RSS (VmHWM), measured in a fresh subprocess per "
        "row: the model is built, one warm-up step at 8 tokens creates the optimizer state, "
        "the peak is reset (`/proc/self/clear_refs`), then the measured step runs. The same "
        "step records the bytes autograd saves for backward (`saved_tensors_hooks`, each "
        "storage once, parameters excluded). Step time is that step's wall time on "
        f"{results['threads']} CPU threads of a machine shared with other jobs, so the times "
        "are only comparable within this table.",
        f"- Process RSS includes the interpreter and libraries: a process that imports the same "
        f"modules and builds nothing has an RSS of {_gib(base)} GiB (the *baseline*). The "
        "predictions compared with the measured peak are *baseline + an estimate (+ for the "
        "reduced runs, the full-size tensors the `apply_plan` handle keeps for revert, on the "
        "CPU here; on a GPU they are in device memory unless `offload='cpu'`)*.",
        "",
    ]


def _doc_measured(results: dict[str, Any], by: Rows) -> list[str]:
    rows = results["rows"]
    seq = results["seq"]
    lines = [
        f"## Measured: one step at seq {seq}, 2 layers",
        "",
        "| shape | run | kept rows | parameters | Adam state GiB | peak RSS GiB "
        "| saved vs full | step s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        full = by[(r["shape"], "full")]
        kept = r["kept"] if r["mode"] != "full" else SHAPES[r["shape"]]["kwargs"]["vocab_size"]
        saved = 1 - r["peak_rss_bytes"] / full["peak_rss_bytes"]
        lines.append(
            f"| {SHAPES[r['shape']]['label']} | {MODE_LABELS[r['mode']]} | {kept:,} "
            f"| {r['parameters']:,} | {_gib(r['adam_state_bytes'])} "
            f"| {_gib(r['peak_rss_bytes'])} | {'-' if r['mode'] == 'full' else f'{saved:.0%}'} "
            f"| {r['step_seconds']:.1f} |"
        )
    lines += [
        "",
        "![Measured peak RSS of one step per run, and baseline + peak_bytes](img/llm_memory.png)",
        "",
    ]
    return lines


def _doc_shifted(by: Rows) -> list[str]:
    g_full, g_red = by[("gemma", "full")], by[("gemma", "reduced")]
    g_sh, g_fs = by[("gemma", "shifted")], by[("gemma", "softmax-full")]
    kept_share = (g_full["peak_rss_bytes"] - g_sh["peak_rss_bytes"]) / (
        g_full["peak_rss_bytes"] - g_red["peak_rss_bytes"]
    )
    kept_share_full = (g_full["peak_rss_bytes"] - g_fs["peak_rss_bytes"]) / (
        g_full["peak_rss_bytes"] - g_red["peak_rss_bytes"]
    )
    lines = [
        '### `softmax="shifted"`: how much of the saving it keeps',
        "",
        f"On the Gemma-3-1B-like shape the full-vocabulary step peaks at "
        f'{_gib(g_full["peak_rss_bytes"])} GiB, `"reduced"` at {_gib(g_red["peak_rss_bytes"])} '
        f'GiB and `"shifted"` at {_gib(g_sh["peak_rss_bytes"])} GiB (`"full"`: '
        f'{_gib(g_fs["peak_rss_bytes"])} GiB): `"shifted"` keeps {kept_share:.0%} of the '
        f'reduced mode\'s saving (`"full"` {kept_share_full:.0%}; target at least half: '
        f'{"met" if kept_share >= 0.5 else "not met"}). What it adds over `"reduced"` is '
        "the normaliser's chunk workspace (the gathered rows of one chunk of 8,192 dropped rows "
        "and a few fp32 blocks of positions x 8,192), one hidden-size vector with its "
        "gradient and Adam moments, and one more logits column; the dropped rows get no "
        "gradient and no optimizer state. "
        f"Its cost is time: the step takes {g_sh['step_seconds']:.0f} s against "
        f'{g_red["step_seconds"]:.0f} s for `"reduced"` and {g_full["step_seconds"]:.0f} s for '
        "the full vocabulary, because the normaliser computes the dropped rows' logits in "
        "the forward pass and again in the backward pass, chunk by chunk, with a row gather "
        "per chunk.",
        "",
    ]
    return lines


def _doc_estimates(results: dict[str, Any]) -> list[str]:
    rows = results["rows"]
    seq = results["seq"]
    lines = [
        "## The estimate against the measurement",
        "",
        "`memory_estimate(config, plan, batch_size=1, seq_len=..., softmax=...)` per run. "
        "`total_bytes` is parameters + gradients + optimizer state + fp32 logits. "
        "`peak_bytes` adds what the rest of the step holds: `activation_bytes` (what the "
        "layers save for backward, counted per tensor from the config), `loss_bytes` (the "
        "cross-entropy's log-softmax, its gradient and the logits' gradient beside one "
        'logits-sized tensor; with `softmax="full"`/`"shifted"` the normaliser\'s chunk '
        "workspace too), and takes the largest of three moments of the step: the start of "
        "backward (activations + logits + loss), the output layer's backward (activations + "
        "the logits' gradient + the output weight's gradient) and its end (every gradient, "
        "plus two copies of a tied embedding's weight while its second gradient is added).",
        "",
        "`held_bytes` (reduced figures only; 0 for the full ones) is what the applied plan keeps "
        "on the model's device besides the reduced model, and is part of the reduced "
        "`total_bytes` and `peak_bytes`: the full-size embedding, head, output biases and "
        "vocabulary-sized buffers held aside for revert; the optimizer's full-size state of the "
        "trainable ones (held when the plan is applied to an optimizer that has state, i.e. when "
        "resuming, or by `VocabReductionCallback` after its first checkpoint; an optimizer "
        "created after `apply_plan` holds none, so the figure is an upper bound); and with "
        '`softmax="full"`/`"shifted"` the normaliser\'s fp32 biases of the dropped rows. '
        '`memory_estimate(..., offload="cpu")` counts the full-size tensors and state on the CPU,'
        " so `held_bytes` is 0 then, except for the normaliser's own device copy of the dropped "
        'output rows under `softmax="full"`/`"shifted"`. The device is the model\'s: for a model '
        "object on the CPU, offloading changes nothing; a config or a directory is taken to train"
        " on an accelerator. `vocabcore stats --json` reports it as `held_bytes_after`.",
        "",
        "In the table above, the held full-size copy is part of the measured baseline (in these "
        "CPU runs it is in the process's memory before the step), so `baseline + total_bytes` "
        "counts it once: the estimate's own `held_bytes` is left out there.",
        "",
        "| shape | run | activations saved GiB | est. | peak RSS GiB | baseline + total_bytes "
        "| error | baseline + peak_bytes | error |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        est = r["estimate"]
        hidden = SHAPES[r["shape"]]["kwargs"]["hidden_size"]
        # the hooks count the output layer's input with the head, not with the decoder
        measured_act = r["saved_decoder_bytes"] + seq * hidden * 4
        act = est["activation_bytes"]
        lines.append(
            f"| {SHAPES[r['shape']]['label']} | {MODE_LABELS[r['mode']]} "
            f"| {_gib(measured_act)} | {'-' if act is None else _gib(act)} "
            f"| {_gib(r['peak_rss_bytes'])} | {_gib(r['predicted_peak_bytes'])} "
            f"| {r['peak_error']:+.1%} | {_gib(r['predicted_step_peak_bytes'])} "
            f"| {r['step_peak_error']:+.1%} |"
        )
    return lines


def _doc_errors(results: dict[str, Any]) -> list[str]:
    rows = results["rows"]
    seq = results["seq"]
    worst_param = max(abs(r["param_error"]) for r in rows)
    worst_state = max(abs(r["state_error"]) for r in rows)
    worst_total = max(abs(r["peak_error"]) for r in rows)
    worst_peak = max(abs(r["step_peak_error"]) for r in rows)
    act_errors = [
        abs(r["estimate"]["activation_bytes"] / (r["saved_decoder_bytes"] + seq * hidden * 4) - 1)
        for r in rows
        for hidden in [SHAPES[r["shape"]]["kwargs"]["hidden_size"]]
        if r["estimate"]["activation_bytes"] is not None
    ]
    worst_act = max(act_errors) if act_errors else float("nan")
    worst_row = max(rows, key=lambda r: abs(r["step_peak_error"]))
    lines = [
        "",
        f"- parameters: largest error {worst_param:.2%} (target 1%: "
        f"{'met' if worst_param <= 0.01 else 'not met'}); Adam state: largest error "
        f"{worst_state:.2%} (target 1%: {'met' if worst_state <= 0.01 else 'not met'}).",
        f"- activations: largest error {worst_act:.2%} against the bytes autograd saved in the "
        "measured step (the same count is tested exactly on tiny Llama, Qwen2 and Gemma 3 "
        "models, eager and SDPA, fp32 and bf16, in "
        "`tests/adapters/test_memory_activations.py`).",
        f"- peak step memory with `peak_bytes`: largest error {worst_peak:.1%} "
        f"({SHAPES[worst_row['shape']]['label']}, {MODE_LABELS[worst_row['mode']]}; target "
        f"10%: {'met' if worst_peak <= 0.10 else 'not met'}; errors from "
        f"{min(r['step_peak_error'] for r in rows):+.1%} to "
        f"{max(r['step_peak_error'] for r in rows):+.1%}). A negative error means the step "
        "needed more than the prediction: what remains is the backward pass's short-lived "
        "temporaries (a layer's input gradients, the attention kernel's workspace) and freed "
        "memory the C allocator keeps in the process, which the estimate does not model.",
        f"- with `total_bytes` alone (no activations, no loss workspace): largest error "
        f"{worst_total:.1%}. `total_bytes` stays what the contract defines; `peak_bytes` is the "
        "figure to compare with a measured peak.",
        "",
    ]
    return lines


def _doc_gemma_half(by: Rows, seq: int) -> list[str]:
    g_full, g_red = by[("gemma", "full")], by[("gemma", "reduced")]
    ratio = g_red["peak_rss_bytes"] / g_full["peak_rss_bytes"]
    no_copy = (g_red["peak_rss_bytes"] - g_red["retained_full_bytes"]) / g_full["peak_rss_bytes"]
    lines = [
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
        "decoder parameters) the vocabulary is a smaller share, and activations, which a "
        "reduction does not change, grow with the depth and the sequence (next table).",
        "",
        f"Measured: reduced peak / full peak = {ratio:.2f} with the revert copy in host "
        f"memory (this CPU run), {no_copy:.2f} without it (the device side of a GPU run with "
        f"`offload='cpu'`). Target at most 0.5: "
        f"{'met' if ratio <= 0.5 else 'not met'} as measured"
        f"{'' if ratio <= 0.5 else (', met without the copy' if no_copy <= 0.5 else '')}.",
        "",
    ]
    return lines


def _doc_real_depth(results: dict[str, Any]) -> list[str]:
    lines = [
        "## Estimated: real depth, seq 2048 and 8192",
        "",
        "`memory_estimate` on the real configs (written by hand: Llama-3.2-1B 16 layers, "
        "Qwen2.5-0.5B 24 layers, Gemma-3-1B 26 layers with its 5:1 sliding/full layer "
        "pattern), built on the meta device (each answers in well under a second once "
        "transformers is imported), with the same plans, batch 1, AdamW, SDPA attention, no "
        "gradient checkpointing. fp32 first (`total_bytes` and `peak_bytes`), then pure bf16 "
        "(parameters, gradients, moments and activations in bf16; logits fp32).",
        "",
        "| shape | seq | parameters full | reduced | activations GiB | total GiB full "
        "| reduced | peak GiB full | reduced | shifted | saved | bf16 peak GiB full | reduced |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["real_depth"]:
        full, red, sh = r["full"], r["reduced"], r["shifted"]
        saved = 1 - red["peak_bytes"] / full["peak_bytes"]
        lines.append(
            f"| {SHAPES[r['shape']]['label']} ({r['layers']} layers) | {r['seq']:,} "
            f"| {full['parameters']:,} | {red['parameters']:,} "
            f"| {_gib(full['activation_bytes'])} | {_gib(full['total_bytes'])} "
            f"| {_gib(red['total_bytes'])} | {_gib(full['peak_bytes'])} "
            f"| {_gib(red['peak_bytes'])} | {_gib(sh['peak_bytes'])} | {saved:.0%} "
            f"| {_gib(r['bf16_full']['peak_bytes'])} | {_gib(r['bf16_reduced']['peak_bytes'])} |"
        )
    return lines


def _doc_fused_and_environment(results: dict[str, Any]) -> list[str]:
    return [
        "",
        "Without gradient checkpointing the activations dominate at these lengths, and a "
        "reduction does not change them; with checkpointing (activations of about one layer "
        "at a time) the vocabulary's share of the peak is what `total_bytes` shows.",
        "",
        "## With fused linear cross-entropy (Liger, Cut Cross-Entropy)",
        "",
        "Liger Kernel's fused linear cross-entropy and Apple's Cut Cross-Entropy compute the "
        "loss from the hidden states and the head's weight in chunks, so the logits (and the "
        "log-softmax and the logits' gradient) are never held for the whole sequence: they "
        "remove the `logits_bytes` and `loss_bytes` terms. They leave the embedding and the "
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--measure", nargs=2, metavar=("SHAPE", "MODE"), help=argparse.SUPPRESS)
    parser.add_argument("--seq", type=int, default=1024, help="tokens of the measured step")
    parser.add_argument("--quick", action="store_true", help="seq 64, no doc written")
    parser.add_argument("--doc-only", action="store_true", help="rewrite the doc from the JSON")
    parser.add_argument("--shapes", help="comma-separated subset of gemma,llama,qwen")
    args = parser.parse_args()
    if args.baseline:
        print(json.dumps(measure_baseline()))
        return
    if args.measure:
        print(json.dumps(measure(args.measure[0], args.measure[1], args.seq)))
        return
    out_json = HERE / ("llm_memory.quick.json" if args.quick else "llm_memory.json")
    if args.doc_only:
        results = h.read_json(out_json)
    else:
        shapes = tuple(args.shapes.split(",")) if args.shapes else ()
        results = run(64 if args.quick else args.seq, out_json.with_suffix(".partial.json"), shapes)
        h.write_json(out_json, results, indent=2, newline=True)
    results = attach(results)
    h.write_json(out_json, results, indent=2, newline=True)
    if not args.quick:
        write_doc(results, ROOT / "docs" / "llm_memory.md")
        plot(results, ROOT / "docs" / "img" / "llm_memory.png")


if __name__ == "__main__":
    main()
