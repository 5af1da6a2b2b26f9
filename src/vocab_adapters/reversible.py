"""The two-phase protocol every adapter follows: prepare (validate, compute), commit, revert.

Each adapter module (``fast_tokenizer``, ``slow_tokenizer``, ``embeddings``, ``config``,
``optimizer``) exposes::

    prepare(plan, target, ...) -> Prepared     # validates everything, computes the new state
                                               # out of place; touches nothing
    apply(plan, target, ...) -> Applied        # prepare(...).commit(), for direct use

``Prepared.commit()`` installs the reduced state with plain assignments only (no computation
that can fail) and returns an ``Applied``. ``Applied.check_revert()`` raises
:class:`vocabcore.VocabError` when reverting would be unsafe and changes nothing;
``Applied.revert()`` restores the full vocabulary (carrying trained rows/state back);
``Applied.rollback()`` undoes ``commit`` exactly, as if apply never happened (used when a later
stage of ``apply_plan`` fails). Reverting or rolling back twice raises ``VocabError``.

The top level (:mod:`vocab_adapters.session`) prepares every target first, then commits them in
order, rolling back the committed ones if a later commit raises.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Applied(Protocol):
    """A change that has been made and can be undone."""

    def check_revert(self) -> None:
        """Raise ``VocabError`` if :meth:`revert` would be unsafe; change nothing."""

    def revert(self) -> None:
        """Restore the full vocabulary, keeping what training changed."""

    def rollback(self) -> None:
        """Undo the change exactly, as if it had never been made."""


@runtime_checkable
class Prepared(Protocol):
    """A validated change, computed out of place, not yet made."""

    def commit(self) -> Applied:
        """Make the change with plain assignments and return its undo handle."""


class Done:
    """Guards an ``Applied`` against a second revert or rollback."""

    __slots__ = ("_done", "_what")

    def __init__(self, what: str) -> None:
        self._what = what
        self._done: str | None = None

    def check(self) -> None:
        """Raise ``VocabError`` if the change was already reverted or rolled back."""
        if self._done is not None:
            from vocabcore import VocabError

            raise VocabError(
                f"the plan applied to this {self._what} was already {self._done}; "
                "apply the plan again before reverting"
            )

    def mark(self, how: str) -> None:
        """Record that the change was reverted or rolled back (``how``)."""
        self._done = how
