"""accelerate worker (run by torchrun): apply, ``Accelerator.prepare``, train, unwrap, revert.

``... accelerate_worker.py OUT_DIR`` writes ``OUT_DIR/rank{r}.pt`` (the reverted state dict).
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(out: Path) -> None:
    import torch
    from _integration import global_batches, plan_for, remap, tiny_bert, train
    from accelerate import Accelerator

    from vocab_adapters import apply_plan, revert_plan

    accelerator = Accelerator(cpu=True)
    rank, world = accelerator.process_index, accelerator.num_processes
    assert world == 2, accelerator.distributed_type
    batches = global_batches()
    plan = plan_for(batches)

    model = tiny_bert()
    applied = apply_plan(plan, model=model)  # 1. apply to the bare model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    wrapped, optimizer = accelerator.prepare(model, optimizer)  # 2. wrap (DDP)
    train(wrapped, optimizer, [remap(plan, b) for b in batches], rank, world)  # 3. train
    accelerator.wait_for_everyone()
    model = accelerator.unwrap_model(wrapped)  # 4. unwrap, and drop the wrapper
    del wrapped
    accelerator.free_memory()
    revert_plan(applied, optimizer=optimizer.optimizer)  # 5. revert
    torch.save(model.state_dict(), out / f"rank{rank}.pt")
    accelerator.wait_for_everyone()
    accelerator.end_training()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
