"""The normaliser of the dropped rows: ``logsumexp_j(h · w_j + b_j)`` over frozen output rows.

``softmax="full"`` and ``"shifted"`` add one column to the reduced logits: the log-sum-exp of the
dropped rows' logits. The dropped rows are frozen, so the only gradient wanted is the one to the
hidden states, ``sum_j softmax_j · w_j``. :func:`dropped_logsumexp_exact` computes both in one
sweep over the rows, chunk by chunk, with an online maximum (as flash attention does): per chunk
one matmul for the logits and one for the gradient direction, accumulated in the forward pass and
rescaled when the running maximum moves. The backward pass only scales the saved direction, so
the rows are read once per step (the old three-pass scheme recomputed every chunk in backward).
Chunk logits live in one reused buffer, so a step allocates no per-chunk temporaries.

:class:`DroppedRows` holds the frozen rows as the kernel reads them: the full output weight with
the dropped positions (no copy; a chunk whose dropped rows are one run is a view, any other chunk
is gathered into a reused buffer), or an own contiguous tensor.

:class:`SampledDropped` is an approximate normaliser (an experiment measured in
``docs/softmax_modes.md``; no mode uses it): a uniform sample of the dropped rows, re-drawn at
every call, whose log-sum-exp is corrected by ``log(n / sample)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import attrs
import torch

from vocabcore import VocabError

__all__ = [
    "DEFAULT_CHUNK",
    "NORMALISERS",
    "DroppedRows",
    "SampledDropped",
    "dropped_logsumexp_bf16",
    "dropped_logsumexp_exact",
    "dropped_logsumexp_sampled",
    "matmul_dtype",
    "sample_size",
]

DEFAULT_CHUNK = 8192
"""Rows whose logits are computed at once (per position)."""


NORMALISERS = {"exact": None, "bfloat16": torch.bfloat16}
"""The normaliser variants a softmax mode can use, and the dtype of their matmuls."""


def matmul_dtype(normaliser: Any) -> torch.dtype | None:
    """The matmul dtype of ``normaliser`` (``None``: the hidden states'); else ``VocabError``."""
    if isinstance(normaliser, str) and normaliser.startswith("sampled:"):
        return None
    if not isinstance(normaliser, str) or normaliser not in NORMALISERS:
        raise VocabError(
            f"'normaliser' must be 'exact', 'bfloat16' or 'sampled:M' (got {normaliser!r})"
        )
    return NORMALISERS[normaliser]


def sample_size(normaliser: Any, count: int) -> int | None:
    """Rows drawn per training call for ``"sampled:M"`` (``M`` rows, or ``1/K`` of ``count``).

    ``None`` for the exact normalisers. The sampled normaliser is a measured approximation
    (``docs/softmax_modes.md``), reachable from :func:`vocab_adapters.stages.softmax.prepare`
    only.

    >>> sample_size("sampled:1/32", 6400), sample_size("sampled:512", 6400), sample_size("exact", 9)
    (200, 512, None)
    """
    matmul_dtype(normaliser)
    if not normaliser.startswith("sampled:"):
        return None
    spec = normaliser[len("sampled:") :]
    fraction = spec.startswith("1/")
    number = spec[2:] if fraction else spec
    if not number.isdigit() or int(number) < 1:
        raise VocabError(
            f"'normaliser' 'sampled:M' needs M, a positive row count, or 1/K (got {normaliser!r})"
        )
    return max(1, count // int(number)) if fraction else int(number)


def _accumulator(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check_chunk(chunk: Any) -> int:
    if not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 1:
        raise VocabError(f"'chunk' must be a positive int (got {chunk!r})")
    return chunk


@attrs.frozen(eq=False)
class DroppedRows:
    """The frozen dropped rows of an output layer, where the normaliser reads them.

    Attributes:
        weight: ``[rows, hidden]``: the full output weight (detached), or the dropped rows only.
        index: Positions of the dropped rows in ``weight`` (ascending int64); ``None``: every
            row of ``weight`` is a dropped row.
        bias: ``[count]`` float32 biases of the dropped rows, or ``None``.
    """

    weight: torch.Tensor
    index: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    _runs: dict[tuple[int, int], tuple[int, int] | None] = attrs.field(
        factory=dict, init=False, repr=False
    )

    def __attrs_post_init__(self) -> None:
        if self.weight.dim() != 2:
            raise VocabError(
                f"'weight' must be [rows, hidden] (got shape {tuple(self.weight.shape)})"
            )
        if self.bias is not None and tuple(self.bias.shape) != (len(self),):
            raise VocabError(
                f"'bias' must hold one value per dropped row ({len(self)}; got shape "
                f"{tuple(self.bias.shape)})"
            )

    def __len__(self) -> int:
        return int(self.weight.shape[0]) if self.index is None else int(self.index.numel())

    def to(self, device: torch.device) -> DroppedRows:
        """The same rows on ``device``, as one contiguous tensor (a copy; ``self`` if there)."""
        if self.weight.device == device:
            return self
        with torch.no_grad():
            weight = self.weight
            if self.index is not None:
                weight = weight.index_select(0, self.index.to(weight.device))
            bias = None if self.bias is None else self.bias.to(device)
            return DroppedRows(weight.to(device).contiguous(), None, bias)

    def _run(self, start: int, stop: int) -> tuple[int, int] | None:
        """``(a, b)`` when dropped rows ``start:stop`` are the weight rows ``a:b`` (a view)."""
        if self.index is None:
            return start, stop
        key = (start, stop)
        if key not in self._runs:
            first, last = int(self.index[start]), int(self.index[stop - 1])
            self._runs[key] = (first, last + 1) if last - first == stop - start - 1 else None
        return self._runs[key]

    def chunks(
        self, chunk: int, dtype: torch.dtype | None = None
    ) -> Iterator[tuple[int, int, torch.Tensor]]:
        """Yield ``(start, stop, rows)`` over the dropped rows, as ``dtype`` (default: theirs).

        ``rows`` is a view of the weight, or a reused buffer (gathered rows, converted rows).
        """
        gathered: torch.Tensor | None = None
        converted: torch.Tensor | None = None
        weight = self.weight.detach()
        dtype = weight.dtype if dtype is None else dtype
        height = min(chunk, len(self))
        for start in range(0, len(self), chunk):
            stop = min(start + chunk, len(self))
            run = self._run(start, stop)
            if run is not None:
                rows = weight[run[0] : run[1]]
            else:
                assert self.index is not None
                if gathered is None:
                    gathered = weight.new_empty((height, weight.shape[1]))
                rows = gathered[: stop - start]
                torch.index_select(weight, 0, self.index[start:stop], out=rows)
            if rows.dtype != dtype:
                if converted is None:
                    converted = weight.new_empty((height, weight.shape[1]), dtype=dtype)
                rows = converted[: stop - start].copy_(rows)
            yield start, stop, rows

    def logsumexp(
        self, hidden: torch.Tensor, chunk: int = DEFAULT_CHUNK, matmul: torch.dtype | None = None
    ) -> torch.Tensor:
        """The log-sum-exp per position (:func:`dropped_logsumexp_exact`).

        ``matmul``: the dtype of the two matmuls (``torch.bfloat16`` for a float32 model: an
        approximation, see :func:`dropped_logsumexp_bf16`); ``None``: ``hidden``'s dtype.
        """
        _check_chunk(chunk)
        rows = self.to(hidden.device)
        flat = hidden.reshape(-1, hidden.shape[-1])
        track = flat.requires_grad and torch.is_grad_enabled()
        if track:
            lse: torch.Tensor = _ExactLSE.apply(flat, rows, chunk, matmul)  # type: ignore[no-untyped-call]
        else:
            with torch.no_grad():
                lse = _sweep(flat.detach(), rows, chunk, matmul, want_direction=False)[0]
        return lse.reshape(hidden.shape[:-1])


def _sweep(
    hidden: torch.Tensor,
    rows: DroppedRows,
    chunk: int,
    matmul: torch.dtype | None,
    *,
    want_direction: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One pass over the rows: the log-sum-exp and (optionally) ``sum_j softmax_j · w_j``."""
    positions, acc = hidden.shape[0], _accumulator(hidden.dtype)
    if matmul is not None and matmul != hidden.dtype:
        hidden = hidden.to(matmul)
    device = hidden.device
    running = torch.full((positions,), float("-inf"), dtype=acc, device=device)
    total = torch.zeros((positions,), dtype=acc, device=device)
    direction = (
        torch.zeros((positions, hidden.shape[1]), dtype=acc, device=device)
        if want_direction
        else None
    )
    native = hidden.dtype == acc  # matmul straight into the float32/float64 buffer
    store = torch.empty(positions * min(chunk, max(len(rows), 1)), dtype=acc, device=device)
    bias = None if rows.bias is None else rows.bias.to(device=device, dtype=acc)
    for start, stop, weight in rows.chunks(chunk, hidden.dtype):
        logits = store[: positions * (stop - start)].view(positions, stop - start)
        if native and bias is not None:
            torch.addmm(bias[start:stop], hidden, weight.t(), out=logits)
        elif native:
            torch.mm(hidden, weight.t(), out=logits)
        else:
            logits.copy_(hidden @ weight.t())
            if bias is not None:
                logits += bias[start:stop]
        peak = torch.maximum(running, logits.amax(dim=1))
        safe = torch.where(torch.isinf(peak), torch.zeros_like(peak), peak)
        scale = torch.exp(running - safe)
        logits.sub_(safe.unsqueeze(1)).exp_()
        total.mul_(scale).add_(logits.sum(dim=1))
        if direction is not None:
            direction.mul_(scale.unsqueeze(1))
            if native:
                direction.addmm_(logits, weight)
            else:
                direction += (logits.to(weight.dtype) @ weight).to(acc)
        running = peak
    safe = torch.where(torch.isinf(running), torch.zeros_like(running), running)
    lse = torch.log(total) + safe
    if direction is not None:
        direction /= torch.where(total > 0, total, torch.ones_like(total)).unsqueeze(1)
    return lse, direction


class _ExactLSE(torch.autograd.Function):
    """The exact normaliser; the hidden-state gradient is built in the forward sweep."""

    @staticmethod
    def forward(
        ctx: Any, hidden: torch.Tensor, rows: DroppedRows, chunk: int, matmul: torch.dtype | None
    ) -> torch.Tensor:
        lse, direction = _sweep(hidden.detach(), rows, chunk, matmul, want_direction=True)
        ctx.save_for_backward(direction)
        ctx.dtype = hidden.dtype
        return lse

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> Any:
        (direction,) = ctx.saved_tensors
        grad_hidden = (direction * grad.to(direction.dtype).unsqueeze(1)).to(ctx.dtype)
        return grad_hidden, None, None, None


def dropped_logsumexp_exact(
    hidden: torch.Tensor,
    rows: torch.Tensor | DroppedRows,
    bias: torch.Tensor | None = None,
    chunk: int = DEFAULT_CHUNK,
) -> torch.Tensor:
    """``torch.logsumexp(hidden @ rows.T + bias, -1)`` without holding the logits; rows frozen.

    Args:
        hidden: ``[..., hidden_size]``.
        rows: ``[n, hidden_size]`` frozen rows (no gradient reaches them), or a
            :class:`DroppedRows`.
        bias: ``[n]`` frozen biases, or ``None`` (must be ``None`` with a :class:`DroppedRows`,
            which carries its own).
        chunk: Rows whose logits are held at once per position.

    Returns:
        ``[...]``: float64 for float64 ``hidden``, float32 otherwise; ``-inf`` for no rows.
        Differentiable with respect to ``hidden`` (once).

    Raises:
        VocabError: Bad ``chunk``, mismatched shapes.

    >>> h, w = torch.randn(3, 4), torch.randn(5, 4)
    >>> torch.allclose(dropped_logsumexp_exact(h, w, chunk=2), torch.logsumexp(h @ w.T, -1))
    True
    """
    if isinstance(rows, DroppedRows):
        if bias is not None:
            raise VocabError("pass the bias inside DroppedRows(weight, index, bias), not beside it")
        dropped = rows
    else:
        dropped = DroppedRows(
            rows.detach(), None, None if bias is None else bias.detach().float().contiguous()
        )
    if dropped.weight.shape[1] != hidden.shape[-1]:
        raise VocabError(
            f"'hidden' has size {hidden.shape[-1]} but the rows have {dropped.weight.shape[1]}"
        )
    return dropped.logsumexp(hidden, chunk)


# -- approximate normalisers --------------------------------------------------------------------


def dropped_logsumexp_bf16(
    hidden: torch.Tensor, rows: DroppedRows, chunk: int = DEFAULT_CHUNK
) -> torch.Tensor:
    """:func:`dropped_logsumexp_exact` with both matmuls in bfloat16 (float32 accumulation).

    For a float32 model: the hidden states and each chunk of rows are rounded to bfloat16
    (8 bits of mantissa) for the matmuls, the logits come back rounded to bfloat16, the
    exponentials, sums and the gradient accumulate in float32. On hardware with bfloat16
    matmul units (CUDA tensor cores; AMX or AVX-512 BF16 CPUs) the normaliser costs a fraction
    of the float32 one; the error is that of bfloat16 autocast, measured in
    ``docs/softmax_modes.md``. The rows are converted chunk by chunk (no bfloat16 copy is kept).
    """
    return rows.logsumexp(hidden, chunk, torch.bfloat16)


@attrs.frozen(eq=False)
class SampledDropped:
    """A uniform sample of ``sample`` dropped rows, re-drawn per call, corrected by ``log(n/m)``.

    ``logsumexp_j(l_j) ≈ log(n / m) + logsumexp_{j in sample}(l_j)``: the sum of ``exp`` is
    estimated without bias; its log is biased low by about half the estimate's relative
    variance. The cost is ``m / n`` of the exact normaliser.

    Attributes:
        rows: The dropped rows.
        sample: Rows drawn per call (at least 1; all rows when ``sample >= len(rows)``).
        generator: Random source of the draws (``None``: torch's global one).
    """

    rows: DroppedRows
    sample: int
    generator: torch.Generator | None = None

    def logsumexp(self, hidden: torch.Tensor, chunk: int = DEFAULT_CHUNK) -> torch.Tensor:
        """The estimated log-sum-exp per position of ``hidden`` (gradient to ``hidden``)."""
        n = len(self.rows)
        if self.sample >= n or n == 0:
            return self.rows.logsumexp(hidden, chunk)
        rows = self.rows.to(hidden.device)
        picked = torch.randperm(n, generator=self.generator)[: self.sample]
        picked = picked.sort().values.to(hidden.device)
        source = picked if rows.index is None else rows.index[picked]
        bias = None if rows.bias is None else rows.bias[picked]
        drawn = DroppedRows(rows.weight.index_select(0, source), None, bias)
        return drawn.logsumexp(hidden, chunk) + math.log(n / self.sample)


def dropped_logsumexp_sampled(
    hidden: torch.Tensor,
    rows: DroppedRows,
    sample: int,
    generator: torch.Generator | None = None,
    chunk: int = DEFAULT_CHUNK,
) -> torch.Tensor:
    """:meth:`SampledDropped.logsumexp` of one draw."""
    if not isinstance(sample, int) or isinstance(sample, bool) or sample < 1:
        raise VocabError(f"'sample' must be a positive int (got {sample!r})")
    return SampledDropped(rows, sample, generator).logsumexp(hidden, chunk)
