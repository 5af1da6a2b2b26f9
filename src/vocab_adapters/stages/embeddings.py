"""Reduce a model's vocabulary-sized tensors (embeddings, LM heads, output biases) in place.

Every tensor of the model whose vocabulary dimension matches the input embedding's row count is
found once, grouped by identity (a tied input/output pair is one tensor, so it stays one tensor),
and sliced with ``index_select`` on its own device. The modules keep their class, hooks,
``requires_grad``, dtype and device; only the tensor behind each of their slots and their size
attributes (``num_embeddings``, ``padding_idx``, ``out_features``) change. The original
full-size ``Parameter`` objects are kept (on their device, or on the CPU with ``offload="cpu"``)
and put back on revert, with the trained rows written into them by ``index_copy_``, so
``model.get_input_embeddings().weight`` is the very same object before apply and after revert.

On revert this stage computes the final value of every tensor it owns from what it is given
(:class:`~vocab_adapters.stages.reversible.RevertInputs`): the kept rows as trained, the dropped
rows plus the trained shift of ``softmax="shifted"``, and with ``keep_added`` the added rows at ids
``vocab_size ..`` (in padding rows while there are some, grown beyond them), with every size
attribute (``num_embeddings``, ``out_features``, modules' ``vocab_size``) grown to match. Preparing
never writes into the held full tensors: the writes wait for install and are undone exactly (what
they overwrite is kept: the kept rows, small), or go into a fresh tensor when the held one has to
move (offloaded, or the model moved) or grow.

Per-layer tables (Gemma 3n) with ``keep_added``: ids at or beyond the table's size read row 0,
so an added token reads row 0 while reduced (its id is beyond the reduced table). After the
revert it reads row 0 too: a table as large as the vocabulary grows with it, and every added
id inside the table gets the trained row 0; a smaller table keeps its size (the added ids are
beyond it and read row 0).

Which tensors are handled:

* the input embedding (``get_input_embeddings()``) and every slot sharing its tensor;
* the output embedding (``get_output_embeddings()``) when its rows are the vocabulary, tied
  (one tensor with the input embedding) or not, and its bias;
* per-token output biases wherever they live: a 1-D parameter or buffer named ``*bias`` of the
  vocabulary's length (BERT ``cls.predictions.bias``, DeBERTa ``lm_predictions.lm_head.bias``)
  or of shape ``(1, vocab)`` (BART's ``final_logits_bias`` buffer);
* any other ``nn.Linear`` whose ``out_features`` is the vocabulary (an extra LM head).
* a per-layer token embedding that the config declares with ``vocab_size_per_layer_input``
  (Gemma 3n's ``embed_tokens_per_layer``): the kept ids below that size;
* ``vocab_size`` attributes of modules equal to the embedding's rows (``self.vocab_size`` of
  many ``*ForCausalLM`` classes, which their loss uses) are set to the reduced size.

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
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import attrs
import torch
from torch import nn

from vocab_adapters.stages.added_rows import RowWrites, check_pieces, mean_rows, resized
from vocab_adapters.stages.reversible import RECORD, Applied, ParamSwap, RevertInputs
from vocabcore import PlanMismatchError, VocabError, VocabPlan

__all__ = [
    "AppliedEmbeddings",
    "ParamSwap",
    "PreparedEmbeddings",
    "VocabSizedTensorWarning",
    "apply",
    "prepare",
    "tensor_slots",
    "vocab_dim",
]


class VocabSizedTensorWarning(UserWarning):
    """A tensor has a vocabulary-sized dimension but is not an embedding, head or bias."""


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
    per_layer: bool = False  # a per-layer table (Gemma 3n): the kept ids below its size

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


def tensor_slots(model: nn.Module) -> Iterator[tuple[_Slot, torch.Tensor]]:
    """Every parameter and buffer slot of ``model`` (shared modules once), with its tensor."""
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


def vocab_dim(slots: list[_Slot], tensor: torch.Tensor, rows: int, role: str | None) -> int | None:
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
                f"drops; keep it when building the plan (plan_from_texts(..., model=model) "
                f"keeps the config's ids, or keep=({padding_idx},))"
            )
        changes.append(_AttrChange(module, "padding_idx", padding_idx, new_padding))
    return changes


def _check_position_padding(model: nn.Module, embedding: Any, plan: VocabPlan) -> None:
    """Refuse to change a pad id from which a module numbers positions (RoBERTa, XLM-R).

    Such models build position ids from the pad id (``create_position_ids_from_input_ids``)
    and give their position embedding that ``padding_idx``. Decoder LLMs (Llama, Qwen2, Phi-3,
    OLMo) copy the config's pad id into a ``padding_idx`` attribute too but number positions
    without it, so only a non-vocabulary embedding with the pad as ``padding_idx`` counts.
    """
    pad = getattr(embedding, "padding_idx", None)
    if pad is None or not 0 <= pad < plan.vocab_size or plan.old_to_new(pad) in (None, pad):
        return
    rows = embedding.num_embeddings
    for path, module in model.named_modules():
        if (
            not isinstance(module, nn.Embedding)
            or module is embedding
            or module.num_embeddings == rows
            or module.padding_idx != pad
        ):
            continue
        keep = tuple(range(pad + 1)) if pad < 8 else f"range({pad + 1})"
        raise VocabError(
            f"{path} numbers positions from the pad id {pad} (RoBERTa-style), so the pad id "
            f"must keep its value: keep every id up to {pad} (keep={keep})"
        )


def _vocab_size_changes(model: nn.Module, rows: int, new_rows: int) -> list[_AttrChange]:
    """``vocab_size`` attributes of modules (``self.vocab_size`` of ``*ForCausalLM``) = rows."""
    changes: list[_AttrChange] = []
    for module in model.modules():
        value = vars(module).get("vocab_size")
        if isinstance(value, int) and not isinstance(value, bool) and value == rows:
            changes.append(_AttrChange(module, "vocab_size", value, new_rows))
    return changes


def _per_layer_size(model: nn.Module) -> int | None:
    """Rows of a per-layer token embedding the config declares (Gemma 3n), if any."""
    config = getattr(model, "config", None)
    get_text = getattr(config, "get_text_config", None)
    text = get_text() if callable(get_text) else config
    value = getattr(text, "vocab_size_per_layer_input", None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _per_layer_tensors(
    model: nn.Module, plan: VocabPlan, heads: _Heads
) -> tuple[list[_Found], list[_AttrChange]]:
    """A vocabulary-indexed per-layer embedding (Gemma 3n's ``embed_tokens_per_layer``).

    It has ``vocab_size_per_layer_input`` rows, at most the vocabulary: ids at or beyond that
    read row 0. The kept ids below it, in order, are a prefix of the new numbering, so the
    reduced table holds their rows and the kept ids beyond it still read row 0, which is the
    old row 0 as long as the plan keeps id 0. Validated here; sliced with the rest.
    """
    size = _per_layer_size(model)
    if size is None:
        return [], []
    found: list[_Found] = []
    changes: list[_AttrChange] = []
    kept = tuple(i for i in plan.kept if i < size)
    for path, module in model.named_modules():
        if (
            not isinstance(module, nn.Embedding)
            or module is heads.embedding
            or module.num_embeddings != size
            or "per_layer" not in path.rsplit(".", 1)[-1]
        ):
            continue
        if len(kept) < plan.new_size and plan.old_to_new(0) != 0:
            raise VocabError(
                f"{path} reads row 0 for ids from {size} on, so id 0 must stay id 0: keep it "
                "when building the plan (keep=(0,))"
            )
        slot = _Slot(module, path, "weight", True)
        _check_tensor(slot, module.weight)
        found.append(_Found(module.weight, (slot,), 0, kept))
        changes.extend(_padding_change(slot, plan, len(kept)))
        for owner in model.modules():
            if vars(owner).get("vocab_size_per_layer_input") == size:
                changes.append(_AttrChange(owner, "vocab_size_per_layer_input", size, len(kept)))
    return found, changes


@attrs.frozen(eq=False)
class PreparedEmbeddings:
    """The reduced tensors of a model, computed and validated, not yet installed.

    Attributes:
        plan: The plan being applied.
        swaps: One :class:`ParamSwap` per distinct parameter that is reduced (a tied
            input/output pair is one swap); hand these to :mod:`vocab_adapters.stages.optimizer`.
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
        RECORD.check_free(self.model, "model")
        for group in self._groups:
            for slot in group.slots:
                slot.put(group.reduced)
            if group.offloaded is not None:
                group.full.data = group.offloaded
        for change in self._changes:
            setattr(change.module, change.name, change.new)
        return AppliedEmbeddings(
            self.plan, self.model, self.swaps, self.tied, self._groups, self._changes, self.rows
        )


class AppliedEmbeddings(Applied):
    """Undo handle of reduced embeddings: ``revert()`` writes trained rows back."""

    what = "model"

    def __init__(
        self,
        plan: VocabPlan,
        model: nn.Module,
        swaps: tuple[ParamSwap, ...],
        tied: bool,
        groups: tuple[_Group, ...],
        changes: tuple[_AttrChange, ...],
        rows: int | None = None,
    ) -> None:
        super().__init__(model)
        self.plan = plan
        self.model = model
        self.swaps = swaps
        self.tied = tied
        self.rows = rows if rows is not None else plan.vocab_size
        """Vocabulary rows of the model before apply (may exceed ``plan.vocab_size``)."""
        self._groups = groups
        self._changes = changes
        self._devices = {id(g.full): g.full.device for g in groups if g.offloaded is not None}

    def held_tensors(self) -> tuple[torch.Tensor, ...]:
        """The full-size tensors held aside while reduced (on the CPU with ``offload="cpu"``)."""
        return tuple(group.full for group in self._groups)

    def _check_revert(self) -> None:
        """Raise ``VocabError`` if a reduced tensor was replaced or resized since apply."""
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

    def _prepare_revert(
        self, inputs: RevertInputs
    ) -> tuple[Callable[[], None], Callable[[], None]]:
        # Every allocation happens here (a full tensor may have to move to where the model is
        # now, or grow). Nothing the user or a rollback can see is written: writes into a held
        # tensor wait for install (RowWrites keeps what they overwrite for undo).
        final: list[tuple[_Group, torch.Tensor, torch.Tensor, RowWrites, torch.Tensor]] = []
        for group in self._groups:
            current = group.slots[0].get()
            assert current is not None
            held = group.full.data
            writes = self._final_rows(group, held, current, inputs)
            final.append((group, held, writes.tensor, writes, current))
        sizes = [
            (change, change.old if change.name == "padding_idx" else inputs.final_size(change.old))
            for change in self._changes
        ]

        def install() -> None:
            for group, _, data, writes, _ in final:
                if not writes.private:
                    writes.apply()
                if data is not group.full.data:
                    group.full.data = data
                for slot in group.slots:
                    slot.put(group.full)
            for change, value in sizes:
                setattr(change.module, change.name, value)

        def uninstall() -> None:
            for group, held, _, writes, current in reversed(final):
                if not writes.private:
                    writes.undo()
                if held is not group.full.data:
                    group.full.data = held
                for slot in group.slots:
                    slot.put(group.reduced if group.is_param else current)
            for change in self._changes:
                setattr(change.module, change.name, change.new)

        return install, uninstall

    def _final_rows(
        self, group: _Group, held: torch.Tensor, current: torch.Tensor, inputs: RevertInputs
    ) -> RowWrites:
        """The writes that make ``group``'s final tensor (``.tensor`` of the result)."""
        dim = group.dim
        size = held.shape[dim]
        final_size = inputs.final_size(size)
        if held.device != current.device or held.dtype != current.dtype or final_size != size:
            writes = RowWrites(
                resized(held, dim, final_size, device=current.device, dtype=current.dtype),
                dim,
                private=True,
            )
        else:
            writes = RowWrites(held, dim, private=False)
        data = writes.tensor
        reduced = current.detach()
        with torch.no_grad():
            index = group.index.to(data.device)
            writes.add(index, reduced.narrow(dim, 0, index.numel()))  # added rows follow
            for shift in inputs.shifts_for(group.full):  # dropped rows move by the shift
                rows = shift.rows.to(data.device)
                before = data.index_select(dim, rows)
                writes.add(rows, before + shift.delta.to(before), old=before)
            positions = [p for p in inputs.positions if p < final_size]
            if positions and group.per_layer:  # added ids read row 0, as while reduced
                zero = torch.zeros(len(positions), dtype=torch.long, device=reduced.device)
                at = torch.tensor(positions, dtype=torch.long, device=data.device)
                writes.add(at, reduced.index_select(dim, zero))
            elif positions:
                if group.added != inputs.added:
                    raise VocabError(
                        f"keep_added expects {inputs.added} added rows but the model holds "
                        f"{group.added}; revert with the plan that was applied"
                    )
                at = torch.tensor(positions, dtype=torch.long, device=data.device)
                writes.add(at, reduced.narrow(dim, index.numel(), group.added))
        return writes

    def _rollback(self) -> None:
        restored: list[tuple[_Group, torch.Tensor]] = []
        for group in self._groups:
            device = self._devices.get(id(group.full))
            data = group.full.data
            restored.append((group, data if device is None else data.to(device)))
        for group, data in restored:
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
            (:func:`vocab_adapters.stages.tokenizer_adapter.token_pieces`); its rows start as their
            mean.

    Raises:
        PlanMismatchError: The embedding has fewer rows than ``plan.vocab_size``.
        VocabError: The plan drops a ``padding_idx``, keeps nothing, or a tensor can't be
            sliced (meta device, quantized, parametrized).
    """
    if offload not in (None, "cpu"):
        raise VocabError(f"'offload' must be None or 'cpu' (got {offload!r})")
    RECORD.check_free(model, "model")
    if plan.new_size == 0:
        raise VocabError("the plan keeps no ids; keep at least the special tokens")
    pieces = check_pieces(plan, added_pieces)
    heads = _find_heads(plan, model)
    per_layer, changes = _per_layer_tensors(model, plan, heads)
    found, skipped = _vocabulary_tensors(model, heads, {id(f.tensor) for f in per_layer})
    # every check runs before any slicing
    changes += _validate(plan, model, heads, found)
    changes += _vocab_size_changes(model, heads.rows, plan.new_size)
    if skipped:
        warnings.warn(
            f"these tensors have a dimension of the vocabulary's size {heads.rows} but are not "
            f"an embedding, LM head or output bias, so they are left full-size: "
            f"{', '.join(skipped)}",
            VocabSizedTensorWarning,
            stacklevel=2,
        )
    groups = _slice(plan, [*per_layer, *found], offload, pieces)
    swaps = tuple(
        ParamSwap(g.full, g.reduced, g.index, g.dim)  # type: ignore[arg-type]
        for g in groups
        if g.is_param
    )
    return PreparedEmbeddings(
        plan,
        model,
        swaps,
        _is_tied(model, heads, found),
        tuple(slot.qualname for g in groups for slot in g.slots),
        tuple(skipped),
        heads.rows,
        groups,
        tuple(changes),
    )


@attrs.frozen(eq=False)
class _Heads:
    """The model's input embedding and, when its rows are the vocabulary, its output layer."""

    embedding: Any
    weight: torch.Tensor
    rows: int
    output_weight: torch.Tensor | None
    output_bias: torch.Tensor | None


@attrs.frozen(eq=False)
class _Found:
    """A vocabulary-sized tensor to reduce: every slot holding it and the dimension to slice."""

    tensor: torch.Tensor
    slots: tuple[_Slot, ...]
    dim: int
    kept: tuple[int, ...] | None = None  # the old ids it keeps, in order (None: plan.kept)


def _find_heads(plan: VocabPlan, model: nn.Module) -> _Heads:
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
    get_output = getattr(model, "get_output_embeddings", None)
    output = get_output() if callable(get_output) else None
    output_weight = getattr(output, "weight", None)
    if not (isinstance(output_weight, torch.Tensor) and output_weight.shape[0] == rows):
        return _Heads(embedding, weight, rows, None, None)  # no head over the vocabulary
    bias: torch.Tensor | None = getattr(output, "bias", None)
    if not (isinstance(bias, torch.Tensor) and bias.shape == (rows,)):
        bias = None
    return _Heads(embedding, weight, rows, output_weight, bias)


def _vocabulary_tensors(
    model: nn.Module, heads: _Heads, handled: set[int]
) -> tuple[list[_Found], list[str]]:
    """Every distinct tensor to reduce (grouped by identity), and the ones left alone."""
    by_id: dict[int, tuple[torch.Tensor, list[_Slot]]] = {}
    for slot, tensor in tensor_slots(model):
        by_id.setdefault(id(tensor), (tensor, []))[1].append(slot)
    roles = {id(heads.weight): "input embeddings"}
    for head, role in ((heads.output_weight, "output embeddings"), (heads.output_bias, "bias")):
        if head is not None:
            roles.setdefault(id(head), role)
    found: list[_Found] = []
    skipped: list[str] = []
    for key, (tensor, slots) in by_id.items():
        if heads.rows not in tensor.shape or key in handled:
            continue
        dim = vocab_dim(slots, tensor, heads.rows, roles.get(key))
        if dim is None:
            skipped.extend(slot.qualname for slot in slots)
        else:
            found.append(_Found(tensor, tuple(slots), dim))
    return found, skipped


def _validate(
    plan: VocabPlan, model: nn.Module, heads: _Heads, found: list[_Found]
) -> list[_AttrChange]:
    """Check every tensor and module; return the size attributes that change."""
    changes: list[_AttrChange] = []
    for item in found:
        for slot in item.slots:
            _check_tensor(slot, item.tensor)
            module = slot.module
            if slot.name == "weight" and getattr(module, "num_embeddings", None) == heads.rows:
                changes.extend(_padding_change(slot, plan, plan.new_size))
            elif slot.name == "weight" and getattr(module, "out_features", None) == heads.rows:
                changes.append(_AttrChange(module, "out_features", heads.rows, plan.new_size))
    _check_position_padding(model, heads.embedding, plan)
    return changes


def _slice(
    plan: VocabPlan, found: list[_Found], offload: str | None, pieces: Any = ()
) -> tuple[_Group, ...]:
    """The reduced tensors, with ``index_select`` on each tensor's own device."""
    indices: dict[tuple[torch.device, tuple[int, ...] | None], torch.Tensor] = {}
    groups: list[_Group] = []
    for item in found:
        tensor = item.tensor
        device = tensor.device
        if (device, item.kept) not in indices:
            ids = plan.kept if item.kept is None else item.kept
            indices[device, item.kept] = torch.tensor(ids, dtype=torch.long, device=device)
        index = indices[device, item.kept]
        with torch.no_grad():
            reduced: torch.Tensor = tensor.detach().index_select(item.dim, index)
            if pieces and item.kept is None:  # the plan's added tokens: mean of their pieces
                reduced = torch.cat([reduced, mean_rows(tensor, item.dim, pieces)], item.dim)
        if item.slots[0].is_param:
            parameter = nn.Parameter(reduced, requires_grad=tensor.requires_grad)
            parameter.__dict__.update(tensor.__dict__)  # e.g. transformers' _is_hf_initialized
            reduced = parameter
        offloaded = None
        if offload == "cpu" and device.type != "cpu":
            offloaded = tensor.detach().to("cpu")
        added = len(pieces) if item.kept is None else 0
        per_layer = item.kept is not None
        groups.append(
            _Group(tensor, item.slots, item.dim, index, reduced, offloaded, added, per_layer)
        )
    return tuple(groups)


def _is_tied(model: nn.Module, heads: _Heads, found: list[_Found]) -> bool:
    """Tied as the model declares (``_tied_weights_keys``) and as tensor identity confirms."""
    if heads.output_weight is None or heads.output_weight is not heads.weight:
        return False
    patterns = _declared_tied_patterns(model)
    names = [s.qualname for f in found if f.tensor is heads.weight for s in f.slots]
    return any(_is_declared(name, patterns) for name in names)


def apply(plan: VocabPlan, model: nn.Module, *, offload: str | None = None) -> AppliedEmbeddings:
    """Reduce ``model``'s vocabulary tensors in place: ``prepare(...).commit()``."""
    return prepare(plan, model, offload=offload).commit()
