"""Quality of fine-tuning with a reduced vocabulary: softmax="reduced" | "full" | "shifted".

A tiny Llama-style causal LM (tied embeddings, 8,192-token byte-level BPE trained here) is
pretrained from scratch on general text (Python's ``pydoc_data.topics`` and the docstrings of
the standard library), then fine-tuned on a narrow domain (the docstrings of the e-mail and
internet-protocol modules: ``email.*``, ``http.*``, ``urllib.*``, ``smtplib``, ``imaplib``, ...,
held out of pretraining) four ways: full-vocabulary training, and reduced training with each
softmax mode. After revert, every model is measured with the full vocabulary on held-out domain
text and held-out general text, with the probability mass it puts on the ids the plan dropped.

Each fine-tuning run is a fresh process (``--run MODE SEED``) so that its peak RSS is its own.
Run: ``python benchmarks/softmax_quality.py [--seeds 3] [--out benchmarks/softmax_quality.json]``
(CPU, about 10-15 minutes on 2 cores). ``--plot docs/img/softmax_modes.png`` draws the figure.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import random
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _harness as h

h.setup(tokenizer_threads=True)

MODES = ("full-vocab", "reduced", "full", "shifted")
VOCAB = 8192
BLOCK = 64
BATCH = 8
PRETRAIN_STEPS = 300
PRETRAIN_LR = 3e-3
SFT_STEPS = 100
SIZES = {
    "hidden_size": 96,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}
"""The model's sizes (0.99M parameters with the 8,192-row tied embedding)."""
SFT_LR = 1e-3
DOMAIN_MODULES = [
    "email.message",
    "email.utils",
    "email.header",
    "email.parser",
    "email.feedparser",
    "email.generator",
    "email.policy",
    "email._policybase",
    "email.mime.text",
    "email.headerregistry",
    "email._header_value_parser",
    "email.charset",
    "email.contentmanager",
    "smtplib",
    "mailbox",
]
SKIP = {"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo"}


def _docs(name: str) -> list[str]:
    try:
        module = importlib.import_module(name)
    except Exception:
        return []
    out = [inspect.getdoc(module) or ""]
    for obj in list(vars(module).values()):
        if getattr(obj, "__module__", None) != name:
            continue
        out.append(inspect.getdoc(obj) or "")
        if inspect.isclass(obj):
            out.extend(inspect.getdoc(o) or "" for o in vars(obj).values() if callable(o))
    return [d for d in out if len(d) > 40]


def corpora() -> dict[str, list[str]]:
    """general_train, general_test, domain_train, domain_test: lists of documents."""
    import pydoc_data.topics

    domain_roots = {m.split(".")[0] for m in DOMAIN_MODULES}
    general = list(pydoc_data.topics.topics.values())
    for name in sorted(sys.stdlib_module_names):
        if name.startswith("_") or name in SKIP or name in domain_roots:
            continue
        general.extend(_docs(name))
    domain = [d for m in DOMAIN_MODULES for d in _docs(m)]
    out: dict[str, list[str]] = {}
    for key, docs in (("general", general), ("domain", domain)):
        docs = sorted(set(docs))
        random.Random(7).shuffle(docs)
        cut = len(docs) // (5 if key == "domain" else 10)
        out[f"{key}_test"], out[f"{key}_train"] = docs[:cut], docs[cut:]
    return out


def tokenizer(cache: Path, texts: list[str]) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    path = cache / "tokenizer.json"
    if not path.exists():
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=VOCAB,
            special_tokens=["<|endoftext|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
        tok.train_from_iterator(texts, trainer)
        tok.save(str(path))
    return PreTrainedTokenizerFast(tokenizer_file=str(path), eos_token="<|endoftext|>")


def blocks(tok: Any, docs: list[str], limit: int | None = None) -> Any:
    import torch

    eos = tok.eos_token_id
    stream: list[int] = []
    for ids in tok(docs, add_special_tokens=False)["input_ids"]:
        stream.extend([*ids, eos])
    n = len(stream) // BLOCK
    out = torch.tensor(stream[: n * BLOCK]).reshape(n, BLOCK)
    return out if limit is None else out[:limit]


def model_config(tok: Any) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tok),
        **SIZES,
        max_position_embeddings=BLOCK,
        tie_word_embeddings=True,
        bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
    )


def train(model: Any, data: Any, steps: int, lr: float, seed: int, warmup: int = 0) -> float:
    """AdamW on ``model(input_ids, labels=...)``; returns seconds."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0
    )
    model.train()
    start = time.perf_counter()
    for _ in range(steps):
        batch = data[torch.randint(len(data), (BATCH,), generator=generator)]
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - start
    model._bench_optimizer = optimizer  # revert needs the optimizer created while reduced
    return seconds


def batch_sums(logits: Any, target: Any, dropped: Any, kept: Any) -> tuple[float, ...]:
    """One batch's summed full-vocabulary loss, mass on dropped ids, loss over the kept ids
    only (at targets that are kept), and the two target counts."""
    import torch

    logp = logits.log_softmax(-1)
    total = -logp.gather(-1, target.unsqueeze(-1)).sum().item()
    mass = logp[..., dropped].exp().sum(-1).sum().item()
    inside = torch.isin(target, kept)
    sub = logits[..., kept].log_softmax(-1)
    where = torch.searchsorted(kept, target.clamp(max=int(kept.max())))
    picked = sub.gather(-1, where.unsqueeze(-1)).squeeze(-1)
    kept_total = -(picked * inside).sum().item()
    return total, mass, kept_total, target.numel(), int(inside.sum())


def averages(batches: list[tuple[float, ...]]) -> dict[str, float]:
    """Mean losses and dropped mass over the batches' ``batch_sums``."""
    total = kept_total = mass = 0.0
    count = count_kept = 0
    for t, m, k, n, n_kept in batches:
        total, mass, kept_total = total + t, mass + m, kept_total + k
        count, count_kept = count + n, count_kept + n_kept
    return {
        "loss": total / count,
        "loss_kept_vocab": kept_total / max(count_kept, 1),
        "dropped_mass": mass / count,
    }


def evaluate(model: Any, data: Any, dropped: Any, kept: Any) -> dict[str, float]:
    """Full-vocabulary loss, loss over the kept ids only, and the mass on dropped ids."""
    import torch

    model.eval()
    sums = []
    with torch.no_grad():
        for start in range(0, len(data), BATCH):
            batch = data[start : start + BATCH]
            logits = model(input_ids=batch).logits[:, :-1].float()
            sums.append(batch_sums(logits, batch[:, 1:], dropped, kept))
    return averages(sums)


def remapped(plan: Any, data: Any) -> Any:
    """A tensor of full ids as the plan's new ids, same shape."""
    import torch

    return torch.tensor(plan.remap(data.flatten().tolist())).reshape(data.shape)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def setup(cache: Path) -> tuple[Any, Any, dict[str, Any]]:
    """Tokenizer, pretrained model state, data blocks (cached in ``cache``)."""
    import torch
    from transformers import LlamaForCausalLM

    docs = corpora()
    tok = tokenizer(cache, docs["general_train"] + docs["domain_train"])
    data = {key: blocks(tok, value) for key, value in docs.items()}
    data["general_test"] = data["general_test"][:96]
    weights = cache / "pretrained.pt"
    if not weights.exists():
        torch.manual_seed(0)
        model = LlamaForCausalLM(model_config(tok))
        seconds = train(model, data["general_train"], PRETRAIN_STEPS, PRETRAIN_LR, 0, warmup=50)
        torch.save(model.state_dict(), weights)
        (cache / "pretrain.json").write_text(json.dumps({"seconds": seconds}))
    return tok, torch.load(weights), data


def run(mode: str, seed: int, cache: Path, normaliser: str = "exact") -> dict[str, Any]:
    """One fine-tuning run in this process; the measurements after revert.

    ``normaliser``: as in ``apply_plan`` (``softmax_speed.py --quality`` varies it).
    """
    import torch
    from transformers import LlamaForCausalLM

    from vocab_adapters import apply_plan, plan_from_texts, revert_plan

    torch.set_num_threads(1)  # measured: 2 threads on a shared 2-core machine is 10x slower
    tok, state, data = setup(cache)
    model = LlamaForCausalLM(model_config(tok))
    model.load_state_dict(state)
    docs = corpora()
    plan = plan_from_texts(tok, docs["domain_train"])
    kept = torch.tensor(plan.kept)
    dropped = torch.tensor(sorted(set(range(len(tok))) - set(plan.kept)))
    result: dict[str, Any] = {"mode": mode, "seed": seed, "kept": plan.new_size, "rows": len(tok)}
    if mode == "pretrained":
        result["train_seconds"] = 0.0
    else:
        train_data = data["domain_train"]
        applied = None
        if mode != "full-vocab":
            applied = apply_plan(plan, model=model, softmax=mode, normaliser=normaliser)
            train_data = remapped(plan, train_data)
        rss_before = peak_rss_mb()
        result["train_seconds"] = train(model, train_data, SFT_STEPS, SFT_LR, seed)
        result["peak_rss_mb"] = peak_rss_mb()
        result["rss_before_train_mb"] = rss_before
        if applied is not None:
            revert_plan(applied, optimizer=model._bench_optimizer)
    for key in ("domain_test", "general_test"):
        result[key] = evaluate(model, data[key], dropped, kept)
    return result


def plot(results: dict[str, Any], path: Path) -> None:
    plt = h.pyplot()
    runs = results["runs"]
    modes = ["pretrained", *MODES]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    panels = (
        ("domain_test", "loss", "held-out domain loss\n(full vocabulary, after revert)"),
        ("general_test", "loss", "held-out general loss\n(full vocabulary, after revert)"),
        ("domain_test", "dropped_mass", "probability mass on dropped ids\n(held-out domain)"),
    )
    for ax, (split, key, title) in zip(axes, panels, strict=True):
        for i, mode in enumerate(modes):
            values = [r[split][key] for r in runs if r["mode"] == mode]
            ax.bar(i, sum(values) / len(values), color=f"C{i}")
            ax.scatter([i] * len(values), values, color="black", s=8, zorder=3)
        ax.set_xticks(range(len(modes)), modes, rotation=30)
        ax.set_title(title, fontsize=10)
    h.save_figure(fig, path, dpi=120)


def table(results: dict[str, Any]) -> str:
    """The markdown table of docs/softmax_modes.md: mean over seeds (per-seed values)."""
    runs = results["runs"]

    def cell(values: list[float], fmt: str = "{:.3f}") -> str:
        mean = sum(values) / len(values)
        if len(values) == 1:
            return fmt.format(mean)
        return fmt.format(mean) + " (" + " / ".join(fmt.format(v) for v in values) + ")"

    base = [r["domain_test"]["loss"] for r in runs if r["mode"] == "full-vocab"]
    base_mean = sum(base) / len(base) if base else float("nan")
    lines = [
        "| fine-tuning | domain loss | vs full-vocab | general loss | domain loss, kept ids "
        "only | mass on dropped ids | train s | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode in ("pretrained", *MODES):
        rs = [r for r in runs if r["mode"] == mode]
        if not rs:
            continue
        domain = [r["domain_test"]["loss"] for r in rs]
        ratio = (sum(domain) / len(domain)) / base_mean
        train_s = [r["train_seconds"] for r in rs]
        rss = [r.get("peak_rss_mb", float("nan")) for r in rs]
        lines.append(
            f"| {mode} | {cell(domain)} | {ratio:.3f}x | "
            f"{cell([r['general_test']['loss'] for r in rs])} | "
            f"{cell([r['domain_test']['loss_kept_vocab'] for r in rs])} | "
            f"{cell([r['domain_test']['dropped_mass'] for r in rs], '{:.2f}')} | "
            f"{'-' if mode == 'pretrained' else cell(train_s, '{:.0f}')} | "
            f"{'-' if mode == 'pretrained' else cell(rss, '{:.0f}')} |"
        )
    return "\n".join(lines)


def arguments(
    doc: str, out: str, cache: str, *extra: Callable[[argparse.ArgumentParser], Any]
) -> Any:
    """The command line both softmax benchmarks take (``extra`` adds arguments)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default=out)
    parser.add_argument("--cache", default=os.path.expanduser(cache))
    parser.add_argument("--plot", default=None)
    parser.add_argument("--run", nargs=2, metavar=("MODE", "SEED"))
    parser.add_argument("--table", action="store_true", help="print the table of --out")
    for add in extra:
        add(parser)
    return parser.parse_args()


def run_all(
    script: str,
    args: Any,
    cache: Path,
    write: Callable[[str, Path, list[dict[str, Any]]], None],
    extra: tuple[str, ...] = (),
) -> None:
    """The pretrained model once, then every mode per seed, each run in a fresh process."""
    runs: list[dict[str, Any]] = []
    jobs = [("pretrained", 0)] + [(m, s) for s in range(1, args.seeds + 1) for m in MODES]
    for mode, seed in jobs:
        command = [script, "--run", mode, str(seed), "--cache", str(cache), *extra]
        runs.append(h.child_json(command, what=f"{mode} {seed}"))
        print(json.dumps(runs[-1]), flush=True)
        write(args.out, cache, runs)
    if args.plot:
        plot(h.read_json(args.out), Path(args.plot))


def dispatch(
    script: str,
    args: Any,
    one_run: Callable[[str, int, Path], dict[str, Any]],
    write: Callable[[str, Path, list[dict[str, Any]]], None],
    extra: tuple[str, ...] = (),
    replot: bool = False,
) -> None:
    """Do what the command line asks: one run (``--run``), the table, or every run."""
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    if args.run:
        print(json.dumps(one_run(args.run[0], int(args.run[1]), cache)))
        return
    if args.table:
        print(table(h.read_json(args.out)))
        return
    if replot and args.plot and Path(args.out).exists() and args.seeds == 0:
        plot(h.read_json(args.out), Path(args.plot))
        return
    run_all(script, args, cache, write, extra)


def main() -> None:
    args = arguments(__doc__, "benchmarks/softmax_quality.json", "~/.cache/vocabcore-softmax")
    dispatch(__file__, args, run, write, replot=True)


def write(out: str, cache: Path, runs: list[dict[str, Any]]) -> None:
    pretrain = h.read_json(cache / "pretrain.json")
    settings = {
        "vocab": VOCAB,
        "block": BLOCK,
        "batch": BATCH,
        "pretrain_steps": PRETRAIN_STEPS,
        "pretrain_seconds": pretrain["seconds"],
        "sft_steps": SFT_STEPS,
        "sft_lr": SFT_LR,
        "threads": 1,
    }
    h.write_json(out, {"settings": settings, "runs": runs})


if __name__ == "__main__":
    main()
