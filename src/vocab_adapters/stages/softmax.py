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

Other loss paths (docs/softmax_modes.md, "Loss paths"):

* ``forward`` on the swapped class is a data descriptor: an instance ``forward`` (TRL's fused
  LM head, accelerate's wrappers), set before or while reduced, is kept aside and returned
  wrapped; TRL's ``fused_lm_head=True`` log-probabilities and loss are corrected to the full
  vocabulary there (:func:`_fused_call`). Under PEFT the base model's class is swapped too.
* A call without labels in training mode with gradients enabled leaves the output layer's
  input on its output, for :func:`dropped_logsumexp`. Inside a ``Trainer``'s
  ``compute_loss`` such a call is covered (label smoothing, made exact) or refused unless the
  loss function or trainer is marked with :func:`full_vocab_loss`.
* A labelled call whose loss never ran the output layer (a fused loss kernel) is refused.

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
import sys
import threading
import types
from collections.abc import Callable
from contextlib import contextmanager, suppress
from typing import Any

import attrs
import torch
from torch import nn

from vocab_adapters.stages.normaliser import (
    DroppedRows,
    SampledDropped,
    matmul_dtype,
    sample_size,
)
from vocab_adapters.stages.reversible import Applied, RevertInputs, RowShift
from vocabcore import VocabError, VocabPlan

__all__ = [
    "AppliedSoftmax",
    "PreparedSoftmax",
    "SOFTMAX_MODES",
    "check_normaliser",
    "dropped_logsumexp",
    "full_vocab_loss",
    "prepare",
]

SOFTMAX_MODES = ("reduced", "full", "shifted")
"""The values ``apply_plan(..., softmax=...)`` accepts."""

DEFAULT_CHUNK_ROWS = 8192
"""Dropped rows whose logits are computed at once (per position) in the normaliser."""

_STATE = "_vocabcore_softmax"
SHIFT = "vocab_shift"
SHIFT_BIAS = "vocab_shift_bias"
_PATCHED = "_vocabcore_patched_forward"  # an instance ``forward`` set on the model while reduced
_WRAPPED = "_vocabcore_wrapped_forward"  # (patched, its wrapper), made once
_CAPTURE = "_vocabcore_head_input"  # on a label-free training output: the head's input
FULL_VOCAB_MARK = "vocab_full_softmax"
"""Attribute :func:`full_vocab_loss` sets on a loss function that adds the extra column."""


def check_mode(softmax: Any) -> str:
    """Return ``softmax`` if it is a known mode, else raise ``VocabError``."""
    if not isinstance(softmax, str) or softmax not in SOFTMAX_MODES:
        raise VocabError(f"'softmax' must be 'reduced', 'full' or 'shifted' (got {softmax!r})")
    return softmax


def check_normaliser(normaliser: Any, softmax: str) -> str:
    """Return ``normaliser`` if it is known and ``softmax`` uses one, else raise ``VocabError``."""
    sample_size(normaliser, 1)
    if normaliser != "exact" and softmax == "reduced":
        raise VocabError(
            f"normaliser={normaliser!r} applies to softmax='full' or 'shifted' only (the "
            "'reduced' loss has no dropped rows to sum); drop normaliser= or choose one of them"
        )
    return str(normaliser)


# -- the normaliser of the dropped rows ---------------------------------------------------------


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
    sample: int | None = None  # rows drawn per training call (an approximation); None: all
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
        dropped = DroppedRows(source, rows, bias)
        if self.sample is not None and flat.requires_grad and torch.is_grad_enabled():
            lse = SampledDropped(dropped, self.sample).logsumexp(flat, self.chunk)
        else:
            lse = dropped.logsumexp(flat, self.chunk, self.matmul)
        if self.shift is not None:
            lse = lse + (flat @ self.shift.to(flat.dtype)).float()
        if self.shift_bias is not None:
            lse = lse + self.shift_bias.float()
        return lse.reshape(hidden.shape[:-1])


def dropped_logsumexp(model: nn.Module, hidden: Any) -> torch.Tensor:
    """The extra column for a loss computed outside the model.

    Args:
        model: A model reduced with ``softmax="full"`` or ``"shifted"``.
        hidden: The output layer's input (``[..., hidden_size]``), or the output of a call of
            the model without ``labels`` in training mode with gradients enabled (such an
            output carries the output layer's input).

    Returns:
        ``[...]`` float32: the log-sum-exp of the dropped rows' logits (shifts included), so
        that ``cross_entropy(cat([logits, lse[..., None]], -1), labels)`` is the full loss.

    Raises:
        VocabError: The model is not reduced with a full softmax, or ``hidden`` is an output
            that does not carry the output layer's input.
    """
    state = model.__dict__.get(_STATE)
    if not isinstance(state, _State):
        raise VocabError(
            "this model is not reduced with softmax='full' or 'shifted'; apply_plan(..., "
            "softmax='full') first"
        )
    if not isinstance(hidden, torch.Tensor):
        captured = _captured(hidden)
        if captured is None:
            raise VocabError(
                "this model output does not carry the output layer's input (only outputs of a "
                "call without labels, in training mode, with gradients enabled, returned as a "
                "ModelOutput do); pass the hidden states given to the output layer instead"
            )
        hidden = captured[1]
    return state.normaliser.column(hidden)


def full_vocab_loss(target: Any) -> Any:
    """Mark a ``compute_loss_func`` (or a trainer) as computing the full-vocabulary loss itself.

    With ``softmax="full"``/``"shifted"``, a call of the model without labels while training
    from inside a ``Trainer``'s ``compute_loss`` gets logits over the kept ids only. That is
    how the ``Trainer`` calls the model when ``compute_loss_func`` is set, and how trainers
    that compute log-probabilities from the logits (a ``compute_loss`` override, older TRL
    trainers) do; the first training step raises ``VocabError`` unless the function (or the
    trainer) is marked with this function, which promises that the loss adds
    ``dropped_logsumexp(model, outputs)`` as an extra column (or means to train over the kept
    ids only). Label smoothing needs no mark: it is made exact.

    Args:
        target: The loss function (``(outputs, labels, num_items_in_batch) -> loss``; usable
            as a decorator), or the trainer whose ``compute_loss`` calls the model.

    Returns:
        ``target`` itself, marked.
    """
    setattr(target, FULL_VOCAB_MARK, True)
    return target


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
        self.local = threading.local()  # per thread: capture slots, the patched-call depth
        self._sums: dict[torch.device, torch.Tensor] = {}

    def slots(self) -> list[Any]:
        """This thread's capture slots (one per label-free training call in progress)."""
        slots: list[Any] | None = getattr(self.local, "slots", None)
        if slots is None:
            slots = self.local.slots = []
        return slots

    def dropped_sum(self, hidden: torch.Tensor) -> torch.Tensor:
        """``sum_j`` of the dropped rows' logits (shifts included) for every position."""
        flat = hidden.reshape(-1, hidden.shape[-1])
        normaliser = self.normaliser
        total = self._sums.get(flat.device)
        if total is None:
            with torch.no_grad():
                source, rows, _ = normaliser.on(flat.device)
                total = torch.zeros(source.shape[1], dtype=torch.float32, device=flat.device)
                for start in range(0, normaliser.count, normaliser.chunk):
                    stop = min(start + normaliser.chunk, normaliser.count)
                    part = (
                        source[start:stop]
                        if rows is None
                        else source.index_select(0, rows[start:stop])
                    )
                    total += part.float().sum(dim=0)
            self._sums.clear()
            self._sums[flat.device] = total
        out = flat.float() @ total
        if normaliser.bias is not None:
            out = out + normaliser.bias.to(flat.device).sum()
        if normaliser.shift is not None:
            out = out + normaliser.count * (flat @ normaliser.shift.to(flat.dtype)).float()
        if normaliser.shift_bias is not None:
            out = out + normaliser.count * normaliser.shift_bias.float()
        return out.reshape(hidden.shape[:-1])

    @property
    def on(self) -> bool:
        return self._depth > 0

    def __deepcopy__(self, memo: dict[int, Any]) -> _State:
        raise VocabError(
            "a model reduced with softmax='full'/'shifted' cannot be copied (its machinery "
            "points at this model); TRL's DPO/KTO/GRPO copy the model when no reference model "
            "is given: pass ref_model= (the same base model reduced with the same plan), or "
            "copy the model before apply_plan"
        )

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
        return _route(self, state, types.MethodType(base_forward, self), args, kwargs)

    forward.__doc__ = base_forward.__doc__
    forward.__wrapped__ = base_forward  # type: ignore[attr-defined]
    namespace = {
        "forward": _ForwardSlot(forward),
        "__module__": cls.__module__,
        "__qualname__": cls.__qualname__,
        "__doc__": cls.__doc__,
        "_vocabcore_softmax_base": cls,
        "_vocabcore_labels_position": _labels_position(cls),
    }
    sub = type(cls.__name__, (cls,), namespace)
    _SUBCLASSES[cls] = sub
    return sub


def _route(
    model: nn.Module,
    state: _State,
    call: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Call ``call``: with labels, with the extra column on; without, capturing the head input."""
    labels = kwargs.get("labels")
    position = getattr(type(model), "_vocabcore_labels_position", state.labels_position)
    if labels is None and position is not None and len(args) > position:
        labels = args[position]
    if labels is None:
        if not (torch.is_grad_enabled() and model.training):
            return call(*args, **kwargs)
        _check_trainer(model)
        slots = state.slots()
        slots.append(None)
        try:
            output = call(*args, **kwargs)
        finally:
            hidden = slots.pop()
        if hidden is not None and _captured(output) is None:
            # a tuple output cannot carry it: dropped_logsumexp needs the hidden states then
            with suppress(AttributeError, TypeError):
                object.__setattr__(output, _CAPTURE, (state, hidden))
        return output
    before = getattr(state.local, "columns", 0)
    with state.labelled():
        output = call(*args, **kwargs)
    if getattr(state.local, "columns", 0) == before and getattr(output, "loss", None) is not None:
        raise VocabError(
            f"{type(model).__name__}.forward computed its loss without calling the output "
            "layer (a fused loss kernel such as Liger's fused linear cross-entropy), so "
            "softmax='full'/'shifted' could not add the dropped rows; turn that kernel off or "
            "use softmax='reduced'"
        )
    return _without_column(output, state.new_size)


def _captured(output: Any) -> tuple[_State, torch.Tensor] | None:
    """``(state, head input)`` that a label-free training call left on its output."""
    try:
        found = object.__getattribute__(output, _CAPTURE)
    except AttributeError:
        return None
    return found if isinstance(found, tuple) else None


class _ForwardSlot:
    """``forward`` of the swapped class: keeps an instance ``forward`` set while reduced aside.

    Libraries replace ``model.forward`` on the instance (TRL's fused LM head, accelerate's
    mixed-precision wrapper), which would bypass the class's ``forward``. As a data descriptor
    this slot receives such an assignment, keeps the function in the model's ``__dict__``
    under another name, and returns it wrapped: labels still switch the extra column on, and
    TRL's fused LM head (``fused_lm_head=True``) gets its log-probabilities corrected to the
    full vocabulary. Revert puts the function back as the instance's ``forward``.
    """

    def __init__(self, function: Callable[..., Any]) -> None:
        self.function = function
        self.__doc__ = function.__doc__

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        if instance is None:
            return self.function
        patched = instance.__dict__.get(_PATCHED)
        if patched is None:
            return types.MethodType(self.function, instance)
        cached = instance.__dict__.get(_WRAPPED)
        if cached is None or cached[0] is not patched:
            cached = instance.__dict__[_WRAPPED] = (patched, _patched_wrapper(patched))
        return types.MethodType(cached[1], instance)

    def __set__(self, instance: Any, value: Any) -> None:
        instance.__dict__[_PATCHED] = value

    def __delete__(self, instance: Any) -> None:
        if instance.__dict__.pop(_PATCHED, None) is None:
            raise AttributeError("forward")


def _patched_wrapper(patched: Callable[..., Any]) -> Callable[..., Any]:
    def forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        state = self.__dict__.get(_STATE)
        depth = 0 if not isinstance(state, _State) else getattr(state.local, "depth", 0)
        if not isinstance(state, _State) or depth > 0:
            return patched(*args, **kwargs)  # not reduced, or an outer wrapper handles it
        state.local.depth = 1
        try:
            if kwargs.get("fused_lm_head"):
                return _fused_call(self, state, patched, args, kwargs)
            return _route(self, state, patched, args, kwargs)
        finally:
            state.local.depth = 0

    forward.__wrapped__ = patched  # type: ignore[attr-defined]
    forward.__doc__ = getattr(patched, "__doc__", None)
    try:  # the patched forward's signature (``generate`` and the Trainer read it) plus self
        signature = inspect.signature(patched)
        first = inspect.Parameter("__self", inspect.Parameter.POSITIONAL_ONLY)
        parameters = [first, *signature.parameters.values()]
        forward.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        pass
    return forward


def _closure_values(function: Any) -> dict[str, Any]:
    function = getattr(function, "__func__", function)
    try:
        return dict(inspect.getclosurevars(function).nonlocals)
    except TypeError:
        return {}


def _trl_fused_head(patched: Any) -> dict[str, Any] | None:
    """The closure of TRL's ``_fused_forward`` under ``patched`` (wrappers followed), or None.

    Other wrappers (accelerate's ``convert_outputs_to_fp32``, this module's own) set
    ``__wrapped__``; TRL's function keeps its name in its code object (``functools.wraps``
    renames the function itself) and its settings in its closure.
    """
    function = patched
    for _ in range(16):
        function = getattr(function, "__func__", function)
        code = getattr(function, "__code__", None)
        if getattr(code, "co_name", "") == "_fused_forward":
            values = _closure_values(function)
            return values if {"temperature", "backbone_attr"} <= set(values) else None
        function = getattr(function, "__wrapped__", None)
        if function is None:
            return None
    return None


def _fused_call(
    model: nn.Module,
    state: _State,
    patched: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """TRL's fused LM head, its log-probabilities and loss corrected to the full vocabulary.

    TRL (``trl.trainer.utils.add_fused_lm_head``) normalises over the output layer's rows,
    the kept ones. With ``z_y`` the label's logit and ``T`` the temperature, its
    ``log p = z_y/T - lse_kept``, so ``lse_kept = z_y/T - log p`` and the full-vocabulary
    ``log p_full = log p - softplus(lse_dropped - lse_kept)``, with ``lse_dropped`` the extra
    column over the hidden states divided by ``T``. Differentiable in every term, so the
    gradients (the shift's included) are those of the full softmax.
    """
    values = _trl_fused_head(patched)
    if values is None:
        raise VocabError(
            "model.forward was replaced by a fused LM head vocabcore does not know (called with "
            "fused_lm_head=True); softmax='full'/'shifted' cover TRL's add_fused_lm_head only: "
            "use softmax='reduced' with this head"
        )
    temperature = float(values["temperature"])
    head = model.get_output_embeddings()  # type: ignore[operator]
    weight = head.weight
    bias = getattr(head, "bias", None)
    if temperature != 1.0 and (bias is not None or state.normaliser.bias is not None):
        raise VocabError(
            f"TRL's fused LM head with temperature={temperature} on an output layer with a "
            "bias is not covered by softmax='full'/'shifted'; use temperature=1.0 or "
            "softmax='reduced'"
        )
    backbone = getattr(model, values["backbone_attr"])
    seen: list[Any] = []
    handle = backbone.register_forward_hook(lambda module, inputs, output: seen.append(output))
    try:
        output = patched(*args, **kwargs)
    finally:
        handle.remove()
    state.local.columns = getattr(state.local, "columns", 0) + 1  # this call is covered
    if not seen or getattr(output, "log_probs", None) is None:
        raise VocabError(
            "TRL's fused LM head ran without the backbone vocabcore expected, so its "
            "log-probabilities cannot be corrected to the full vocabulary; use "
            "softmax='reduced' with this trainer"
        )
    last = seen[-1]
    hidden = last.last_hidden_state if hasattr(last, "last_hidden_state") else last[0]
    shift_labels = kwargs.get("shift_labels")
    if shift_labels is None:
        hidden, target = hidden[:, :-1], kwargs["labels"][:, 1:]
    else:
        target = shift_labels
    mask = output.label_mask
    log_probs = output.log_probs
    if mask is None or tuple(mask.shape) != tuple(target.shape):
        raise VocabError(
            "TRL's fused LM head scored other positions than the labels (prompt-learning PEFT "
            "pads them), which softmax='full'/'shifted' cannot correct; use softmax='reduced'"
        )
    hidden = hidden.to(weight.device)
    picked = hidden[mask.to(hidden.device)]
    labels = target.to(weight.device)[mask]
    label_logit = (picked.float() * weight.index_select(0, labels).float()).sum(dim=-1)
    if bias is not None:
        label_logit = label_logit + bias.index_select(0, labels).float()
    kept_lse = label_logit / temperature - log_probs[mask].float()
    dropped_lse = state.normaliser.column(picked / temperature if temperature != 1.0 else picked)
    correction = nn.functional.softplus(dropped_lse - kept_lse)
    output.log_probs = log_probs - torch.zeros(
        mask.shape, dtype=log_probs.dtype, device=log_probs.device
    ).masked_scatter(mask, correction.to(log_probs.dtype))
    items = kwargs.get("num_items_in_batch")
    denominator = mask.sum().clamp(min=1) if items is None else items
    if output.loss is not None:
        output.loss = output.loss + correction.sum() / denominator
    return output


def _check_trainer(model: nn.Module) -> None:
    """A label-free training call from a ``Trainer``'s ``compute_loss``: cover it or refuse.

    The ``Trainer`` (and TRL's ``SFTTrainer``) takes the labels out before calling the model
    when ``label_smoothing_factor`` or ``compute_loss_func`` is set. Label smoothing is made
    exact by giving the trainer's smoother the full-vocabulary ``__call__`` (its class is
    swapped, which also reaches a call that already holds the smoother); a
    ``compute_loss_func`` not marked with :func:`full_vocab_loss` is refused.
    """
    frame: types.FrameType | None = sys._getframe(2)
    trainer: Any = None
    for _ in range(64):
        if frame is None:
            break
        if frame.f_code.co_name == "compute_loss":
            found = frame.f_locals.get("self")
            if hasattr(found, "label_smoother") and hasattr(found, "compute_loss_func"):
                trainer = found
                break
        frame = frame.f_back
    if trainer is None:
        return
    function = trainer.compute_loss_func
    if function is not None:
        if getattr(function, FULL_VOCAB_MARK, False):
            return
        raise VocabError(
            f"{type(trainer).__name__}(compute_loss_func=...) gets logits over the kept ids "
            "only with softmax='full'/'shifted' (the model is called without labels); add "
            "the column dropped_logsumexp(model, outputs) to the logits in your loss and mark "
            "it with vocab_adapters.stages.softmax.full_vocab_loss, or drop "
            "compute_loss_func, or use softmax='reduced'"
        )
    smoother = trainer.label_smoother
    if smoother is not None:
        if not getattr(type(smoother), FULL_VOCAB_MARK, False):
            smoother.__class__ = _full_smoother(type(smoother))
        return
    if getattr(trainer, FULL_VOCAB_MARK, False):
        return
    raise VocabError(
        f"{type(trainer).__name__}.compute_loss calls the model without labels while "
        "training, so its loss comes from logits over the kept ids only and "
        "softmax='full'/'shifted' would silently train 'reduced' (older TRL trainers compute "
        "log-probabilities this way; TRL 1.x's fused LM head is covered); compute the loss "
        "with the column dropped_logsumexp(model, outputs) and mark the trainer with "
        "vocab_adapters.stages.softmax.full_vocab_loss(trainer), or use softmax='reduced'"
    )


_SMOOTHERS: dict[type, type] = {}


def _full_smoother(cls: type) -> type:
    """A subclass of the trainer's ``LabelSmoother`` that smooths over the full vocabulary."""
    if cls in _SMOOTHERS:
        return _SMOOTHERS[cls]
    base_call = cls.__call__

    def __call__(
        self: Any,
        model_output: Any,
        labels: torch.Tensor,
        shift_labels: bool = False,
        num_items_in_batch: Any = None,
    ) -> torch.Tensor:
        captured = _captured(model_output)
        if captured is None:  # not reduced (any more), or a tuple output
            extra = {} if num_items_in_batch is None else {"num_items_in_batch": num_items_in_batch}
            return base_call(self, model_output, labels, shift_labels, **extra)  # type: ignore[no-any-return]
        state, hidden = captured
        logits = model_output["logits"] if isinstance(model_output, dict) else model_output[0]
        column = state.normaliser.column(hidden)
        dropped = state.dropped_sum(hidden)
        if shift_labels:
            logits, column, dropped = logits[..., :-1, :], column[..., :-1], dropped[..., :-1]
            labels = labels[..., 1:]
        logits = logits.float()
        rows = logits.shape[-1] + state.normaliser.count
        lse = torch.logaddexp(torch.logsumexp(logits, dim=-1), column)
        padding = labels.eq(self.ignore_index)
        safe = labels.clamp(min=0)
        nll = lse - logits.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
        smoothed = rows * lse - (logits.sum(dim=-1) + dropped)
        nll = nll.masked_fill(padding, 0.0)
        smoothed = smoothed.masked_fill(padding, 0.0)
        if num_items_in_batch is None:
            denominator: Any = padding.numel() - padding.long().sum()
        elif torch.is_tensor(num_items_in_batch):
            denominator = num_items_in_batch.to(nll.device)
        else:
            denominator = num_items_in_batch
        nll_loss = nll.sum() / denominator
        smoothed_loss = smoothed.sum() / (denominator * rows)
        return (1 - self.epsilon) * nll_loss + self.epsilon * smoothed_loss  # type: ignore[no-any-return]

    namespace = {
        "__call__": __call__,
        "__module__": cls.__module__,
        "__qualname__": cls.__qualname__,
        FULL_VOCAB_MARK: True,
    }
    sub = type(cls.__name__, (cls,), namespace)
    _SMOOTHERS[cls] = sub
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
    if not isinstance(state, _State) or not isinstance(output, torch.Tensor):
        return output
    if not state.on:
        slots = getattr(state.local, "slots", None)
        # label-free training calls in progress (nested when wrappers call the model's own
        # forward, and a wrapper may rebuild the output): each output carries the input
        if slots:
            slots[:] = [args[0]] * len(slots)
        return output
    state.local.columns = getattr(state.local, "columns", 0) + 1
    column = state.normaliser.column(args[0])
    return torch.cat([output, column.to(output.dtype).unsqueeze(-1)], dim=-1)


# -- prepare / commit / revert ------------------------------------------------------------------


def _refuse_post_head_transforms(model: nn.Module) -> None:
    forward_module = getattr(type(model).forward, "__module__", None) or ""
    if forward_module.split(".")[0] == "liger_kernel":
        raise VocabError(
            f"{type(model).__name__}.forward is Liger's fused linear cross-entropy, which "
            "computes the loss over the output layer's rows itself, so softmax='full'/'shifted' "
            "cannot add the dropped rows; apply Liger without fused_linear_cross_entropy, or "
            "use softmax='reduced'"
        )
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
        for name in ("logits_scaling", "lm_head_multiplier", "output_multiplier"):
            if values.get(name) not in (None, 1, 1.0):
                problems.append(name)
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
        self._handle: Any = None
        # The model, and under PEFT the base model too: TRL adds its fused LM head to the
        # base model's instance, which the class swap must reach (same state for both).
        self._targets: list[tuple[nn.Module, type, type]] = []
        if prepared._subclass is not None:
            self._targets.append((prepared.model, type(prepared.model), prepared._subclass))
            get_base = getattr(prepared.model, "get_base_model", None)
            base = get_base() if callable(get_base) else None
            if isinstance(base, nn.Module) and base is not prepared.model:
                self._targets.append((base, type(base), _subclass(type(base))))

    def _install(self) -> None:
        """(Re)install the class swap, the hook and the shift parameters (plain assignments)."""
        prepared = self._prepared
        if self.head is None or prepared._state is None or prepared._subclass is None:
            return
        self.head.__dict__[_STATE] = prepared._state
        normaliser = prepared._state.normaliser
        if normaliser.shift is not None:
            self.head._parameters[SHIFT] = normaliser.shift
        if normaliser.shift_bias is not None:
            self.head._parameters[SHIFT_BIAS] = normaliser.shift_bias
        self._handle = self.head.register_forward_hook(_head_hook)
        for target, _, sub in self._targets:
            target.__dict__[_STATE] = prepared._state
            patched = target.__dict__.pop("forward", None)
            if patched is not None:  # e.g. TRL's fused LM head, added before apply
                target.__dict__[_PATCHED] = patched
            _install_class(target, sub)

    def _uninstall(self) -> None:
        if self.head is None:
            return
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        for name in (SHIFT, SHIFT_BIAS):
            if any(self.head._parameters.get(name) is p for p in self.parameters):
                del self.head._parameters[name]
        self.head.__dict__.pop(_STATE, None)
        for target, base, sub in self._targets:
            target.__dict__.pop(_STATE, None)
            target.__dict__.pop(_WRAPPED, None)
            if type(target) is sub:
                target.__class__ = base
            patched = target.__dict__.pop(_PATCHED, None)
            if patched is not None:  # an instance forward set before or while reduced stays
                target.__dict__["forward"] = patched

    def _check_revert(self) -> None:
        """Raise ``VocabError`` if the class, hook or shift parameters were changed."""
        if self.head is None:
            return
        for target, _, sub in self._targets:
            if type(target) is not sub:
                raise VocabError(
                    f"the model's class was changed to {type(target).__name__} while reduced "
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
        normaliser: ``"exact"``, ``"bfloat16"`` (the normaliser's matmuls in bfloat16: an
            approximation for float32 models, see ``vocab_adapters.stages.normaliser``), or
            ``"sampled:M"`` (``M`` dropped rows, or ``1/K`` of them, drawn per training call,
            :class:`~vocab_adapters.stages.normaliser.SampledDropped`; exact without grad).

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
        sample_size(normaliser, count),
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
