"""Token-counting throughput with 1 and 2 processes on the same corpus; prints a small table.

    python benchmarks/bench_counting.py [--copies 4] [--repeats 3] [--batch-size 1000]

Corpus: the CoNLL-2003-sized training set of ``_corpus.py`` (14,041 pre-split sentences,
joined with spaces), ``--copies`` times over. Tokenizer: the real all-MiniLM-L6-v2 (BERT
WordPiece, 30,522). Every way of counting must give identical counts (checked); each row is
the best of ``--repeats`` runs, process start-up included, with the CPU seconds it used
(this process and its workers): on a machine whose cores are busy with other work, wall time
can't show a speed-up, while CPU seconds still show how much work each way does.

Rows:

* ``count_tokens``, 1 process, Rust tokenizer threads on (the default: ``encode_batch`` uses
  every core by itself);
* ``count_tokens``, 1 process, ``TOKENIZERS_PARALLELISM=false`` (one core);
* ``count_tokens_parallel(num_proc=2)``: any iterable, a spawn pool of 2 processes;
* ``count_tokens(Dataset, num_proc=2)``: ``datasets.Dataset.map`` with 2 processes.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time
from collections.abc import Callable
from typing import Any

import _harness as h

h.setup(tokenizer_threads=True)  # the first row counts with the tokenizer's own threads
os.environ.setdefault("TQDM_DISABLE", "1")

import _corpus  # noqa: E402
import _tokenizers  # noqa: E402


def _texts(copies: int) -> list[str]:
    sentences = [" ".join(words) for words in _corpus.training_set()]
    return sentences * copies


def _cpu() -> float:
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _best(run: Callable[[], Any], repeats: int) -> tuple[float, float, Any]:
    """Best wall seconds, CPU seconds of that run (this process and reaped children), result."""
    best, cpu, result = float("inf"), 0.0, None
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), _cpu()
        result = run()
        wall = time.perf_counter() - start
        if wall < best:
            best, cpu = wall, _cpu() - start_cpu
    return best, cpu, result


def _single_thread(copies: int, batch_size: int) -> tuple[float, float]:
    """``count_tokens`` with one tokenizer thread, in a fresh process (read at start)."""
    code = (
        "import sys, time; sys.path.insert(0, 'benchmarks'); import bench_counting as b; "
        "from transformers import AutoTokenizer; from vocab_adapters import count_tokens; "
        "tok = AutoTokenizer.from_pretrained(str(b._tokenizers.minilm_dir())); "
        f"texts = b._texts({copies}); t, c = time.perf_counter(), time.process_time(); "
        f"count_tokens(tok, texts, {batch_size}); "
        "print(time.perf_counter() - t, time.process_time() - c)"
    )
    out = h.run_python(["-c", code], env=h.worker_env())
    if out.returncode:
        raise RuntimeError(out.stderr)
    wall, cpu = out.stdout.strip().splitlines()[-1].split()
    return float(wall), float(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1000)
    args = parser.parse_args()

    import datasets
    import tokenizers
    import transformers
    from transformers import AutoTokenizer

    from vocab_adapters import count_tokens
    from vocab_adapters.planning.texts import count_tokens_parallel

    datasets.disable_progress_bars()
    tokenizer = AutoTokenizer.from_pretrained(str(_tokenizers.minilm_dir()))
    texts = _texts(args.copies)
    dataset = datasets.Dataset.from_dict({"text": texts})
    bs = args.batch_size

    rows: list[tuple[str, int, float, float]] = []
    seconds, cpu, want = _best(lambda: count_tokens(tokenizer, texts, bs), args.repeats)
    rows.append(("count_tokens (tokenizer threads on)", 1, seconds, cpu))
    single, single_cpu = min(_single_thread(args.copies, bs) for _ in range(args.repeats))
    rows.append(("count_tokens (TOKENIZERS_PARALLELISM=false)", 1, single, single_cpu))
    seconds, cpu, got = _best(lambda: count_tokens_parallel(tokenizer, texts, 2, bs), args.repeats)
    assert got == want, "count_tokens_parallel differs"
    rows.append(("count_tokens_parallel(num_proc=2)", 2, seconds, cpu))
    seconds, cpu, got = _best(
        lambda: count_tokens(tokenizer, dataset, bs, num_proc=2), args.repeats
    )
    assert got == want, "Dataset.map counting differs"
    rows.append(("count_tokens(Dataset, num_proc=2)", 2, seconds, cpu))

    print(
        f"# {len(texts):,} texts, {want.total:,} tokens; all-MiniLM-L6-v2 tokenizer; "
        f"{os.cpu_count()} CPUs; python {platform.python_version()}, transformers "
        f"{transformers.__version__}, tokenizers {tokenizers.__version__}, datasets "
        f"{datasets.__version__}; best of {args.repeats}"
    )
    print(f"# load average before: {os.getloadavg()[0]:.2f} (other work shares these CPUs)")
    print(f"| {'method':<44} | procs | seconds | CPU s | texts/s | vs 1 thread |")
    print(f"|{'-' * 46}|------:|--------:|------:|--------:|------------:|")
    for name, procs, secs, cpu in rows:
        print(
            f"| {name:<44} | {procs:>5} | {secs:>7.2f} | {cpu:>5.1f} | "
            f"{len(texts) / secs:>7,.0f} | {single / secs:>10.2f}x |"
        )


if __name__ == "__main__":
    main()
