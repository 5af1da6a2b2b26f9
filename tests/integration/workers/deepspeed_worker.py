"""DeepSpeed ZeRO-2 worker (run by torchrun, CPU accelerator): apply, initialize, train, revert.

``... deepspeed_worker.py OUT_DIR`` writes ``OUT_DIR/rank{r}.pt`` (the reverted state dict)
and ``OUT_DIR/rank{r}.json`` (the wrong orders' messages).
"""

from __future__ import annotations

import os
import sys
from functools import partial
from pathlib import Path

CONFIG = {
    "train_batch_size": 4,
    "train_micro_batch_size_per_gpu": 2,
    "zero_optimization": {"stage": 2},
    "zero_allow_untested_optimizer": True,
}


def main(out: Path) -> None:
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed
    import torch
    from _integration import global_batches, plan_for, remap, tiny_bert, write_json

    from vocab_adapters import apply_plan, revert_plan
    from vocabcore import VocabError

    batches = global_batches()
    plan = plan_for(batches)
    errors: dict[str, str] = {}

    model = tiny_bert()
    applied = apply_plan(plan, model=model)  # 1. apply to the bare model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=CONFIG)  # 2.
    rank, world = engine.global_rank, engine.world_size
    for ids in (remap(plan, b) for b in batches):  # 3. train
        local = ids[rank::world].contiguous()
        engine.backward(engine(input_ids=local, labels=local).loss)
        engine.step()
    other = tiny_bert(seed=5)
    _other_engine, *_ = deepspeed.initialize(  # keeps `other` wrapped
        model=other, optimizer=torch.optim.SGD(other.parameters(), lr=0.1), config=CONFIG
    )
    for name, call in [
        ("apply_engine", partial(apply_plan, plan, model=engine)),
        ("apply_inner", partial(apply_plan, plan, model=other)),
    ]:
        try:
            call()
        except VocabError as exc:
            errors[name] = str(exc)
    del call
    model = engine.module  # 4. unwrap (its hooks keep the engine alive: that's fine)
    revert_plan(applied)  # 5. revert
    torch.save(model.state_dict(), out / f"rank{rank}.pt")
    write_json(out / f"rank{rank}.json", errors)
    torch.distributed.barrier()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
