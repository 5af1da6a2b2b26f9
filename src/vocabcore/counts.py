"""``TokenCounts``: per-id counts that merge, so counting is a map-reduce over shards."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from itertools import chain
from typing import Any

import attrs

from vocabcore import codec
from vocabcore.errors import PlanMismatchError, VocabError
from vocabcore.plan import VocabPlan
from vocabcore.validate import check_ids, check_int

__all__ = ["TokenCounts"]


def _counts_tuple(value: Iterable[int]) -> tuple[int, ...]:
    return tuple(value)


@attrs.frozen(repr=False)
class TokenCounts:
    """How often each id of a vocabulary occurred; immutable, mergeable, serializable.

    Count each shard of a corpus anywhere (another process, another machine), send the counts
    back as JSON, add them up, and build the plan once.

    Example:
        >>> a = TokenCounts.from_ids([[1, 2, 2]], vocab_size=4)
        >>> b = TokenCounts.from_ids([[2, 3]], vocab_size=4)
        >>> (a + b).counts
        (0, 1, 3, 1)
        >>> (a + b).to_plan(min_count=2, keep=[0]).kept
        (0, 2)
    """

    vocab_size: int
    counts: tuple[int, ...] = attrs.field(converter=_counts_tuple)
    fingerprint: str | None = None

    def __attrs_post_init__(self) -> None:
        check_int("vocab_size", self.vocab_size, minimum=1)
        if len(self.counts) != self.vocab_size:
            raise VocabError(
                f"'counts' must have length vocab_size {self.vocab_size} (got {len(self.counts)})"
            )
        for c in self.counts:
            if isinstance(c, bool) or not isinstance(c, int) or c < 0:
                raise VocabError(f"'counts' must hold ints >= 0 (got {c!r})")

    @classmethod
    def zeros(cls, vocab_size: int, fingerprint: str | None = None) -> TokenCounts:
        """Counts of an empty corpus."""
        check_int("vocab_size", vocab_size, minimum=1)
        return cls(vocab_size, (0,) * vocab_size, fingerprint)

    @classmethod
    def from_mapping(
        cls, counts: Mapping[int, int], vocab_size: int, fingerprint: str | None = None
    ) -> TokenCounts:
        """Counts from ``{id: count}``."""
        check_int("vocab_size", vocab_size, minimum=1)
        ids = check_ids("counts", counts.keys(), vocab_size)
        dense = [0] * vocab_size
        for i in ids:
            dense[i] = counts[i]
        return cls(vocab_size, dense, fingerprint)

    @classmethod
    def from_ids(
        cls,
        id_sequences: Iterable[Iterable[int]],
        vocab_size: int,
        fingerprint: str | None = None,
    ) -> TokenCounts:
        """Count the ids of tokenized texts."""
        return cls.from_mapping(Counter(chain.from_iterable(id_sequences)), vocab_size, fingerprint)

    @property
    def total(self) -> int:
        """Number of tokens counted."""
        return sum(self.counts)

    def merge(self, other: TokenCounts) -> TokenCounts:
        """Add two counts over the same vocabulary (same size and fingerprint)."""
        if not isinstance(other, TokenCounts):
            raise VocabError(f"'other' must be TokenCounts (got {type(other).__name__})")
        if other.vocab_size != self.vocab_size or other.fingerprint != self.fingerprint:
            raise PlanMismatchError(
                "cannot merge counts over different vocabularies "
                f"(vocab_size {self.vocab_size} vs {other.vocab_size}, fingerprint "
                f"{self.fingerprint!r} vs {other.fingerprint!r}); count every shard with the "
                "same tokenizer"
            )
        return TokenCounts(
            self.vocab_size, map(int.__add__, self.counts, other.counts), self.fingerprint
        )

    def __add__(self, other: TokenCounts) -> TokenCounts:
        return self.merge(other)

    def to_plan(
        self,
        min_count: int = 1,
        keep: Iterable[int] = (),
        metadata: Mapping[str, Any] | None = None,
    ) -> VocabPlan:
        """The plan keeping ids counted at least ``min_count`` times, and ``keep``."""
        return VocabPlan.from_counts(
            self.counts, self.vocab_size, keep, min_count, self.fingerprint, metadata
        )

    def to_json(self) -> str:
        """Serialize sparsely (only non-zero counts); equal counts give identical text."""
        return codec.counts_to_json(self.vocab_size, self.counts, self.fingerprint)

    @classmethod
    def from_json(cls, text: str | bytes) -> TokenCounts:
        """Read counts written by :meth:`to_json`."""
        fields = codec.counts_from_json(text)
        return cls.from_mapping(fields.counts, fields.vocab_size, fields.fingerprint)

    def __repr__(self) -> str:
        return f"TokenCounts(vocab_size={self.vocab_size}, total={self.total})"
