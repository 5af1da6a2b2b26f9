"""Reduce a model's vocabulary-sized tensors (embeddings, LM heads, output biases) in place.

Every tensor of the model whose vocabulary dimension matches the input embedding's row count is
found once, grouped by identity (a tied input/output pair is one tensor, so it stays one tensor),
and sliced with ``index_select`` on its own device. The modules keep their class, hooks,
``requires_grad``, dtype and device; only the tensor behind each of their slots and their size
attributes (``num_embeddings``, ``padding_idx``, ``out_features``) change. The original
full-size ``Parameter`` objects are kept (on their device, or on the CPU with ``offload="cpu"``)
and put back on revert, with the trained rows written into them by ``index_copy_``, so
``model.get_input_embeddings().weight`` is the very same object before apply and after revert.

Which tensors are handled:

* the input embedding (``get_input_embeddings()``) and every slot sharing its tensor;
* the output embedding (``get_output_embeddings()``) when its rows are the vocabulary, tied
  (one tensor with the input embedding) or not, and its bias;
* per-token output biases wherever they live: a 1-D parameter or buffer named ``*bias`` of the
  vocabulary's length (BERT ``cls.predictions.bias``, DeBERTa ``lm_predictions.lm_head.bias``)
  or of shape ``(1, vocab)`` (BART's ``final_logits_bias`` buffer);
* any other ``nn.Linear`` whose ``out_features`` is the vocabulary (an extra LM head).

Any other tensor with a vocabulary-sized dimension is left alone and named in a
:class:`VocabSizedTensorWarning`.

Example:
    >>> import torch
    >>> from vocabcore import VocabPlan
    >>> emb = torch.nn.Embedding(6, 2)
    >>> class Tiny(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.emb = emb
    ...     def get_input_embeddings(self):
    ...         return self.emb
    ...     def get_output_embeddings(self):
    ...         return None
    >>> model = Tiny()
    >>> original = model.emb.weight
    >>> applied = apply(VocabPlan(6, (0, 2, 5)), model)
    >>> model.emb.num_embeddings, tuple(model.emb.weight.shape)
    (3, (3, 2))
    >>> applied.revert()
    >>> model.emb.weight is original, model.emb.num_embeddings
    (True, 6)
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import attrs
import torch
from torch import nn

from vocab_adapters.added_rows import check_pieces, mean_rows
from vocab_adapters.reversible import Done
from vocabcore import PlanMismatchError, VocabError, VocabPlan

__all__ = [
    "AppliedEmbeddings",
    "ParamSwap",
    "PreparedEmbeddings",
    "VocabSizedTensorWarning",
    "apply",
    "prepare",
]


class VocabSizedTensorWarning(UserWarning):
    """A tensor has a vocabulary-sized dimension but is not an embedding, head or bias."""


@attrs.frozen(eq=False)
class ParamSwap:
    """One full-size parameter and the reduced parameter that stands in for it.

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


@attrs.frozen(eq=False)
class _Slot:
    """One place a tensor lives in the model: ``module._parameters[name]`` or ``_buffers``."""

    module: nn.Module
    path: str  # of the module in the model
    name: str
    is_param: bool

    @property
    def qualname(self) -> str:
        return f"{self.path}.{self.name}" if self.path else self.name

    def get(self) -> torch.Tensor | None:
        table = self.module._parameters if self.is_param else self.module._buffers
        return table.get(self.name)

    def put(self, tensor: torch.Tensor) -> None:
        if self.is_param:
            self.module._parameters[self.name] = tensor  # type: ignore[assignment]
        else:
            self.module._buffers[self.name] = tensor


@attrs.frozen(eq=False)
class _Group:
    """One distinct vocabulary-sized tensor, every slot holding it, and its reduced version."""

    full: torch.Tensor
    slots: tuple[_Slot, ...]
    dim: int
    index: torch.Tensor
    reduced: torch.Tensor
    offloaded: torch.Tensor | None  # CPU copy of ``full`` to hold while reduced, if offloading
    added: int = 0  # rows of the plan's added tokens, after the kept rows

    @property
    def shape(self) -> tuple[int, ...]:
        shape = list(self.full.shape)
        shape[self.dim] = len(self.index) + self.added
        return tuple(shape)

    @property
    def is_param(self) -> bool:
        return self.slots[0].is_param


@attrs.frozen(eq=False)
class _AttrChange:
    """A size attribute of a module (``num_embeddings``, ``padding_idx``, ``out_features``)."""

    module: nn.Module
    name: str
    old: Any
    new: Any


def _slots(model: nn.Module) -> Iterator[tuple[_Slot, torch.Tensor]]:
    seen: set[tuple[int, str]] = set()
    for prefix, module in model.named_modules(remove_duplicate=False):
        for is_param, table in (
            (True, module._parameters),
            (False, module._buffers),
        ):
            for name, tensor in table.items():
                if tensor is None or (id(module), name) in seen:
                    continue
                seen.add((id(module), name))
                yield _Slot(module, prefix, name, is_param), tensor


def _declared_tied_patterns(model: nn.Module) -> list[str]:
    """Patterns of parameter names the model declares tied (``_tied_weights_keys``).

    transformers 4 declares a list of names (searched as regular expressions), transformers 5 a
    ``{target: source}`` dict of names or patterns anchored at the submodel; both are read.
    """
    patterns: list[str] = []
    for prefix, module in model.named_modules(remove_duplicate=False):
        declared = getattr(module, "_tied_weights_keys", None)
        if not declared:
            continue
        if isinstance(declared, dict):
            names = [*declared.keys(), *declared.values()]
            anchor = "^" + (re.escape(prefix + ".") if prefix else "")
        else:
            names = list(declared)
            anchor = "^" + (re.escape(prefix + ".") + "(?:.*\\.)?" if prefix else "(?:.*\\.)?")
        patterns.extend(anchor + str(name) for name in names)
    return patterns


def _is_declared(name: str, patterns: list[str]) -> bool:
    for pattern in patterns:
        try:
            if re.search(pattern + "$", name):
                return True
        except re.error:
            if name.endswith(pattern.lstrip("^")):
                return True
    return False


def _vocab_dim(slots: list[_Slot], tensor: torch.Tensor, rows: int, role: str | None) -> int | None:
    """The dimension to slice, or ``None`` when the tensor is not a known vocabulary tensor."""
    if role is not None:
        return 0
    for slot in slots:
        module = slot.module
        if (
            isinstance(module, nn.Linear)
            and module.out_features == rows
            and slot.name in ("weight", "bias")
            and tensor.shape[0] == rows
        ):
            return 0
        if slot.name.endswith("bias") and (
            tensor.shape == (rows,) or (tensor.dim() == 2 and tensor.shape == (1, rows))
        ):
            return tensor.dim() - 1
    return None


def _check_tensor(slot: _Slot, tensor: torch.Tensor) -> None:
    if tensor.device.type == "meta":
        raise VocabError(
            f"{slot.qualname} is on the meta device (weights not loaded); "
            "load the model's weights before applying the plan"
        )
    if slot.is_param and type(tensor) is not nn.Parameter:
        raise VocabError(
            f"{slot.qualname} is a {type(tensor).__name__}, not a plain torch.nn.Parameter "
            "(quantized or wrapped); apply the plan before quantizing or wrapping the model"
        )
    if torch.nn.utils.parametrize.is_parametrized(slot.module, slot.name):
        raise VocabError(
            f"{slot.qualname} is parametrized (torch.nn.utils.parametrize); "
            "apply the plan before registering the parametrization"
        )


def _padding_change(slot: _Slot, plan: VocabPlan, new_rows: int) -> list[_AttrChange]:
    module = slot.module
    changes = [_AttrChange(module, "num_embeddings", module.num_embeddings, new_rows)]
    padding_idx = getattr(module, "padding_idx", None)
    if padding_idx is not None:
        new_padding = plan.old_to_new(padding_idx) if 0 <= padding_idx < plan.vocab_size else None
        if new_padding is None:
            raise VocabError(
                f"{slot.qualname.rsplit('.', 1)[0]}.padding_idx {padding_idx} is an id the plan "
                f"drops; keep it when building the plan (keep=({padding_idx},))"
            )
        changes.append(_AttrChange(module, "padding_idx", padding_idx, new_padding))
    return changes


def _check_position_padding(model: nn.Module, embedding: Any, plan: VocabPlan) -> None:
    """Refuse to change a pad id that a module also uses to number positions (RoBERTa)."""
    pad = getattr(embedding, "padding_idx", None)
    if pad is None or not 0 <= pad < plan.vocab_size or plan.old_to_new(pad) in (None, pad):
        return
    for path, module in model.named_modules():
        if isinstance(module, nn.Embedding) or getattr(module, "padding_idx", None) != pad:
            continue
        raise VocabError(
            f"{path}.padding_idx is the pad id {pad}, from which this model numbers positions "
            f"(RoBERTa-style), so the pad id must keep its value: keep every id up to {pad} "
            f"(keep={tuple(range(pad + 1))})"
        )


@attrs.frozen(eq=False)
class PreparedEmbeddings:
    """The reduced tensors of a model, computed and validated, not yet installed.

    Attributes:
        plan: The plan being applied.
        swaps: One :class:`ParamSwap` per distinct parameter that is reduced (a tied
            input/output pair is one swap); hand these to :mod:`vocab_adapters.optimizer`.
        tied: Whether the output embedding is tied to the input embedding, as the model
            declares (``_tied_weights_keys``) and as tensor identity confirms.
        sliced: Qualified names of every parameter and buffer that is reduced.
        skipped: Qualified names of vocabulary-sized tensors left alone (warned about).
        rows: Rows of the input embedding (may exceed ``plan.vocab_size``).
    """

    plan: VocabPlan
    model: nn.Module
    swaps: tuple[ParamSwap, ...]
    tied: bool
    sliced: tuple[str, ...]
    skipped: tuple[str, ...]
    rows: int
    _groups: tuple[_Group, ...]
    _changes: tuple[_AttrChange, ...]

    def commit(self) -> AppliedEmbeddings:
        """Install the reduced tensors with plain assignments; return the undo handle."""
        for group in self._groups:
            for slot in group.slots:
                slot.put(group.reduced)
            if group.offloaded is not None:
                group.full.data = group.offloaded
        for change in self._changes:
            setattr(change.module, change.name, change.new)
        return AppliedEmbeddings(
            self.plan, self.model, self.swaps, self.tied, self._groups, self._changes
        )


class AppliedEmbeddings:
    """Undo handle of reduced embeddings: ``revert()`` writes trained rows back."""

    def __init__(
        self,
        plan: VocabPlan,
        model: nn.Module,
        swaps: tuple[ParamSwap, ...],
        tied: bool,
        groups: tuple[_Group, ...],
        changes: tuple[_AttrChange, ...],
    ) -> None:
        self.plan = plan
        self.model = model
        self.swaps = swaps
        self.tied = tied
        self._groups = groups
        self._changes = changes
        self._devices = {id(g.full): g.full.device for g in groups if g.offloaded is not None}
        self._done = Done("model")

    def check_revert(self) -> None:
        """Raise ``VocabError`` if a reduced tensor was replaced or resized since apply."""
        self._done.check()
        for group in self._groups:
            for slot in group.slots:
                try:
                    attached = self.model.get_submodule(slot.path) is slot.module
                except AttributeError:
                    attached = False
                current = slot.get() if attached else None
                if not attached or (group.is_param and current is not group.reduced):
                    ok = False
                else:  # the shape as apply left it (resize_token_embeddings swaps .data)
                    ok = current is not None and tuple(current.shape) == group.shape
                if not ok:
                    raise VocabError(
                        f"{slot.qualname} was replaced or resized while the vocabulary was "
                        "reduced (resize_token_embeddings, set_input_embeddings, ...); revert "
                        "needs the reduced tensor in place: undo that change, or reload the model "
                        "instead of reverting"
                    )

    def revert(self) -> None:
        """Write the trained rows into the full tensors and put those back."""
        self.check_revert()
        # Allocate first (a full tensor may need to move to where the model is now), then copy
        # rows in, then assign: nothing is reassigned unless every allocation succeeded.
        targets: list[tuple[_Group, torch.Tensor, torch.Tensor]] = []
        for group in self._groups:
            current = group.slots[0].get()
            assert current is not None
            full = group.full.data
            if full.device != current.device or full.dtype != current.dtype:
                full = full.to(device=current.device, dtype=current.dtype)
            targets.append((group, full, current))
        with torch.no_grad():
            for group, full, current in targets:
                index = group.index.to(current.device)
                kept = current.detach().narrow(group.dim, 0, index.numel())  # added rows follow
                full.index_copy_(group.dim, index, kept)
        self._install_full([(group, full) for group, full, _ in targets])
        self._done.mark("reverted")

    def rollback(self) -> None:
        """Put the original tensors back untouched, as if apply had never happened."""
        self._done.check()
        restored: list[tuple[_Group, torch.Tensor]] = []
        for group in self._groups:
            device = self._devices.get(id(group.full))
            data = group.full.data
            restored.append((group, data if device is None else data.to(device)))
        self._install_full(restored)
        self._done.mark("rolled back")

    def _install_full(self, targets: list[tuple[_Group, torch.Tensor]]) -> None:
        for group, data in targets:
            if data is not group.full.data:
                group.full.data = data
            for slot in group.slots:
                slot.put(group.full)
        for change in self._changes:
            setattr(change.module, change.name, change.old)


def prepare(
    plan: VocabPlan,
    model: nn.Module,
    *,
    offload: str | None = None,
    added_pieces: Sequence[Sequence[int]] | None = None,
) -> PreparedEmbeddings:
    """Validate ``model`` against ``plan`` and compute its reduced tensors; change nothing.

    Args:
        plan: The plan to apply; ``plan.vocab_size`` must not exceed the embedding's rows.
        model: A model with ``get_input_embeddings()`` (and optionally
            ``get_output_embeddings()``), e.g. any Hugging Face ``PreTrainedModel``.
        offload: ``"cpu"`` to hold the full-size tensors on the CPU while reduced (they go
            back to the model's device on revert); ``None`` keeps them where they are.
        added_pieces: For a plan that adds tokens, the old ids of each added token's pieces
            (:func:`vocab_adapters.added_tokens.token_pieces`); its rows start as their mean.

    Raises:
        PlanMismatchError: The embedding has fewer rows than ``plan.vocab_size``.
        VocabError: The plan drops a ``padding_idx``, keeps nothing, or a tensor can't be
            sliced (meta device, quantized, parametrized).
    """
    if offload not in (None, "cpu"):
        raise VocabError(f"'offload' must be None or 'cpu' (got {offload!r})")
    get_input = getattr(model, "get_input_embeddings", None)
    embedding = get_input() if callable(get_input) else None
    weight = getattr(embedding, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise VocabError(
            "the model must have input embeddings with a 2-D weight, found through "
            f"get_input_embeddings() (got {type(embedding).__name__}); pass a transformers "
            "model or define get_input_embeddings()"
        )
    rows = int(weight.shape[0])
    if rows < plan.vocab_size:
        raise PlanMismatchError(
            f"the model's input embeddings have {rows} rows, fewer than the plan's vocab_size "
            f"{plan.vocab_size}; build the plan with this model's tokenizer"
        )
    if plan.new_size == 0:
        raise VocabError("the plan keeps no ids; keep at least the special tokens")
    pieces = check_pieces(plan, added_pieces)
    get_output = getattr(model, "get_output_embeddings", None)
    output = get_output() if callable(get_output) else None
    output_weight = getattr(output, "weight", None)
    if not (isinstance(output_weight, torch.Tensor) and output_weight.shape[0] == rows):
        output = output_weight = None  # no head over the vocabulary (e.g. DeBERTa's new head)
    output_bias = getattr(output, "bias", None) if output is not None else None

    # Group every slot of the model by tensor identity.
    by_id: dict[int, tuple[torch.Tensor, list[_Slot]]] = {}
    for slot, tensor in _slots(model):
        by_id.setdefault(id(tensor), (tensor, []))[1].append(slot)

    roles = {id(weight): "input embeddings"}
    if output_weight is not None:
        roles.setdefault(id(output_weight), "output embeddings")
    if isinstance(output_bias, torch.Tensor) and output_bias.shape == (rows,):
        roles.setdefault(id(output_bias), "output bias")

    kept = list(plan.kept)
    indices: dict[torch.device, torch.Tensor] = {}
    groups: list[_Group] = []
    changes: list[_AttrChange] = []
    skipped: list[str] = []
    for key, (tensor, slots) in by_id.items():
        if rows not in tensor.shape:
            continue
        dim = _vocab_dim(slots, tensor, rows, roles.get(key))
        if dim is None:
            skipped.extend(slot.qualname for slot in slots)
            continue
        for slot in slots:
            _check_tensor(slot, tensor)
            module = slot.module
            if slot.name == "weight" and getattr(module, "num_embeddings", None) == rows:
                changes.extend(_padding_change(slot, plan, plan.new_size))
            elif slot.name == "weight" and getattr(module, "out_features", None) == rows:
                changes.append(_AttrChange(module, "out_features", rows, plan.new_size))
        device = tensor.device
        if device not in indices:
            indices[device] = torch.tensor(kept, dtype=torch.long, device=device)
        index = indices[device]
        with torch.no_grad():
            reduced: torch.Tensor = tensor.detach().index_select(dim, index)
            if pieces:  # the plan's added tokens: the mean of their pieces' rows
                reduced = torch.cat([reduced, mean_rows(tensor, dim, pieces)], dim)
        if slots[0].is_param:
            parameter = nn.Parameter(reduced, requires_grad=tensor.requires_grad)
            parameter.__dict__.update(tensor.__dict__)  # e.g. transformers' _is_hf_initialized
            reduced = parameter
        offloaded = None
        if offload == "cpu" and device.type != "cpu":
            offloaded = tensor.detach().to("cpu")
        groups.append(_Group(tensor, tuple(slots), dim, index, reduced, offloaded, len(pieces)))

    _check_position_padding(model, embedding, plan)
    if skipped:
        warnings.warn(
            f"these tensors have a dimension of the vocabulary's size {rows} but are not an "
            f"embedding, LM head or output bias, so they are left full-size: {', '.join(skipped)}",
            VocabSizedTensorWarning,
            stacklevel=2,
        )

    patterns = _declared_tied_patterns(model)
    output_names = [s.qualname for s in by_id[id(output_weight)][1]] if output is not None else []
    tied = output_weight is weight and any(_is_declared(n, patterns) for n in output_names)
    swaps = tuple(
        ParamSwap(g.full, g.reduced, g.index, g.dim)  # type: ignore[arg-type]
        for g in groups
        if g.is_param
    )
    return PreparedEmbeddings(
        plan,
        model,
        swaps,
        tied,
        tuple(slot.qualname for g in groups for slot in g.slots),
        tuple(skipped),
        rows,
        tuple(groups),
        tuple(changes),
    )


def apply(plan: VocabPlan, model: nn.Module, *, offload: str | None = None) -> AppliedEmbeddings:
    """Reduce ``model``'s vocabulary tensors in place: ``prepare(...).commit()``."""
    return prepare(plan, model, offload=offload).commit()
