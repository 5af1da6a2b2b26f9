"""Softmax over the full vocabulary while reduced: the ``"full"`` and ``"shifted"`` modes.

With ``apply_plan(..., softmax="full")`` the training loss of the reduced model equals the
full-vocabulary loss of the model whose dropped rows are frozen. The dropped rows of the output
layer enter only the softmax normaliser: they get no gradient and no optimizer state, and their
logits are never held at once (they are reduced to one log-sum-exp per position, chunk by chunk,
in a custom autograd function that recomputes the chunks in the backward pass).

How the standard loss path sees it:

* When the model is called with ``labels`` (``model(input_ids, labels=...)``: the Hugging Face
  ``Trainer``, TRL's ``SFTTrainer``, a plain loop), the output layer returns ``new_size + 1``
  columns inside the forward: the kept rows' logits and, last, the log-sum-exp of the dropped
  rows' logits. The loss is computed over them; the caller gets ``new_size`` columns (the
  model's forward returns ``logits[..., :new_size]``, a view), so the normaliser column never
  leaves the model. For
  the duration of that call, ``config.vocab_size`` (and a ``vocab_size`` attribute of the
  model's modules equal to ``new_size``) reads ``new_size + 1`` so the model's own
  loss (``ForCausalLMLoss``, ``ForMaskedLMLoss``, the inline ``CrossEntropyLoss`` of older
  models, all of which ``view(-1, config.vocab_size)``) is the cross-entropy over the full
  vocabulary: ``logsumexp(kept, lse(dropped)) == logsumexp(all rows)``. Labels are in the
  reduced numbering and never equal ``new_size``.
* Without ``labels`` (``generate``, pipelines, ``model(ids).logits``) nothing changes: the
  logits have ``new_size`` columns, so generation can never produce a dropped id.

The model's class is swapped for a subclass of the same name whose ``forward`` notices
``labels`` (so that a wrapper calling ``model.forward`` directly, as PEFT does, is covered),
and the output layer gets a forward hook. Both are removed on revert.

``"shifted"`` adds one trainable vector ``s`` (hidden size, zero at apply) to every dropped row
inside the normaliser, which costs nothing extra: ``lse_j(h·(w_j + s) + b_j) =
lse_j(h·w_j + b_j) + h·s``. When the output layer has a trainable bias, a trainable scalar
``c`` is added to every dropped bias entry the same way. Both are registered on the output
layer (``<head>.vocab_shift`` and ``<head>.vocab_shift_bias``) so an optimizer created after
apply trains them. Revert writes ``w_j + s`` (and ``b_j + c``) into the dropped rows. With tied
embeddings the output rows are the input embedding rows, so the dropped ids' input embeddings
move by ``s`` too (full-vocabulary training moves them as well, through the output side).

Models that transform logits after the output layer in a way a single extra column cannot
carry (``final_logit_softcapping``, ``logit_scale``, ``logits_scaling`` other than 1) are
refused with ``VocabError``. A model without a vocabulary-sized output layer ignores the mode.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import attrs
import torch
from torch import nn

from vocab_adapters.stages.normaliser import DroppedRows, matmul_dtype
from vocab_adapters.stages.reversible import Applied, RevertInputs, RowShift
from vocabcore import VocabError, VocabPlan

__all__ = ["AppliedSoftmax", "PreparedSoftmax", "SOFTMAX_MODES", "dropped_logsumexp", "prepare"]

SOFTMAX_MODES = ("reduced", "full", "shifted")
"""The values ``apply_plan(..., softmax=...)`` accepts."""

DEFAULT_CHUNK_ROWS = 8192
"""Dropped rows whose logits are computed at once (per position) in the normaliser."""

_STATE = "_vocabcore_softmax"
SHIFT = "vocab_shift"
SHIFT_BIAS = "vocab_shift_bias"


def check_mode(softmax: Any) -> str:
    """Return ``softmax`` if it is a known mode, else raise ``VocabError``."""
    if not isinstance(softmax, str) or softmax not in SOFTMAX_MODES:
        raise VocabError(f"'softmax' must be 'reduced', 'full' or 'shifted' (got {softmax!r})")
    return softmax


# -- the normaliser of the dropped rows ---------------------------------------------------------


def _chunks(source: torch.Tensor, rows: torch.Tensor | None, n: int, size: int) -> Any:
    """Yield ``(start, stop, weight_chunk)`` over the dropped rows, ``size`` rows at a time."""
    for start in range(0, n, size):
        stop = min(start + size, n)
        if rows is None:
            yield start, stop, source[start:stop]
        else:
            yield start, stop, source.index_select(0, rows[start:stop])


class _DroppedLSE(torch.autograd.Function):
    """``logsumexp_j(h · w_j + b_j)`` over frozen rows, chunked; gradient to ``h`` only."""

    @staticmethod
    def forward(
        ctx: Any,
        hidden: torch.Tensor,
        source: torch.Tensor,
        rows: torch.Tensor | None,
        bias: torch.Tensor | None,
        n: int,
        chunk: int,
    ) -> torch.Tensor:
        running_max = torch.full(
            (hidden.shape[0],), float("-inf"), dtype=torch.float32, device=hidden.device
        )
        total = torch.zeros((hidden.shape[0],), dtype=torch.float32, device=hidden.device)
        for start, stop, weight in _chunks(source, rows, n, chunk):
            logits = (hidden @ weight.to(hidden.dtype).t()).float()
            if bias is not None:
                logits += bias[start:stop]
            chunk_max = logits.amax(dim=1)
            new_max = torch.maximum(running_max, chunk_max)
            safe = torch.where(torch.isinf(new_max), torch.zeros_like(new_max), new_max)
            total = total * torch.exp(running_max - safe) + torch.exp(
                logits - safe.unsqueeze(1)
            ).sum(dim=1)
            running_max = new_max
        safe = torch.where(torch.isinf(running_max), torch.zeros_like(running_max), running_max)
        lse = torch.log(total) + safe
        ctx.save_for_backward(hidden, lse)
        ctx.source, ctx.rows, ctx.bias, ctx.n, ctx.chunk = source, rows, bias, n, chunk
        return lse

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:
        hidden, lse = ctx.saved_tensors
        grad_hidden = None
        if ctx.needs_input_grad[0]:
            acc = torch.zeros(hidden.shape, dtype=torch.float32, device=hidden.device)
            scale = grad.float().unsqueeze(1)
            for start, stop, weight in _chunks(ctx.source, ctx.rows, ctx.n, ctx.chunk):
                logits = (hidden @ weight.to(hidden.dtype).t()).float()
                if ctx.bias is not None:
                    logits += ctx.bias[start:stop]
                probs = torch.exp(logits - lse.unsqueeze(1)) * scale
                acc += probs @ weight.float()
            grad_hidden = acc.to(hidden.dtype)
        return grad_hidden, None, None, None, None, None


@attrs.frozen(eq=False)
class _Normaliser:
    """What the extra column needs: the frozen dropped rows, their biases, the shifts."""

    source: torch.Tensor  # full output weight (detached), or a contiguous copy of dropped rows
    rows: torch.Tensor | None  # dropped positions in ``source``; None: all of ``source``
    count: int
    bias: torch.Tensor | None  # float32 (count,), frozen biases of the dropped rows
    shift: nn.Parameter | None
    shift_bias: nn.Parameter | None
    chunk: int
    matmul: torch.dtype | None = None  # the normaliser's matmul dtype; None: the hidden's
    # Frozen data on other devices (the model moved after apply): moved once, the dropped
    # rows as one contiguous tensor, then reused by every call.
    _moved: dict[torch.device, tuple[torch.Tensor, torch.Tensor | None]] = attrs.field(
        factory=dict, init=False
    )

    def on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None, Any]:
        """``(source, rows, bias)`` on ``device``; copied there at most once."""
        if self.source.device == device:
            return self.source, self.rows, self.bias
        moved = self._moved.get(device)
        if moved is None:
            with torch.no_grad():
                source = self.source
                if self.rows is not None:
                    source = source.index_select(0, self.rows.to(source.device))
                bias = None if self.bias is None else self.bias.to(device)
                moved = (source.to(device), bias)
            self._moved.clear()  # one device at a time: the model is where it is now
            self._moved[device] = moved
        return moved[0], None, moved[1]

    def column(self, hidden: torch.Tensor) -> torch.Tensor:
        """The log-sum-exp of the dropped rows' logits for every position of ``hidden``."""
        flat = hidden.reshape(-1, hidden.shape[-1])
        source, rows, bias = self.on(flat.device)
        lse = DroppedRows(source, rows, bias).logsumexp(flat, self.chunk, self.matmul)
        if self.shift is not None:
            lse = lse + (flat @ self.shift.to(flat.dtype)).float()
        if self.shift_bias is not None:
            lse = lse + self.shift_bias.float()
        return lse.reshape(hidden.shape[:-1])


def dropped_logsumexp(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """The extra column for a loss computed outside the model.

    Args:
        model: A model reduced with ``softmax="full"`` or ``"shifted"``.
        hidden: The output layer's input (``[..., hidden_size]``).

    Returns:
        ``[...]`` float32: the log-sum-exp of the dropped rows' logits (shifts included), so
        that ``cross_entropy(cat([logits, lse[..., None]], -1), labels)`` is the full loss.

    Raises:
        VocabError: The model is not reduced with a full softmax.
    """
    state = model.__dict__.get(_STATE)
    if not isinstance(state, _State):
        raise VocabError(
            "this model is not reduced with softmax='full' or 'shifted'; apply_plan(..., "
            "softmax='full') first"
        )
    return state.normaliser.column(hidden)


# -- the switch: labels given -> the extra column and vocab_size + 1 ----------------------------


class _State:
    """Per-model state while reduced: when the extra column is on, and its normaliser."""

    def __init__(
        self,
        normaliser: _Normaliser,
        new_size: int,
        configs: Callable[[], list[Any]],
        outside_biases: tuple[tuple[nn.Module, str, torch.Tensor], ...],
        labels_position: int | None,
    ) -> None:
        self.normaliser = normaliser
        self.new_size = new_size
        self._configs = configs
        self._outside = outside_biases
        self.labels_position = labels_position
        self._depth = 0
        self._lock = threading.Lock()
        self._saved: list[tuple[Any, Any]] = []
        self._saved_buffers: list[tuple[nn.Module, str, torch.Tensor]] = []

    @property
    def on(self) -> bool:
        return self._depth > 0

    @contextmanager
    def labelled(self) -> Any:
        with self._lock:
            self._depth += 1
            if self._depth == 1:
                self._enter()
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0:
                    self._exit()

    def _enter(self) -> None:
        try:
            for owner in self._configs():
                if owner.__dict__.get("vocab_size") == self.new_size:
                    self._saved.append((owner, self.new_size))
                    owner.__dict__["vocab_size"] = self.new_size + 1
            for module, name, _ in self._outside:
                current = module._buffers[name]
                assert current is not None
                self._saved_buffers.append((module, name, current))
                pad = torch.zeros(
                    (*current.shape[:-1], 1), dtype=current.dtype, device=current.device
                )
                module._buffers[name] = torch.cat([current, pad], dim=-1)
        except BaseException:
            self._exit()
            raise

    def _exit(self) -> None:
        for owner, value in self._saved:
            owner.__dict__["vocab_size"] = value
        for module, name, tensor in self._saved_buffers:
            module._buffers[name] = tensor
        self._saved.clear()
        self._saved_buffers.clear()


_SUBCLASSES: dict[type, type] = {}


def _labels_position(cls: type) -> int | None:
    try:
        names = list(inspect.signature(cls.forward).parameters)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        return None
    return names.index("labels") - 1 if "labels" in names else None


def _subclass(cls: type) -> type:
    """A subclass of ``cls`` of the same name whose ``forward`` switches on with labels."""
    if cls in _SUBCLASSES:
        return _SUBCLASSES[cls]
    base_forward = cls.forward  # type: ignore[attr-defined]

    def forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        state = self.__dict__.get(_STATE)
        if not isinstance(state, _State):
            return base_forward(self, *args, **kwargs)
        labels = kwargs.get("labels")
        position = state.labels_position
        if labels is None and position is not None and len(args) > position:
            labels = args[position]
        if labels is None:
            return base_forward(self, *args, **kwargs)
        with state.labelled():
            output = base_forward(self, *args, **kwargs)
        return _without_column(output, state.new_size)

    forward.__doc__ = base_forward.__doc__
    forward.__wrapped__ = base_forward  # type: ignore[attr-defined]
    namespace = {
        "forward": forward,
        "__module__": cls.__module__,
        "__qualname__": cls.__qualname__,
        "__doc__": cls.__doc__,
        "_vocabcore_softmax_base": cls,
    }
    sub = type(cls.__name__, (cls,), namespace)
    _SUBCLASSES[cls] = sub
    return sub


def _without_column(output: Any, new_size: int) -> Any:
    """``output`` with its logits cut to ``new_size`` columns (the normaliser column goes).

    The loss was computed over ``new_size + 1`` columns inside the forward; the caller gets
    the kept ids' logits only, so ``argmax`` never returns the nonexistent id ``new_size``.
    Handles ``ModelOutput`` (``return_dict=True``) and tuples (``return_dict=False``).
    """

    def cut(value: Any) -> Any:
        if isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[-1] == new_size + 1:
            return value[..., :new_size]
        return value

    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        output.logits = cut(logits)
        return output
    if isinstance(output, tuple):
        items = list(output)
        for k, value in enumerate(items):
            if isinstance(value, torch.Tensor) and value.dim() >= 2 and cut(value) is not value:
                items[k] = cut(value)
                break
        return type(output)(items) if type(output) is tuple else output
    return output


def _install_class(model: nn.Module, cls: type) -> None:
    model.__class__ = cls


def _head_hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
    state = module.__dict__.get(_STATE)
    if not isinstance(state, _State) or not state.on or not isinstance(output, torch.Tensor):
        return output
    column = state.normaliser.column(args[0])
    return torch.cat([output, column.to(output.dtype).unsqueeze(-1)], dim=-1)


# -- prepare / commit / revert ------------------------------------------------------------------


def _refuse_post_head_transforms(model: nn.Module) -> None:
    config = getattr(model, "config", None)
    if config is None:
        return
    from vocab_adapters.stages.config_tree import config_owners

    for path, owner in config_owners(config):
        values = vars(owner)
        problems = []
        if values.get("final_logit_softcapping") is not None:
            problems.append("final_logit_softcapping")
        if values.get("logit_scale") not in (None, 1, 1.0):
            problems.append("logit_scale")
        if values.get("logits_scaling") not in (None, 1, 1.0):
            problems.append("logits_scaling")
        if problems:
            raise VocabError(
                f"{path}.{problems[0]} transforms the logits after the output layer, which the "
                "extra normaliser column of softmax='full'/'shifted' cannot carry; use "
                "softmax='reduced' for this model"
            )


def _outside_biases(
    model: nn.Module, head: nn.Module, rows: int
) -> list[tuple[nn.Module, str, torch.Tensor]]:
    """Vocabulary biases added to the logits outside the head (BART's ``final_logits_bias``)."""
    found = []
    head_modules = {id(m) for m in head.modules()}
    for _, module in model.named_modules():
        if id(module) in head_modules:
            continue
        for name, tensor in module._buffers.items():
            if (
                tensor is not None
                and name.endswith("bias")
                and tensor.dim() == 2
                and tuple(tensor.shape) == (1, rows)
            ):
                found.append((module, name, tensor))
    return found


@attrs.frozen(eq=False)
class PreparedSoftmax:
    """The full-softmax machinery for one model, computed, not yet installed.

    Attributes:
        mode: ``"full"`` or ``"shifted"`` (``"reduced"`` and models without a vocabulary-sized
            output layer prepare nothing: ``head`` is ``None``).
        head: The output layer that gets the extra column.
        parameters: The trainable shift parameters ``"shifted"`` adds (empty for ``"full"``).
    """

    mode: str
    model: nn.Module
    head: nn.Module | None
    parameters: tuple[nn.Parameter, ...]
    _state: _State | None
    _subclass: type | None
    _full_weight: nn.Parameter | None
    _full_bias: nn.Parameter | None
    _dropped: torch.Tensor | None

    def commit(self) -> AppliedSoftmax:
        """Install the class swap, the hook and the shift parameters; return the undo handle."""
        applied = AppliedSoftmax(self)
        try:
            applied._install()
        except BaseException:
            applied._uninstall()
            applied._finish("rolled back")
            raise
        return applied


class AppliedSoftmax(Applied):
    """Undo handle of the full-softmax machinery."""

    what = "output layer"

    def __init__(self, prepared: PreparedSoftmax) -> None:
        # Recorded against the output layer it hooks (the model itself is the embeddings
        # stage's target); a model without one records the prepared object.
        super().__init__(prepared.head if prepared.head is not None else prepared)
        self.mode = prepared.mode
        self.model = prepared.model
        self.head = prepared.head
        self.parameters = prepared.parameters
        self._prepared = prepared
        self._base = type(prepared.model)
        self._handle: Any = None

    def _install(self) -> None:
        """(Re)install the class swap, the hook and the shift parameters (plain assignments)."""
        prepared = self._prepared
        if self.head is None or prepared._state is None or prepared._subclass is None:
            return
        self.model.__dict__[_STATE] = prepared._state
        self.head.__dict__[_STATE] = prepared._state
        normaliser = prepared._state.normaliser
        if normaliser.shift is not None:
            self.head._parameters[SHIFT] = normaliser.shift
        if normaliser.shift_bias is not None:
            self.head._parameters[SHIFT_BIAS] = normaliser.shift_bias
        self._handle = self.head.register_forward_hook(_head_hook)
        _install_class(self.model, prepared._subclass)

    def _uninstall(self) -> None:
        prepared = self._prepared
        if self.head is None:
            return
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        for name in (SHIFT, SHIFT_BIAS):
            if any(self.head._parameters.get(name) is p for p in self.parameters):
                del self.head._parameters[name]
        self.head.__dict__.pop(_STATE, None)
        self.model.__dict__.pop(_STATE, None)
        if prepared._subclass is not None and type(self.model) is prepared._subclass:
            self.model.__class__ = self._base

    def _check_revert(self) -> None:
        """Raise ``VocabError`` if the class, hook or shift parameters were changed."""
        if self.head is None:
            return
        if type(self.model) is not self._prepared._subclass:
            raise VocabError(
                f"the model's class was changed to {type(self.model).__name__} while reduced "
                "with softmax='full'/'shifted'; put it back before reverting"
            )
        for name, param in zip((SHIFT, SHIFT_BIAS), self._shifts(), strict=True):
            if param is not None and self.head._parameters.get(name) is not param:
                raise VocabError(
                    f"the output layer's {name} parameter was removed or replaced while "
                    "reduced; put it back before reverting"
                )

    def _shifts(self) -> tuple[nn.Parameter | None, nn.Parameter | None]:
        state = self._prepared._state
        if state is None:
            return None, None
        return state.normaliser.shift, state.normaliser.shift_bias

    def row_shifts(self) -> tuple[RowShift, ...]:
        """The trained shifts of the dropped rows, as plain data for the embeddings stage.

        One :class:`~vocab_adapters.stages.reversible.RowShift` per full parameter that
        ``"shifted"`` moves (the output weight, and its bias when that is trained); none for
        ``"full"``, and none while the shifts are zero (so apply -> revert untrained is
        bit-identical). The embeddings stage writes ``row + shift`` into the dropped rows on revert.
        """
        prepared = self._prepared
        shift, shift_bias = self._shifts()
        dropped = prepared._dropped
        out: list[RowShift] = []
        if dropped is None:
            return ()
        for full, delta in ((prepared._full_weight, shift), (prepared._full_bias, shift_bias)):
            if full is None or delta is None or not bool((delta != 0).any()):
                continue
            out.append(RowShift(full, dropped, delta.detach().clone()))
        return tuple(out)

    def _prepare_revert(
        self, inputs: RevertInputs
    ) -> tuple[Callable[[], None], Callable[[], None]]:
        """Remove the machinery (the shifts reach the embeddings stage as :meth:`row_shifts`)."""
        return self._uninstall, self._install

    def _rollback(self) -> None:
        self._uninstall()


def prepare(
    plan: VocabPlan,
    model: nn.Module,
    swaps: tuple[Any, ...],
    softmax: str = "full",
    *,
    offload: str | None = None,
    chunk_rows: int | None = None,
    normaliser: str = "exact",
) -> PreparedSoftmax:
    """Validate and compute the full-softmax machinery for ``model``; change nothing.

    Runs after :func:`vocab_adapters.stages.embeddings.prepare` (it needs its ``swaps``: which full
    parameter is the output layer's weight and bias, and the kept index). On revert it only
    removes its machinery; ``"shifted"`` hands its trained shifts to the embeddings stage as
    plain data (:meth:`AppliedSoftmax.row_shifts`), which writes them into the rows it owns.

    Args:
        plan: The plan being applied.
        model: The model, still full-size.
        swaps: ``PreparedEmbeddings.swaps`` of the same apply.
        softmax: ``"reduced"`` (prepare nothing), ``"full"`` or ``"shifted"``.
        offload: As given to the embeddings stage; with ``"cpu"`` a device copy of the dropped
            output rows is kept (the normaliser needs them where the hidden states are).
        chunk_rows: Dropped rows whose logits are computed at once (default
            :data:`DEFAULT_CHUNK_ROWS`); the normaliser holds ``positions * chunk_rows``
            float32 logits at a time.
        normaliser: ``"exact"``, or ``"bfloat16"`` (the normaliser's matmuls in bfloat16: an
            approximation for float32 models, see ``vocab_adapters.stages.normaliser``).

    Raises:
        VocabError: Unknown mode, bad ``chunk_rows``, or a model that transforms logits after
            the output layer.
    """
    check_mode(softmax)
    matmul = matmul_dtype(normaliser)
    if chunk_rows is None:
        chunk_rows = DEFAULT_CHUNK_ROWS
    if not isinstance(chunk_rows, int) or isinstance(chunk_rows, bool) or chunk_rows < 1:
        raise VocabError(f"'chunk_rows' must be a positive int (got {chunk_rows!r})")
    nothing = PreparedSoftmax(softmax, model, None, (), None, None, None, None, None)
    if softmax == "reduced":
        return nothing
    get_output = getattr(model, "get_output_embeddings", None)
    head = get_output() if callable(get_output) else None
    weight = getattr(head, "weight", None)
    swap = next((s for s in swaps if weight is not None and s.full is weight), None)
    if head is None or swap is None or weight is None or weight.dim() != 2:
        return nothing  # no vocabulary-sized output layer: the choice does not apply
    _refuse_post_head_transforms(model)
    for name in (SHIFT, SHIFT_BIAS):
        if name in head._parameters:
            raise VocabError(f"the output layer already has a parameter named {name!r}")
    rows = int(weight.shape[0])
    keep = torch.zeros(rows, dtype=torch.bool, device=weight.device)
    keep[swap.index.to(weight.device)] = True
    dropped = (~keep).nonzero().squeeze(1)
    count = len(dropped)
    if count == 0:
        return nothing
    bias_param = getattr(head, "bias", None)
    bias_swap = next((s for s in swaps if bias_param is not None and s.full is bias_param), None)
    with torch.no_grad():
        bias_values = torch.zeros(count, dtype=torch.float32, device=weight.device)
        has_bias = False
        if bias_swap is not None:
            bias_values += bias_param.detach().index_select(0, dropped).float()  # type: ignore[union-attr]
            has_bias = True
        outside = _outside_biases(model, head, rows)
        for _, _, tensor in outside:
            bias_values += tensor.detach()[0].to(weight.device).index_select(0, dropped).float()
            has_bias = True
        if offload == "cpu" and weight.device.type != "cpu":
            source, index = weight.detach().index_select(0, dropped), None
        else:
            source, index = weight.detach(), dropped
    shift = shift_bias = None
    if softmax == "shifted":
        shift = nn.Parameter(torch.zeros(weight.shape[1], dtype=weight.dtype, device=weight.device))
        if bias_swap is not None and bias_param is not None and bias_param.requires_grad:
            shift_bias = nn.Parameter(torch.zeros(1, dtype=bias_param.dtype, device=weight.device))
    built = _Normaliser(
        source,
        index,
        count,
        bias_values if has_bias else None,
        shift,
        shift_bias,
        chunk_rows,
        matmul,
    )
    config = getattr(model, "config", None)

    def configs() -> list[Any]:
        # The config owners, and the modules whose own ``vocab_size`` attribute the loss reads
        # (``Gemma3ForCausalLM`` passes ``self.vocab_size`` to its loss function).
        modules = [m for m in model.modules() if m.__dict__.get("vocab_size") == plan.new_size]
        if config is None:
            return modules
        from vocab_adapters.stages.config_tree import config_owners

        return [owner for _, owner in config_owners(config)] + modules

    state = _State(
        built,
        plan.new_size,
        configs,
        tuple((m, n, t) for m, n, t in outside),
        _labels_position(type(model)),
    )
    parameters = tuple(p for p in (shift, shift_bias) if p is not None)
    return PreparedSoftmax(
        softmax,
        model,
        head,
        parameters,
        state,
        _subclass(type(model)),
        weight,
        bias_param if bias_swap is not None else None,
        dropped,
    )
