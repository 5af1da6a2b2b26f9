"""``fingerprint``: a stable hash of a tokenizer's id → token mapping, and nothing else.

For a fast tokenizer the mapping is read from the backend's own JSON (``to_str()``), parsed
once and cached by its text: the same parse serves :func:`fingerprint` and the
fast-tokenizer adapter, so checking a plan against a 250k-token vocabulary costs one
serialization and a string comparison after the first time.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from typing import Any

__all__ = [
    "backend_of",
    "fingerprint",
    "id_to_token_list",
    "load_json",
    "parsed",
    "dump_json",
    "tokenizer_document",
    "tokenizer_size",
]

_orjson: Any
try:  # orjson parses a large tokenizer.json several times faster than the stdlib
    import orjson as _orjson
except ImportError:  # pragma: no cover - orjson is a dependency; this is a safety net
    _orjson = None


def load_json(text: str | bytes) -> Any:
    """Parse JSON text (with orjson when available)."""
    if _orjson is not None:
        return _orjson.loads(text)
    return json.loads(text)


def dump_json(value: Any) -> str:
    """Compact JSON text, non-ASCII kept as is: the same text with orjson or the stdlib.

    >>> dump_json(["a", None, "é"])
    '["a",null,"é"]'
    """
    if _orjson is not None:
        try:
            return str(_orjson.dumps(value).decode("utf-8"))
        except TypeError:  # lone surrogates and other things orjson refuses
            pass
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def backend_of(tokenizer: Any) -> Any | None:
    """The ``tokenizers.Tokenizer`` behind ``tokenizer``, or ``None`` for a slow tokenizer."""
    from tokenizers import Tokenizer

    if isinstance(tokenizer, Tokenizer):
        return tokenizer
    backend = getattr(tokenizer, "_tokenizer", None)
    if isinstance(backend, Tokenizer):
        return backend
    return None


def keep_needed(plan: Any, needed: set[int], owner: str = "the tokenizer") -> Any:
    """``plan.keeping(needed)``, refusing ids beyond ``plan.vocab_size`` with the fix.

    Raises:
        PlanMismatchError: ``needed`` holds an id the plan's vocabulary doesn't have, so the
            plan was built for a smaller vocabulary than ``owner``'s.
    """
    bad = [i for i in needed if i >= plan.vocab_size]
    if bad:
        from vocabcore import PlanMismatchError

        raise PlanMismatchError(
            f"{owner} holds id {max(bad)}, outside the plan's vocab_size {plan.vocab_size}; "
            f"build the plan from {owner}"
        )
    return plan.keeping(needed)


def check_size(plan: Any, tokenizer: Any) -> int:
    """``len(tokenizer)``, which must be ``plan.vocab_size``.

    Raises:
        PlanMismatchError: The sizes differ.
    """
    size = tokenizer_size(tokenizer)
    if plan.vocab_size != size:
        from vocabcore import PlanMismatchError

        raise PlanMismatchError(
            f"the plan's vocab_size is {plan.vocab_size} but the tokenizer has {size} tokens "
            "(len(tokenizer)); build the plan from this tokenizer"
        )
    return size


def tokenizer_size(tokenizer: Any) -> int:
    """``len(tokenizer)``, added tokens included, for HF and ``tokenizers`` objects alike."""
    backend = backend_of(tokenizer)
    if backend is tokenizer:
        return int(backend.get_vocab_size(with_added_tokens=True))
    return len(tokenizer)


class _Parsed:
    """One parsed ``tokenizer.json`` and what is derived from it, computed on demand."""

    __slots__ = ("_fingerprint", "_size", "_tokens", "document", "extras", "text")

    def __init__(self, text: str, document: dict[str, Any]) -> None:
        self.text = text
        self.document = document
        self.extras: dict[Any, Any] = {}  # other derived data, cached by its users
        self._tokens: list[str | None] | None = None
        self._fingerprint: str | None = None
        self._size: int | None = None

    def size(self, backend: Any) -> int:
        """``backend.get_vocab_size(with_added_tokens=True)`` (``len(tokenizer)``), read once.

        That call builds the whole token map in tokenizers (tens of ms on 250k tokens); the
        same number is the count of distinct strings of the model's vocabulary and the
        added tokens, read here from the parsed document and kept with it.
        """
        if self._size is None:
            model = self.document["model"]
            vocab = model.get("vocab")
            if isinstance(vocab, dict):
                strings: set[str] = set(vocab)
            elif isinstance(vocab, list) and model.get("type") == "Unigram":
                strings = {piece[0] for piece in vocab}
            else:  # a model we cannot read: ask the backend
                self._size = int(backend.get_vocab_size(with_added_tokens=True))
                return self._size
            strings.update(a["content"] for a in self.document.get("added_tokens") or ())
            self._size = len(strings)
        return self._size

    def tokens(self, backend: Any, size: int) -> list[str | None]:
        """The token of every id below ``size`` (shared: do not mutate)."""
        if self._tokens is None or len(self._tokens) != size:
            self._tokens = _tokens_of_document(backend, self.document, size)
            self._fingerprint = None
        return self._tokens

    def fingerprint(self, backend: Any, size: int) -> str:
        """The fingerprint of the id → token mapping below ``size``."""
        tokens = self.tokens(backend, size)
        if self._fingerprint is None:
            self._fingerprint = _digest(tokens)
        return self._fingerprint


_CACHE: OrderedDict[int, list[_Parsed]] = OrderedDict()
_CACHE_SIZE = 4
_LOCK = threading.Lock()


def parsed(backend: Any, text: str | None = None) -> _Parsed:
    """The cached parse of ``backend.to_str()`` (pass ``text`` if you already have it)."""
    if text is None:
        text = backend.to_str()
    key = hash(text)
    with _LOCK:
        for entry in _CACHE.get(key, ()):
            if entry.text == text:
                _CACHE.move_to_end(key)
                return entry
    document = load_json(text)
    if not isinstance(document, dict) or not isinstance(document.get("model"), dict):
        from vocabcore import VocabError

        raise VocabError("the tokenizer's JSON has no 'model' object; it is not a tokenizer.json")
    entry = _Parsed(text, document)
    with _LOCK:
        _CACHE.setdefault(key, []).append(entry)
        _CACHE.move_to_end(key)
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return entry


def tokenizer_document(tokenizer: Any) -> tuple[str, dict[str, Any]]:
    """The backend's ``to_str()`` and its parse (cached; treat the dict as read-only).

    Raises:
        VocabError: ``tokenizer`` has no ``tokenizers`` backend (a slow tokenizer).
    """
    backend = backend_of(tokenizer)
    if backend is None:
        from vocabcore import VocabError

        raise VocabError(
            f"{type(tokenizer).__name__} has no 'tokenizers' backend; pass a fast tokenizer "
            "or a tokenizers.Tokenizer"
        )
    entry = parsed(backend)
    return entry.text, entry.document


def _tokens_of_document(backend: Any, document: dict[str, Any], size: int) -> list[str | None]:
    tokens: list[str | None] = [None] * size
    model = document["model"]
    vocab = model.get("vocab")
    ambiguous: list[int] = []
    if model.get("type") == "Unigram" and isinstance(vocab, list):
        for i, piece in enumerate(vocab[:size]):
            tokens[i] = piece[0]
    elif isinstance(vocab, dict):
        for token, i in vocab.items():
            if 0 <= i < size:
                if tokens[i] is not None:
                    ambiguous.append(i)
                tokens[i] = token
    else:  # a model we cannot read: ask the backend id by id
        return [backend.id_to_token(i) for i in range(size)]
    for added in document.get("added_tokens") or ():
        i = added["id"]
        if 0 <= i < size:
            tokens[i] = added["content"]
    for i in ambiguous:  # two strings share an id: ask the backend which one it means
        tokens[i] = backend.id_to_token(i)
    return tokens


def id_to_token_list(tokenizer: Any) -> list[str | None]:
    """The token of every id ``0 .. len(tokenizer) - 1`` (``None`` for an id with none).

    >>> from tokenizers import Tokenizer, models
    >>> id_to_token_list(Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1}, unk_token="[UNK]")))
    ['[UNK]', 'a']
    """
    backend = backend_of(tokenizer)
    size = tokenizer_size(tokenizer)
    if backend is not None:
        return list(parsed(backend).tokens(backend, size))
    converted = tokenizer.convert_ids_to_tokens(list(range(size)))
    return [None if t is None else str(t) for t in converted]


def _digest(tokens: list[str | None]) -> str:
    text = dump_json(tokens)
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def fingerprint(tokenizer: Any) -> str:
    """Hash the id → token mapping of ``tokenizer`` (added tokens included).

    A slow and a fast tokenizer of the same vocabulary share a fingerprint, and so do a
    tokenizer and its save/load round trip; any change to the vocabulary changes it.

    >>> from tokenizers import Tokenizer, models
    >>> tok = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    >>> fingerprint(tok)[:7]
    'sha256:'
    """
    backend = backend_of(tokenizer)
    if backend is None:
        return _digest(id_to_token_list(tokenizer))
    return parsed(backend).fingerprint(backend, tokenizer_size(tokenizer))
