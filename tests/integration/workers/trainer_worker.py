"""Trainer worker (run by torchrun): apply before the Trainer wraps the model, revert after.

``... trainer_worker.py OUT_DIR`` writes ``OUT_DIR/rank{r}.pt`` (the reverted state dict) and
``OUT_DIR/rank{r}.json`` (the callback's refusal under DDP).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


def _args(out: Path) -> Any:
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(out / "trainer"),
        per_device_train_batch_size=2,
        max_steps=3,
        learning_rate=1e-2,
        weight_decay=0.0,
        lr_scheduler_type="constant",
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        seed=0,
    )


def main(out: Path) -> None:
    import torch
    from _integration import global_batches, plan_for, remap, tiny_bert, write_json
    from transformers import Trainer

    from vocab_adapters import apply_plan, revert_plan
    from vocab_adapters.integrations.trainer import VocabReductionCallback
    from vocabcore import VocabError

    batches = global_batches()
    plan = plan_for(batches)
    rows = [row for b in batches for row in remap(plan, b)]
    dataset = [{"input_ids": row, "labels": row} for row in rows]

    model = tiny_bert()
    applied = apply_plan(plan, model=model)  # 1. apply before the Trainer exists
    trainer = Trainer(model=model, args=_args(out), train_dataset=dataset)
    trainer.train()  # 2.-3. the Trainer wraps (DDP) and trains the reduced model
    trainer.accelerator.free_memory()  # 4. drop the DDP wrapper
    trainer.model_wrapped = trainer.model
    revert_plan(applied, optimizer=trainer.optimizer.optimizer)  # 5. revert
    rank = trainer.args.process_index
    torch.save(model.state_dict(), out / f"rank{rank}.pt")

    # The callback applies at on_train_begin, after the Trainer has wrapped the model: refused.
    errors: dict[str, str] = {}
    trainer = Trainer(
        model=tiny_bert(),
        args=_args(out),
        train_dataset=[{"input_ids": b, "labels": b} for b in (r for x in batches for r in x)],
        callbacks=[VocabReductionCallback(plan)],
    )
    try:
        trainer.train()
    except VocabError as exc:
        errors["callback"] = str(exc)
    write_json(out / f"rank{rank}.json", errors)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
