"""Count the tokens of a corpus and build a plan from them.

:func:`count_tokens` is the map step of a map-reduce (its :class:`vocabcore.TokenCounts`
add up across shards); :func:`plan_from_texts` counts and builds the plan in one call.
Texts are encoded in batches with the tokenizer's own batch API (all cores for fast
tokenizers) and counted with ``numpy.bincount``; nothing is kept per text. Where the fast
tokenizer's pipeline allows it (:mod:`vocab_adapters.planning.piece_counts`), each distinct word or
space-separated piece is encoded once and its ids weighted by how often it occurs: the same
counts for a fraction of the work.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Sized
from contextlib import contextmanager
from itertools import chain, islice
from typing import Any

import numpy as np

from vocab_adapters.planning.piece_counts import PieceCounter, check_range, separability
from vocab_adapters.planning.text_files import dataset_string_columns, guess_text_columns
from vocab_adapters.stages.tokenizer_adapter import close_plan
from vocab_adapters.tokenization.tokenizer_backend import (
    backend_of,
    fingerprint,
    parsed,
    tokenizer_size,
)
from vocabcore import PlanMismatchError, TokenCounts, VocabError, VocabPlan

__all__ = [
    "count_tokens",
    "count_tokens_parallel",
    "plan_from_counts",
    "plan_from_texts",
    "resolve_keep",
    "settings_kept",
    "uses_plain_backend",
]

_Batch = list[Any]


def _is_dataset(texts: Any) -> bool:
    module = type(texts).__module__ or ""
    return module.startswith("datasets.") and hasattr(texts, "column_names")


def _dataset_columns(dataset: Any, columns: str | Sequence[str] | None) -> list[str]:
    names = list(dataset.column_names or ())
    if columns is not None:
        chosen = [columns] if isinstance(columns, str) else list(columns)
        if not 1 <= len(chosen) <= 2:
            raise VocabError(
                f"'columns' must name one text column or two (a pair) (got {chosen!r})"
            )
        missing = [c for c in chosen if c not in names]
        if missing:
            raise VocabError(
                f"'columns' names {missing!r}, which the dataset lacks; it has {names!r}"
            )
        return chosen
    if "messages" in names and _holds_conversations(dataset, "messages"):
        return ["messages"]  # TRL's conversational format
    return guess_text_columns(
        names,
        "the dataset",
        strings=dataset_string_columns(dataset),
        how="columns='name' (or two names for text pairs)",
    )


def _holds_conversations(dataset: Any, name: str) -> bool:
    from vocab_adapters.planning.chat import is_conversation

    first: dict[str, list[Any]] = next(iter(dataset.iter(batch_size=1)), {})
    return is_conversation(first.get(name, [None])[0])


def _dataset_batches(dataset: Any, columns: list[str], batch_size: int) -> Iterator[_Batch]:
    for rows in dataset.iter(batch_size=batch_size):
        if len(columns) == 1:
            yield list(rows[columns[0]])
        else:
            yield list(zip(rows[columns[0]], rows[columns[1]], strict=True))


def _batches(texts: Iterable[Any], batch_size: int) -> Iterator[_Batch]:
    iterator = iter(texts)
    while True:
        batch = list(islice(iterator, batch_size))
        if not batch:
            return
        yield batch


_KIND_NAMES = {
    "text": "text",
    "pair": "(str, str) pair",
    "words": "pre-split word list",
    "word_pair": "pair of word lists",
    "conversation": "conversation",
}


def _kind_of(item: Any, index: int) -> str:
    """``'text'``, ``'pair'``, ``'words'``, ``'word_pair'`` or ``'conversation'`` for one item.

    ``index`` (the item's position in the input) names a bad item in the ``VocabError``.
    """
    if isinstance(item, str):
        return "text"
    if isinstance(item, (tuple, list)):
        if item and isinstance(item[0], Mapping):
            return "conversation"
        if len(item) == 2 and all(isinstance(x, str) for x in item) and isinstance(item, tuple):
            return "pair"
        if all(isinstance(x, str) for x in item):
            return "words"
        if len(item) == 2 and all(
            isinstance(x, (list, tuple)) and all(isinstance(w, str) for w in x) for x in item
        ):
            return "word_pair"
    raise VocabError(
        f"item {index} of texts is none of str, (str, str) pair, pre-split word list or "
        "conversation (list of {'role', 'content'} dicts) "
        f"(got {type(item).__name__} {item!r:.80}); fix or drop that item"
    )


def _groups(batch: _Batch, offset: int) -> list[tuple[str, _Batch]]:
    """``batch`` split by kind, in first-seen order; ``offset`` is the first item's index.

    Conversations are checked here (turns with a ``role`` and a ``content``).
    """
    if all(type(item) is str for item in batch):
        return [("text", batch)]
    from vocab_adapters.planning.chat import check_conversation

    out: dict[str, _Batch] = {}
    for i, item in enumerate(batch):
        kind = _kind_of(item, offset + i)
        if kind == "conversation":
            item = check_conversation(item, offset + i)
        out.setdefault(kind, []).append(item)
    return list(out.items())


# transformers' fast tokenizer classes whose encoding overrides only check arguments (4.x:
# byte-level BPE families refuse pre-split words without add_prefix_space=True); their ids
# are the backend's.
_CHECKING_ONLY = frozenset(
    f"transformers.models.{name}.tokenization_{name}_fast"
    for name in (
        "bart",
        "blenderbot",
        "bloom",
        "codegen",
        "cohere",
        "deberta",
        "gpt2",
        "led",
        "longformer",
        "mvp",
        "roberta",
        "whisper",
    )
)
_ENCODING_METHODS = ("__call__", "_call_one", "_encode_plus", "_batch_encode_plus", "encode_plus")


def uses_plain_backend(tokenizer: Any, backend: Any) -> bool:
    """Whether ``tokenizer(batch)`` gives the backend's ids (no override that changes them)."""
    try:
        from transformers import PreTrainedTokenizerFast
    except ImportError:  # pragma: no cover - transformers is a dependency
        return False
    if not isinstance(tokenizer, PreTrainedTokenizerFast):
        return False
    for name in _ENCODING_METHODS:
        base = getattr(PreTrainedTokenizerFast, name, None)
        for cls in type(tokenizer).__mro__:
            if cls is PreTrainedTokenizerFast:
                break
            overridden = name in vars(cls) and vars(cls)[name] is not base
            if overridden and cls.__module__ not in _CHECKING_ONLY:
                return False
    return True


@contextmanager
def _backend_settings(tokenizer: Any, backend: Any) -> Iterator[None]:
    """The backend set to encode as the wrapper's ``__call__`` would, restored afterwards.

    No padding and no truncation (count the texts' own tokens), and special tokens split or
    not as the wrapper's ``split_special_tokens`` says.
    """
    padding, truncation = backend.padding, backend.truncation
    split = backend.encode_special_tokens
    try:
        if padding is not None:
            backend.no_padding()
        if truncation is not None:
            backend.no_truncation()
        if backend is not tokenizer:
            backend.encode_special_tokens = bool(getattr(tokenizer, "split_special_tokens", False))
        yield
    finally:
        if padding is not None:
            backend.enable_padding(**{k: v for k, v in padding.items() if k != "strategy"})
        if truncation is not None:
            backend.enable_truncation(**truncation)
        backend.encode_special_tokens = split


@contextmanager
def settings_kept(backend: Any) -> Iterator[None]:
    """Restore the backend's padding and truncation, which HF's ``__call__`` overwrites."""
    if backend is None:
        yield
        return
    padding, truncation = backend.padding, backend.truncation
    try:
        yield
    finally:
        if padding is None:
            backend.no_padding()
        else:
            backend.enable_padding(**{k: v for k, v in padding.items() if k != "strategy"})
        if truncation is None:
            backend.no_truncation()
        else:
            backend.enable_truncation(**truncation)


class _Encoder:
    """Encode batches to one flat id array; a context manager around the whole count.

    Fast tokenizers go to the backend's ``encode_batch_fast`` (``encode_batch`` before
    tokenizers 0.20) with the wrapper's settings: special tokens added, pre-split words as
    ``is_pretokenized``, pairs as tuples, ``split_special_tokens``. Slow tokenizers, and fast
    ones whose class overrides how text is encoded, go through ``tokenizer(...)``.
    Conversations go through the tokenizer's chat template with ``chat_kwargs``
    (``conversations`` counts them). ``templates=False``: ``tokenizer`` is a pool worker's
    ``tokenizers.Tokenizer`` shipped in place of the wrapper, which has no chat template.
    """

    def __init__(
        self,
        tokenizer: Any,
        document: dict[str, Any] | None = None,
        chat_kwargs: dict[str, Any] | None = None,
        templates: bool = True,
    ) -> None:
        self.tokenizer = tokenizer
        self.chat_kwargs = chat_kwargs
        self.templates = templates
        self.conversations = 0
        backend = backend_of(tokenizer)
        self.backend = (
            backend
            if backend is not None
            and (backend is tokenizer or uses_plain_backend(tokenizer, backend))
            else None
        )
        self._settings: Any = None
        self.pieces: PieceCounter | None = None
        if self.backend is not None:
            if document is None:
                document = parsed(self.backend).document
            rules = separability(document)
            if rules is not None:
                self.pieces = PieceCounter(self.backend, rules)

    def count_pieces(self, batch: _Batch, kind: str) -> bool:
        """Take ``batch`` into the piece counter (``False``: encode it text by text)."""
        if self.pieces is None or self._settings is None or kind == "conversation":
            return False
        if kind in ("words", "word_pair") and not self._prefix_space_ok():
            return False
        return self.pieces.add(batch, kind)

    def _prefix_space_ok(self) -> bool:
        return not (
            getattr(self.tokenizer, "add_prefix_space", True) is False
            and any(c.__module__ in _CHECKING_ONLY for c in type(self.tokenizer).__mro__)
        )

    def __enter__(self) -> _Encoder:
        if self.backend is not None:
            self._settings = _backend_settings(self.tokenizer, self.backend)
            self._settings.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._settings is not None:
            settings, self._settings = self._settings, None
            settings.__exit__(*exc)

    def __call__(self, batch: _Batch, kind: str) -> np.ndarray[Any, np.dtype[np.int64]]:
        if kind == "conversation":
            return self._conversations(batch)
        if self.backend is None:
            return _flat(self._encode_hf(batch, kind))
        if self._settings is None:
            with self:
                return self(batch, kind)
        if kind in ("words", "word_pair") and not self._prefix_space_ok():
            raise VocabError(
                f"{type(self.tokenizer).__name__} encodes pre-split words only when made "
                "with add_prefix_space=True; load it with from_pretrained(..., "
                "add_prefix_space=True) or pass whole texts"
            )
        if kind == "word_pair":
            batch = [(list(a), list(b)) for a, b in batch]
        backend = self.backend
        encode = getattr(backend, "encode_batch_fast", None) or backend.encode_batch
        encodings = encode(
            batch, add_special_tokens=True, is_pretokenized=kind in ("words", "word_pair")
        )
        flat: list[int] = []
        for encoding in encodings:  # one list, converted once: faster than chaining the lists
            flat += encoding.ids
        return np.array(flat, dtype=np.int64)

    def _conversations(self, batch: _Batch) -> np.ndarray[Any, np.dtype[np.int64]]:
        from vocab_adapters.planning.chat import conversation_ids

        if not self.templates:
            raise VocabError(
                "'num_proc' workers got the tokenizer without its chat template, since no "
                "conversation came before the first batch was sent; put a conversation in the "
                "first batch, pass chat_template_kwargs={}, or count with num_proc=None"
            )
        self.conversations += len(batch)
        # the template may need the wrapper's own settings (padding side, truncation)
        with settings_kept(self.backend):
            return conversation_ids(self.tokenizer, batch, self.chat_kwargs)

    def _encode_hf(self, batch: _Batch, kind: str) -> list[list[int]]:
        options: dict[str, Any] = {"add_special_tokens": True, "truncation": False}
        if kind in ("words", "word_pair"):
            options["is_split_into_words"] = True
        with settings_kept(backend_of(self.tokenizer)):
            if kind in ("pair", "word_pair"):
                first = [a for a, _ in batch]
                second = [b for _, b in batch]
                out = self.tokenizer(first, second, **options)
            else:
                out = self.tokenizer(batch, **options)
        ids: list[list[int]] = out["input_ids"]
        return ids


def _flat(id_lists: list[list[int]]) -> np.ndarray[Any, np.dtype[np.int64]]:
    return np.fromiter(chain.from_iterable(id_lists), dtype=np.int64)


def _encoder_for(
    tokenizer: Any,
    document: dict[str, Any] | None = None,
    chat_kwargs: dict[str, Any] | None = None,
    templates: bool = True,
) -> _Encoder:
    return _Encoder(tokenizer, document, chat_kwargs, templates)


def _progress(total: int | None, progress: bool | None, batch_size: int) -> Any:
    show = progress
    if show is None:
        show = sys.stderr.isatty() and (total is None or total > 10 * batch_size)
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="text", desc="counting tokens")


def _name_of(tokenizer: Any) -> str:
    name = getattr(tokenizer, "name_or_path", None)
    return str(name) if name else type(tokenizer).__name__


def _count_array(
    tokenizer: Any,
    texts: Any,
    batch_size: int,
    columns: str | Sequence[str] | None,
    progress: bool | None,
    num_proc: int | None,
    size: int | None = None,
    document: dict[str, Any] | None = None,
    chat_kwargs: dict[str, Any] | None = None,
) -> tuple[np.ndarray[Any, np.dtype[np.int64]], int]:
    """``(counts per id, number of items)`` of ``texts``: the one counting path.

    Every item is classified on its own (:func:`_groups`); texts, pairs and word lists go to
    the piece counter where it applies, else to the tokenizer's batch encoding, and
    conversations through the chat template, all into one counter. ``chat_kwargs`` given
    (even ``{}``) while no item is a conversation raises ``VocabError`` naming it.
    """
    if size is None:
        size = tokenizer_size(tokenizer)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise VocabError(f"'batch_size' must be an int >= 1 (got {batch_size!r})")
    if num_proc is not None and (
        isinstance(num_proc, bool) or not isinstance(num_proc, int) or num_proc < 1
    ):
        raise VocabError(f"'num_proc' must be None or an int >= 1 (got {num_proc!r})")
    if isinstance(texts, (str, bytes)):
        raise VocabError("'texts' must be an iterable of texts, not a single str; wrap it: [text]")
    if chat_kwargs is not None and isinstance(texts, Sequence) and not _any_conversation(texts):
        _no_conversations()
    if num_proc is not None and num_proc > 1:
        if _is_dataset(texts) and hasattr(texts, "map") and hasattr(texts, "__len__"):
            counts, n_texts, n_chats = _count_dataset_parallel(
                tokenizer, texts, batch_size, columns, num_proc, size, chat_kwargs
            )
        else:
            counts, n_texts, n_chats = _count_in_pool(
                tokenizer, texts, num_proc, batch_size, columns, progress, size, chat_kwargs
            )
    else:
        counts, n_texts, n_chats = _count_here(
            tokenizer, texts, batch_size, columns, progress, size, document, chat_kwargs
        )
    if chat_kwargs is not None and n_chats == 0:
        _no_conversations()
    return counts, n_texts


def _any_conversation(texts: Sequence[Any]) -> bool:
    from vocab_adapters.planning.chat import is_conversation

    return any(type(item) is not str and is_conversation(item) for item in texts)


def _no_conversations() -> None:
    raise VocabError(
        "'chat_template_kwargs' applies to conversations (lists of {'role', 'content'} dicts); "
        "these texts hold none: drop chat_template_kwargs or pass conversations"
    )


def _input_batches(
    texts: Any, batch_size: int, columns: str | Sequence[str] | None
) -> Iterator[_Batch]:
    """The input in batches of items: a dataset's chosen column(s), or any iterable."""
    if _is_dataset(texts):
        return _dataset_batches(texts, _dataset_columns(texts, columns), batch_size)
    if columns is not None:
        raise VocabError("'columns' only applies to a datasets.Dataset input")
    return _batches(texts, batch_size)


def _count_here(
    tokenizer: Any,
    texts: Any,
    batch_size: int,
    columns: str | Sequence[str] | None,
    progress: bool | None,
    size: int,
    document: dict[str, Any] | None,
    chat_kwargs: dict[str, Any] | None,
) -> tuple[np.ndarray[Any, np.dtype[np.int64]], int, int]:
    batches = _input_batches(texts, batch_size, columns)
    total = len(texts) if hasattr(texts, "__len__") else None
    counts = np.zeros(size, dtype=np.int64)
    pending: list[np.ndarray[Any, np.dtype[np.int64]]] = []
    n_pending = 0
    n_texts = 0
    bar = _progress(total, progress, batch_size)

    def flush() -> None:
        nonlocal n_pending
        flat = pending[0] if len(pending) == 1 else np.concatenate(pending)
        pending.clear()
        n_pending = 0
        if flat.size:
            check_range(flat, size)
            high = int(flat.max())
            counts[: high + 1] += np.bincount(flat, minlength=high + 1)

    try:
        with _encoder_for(tokenizer, document, chat_kwargs) as encode:
            pieces = encode.pieces
            for batch in batches:
                for kind, items in _groups(batch, n_texts):
                    if encode.count_pieces(items, kind):  # each distinct piece encoded once
                        if pieces is not None and pieces.full:
                            pieces.flush(counts)
                    else:
                        flat = encode(items, kind)
                        pending.append(flat)
                        n_pending += flat.size
                        if n_pending >= _FLUSH_IDS:  # one bincount per few million ids
                            flush()
                n_texts += len(batch)
                if bar is not None:
                    bar.update(len(batch))
            if pieces is not None:
                pieces.flush(counts)
        if pending:
            flush()
    finally:
        if bar is not None:
            bar.close()
    return counts, n_texts, encode.conversations


_FLUSH_IDS = 1 << 22


def _count_dataset_parallel(
    tokenizer: Any,
    dataset: Any,
    batch_size: int,
    columns: str | Sequence[str] | None,
    num_proc: int,
    size: int,
    chat_kwargs: dict[str, Any] | None = None,
) -> tuple[np.ndarray[Any, np.dtype[np.int64]], int, int]:
    cols = _dataset_columns(dataset, columns)
    encode = _encoder_for(tokenizer, chat_kwargs=chat_kwargs)

    def count_batch(rows: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
        if len(cols) == 1:
            batch: _Batch = list(rows[cols[0]])
        else:
            batch = list(zip(rows[cols[0]], rows[cols[1]], strict=True))
        before = encode.conversations
        ids, freq = _batch_unique(encode, batch, size, indices[0] if indices else 0)
        return {
            "ids": [ids.tolist()],
            "freq": [freq.tolist()],
            "n": [len(batch)],
            "chats": [encode.conversations - before],
        }

    shards = dataset.map(
        count_batch,
        batched=True,
        with_indices=True,
        batch_size=batch_size,
        num_proc=num_proc,
        remove_columns=list(dataset.column_names),
        load_from_cache_file=False,
        desc="counting tokens",
    )
    counts = np.zeros(size, dtype=np.int64)
    n_texts = n_chats = 0
    for row in shards:
        np.add.at(counts, np.asarray(row["ids"], dtype=np.int64), row["freq"])
        n_texts += row["n"]
        n_chats += row["chats"]
    return counts, n_texts, n_chats


def count_tokens(
    tokenizer: Any,
    texts: Iterable[Any],
    batch_size: int = 1000,
    *,
    columns: str | Sequence[str] | None = None,
    progress: bool | None = None,
    num_proc: int | None = None,
    chat_template_kwargs: Mapping[str, Any] | None = None,
) -> TokenCounts:
    """Count how often each id of ``tokenizer`` occurs in ``texts`` (special tokens included).

    Args:
        tokenizer: A Hugging Face tokenizer (fast or slow) or a ``tokenizers.Tokenizer``.
        texts: Texts (str), text pairs (tuples of two str), pre-split word lists,
            conversations (lists of ``{"role", "content"}`` dicts, rendered with the chat
            template), or a ``datasets.Dataset`` / ``IterableDataset``; any iterable, streamed
            in batches. Each item is classified on its own, so one input may mix them; an
            item that is none of them raises ``VocabError`` naming its index.
        batch_size: Texts per call of the tokenizer's batch API.
        columns: For a dataset, the text column, or two columns for pairs (default:
            ``messages`` when it holds conversations, else ``text`` or the only string column).
        progress: Show a tqdm bar; default: on a terminal, for long input.
        num_proc: Worker processes: ``Dataset.map(num_proc=...)`` for a ``datasets.Dataset``,
            a process pool (:func:`count_tokens_parallel`) for any other iterable.
        chat_template_kwargs: Passed to ``tokenizer.apply_chat_template`` for conversations;
            given while no item is a conversation, it raises ``VocabError``.

    Returns:
        Counts carrying ``fingerprint(tokenizer)``, to add up across shards.

    >>> from tokenizers import Tokenizer, models, pre_tokenizers
    >>> tok = Tokenizer(models.WordLevel({"<unk>": 0, "a": 1, "b": 2}, "<unk>"))
    >>> tok.pre_tokenizer = pre_tokenizers.Whitespace()
    >>> count_tokens(tok, ["a a", "b c"]).counts
    (1, 2, 1)
    """
    from vocab_adapters.planning.chat import template_kwargs

    kwargs = template_kwargs(chat_template_kwargs)
    counts, _ = _count_array(
        tokenizer, texts, batch_size, columns, progress, num_proc, chat_kwargs=kwargs
    )
    return TokenCounts(len(counts), counts.tolist(), fingerprint(tokenizer))


# Per-process state of count_tokens_parallel's workers (set once by the pool's initializer).
_WORKER: dict[str, Any] = {}


def _init_worker(
    tokenizer: Any, size: int, chat_kwargs: dict[str, Any] | None, templates: bool
) -> None:
    import os

    # One tokenizer thread per process: the pool is the parallelism (unless the user chose).
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _WORKER["encode"] = _encoder_for(tokenizer, chat_kwargs=chat_kwargs, templates=templates)
    _WORKER["size"] = size


def _count_batch_in_worker(batch: _Batch, offset: int) -> tuple[list[int], list[int], int, int]:
    encode: _Encoder = _WORKER["encode"]
    before = encode.conversations
    ids, freq = _batch_unique(encode, batch, _WORKER["size"], offset)
    return ids.tolist(), freq.tolist(), len(batch), encode.conversations - before


def _batch_unique(
    encode: _Encoder, batch: _Batch, size: int, offset: int = 0
) -> tuple[np.ndarray[Any, np.dtype[np.int64]], np.ndarray[Any, np.dtype[np.int64]]]:
    """The distinct ids of one batch and their counts (pieces encoded once where allowed)."""
    counts = np.zeros(size, dtype=np.int64)
    with encode:
        for kind, items in _groups(batch, offset):
            if encode.pieces is not None and encode.count_pieces(items, kind):
                encode.pieces.flush(counts)
                continue
            flat = encode(items, kind)
            if flat.size:
                check_range(flat, size)
                high = int(flat.max())
                counts[: high + 1] += np.bincount(flat, minlength=high + 1)
    ids = np.flatnonzero(counts)
    return ids, counts[ids]


def count_tokens_parallel(
    tokenizer: Any,
    texts: Iterable[Any],
    num_proc: int,
    batch_size: int = 1000,
    *,
    columns: str | Sequence[str] | None = None,
    progress: bool | None = None,
    chat_template_kwargs: Mapping[str, Any] | None = None,
) -> TokenCounts:
    """:func:`count_tokens` over ``num_proc`` worker processes, for any iterable of texts.

    The input is read once, in order, in batches of ``batch_size``; each batch is encoded and
    counted in a worker (a ``spawn`` pool that receives the tokenizer once) while at most
    ``2 * num_proc`` batches are in flight, so a stream larger than memory works. Equal to
    ``count_tokens(tokenizer, texts)``. For a ``datasets.Dataset``, ``count_tokens(...,
    num_proc=N)`` (``Dataset.map``) is the same; on a cluster, count shards with
    :func:`count_tokens` on the workers and add the results (see docs/distributed.md).

    Workers get the Rust backend alone where it encodes like the wrapper (they start without
    importing transformers), unless conversations need the chat template: a list or tuple
    holding one, a first batch holding one, or ``chat_template_kwargs`` given. A stream whose
    first conversation comes after its first batch raises ``VocabError`` naming ``num_proc``.

    Args:
        tokenizer: As in :func:`count_tokens`; it must pickle (Hugging Face and ``tokenizers``
            tokenizers do).
        texts: As in :func:`count_tokens` (``columns`` picks a dataset's text column).
        num_proc: Worker processes (1 counts in this process).
        batch_size: Texts per batch (per task sent to a worker).
        columns: For a dataset, as in :func:`count_tokens`.
        progress: Show a tqdm bar; default: on a terminal, for long input.
        chat_template_kwargs: As in :func:`count_tokens`.

    Returns:
        Counts carrying ``fingerprint(tokenizer)``.

    Raises:
        VocabError: Bad arguments or input (also when a worker finds it).
    """
    if isinstance(num_proc, bool) or not isinstance(num_proc, int) or num_proc < 1:
        raise VocabError(f"'num_proc' must be an int >= 1 (got {num_proc!r})")
    return count_tokens(  # num_proc=1 counts in this process
        tokenizer,
        texts,
        batch_size,
        columns=columns,
        progress=progress,
        num_proc=num_proc,
        chat_template_kwargs=chat_template_kwargs,
    )


def _count_in_pool(
    tokenizer: Any,
    texts: Any,
    num_proc: int,
    batch_size: int,
    columns: str | Sequence[str] | None,
    progress: bool | None,
    size: int | None = None,
    chat_kwargs: dict[str, Any] | None = None,
) -> tuple[np.ndarray[Any, np.dtype[np.int64]], int, int]:
    if size is None:
        size = tokenizer_size(tokenizer)
    batches = _input_batches(texts, batch_size, columns)
    first = next(batches, None)
    if first is not None:
        batches = chain([first], batches)
    total = len(texts) if isinstance(texts, Sized) else None
    counts = np.zeros(size, dtype=np.int64)
    bar = _progress(total, progress, batch_size)

    n_texts = 0
    n_chats = 0

    def add(result: tuple[list[int], list[int], int, int]) -> None:
        nonlocal n_texts, n_chats
        ids, freq, n, chats = result
        n_texts += n
        n_chats += chats
        np.add.at(counts, np.asarray(ids, dtype=np.int64), np.asarray(freq, dtype=np.int64))
        if bar is not None:
            bar.update(n)

    import multiprocessing
    from collections import deque

    # Send the Rust backend where it encodes exactly like the wrapper: workers then start
    # without importing transformers. Conversations need the wrapper's chat template.
    chats = (
        chat_kwargs is not None
        or (isinstance(texts, Sequence) and not _is_dataset(texts) and _any_conversation(texts))
        or (first is not None and _any_conversation(first))
    )
    backend = backend_of(tokenizer)
    plain = (
        not chats
        and backend is not None
        and (backend is tokenizer or uses_plain_backend(tokenizer, backend))
        and not getattr(tokenizer, "split_special_tokens", False)
        and not any(c.__module__ in _CHECKING_ONLY for c in type(tokenizer).__mro__)
    )
    shipped = backend if plain else tokenizer
    templates = shipped is not backend or backend is tokenizer
    context = multiprocessing.get_context("spawn")
    try:
        with context.Pool(num_proc, _init_worker, (shipped, size, chat_kwargs, templates)) as pool:
            pending: deque[Any] = deque()
            offset = 0
            for batch in batches:
                pending.append(pool.apply_async(_count_batch_in_worker, (batch, offset)))
                offset += len(batch)
                if len(pending) >= 2 * num_proc:
                    add(pending.popleft().get())
            while pending:
                add(pending.popleft().get())
    finally:
        if bar is not None:
            bar.close()
    return counts, n_texts, n_chats


def _special_ids(tokenizer: Any, size: int) -> set[int]:
    backend = backend_of(tokenizer)
    ids: set[int] = set()
    if backend is not None:
        ids.update(backend.get_added_tokens_decoder().keys())
    if backend is not tokenizer:
        ids.update(i for i in getattr(tokenizer, "all_special_ids", ()) or () if i is not None)
        decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
        ids.update(decoder.keys())
    return {int(i) for i in ids if 0 <= int(i) < size}


def resolve_keep(tokenizer: Any, keep: Iterable[int | str], size: int) -> set[int]:
    """The ids ``keep`` names (ids, or tokens looked up in ``tokenizer``), all below ``size``."""
    out: set[int] = set()
    vocab: dict[str, int] | None = None
    for item in keep:
        if isinstance(item, str):
            if vocab is None:
                vocab = dict(tokenizer.get_vocab())
            found = vocab.get(item)
            if found is None:
                raise VocabError(
                    f"'keep' names token {item!r}, which the tokenizer lacks; pass tokens of "
                    "its vocabulary or ids"
                )
            out.add(int(found))
        elif isinstance(item, bool) or not isinstance(item, int) or not 0 <= item < size:
            raise VocabError(
                f"'keep' must hold token strings or ids below len(tokenizer) {size} (got {item!r})"
            )
        else:
            out.add(item)
    return out


def plan_from_texts(
    tokenizer: Any,
    texts: Iterable[Any],
    min_count: int = 1,
    keep: Iterable[int | str] = (),
    batch_size: int = 1000,
    *,
    columns: str | Sequence[str] | None = None,
    progress: bool | None = None,
    num_proc: int | None = None,
    chat_template_kwargs: dict[str, Any] | None = None,
    model: Any = None,
    max_size: int | None = None,
    add_tokens: Sequence[str] | int | None = None,
) -> VocabPlan:
    """The plan keeping the tokens ``texts`` use, plus what exact encoding needs.

    Keeps ids seen at least ``min_count`` times, every special and added token, ``keep``
    (ids or token strings), and for fast tokenizers what the model needs to encode any text
    in range and the corpus exactly: the byte-level alphabet (byte-level BPE), the
    ``<0x00>`` .. ``<0xFF>`` pieces (``byte_fallback``), BPE merge closure and the
    lowest-scoring Unigram piece. The plan carries ``fingerprint(tokenizer)`` and metadata
    (tokenizer, ``min_count``, number of texts and tokens). Arguments as in
    :func:`count_tokens`.

    Every item is classified on its own, so one input may mix texts (str), ``(str, str)``
    pairs, pre-split word lists and conversations (lists of ``{"role": ..., "content": ...}``
    dicts; a ``datasets.Dataset`` with a ``messages`` column holds them too); an item that is
    none of these raises ``VocabError`` naming its index. Conversations are counted through
    ``tokenizer.apply_chat_template(conversation, tokenize=True, **chat_template_kwargs)``
    (see :mod:`vocab_adapters.planning.chat`) into the same counter as the texts, and every option
    below applies to every kind. ``chat_template_kwargs`` given while no item is a
    conversation raises ``VocabError``. With ``model``, every id its config and generation
    config name (bos/eos/pad/sep/decoder_start, lists included) is kept too.

    ``add_tokens`` adds tokens after the kept ids (:meth:`VocabPlan.adding`): a list of
    tokens in the tokenizer's own token form, or an int ``n`` for
    ``suggest_tokens(tokenizer, texts, n, min_count)`` (conversations suggest from their
    contents). Kept ids are counted with the original tokenizer all the same. A token the
    tokenizer already has as one id, an empty string or a duplicate raises ``VocabError``.

    ``max_size`` caps ``new_size``, added tokens included, in this order (see
    :mod:`vocab_adapters.planning.budget`): what encoding needs first (special and added tokens of
    the tokenizer, ``keep``, the model's config ids, unk, byte pieces or alphabet, Unigram's lowest
    piece, BPE merge closure); then the added tokens, in order; then ordinary ids by count (highest
    first, ties by lower id), each with its BPE merge closure, until the next would not fit. Such a
    plan may drop ids the texts use; the reduced tokenizer then splits those words into kept pieces.
    A ``max_size`` that binds nothing gives the plan without it; one below what encoding needs plus
    the added tokens raises ``VocabError`` naming both numbers, before any text is counted.

    >>> from tokenizers import Tokenizer, models, pre_tokenizers
    >>> tok = Tokenizer(models.WordLevel({"<unk>": 0, "a": 1, "b": 2, "c": 3}, "<unk>"))
    >>> tok.pre_tokenizer = pre_tokenizers.Whitespace()
    >>> plan_from_texts(tok, ["a c"], keep=["<unk>"]).kept
    (0, 1, 3)
    """
    from vocab_adapters.planning import chat

    _check_min_count(min_count)
    _check_max_size(max_size)
    kwargs = chat.template_kwargs(chat_template_kwargs)
    entry, size = _entry_and_size(tokenizer)
    keep_ids = resolve_keep(tokenizer, keep, size)
    if model is not None:
        keep_ids |= chat.config_token_ids(model, size)
    if isinstance(texts, (str, bytes)):
        raise VocabError("'texts' must be an iterable of texts, not a single str; wrap it: [text]")
    if _wants_suggestions(add_tokens) and not (
        isinstance(texts, (list, tuple)) or _is_dataset(texts)
    ):
        texts = list(texts)  # read twice: suggestions, then counts
    added = _resolve_add_tokens(tokenizer, texts, add_tokens, min_count, columns)
    if max_size is not None:
        _check_room(tokenizer, entry, size, keep_ids, max_size, len(added))
    document = entry.document if entry is not None else None
    counts, n_texts = _count_array(
        tokenizer, texts, batch_size, columns, progress, num_proc, size, document, kwargs
    )
    return _plan_from_array(
        tokenizer, counts, min_count, keep_ids, n_texts, entry, size, max_size, added
    )


def _wants_suggestions(add_tokens: Any) -> bool:
    return isinstance(add_tokens, int) and not isinstance(add_tokens, bool)


def _resolve_add_tokens(
    tokenizer: Any,
    texts: Any,
    add_tokens: Sequence[str] | int | None,
    min_count: int,
    columns: str | Sequence[str] | None = None,
) -> list[str]:
    """The tokens to add: the list given (checked), or ``n`` suggestions from ``texts``."""
    if add_tokens is None:
        return []
    if _wants_suggestions(add_tokens):
        from vocab_adapters.planning.suggest import suggest_with_reasons

        assert isinstance(add_tokens, int)
        if add_tokens < 0:
            raise VocabError(f"'add_tokens' as a number must be >= 0 (got {add_tokens})")
        if add_tokens == 0:
            return []
        items = (
            chain.from_iterable(_input_batches(texts, 1000, columns))
            if _is_dataset(texts)
            else texts
        )
        tokens, why = suggest_with_reasons(tokenizer, items, add_tokens, min_count)
        if why is not None:
            raise VocabError(
                f"'add_tokens' {add_tokens} found no token this tokenizer can add: the texts' "
                f"words of several pieces cannot be added ({why}); pass tokens of two pieces "
                "as add_tokens=[...], or load a tokenizer that can add them"
            )
        return tokens
    from vocab_adapters.tokenization.added_tokens import check_new_tokens

    if isinstance(add_tokens, (str, bytes)) or not isinstance(add_tokens, Iterable):
        raise VocabError(
            f"'add_tokens' must be a list of token strings or an int (got {add_tokens!r})"
        )
    tokens = list(add_tokens)
    check_new_tokens(_full_vocab(tokenizer), tokens)
    return tokens


def _full_vocab(tokenizer: Any) -> dict[str, int]:
    """Token → id of every token, added tokens included (HF tokenizers, tokenizers.Tokenizer)."""
    backend: Any = backend_of(tokenizer)
    if backend is tokenizer:  # a bare tokenizers.Tokenizer
        return dict(backend.get_vocab(with_added_tokens=True))
    return dict(tokenizer.get_vocab())


def plan_from_counts(
    tokenizer: Any,
    counts: TokenCounts,
    min_count: int = 1,
    keep: Iterable[int | str] = (),
    *,
    max_size: int | None = None,
) -> VocabPlan:
    """The plan :func:`plan_from_texts` builds, from counts made elsewhere (the reduce step).

    Count shards anywhere with :func:`count_tokens` (other processes, machines, a Dask or
    Ray cluster), send the :class:`vocabcore.TokenCounts` back (``to_json``), add them up,
    and build the plan here: special and added tokens, byte alphabets and the BPE merge
    closure are added exactly as :func:`plan_from_texts` adds them, so the plan equals the
    single-process one. ``counts.to_plan()`` alone keeps the counted ids only.

    Raises:
        PlanMismatchError: ``counts`` were made with another tokenizer.

    >>> from tokenizers import Tokenizer, models, pre_tokenizers
    >>> tok = Tokenizer(models.WordLevel({"<unk>": 0, "a": 1, "b": 2, "c": 3}, "<unk>"))
    >>> tok.pre_tokenizer = pre_tokenizers.Whitespace()
    >>> total = count_tokens(tok, ["a"]) + count_tokens(tok, ["c"])
    >>> plan_from_counts(tok, total, keep=["<unk>"]) == plan_from_texts(tok, ["a", "c"], keep=[0])
    True
    """
    _check_min_count(min_count)
    _check_max_size(max_size)
    if not isinstance(counts, TokenCounts):
        raise VocabError(f"'counts' must be TokenCounts (got {type(counts).__name__})")
    entry, size = _entry_and_size(tokenizer)
    backend = backend_of(tokenizer)
    expected = entry.fingerprint(backend, size) if entry is not None else fingerprint(tokenizer)
    if counts.vocab_size != size or counts.fingerprint != expected:
        raise PlanMismatchError(
            f"these counts were made with another tokenizer (vocab_size {counts.vocab_size}, "
            f"fingerprint {counts.fingerprint!r}; this tokenizer: {size}, {expected!r}); count "
            "every shard with this tokenizer"
        )
    keep_ids = resolve_keep(tokenizer, keep, size)
    array = np.asarray(counts.counts, dtype=np.int64)
    return _plan_from_array(tokenizer, array, min_count, keep_ids, None, entry, size, max_size)


def _check_min_count(min_count: Any) -> None:
    if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
        raise VocabError(f"'min_count' must be an int >= 1 (got {min_count!r})")


def _check_max_size(max_size: Any) -> None:
    if max_size is not None and (
        isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1
    ):
        raise VocabError(f"'max_size' must be None or an int >= 1 (got {max_size!r})")


def _entry_and_size(tokenizer: Any) -> tuple[Any, int]:
    """The parsed backend JSON (``None`` for a slow tokenizer) and ``len(tokenizer)``.

    One ``to_str()`` serves the size, the fingerprint and the closure of a plan build.
    """
    backend = backend_of(tokenizer)
    if backend is None:
        return None, tokenizer_size(tokenizer)
    entry = parsed(backend)
    return entry, entry.size(backend)


def _closer(
    tokenizer: Any, entry: Any, size: int, keep_ids: set[int]
) -> tuple[str | None, Callable[[VocabPlan], VocabPlan], set[int]]:
    """``(fingerprint, close, ids encoding needs)``: ``close`` adds the BPE merge closure.

    The ids are ``keep_ids`` plus the special and added tokens and the unk token; ``close``
    adds byte pieces or the byte alphabet, Unigram's lowest piece and the merge closure.
    """
    from vocab_adapters.planning.budget import unk_ids

    document = entry.document if entry is not None else None
    needed = keep_ids | _special_ids(tokenizer, size) | unk_ids(tokenizer, document)
    if entry is not None:
        from vocab_adapters.stages.fast_tokenizer import close_plan_with_document

        stamp = entry.fingerprint(backend_of(tokenizer), size)
        full_document = entry.document

        def close(p: VocabPlan) -> VocabPlan:
            return close_plan_with_document(p, full_document)

    else:
        stamp = fingerprint(tokenizer)

        def close(p: VocabPlan) -> VocabPlan:
            return close_plan(p, tokenizer)

    return stamp, close, needed


def _check_room(
    tokenizer: Any, entry: Any, size: int, keep_ids: set[int], max_size: int, added: int
) -> None:
    """Fail before counting when what encoding needs plus ``added`` exceeds ``max_size``."""
    from vocab_adapters.planning.budget import check_room

    stamp, close, needed = _closer(tokenizer, entry, size, keep_ids)
    check_room(close(VocabPlan(size, sorted(needed), stamp)).new_size, added, max_size)


def _plan_from_array(
    tokenizer: Any,
    counts: np.ndarray[Any, np.dtype[np.int64]],
    min_count: int,
    keep_ids: set[int],
    n_texts: int | None,
    entry: Any,
    size: int,
    max_size: int | None = None,
    added: Sequence[str] = (),
) -> VocabPlan:
    """The plan from per-id ``counts`` and the options: the one place a plan is built.

    What encoding needs (``keep_ids``, special and added tokens, unk, closure), then the ids
    counted ``min_count`` times or more, closed; with ``max_size``, :func:`fit_budget` takes
    ids by count into what ``added`` leaves of it; ``added`` comes last, in order.
    """
    stamp, close, keep_ids = _closer(tokenizer, entry, size, keep_ids)
    metadata: dict[str, Any] = {"tokenizer": _name_of(tokenizer), "min_count": min_count}
    if n_texts is not None:
        metadata["num_texts"] = n_texts
    metadata["num_tokens"] = int(counts.sum())
    chosen = np.flatnonzero(counts >= min_count).tolist()
    plan = VocabPlan(size, sorted(keep_ids.union(chosen)), stamp, metadata)
    closed = close(plan)
    if max_size is not None and closed.new_size + len(added) > max_size:
        from vocab_adapters.planning.budget import fit_budget

        base = close(VocabPlan(size, sorted(keep_ids), plan.fingerprint))
        base = base.with_metadata(**metadata, max_size=max_size)
        closed = fit_budget(tokenizer, base, counts, min_count, max_size, close, len(added))
    return closed.adding(added) if added else closed
