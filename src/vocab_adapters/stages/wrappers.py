"""Guards: refuse to apply or revert around a distributed wrapper or an incompatible PEFT layer.

The order that works with every engine: **apply the plan to the bare model before wrapping
it, revert after unwrapping it** (or, for sharded models, on the gathered full state dict with
:func:`vocab_adapters.integrations.distributed.load_reduced_state_dict`). A wrapper registers the
parameters it sees when it is built
(DDP's gradient buckets, FSDP's flat or DTensor shards, ZeRO partitions), so a plan applied
after wrapping would train reduced parameters the wrapper never synchronizes, and a revert
while wrapped would swap the full embedding back under a wrapper that still holds the reduced
one. :func:`check_unwrapped` catches both and raises :class:`vocabcore.VocabError`;
:func:`vocab_adapters.apply_plan` and :func:`vocab_adapters.revert_plan` call it first.

Detected: a model that *is* or *contains* a ``DistributedDataParallel``, FSDP1
``FullyShardedDataParallel``, FSDP2 ``FSDPModule`` (``fully_shard``) or DeepSpeed engine;
parameters that are DTensors, FSDP1 flat parameters or ZeRO-3 partitions; and, while a
``torch.distributed`` process group is initialized, a live wrapper *around* the model (the
model passed is ``ddp.module``), found by one scan of the garbage collector's objects.

The same two calls also run :func:`check_peft_apply` and :func:`check_peft_revert`, which
refuse the PEFT layers and orders that a reduced vocabulary can't compose with (LoRA on the
embedding itself, TrainableTokens, a ``modules_to_save`` copy made after apply).

See ``docs/distributed.md`` for the recipes (DDP, FSDP2, accelerate, Trainer, DeepSpeed, PEFT,
bitsandbytes, sharded counting).
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import nn

from vocabcore import VocabError

__all__ = [
    "check_peft_apply",
    "check_peft_revert",
    "check_unwrapped",
    "wrapper_name",
]

_DOCS = "see docs/distributed.md"


def _wrapper_types() -> tuple[type, ...]:
    types: list[type] = [nn.parallel.DistributedDataParallel]
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel

        types.append(FullyShardedDataParallel)
    except ImportError:  # pragma: no cover - torch built without distributed
        pass
    return tuple(types)


def _fsdp2_type() -> type | None:
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover - torch < 2.6 or without distributed
        return None
    return FSDPModule


def wrapper_name(module: object) -> str | None:
    """The name of the distributed wrapper ``module`` is, or ``None`` for a plain module.

    >>> wrapper_name(torch.nn.Linear(2, 2)) is None
    True
    """
    return _wrapper_namer()(module)


def _wrapper_namer() -> Callable[[object], str | None]:
    """:func:`wrapper_name`, with the wrapper types looked up once (for walks over modules)."""
    types = _wrapper_types()
    fsdp2 = _fsdp2_type()

    def name_of(module: object) -> str | None:
        if isinstance(module, types):
            return type(module).__name__
        if fsdp2 is not None and isinstance(module, fsdp2):
            return "FSDP2 (fully_shard)"
        cls = type(module)
        if cls.__name__ == "DeepSpeedEngine" and cls.__module__.startswith("deepspeed"):
            return "DeepSpeedEngine"
        return None

    return name_of


def _shard_detector() -> Callable[[torch.Tensor], str | None]:
    """What shards a parameter (``None`` for a plain one), with DTensor looked up once."""
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - torch without distributed
        DTensor = ()  # type: ignore[assignment,misc]

    def sharded(param: torch.Tensor) -> str | None:
        if isinstance(param, DTensor):
            return "FSDP2 (fully_shard) or tensor parallelism: it is a DTensor"
        if getattr(param, "_is_flat_param", False):
            return "FSDP1: it is a FlatParameter"
        if hasattr(param, "ds_id"):
            return "DeepSpeed ZeRO-3: it is partitioned"
        return None

    return sharded


def _live_wrappers(model: nn.Module, deepspeed: bool) -> Iterator[nn.Module]:
    """Wrappers (DDP, FSDP1, and DeepSpeed if asked) that hold ``model`` inside them."""
    types = _wrapper_types()
    for obj in gc.get_objects():
        cls = type(obj)  # not isinstance: that reads __class__, which some proxies warn on
        if (
            issubclass(cls, nn.Module)
            and (issubclass(cls, types) or (deepspeed and wrapper_name(obj) == "DeepSpeedEngine"))
            and obj is not model
            and any(m is model for m in obj.modules())
        ):
            yield obj


def _distributed_initialized() -> bool:
    dist = torch.distributed
    return bool(dist.is_available() and dist.is_initialized())


def _advice(action: str, name: str) -> str:
    if action == "apply":
        return (
            f"apply the plan to the bare model before wrapping it in {name}: "
            f"apply_plan(plan, model=model), then wrap (and build the optimizer) ({_DOCS})"
        )
    if name == "DeepSpeedEngine":
        return (
            "unwrap first: with ZeRO stage 0-2, model = engine.module once training is over, "
            "then revert_plan(applied); with ZeRO-3, gather the full state dict "
            "(engine.save_16bit_model or zero_to_fp32) and on rank 0 call "
            f"load_reduced_state_dict(plan, fresh_full_model, state_dict) ({_DOCS})"
        )
    if any(word in name for word in ("FSDP", "FullySharded", "ZeRO")):
        return (
            "a sharded model can't be reverted in place; gather the full state dict "
            "(torch.distributed.checkpoint.state_dict.get_model_state_dict(model, "
            "options=StateDictOptions(full_state_dict=True, cpu_offload=True))) and on rank 0 "
            f"call load_reduced_state_dict(plan, fresh_full_model, state_dict) ({_DOCS})"
        )
    return (
        f"unwrap first: model = wrapper.module and drop every reference to the {name} "
        "(del ddp; with accelerate: accelerator.free_memory(); with Trainer: "
        "trainer.accelerator.free_memory() and trainer.model_wrapped = trainer.model), then "
        f"revert_plan(applied) ({_DOCS})"
    )


def check_unwrapped(model: Any, action: str = "apply") -> None:
    """Raise if ``model`` is, contains, or sits inside a distributed or sharding wrapper.

    Args:
        model: The model about to be reduced (``action="apply"``) or restored
            (``action="revert"``).
        action: ``"apply"`` or ``"revert"``; only changes the advice in the message.

    Raises:
        VocabError: The model is wrapped by DDP, FSDP (1 or 2) or DeepSpeed, or its
            parameters are sharded; the message says which and what order to use instead.
    """
    if not isinstance(model, nn.Module):
        return
    verb = "apply a plan to" if action == "apply" else "revert a plan on"
    name_of = _wrapper_namer()
    for path, module in model.named_modules():
        name = name_of(module)
        if name is not None:
            where = "the model is" if not path else f"its submodule {path!r} is"
            raise VocabError(
                f"cannot {verb} a model wrapped for distributed training: {where} a {name}; "
                + _advice(action, name)
            )
    sharded_by = _shard_detector()
    for qualname, param in model.named_parameters():
        sharded = sharded_by(param)
        if sharded is not None:
            raise VocabError(
                f"cannot {verb} a sharded model: parameter {qualname!r} is sharded by "
                f"{sharded}; " + _advice(action, sharded.split(":")[0])
            )
    if not _distributed_initialized():
        return
    # A DeepSpeed engine leaves hooks on the model that keep it alive for good; reverting
    # engine.module once training is over is fine (ZeRO-3's partitions are refused above).
    deepspeed = action == "apply"
    if any(True for _ in _live_wrappers(model, deepspeed)):
        gc.collect()  # a wrapper dropped but kept by a reference cycle is harmless: collect it
        found = next(_live_wrappers(model, deepspeed), None)
    else:
        found = None
    if found is not None:
        name = wrapper_name(found) or type(found).__name__
        raise VocabError(
            f"cannot {verb} this model: a {name} still wraps it (the model passed is its "
            f".module or part of it), and the wrapper keeps the parameters it registered when "
            "it was built; " + _advice(action, name)
        )


def _is_peft(module: object) -> bool:
    return (type(module).__module__ or "").startswith("peft.")


def check_peft_apply(model: Any) -> None:
    """Raise for PEFT layers that hold per-token state the embeddings adapter can't slice.

    LoRA on the embedding layer itself keeps ``lora_embedding_A`` with one *column* per
    token, and ``trainable_token_indices`` (TrainableTokens) keeps old token ids; a reduced
    vocabulary would index both with new ids. LoRA elsewhere with the embedding frozen, and
    ``modules_to_save`` for a trainable embedding, are fine (see docs/distributed.md).

    Raises:
        VocabError: ``model`` has such a layer; the message names it and the alternative.
    """
    if not isinstance(model, nn.Module):
        return
    for path, module in model.named_modules():
        if not _is_peft(module):
            continue
        lora_a = getattr(module, "lora_embedding_A", None)
        if isinstance(lora_a, nn.ParameterDict) and len(lora_a):
            raise VocabError(
                f"{path} is a PEFT LoRA layer on the embedding (lora_embedding_A has one column "
                "per token), which a reduced vocabulary can't slice yet; train the embedding "
                "with modules_to_save=[<embedding module name>] instead of putting it in "
                "target_modules, or leave it frozen"
            )
        if hasattr(module, "trainable_tokens_delta"):
            raise VocabError(
                f"{path} is a PEFT TrainableTokens layer, which holds token ids of the full "
                "vocabulary; use modules_to_save=[<embedding module name>] with a reduced "
                "vocabulary instead of trainable_token_indices"
            )


def check_peft_revert(model: Any, reduced: Iterable[torch.Tensor]) -> None:
    """Raise if PEFT copied a reduced module (``modules_to_save``) after the plan was applied.

    ``get_peft_model(..., modules_to_save=[...])`` keeps a trained copy of the module beside
    the original. Made after ``apply_plan``, the copy is reduced but unknown to the plan, so
    revert would restore the original and leave the trained copy reduced.

    Args:
        model: The model the plan was applied to.
        reduced: The reduced parameters the plan installed.

    Raises:
        VocabError: Such a copy exists; the message gives the order that works.
    """
    if not isinstance(model, nn.Module):
        return
    known = {id(t) for t in reduced}
    for path, module in model.named_modules():
        if not _is_peft(module):
            continue
        base_weight = getattr(getattr(module, "base_layer", None), "weight", None)
        if id(base_weight) in known:
            raise VocabError(
                f"{path} is a PEFT layer (LoRA on the embedding or head) added after the plan "
                "was applied, so it sits where the reduced module was; merge it before "
                "reverting (model = peft_model.merge_and_unload(); revert_plan(applied)), or "
                "train the embedding with modules_to_save (see docs/distributed.md)"
            )
        copies = getattr(module, "modules_to_save", None)
        if not isinstance(copies, nn.ModuleDict):
            continue
        original = getattr(module, "original_module", None)
        original_weight = getattr(original, "weight", None)
        if id(original_weight) not in known:
            continue
        for adapter, copy in copies.items():
            if id(getattr(copy, "weight", None)) not in known:
                raise VocabError(
                    f"{path}.modules_to_save[{adapter!r}] is a copy PEFT made of the reduced "
                    "module after the plan was applied, so revert can't restore it; apply the "
                    "plan after get_peft_model (apply_plan(plan, model=peft_model)) so both the "
                    "original and the trained copy are reduced and restored"
                )
