"""Small argument checks that produce attrs-style messages."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from vocabcore.errors import VocabError


def check_int(name: str, value: Any, *, minimum: int = 0) -> int:
    """Return ``value`` if it is an int (not a bool) ``>= minimum``, else raise ``VocabError``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise VocabError(f"'{name}' must be an int (got {type(value).__name__} {value!r})")
    if value < minimum:
        raise VocabError(f"'{name}' must be >= {minimum} (got {value})")
    return value


def check_ids(name: str, ids: Iterable[Any], vocab_size: int) -> list[int]:
    """Return ``ids`` as a list of ints in ``[0, vocab_size)``, else raise ``VocabError``."""
    out = list(ids)
    for i in out:
        if isinstance(i, bool) or not isinstance(i, int):
            raise VocabError(f"'{name}' must hold int ids (got {type(i).__name__} {i!r})")
    if out:
        lo, hi = min(out), max(out)
        if lo < 0:
            raise VocabError(f"'{name}' must hold ids >= 0 (got {lo})")
        if hi >= vocab_size:
            raise VocabError(f"'{name}' must hold ids below vocab_size {vocab_size} (got {hi})")
    return out
