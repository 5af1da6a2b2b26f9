"""``VocabReductionCallback``: a reduced vocabulary inside a Hugging Face ``Trainer`` run.

No Trainer subclass is needed::

    callback = VocabReductionCallback(plan, tokenizer)
    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=dev,
                      data_collator=callback.wrap_collator(collator), callbacks=[callback])
    callback.train(trainer)  # reduced while training; checkpoints and the end state are full

``callback.train(trainer)`` is ``trainer.train()`` plus a guarantee: the full vocabulary is back
when it returns *or raises* (the Trainer calls ``on_train_end`` only when training succeeds).
The plan is applied when training begins (the Trainer has built its optimizer by then; its
parameters are swapped for the reduced ones, and with ``softmax="shifted"`` the shift is added
to it). Evaluation during training sees the reduced model.

Full checkpoints. Every checkpoint the Trainer writes goes through the model's
``save_pretrained`` (``save_strategy`` ``"steps"``, ``"epoch"``, ``"best"``, the save at the end
of training), so while training the callback puts a wrapper in front of it, on the model
object only: the full vocabulary is restored the moment a save begins, and the Trainer then
writes the full model, the full tokenizer, and the optimizer's full-size state
(``optimizer.pt``, so ``resume_from_checkpoint`` works), and the plan is applied again in
``on_save``, once the checkpoint is complete, unless training is over. No prediction of when
the Trainer will save is needed. (A save of the model by other code while training, outside
the Trainer's checkpoints, restores the full vocabulary too, and training then goes on at the
full vocabulary until the next checkpoint.) ``load_best_model_at_end`` loads a full
checkpoint into the model: a ``load_state_dict`` pre-hook on the model restores the full
vocabulary first. Both hooks are removed when training ends; ``trainer.save_model()``
afterwards writes the full model as it is.

Memory: re-applying after a checkpoint hands ``apply_plan`` an optimizer that has state, so its
full-size state is held aside (with the full-size parameters) until the next checkpoint; on the
CPU with ``offload="cpu"``. ``memory_estimate(...).reduced.held_bytes`` counts it.

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


def _fits(value: Any, parameter: Any) -> bool:
    """Whether an optimizer state entry can belong to ``parameter`` (scalars always can)."""
    shape = getattr(value, "shape", None)
    return shape is None or len(shape) == 0 or shape == parameter.shape


def _grown_plan(plan: VocabPlan, tokenizer: Any) -> VocabPlan:
    """The plan over the vocabulary ``revert_plan(..., keep_added=True)`` leaves.

    The added tokens are ordinary ids ``plan.vocab_size`` upward then; keeping them after the
    kept ids gives the same reduced numbering (kept ids in order, then the added tokens).
    """
    size = plan.vocab_size + len(plan.added)
    fingerprint = None
    if tokenizer is not None and plan.fingerprint is not None:
        from vocab_adapters.tokenization.tokenizer_backend import fingerprint as fingerprint_of

        fingerprint = fingerprint_of(tokenizer)
    kept = (*plan.kept, *range(plan.vocab_size, size))
    return VocabPlan(size, kept, fingerprint, plan.metadata)


class VocabReductionCallback(TrainerCallback):
    """Keep a ``Trainer``'s model reduced to ``plan`` while it trains.

    Args:
        plan: The plan (from :func:`vocab_adapters.plan_from_texts` or ``VocabPlan.load``).
        tokenizer: The tokenizer to reduce alongside the model (optional); give the
            Trainer's ``processing_class`` so that checkpoints hold the full tokenizer.
        full_checkpoints: Restore the full vocabulary around every checkpoint save, so saved
            checkpoints (model, tokenizer, optimizer state) are full-vocabulary (default).
            With ``False`` checkpoints are saved reduced: keep the plan beside them to restore
            later.
        offload: ``"cpu"`` to hold the full-size tensors on the CPU while reduced.
        softmax: As in :func:`vocab_adapters.apply_plan`. With ``"shifted"`` the shift vector
            (and scalar) join the Trainer's optimizer, in a group without weight decay if it
            has one (else the output layer's group), so they follow its learning-rate
            schedule; each checkpoint folds the shift into the dropped rows as a revert does,
            and the shift's optimizer state carries over to the next one. (It is not part of
            ``optimizer.pt``, so a resumed run starts the shift's state afresh.)
        keep_added: For a plan that adds tokens: the model ends training with the full
            vocabulary plus the added tokens, at ids ``len(tokenizer)`` upward, as
            ``revert_plan(applied, keep_added=True)`` leaves it. Checkpoints are written the
            same way (the full vocabulary plus the trained added tokens), and training goes on
            with the same reduced numbering. With ``False`` the added tokens exist only while
            reduced: each full checkpoint drops them, and they start again from the mean of
            their pieces after it; use ``True`` (or ``full_checkpoints=False``) to train them
            across checkpoints.
        normaliser: As in :func:`vocab_adapters.apply_plan` (``"sampled:8192"``, say).

    Attributes:
        applied: The :class:`~vocab_adapters.AppliedPlan` of the latest apply (``None``
            before training begins).
    """

    def __init__(
        self,
        plan: VocabPlan,
        tokenizer: Any = None,
        *,
        full_checkpoints: bool = True,
        offload: str | None = None,
        softmax: str = "reduced",
        keep_added: bool = False,
        normaliser: str = "exact",
    ) -> None:
        from vocab_adapters.stages.softmax import check_mode, check_normaliser

        if not isinstance(plan, VocabPlan):
            raise VocabError(f"'plan' must be a VocabPlan (got {type(plan).__name__})")
        if offload not in (None, "cpu"):
            raise VocabError(f"'offload' must be None or 'cpu' (got {offload!r})")
        check_mode(softmax)
        check_normaliser(normaliser, softmax)
        for name, value in (("full_checkpoints", full_checkpoints), ("keep_added", keep_added)):
            if not isinstance(value, bool):
                raise VocabError(f"{name!r} must be True or False (got {value!r})")
        self.plan = plan
        self.tokenizer = tokenizer
        self.full_checkpoints = full_checkpoints
        self.offload = offload
        self.softmax = softmax
        self.normaliser = normaliser
        self.keep_added = keep_added
        self.applied: AppliedPlan | None = None
        self._next_plan = plan  # after a keep_added checkpoint: the plan over the grown vocab
        self._table: Any = None
        self._model: Any = None
        self._load_hook: Any = None
        self._patched = False
        self._extra_state: list[Any] = []  # the shift's optimizer state, for the next apply
        # Read now, while the tokenizer is still full: its ids are old ids.
        self._unk_old: int | None = getattr(tokenizer, "unk_token_id", None)

    @property
    def active(self) -> bool:
        """Whether the plan is in force right now."""
        return self.applied is not None and self.applied.active

    # -- apply and revert -------------------------------------------------------------------

    def _apply(self, model: Any, optimizer: Any) -> None:
        if self.active:
            return
        torch_optimizer = _unwrap_optimizer(optimizer) if optimizer is not None else None
        self.applied = apply_plan(
            self._next_plan,
            model=model,
            tokenizer=self.tokenizer,
            optimizer=torch_optimizer,
            offload=self.offload,
            softmax=self.softmax,
            normaliser=self.normaliser,
        )
        self._carry_state_in()

    def _joined(self) -> tuple[Any, ...]:
        """Parameters apply put in the Trainer's optimizer (the softmax shift), if any."""
        stage = self.applied.stages.get("optimizer") if self.applied is not None else None
        return tuple(getattr(stage, "joined", ()))

    def _carry_state_in(self) -> None:
        """The shift's optimizer state from the last interval continues (apply starts it fresh).

        The shift was folded into the dropped rows at the checkpoint, so the new one, at zero,
        continues where the old one left off, and so does its optimizer state.
        """
        optimizer = self.applied.optimizer if self.applied is not None else None
        states, self._extra_state = self._extra_state, []
        if optimizer is None:
            return
        for parameter, state in zip(self._joined(), states, strict=False):
            if state and all(_fits(value, parameter) for value in state.values()):
                optimizer.state[parameter] = state

    def _revert(self) -> None:
        if self.applied is None or not self.applied.active:
            return
        optimizer = self.applied.optimizer
        states = [optimizer.state.get(p) if optimizer is not None else None for p in self._joined()]
        plan = self.applied.plan
        revert_plan(self.applied, keep_added=self.keep_added)  # the shift leaves the optimizer
        self._extra_state = states
        if self.keep_added and plan.added:
            self._next_plan = _grown_plan(plan, self.tokenizer)

    def restore(self) -> None:
        """Restore the full vocabulary now if the plan is in force (else do nothing)."""
        self._revert()

    # -- the hooks that make every save full and every load safe ----------------------------

    def _install_hooks(self, model: Any) -> None:
        if not self.full_checkpoints or self._model is not None:
            return
        self._model = model
        previous = vars(model).get("save_pretrained")

        def save_pretrained(*args: Any, **kwargs: Any) -> Any:
            # Restore before anything is written (config, weights, then the Trainer's
            # tokenizer and optimizer state); on_save applies the plan again.
            self._revert()
            if previous is not None:
                return previous(*args, **kwargs)
            return type(model).save_pretrained(model, *args, **kwargs)

        save_pretrained.__wrapped__ = previous  # type: ignore[attr-defined]
        model.__dict__["save_pretrained"] = save_pretrained
        self._patched = True

        def before_load(*args: Any, **kwargs: Any) -> None:
            self._revert()  # a full checkpoint is loaded into the full model

        self._load_hook = model.register_load_state_dict_pre_hook(before_load)

    def _remove_hooks(self) -> None:
        model, self._model = self._model, None
        if model is None:
            return
        if self._load_hook is not None:
            self._load_hook.remove()
            self._load_hook = None
        if self._patched:
            wrapper = model.__dict__.pop("save_pretrained", None)
            previous = getattr(wrapper, "__wrapped__", None)
            if previous is not None:
                model.__dict__["save_pretrained"] = previous
            self._patched = False

    def _finish(self) -> None:
        try:
            self._revert()
        finally:
            self._remove_hooks()

    def train(self, trainer: Any, *args: Any, **kwargs: Any) -> Any:
        """``trainer.train(...)``; the full vocabulary is back when it returns or raises.

        The Trainer does not call ``on_train_end`` when training raises (an exception in a
        step, a collator, a callback, ``KeyboardInterrupt``), which would leave the model and
        tokenizer reduced; this restores them before the exception propagates.
        """
        try:
            return trainer.train(*args, **kwargs)
        finally:
            self._finish()

    # -- TrainerCallback events -------------------------------------------------------------

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Apply the plan to the model, tokenizer and the Trainer's optimizer."""
        model = kwargs["model"]
        self._apply(model, kwargs.get("optimizer"))
        self._install_hooks(model)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Reduce again once the checkpoint is written, unless training is over."""
        if not self.full_checkpoints or self.active or self._model is None:
            return
        if control.should_training_stop or state.global_step >= state.max_steps:
            return  # nothing trains after this; on_train_end finishes
        self._apply(kwargs["model"], kwargs.get("optimizer"))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Restore the full vocabulary for good (with the added tokens if ``keep_added``)."""
        self._finish()

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
