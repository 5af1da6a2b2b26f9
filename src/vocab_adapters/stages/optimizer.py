"""Point an optimizer at reduced parameters and carry its per-parameter state both ways.

Two cases, both driven by the :class:`~vocab_adapters.stages.reversible.ParamSwap` objects of the
embeddings adapter:

* **Resume** (the optimizer exists, maybe with state, when the plan is applied):
  :func:`prepare` / :func:`apply`. Every state tensor with the parameter's shape (Adam's
  ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``; SGD's ``momentum_buffer``; Adagrad's ``sum``;
  RMSprop's ``square_avg``, ``momentum_buffer``, ``grad_avg``; ...) is sliced, scalars (``step``)
  are kept, and ``param_groups`` point at the reduced parameters, each found by identity at its
  own position. Revert scatters the trained state rows back into the full-size state held aside
  and points ``param_groups`` back at the full parameters, so training goes on after revert.
* **Created while reduced** (the common case: apply, then build the optimizer):
  :func:`prepare_restore` at revert time, or :func:`attach` any time while reduced for an
  undo handle that does it on ``revert()``. The full parameters replace the reduced ones in
  ``param_groups``, and the state is scattered into zero-filled full-size state — what the
  optimizer would hold for rows that never had a gradient.

Exactness. An element-wise optimizer (Adam, AdamW, SGD with or without momentum, Adagrad,
RMSprop, ...) updates each entry from its own gradient and state, with shared scalars only
(``step``, learning rate), so N steps reduced then revert equal, on kept rows and every other
parameter, N steps of the full model on the same batches, bit for bit. Dropped rows match too
when the full run leaves them alone: their gradient is zero (dropped tokens never occur) and
their state is zero, *and* there is no weight decay. Weight decay (AdamW's decoupled decay,
SGD/Adam's L2 term) shrinks every row of the full model at every step, dropped rows included,
while the held full-size rows stay untouched; so does momentum left over from before apply in
the resume case. Then only kept rows and other parameters are exact. Optimizers that mix rows
(Adafactor's factored second moment, LAMB/LARS trust ratios over the whole tensor, gradient
clipping by global norm is exact up to summation order) are only approximate; Adafactor-style
state is refused in the resume case and reset (with a warning) when restoring.

bitsandbytes: 8-bit state (quantized in blocks across rows) can't be split by token. Such an
optimizer is refused for the embedding parameters unless they are overridden to 32 bits, e.g.
``GlobalOptimManager.get_instance().register_module_override(embedding, "weight",
{"optim_bits": 32})``, or the optimizer is created after applying the plan (then the reduced
embedding is what it quantizes, and revert is refused until it is overridden to 32 bits).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import torch

from vocab_adapters.stages.added_rows import RowWrites, resized, zero_rows
from vocab_adapters.stages.reversible import EXACT, RECORD, Applied, ParamSwap, RevertInputs
from vocabcore import VocabError

__all__ = [
    "AppliedOptimizer",
    "AttachedOptimizer",
    "PreparedOptimizer",
    "PreparedRestore",
    "apply",
    "attach",
    "prepare",
    "prepare_restore",
]

State = dict[str, Any]


def _positions(optimizer: Any) -> dict[int, tuple[int, int]]:
    groups = getattr(optimizer, "param_groups", None)
    if not isinstance(groups, list):
        raise VocabError(
            f"'optimizer' must be a torch optimizer with param_groups "
            f"(got {type(optimizer).__name__})"
        )
    return {
        id(param): (g, p)
        for g, group in enumerate(groups)
        for p, param in enumerate(group["params"])
    }


def _name(swap: ParamSwap) -> str:
    shape = "x".join(map(str, swap.full.shape))
    return f"the {shape} vocabulary parameter"


def _is_bnb(optimizer: Any) -> bool:
    return type(optimizer).__module__.startswith("bitsandbytes")


def _bnb_bits(optimizer: Any, swap: ParamSwap, param: torch.Tensor, where: tuple[int, int]) -> int:
    """Effective ``optim_bits`` of a bitsandbytes optimizer for one parameter.

    Overrides registered for either side of the swap count: bitsandbytes resolves module
    overrides lazily, at its first step, to whatever parameter the module holds then.
    """
    args = getattr(optimizer, "args", None)
    bits = int(getattr(args, "optim_bits", 32))
    min_size = int(getattr(args, "min_8bit_size", 4096))
    manager = getattr(optimizer, "mng", None)
    overrides: dict[str, Any] = {}
    if manager is not None:
        for module, attr, config in getattr(manager, "module_weight_config_triple", []):
            if any(getattr(module, attr, None) is p for p in (swap.full, swap.reduced)):
                overrides.update(config)
        for p in (swap.full, swap.reduced):
            overrides.update(getattr(manager, "pid2config", {}).get(id(p), {}))
        overrides.update(getattr(manager, "index2config", {}).get(where, {}))
    bits = int(overrides.get("optim_bits", bits))
    return 32 if param.numel() < min_size else bits


def _check_bnb(
    optimizer: Any, swap: ParamSwap, full: bool, where: tuple[int, int], when: str
) -> None:
    if not _is_bnb(optimizer):
        return
    param = swap.full if full else swap.reduced
    state = optimizer.state.get(param, {})
    quantized = any(
        isinstance(v, torch.Tensor) and v.dtype in (torch.uint8, torch.int8) for v in state.values()
    )
    if quantized or (not state and _bnb_bits(optimizer, swap, param, where) == 8):
        what = "embedding/LM-head weight" if param.dim() > 1 else "output bias"
        attr = "weight" if param.dim() > 1 else "bias"
        raise VocabError(
            f"{type(optimizer).__name__} keeps 8-bit state for a vocabulary-sized {what} "
            f"(shape {tuple(param.shape)}), quantized in blocks across token rows, which can't "
            f"be {when}; override every vocabulary-sized parameter to 32-bit state before the "
            "first step: bitsandbytes.optim.GlobalOptimManager.get_instance()"
            f'.register_module_override(module, "{attr}", {{"optim_bits": 32}})'
        )


class _Indices:
    """The kept index of a swap, on each device a state tensor lives on (moved once)."""

    def __init__(self, swap: ParamSwap) -> None:
        self._by_device = {swap.index.device: swap.index}

    def on(self, device: torch.device) -> torch.Tensor:
        if device not in self._by_device:
            self._by_device[device] = next(iter(self._by_device.values())).to(device)
        return self._by_device[device]


def _unsplittable(state: State, shape: torch.Size) -> list[str]:
    return [
        key
        for key, value in state.items()
        if isinstance(value, torch.Tensor) and value.shape != shape and value.numel() > 1
    ]


@attrs.frozen(eq=False)
class _Entry:
    swap: ParamSwap
    group: int
    position: int
    old_state: State | None  # the optimizer's own state dict of the parameter being replaced
    new_state: State | None  # the state to install (None: no state)


@attrs.frozen(eq=False)
class PreparedOptimizer:
    """The sliced optimizer state of the swapped parameters, not yet installed."""

    optimizer: Any
    swaps: tuple[ParamSwap, ...]
    _entries: tuple[_Entry, ...]
    _held: tuple[State | None, ...]  # full-size state to hold while reduced (maybe offloaded)
    _joined: tuple[tuple[int, Any], ...] = ()  # (group index, new parameter) to train too

    def commit(self) -> AppliedOptimizer:
        """Point ``param_groups`` at the reduced parameters and install their state."""
        RECORD.check_free(self.optimizer, "optimizer")
        _swap_in(self.optimizer, self._entries, lambda e: e.swap.full, lambda e: e.swap.reduced)
        _join(self.optimizer, self._joined)
        return AppliedOptimizer(self.optimizer, self.swaps, self._entries, self._held, self._joined)


def _join(optimizer: Any, joined: Sequence[tuple[int, Any]]) -> None:
    for group, parameter in joined:
        optimizer.param_groups[group]["params"].append(parameter)


def _leave(optimizer: Any, joined: Sequence[tuple[int, Any]]) -> list[Any]:
    """Take the joined parameters out of their groups; return their state (to undo)."""
    states = []
    for group, parameter in joined:
        params = optimizer.param_groups[group]["params"]
        params[:] = [p for p in params if p is not parameter]
        states.append(optimizer.state.pop(parameter, None))
    return states


def _join_group(optimizer: Any, swaps: Sequence[ParamSwap], positions: Any) -> int | None:
    """The group where parameters created by apply (the softmax shift) train.

    A group without weight decay if there is one, else the group of the last vocabulary
    parameter; ``None`` when the optimizer trains no vocabulary parameter (frozen embeddings
    and head: the shift then stays untrained too).
    """
    held: list[int] = [positions[id(s.full)][0] for s in swaps if id(s.full) in positions]
    if not held:
        return None
    for index, group in enumerate(optimizer.param_groups):
        if not group.get("weight_decay", 0.0):
            return index
    return held[-1]


def _swap_in(optimizer: Any, entries: Sequence[_Entry], old: Any, new: Any) -> None:
    for entry in entries:
        optimizer.param_groups[entry.group]["params"][entry.position] = new(entry)
        optimizer.state.pop(old(entry), None)
        if entry.new_state is not None:
            optimizer.state[new(entry)] = entry.new_state


def prepare(
    optimizer: Any,
    swaps: Sequence[ParamSwap],
    *,
    offload: str | None = None,
    new_parameters: Sequence[Any] = (),
) -> PreparedOptimizer:
    """Slice the state of an existing optimizer for reduced parameters; change nothing.

    Swaps whose full parameter the optimizer doesn't hold (frozen embeddings) are skipped.

    Args:
        optimizer: A ``torch.optim.Optimizer`` (or anything with ``param_groups`` and
            ``state``) holding the full-size parameters.
        swaps: ``PreparedEmbeddings.swaps``.
        offload: ``"cpu"`` to hold the full-size state on the CPU while reduced.
        new_parameters: Trainable parameters that apply creates (``softmax="shifted"``'s
            shift), handed over as data by the session: they join the optimizer (a group
            without weight decay if there is one, else the output layer's group) while
            reduced, with fresh state, and leave it on revert.

    Raises:
        VocabError: The optimizer already holds a reduced parameter, keeps state that can't be
            split by token (not the parameter's shape and not a scalar; bitsandbytes 8-bit).
    """
    if offload not in (None, "cpu"):
        raise VocabError(f"'offload' must be None or 'cpu' (got {offload!r})")
    positions = _positions(optimizer)
    RECORD.check_free(optimizer, "optimizer")
    entries: list[_Entry] = []
    held: list[State | None] = []
    for swap in swaps:
        if id(swap.reduced) in positions:
            raise VocabError(
                f"the optimizer already holds the reduced {_name(swap)}; it was created after "
                "the plan was applied, so use prepare_restore/attach for it, not prepare"
            )
        where = positions.get(id(swap.full))
        if where is None:
            continue
        _check_bnb(optimizer, swap, True, where, "sliced")
        state: State | None = optimizer.state.get(swap.full)
        new_state: State | None = None
        kept: State | None = None
        if state:
            bad = _unsplittable(state, swap.full.shape)
            if bad:
                raise VocabError(
                    f"{type(optimizer).__name__} keeps state {bad} for {_name(swap)} that is "
                    "neither the parameter's shape nor a scalar, so it can't be split by token; "
                    "apply the plan before creating the optimizer, or use an element-wise "
                    "optimizer (Adam, AdamW, SGD, ...)"
                )
            indices = _Indices(swap)
            new_state, kept = {}, {}
            with torch.no_grad():
                for key, value in state.items():
                    if isinstance(value, torch.Tensor) and value.shape == swap.full.shape:
                        index = indices.on(value.device)
                        new_state[key] = zero_rows(  # the plan's added rows start at zero
                            value.index_select(swap.dim, index),
                            swap.dim,
                            swap.reduced.shape[swap.dim] - index.numel(),
                        )
                        off = offload == "cpu" and value.device.type != "cpu"
                        kept[key] = value.to("cpu") if off else value
                    else:  # scalars: Adam's step is updated in place, so each side owns one
                        new_state[key] = value.clone() if isinstance(value, torch.Tensor) else value
                        kept[key] = value
        offloaded = kept is not None and any(kept[k] is not v for k, v in (state or {}).items())
        # Offloaded: the entry (for rollback) holds the CPU copies too, not the device tensors.
        entries.append(_Entry(swap, where[0], where[1], kept if offloaded else state, new_state))
        held.append(kept)
    group = _join_group(optimizer, swaps, positions) if new_parameters else None
    joined = tuple((group, p) for p in new_parameters) if group is not None else ()
    return PreparedOptimizer(optimizer, tuple(swaps), tuple(entries), tuple(held), joined)


def apply(
    optimizer: Any, swaps: Sequence[ParamSwap], *, offload: str | None = None
) -> AppliedOptimizer:
    """Point an existing optimizer at reduced parameters: ``prepare(...).commit()``."""
    return prepare(optimizer, swaps, offload=offload).commit()


class AppliedOptimizer(Applied):
    """Undo handle of an optimizer pointed at reduced parameters (resume case)."""

    what = "optimizer"

    def __init__(
        self,
        optimizer: Any,
        swaps: tuple[ParamSwap, ...],
        entries: tuple[_Entry, ...],
        held: tuple[State | None, ...],
        joined: tuple[tuple[int, Any], ...] = (),
    ) -> None:
        super().__init__(optimizer)
        self.optimizer = optimizer
        self.swaps = swaps
        self._entries = entries
        self._held = held
        self._joined = joined

    @property
    def joined(self) -> tuple[Any, ...]:
        """The parameters apply created that train in this optimizer while reduced."""
        return tuple(parameter for _, parameter in self._joined)

    def held_tensors(self) -> tuple[torch.Tensor, ...]:
        """The full-size state held aside while reduced (on the CPU with ``offload="cpu"``)."""
        return tuple(
            value
            for entry, held in zip(self._entries, self._held, strict=True)
            for value in (held or {}).values()
            if isinstance(value, torch.Tensor) and value.shape == entry.swap.full.shape
        )

    def _check_revert(self) -> None:
        """Raise ``VocabError`` if a reduced parameter left the optimizer since apply."""
        _restore_positions(self.optimizer, [e.swap for e in self._entries], required=True)

    def _prepare_revert(
        self, inputs: RevertInputs
    ) -> tuple[Callable[[], None], Callable[[], None]]:
        bases = {id(e.swap.full): held for e, held in zip(self._entries, self._held, strict=True)}
        swaps = [e.swap for e in self._entries]
        restore = _prepare_restore(self.optimizer, swaps, bases, required=True, inputs=inputs)
        joined = self._joined
        states: list[Any] = []

        def install() -> None:
            restore.commit()
            states[:] = _leave(self.optimizer, joined)

        def undo() -> None:
            _join(self.optimizer, joined)
            for (_, parameter), state in zip(joined, states, strict=True):
                if state is not None:
                    self.optimizer.state[parameter] = state
            restore.undo()

        return install, undo

    def _rollback(self) -> None:
        _leave(self.optimizer, self._joined)
        entries = [  # offloaded state goes back to the parameter's device
            attrs.evolve(e, old_state=_to_devices(e.old_state or {}, e.swap))
            if _offloaded(e)
            else e
            for e in self._entries
        ]
        _swap_back(self.optimizer, entries, to_full=True)


def _offloaded(entry: _Entry) -> bool:
    device = entry.swap.reduced.device
    return any(
        isinstance(v, torch.Tensor) and v.shape == entry.swap.full.shape and v.device != device
        for v in (entry.old_state or {}).values()
    )


def _swap_back(optimizer: Any, entries: Sequence[_Entry], *, to_full: bool) -> None:
    """Put one side of each swap back in ``param_groups`` with the state it had before."""
    for entry in entries:
        put, drop = (entry.swap.full, entry.swap.reduced)
        if not to_full:
            put, drop = drop, put
        optimizer.param_groups[entry.group]["params"][entry.position] = put
        optimizer.state.pop(drop, None)
        if entry.old_state is not None:
            optimizer.state[put] = entry.old_state


def _restore_positions(
    optimizer: Any, swaps: Sequence[ParamSwap], *, required: bool
) -> list[tuple[ParamSwap, tuple[int, int]]]:
    positions = _positions(optimizer)
    found = []
    for swap in swaps:
        if id(swap.full) in positions:
            raise VocabError(
                f"the optimizer holds the full-size {_name(swap)} already; it was restored, "
                "or created before the plan was applied (use prepare/apply at apply time then)"
            )
        where = positions.get(id(swap.reduced))
        if where is None:
            if required:
                raise VocabError(
                    f"the reduced {_name(swap)} is no longer in the optimizer; put it back "
                    "in param_groups before reverting"
                )
            continue
        found.append((swap, where))
    return found


def _prepare_restore(
    optimizer: Any,
    swaps: Sequence[ParamSwap],
    bases: dict[int, State | None],
    *,
    required: bool,
    inputs: RevertInputs = EXACT,
) -> PreparedRestore:
    entries: list[_Entry] = []
    writes: list[RowWrites] = []
    for swap, where in _restore_positions(optimizer, swaps, required=required):
        _check_bnb(optimizer, swap, False, where, "scattered back into the full-size state")
        state: State | None = optimizer.state.get(swap.reduced)
        base = bases.get(id(swap.full))
        new_state: State | None
        if not state:
            new_state = None if base is None else _to_devices(base, swap, inputs)
        elif _unsplittable(state, swap.reduced.shape):
            warnings.warn(
                f"{type(optimizer).__name__} keeps state "
                f"{_unsplittable(state, swap.reduced.shape)} for {_name(swap)} that can't be "
                "scattered back by token; that parameter's optimizer state starts afresh",
                UserWarning,
                stacklevel=3,
            )
            new_state = None
        else:
            new_state = _scatter(state, base or {}, swap, inputs, writes)
        entries.append(_Entry(swap, where[0], where[1], state, new_state))
    return PreparedRestore(optimizer, tuple(swaps), tuple(entries), tuple(writes))


def _to_devices(base: State, swap: ParamSwap, inputs: RevertInputs = EXACT) -> State:
    """Held full-size state, moved back to the parameter's device (offloaded) and grown."""
    device = swap.reduced.device
    size = swap.full.shape[swap.dim]
    final = inputs.final_size(size)
    out: State = {}
    for key, value in base.items():
        if isinstance(value, torch.Tensor) and value.shape == swap.full.shape:
            if final != size:
                out[key] = resized(value, swap.dim, final, device=device)
            else:
                out[key] = value.to(device)
        else:
            out[key] = value
    return out


def _scatter(
    state: State,
    base: State,
    swap: ParamSwap,
    inputs: RevertInputs = EXACT,
    deferred: list[RowWrites] | None = None,
) -> State:
    """Final full-size state: ``base`` (or zeros) with the reduced state's rows written in.

    With ``inputs.added`` (keep_added) the added rows' trained state goes to the added ids,
    growing the state as the parameter grows. A held tensor that can be reused as it is gets
    its writes deferred (appended to ``deferred``, applied at install, undone exactly), so
    nothing that a rollback restores is changed here; otherwise a fresh tensor is written.
    """
    indices = _Indices(swap)
    full: State = {}
    size = swap.full.shape[swap.dim]
    final = inputs.final_size(size)
    with torch.no_grad():
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.shape == swap.reduced.shape:
                held = base.get(key)
                reuse = (
                    isinstance(held, torch.Tensor)
                    and held.shape == swap.full.shape
                    and held.device == value.device
                    and held.dtype == value.dtype
                    and final == size
                    and deferred is not None
                )
                if reuse:
                    assert isinstance(held, torch.Tensor)
                    writes = RowWrites(held, swap.dim, private=False)
                elif isinstance(held, torch.Tensor) and held.shape == swap.full.shape:
                    grown = resized(held, swap.dim, final, device=value.device, dtype=value.dtype)
                    writes = RowWrites(grown, swap.dim, private=True)
                else:
                    shape = list(swap.full.shape)
                    shape[swap.dim] = final
                    writes = RowWrites(value.new_zeros(shape), swap.dim, private=True)
                index = indices.on(value.device)
                n_kept = index.numel()
                writes.add(index, value.narrow(swap.dim, 0, n_kept))  # added rows follow
                extra = value.shape[swap.dim] - n_kept
                if inputs.added and extra:
                    if extra != inputs.added:
                        raise VocabError(
                            f"keep_added expects {inputs.added} added rows but the optimizer "
                            f"state holds {extra}; revert with the plan that was applied"
                        )
                    at = torch.tensor(list(inputs.positions), dtype=torch.long, device=value.device)
                    writes.add(at, value.narrow(swap.dim, n_kept, extra))
                if not writes.private and deferred is not None:
                    deferred.append(writes)
                full[key] = writes.tensor
            else:
                full[key] = value
    return full


@attrs.frozen(eq=False)
class PreparedRestore:
    """Full-size optimizer state computed from the reduced state, not yet installed."""

    optimizer: Any
    swaps: tuple[ParamSwap, ...]
    _entries: tuple[_Entry, ...]
    _writes: tuple[RowWrites, ...] = ()  # into held state, made at commit (undone by undo)

    def commit(self) -> None:
        """Point ``param_groups`` at the full parameters and install their full-size state."""
        for writes in self._writes:
            writes.apply()
        _swap_in(self.optimizer, self._entries, lambda e: e.swap.reduced, lambda e: e.swap.full)

    def undo(self) -> None:
        """Undo :meth:`commit`: the reduced parameters and their state back in the optimizer."""
        _swap_back(self.optimizer, self._entries, to_full=False)
        for writes in reversed(self._writes):
            writes.undo()


def prepare_restore(optimizer: Any, swaps: Sequence[ParamSwap]) -> PreparedRestore:
    """Compute full-size state for an optimizer created while reduced; change nothing.

    Call it when reverting, before the embeddings are reverted or after (it only needs the
    swaps). Dropped rows get zero state; swaps whose reduced parameter the optimizer doesn't
    hold (frozen embeddings) are skipped.

    Raises:
        VocabError: The optimizer holds a full-size parameter of ``swaps`` (already restored),
            or keeps bitsandbytes 8-bit state for one.
    """
    return _prepare_restore(optimizer, swaps, {}, required=False)


class AttachedOptimizer(Applied):
    """Undo handle for an optimizer created while reduced: ``revert()`` restores it."""

    what = "optimizer"

    def __init__(self, optimizer: Any, swaps: tuple[ParamSwap, ...]) -> None:
        super().__init__(optimizer)
        self.optimizer = optimizer
        self.swaps = swaps

    def _check_revert(self) -> None:
        """Raise ``VocabError`` if the optimizer can't be restored (see ``prepare_restore``)."""
        for swap, where in _restore_positions(self.optimizer, self.swaps, required=False):
            _check_bnb(self.optimizer, swap, False, where, "scattered back")

    def _prepare_revert(
        self, inputs: RevertInputs
    ) -> tuple[Callable[[], None], Callable[[], None]]:
        restore = _prepare_restore(self.optimizer, self.swaps, {}, required=False, inputs=inputs)
        return restore.commit, restore.undo

    def _rollback(self) -> None:
        """Forget the optimizer; it is left as it is."""

    def forget(self) -> None:
        """Drop this handle without touching the optimizer (it was never restored)."""
        if self.active:
            self._finish("forgotten")


def attach(optimizer: Any, swaps: Sequence[ParamSwap]) -> AttachedOptimizer:
    """Register an optimizer created while reduced, to be restored on ``revert()``.

    Raises:
        VocabError: ``optimizer`` has no ``param_groups``, or holds a full-size parameter.
    """
    _restore_positions(optimizer, swaps, required=False)
    return AttachedOptimizer(optimizer, tuple(swaps))
