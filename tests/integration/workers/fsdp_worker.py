"""FSDP worker (run by torchrun): apply, shard, train, gather the full state dict, revert on it.

``... fsdp_worker.py OUT_DIR fsdp2`` uses FSDP2 ``fully_shard`` (per layer, then the root);
``... fsdp_worker.py OUT_DIR fsdp1`` uses FSDP1 ``FullyShardedDataParallel``. Every rank
gathers the full (reduced) state dict, loads it into a fresh full model with
``load_reduced_state_dict`` and writes ``OUT_DIR/rank{r}.pt``; the wrong orders' messages go
to ``OUT_DIR/rank{r}.json``.
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path
from typing import Any


def _shard(model: Any, kind: str) -> Any:
    import torch

    if kind == "fsdp2":
        from torch.distributed.fsdp import fully_shard

        for layer in model.bert.encoder.layer:
            fully_shard(layer)
        fully_shard(model)
        return model
    from torch.distributed.fsdp import FullyShardedDataParallel

    return FullyShardedDataParallel(model, use_orig_params=True, device_id=torch.device("cpu"))


def _full_state_dict(sharded: Any, kind: str) -> dict[str, Any]:
    if kind == "fsdp2":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(sharded, options=StateDictOptions(full_state_dict=True))
    from torch.distributed.fsdp import FullStateDictConfig, StateDictType
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    config = FullStateDictConfig(offload_to_cpu=False, rank0_only=False)
    with FSDP.state_dict_type(sharded, StateDictType.FULL_STATE_DICT, config):
        return dict(sharded.state_dict())


def main(out: Path, kind: str) -> None:
    import torch
    import torch.distributed as dist
    from _integration import global_batches, plan_for, remap, tiny_bert, train, write_json

    from vocab_adapters import apply_plan, revert_plan
    from vocab_adapters.integrations.distributed import load_reduced_state_dict
    from vocabcore import VocabError

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    batches = global_batches()
    plan = plan_for(batches)
    errors: dict[str, str] = {}

    model = tiny_bert()
    applied = apply_plan(plan, model=model)  # 1. apply to the bare model
    sharded = _shard(model, kind)  # 2. shard
    optimizer = torch.optim.AdamW(sharded.parameters(), lr=1e-2, weight_decay=0.0)
    train(sharded, optimizer, [remap(plan, b) for b in batches], rank, world)  # 3. train

    other = _shard(tiny_bert(seed=5), kind)
    inner = other.module if kind == "fsdp1" else other
    for name, call in [
        ("revert_sharded", partial(revert_plan, applied)),
        ("apply_sharded", partial(apply_plan, plan, model=other)),
        ("apply_inner", partial(apply_plan, plan, model=inner)),
    ]:
        try:
            call()
        except VocabError as exc:
            errors[name] = str(exc)
    del other, inner, call

    state = _full_state_dict(sharded, kind)  # 4. gather the reduced full state dict
    fresh = tiny_bert()  # the weights training started from
    load_reduced_state_dict(plan, fresh, state)  # 5. revert on it
    torch.save(fresh.state_dict(), out / f"rank{rank}.pt")
    write_json(out / f"rank{rank}.json", errors)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
