"""Reduced vocabularies inside distributed and sharded training (DDP, FSDP, DeepSpeed).

The order that works with every engine: **apply the plan to the bare model before wrapping
it, revert after unwrapping it**, or, for sharded models, load the gathered full state dict
with :func:`load_reduced_state_dict`. :mod:`vocab_adapters.stages.wrappers` holds the checks that
:func:`vocab_adapters.apply_plan` and :func:`vocab_adapters.revert_plan` run to refuse the
other orders. See ``docs/distributed.md`` for the recipes (DDP, FSDP2, accelerate, Trainer,
DeepSpeed, PEFT, bitsandbytes, sharded counting).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from vocab_adapters.session import apply_plan, revert_plan
from vocab_adapters.stages.wrappers import (
    check_peft_apply,
    check_peft_revert,
    check_unwrapped,
    wrapper_name,
)
from vocabcore import VocabError, VocabPlan

__all__ = [
    "check_peft_apply",
    "check_peft_revert",
    "check_unwrapped",
    "load_reduced_state_dict",
    "wrapper_name",
]


def load_reduced_state_dict(
    plan: VocabPlan,
    model: nn.Module,
    state_dict: Mapping[str, Any],
    *,
    tokenizer: Any = None,
    strict: bool = True,
) -> None:
    """Load a state dict trained with ``plan`` in force into a full model, restoring it.

    The model must hold the weights the training run started from (same checkpoint or
    seed): the plan is applied to it, the reduced ``state_dict`` (e.g. the full state dict
    gathered from an FSDP-sharded model on rank 0, or a reduced checkpoint) is loaded, and the
    plan reverted, so the kept rows carry the training and the dropped rows are the
    original ones. ``tokenizer``, if given, ends unchanged.

    Args:
        plan: The plan the training run applied.
        model: A bare (unwrapped, unsharded) full-vocabulary model with the starting weights.
        state_dict: The reduced model's state dict (tensors, on any device).
        tokenizer: The tokenizer, to check the plan's fingerprint against.
        strict: As in ``torch.nn.Module.load_state_dict``.

    Raises:
        VocabError: ``model`` is wrapped or sharded, or the state dict doesn't fit the
            reduced model (the plan is not the one training used).
        PlanMismatchError: The plan was built for another tokenizer or vocabulary size.
    """
    applied = apply_plan(plan, model=model, tokenizer=tokenizer)
    expected = model.state_dict()
    problems = [
        f"{key}: {tuple(value.shape)} where the reduced model has {tuple(expected[key].shape)}"
        for key, value in state_dict.items()
        if key in expected
        and isinstance(value, torch.Tensor)
        and tuple(value.shape) != tuple(expected[key].shape)
    ]
    if strict:
        problems += [f"missing {key}" for key in expected if key not in state_dict]
        problems += [f"unexpected {key}" for key in state_dict if key not in expected]
    if problems:
        revert_plan(applied)  # nothing was loaded: this restores the model exactly
        raise VocabError(
            f"the state dict doesn't fit the model reduced by this plan ({'; '.join(problems[:3])}"
            f"{'; ...' if len(problems) > 3 else ''}); pass the plan the training run applied "
            "and a state dict saved while it was in force"
        )
    with torch.no_grad():
        model.load_state_dict(dict(state_dict), strict=strict)
    revert_plan(applied)
