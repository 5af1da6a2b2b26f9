"""Stream texts out of .txt, .jsonl, .csv, .parquet files and saved ``datasets`` directories."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from vocabcore import VocabError

__all__ = ["SUFFIXES", "dataset_string_columns", "guess_text_columns", "iter_texts"]

SUFFIXES = (".txt", ".jsonl", ".csv", ".parquet")


def _pick(record: dict[str, Any], columns: Sequence[str], where: str) -> Any:
    missing = [c for c in columns if c not in record]
    if missing:
        raise VocabError(
            f"column {missing[0]!r} not found in {where} (columns: {', '.join(map(str, record))}); "
            "choose one with --column"
        )
    values = [record[c] for c in columns]
    return values[0] if len(values) == 1 else tuple(values)


def dataset_string_columns(dataset: Any) -> list[str]:
    """The columns of a ``datasets`` dataset whose feature is a string."""
    features = getattr(dataset, "features", None) or {}
    return [
        name
        for name in dataset.column_names or ()
        if getattr(features.get(name), "dtype", None) in ("string", "large_string")
    ]


def guess_text_columns(
    names: Sequence[str],
    where: str,
    *,
    strings: Sequence[str] | None = None,
    how: str = "--column NAME (twice for sentence pairs)",
) -> list[str]:
    """The text column of a table when none is named: the one rule for files and datasets.

    ``text`` if there is one; else ``messages`` (conversations); else the only column; else,
    where column types are known (``strings``: the columns holding strings), the only string
    column.

    Raises:
        VocabError: No rule decides; the message says how to choose (``how``).

    >>> guess_text_columns(["id", "text"], "data.csv")
    ['text']
    >>> guess_text_columns(["id", "sentence"], "a dataset", strings=["sentence"])
    ['sentence']
    """
    if "text" in names:
        return ["text"]
    if "messages" in names:
        return ["messages"]  # conversations (TRL's conversational format)
    if len(names) == 1:
        return [names[0]]
    if strings is not None and len(strings) == 1:
        return [strings[0]]
    raise VocabError(
        f"{where} has several columns ({', '.join(names)}) and none is named 'text'; "
        f"choose with {how}"
    )


def iter_texts(path: str | Path, columns: Sequence[str] = ()) -> Iterator[Any]:
    """Yield texts (or pairs, with two columns) from ``path`` without loading it whole.

    Args:
        path: A ``.txt`` file (one text a line), ``.jsonl``, ``.csv``, ``.parquet``, or a
            directory written by ``datasets.Dataset.save_to_disk``.
        columns: Column(s) holding the text; two columns give ``(text, text_pair)`` pairs.
            Default: ``text``, or the only column.

    Raises:
        VocabError: The file is missing, of an unknown kind, or lacks a column.
    """
    source = Path(path)
    if not source.exists():
        raise VocabError(f"texts file {str(source)!r} does not exist; check the path")
    if len(columns) > 2:
        raise VocabError(f"give one column, or two for pairs (got {len(columns)})")
    if source.is_dir():
        yield from _iter_dataset_dir(source, columns)
        return
    suffix = source.suffix.lower()
    if suffix == ".txt":
        with source.open(encoding="utf-8") as handle:
            for line in handle:
                text = line.rstrip("\n")
                if text:
                    yield text
    elif suffix == ".jsonl":
        yield from _iter_jsonl(source, columns)
    elif suffix == ".csv":
        with source.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            names = list(reader.fieldnames or [])
            chosen = list(columns) or guess_text_columns(names, str(source))
            _pick(dict.fromkeys(names), chosen, str(source))
            for row in reader:
                yield _pick(row, chosen, str(source))
    elif suffix == ".parquet":
        yield from _iter_parquet(source, columns)
    else:
        raise VocabError(
            f"cannot read texts from {source.name!r}: use one of {', '.join(SUFFIXES)} "
            "or a saved datasets directory"
        )


def _iter_jsonl(source: Path, columns: Sequence[str]) -> Iterator[Any]:
    chosen: list[str] | None = list(columns) or None
    with source.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise VocabError(f"{source.name} line {number} is not valid JSON") from None
            if isinstance(record, str) and not columns:
                yield record
                continue
            if not isinstance(record, dict):
                raise VocabError(f"{source.name} line {number} is not a JSON object")
            if chosen is None:
                chosen = guess_text_columns(list(record), str(source))
            yield _pick(record, chosen, f"{source.name} line {number}")


def _iter_parquet(source: Path, columns: Sequence[str]) -> Iterator[Any]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise VocabError(
            "reading .parquet needs pyarrow: pip install 'vocabcore[datasets]'"
        ) from None
    file = pq.ParquetFile(source)
    schema = file.schema_arrow
    names = list(schema.names)
    strings = [f.name for f in schema if str(f.type) in ("string", "large_string")]
    chosen = list(columns) or guess_text_columns(names, str(source), strings=strings)
    _pick(dict.fromkeys(names), chosen, str(source))
    for batch in file.iter_batches(batch_size=4096, columns=chosen):
        lists = [batch.column(c).to_pylist() for c in chosen]
        if len(lists) == 1:
            yield from lists[0]
        else:
            yield from zip(*lists, strict=False)


def _iter_dataset_dir(source: Path, columns: Sequence[str]) -> Iterator[Any]:
    try:
        from datasets import load_from_disk
    except ImportError:
        raise VocabError(
            "reading a saved dataset needs datasets: pip install 'vocabcore[datasets]'"
        ) from None
    try:
        dataset = load_from_disk(str(source))
    except (FileNotFoundError, ValueError) as exc:
        raise VocabError(
            f"{str(source)!r} is not a saved datasets directory ({exc}); pass a text file"
        ) from None
    if hasattr(dataset, "keys") and not hasattr(dataset, "column_names"):
        raise VocabError(f"{str(source)!r} holds several splits; point at one split's directory")
    names = list(dataset.column_names)
    chosen = list(columns) or guess_text_columns(
        names, str(source), strings=dataset_string_columns(dataset)
    )
    _pick(dict.fromkeys(names), chosen, str(source))
    for start in range(0, len(dataset), 4096):
        batch = dataset[start : start + 4096]
        lists = [batch[c] for c in chosen]
        if len(lists) == 1:
            yield from lists[0]
        else:
            yield from zip(*lists, strict=False)
