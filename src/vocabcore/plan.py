"""``VocabPlan``: which ids of a vocabulary are kept, and how old and new ids map."""

from __future__ import annotations

import json
from array import array
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from itertools import chain
from pathlib import Path
from types import MappingProxyType
from typing import Any

import attrs

from vocabcore import codec
from vocabcore.errors import PlanMismatchError, VocabError
from vocabcore.validate import check_ids, check_int

__all__ = ["VocabPlan"]


def _freeze_metadata(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, Mapping):
        raise VocabError(f"'metadata' must be a mapping (got {type(value).__name__})")
    for key in value:
        if not isinstance(key, str):
            raise VocabError(f"'metadata' keys must be str (got {key!r})")
    try:
        text = json.dumps(dict(value), sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise VocabError(f"'metadata' must be JSON-serializable ({exc})") from None
    # A private copy through JSON, so later changes to the caller's dict don't leak in.
    frozen: dict[str, Any] = json.loads(text)
    return MappingProxyType(frozen)


def _check_kept(instance: Any, attribute: Any, kept: tuple[int, ...]) -> None:
    del instance, attribute
    previous = -1
    for position, i in enumerate(kept):
        if isinstance(i, bool) or not isinstance(i, int):
            raise VocabError(f"'kept' must hold int ids (got {type(i).__name__} {i!r})")
        if i <= previous:
            what = "duplicate" if i == previous else "unsorted"
            raise VocabError(
                f"'kept' must be strictly increasing (got {what} id {i} at position {position})"
            )
        previous = i


def _ids_tuple(value: Iterable[int]) -> tuple[int, ...]:
    return tuple(value)


def _added_tuple(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, (str, bytes)):
        raise VocabError(f"'added' must be a sequence of token strings (got a single {value!r})")
    return tuple(value)


def _check_added(instance: Any, attribute: Any, added: tuple[str, ...]) -> None:
    del instance, attribute
    seen: set[str] = set()
    for position, token in enumerate(added):
        if not isinstance(token, str):
            raise VocabError(
                f"'added' must hold token strings (got {type(token).__name__} {token!r} at "
                f"position {position})"
            )
        if not token:
            raise VocabError(
                f"'added' must not hold an empty string (at position {position}); drop it"
            )
        if token in seen:
            raise VocabError(
                f"'added' holds {token!r} twice (again at position {position}); list each "
                "token once"
            )
        seen.add(token)


def _check_fingerprint(instance: Any, attribute: Any, value: str | None) -> None:
    del instance, attribute
    if value is not None and (not isinstance(value, str) or not value):
        raise VocabError(f"'fingerprint' must be a non-empty str or None (got {value!r})")


@attrs.frozen(repr=False)
class VocabPlan:
    """An immutable choice of the ids of a vocabulary to keep.

    New ids are the ranks of the kept old ids, so the order of tokens is preserved. A plan
    may also add tokens (``added``, strings in the tokenizer's own token form): they take the
    new ids after the kept ones, in order, and have no old id.
    Equality and hashing use ``vocab_size``, ``kept``, ``fingerprint`` and ``added``;
    ``metadata`` rides along (it is serialized) but takes no part in equality.

    Example:
        >>> plan = VocabPlan.from_counts({5: 3, 2: 1, 7: 0}, vocab_size=10, keep=(0,))
        >>> plan.kept
        (0, 2, 5)
        >>> plan.old_to_new(5), plan.new_to_old(1), plan.old_to_new(7)
        (2, 2, None)
        >>> plan.remap([5, 0, 2])
        [2, 0, 1]
    """

    vocab_size: int = attrs.field(
        validator=lambda _s, _a, v: check_int("vocab_size", v, minimum=1) and None
    )
    kept: tuple[int, ...] = attrs.field(converter=_ids_tuple, validator=_check_kept)
    fingerprint: str | None = attrs.field(default=None, validator=_check_fingerprint)
    metadata: Mapping[str, Any] = attrs.field(
        default=None, converter=_freeze_metadata, eq=False, hash=False
    )
    added: tuple[str, ...] = attrs.field(
        default=(), converter=_added_tuple, validator=_check_added, kw_only=True
    )
    _old_to_new: array[int] = attrs.field(init=False, eq=False, hash=False, repr=False)

    def __attrs_post_init__(self) -> None:
        kept = self.kept
        if kept and kept[-1] >= self.vocab_size:
            raise VocabError(
                f"'kept' must hold ids below vocab_size {self.vocab_size} (got {kept[-1]})"
            )
        table = array("q", [-1]) * self.vocab_size
        for new, old in enumerate(kept):
            table[old] = new
        object.__setattr__(self, "_old_to_new", table)

    # -- constructors -------------------------------------------------------------------------

    @classmethod
    def from_counts(
        cls,
        counts: Mapping[int, int] | Sequence[int],
        vocab_size: int,
        keep: Iterable[int] = (),
        min_count: int = 1,
        fingerprint: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> VocabPlan:
        """Keep every id counted at least ``min_count`` times, and every id in ``keep``.

        Args:
            counts: ``{id: count}``, or a sequence of length ``vocab_size`` with one count per id.
            vocab_size: Size of the full vocabulary (``len(tokenizer)``).
            keep: Ids kept whatever their count (special tokens, say).
            min_count: Smallest count that keeps an id; at least 1.
            fingerprint: Identity of the tokenizer the counts came from.
            metadata: JSON-serializable notes stored with the plan.

        >>> VocabPlan.from_counts([0, 2, 1, 5], vocab_size=4, min_count=2).kept
        (1, 3)
        """
        check_int("vocab_size", vocab_size, minimum=1)
        check_int("min_count", min_count, minimum=1)
        keep_ids = check_ids("keep", keep, vocab_size)
        if isinstance(counts, Mapping):
            ids = check_ids("counts", counts.keys(), vocab_size)
            values = [counts[i] for i in ids]
            _check_counts(values)
            chosen = {i for i, c in zip(ids, values, strict=False) if c >= min_count}
        elif isinstance(counts, (Sequence, array)) and not isinstance(counts, (str, bytes)):
            if len(counts) != vocab_size:
                raise VocabError(
                    f"'counts' as a sequence must have length vocab_size {vocab_size} "
                    f"(got {len(counts)})"
                )
            values = list(counts)
            _check_counts(values)
            chosen = {i for i, c in enumerate(values) if c >= min_count}
        else:
            raise VocabError(
                "'counts' must be a mapping {id: count} or a sequence of counts "
                f"(got {type(counts).__name__})"
            )
        chosen.update(keep_ids)
        return cls(vocab_size, sorted(chosen), fingerprint, metadata)

    @classmethod
    def from_ids(
        cls,
        id_sequences: Iterable[Iterable[int]],
        vocab_size: int,
        keep: Iterable[int] = (),
        min_count: int = 1,
        fingerprint: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> VocabPlan:
        """Count the ids of tokenized texts and keep those seen ``min_count`` times.

        >>> VocabPlan.from_ids([[3, 1], [3]], vocab_size=5, keep=[0]).kept
        (0, 1, 3)
        """
        if isinstance(id_sequences, (str, bytes)):
            raise VocabError("'id_sequences' must be an iterable of id sequences (got a str)")
        counts = Counter(chain.from_iterable(id_sequences))
        return cls.from_counts(counts, vocab_size, keep, min_count, fingerprint, metadata)

    @classmethod
    def identity(
        cls,
        vocab_size: int,
        fingerprint: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> VocabPlan:
        """The plan that keeps every id: the unit of :meth:`then`.

        >>> VocabPlan.identity(3).kept
        (0, 1, 2)
        """
        check_int("vocab_size", vocab_size, minimum=1)
        return cls(vocab_size, range(vocab_size), fingerprint, metadata)

    # -- maps ---------------------------------------------------------------------------------

    @property
    def new_size(self) -> int:
        """Size of the new vocabulary: kept ids, then added tokens."""
        return len(self.kept) + len(self.added)

    @property
    def removed_fraction(self) -> float:
        """Fraction of the original vocabulary the plan drops, between 0 and 1."""
        return 1.0 - len(self.kept) / self.vocab_size

    @property
    def is_identity(self) -> bool:
        """Whether the plan keeps every id and adds nothing."""
        return len(self.kept) == self.vocab_size and not self.added

    def old_to_new(self, old_id: int) -> int | None:
        """New id of ``old_id``, or ``None`` when the plan drops it."""
        check_int("old_id", old_id)
        if old_id >= self.vocab_size:
            raise VocabError(f"'old_id' must be below vocab_size {self.vocab_size} (got {old_id})")
        new = self._old_to_new[old_id]
        return None if new < 0 else new

    def new_to_old(self, new_id: int) -> int | None:
        """Old id of ``new_id``, or ``None`` for an added token.

        >>> plan = VocabPlan(4, (1, 3)).adding(["Ġnew"])
        >>> plan.new_to_old(1), plan.new_to_old(2), plan.new_size
        (3, None, 3)
        """
        check_int("new_id", new_id)
        if new_id >= self.new_size:
            raise VocabError(f"'new_id' must be below new_size {self.new_size} (got {new_id})")
        kept = self.kept
        return kept[new_id] if new_id < len(kept) else None

    def added_id(self, token: str) -> int:
        """New id of the added token ``token``.

        >>> VocabPlan(4, (1, 3)).adding(["a", "b"]).added_id("b")
        3
        """
        try:
            return len(self.kept) + self.added.index(token)
        except ValueError:
            raise VocabError(f"{token!r} is not one of the plan's added tokens") from None

    def adding(self, tokens: Iterable[str]) -> VocabPlan:
        """This plan, also adding ``tokens`` after the kept ids (and earlier added tokens).

        Tokens are strings in the tokenizer's own token form, as ``get_vocab()`` shows them
        (``"Ġword"`` in byte-level BPE, ``"▁word"`` with Metaspace, ``"word"`` / ``"##ing"`` in
        WordPiece). Fingerprint and metadata carry over.

        Raises:
            VocabError: A token is not a str, is empty, is listed twice or is already added.

        >>> plan = VocabPlan(5, (0, 2)).adding(["Ġibuprofen"])
        >>> plan.added, plan.new_size, plan.new_to_old(2)
        (('Ġibuprofen',), 3, None)
        """
        if isinstance(tokens, (str, bytes)):
            raise VocabError(
                f"'tokens' must be an iterable of token strings (got a single {tokens!r}); "
                "wrap it in a list"
            )
        added = tuple(tokens)
        return VocabPlan(
            self.vocab_size,
            self.kept,
            self.fingerprint,
            self.metadata,
            added=self.added + added,
        )

    def is_kept(self, old_id: int) -> bool:
        """Whether the plan keeps ``old_id``."""
        return self.old_to_new(old_id) is not None

    def old_to_new_table(self) -> array[int]:
        """A copy of the full old→new table (``-1`` marks dropped ids), for vectorised use."""
        return array("q", self._old_to_new)

    def remap(self, ids: Iterable[int], unk: int | None = None) -> list[int]:
        """Map old ids to new ids.

        Args:
            ids: Old ids.
            unk: ``None`` to raise on a dropped id, or an OLD id the plan keeps, whose new id
                replaces every dropped id.

        Raises:
            VocabError: An id is out of range, or dropped while ``unk`` is ``None``.

        >>> plan = VocabPlan(6, (0, 3, 4))
        >>> plan.remap([4, 3, 0])
        [2, 1, 0]
        >>> plan.remap([5, 3], unk=0)
        [0, 1]
        """
        values = ids if isinstance(ids, list) else list(ids)
        if not values:
            return []
        table = self._old_to_new
        if unk is not None:
            unk_new = self.old_to_new(unk)
            if unk_new is None:
                raise VocabError(
                    f"'unk' must be an old id that the plan keeps (got {unk}, which it drops)"
                )
        try:
            lo = min(values)
            out = list(map(table.__getitem__, values))
        except (TypeError, IndexError):
            bad = next(
                (
                    i
                    for i in values
                    if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < self.vocab_size
                ),
                None,
            )
            raise VocabError(
                f"'ids' must hold ints in [0, {self.vocab_size}) (got {bad!r})"
            ) from None
        if lo < 0:
            raise VocabError(f"'ids' must hold ints in [0, {self.vocab_size}) (got {lo})")
        if min(out) < 0:
            if unk is None:
                dropped = values[out.index(-1)]
                raise VocabError(
                    f"id {dropped} is not kept by the plan; pass unk=<kept old id> to map "
                    "dropped ids to an unknown token"
                )
            replacement: int = unk_new  # type: ignore[assignment]
            out = [replacement if i < 0 else i for i in out]
        return out

    # -- algebra ------------------------------------------------------------------------------

    def union(self, other: VocabPlan) -> VocabPlan:
        """The plan keeping every id that either plan keeps.

        >>> VocabPlan(5, (0, 2)).union(VocabPlan(5, (2, 4))).kept
        (0, 2, 4)
        """
        if not isinstance(other, VocabPlan):
            raise VocabError(f"'other' must be a VocabPlan (got {type(other).__name__})")
        if other.vocab_size != self.vocab_size:
            raise PlanMismatchError(
                f"cannot unite plans over different vocabularies (vocab_size {self.vocab_size} "
                f"vs {other.vocab_size}); build both plans from the same tokenizer"
            )
        if other.fingerprint != self.fingerprint:
            raise PlanMismatchError(
                f"cannot unite plans built for different tokenizers (fingerprint "
                f"{self.fingerprint!r} vs {other.fingerprint!r}); build both from one tokenizer"
            )
        kept = sorted(set(self.kept).union(other.kept))
        mine = set(self.added)
        added = self.added + tuple(t for t in other.added if t not in mine)
        return VocabPlan(self.vocab_size, kept, self.fingerprint, added=added)

    def keeping(self, ids: Iterable[int]) -> VocabPlan:
        """This plan, also keeping ``ids``; the same object when it keeps them all already.

        Fingerprint and metadata carry over. Adapters use it to add what a tokenizer needs
        (BPE merge parents, byte alphabets, fallback pieces) to a plan.

        >>> VocabPlan(6, (0, 3)).keeping([5, 3]).kept
        (0, 3, 5)
        """
        extra = set(check_ids("ids", ids, self.vocab_size)).difference(self.kept)
        if not extra:
            return self
        kept = sorted(extra.union(self.kept))
        return VocabPlan(self.vocab_size, kept, self.fingerprint, self.metadata, added=self.added)

    def then(self, other: VocabPlan) -> VocabPlan:
        """Compose: ``other`` was built on the vocabulary this plan produces.

        The result maps the original vocabulary straight to ``other``'s reduced one, and keeps
        this plan's fingerprint.

        >>> VocabPlan(6, (1, 3, 5)).then(VocabPlan(3, (0, 2))).kept
        (1, 5)
        """
        if not isinstance(other, VocabPlan):
            raise VocabError(f"'other' must be a VocabPlan (got {type(other).__name__})")
        if self.added or other.added:
            which = "this plan" if self.added else "'other'"
            raise VocabError(
                f"cannot compose plans that add tokens ({which} adds "
                f"{(self.added or other.added)[:3]!r}...): an added token has no old id to map "
                "through; compose the plans without added tokens, then call .adding(...) on the "
                "result"
            )
        if other.vocab_size != self.new_size:
            raise PlanMismatchError(
                f"'other' must be built on this plan's reduced vocabulary of new_size "
                f"{self.new_size} (got vocab_size {other.vocab_size})"
            )
        kept = self.kept
        return VocabPlan(self.vocab_size, [kept[j] for j in other.kept], self.fingerprint)

    # -- serialization ------------------------------------------------------------------------

    def with_metadata(self, **entries: Any) -> VocabPlan:
        """A copy of the plan with ``entries`` added to its metadata."""
        merged = dict(self.metadata)
        merged.update(entries)
        return VocabPlan(self.vocab_size, self.kept, self.fingerprint, merged, added=self.added)

    def to_json(self) -> str:
        """Serialize to versioned JSON (``"format": 2``); equal plans give identical text."""
        return codec.plan_fields_to_json(
            self.vocab_size, self.kept, self.fingerprint, self.metadata, self.added
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> VocabPlan:
        """Read a plan written by :meth:`to_json` (format 1 or 2); ``VocabError`` on bad input."""
        fields = codec.plan_fields_from_json(text)
        return cls(
            fields.vocab_size,
            fields.kept,
            fields.fingerprint,
            fields.metadata,
            added=fields.added,
        )

    def save(self, path: str | Path) -> None:
        """Write the plan's JSON to ``path`` (atomically: a partial file is never left)."""
        target = Path(path)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(self.to_json() + "\n", encoding="utf-8")
        tmp.replace(target)

    @classmethod
    def load(cls, path: str | Path) -> VocabPlan:
        """Read a plan saved by :meth:`save`."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise VocabError(f"cannot read plan file {str(path)!r}: {exc.strerror}") from None
        return cls.from_json(text)

    def __repr__(self) -> str:
        fp = f", fingerprint={self.fingerprint!r}" if self.fingerprint else ""
        added = f", added={len(self.added)}" if self.added else ""
        return f"VocabPlan(vocab_size={self.vocab_size}, new_size={self.new_size}{added}{fp})"


def _check_counts(values: list[Any]) -> None:
    for c in values:
        if isinstance(c, bool) or not isinstance(c, int):
            raise VocabError(f"'counts' must hold int counts (got {type(c).__name__} {c!r})")
    if values and min(values) < 0:
        raise VocabError(f"'counts' must hold counts >= 0 (got {min(values)})")
