"""``apply_plan``, ``revert_plan`` and ``reduced_vocab``: every adapter, all or nothing."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from vocab_adapters.stages.reversible import RECORD, Applied, Prepared, RevertInputs, commit_all
from vocabcore import VocabError, VocabPlan

__all__ = [
    "STAGES",
    "AppliedPlan",
    "apply_plan",
    "reduced_vocab",
    "revert_plan",
    "track_optimizer",
]

#: The stages of a plan, in the order apply commits them; revert installs them in reverse. The order
#: is a convention only: on revert every stage computes the final value of what it owns from the
#: same plain :class:`~vocab_adapters.stages.reversible.RevertInputs` (built before any stage
#: prepares), and no stage writes into another's objects, so any order gives the same result.
STAGES = ("tokenizer", "softmax", "embeddings", "config", "optimizer")


def _holder(obj: object) -> AppliedPlan | None:
    for change in RECORD.holders(obj):
        if isinstance(change.owner, AppliedPlan) and change.owner.active:
            return change.owner
    return None


class AppliedPlan:
    """What :func:`apply_plan` changed, and what :func:`revert_plan` needs to undo it.

    Attributes:
        plan: The plan that was applied.
        model, tokenizer, optimizer: The targets (``None`` where not given).
        stages: The applied stage of each target, by stage name, in :data:`STAGES` order.
    """

    def __init__(
        self,
        plan: VocabPlan,
        model: Any,
        tokenizer: Any,
        optimizer: Any,
        stages: dict[str, Applied],
        swaps: tuple[Any, ...],
    ) -> None:
        self.plan = plan
        self.model = model
        self.tokenizer = tokenizer
        self.optimizer = optimizer
        self.stages = stages
        self._swaps = swaps
        self._late_optimizers: list[Any] = []
        for stage in stages.values():
            stage.owner = self

    @property
    def active(self) -> bool:
        """Whether the plan is in force (applied and not yet reverted)."""
        return any(stage.active for stage in self.stages.values())

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

    def held_tensors(self) -> tuple[Any, ...]:
        """Full-size tensors the plan keeps aside for revert while reduced.

        The original embedding/head/bias tensors (embeddings stage) and the optimizer's
        full-size state of a resumed optimizer (optimizer stage); each once. With
        ``apply_plan(..., offload="cpu")`` they are all on the CPU. Not included: what the
        model trains with, and the working copy of the dropped output rows that
        ``softmax="full"``/``"shifted"`` keeps where the model is when offloading.
        """
        seen: set[int] = set()
        out: list[Any] = []
        for stage in self.stages.values():
            if not stage.active:
                continue
            for tensor in stage.held_tensors():
                if id(tensor) not in seen:
                    seen.add(id(tensor))
                    out.append(tensor)
        return tuple(out)

    def held_bytes(self, device: Any = None) -> int:
        """Bytes of :meth:`held_tensors` (on ``device`` only, when given: ``"cuda"``, ...)."""
        import torch

        total = 0
        for tensor in self.held_tensors():
            if device is not None:
                want = torch.device(device)
                here = tensor.device
                if here.type != want.type or (want.index is not None and here.index != want.index):
                    continue
            total += tensor.numel() * tensor.element_size()
        return total

    def revert_inputs(self, *, keep_added: bool = False) -> RevertInputs:
        """What every stage's revert is given: plain data gathered from the stages.

        The trained shifts of ``softmax="shifted"``, how many added tokens are kept, and how
        many vocabulary rows there are after the revert (padding rows first, then growth).
        """
        plan = self.plan
        added = len(plan.added) if keep_added else 0
        embeddings = self.stages.get("embeddings")
        rows = getattr(embeddings, "rows", plan.vocab_size)
        softmax = self.stages.get("softmax")
        row_shifts = getattr(softmax, "row_shifts", None)
        shifts = tuple(row_shifts()) if callable(row_shifts) else ()
        return RevertInputs(
            vocab_size=plan.vocab_size,
            added=added,
            rows=rows,
            final_rows=max(rows, plan.vocab_size + added),
            shifts=shifts,
        )

    def __repr__(self) -> str:
        state = "active" if self.active else "reverted"
        return f"AppliedPlan({self.plan!r}, {state}, stages=[{', '.join(self.stages)}])"


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
        if obj is not None:
            RECORD.check_free(obj, name)
    config = getattr(model, "config", None)
    if config is not None:
        RECORD.check_free(config, "model's config")


def _prepare_stages(
    plan: VocabPlan,
    model: Any,
    tokenizer: Any,
    optimizer: Any,
    offload: str | None,
    softmax: str,
    normaliser: str = "exact",
) -> tuple[list[tuple[str, Prepared]], tuple[Any, ...]]:
    """Every stage validated and computed out of place, in :data:`STAGES` order."""
    prepared: dict[str, Prepared] = {}
    swaps: tuple[Any, ...] = ()
    if tokenizer is not None:
        from vocab_adapters.stages.tokenizer_adapter import adapter_for

        prepared["tokenizer"] = adapter_for(tokenizer).prepare(plan, tokenizer)
    if model is not None:
        from vocab_adapters.stages import config as config_adapter
        from vocab_adapters.stages import embeddings

        added_pieces = None
        if plan.added and tokenizer is not None:  # rows of added tokens: mean of their pieces
            from vocab_adapters.stages.tokenizer_adapter import token_pieces

            added_pieces = token_pieces(tokenizer, plan.added)
        prepared_embeddings = embeddings.prepare(
            plan, model, offload=offload, added_pieces=added_pieces
        )
        swaps = tuple(prepared_embeddings.swaps)
        prepared["embeddings"] = prepared_embeddings
        if getattr(model, "config", None) is not None:
            prepared["config"] = config_adapter.prepare(plan, model)
        if softmax != "reduced":  # needs the embeddings' swaps
            from vocab_adapters.stages import softmax as softmax_adapter

            prepared["softmax"] = softmax_adapter.prepare(
                plan, model, swaps, softmax, offload=offload, normaliser=normaliser
            )
    if optimizer is not None:
        from vocab_adapters.stages import optimizer as optimizer_adapter

        softmax_stage = prepared.get("softmax")
        new_parameters = getattr(softmax_stage, "parameters", ())
        prepared["optimizer"] = optimizer_adapter.prepare(
            optimizer, swaps, offload=offload, new_parameters=new_parameters
        )
    return [(name, prepared[name]) for name in STAGES if name in prepared], swaps


def apply_plan(
    plan: VocabPlan,
    *,
    model: Any = None,
    tokenizer: Any = None,
    optimizer: Any = None,
    offload: str | None = None,
    softmax: str = "reduced",
    normaliser: str = "exact",
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
            to :func:`revert_plan`. With ``softmax="shifted"`` the shift joins this optimizer
            while reduced (a group without weight decay if there is one, else the output
            layer's), with fresh state, and leaves it on revert.
        offload: ``"cpu"`` to hold every full-size tensor kept for revert on the CPU while
            reduced: the embedding/head/bias tensors and a resumed optimizer's full-size state
            (see :meth:`AppliedPlan.held_tensors`).
        softmax: ``"reduced"`` (default: the loss normalises over the kept ids), ``"full"``
            (the loss normalises over every row; dropped rows frozen) or ``"shifted"``
            (``"full"`` plus one trainable shift of the dropped rows); see
            :mod:`vocab_adapters.stages.softmax`.
        normaliser: How ``"full"``/``"shifted"`` sum over the dropped rows while training:
            ``"exact"`` (default), ``"sampled:M"`` (``M`` dropped rows drawn at random per
            step, the sum scaled by ``dropped / M``: an approximation, see
            ``docs/softmax_modes.md``; ``"sampled:1/K"`` draws ``1/K`` of them) or
            ``"bfloat16"`` (the exact sum with bfloat16 matmuls). Without gradients (evaluation)
            every normaliser is exact.

    Returns:
        The handle that :func:`revert_plan` takes.

    Raises:
        PlanMismatchError: The plan was built for another tokenizer or vocabulary size.
        VocabError: Any other invalid input, the targets are already reduced, or the model
            is already wrapped for distributed training (DDP, FSDP, DeepSpeed: apply first,
            then wrap; see :mod:`vocab_adapters.integrations.distributed`).
    """
    from vocab_adapters.stages.softmax import check_mode, check_normaliser

    check_mode(softmax)
    check_normaliser(normaliser, softmax)
    _check_targets(plan, model, tokenizer, optimizer)
    if model is not None:
        from vocab_adapters.stages.wrappers import check_peft_apply, check_unwrapped

        check_unwrapped(model, "apply")
        check_peft_apply(model)
    prepared, swaps = _prepare_stages(
        plan, model, tokenizer, optimizer, offload, softmax, normaliser
    )
    applied = commit_all(
        [stage for _, stage in prepared],
        lambda stage: stage.commit(),
        lambda _, change: change.rollback(),
    )
    stages = {name: change for (name, _), change in zip(prepared, applied, strict=True)}
    return AppliedPlan(plan, model, tokenizer, optimizer, stages, swaps)


def _late_handles(applied: AppliedPlan, optimizer: Any) -> list[Any]:
    """Undo handles for optimizers created while reduced.

    ``optimizer`` (given to this revert only) is not registered with the plan: if the revert
    fails, a retry without it restores everything else.
    """
    late = list(applied._late_optimizers)
    if optimizer is not None and not any(o is optimizer for o in (applied.optimizer, *late)):
        late.append(optimizer)
    if not late:
        return []
    from vocab_adapters.stages import optimizer as optimizer_adapter

    handles: list[Any] = []
    try:
        for o in late:
            handles.append(optimizer_adapter.attach(o, applied.swaps))
    except BaseException:
        for handle in handles:
            handle.forget()
        raise
    return handles


def revert_plan(applied: AppliedPlan, *, optimizer: Any = None, keep_added: bool = False) -> None:
    """Restore the full vocabulary, writing trained rows and optimizer state back.

    All or nothing: every stage is checked and its full state computed (every allocation,
    the optimizer's full-size state included) before any stage installs it; a failure then
    (a changed target, out of memory) leaves every target reduced and the plan active, so
    revert can be retried.

    Args:
        applied: What :func:`apply_plan` returned.
        optimizer: An optimizer created while the model was reduced (same as
            ``applied.track(optimizer)`` before reverting); its reduced parameters are swapped
            for the full ones, with full-size state.
        keep_added: For a plan that adds tokens: keep them, at ids ``len(tokenizer)`` upward,
            with their trained rows (in padding rows while the model has some, grown beyond);
            tokenizer, embeddings, per-layer tables, config sizes, modules' ``vocab_size``
            and optimizer state grow to match, and the dropped rows still get the trained
            shift of ``softmax="shifted"``. Otherwise the revert is exact.

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
        from vocab_adapters.stages.wrappers import check_peft_revert, check_unwrapped

        check_unwrapped(applied.model, "revert")
        check_peft_revert(applied.model, (swap.reduced for swap in applied.swaps))
    late = _late_handles(applied, optimizer)
    order: Sequence[Applied] = [
        *late,
        *(applied.stages[name] for name in reversed(STAGES) if name in applied.stages),
    ]
    try:
        inputs = applied.revert_inputs(keep_added=keep_added)
        steps = [change.prepare_revert(inputs) for change in order]
        commit_all(steps, lambda step: step.commit(), lambda step, _: step.undo())
    except BaseException:
        for handle in late:
            handle.forget()
        raise


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
    softmax: str = "reduced",
    normaliser: str = "exact",
) -> Iterator[VocabPlan]:
    """Train with a reduced vocabulary inside a ``with`` block; restore it on the way out.

    Give either ``texts`` (a plan is built with :func:`vocab_adapters.plan_from_texts`) or a
    ready ``plan``. The full vocabulary is restored, trained rows written back, on normal exit
    and when the block raises (the exception propagates unchanged). An optimizer created inside
    the block can be registered with :func:`track_optimizer` so it is restored too.

    When the block raised and the revert fails as well, the block's exception is what
    propagates (the same object): the revert failure is attached to it as
    ``exc.vocabcore_revert_error`` (and, on Python 3.11+, named in a note), the still active
    :class:`AppliedPlan` as ``exc.vocabcore_applied_plan``. The objects are then still reduced;
    fix the cause and call ``revert_plan(exc.vocabcore_applied_plan)``, or reload the model.
    When the block did not raise, a revert failure propagates itself.

    Yields:
        The plan in force.
    """
    if (texts is None) == (plan is None):
        raise VocabError("reduced_vocab needs exactly one of texts= or plan=")
    if plan is None:
        if tokenizer is None:
            raise VocabError("reduced_vocab(texts=...) needs the tokenizer to count tokens")
        from vocab_adapters.planning.texts import plan_from_texts

        assert texts is not None
        plan = plan_from_texts(tokenizer, texts, min_count=min_count, keep=keep)
    applied = apply_plan(
        plan,
        model=model,
        tokenizer=tokenizer,
        optimizer=optimizer,
        offload=offload,
        softmax=softmax,
        normaliser=normaliser,
    )
    try:
        yield plan
    except BaseException as exc:
        if applied.active:
            _revert_beside(applied, exc)
        raise
    if applied.active:
        revert_plan(applied)


def _revert_beside(applied: AppliedPlan, exc: BaseException) -> None:
    """Revert after the block raised ``exc``; a revert failure is chained to ``exc``."""
    try:
        revert_plan(applied)
    except BaseException as error:  # the block's exception wins
        try:
            exc.vocabcore_revert_error = error  # type: ignore[attr-defined]
            exc.vocabcore_applied_plan = applied  # type: ignore[attr-defined]
        except (AttributeError, TypeError):  # pragma: no cover - exotic exception types
            pass
        add_note = getattr(exc, "add_note", None)
        if callable(add_note):
            add_note(
                f"vocabcore: reverting the reduced vocabulary also failed "
                f"({type(error).__name__}: {error}); the model, tokenizer and optimizer are "
                "still reduced and the plan is active: fix the cause and call "
                "revert_plan(exc.vocabcore_applied_plan) again (the failure is "
                "exc.vocabcore_revert_error), or reload the model"
            )
