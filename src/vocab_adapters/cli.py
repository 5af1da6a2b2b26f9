"""The ``vocabcore`` command: plan, suggest, stats, export, draft, demo."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from vocabcore import VocabError, VocabPlan, __version__

__all__ = ["main", "load_model", "load_tokenizer", "parameter_stats"]


def _fail(message: str) -> None:
    raise VocabError(message)


def load_tokenizer(directory: str | Path) -> Any:
    """Load a tokenizer from a local directory (fast where one exists)."""
    path = Path(directory)
    if not path.is_dir():
        _fail(f"tokenizer directory {str(path)!r} does not exist; pass a saved tokenizer's folder")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise VocabError(f"cannot load a tokenizer from {str(path)!r}: {first}") from None


def load_model(directory: str | Path) -> Any:
    """Load a model from a local directory with the class its config names (LM heads kept)."""
    path = Path(directory)
    if not (path / "config.json").is_file():
        _fail(f"model directory {str(path)!r} has no config.json; pass a saved model's folder")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    try:
        config = transformers.AutoConfig.from_pretrained(str(path))
        names = list(getattr(config, "architectures", None) or [])
        cls = next((getattr(transformers, n) for n in names if hasattr(transformers, n)), None)
        loader = cls if cls is not None else transformers.AutoModel
        return loader.from_pretrained(str(path))
    except (OSError, ValueError, TypeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise VocabError(f"cannot load a model from {str(path)!r}: {first}") from None


def _unique_parameter_count(model: Any) -> int:
    seen: set[int] = set()
    total = 0
    for parameter in model.parameters():
        if id(parameter) not in seen:
            seen.add(id(parameter))
            total += int(parameter.numel())
    return total


def parameter_stats(model: Any, plan: VocabPlan) -> dict[str, Any]:
    """Parameters before and after ``plan`` (tied heads counted once), and Adam bytes saved."""
    from vocab_adapters.session import apply_plan, revert_plan

    before = _unique_parameter_count(model)
    applied = apply_plan(plan, model=model)
    try:
        after = _unique_parameter_count(model)
    finally:
        revert_plan(applied)
    removed = before - after
    return {
        "params_before": before,
        "params_after": after,
        "params_removed_fraction": removed / before if before else 0.0,
        # Adam/AdamW keep exp_avg and exp_avg_sq per parameter: 2 x 4 bytes in fp32.
        "adam_state_bytes_saved": 8 * removed,
    }


def _cmd_plan(args: argparse.Namespace) -> int:
    from vocab_adapters.planning.text_files import iter_texts
    from vocab_adapters.planning.texts import plan_from_texts

    if args.add_min_count is not None and args.add_tokens is None:
        _fail("--add-min-count needs --add-tokens N (it filters the suggested tokens)")
    tokenizer = load_tokenizer(args.tokenizer)
    texts: Any = iter_texts(args.texts, args.column or ())
    keep: list[int | str] = list(args.keep or [])
    add_tokens: list[str] | None = list(args.add_token) if args.add_token else None
    if args.add_tokens is not None:  # suggestions: the texts are read twice
        from vocab_adapters.planning.suggest import suggest_tokens

        texts = list(texts)
        min_count = 5 if args.add_min_count is None else args.add_min_count
        add_tokens = suggest_tokens(tokenizer, texts, args.add_tokens, min_count)
    plan = plan_from_texts(
        tokenizer,
        texts,
        min_count=args.min_count,
        keep=keep,
        progress=None if not args.quiet else False,
        max_size=args.max_size,
        add_tokens=add_tokens,
    )
    plan = plan.with_metadata(corpus=str(Path(args.texts).name))
    plan.save(args.output)
    added = f", added {len(plan.added):,} tokens" if plan.added else ""
    print(
        f"kept {len(plan.kept):,} of {plan.vocab_size:,} tokens "
        f"({plan.removed_fraction:.1%} of the vocabulary removed){added} -> {args.output}"
    )
    return 0


def _cmd_suggest(args: argparse.Namespace) -> int:
    from vocab_adapters.planning.suggest import suggest_tokens
    from vocab_adapters.planning.text_files import iter_texts

    tokenizer = load_tokenizer(args.tokenizer)
    texts = iter_texts(args.texts, args.column or ())
    tokens = suggest_tokens(tokenizer, texts, args.n, args.min_count)
    if args.json:
        print(json.dumps(tokens, ensure_ascii=False))
    else:
        for token in tokens:
            print(token)
    return 0


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:,.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def _memory_stats(args: argparse.Namespace, plan: VocabPlan) -> tuple[dict[str, Any], Any]:
    from vocab_adapters.reports.memory import memory_estimate

    est = memory_estimate(
        args.model,
        plan,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        optimizer=args.optimizer,
    )
    full, reduced = est.full, est.reduced
    assert reduced is not None  # a plan was given
    removed = full.parameters - reduced.parameters
    stats = {
        "params_before": full.parameters,
        "params_after": reduced.parameters,
        "params_removed_fraction": removed / full.parameters if full.parameters else 0.0,
        # Adam/AdamW keep exp_avg and exp_avg_sq per parameter: 2 x 4 bytes in fp32.
        "adam_state_bytes_saved": 8 * removed,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "optimizer": args.optimizer,
        "logits_bytes_before": full.logits_bytes,
        "logits_bytes_after": reduced.logits_bytes,
        "train_bytes_before": full.total_bytes,
        "train_bytes_after": reduced.total_bytes,
        "loss_bytes_before": full.loss_bytes,
        "loss_bytes_after": reduced.loss_bytes,
        "activation_bytes_before": full.activation_bytes,
        "activation_bytes_after": reduced.activation_bytes,
        "peak_bytes_before": full.peak_bytes,
        "peak_bytes_after": reduced.peak_bytes,
        "held_bytes_after": reduced.held_bytes,
    }
    return stats, est


def _memory_table(est: Any) -> list[str]:
    rows = [
        ("parameters", "parameter_bytes"),
        ("gradients", "gradient_bytes"),
        ("optimizer state", "optimizer_state_bytes"),
        ("logits (fp32)", "logits_bytes"),
        ("held for revert", "held_bytes"),
        ("total", "total_bytes"),
        ("loss workspace", "loss_bytes"),
        ("activations", "activation_bytes"),
        ("peak of a step", "peak_bytes"),
    ]
    lines = [
        f"memory per step, batch {est.batch_size} x seq {est.seq_len}, {est.optimizer}:",
        f"  {'':<16}{'full':>13}{'reduced':>13}{'saved':>13}",
    ]
    for label, name in rows:
        before, after = getattr(est.full, name), getattr(est.reduced, name)
        if before is None or after is None:
            lines.append(f"  {label:<16}{'unknown':>13}{'unknown':>13}{'':>13}")
            continue
        lines.append(
            f"  {label:<16}{_human_bytes(before):>13}{_human_bytes(after):>13}"
            f"{_human_bytes(before - after):>13}"
        )
    return lines


def _cmd_stats(args: argparse.Namespace) -> int:
    memory_flags = [
        flag
        for flag, value in (
            ("--batch-size", args.batch_size),
            ("--seq-len", args.seq_len),
            ("--optimizer", args.optimizer),
        )
        if value is not None
    ]
    if memory_flags and not args.model:
        verb = "needs" if len(memory_flags) == 1 else "need"
        _fail(f"{', '.join(memory_flags)} {verb} --model DIR (the model to estimate)")
    args.batch_size = 1 if args.batch_size is None else args.batch_size
    args.seq_len = 512 if args.seq_len is None else args.seq_len
    args.optimizer = args.optimizer or "adamw"
    plan = VocabPlan.load(args.plan)
    stats: dict[str, Any] = {
        "vocab_size": plan.vocab_size,
        "new_size": plan.new_size,
        "removed_fraction": plan.removed_fraction,
    }
    est = None
    if args.model:
        memory, est = _memory_stats(args, plan)
        stats.update(memory)
    report = _coverage_stats(args, plan)
    if report is not None:
        stats["coverage"] = report.to_dict()
    if args.json:
        print(json.dumps(stats, indent=2, sort_keys=True))
        return 0
    print(f"kept tokens:          {len(plan.kept):,} of {plan.vocab_size:,}")
    if plan.added:
        print(f"added tokens:         {len(plan.added):,}")
    print(f"vocabulary removed:   {plan.removed_fraction:.1%}")
    if args.model:
        print(f"parameters before:    {stats['params_before']:,}")
        print(f"parameters after:     {stats['params_after']:,}")
        print(f"parameters removed:   {stats['params_removed_fraction']:.1%}")
        print(f"Adam state saved:     {_human_bytes(stats['adam_state_bytes_saved'])} (fp32)")
        print("\n".join(_memory_table(est)))
    if report is not None:
        _print_coverage(report, args.plot)
    return 0


def _add_coverage_arguments(stats: argparse.ArgumentParser) -> None:
    stats.add_argument("--tokenizer", help="tokenizer directory, for the coverage report")
    stats.add_argument("--texts", help="texts to measure coverage on (.txt, .jsonl, ...)")
    stats.add_argument("--column", action="append", help="text column of --texts")
    stats.add_argument("--plot", help="draw kept size against coverage into this PNG")


def _coverage_stats(args: argparse.Namespace, plan: VocabPlan) -> Any:
    """The coverage report of ``plan`` on ``--texts`` (and the ``--plot``), or ``None``."""
    if args.texts is None and args.tokenizer is None and args.plot is None:
        return None
    if args.texts is None or args.tokenizer is None:
        _fail("coverage needs both --tokenizer DIR and --texts FILE (and --plot needs them too)")
    if args.plot is not None:
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            _fail("--plot needs matplotlib: pip install 'vocabcore[plot]'")
    from vocab_adapters.planning.text_files import iter_texts
    from vocab_adapters.reports.coverage_report import coverage, coverage_curve, plot_coverage

    tokenizer = load_tokenizer(args.tokenizer)
    texts = list(iter_texts(args.texts, args.column or ()))
    if texts and not isinstance(texts[0], str):
        _fail("coverage needs one text column (got pairs); pass a single --column")
    report = coverage(plan, tokenizer, texts)
    if args.plot is not None:
        curve = coverage_curve(tokenizer, texts, extra_sizes=[plan.new_size], prefer=plan)
        title = f"{Path(args.texts).name}: {len(texts):,} texts"
        plot_coverage(curve, args.plot, chosen=(plan.new_size, report), title=title)
    return report


def _print_coverage(report: Any, plot: str | None) -> None:
    print(f"texts:                {report.texts:,}")
    print(f"identical encoding:   {report.identical_fraction:.1%} of texts")
    print(f"unk tokens:           {report.unk_fraction:.2%} of reduced tokens")
    print(
        f"tokens growth:        {report.tokens_growth:+.1%} "
        f"({report.tokens_full:,} -> {report.tokens_reduced:,})"
    )
    if plot is not None:
        print(f"plot:                 {plot}")


def _cmd_export(args: argparse.Namespace) -> int:
    from vocab_adapters.export import export_reduced

    plan = VocabPlan.load(args.plan)
    from vocab_adapters.integrations import sentence_transformer

    what = {"hf": "a model", "gguf": "a GGUF model", "onnx": "an ONNX model"}[args.format]
    if sentence_transformer.is_sentence_transformer_dir(args.model):
        st_model = sentence_transformer.load(args.model)
        out = export_reduced(
            st_model, None, plan, args.output, format=args.format, overwrite=args.overwrite
        )
        print(f"wrote {what} (sentence-transformers) reduced to {plan.new_size:,} tokens to {out}")
        return 0
    model = load_model(args.model)
    tokenizer = load_tokenizer(args.tokenizer or args.model)
    out = export_reduced(
        model, tokenizer, plan, args.output, format=args.format, overwrite=args.overwrite
    )
    print(f"wrote {what} reduced to {plan.new_size:,} tokens to {out}")
    return 0


def _cmd_draft(args: argparse.Namespace) -> int:
    from vocab_adapters.deploy.draft_vocab import draft_vocab

    plan = VocabPlan.load(args.plan)
    out = draft_vocab(
        plan,
        args.output,
        format=args.format,
        target_vocab_size=args.target_vocab_size,
        overwrite=args.overwrite,
    )
    print(f"wrote a {args.format} draft vocabulary of {len(plan.kept):,} tokens to {out}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from vocab_adapters.demo import run_demo

    return run_demo(steps=args.steps, out_dir=args.output, quick=args.quick)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer (got {text!r})")
    return value


class _OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        first = " ".join(message.split())
        self.exit(2, f"{self.prog}: error: {first} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="vocabcore",
        description="Shrink a transformer's vocabulary for training and restore it afterwards.",
    )
    parser.add_argument("--version", action="version", version=f"vocabcore {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)

    plan = sub.add_parser("plan", help="build a plan from a tokenizer and training texts")
    plan.add_argument("--tokenizer", required=True, help="directory of a saved tokenizer")
    plan.add_argument(
        "--texts", required=True, help=".txt, .jsonl, .csv, .parquet or a saved dataset dir"
    )
    plan.add_argument("--column", action="append", help="text column (repeat for sentence pairs)")
    plan.add_argument("--min-count", type=int, default=1, help="keep tokens seen this often")
    plan.add_argument("--keep", action="append", help="a token to keep whatever its count")
    plan.add_argument(
        "--max-size", type=int, help="keep at most this many ids (most frequent first)"
    )
    adding = plan.add_mutually_exclusive_group()
    adding.add_argument(
        "--add-tokens",
        type=_positive_int,
        metavar="N",
        help="add the N tokens 'vocabcore suggest' would suggest for these texts",
    )
    adding.add_argument(
        "--add-token",
        action="append",
        metavar="TOKEN",
        help="add this token, in the tokenizer's token form (repeat for more)",
    )
    plan.add_argument(
        "--add-min-count",
        type=_positive_int,
        metavar="K",
        help="with --add-tokens: suggest words seen at least K times (5)",
    )
    plan.add_argument("-o", "--output", required=True, help="where to write plan.json")
    plan.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    plan.set_defaults(func=_cmd_plan)

    suggest = sub.add_parser(
        "suggest", help="words the texts split into the most extra tokens (tokens to add)"
    )
    suggest.add_argument("--tokenizer", required=True, help="directory of a saved tokenizer")
    suggest.add_argument(
        "--texts", required=True, help=".txt, .jsonl, .csv, .parquet or a saved dataset dir"
    )
    suggest.add_argument("--column", action="append", help="text column (repeat for pairs)")
    suggest.add_argument(
        "-n", type=_positive_int, default=100, help="how many tokens to suggest at most (100)"
    )
    suggest.add_argument(
        "--min-count", type=_positive_int, default=5, help="fewest occurrences of a word (5)"
    )
    suggest.add_argument("--json", action="store_true", help="print a JSON list")
    suggest.set_defaults(func=_cmd_suggest)

    stats = sub.add_parser("stats", help="what a plan keeps and what it saves")
    stats.add_argument("plan", help="plan.json")
    stats.add_argument("--model", help="model directory, to count parameters and memory")
    stats.add_argument(
        "--batch-size", type=_positive_int, help="sequences per step, for the memory estimate (1)"
    )
    stats.add_argument(
        "--seq-len", type=_positive_int, help="tokens per sequence, for the memory estimate (512)"
    )
    stats.add_argument(
        "--optimizer",
        choices=("adamw", "adamw8bit", "sgd", "sgd-momentum"),
        help="optimizer whose state to count (adamw)",
    )
    stats.add_argument("--json", action="store_true", help="machine-readable output")
    _add_coverage_arguments(stats)
    stats.set_defaults(func=_cmd_stats)

    export = sub.add_parser("export", help="write a permanently reduced model and tokenizer")
    export.add_argument("--model", required=True, help="directory of the saved model")
    export.add_argument("--tokenizer", help="tokenizer directory (default: the model's)")
    export.add_argument("--plan", required=True, help="plan.json")
    export.add_argument(
        "-o", "--output", required=True, help="output directory (gguf: the .gguf file)"
    )
    export.add_argument(
        "--format",
        choices=("hf", "gguf", "onnx"),
        default="hf",
        help="hf: a Hugging Face directory; gguf: one file for llama.cpp; onnx: for ONNX Runtime",
    )
    export.add_argument("--overwrite", action="store_true", help="replace the output directory")
    export.set_defaults(func=_cmd_export)

    draft = sub.add_parser(
        "draft", help="write a plan's kept ids as a speculative-decoding draft vocabulary"
    )
    draft.add_argument("--plan", required=True, help="plan.json (e.g. from plan --max-size K)")
    draft.add_argument("-o", "--output", required=True, help="file to write")
    draft.add_argument(
        "--format",
        choices=("sglang", "eagle3"),
        default="sglang",
        help="sglang: --speculative-token-map file; eagle3: d2t/t2d tensors",
    )
    draft.add_argument(
        "--target-vocab-size",
        type=_positive_int,
        help="the target's config.vocab_size when it exceeds the plan's vocabulary",
    )
    draft.add_argument("--overwrite", action="store_true", help="replace the output file")
    draft.set_defaults(func=_cmd_draft)

    demo = sub.add_parser(
        "demo", help="fine-tune all-MiniLM-L6-v2 with the full vocabulary, reduced and shifted"
    )
    demo.add_argument("--steps", type=int, default=120, help="training steps per run")
    demo.add_argument(
        "-o", "--output", default="demo-output", help="where to save the restored models"
    )
    demo.add_argument("--quick", action="store_true", help="a few steps only (smoke test)")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; errors print one line to stderr and exit with status 2."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or an argument error already printed
        return exc.code if isinstance(exc.code, int) else 2
    try:
        code: int = args.func(args)
        return code
    except (VocabError, OSError) as exc:
        if args.debug:
            raise
        message = str(exc) if isinstance(exc, VocabError) else f"{exc.strerror}: {exc.filename}"
        message = " ".join(message.split())  # one line, whatever the message holds
        print(f"vocabcore {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vocabcore: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # anything else is still one line and status 2
        if args.debug:
            raise
        text = " ".join(str(exc).split()) or "no message"
        print(f"vocabcore {args.command}: error: {type(exc).__name__}: {text}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
