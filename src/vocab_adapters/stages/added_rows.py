"""Rows for added tokens: the mean of their pieces' rows, and zero optimizer state.

An added token's embedding row, LM-head row and output bias start as the mean of the rows of
its pieces (the ids the original tokenizer splits its pre-token into). A tied head is one
tensor with the embedding, so it stays tied. Optimizer state of added rows starts at zero.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vocabcore import VocabError, VocabPlan

__all__ = ["check_pieces", "mean_rows", "zero_rows"]


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
