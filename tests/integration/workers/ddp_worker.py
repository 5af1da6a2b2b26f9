"""DDP worker (run by torchrun): apply, wrap, train, unwrap, revert; check the wrong orders.

``python -m torch.distributed.run --standalone --nproc-per-node=2 ddp_worker.py OUT_DIR``
writes ``OUT_DIR/rank{r}.pt`` (the reverted state dict) and ``OUT_DIR/rank{r}.json`` (the
error messages of the wrong orders).
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path


def main(out: Path) -> None:
    import torch
    import torch.distributed as dist
    from _integration import global_batches, plan_for, remap, tiny_bert, train, write_json
    from torch.nn.parallel import DistributedDataParallel

    from vocab_adapters import apply_plan, revert_plan
    from vocabcore import VocabError

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    batches = global_batches()
    plan = plan_for(batches)
    errors: dict[str, str] = {}

    model = tiny_bert()
    applied = apply_plan(plan, model=model)  # 1. apply to the bare model
    ddp = DistributedDataParallel(model)  # 2. wrap
    optimizer = torch.optim.AdamW(ddp.parameters(), lr=1e-2, weight_decay=0.0)

    # Wrong orders, while wrapped: each raises before changing anything.
    other = DistributedDataParallel(tiny_bert(seed=5))
    for name, call in [
        ("apply_wrapper", partial(apply_plan, plan, model=other)),
        ("apply_inner", partial(apply_plan, plan, model=other.module)),
        ("revert_wrapped", partial(revert_plan, applied)),
    ]:
        try:
            call()
        except VocabError as exc:
            errors[name] = str(exc)
    del other, call

    train(ddp, optimizer, [remap(plan, b) for b in batches], rank, world)  # 3. train
    model = ddp.module  # 4. unwrap
    del ddp
    revert_plan(applied, optimizer=optimizer)  # 5. revert
    errors["active_after_revert"] = str(applied.active)
    torch.save(model.state_dict(), out / f"rank{rank}.pt")
    write_json(out / f"rank{rank}.json", errors)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
