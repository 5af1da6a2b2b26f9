"""Rows for added tokens, and the row writes of a revert.

An added token's embedding row, LM-head row and output bias start as the mean of the rows of
its pieces (the ids the original tokenizer splits its pre-token into). A tied head is one
tensor with the embedding, so it stays tied. Optimizer state of added rows starts at zero.

On revert, the stages that own vocabulary-sized tensors (embeddings, optimizer state) build
their final tensors with :class:`RowWrites` (into a tensor held aside, deferred to install
and undone exactly) and :func:`resized` (a fresh tensor, when the held one must move or grow).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vocabcore import VocabError, VocabPlan

__all__ = ["RowWrites", "check_pieces", "mean_rows", "resized", "zero_rows"]


def check_pieces(plan: VocabPlan, pieces: Sequence[Sequence[int]] | None) -> list[list[int]]:
    """``pieces`` as lists of ints, one non-empty list of old ids per added token.

    Raises:
        VocabError: ``pieces`` is missing while the plan adds tokens, or does not fit it.
    """
    if not plan.added:
        return []
    if pieces is None:
        raise VocabError(
            f"the plan adds {len(plan.added)} token(s), whose rows start as the mean of their "
            "pieces' rows: pass tokenizer= to apply_plan (or added_pieces=, from "
            "vocab_adapters.stages.tokenizer_adapter.token_pieces(tokenizer, plan.added))"
        )
    out = [list(p) for p in pieces]
    if len(out) != len(plan.added):
        raise VocabError(
            f"'added_pieces' must hold one list per added token ({len(plan.added)}), got {len(out)}"
        )
    for token, ids in zip(plan.added, out, strict=True):
        if not ids:
            raise VocabError(f"added token {token!r} has no pieces to initialise its rows from")
        bad: list[object] = [i for i in ids if isinstance(i, bool) or not isinstance(i, int)]
        bad += [i for i in ids if isinstance(i, int) and not 0 <= i < plan.vocab_size]
        if bad:
            raise VocabError(
                f"pieces of {token!r} must be old ids below vocab_size {plan.vocab_size} "
                f"(got {bad[0]!r})"
            )
    return out


def mean_rows(tensor: torch.Tensor, dim: int, pieces: Sequence[Sequence[int]]) -> torch.Tensor:
    """One slice along ``dim`` per entry of ``pieces``: the mean of ``tensor``'s slices there.

    Computed on ``tensor``'s device in float32 at least, returned in its dtype.

    >>> t = torch.tensor([[0.0, 2.0], [4.0, 6.0], [1.0, 1.0]])
    >>> mean_rows(t, 0, [[0, 1], [2]])
    tensor([[2., 4.],
            [1., 1.]])
    """
    flat = [i for ids in pieces for i in ids]
    owner = [k for k, ids in enumerate(pieces) for _ in ids]
    device = tensor.device
    index = torch.tensor(flat, dtype=torch.long, device=device)
    segment = torch.tensor(owner, dtype=torch.long, device=device)
    counts = torch.tensor([len(ids) for ids in pieces], dtype=torch.float32, device=device)
    with torch.no_grad():
        work = tensor.detach()
        wide = work.dtype if work.dtype in (torch.float32, torch.float64) else torch.float32
        picked = work.index_select(dim, index).to(wide)
        shape = list(work.shape)
        shape[dim] = len(pieces)
        sums = torch.zeros(shape, dtype=wide, device=device).index_add_(dim, segment, picked)
        view = [1] * work.dim()
        view[dim] = len(pieces)
        return (sums / counts.to(wide).view(view)).to(work.dtype)


def zero_rows(value: torch.Tensor, dim: int, rows: int) -> torch.Tensor:
    """``value`` followed by ``rows`` zero slices along ``dim`` (optimizer state of added rows).

    >>> zero_rows(torch.ones(2, 1), 0, 1).tolist()
    [[1.0], [1.0], [0.0]]
    """
    if rows <= 0:
        return value
    shape = list(value.shape)
    shape[dim] = rows
    return torch.cat([value, value.new_zeros(shape)], dim)


class RowWrites:
    """Slices written into ``tensor`` along ``dim`` with ``index_copy_``, in the order added.

    A ``private`` tensor (fresh, seen by no one) is written at once. Otherwise the writes wait
    for :meth:`apply` (a revert's install), and what they overwrite is copied when they are
    added, so :meth:`undo` puts it back exactly: preparing never changes the tensor.

    >>> t = torch.zeros(3)
    >>> w = RowWrites(t, 0, private=False)
    >>> w.add(torch.tensor([1]), torch.tensor([5.0]))
    >>> t.tolist()
    [0.0, 0.0, 0.0]
    >>> w.apply(); t.tolist()
    [0.0, 5.0, 0.0]
    >>> w.undo(); t.tolist()
    [0.0, 0.0, 0.0]
    """

    def __init__(self, tensor: torch.Tensor, dim: int, *, private: bool) -> None:
        self.tensor = tensor
        self.dim = dim
        self.private = private
        self._writes: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def add(
        self, index: torch.Tensor, values: torch.Tensor, old: torch.Tensor | None = None
    ) -> None:
        """Write ``values`` at ``index`` (now if private, else at :meth:`apply`)."""
        index = index.to(self.tensor.device)
        values = values.detach().to(device=self.tensor.device, dtype=self.tensor.dtype)
        with torch.no_grad():
            if self.private:
                self.tensor.index_copy_(self.dim, index, values)
                return
            if old is None:
                old = self.tensor.index_select(self.dim, index)
        self._writes.append((index, values, old))

    def apply(self) -> None:
        """Make the deferred writes, in order."""
        with torch.no_grad():
            for index, values, _ in self._writes:
                self.tensor.index_copy_(self.dim, index, values)

    def undo(self) -> None:
        """Put back what :meth:`apply` overwrote."""
        with torch.no_grad():
            for index, _, old in reversed(self._writes):
                self.tensor.index_copy_(self.dim, index, old)


def resized(
    tensor: torch.Tensor,
    dim: int,
    size: int,
    *,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """A fresh copy of ``tensor`` with ``size`` slices along ``dim`` (zeros after its own).

    On ``device`` and in ``dtype`` when given (else ``tensor``'s); one allocation there.

    >>> resized(torch.ones(2, 1), 0, 3).tolist()
    [[1.0], [1.0], [0.0]]
    """
    device = tensor.device if device is None else device
    dtype = tensor.dtype if dtype is None else dtype
    shape = list(tensor.shape)
    have = shape[dim]
    shape[dim] = size
    with torch.no_grad():
        out = torch.empty(shape, dtype=dtype, device=device)
        out.narrow(dim, 0, min(have, size)).copy_(tensor.narrow(dim, 0, min(have, size)))
        if size > have:
            out.narrow(dim, have, size - have).zero_()
    return out
