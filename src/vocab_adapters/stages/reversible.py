"""The one protocol every adapter implements, and the one record of what is applied.

Each adapter module (``fast_tokenizer``, ``slow_tokenizer``, ``embeddings``, ``config``,
``optimizer``) follows the same two-phase shape, both ways::

    prepare(plan, target, ...) -> Prepared     # validate everything, compute the reduced
                                               # state out of place; touch nothing
    Prepared.commit() -> Applied               # install it with plain assignments

    Applied.prepare_revert(inputs) -> RevertStep   # validate, compute the final state (every
                                               # allocation); touch nothing the user sees
    RevertStep.commit()                        # install it with plain assignments
    RevertStep.undo()                          # put the reduced state back (a later stage's
                                               # commit failed)
    Applied.rollback()                         # undo Prepared.commit exactly (a later stage
                                               # of apply failed)

An adapter subclasses :class:`Applied` and writes three hooks: ``_check_revert`` (raise
``VocabError`` when reverting would be unsafe), ``_prepare_revert`` (compute, then return the
pair of assignments that install the full state and put the reduced one back) and
``_rollback``.

Each stage owns its final state. What one stage needs from another reaches it as plain data in
a :class:`RevertInputs` (the trained shifts of the dropped rows, how many added tokens are
kept, how many vocabulary rows there are afterwards), built once before any stage prepares.
From that, each stage computes the complete final value of everything it owns; no stage
writes into another stage's tensors, so the result does not depend on the order the stages
prepare or install in. ``_prepare_revert`` never mutates anything that ``undo`` or
``rollback`` needs: it computes out of place, or keeps exactly what installing overwrites.

The skeleton (guards against a second revert, the record of applied targets, marking) lives
here once. :func:`commit_all` runs a list of commits as one transaction: when
one raises, the ones before it are undone in reverse order and the exception propagates.

The record: every committed change registers its target object (:data:`RECORD`), so applying
a second plan to a target that holds one, or reverting a change twice, is refused whatever
entry point was used (``apply_plan`` or an adapter module directly).
"""

from __future__ import annotations

import abc
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

import attrs

from vocabcore import VocabError

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "ParamSwap",
    "EXACT",
    "RECORD",
    "Applied",
    "Prepared",
    "Record",
    "RevertInputs",
    "RevertStep",
    "RowShift",
    "commit_all",
    "revert_all",
]


@attrs.frozen(eq=False)
class ParamSwap:
    """One full-size parameter and the reduced parameter that stands in for it.

    Made by the embeddings stage; the optimizer and softmax stages receive it as plain data.

    Attributes:
        full: The original full-size parameter (kept aside while reduced, put back on revert).
        reduced: The parameter installed in the model while reduced.
        index: ``int64`` positions along ``dim`` of ``full`` that ``reduced`` holds, in order
            (``reduced == full.index_select(dim, index)`` at apply time), on ``full``'s device.
        dim: The vocabulary dimension (0 for embeddings, heads and 1-D biases).
    """

    full: nn.Parameter
    reduced: nn.Parameter
    index: torch.Tensor
    dim: int = 0


_T = TypeVar("_T")
_R = TypeVar("_R")


class Record:
    """Which objects hold an applied change, by identity (weakly where the object allows)."""

    def __init__(self) -> None:
        self._entries: dict[int, tuple[Callable[[], Any], list[Applied]]] = {}

    def _entry(self, target: object) -> list[Applied] | None:
        entry = self._entries.get(id(target))
        if entry is None or entry[0]() is not target:
            return None
        return entry[1]

    def holders(self, target: object) -> list[Applied]:
        """The active changes made to ``target`` (empty when it holds none)."""
        return list(self._entry(target) or ())

    def check_free(self, target: object, what: str) -> None:
        """Raise ``VocabError`` if ``target`` already holds an applied plan."""
        if self._entry(target):
            raise VocabError(
                f"this {what} already has a plan applied; call revert_plan() on the "
                "AppliedPlan first (or compose the plans with plan.then(...) and apply once)"
            )

    def hold(self, target: object, change: Applied) -> None:
        """Record that ``change`` is applied to ``target``."""
        found = self._entry(target)
        if found is not None:
            found.append(change)
            return
        key = id(target)

        def forget(_: object) -> None:
            self._entries.pop(key, None)

        try:
            ref: Callable[[], Any] = weakref.ref(target, forget)
        except TypeError:  # not weak-referenceable: hold it until released
            ref = _Strong(target)
        self._entries[key] = (ref, [change])

    def release(self, target: object, change: Applied) -> None:
        """Forget ``change`` on ``target``."""
        found = self._entry(target)
        if found is None:
            return
        found[:] = [c for c in found if c is not change]
        if not found:
            self._entries.pop(id(target), None)

    def __iter__(self) -> Iterator[Applied]:
        for ref, changes in list(self._entries.values()):
            if ref() is not None:
                yield from changes


class _Strong:
    __slots__ = ("obj",)

    def __init__(self, obj: object) -> None:
        self.obj = obj

    def __call__(self) -> object:
        return self.obj


RECORD = Record()


@attrs.frozen(eq=False)
class RowShift:
    """Plain data: add ``delta`` to the slices ``rows`` (along dim 0) of the tensor ``target``.

    The ``"shifted"`` softmax hands these to the stage that owns ``target`` (the embeddings).

    Attributes:
        target: The full-size tensor the shift belongs to (matched by identity, never written
            by the stage that made the shift).
        rows: ``int64`` positions in ``target`` (the dropped rows).
        delta: The trained shift, broadcast over those rows (detached).
    """

    target: Any
    rows: Any
    delta: Any


@attrs.frozen
class RevertInputs:
    """What every stage's ``prepare_revert`` is given: plain data, the same for all stages.

    Attributes:
        vocab_size: Ids of the full vocabulary (``plan.vocab_size``); kept added tokens take
            ids ``vocab_size``, ``vocab_size + 1``, ...
        added: How many added tokens are kept (``revert_plan(..., keep_added=True)``); 0 for
            an exact revert.
        rows: Vocabulary rows of the model before apply (may exceed ``vocab_size``: padding).
        final_rows: Vocabulary rows after the revert: ``rows``, or more when the kept added
            tokens do not fit in the padding rows.
        shifts: Trained shifts of dropped rows (``softmax="shifted"``), for their owner.
    """

    vocab_size: int = 0
    added: int = 0
    rows: int = 0
    final_rows: int = 0
    shifts: tuple[RowShift, ...] = ()

    @property
    def keep_added(self) -> bool:
        """Whether added tokens are kept (the vocabulary grows)."""
        return self.added > 0

    @property
    def positions(self) -> range:
        """Ids of the kept added tokens after the revert."""
        return range(self.vocab_size, self.vocab_size + self.added)

    def final_size(self, size: int) -> int:
        """The size after revert of a vocabulary dimension that was ``size`` before apply.

        Vocabulary-sized dimensions (``size == rows``) become ``final_rows``; any other size
        (a per-layer table smaller than the vocabulary) stays.
        """
        if self.added and size == self.rows:
            return max(size, self.final_rows)
        return size

    def shifts_for(self, target: Any) -> list[RowShift]:
        """The shifts of ``target`` (by identity)."""
        return [shift for shift in self.shifts if shift.target is target]


EXACT = RevertInputs()
"""Inputs of an exact revert: no added tokens kept, no shifts."""


class Prepared(Protocol):
    """A validated change, computed out of place, not yet made."""

    def commit(self) -> Applied:
        """Make the change with plain assignments and return its undo handle."""


class Applied(abc.ABC):
    """A change that has been made to ``target`` and can be reverted or rolled back.

    Attributes:
        target: The object changed (tokenizer, model, config or optimizer).
        owner: The :class:`~vocab_adapters.session.AppliedPlan` this change belongs to, if any.
    """

    what: ClassVar[str] = "object"

    def __init__(self, target: Any) -> None:
        self.target = target
        self.owner: Any = None
        self._state = "active"
        RECORD.hold(target, self)

    @property
    def active(self) -> bool:
        """Whether the change is in force (not reverted or rolled back)."""
        return self._state == "active"

    def _check_active(self) -> None:
        if not self.active:
            raise VocabError(
                f"the plan applied to this {self.what} was already {self._state}; "
                "apply the plan again before reverting"
            )

    def check_revert(self) -> None:
        """Raise ``VocabError`` if reverting would be unsafe; change nothing."""
        self._check_active()
        self._check_revert()

    def prepare_revert(self, inputs: RevertInputs = EXACT) -> RevertStep:
        """Validate and compute the final state; change nothing a rollback or undo needs."""
        self.check_revert()
        install, uninstall = self._prepare_revert(inputs)
        return RevertStep(self, install, uninstall)

    def held_tensors(self) -> tuple[Any, ...]:
        """Full-size tensors this change keeps aside for revert (not used by the model)."""
        return ()

    def revert(self) -> None:
        """Restore the full vocabulary, keeping what training changed."""
        revert_all([self])

    def rollback(self) -> None:
        """Undo the change exactly, as if it had never been made."""
        self._check_active()
        self._rollback()
        self._finish("rolled back")

    def _finish(self, how: str) -> None:
        self._state = how
        RECORD.release(self.target, self)

    def _reopen(self) -> None:
        self._state = "active"
        RECORD.hold(self.target, self)

    # -- hooks ---------------------------------------------------------------------------

    def _check_revert(self) -> None:  # noqa: B027 - optional hook
        """Raise ``VocabError`` when the target changed in a way that makes revert unsafe."""

    @abc.abstractmethod
    def _prepare_revert(
        self, inputs: RevertInputs
    ) -> tuple[Callable[[], None], Callable[[], None]]:
        """Compute the final state; return (install it, put the reduced state back)."""

    @abc.abstractmethod
    def _rollback(self) -> None:
        """Put the original state back, as if the change had never been made."""


class RevertStep:
    """The computed full state of one :class:`Applied`, ready to install."""

    __slots__ = ("_install", "_uninstall", "applied")

    def __init__(
        self, applied: Applied, install: Callable[[], None], uninstall: Callable[[], None]
    ) -> None:
        self.applied = applied
        self._install = install
        self._uninstall = uninstall

    def commit(self) -> None:
        """Install the full state (plain assignments) and mark the change reverted."""
        self._install()
        self.applied._finish("reverted")

    def undo(self) -> None:
        """Put the reduced state back and mark the change active again."""
        self._uninstall()
        self.applied._reopen()


def commit_all(
    items: Sequence[_T], commit: Callable[[_T], _R], undo: Callable[[_T, _R], None]
) -> list[_R]:
    """``commit`` each item in order, as one transaction.

    When a commit raises, the items committed before it are undone in reverse order and the
    exception propagates, so either every commit happened or none did.
    """
    done: list[tuple[_T, _R]] = []
    try:
        for item in items:
            done.append((item, commit(item)))
    except BaseException:
        for item, result in reversed(done):
            undo(item, result)
        raise
    return [result for _, result in done]


def revert_all(changes: Sequence[Applied], inputs: RevertInputs = EXACT) -> None:
    """Revert ``changes`` all or nothing: check and compute all, then install all.

    Raises:
        VocabError: A change was already reverted, or its target changed in a way that makes
            revert unsafe; nothing is changed then. Any error while computing (out of memory)
            likewise leaves every target as it was, and revert can be retried.
    """
    steps = [change.prepare_revert(inputs) for change in changes]
    commit_all(steps, RevertStep.commit, lambda step, _: step.undo())
