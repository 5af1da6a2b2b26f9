"""Remap a model's config (and generation config) to a reduced vocabulary, and back.

Changed while reduced, restored exactly on revert (``config.to_dict()`` is equal afterwards):

* ``vocab_size`` of the config and of nested configs (``text_config``, ``encoder``,
  ``decoder``, ...), wherever it is at least ``plan.vocab_size`` (smaller ones, such as an image
  codebook's, are another vocabulary and are left alone). It becomes ``plan.new_size``.
* Every special-token id field (``pad/bos/eos/sep/cls/mask/unk/decoder_start_token_id``,
  ``forced_bos/eos_token_id``, and any other ``*_token_id`` / ``*_token_index`` such as a
  multimodal ``image_token_id``), a single id or a list, in the config tree and in the model's
  ``generation_config``: old id → new id. An id the plan drops raises ``VocabError`` at prepare.
  Ids outside the model's rows (e.g. GPT-2's default 50256 in a tiny config) mean nothing to the
  model and are left as they are.
* Generation lists: ``suppress_tokens`` / ``begin_suppress_tokens`` lose dropped ids (they can't
  be generated anyway), ``bad_words_ids`` loses sequences with a dropped id, ``forced_decoder_ids``
  is remapped (a dropped id raises).

Values are written straight into the objects' ``__dict__`` (plain assignments: no validation
hooks run half way), ids before ``vocab_size`` so that every intermediate state is consistent.

Example:
    >>> from types import SimpleNamespace
    >>> from vocabcore import VocabPlan
    >>> config = SimpleNamespace(vocab_size=6, pad_token_id=0, eos_token_id=[2, 5])
    >>> applied = apply(VocabPlan(6, (0, 2, 5)), config)
    >>> config.vocab_size, config.pad_token_id, config.eos_token_id
    (3, 0, [1, 2])
    >>> applied.revert()
    >>> config.vocab_size, config.eos_token_id
    (6, [2, 5])
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from typing import Any

import attrs

from vocab_adapters.stages.config_tree import config_owners, is_config, walk_owners
from vocab_adapters.stages.reversible import RECORD, Applied, RevertInputs
from vocabcore import PlanMismatchError, VocabError, VocabPlan

__all__ = ["AppliedConfig", "PreparedConfig", "apply", "config_owners", "prepare"]

_ID_FIELD = re.compile(r".*_token_(id|index)$")
_DROP_DROPPED = ("suppress_tokens", "begin_suppress_tokens")
_UNHANDLED = ("force_words_ids", "sequence_bias")


@attrs.frozen(eq=False)
class _Field:
    owner: Any
    path: str
    key: str
    old: Any
    new: Any


class _IdMap:
    """Old → new ids for config values; ids outside ``[0, rows)`` are left alone."""

    def __init__(self, plan: VocabPlan, rows: int) -> None:
        self.plan = plan
        self.rows = rows

    def in_range(self, value: int) -> bool:
        return 0 <= value < self.rows

    def new(self, value: int) -> int | None:
        if value >= self.plan.vocab_size:
            return None  # a padding row beyond the tokenizer: dropped while reduced
        return self.plan.old_to_new(value)

    def one(self, path: str, value: int) -> int:
        if not self.in_range(value):
            return value
        new = self.new(value)
        if new is None:
            raise VocabError(
                f"{path} is {value}, an id the plan drops; keep it when building the plan "
                f"(plan_from_texts(..., model=model) keeps every id the config names, or "
                f"keep=({value},)) or set {path} to a kept id"
            )
        return new

    def is_dropped(self, value: int) -> bool:
        return self.in_range(value) and self.new(value) is None


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _remap_value(path: str, key: str, value: Any, ids: _IdMap) -> Any:
    """The new value of one field (may equal the old one)."""
    if _ID_FIELD.match(key):
        if _is_id(value):
            return ids.one(path, value)
        if isinstance(value, (list, tuple)) and all(_is_id(v) for v in value):
            return type(value)(ids.one(f"{path}[{i}]", v) for i, v in enumerate(value))
        return value
    if key in _DROP_DROPPED and isinstance(value, (list, tuple)):
        kept = [ids.one(path, v) for v in value if not (_is_id(v) and ids.is_dropped(v))]
        return type(value)(kept)
    if key == "bad_words_ids" and isinstance(value, (list, tuple)):
        sequences = [s for s in value if not any(ids.is_dropped(v) for v in s)]
        return type(value)(type(s)(ids.one(path, v) for v in s) for s in sequences)
    if key == "forced_decoder_ids" and isinstance(value, (list, tuple)):
        return type(value)(type(p)((p[0], ids.one(path, p[1]))) for p in value)
    return value


@attrs.frozen(eq=False)
class PreparedConfig:
    """The config values to change, validated, not yet written.

    Attributes:
        plan: The plan being applied.
        config: The config object that is changed (its nested configs and the model's
            generation config with it).
        changes: ``{"config.vocab_size": (old, new), ...}`` for every field that changes.
    """

    plan: VocabPlan
    config: Any
    _ids: tuple[_Field, ...]
    _sizes: tuple[_Field, ...]
    _unset: tuple[_Field, ...] = ()

    @property
    def changes(self) -> dict[str, tuple[Any, Any]]:
        """Every field that changes, by dotted path: ``(old, new)``."""
        return {f.path: (f.old, f.new) for f in (*self._ids, *self._sizes)}

    def commit(self) -> AppliedConfig:
        """Write the new values (ids first, then sizes); return the undo handle."""
        RECORD.check_free(self.config, "config")
        _write((*self._ids, *self._sizes), new=True)
        return AppliedConfig(self.plan, self.config, self._ids, self._sizes, self._unset)


def _write(fields: tuple[_Field, ...], *, new: bool) -> None:
    for field in fields:
        vars(field.owner)[field.key] = field.new if new else field.old


class AppliedConfig(Applied):
    """Undo handle of a remapped config: ``revert()`` writes the original values back."""

    what = "config"

    def __init__(
        self,
        plan: VocabPlan,
        config: Any,
        ids: tuple[_Field, ...],
        sizes: tuple[_Field, ...],
        unset: tuple[_Field, ...] = (),
    ) -> None:
        super().__init__(config)
        self.plan = plan
        self._ids = ids
        self._sizes = sizes
        self._unset = unset  # id fields unset at apply: set while reduced → mapped back

    def _check_revert(self) -> None:
        for field in self._sizes:
            current = vars(field.owner).get(field.key)
            if current != field.new:
                raise VocabError(
                    f"{field.path} was changed while the vocabulary was reduced (it is "
                    f"{current!r}, apply set {field.new!r}); set it back to {field.new!r} "
                    "before reverting, or reload the model instead"
                )
        for field in self._changed_ids():
            current = vars(field.owner).get(field.key)
            if not (_is_id(current) or _is_id_list(current)):
                raise VocabError(
                    f"{field.path} was changed while the vocabulary was reduced (it is "
                    f"{current!r}, apply set {field.new!r}); set it to a reduced id (or back "
                    f"to {field.new!r}) before reverting, or reload the model instead"
                )
        _set_while_reduced(self.plan, (*self._unset, *self._changed_ids()))

    def _changed_ids(self) -> tuple[_Field, ...]:
        """Id fields that something set again while reduced (TRL writes eos as a list)."""
        return tuple(f for f in self._ids if vars(f.owner).get(f.key) != f.new)

    def _prepare_revert(
        self, inputs: RevertInputs
    ) -> tuple[Callable[[], None], Callable[[], None]]:
        """Sizes first, then ids, on the way back; the reverse on the way in.

        An id field set while reduced, whether unset at apply (TRL's ``SFTTrainer`` writes the
        reduced tokenizer's pad id into ``config.pad_token_id``) or set again (it writes
        ``generation_config.eos_token_id`` as a list), is mapped to the full numbering: it
        keeps what was set, in full ids.

        With ``keep_added`` every ``vocab_size`` grows to at least ``inputs.final_rows``, and
        a ``vocab_size_per_layer_input`` as large as the vocabulary grows with it.
        """
        back = (*self._sizes, *self._ids)
        mapped = _set_while_reduced(self.plan, (*self._unset, *self._changed_ids()))
        mapped = [(field, _final_size(field, inputs)) for field in self._sizes] + mapped
        now = [(field, vars(field.owner).get(field.key)) for field, _ in mapped]

        def install() -> None:
            _write(back, new=False)
            for field, value in mapped:
                vars(field.owner)[field.key] = value

        def uninstall() -> None:
            for field, value in now:
                vars(field.owner)[field.key] = value
            _write(back[::-1], new=True)

        return install, uninstall

    def _rollback(self) -> None:
        _write((*self._sizes, *self._ids), new=False)


def _final_size(field: _Field, inputs: RevertInputs) -> Any:
    """The value of a size field after revert (its original unless ``keep_added`` grows it)."""
    if not inputs.keep_added:
        return field.old
    if field.key == "vocab_size":
        return max(field.old, inputs.final_rows)
    return inputs.final_size(field.old)  # vocab_size_per_layer_input


# Id fields that a trainer or user may set while reduced although they were unset at apply
# (TRL's SFTTrainer writes the tokenizer's pad id into config.pad_token_id).
_COMMON_IDS = ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id")


def _unset_fields(owners: list[tuple[str, Any]]) -> tuple[_Field, ...]:
    fields: list[_Field] = []
    for path, owner in owners:
        names = {k for k in vars(owner) if _ID_FIELD.match(k)} | set(_COMMON_IDS)
        for key in sorted(names):
            if vars(owner).get(key) is None:
                fields.append(_Field(owner, f"{path}.{key}", key, None, None))
    return tuple(fields)


def _is_id_list(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(_is_id(v) for v in value)


def _set_while_reduced(plan: VocabPlan, unset: tuple[_Field, ...]) -> list[tuple[_Field, Any]]:
    """The full-vocabulary values of id fields unset at apply and set since (validated)."""

    def back(path: str, value: int) -> int:
        old = plan.new_to_old(value) if 0 <= value < plan.new_size else None
        if old is None:
            raise VocabError(
                f"{path} was set to {value} while the vocabulary was reduced, but the reduced "
                f"vocabulary has ids 0..{plan.new_size - 1} only, so it has no full id; set it "
                "to a reduced id (or back to None) before reverting"
            )
        return old

    mapped: list[tuple[_Field, Any]] = []
    for field in unset:
        value = vars(field.owner).get(field.key)
        if _is_id(value):
            mapped.append((field, back(field.path, value)))
        elif isinstance(value, (list, tuple)) and value and all(_is_id(v) for v in value):
            new = type(value)(back(f"{field.path}[{i}]", v) for i, v in enumerate(value))
            mapped.append((field, new))
    return mapped


def _embedding_rows(model: Any) -> int | None:
    get_input = getattr(model, "get_input_embeddings", None)
    embedding = get_input() if callable(get_input) else None
    weight = getattr(embedding, "weight", None)
    shape = getattr(weight, "shape", None)
    return int(shape[0]) if shape is not None and len(shape) == 2 else None


def prepare(plan: VocabPlan, model_or_config: Any) -> PreparedConfig:
    """Validate and compute the remapped config values; change nothing.

    Args:
        plan: The plan to apply.
        model_or_config: A model with ``.config`` (its ``generation_config`` is remapped too),
            or a config: a ``PretrainedConfig``, ``GenerationConfig`` or any plain object with
            attributes.

    Raises:
        PlanMismatchError: Every ``vocab_size`` of the config is smaller than
            ``plan.vocab_size``.
        VocabError: A special-token id the plan drops.
    """
    config = getattr(model_or_config, "config", None)
    if config is not None and not is_config(model_or_config):
        rows = _embedding_rows(model_or_config)
        generation = getattr(model_or_config, "generation_config", None)
    else:
        config, rows, generation = model_or_config, None, None
    try:
        vars(config)
    except TypeError:
        raise VocabError(
            f"'model_or_config' must be a model with .config or a config object with "
            f"attributes (got {type(model_or_config).__name__})"
        ) from None

    RECORD.check_free(config, "config")
    owners = list(walk_owners("config", config, set()))
    if generation is not None:
        owners.append(("generation_config", generation))

    sizes: list[_Field] = []
    found: list[str] = []
    for path, owner in owners:
        value = vars(owner).get("vocab_size")
        if not _is_id(value):
            continue
        found.append(f"{path}.vocab_size {value}")
        if value >= plan.vocab_size:
            sizes.append(_Field(owner, f"{path}.vocab_size", "vocab_size", value, plan.new_size))
    if found and not sizes:
        raise PlanMismatchError(
            f"no vocab_size of the config is at least the plan's vocab_size {plan.vocab_size} "
            f"(found {', '.join(found)}); build the plan with this model's tokenizer"
        )
    for path, owner in owners if sizes else ():
        # A per-layer token table (Gemma 3n) of the ids below this value: its kept ids.
        per_layer = vars(owner).get("vocab_size_per_layer_input")
        if _is_id(per_layer):
            new = sum(1 for i in plan.kept if i < per_layer)
            key = "vocab_size_per_layer_input"
            sizes.append(_Field(owner, f"{path}.{key}", key, per_layer, new))
    # Ids below the rows of the model (or of the config) are real rows; others mean nothing.
    rows = max(plan.vocab_size, *(f.old for f in sizes), rows if rows is not None else 0)

    ids = _IdMap(plan, rows)
    id_fields: list[_Field] = []
    for path, owner in owners:
        for key, value in list(vars(owner).items()):
            if key == "vocab_size" or value is None:
                continue
            if key in _UNHANDLED and value:
                warnings.warn(
                    f"{path}.{key} holds token ids that are not remapped; generation while "
                    "the vocabulary is reduced will not honour it",
                    UserWarning,
                    stacklevel=2,
                )
                continue
            new = _remap_value(f"{path}.{key}", key, value, ids)
            if new != value:
                id_fields.append(_Field(owner, f"{path}.{key}", key, value, new))
    return PreparedConfig(plan, config, tuple(id_fields), tuple(sizes), _unset_fields(owners))


def apply(plan: VocabPlan, model_or_config: Any) -> AppliedConfig:
    """Remap ``model_or_config`` in place: ``prepare(...).commit()``."""
    return prepare(plan, model_or_config).commit()
