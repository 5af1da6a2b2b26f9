"""Deployment sizes and times, full vs trimmed: GGUF for llama.cpp, ONNX for ONNX Runtime.

Three decoders with their real shapes and random weights (seed 0, float16), written as GGUF
f16 by ``export_reduced(..., format="gguf")``, once with the identity plan (the full
vocabulary) and once trimmed by a domain plan of at most 16,384 tokens:

* ``qwen``: Qwen2.5-0.5B-like (151,936 rows x 896, 24 layers), Qwen2's byte-level BPE;
* ``llama``: Llama-3.2-1B-like (128,256 x 2048, 16 layers, llama3 rope), Llama 3's BPE;
* ``gemma``: Gemma-3-1B-like (262,144 x 1152, 26 layers), byte-fallback BPE.

Each tokenizer is trained locally (``tokenizers``' BPE trainer, the family's pre-tokenizer, on
the benchmark tokenizer corpus, 24,000 tokens) and filled up to the real size with tokens no
text produces, specials where the family has them; the plan is ``plan_from_texts`` on the
CoNLL-like training set with ``max_size=16384``. Coverage is the share of held-out texts
(training-set sentences the plan never saw, and Python help text) that encode identically
after trimming (``coverage``). Where ``llama_cpp`` is importable, each file is loaded by
llama.cpp (2 threads, 256-token context) and timed: load (page cache warm: the file is read
once before; ``use_mmap=False``, so loading reads the whole file and the first token pays no
page faults), prefill of a 32-token prompt plus the first generated token, and 16 more tokens,
best of 3 rounds in which the full and the trimmed file take turns.

MiniLM: the bundled all-MiniLM-L6-v2 sentence-transformer exported with
``format="onnx"``, full vs trimmed by a plan of the training set: ``model.onnx`` size, ONNX
Runtime session load, and one 16-sentence batch.

Run: ``python benchmarks/deploy.py`` (about 15 minutes on 2 busy cores, peak about 8 GiB);
``--quick`` shrinks the models to 2 layers. Writes ``benchmarks/deploy.json``; the table in
``docs/deploy.md`` is written from it.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "src"))

BPE_SIZE = 24_000
MAX_SIZE = 16_384
LLAMA3 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2 = LLAMA3.replace(r"\p{N}{1,3}", r"\p{N}")

SHAPES: dict[str, dict[str, Any]] = {
    "qwen": {
        "label": "Qwen2.5-0.5B-like",
        "config": "Qwen2Config",
        "model": "Qwen2ForCausalLM",
        "tokenizer": "qwen2",
        "specials": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        + [f"<|extra_{i}|>" for i in range(19)],
        "tokens": 151_665,
        "kwargs": {
            "vocab_size": 151_936,
            "hidden_size": 896,
            "intermediate_size": 4864,
            "num_hidden_layers": 24,
            "num_attention_heads": 14,
            "num_key_value_heads": 2,
            "max_position_embeddings": 32_768,
            "rope_theta": 1_000_000.0,
            "rms_norm_eps": 1e-6,
            "tie_word_embeddings": True,
        },
    },
    "llama": {
        "label": "Llama-3.2-1B-like",
        "config": "LlamaConfig",
        "model": "LlamaForCausalLM",
        "tokenizer": "llama3",
        "specials": ["<|begin_of_text|>", "<|end_of_text|>"]
        + [f"<|reserved_special_token_{i}|>" for i in range(254)],
        "tokens": 128_256,
        "kwargs": {
            "vocab_size": 128_256,
            "hidden_size": 2048,
            "intermediate_size": 8192,
            "num_hidden_layers": 16,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "head_dim": 64,
            "max_position_embeddings": 131_072,
            "rope_theta": 500_000.0,
            "rope_scaling": {
                "rope_type": "llama3",
                "factor": 32.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192,
            },
            "rms_norm_eps": 1e-5,
            "tie_word_embeddings": True,
        },
    },
    "gemma": {
        "label": "Gemma-3-1B-like",
        "config": "Gemma3TextConfig",
        "model": "Gemma3ForCausalLM",
        "tokenizer": "gemma",
        "specials": ["<pad>", "<eos>", "<bos>", "<unk>"],
        "tokens": 262_144,
        "kwargs": {
            "vocab_size": 262_144,
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
            "tie_word_embeddings": True,
        },
    },
}


# ---------------------------------------------------------------- tokenizers


def cache() -> Path:
    from _tokenizers import cache_dir

    path = cache_dir() / "deploy"
    path.mkdir(parents=True, exist_ok=True)
    return path


def tokenizer(shape: str) -> Any:
    """The shape's tokenizer at its real size (trained part cached), as transformers wraps it."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    spec = SHAPES[shape]
    kind = spec["tokenizer"]
    path = cache() / f"{kind}-{BPE_SIZE}.json"
    if path.is_file():
        tok = Tokenizer.from_file(str(path))
    else:
        import _corpus

        if kind == "gemma":
            tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
            tok.normalizer = normalizers.Replace(" ", "▁")
            tok.decoder = decoders.Sequence(
                [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
            )
            pieces = [f"<0x{b:02X}>" for b in range(256)]
            trainer = trainers.BpeTrainer(
                vocab_size=BPE_SIZE,
                special_tokens=[*spec["specials"], *pieces],
                limit_alphabet=1000,
                show_progress=False,
            )
        else:
            tok = Tokenizer(models.BPE(ignore_merges=kind == "llama3"))
            pattern = LLAMA3 if kind == "llama3" else QWEN2
            tok.pre_tokenizer = pre_tokenizers.Sequence(
                [
                    pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
                ]
            )
            tok.decoder = decoders.ByteLevel()
            trainer = trainers.BpeTrainer(
                vocab_size=BPE_SIZE,
                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                show_progress=False,
            )
        tok.train_from_iterator(_corpus.tokenizer_corpus(), trainer)
        tok.save(str(path))
    # fill up to the real size with tokens no text produces, then the specials after them
    state = json.loads(tok.to_str())
    vocab = state["model"]["vocab"]
    tail = [] if kind == "gemma" else spec["specials"]
    filler = "▁" if kind == "gemma" else "Ġ"
    for i in range(len(vocab), spec["tokens"] - len(tail)):
        vocab[f"{filler}unused{i}"] = i
    tok = Tokenizer.from_str(json.dumps(state))
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in tail])
    options: dict[str, Any] = {}
    if kind == "llama3":
        bos = tok.token_to_id("<|begin_of_text|>")
        tok.post_processor = processors.TemplateProcessing(
            single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", bos)]
        )
        options = {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"}
    elif kind == "qwen2":
        options = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
    else:
        tok.post_processor = processors.TemplateProcessing(
            single="<bos> $A", special_tokens=[("<bos>", tok.token_to_id("<bos>"))]
        )
        options = {"bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>"}
        options["pad_token"] = "<pad>"
    assert tok.get_vocab_size() == spec["tokens"], (shape, tok.get_vocab_size())
    return PreTrainedTokenizerFast(tokenizer_object=tok, **options)


def texts() -> tuple[list[str], list[str], list[str]]:
    """(training texts for the plan, unseen sentences of the same domain, Python help text)."""
    import _corpus

    sentences = [" ".join(s) for s in _corpus.training_set()]
    help_text = [p for t in _corpus.pydoc_texts() for p in t.split("\n\n") if len(p) > 40]
    return sentences[:12_000], sentences[12_000:], help_text[:2000]


# ---------------------------------------------------------------- models


def model(shape: str, layers: int | None) -> Any:
    """The shape with random float16 weights (seed 0), built without a float32 copy."""
    import torch
    import transformers

    spec = SHAPES[shape]
    kwargs = dict(spec["kwargs"])
    if layers is not None:
        kwargs["num_hidden_layers"] = layers
    config = getattr(transformers, spec["config"])(**kwargs)
    with torch.device("meta"):
        built = getattr(transformers, spec["model"])(config)
    built = built.to_empty(device="cpu").to(torch.float16)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in built.parameters():
            if parameter.ndim == 1:
                parameter.fill_(0.0 if shape == "gemma" else 1.0)
            else:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)
        # rotary tables stay as to_empty left them: GGUF export skips them (llama.cpp
        # computes its own) and nothing here runs the PyTorch model
    built.tie_weights()
    return built.eval()


def llama_cpp_once(path: Path, prompt: list[int]) -> dict[str, float]:
    """Load, prefill + first token, 16 more tokens (greedy), timed once."""
    import llama_cpp

    start = time.perf_counter()
    llm = llama_cpp.Llama(
        model_path=str(path), n_ctx=256, n_threads=2, verbose=False, use_mmap=False
    )
    loaded = time.perf_counter()
    llm.eval(prompt)
    token = llm.sample(temp=0.0, top_k=1)
    prefill = time.perf_counter()
    for _ in range(16):
        llm.eval([token])
        token = llm.sample(temp=0.0, top_k=1)
    decoded = time.perf_counter()
    del llm
    gc.collect()
    return {
        "load_s": loaded - start,
        "first_token_s": prefill - loaded,
        "decode_16_s": decoded - prefill,
    }


def llama_cpp_times(runs: dict[str, tuple[Path, list[int]]], rounds: int = 3) -> dict[str, Any]:
    """Best of ``rounds`` per file, the files taking turns (so load on the shared cores hits
    both alike); empty without ``llama_cpp``."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return {}
    for path, _ in runs.values():
        path.read_bytes()  # warm the page cache: load time without the disk
    best: dict[str, Any] = {}
    for _ in range(rounds):
        for name, (path, prompt) in runs.items():
            for key, value in llama_cpp_once(path, prompt).items():
                best[f"{name}_{key}"] = min(best.get(f"{name}_{key}", value), value)
    return best


def coverage_of(plan: Any, tok: Any, domain: list[str], other: list[str]) -> dict[str, Any]:
    """Share of held-out texts that encode identically after trimming, in and out of domain."""
    from vocab_adapters import coverage

    return {
        "identical_domain": coverage(plan, tok, domain).identical_fraction,
        "identical_other": coverage(plan, tok, other).identical_fraction,
        "held_out_domain": len(domain),
        "held_out_other": len(other),
    }


def run_shape(shape: str, layers: int | None, out_dir: Path) -> dict[str, Any]:
    from vocab_adapters import export_reduced, plan_from_texts
    from vocabcore import VocabPlan

    tok = tokenizer(shape)
    train, domain, other = texts()
    plan = plan_from_texts(tok, train, max_size=MAX_SIZE, progress=False)
    built = model(shape, layers)
    rows = built.get_input_embeddings().weight.shape[0]
    identity = VocabPlan.identity(len(tok))
    result: dict[str, Any] = {
        "label": SHAPES[shape]["label"],
        "layers": built.config.num_hidden_layers,
        "rows_full": rows,
        "rows_trimmed": plan.new_size,
        "parameters_full": sum(p.numel() for p in built.parameters()),
        **coverage_of(plan, tok, domain, other),
    }
    prompt = tok(" ".join(train[:3]))["input_ids"][:32]
    runs: dict[str, tuple[Path, list[int]]] = {}
    for name, chosen in (("full", identity), ("trimmed", plan)):
        start = time.perf_counter()
        path = export_reduced(built, tok, chosen, out_dir / f"{shape}-{name}.gguf", format="gguf")
        result[f"{name}_write_s"] = time.perf_counter() - start
        result[f"{name}_bytes"] = path.stat().st_size
        runs[name] = (path, prompt if name == "full" else plan.remap(prompt))
    del built
    gc.collect()
    result.update(llama_cpp_times(runs))
    for path, _ in runs.values():
        path.unlink()
    return result


def run_minilm(out_dir: Path) -> dict[str, Any]:
    import numpy as np
    import onnxruntime as ort
    from _tokenizers import minilm_dir
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer

    from vocab_adapters import export_reduced, plan_from_texts
    from vocabcore import VocabPlan

    st_model = SentenceTransformer(str(minilm_dir()), device="cpu")
    train, domain, other = texts()
    plan = plan_from_texts(st_model.tokenizer, train, progress=False)
    result: dict[str, Any] = {
        "label": "all-MiniLM-L6-v2 (ONNX, f32)",
        "rows_full": len(st_model.tokenizer),
        "rows_trimmed": plan.new_size,
        **coverage_of(plan, st_model.tokenizer, domain, other),
    }
    batch = domain[:16]
    for name, chosen in (("full", VocabPlan.identity(len(st_model.tokenizer))), ("trimmed", plan)):
        directory = export_reduced(
            st_model, None, chosen, out_dir / f"minilm-{name}", format="onnx"
        )
        onnx_file = directory / "model.onnx"
        result[f"{name}_bytes"] = onnx_file.stat().st_size
        onnx_file.read_bytes()
        tok = Tokenizer.from_file(str(directory / "tokenizer.json"))
        tok.enable_padding()
        encodings = tok.encode_batch(batch)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        for _ in range(3):  # best of 3
            start = time.perf_counter()
            options = ort.SessionOptions()
            options.intra_op_num_threads = 2
            session = ort.InferenceSession(str(onnx_file), options)
            loaded = time.perf_counter()
            session.run(None, {"input_ids": ids, "attention_mask": mask})
            done = time.perf_counter()
            for key, value in (("load_s", loaded - start), ("first_batch_s", done - loaded)):
                result[f"{name}_{key}"] = min(result.get(f"{name}_{key}", value), value)
            del session
    return result


START, END = "<!-- deploy-table:start -->", "<!-- deploy-table:end -->"


def _mb(n: float | None) -> str:
    return "n/a" if n is None else f"{n / 1e6:,.1f} MB"


def _s(n: float | None) -> str:
    return "n/a" if n is None else (f"{n * 1000:,.0f} ms" if n < 10 else f"{n:,.1f} s")


def _macs(key: str, r: dict[str, Any], name: str) -> str:
    """Weight multiply-adds per generated token: every matrix once, the tied output
    projection at its (full or trimmed) row count; the embedding lookup costs none."""
    if key not in SHAPES:
        return "n/a"
    hidden = SHAPES[key]["kwargs"]["hidden_size"]
    macs = r["parameters_full"] - (r["rows_full"] - r[f"rows_{name}"]) * hidden
    return f"{macs / 1e6:,.0f} M"


def table(results: dict[str, Any]) -> str:
    """The markdown table of ``docs/deploy.md`` from ``deploy.json``."""
    rows = [
        "| model | file | vocabulary rows | size | weight MACs / token | load "
        "| first token (32-token prompt) | 16 more tokens | held-out identical (domain / other) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, r in results["shapes"].items():
        kind = "ONNX f32" if key == "minilm" else "GGUF f16"
        first = "first_batch_s" if key == "minilm" else "first_token_s"
        for name in ("full", "trimmed"):
            identical = (
                "100 %"
                if name == "full"
                else (f"{r['identical_domain']:.1%} / {r['identical_other']:.1%}")
            )
            rows.append(
                f"| {r['label']} | {kind} {name} | {r[f'rows_{name}']:,} "
                f"| {_mb(r.get(f'{name}_bytes'))} | {_macs(key, r, name)} "
                f"| {_s(r.get(f'{name}_load_s'))} "
                f"| {_s(r.get(f'{name}_{first}'))} | {_s(r.get(f'{name}_decode_16_s'))} "
                f"| {identical} |"
            )
    v = results["versions"]
    rows.append("")
    rows.append(
        f"Measured with torch {v['torch']}, transformers {v['transformers']}, gguf {v['gguf']}, "
        f"onnxruntime {v['onnxruntime']}, llama-cpp-python {v['llama_cpp_python']} on "
        f"{v['cpu_count']} CPU cores"
        + (" (`--quick`: 2 decoder layers)" if results.get("quick") else "")
        + ". For MiniLM the first-token column is one 16-sentence batch."
    )
    return "\n".join(rows)


def write_doc(results: dict[str, Any], doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(f"{head}{START}\n{table(results)}\n{END}{tail}", encoding="utf-8")


def versions() -> dict[str, str]:
    import importlib.metadata as metadata

    found = {"python": platform.python_version()}
    for package in (
        "torch",
        "transformers",
        "tokenizers",
        "gguf",
        "onnxruntime",
        "llama_cpp_python",
    ):
        try:
            found[package] = metadata.version(package.replace("_", "-"))
        except metadata.PackageNotFoundError:
            found[package] = "absent"
    found["cpu_count"] = str(os.cpu_count())
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 decoder layers")
    parser.add_argument("--shapes", nargs="*", default=list(SHAPES))
    parser.add_argument("--no-minilm", action="store_true")
    parser.add_argument("-o", "--output", default=str(HERE / "deploy.json"))
    parser.add_argument("--doc-only", action="store_true", help="rewrite docs/deploy.md's table")
    args = parser.parse_args()
    doc = ROOT / "docs" / "deploy.md"
    if args.doc_only:
        write_doc(json.loads(Path(args.output).read_text()), doc)
        return
    layers = 2 if args.quick else None
    results: dict[str, Any] = {"versions": versions(), "quick": args.quick, "shapes": {}}
    output = Path(args.output)
    if output.is_file():
        previous = json.loads(output.read_text())
        if previous.get("quick") == args.quick:
            results["shapes"] = previous.get("shapes", {})
    with tempfile.TemporaryDirectory() as tmp:
        for shape in args.shapes:
            print(f"{shape} ...", flush=True)
            results["shapes"][shape] = run_shape(shape, layers, Path(tmp))
            print(json.dumps(results["shapes"][shape], indent=1), flush=True)
            output.write_text(json.dumps(results, indent=1) + "\n")
        if not args.no_minilm:
            results["shapes"]["minilm"] = run_minilm(Path(tmp))
            print(json.dumps(results["shapes"]["minilm"], indent=1), flush=True)
    output.write_text(json.dumps(results, indent=1) + "\n")
    if not args.quick and output == HERE / "deploy.json":
        write_doc(results, doc)


if __name__ == "__main__":
    main()
