"""``fingerprint``: a stable hash of a tokenizer's id → token mapping, and nothing else."""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["fingerprint", "id_to_token_list", "backend_of", "tokenizer_size"]


def backend_of(tokenizer: Any) -> Any | None:
    """The ``tokenizers.Tokenizer`` behind ``tokenizer``, or ``None`` for a slow tokenizer."""
    from tokenizers import Tokenizer

    if isinstance(tokenizer, Tokenizer):
        return tokenizer
    backend = getattr(tokenizer, "_tokenizer", None)
    if isinstance(backend, Tokenizer):
        return backend
    return None


def tokenizer_size(tokenizer: Any) -> int:
    """``len(tokenizer)``, added tokens included, for HF and ``tokenizers`` objects alike."""
    backend = backend_of(tokenizer)
    if backend is tokenizer:
        return int(backend.get_vocab_size(with_added_tokens=True))
    return len(tokenizer)


def id_to_token_list(tokenizer: Any) -> list[str | None]:
    """The token of every id ``0 .. len(tokenizer) - 1`` (``None`` for an id with none)."""
    backend = backend_of(tokenizer)
    size = tokenizer_size(tokenizer)
    if backend is not None:
        tokens: list[str | None] = [None] * size
        seen = [False] * size
        clashes: list[int] = []
        for token, i in backend.get_vocab(with_added_tokens=True).items():
            if 0 <= i < size:
                if seen[i]:
                    clashes.append(i)
                seen[i] = True
                tokens[i] = token
        for i in clashes:  # two strings share an id: ask the backend which one it means
            tokens[i] = backend.id_to_token(i)
        return tokens
    converted = tokenizer.convert_ids_to_tokens(list(range(size)))
    return [None if t is None else str(t) for t in converted]


def fingerprint(tokenizer: Any) -> str:
    """Hash the id → token mapping of ``tokenizer`` (added tokens included).

    A slow and a fast tokenizer of the same vocabulary share a fingerprint, and so do a
    tokenizer and its save/load round trip; any change to the vocabulary changes it.

    >>> from tokenizers import Tokenizer, models
    >>> tok = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    >>> fingerprint(tok)[:7]
    'sha256:'
    """
    text = json.dumps(id_to_token_list(tokenizer), ensure_ascii=False, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()
