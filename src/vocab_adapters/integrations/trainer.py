"""``VocabReductionCallback``: a reduced vocabulary inside a Hugging Face ``Trainer`` run.

No Trainer subclass is needed::

    callback = VocabReductionCallback(plan, tokenizer)
    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=dev,
                      data_collator=callback.wrap_collator(collator), callbacks=[callback])
    callback.train(trainer)  # reduced while training; checkpoints and the end state are full

``callback.train(trainer)`` is ``trainer.train()`` plus a guarantee: the full vocabulary is back
when it returns *or raises* (the Trainer calls ``on_train_end`` only when training succeeds).
The plan is applied when training begins (the Trainer has built its optimizer by then; its
parameters are swapped for the reduced ones), the full vocabulary is restored before every
checkpoint is written and re-applied right after, and restored for good when training ends.
Datasets tokenized with the full tokenizer work unchanged: the wrapped collator maps ids to the
reduced vocabulary while the plan is in force, and leaves them alone otherwise. A collator that
stored a token id when it was built (TRL's ``DataCollatorForLanguageModeling`` keeps
``pad_token_id``) is given the reduced id for the duration of each call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from transformers import TrainerCallback

from vocab_adapters.session import AppliedPlan, apply_plan, revert_plan
from vocabcore import VocabError, VocabPlan

__all__ = ["VocabReductionCallback"]

ID_KEYS = ("input_ids", "decoder_input_ids")


def _unwrap_optimizer(optimizer: Any) -> Any:
    # accelerate's AcceleratedOptimizer keeps the torch optimizer in `.optimizer`.
    inner = getattr(optimizer, "optimizer", None)
    return inner if inner is not None and hasattr(inner, "param_groups") else optimizer


class VocabReductionCallback(TrainerCallback):
    """Keep a ``Trainer``'s model reduced to ``plan`` while it trains.

    Args:
        plan: The plan (from :func:`vocab_adapters.plan_from_texts` or ``VocabPlan.load``).
        tokenizer: The tokenizer to reduce alongside the model (optional).
        full_checkpoints: Restore the full vocabulary around every checkpoint save, so saved
            checkpoints are full-vocabulary models (default). With ``False`` checkpoints are
            saved reduced: keep the plan beside them to restore later.
        offload: ``"cpu"`` to hold the full-size embedding rows on the CPU while reduced.
    """

    def __init__(
        self,
        plan: VocabPlan,
        tokenizer: Any = None,
        *,
        full_checkpoints: bool = True,
        offload: str | None = None,
    ) -> None:
        if not isinstance(plan, VocabPlan):
            raise VocabError(f"'plan' must be a VocabPlan (got {type(plan).__name__})")
        self.plan = plan
        self.tokenizer = tokenizer
        self.full_checkpoints = full_checkpoints
        self.offload = offload
        self.applied: AppliedPlan | None = None
        self._table: Any = None
        # Read now, while the tokenizer is still full: its ids are old ids.
        self._unk_old: int | None = getattr(tokenizer, "unk_token_id", None)

    @property
    def active(self) -> bool:
        """Whether the plan is in force right now."""
        return self.applied is not None and self.applied.active

    def _apply(self, model: Any, optimizer: Any) -> None:
        if self.active:
            return
        self.applied = apply_plan(
            self.plan,
            model=model,
            tokenizer=self.tokenizer,
            optimizer=_unwrap_optimizer(optimizer) if optimizer is not None else None,
            offload=self.offload,
        )

    def _revert(self) -> None:
        if self.applied is not None and self.applied.active:
            revert_plan(self.applied)

    def restore(self) -> None:
        """Restore the full vocabulary now if the plan is in force (else do nothing)."""
        self._revert()

    def train(self, trainer: Any, *args: Any, **kwargs: Any) -> Any:
        """``trainer.train(...)``; the full vocabulary is back when it returns or raises.

        The Trainer does not call ``on_train_end`` when training raises (an exception in a
        step, a collator, a callback, ``KeyboardInterrupt``), which would leave the model and
        tokenizer reduced; this restores them before the exception propagates.
        """
        try:
            return trainer.train(*args, **kwargs)
        finally:
            self._revert()

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Apply the plan to the model, tokenizer and the Trainer's optimizer."""
        self._apply(kwargs["model"], kwargs.get("optimizer"))

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Restore the full vocabulary when a checkpoint is about to be written."""
        if self.full_checkpoints and getattr(control, "should_save", False):
            self._revert()

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Reduce again once the checkpoint is written, unless training is over."""
        if self.full_checkpoints and not self.active and state.global_step < state.max_steps:
            self._apply(kwargs["model"], kwargs.get("optimizer"))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Restore the full vocabulary for good."""
        self._revert()

    def remap_ids(self, ids: Any) -> Any:
        """Map a tensor of full-vocabulary ids to the reduced vocabulary (dropped → unk)."""
        import torch

        if self._table is None or self._table.device != ids.device:
            table = torch.tensor(self.plan.old_to_new_table(), dtype=torch.long)
            unk = _unk_new_id(self.plan, self._unk_old)
            self._table = torch.where(table < 0, torch.full_like(table, unk), table).to(ids.device)
        mapped = self._table[ids.clamp(min=0)]
        return torch.where(ids < 0, ids, mapped)

    def wrap_collator(
        self, collator: Callable[[Any], Any], keys: Sequence[str] = ID_KEYS
    ) -> Callable[[Any], Any]:
        """Wrap ``collator`` so features of full-vocabulary ids fit the model while reduced.

        The features' id entries are mapped *before* ``collator`` runs, so a collator that
        inserts ids itself (the MLM collator's mask token, padding) uses the reduced
        tokenizer's ids consistently. ``keys`` names the entries holding token ids; add
        ``"labels"`` where labels are token ids computed beforehand (not for token
        classification, whose labels are classes). Negative values (-100) stay as they are.
        """
        # Ids the collator holds now, while the plan is not in force, are full ids.
        full_ids = [] if self.active else self._stored_ids(collator)

        def collate(features: Any) -> Any:
            if not self.active:
                return collator(features)
            features = [self._remap_feature(f, keys) for f in features]
            stored = [s for s in full_ids if getattr(collator, s[0], None) == s[1]]
            try:
                for name, _, new in stored:
                    setattr(collator, name, new)
                return collator(features)
            finally:
                for name, old, _ in stored:
                    setattr(collator, name, old)

        return collate

    def _stored_ids(self, collator: Any) -> list[tuple[str, int, int]]:
        """``(name, full id, reduced id)`` of ``*_token_id`` ints the collator object holds."""
        try:
            fields = vars(collator)
        except TypeError:
            return []
        out: list[tuple[str, int, int]] = []
        for name, value in fields.items():
            if not name.endswith("_token_id") or isinstance(value, bool):
                continue
            if isinstance(value, int) and 0 <= value < self.plan.vocab_size:
                new = self.plan.old_to_new(value)
                if new is None:
                    raise VocabError(
                        f"the collator's {name} is {value}, an id the plan drops; keep it when "
                        f"building the plan (keep=({value},))"
                    )
                out.append((name, value, new))
        return out

    def _remap_feature(self, feature: Any, keys: Sequence[str]) -> Any:
        import torch

        if not any(key in feature for key in keys):
            return feature
        out = dict(feature)
        for key in keys:
            value = out.get(key)
            if value is None:
                continue
            if isinstance(value, torch.Tensor):
                out[key] = self.remap_ids(value)
            else:
                out[key] = self.remap_ids(torch.tensor(value, dtype=torch.long)).tolist()
        return out


def _unk_new_id(plan: VocabPlan, unk_old: int | None) -> int:
    new = plan.old_to_new(unk_old) if unk_old is not None else None
    return 0 if new is None else new
