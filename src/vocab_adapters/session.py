"""``apply_plan``, ``revert_plan`` and ``reduced_vocab``: every adapter, all or nothing."""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from vocab_adapters.reversible import Applied, Prepared
from vocabcore import VocabError, VocabPlan

__all__ = ["AppliedPlan", "apply_plan", "reduced_vocab", "revert_plan", "track_optimizer"]

# id(target object) -> the AppliedPlan that currently holds it reduced.
_ACTIVE: dict[int, weakref.ReferenceType[AppliedPlan]] = {}


def _holder(obj: object) -> AppliedPlan | None:
    ref = _ACTIVE.get(id(obj))
    holder = ref() if ref is not None else None
    if holder is None or not holder.active or not any(t is obj for t in holder._targets()):
        return None
    return holder


class AppliedPlan:
    """What :func:`apply_plan` changed, and what :func:`revert_plan` needs to undo it.

    Attributes:
        plan: The plan that was applied.
        model, tokenizer, optimizer: The targets (``None`` where not given).
    """

    def __init__(
        self,
        plan: VocabPlan,
        model: Any,
        tokenizer: Any,
        optimizer: Any,
        stages: list[tuple[str, Applied]],
        swaps: tuple[Any, ...],
    ) -> None:
        self.plan = plan
        self.model = model
        self.tokenizer = tokenizer
        self.optimizer = optimizer
        self._stages = stages
        self._swaps = swaps
        self._late_optimizers: list[Any] = []
        self.active = True

    def _targets(self) -> list[Any]:
        return [
            t
            for t in (self.model, self.tokenizer, self.optimizer, *self._late_optimizers)
            if t is not None
        ]

    @property
    def swaps(self) -> tuple[Any, ...]:
        """The parameter swaps made in the model (full ↔ reduced), for optimizer bookkeeping."""
        return self._swaps

    def track(self, optimizer: Any) -> None:
        """Have :func:`revert_plan` also restore ``optimizer``, created while reduced.

        The optimizer's reduced parameters are replaced by the full ones on revert, and its
        state is scattered into full-size state (zeros for dropped rows).
        """
        if not self.active:
            raise VocabError("this plan was already reverted; track optimizers before reverting")
        if optimizer is self.optimizer or any(o is optimizer for o in self._late_optimizers):
            return
        self._late_optimizers.append(optimizer)
        _ACTIVE[id(optimizer)] = weakref.ref(self)

    def __repr__(self) -> str:
        state = "active" if self.active else "reverted"
        names = ", ".join(name for name, _ in self._stages)
        return f"AppliedPlan({self.plan!r}, {state}, stages=[{names}])"


def _tokenizer_adapter(tokenizer: Any) -> Any:
    from vocab_adapters.tokenizer_backend import backend_of

    if backend_of(tokenizer) is not None:
        from vocab_adapters import fast_tokenizer

        return fast_tokenizer
    from vocab_adapters import slow_tokenizer

    if not slow_tokenizer.supports(tokenizer):
        raise VocabError(
            f"tokenizer of type {type(tokenizer).__name__} is not supported: pass a Hugging Face "
            "fast tokenizer, a tokenizers.Tokenizer, or a BERT/RoBERTa/GPT-2/XLM-R/DeBERTa-v2 "
            "slow tokenizer (see docs/slow_tokenizers.md)"
        )
    return slow_tokenizer


def _check_targets(plan: Any, model: Any, tokenizer: Any, optimizer: Any) -> None:
    if not isinstance(plan, VocabPlan):
        raise VocabError(f"'plan' must be a VocabPlan (got {type(plan).__name__})")
    if model is None and tokenizer is None and optimizer is None:
        raise VocabError("apply_plan needs at least one of model=, tokenizer=, optimizer=")
    if optimizer is not None and model is None:
        raise VocabError(
            "optimizer= needs model= too: the optimizer's parameters are found in the model"
        )
    if plan.new_size == 0:
        raise VocabError("the plan keeps no id; build it from texts the model will see")
    for name, obj in (("model", model), ("tokenizer", tokenizer), ("optimizer", optimizer)):
        if obj is not None and _holder(obj) is not None:
            raise VocabError(
                f"this {name} already has a plan applied; call revert_plan() on the "
                "AppliedPlan first (or compose the plans with plan.then(...) and apply once)"
            )


def _commit_all(prepared: list[tuple[str, Prepared]]) -> list[tuple[str, Applied]]:
    done: list[tuple[str, Applied]] = []
    try:
        for name, stage in prepared:
            done.append((name, stage.commit()))
    except BaseException:
        for _, applied in reversed(done):
            applied.rollback()
        raise
    return done


def apply_plan(
    plan: VocabPlan,
    *,
    model: Any = None,
    tokenizer: Any = None,
    optimizer: Any = None,
    offload: str | None = None,
) -> AppliedPlan:
    """Reduce the vocabulary of a model, its tokenizer and optimizer, in place.

    Every target is validated and the reduced state computed before anything changes; if a
    check or a later stage fails, every target is left exactly as it was.

    Args:
        plan: The plan to apply; ``plan.vocab_size`` must equal ``len(tokenizer)``.
        model: A transformers model (its embeddings, LM head, biases and config are reduced).
        tokenizer: A fast or slow Hugging Face tokenizer, or a ``tokenizers.Tokenizer``.
        optimizer: An optimizer over ``model``'s parameters that already exists (resuming);
            one created after apply can be registered with :meth:`AppliedPlan.track` or passed
            to :func:`revert_plan`.
        offload: ``"cpu"`` to hold the full-size embedding rows on the CPU while reduced.

    Returns:
        The handle that :func:`revert_plan` takes.

    Raises:
        PlanMismatchError: The plan was built for another tokenizer or vocabulary size.
        VocabError: Any other invalid input, the targets are already reduced, or the model
            is already wrapped for distributed training (DDP, FSDP, DeepSpeed: apply first,
            then wrap; see :mod:`vocab_adapters.distributed`).
    """
    _check_targets(plan, model, tokenizer, optimizer)
    if model is not None:
        from vocab_adapters.distributed import check_peft_apply, check_unwrapped

        check_unwrapped(model, "apply")
        check_peft_apply(model)
    prepared: list[tuple[str, Prepared]] = []
    swaps: tuple[Any, ...] = ()
    if tokenizer is not None:
        prepared.append(("tokenizer", _tokenizer_adapter(tokenizer).prepare(plan, tokenizer)))
    if model is not None:
        from vocab_adapters import config as config_adapter
        from vocab_adapters import embeddings

        added_pieces = None
        if plan.added and tokenizer is not None:  # rows of added tokens: mean of their pieces
            from vocab_adapters.added_tokens import token_pieces

            added_pieces = token_pieces(tokenizer, plan.added)
        prepared_embeddings = embeddings.prepare(
            plan, model, offload=offload, added_pieces=added_pieces
        )
        swaps = tuple(prepared_embeddings.swaps)
        prepared.append(("embeddings", prepared_embeddings))
        if getattr(model, "config", None) is not None:
            prepared.append(("config", config_adapter.prepare(plan, model)))
    if optimizer is not None:
        from vocab_adapters import optimizer as optimizer_adapter

        prepared.append(("optimizer", optimizer_adapter.prepare(optimizer, swaps)))
    stages = _commit_all(prepared)
    applied = AppliedPlan(plan, model, tokenizer, optimizer, stages, swaps)
    for target in applied._targets():
        _ACTIVE[id(target)] = weakref.ref(applied)
    return applied


def revert_plan(applied: AppliedPlan, *, optimizer: Any = None, keep_added: bool = False) -> None:
    """Restore the full vocabulary, writing trained rows and optimizer state back.

    Args:
        applied: What :func:`apply_plan` returned.
        optimizer: An optimizer created while the model was reduced (same as
            ``applied.track(optimizer)`` before reverting); its reduced parameters are swapped
            for the full ones, with full-size state.
        keep_added: For a plan that adds tokens: keep them, at ids ``len(tokenizer)`` upward,
            with their trained rows; tokenizer, embeddings, config and optimizer state grow to
            match (see :mod:`vocab_adapters.added_revert`). Otherwise the revert is exact.

    Raises:
        VocabError: The plan was already reverted, or a target was changed by something else
            in a way that makes revert unsafe, or the model is still wrapped for distributed
            training (unwrap first); nothing is changed then.
    """
    if not isinstance(applied, AppliedPlan):
        raise VocabError(
            f"revert_plan takes the AppliedPlan that apply_plan returned (got "
            f"{type(applied).__name__})"
        )
    if not applied.active:
        raise VocabError(
            "this plan was already reverted; revert_plan is called once per apply_plan"
        )
    if applied.model is not None:
        from vocab_adapters.distributed import check_peft_revert, check_unwrapped

        check_unwrapped(applied.model, "revert")
        check_peft_revert(applied.model, (swap.reduced for swap in applied.swaps))
    late = list(applied._late_optimizers)
    known = [applied.optimizer, *late]
    if optimizer is not None and not any(o is optimizer for o in known):
        late.append(optimizer)
    restores: list[Any] = []
    if late:
        from vocab_adapters import optimizer as optimizer_adapter

        # Validated before anything changes; a refused optimizer is not left registered.
        restores = [optimizer_adapter.prepare_restore(o, applied.swaps) for o in late]
    applied._late_optimizers = late
    for _, stage in applied._stages:
        stage.check_revert()
    grow = None
    if keep_added and applied.plan.added:  # computed before anything changes
        from vocab_adapters.added_revert import prepare_keep_added

        grow = prepare_keep_added(applied, [applied.optimizer, *late])
    # The embeddings go first: their revert is the one that computes (row copies, device moves)
    # and it assigns nothing until that succeeded, so a failure there leaves every target
    # reduced and the plan active. The other stages only assign.
    order = sorted(reversed(applied._stages), key=lambda item: item[0] != "embeddings")
    for _, stage in order:
        stage.revert()
    for restore in restores:
        restore.commit()
    if grow is not None:
        grow.commit()
    applied.active = False
    for target in applied._targets():
        if _ACTIVE.get(id(target)) is not None:
            _ACTIVE.pop(id(target), None)


def track_optimizer(target: Any, optimizer: Any) -> None:
    """Register ``optimizer``, created while ``target`` (a model) is reduced, for revert."""
    holder = target if isinstance(target, AppliedPlan) else _holder(target)
    if holder is None:
        raise VocabError("no plan is applied to this model; apply_plan(...) first")
    holder.track(optimizer)


@contextmanager
def reduced_vocab(
    model: Any,
    tokenizer: Any = None,
    texts: Iterable[Any] | None = None,
    *,
    plan: VocabPlan | None = None,
    optimizer: Any = None,
    min_count: int = 1,
    keep: Iterable[int | str] = (),
    offload: str | None = None,
) -> Iterator[VocabPlan]:
    """Train with a reduced vocabulary inside a ``with`` block; restore it on the way out.

    Give either ``texts`` (a plan is built with :func:`vocab_adapters.plan_from_texts`) or a
    ready ``plan``. The full vocabulary is restored, trained rows written back, on normal exit
    and when the block raises (the exception propagates unchanged). An optimizer created inside
    the block can be registered with :func:`track_optimizer` so it is restored too.

    Yields:
        The plan in force.
    """
    if (texts is None) == (plan is None):
        raise VocabError("reduced_vocab needs exactly one of texts= or plan=")
    if plan is None:
        if tokenizer is None:
            raise VocabError("reduced_vocab(texts=...) needs the tokenizer to count tokens")
        from vocab_adapters.texts import plan_from_texts

        assert texts is not None
        plan = plan_from_texts(tokenizer, texts, min_count=min_count, keep=keep)
    applied = apply_plan(
        plan, model=model, tokenizer=tokenizer, optimizer=optimizer, offload=offload
    )
    try:
        yield plan
    finally:
        if applied.active:
            revert_plan(applied)
