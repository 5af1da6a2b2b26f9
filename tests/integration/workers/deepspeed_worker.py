"""DeepSpeed ZeRO-2 worker (run by torchrun, CPU accelerator): the same run twice.

The same engine config, torch optimizer, initial weights and batches, once on the full
vocabulary and once with the plan applied before ``deepspeed.initialize`` (then reverted).
The model is a classifier, so the loss doesn't depend on the vocabulary's size and the two
runs are the same computation.

``... deepspeed_worker.py OUT_DIR`` writes ``OUT_DIR/rank{r}.pt`` (``{"full": ..., "reduced":
...}``, the final state dicts) and ``OUT_DIR/rank{r}.json`` (the wrong orders' messages).
"""

from __future__ import annotations

import os
import sys
from functools import partial
from pathlib import Path
from typing import Any

CONFIG = {
    "train_batch_size": 4,
    "train_micro_batch_size_per_gpu": 2,
    "zero_optimization": {"stage": 2},
    "zero_allow_untested_optimizer": True,
}


def run(model: Any, batches: list[Any], labels: list[Any]) -> Any:
    """``deepspeed.initialize`` with ``CONFIG`` and AdamW, one step per global batch."""
    import deepspeed
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=CONFIG)
    rank, world = engine.global_rank, engine.world_size
    for ids, y in zip(batches, labels, strict=True):
        local = ids[rank::world].contiguous()
        engine.backward(engine(input_ids=local, labels=y[rank::world].contiguous()).loss)
        engine.step()
    return engine


def main(out: Path) -> None:
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed
    import torch
    from _integration import (
        global_batches,
        plan_for,
        remap,
        sequence_labels,
        tiny_bert,
        tiny_classifier,
        write_json,
    )

    from vocab_adapters import apply_plan, revert_plan
    from vocabcore import VocabError

    batches = global_batches()
    labels = [sequence_labels(b) for b in batches]
    plan = plan_for(batches)
    errors: dict[str, str] = {}

    full_engine = run(tiny_classifier(), batches, labels)  # the reference: no plan at all
    full = {k: v.detach().clone() for k, v in full_engine.module.state_dict().items()}

    model = tiny_classifier()
    applied = apply_plan(plan, model=model)  # 1. apply to the bare model
    engine = run(model, [remap(plan, b) for b in batches], labels)  # 2. initialize, 3. train
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
    torch.save({"full": full, "reduced": model.state_dict()}, out / f"rank{engine.global_rank}.pt")
    write_json(out / f"rank{engine.global_rank}.json", errors)
    torch.distributed.barrier()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
