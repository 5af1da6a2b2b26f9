"""VocabReductionCallback inside a real transformers Trainer run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import (
    AutoTokenizer,
    BertForMaskedLM,
    DataCollatorForLanguageModeling,
    Trainer,
    TrainingArguments,
)

from fixtures.tiny_bert import minilm_path, tiny_bert
from vocab_adapters import plan_from_texts
from vocab_adapters.demo import demo_corpus
from vocab_adapters.integrations.trainer import VocabReductionCallback

TEXTS = demo_corpus(64)


@pytest.fixture
def setup() -> tuple[Any, Any]:
    tok = AutoTokenizer.from_pretrained(minilm_path())
    return tok, tiny_bert(len(tok), max_position_embeddings=64)


def test_trainer_recipe_trains_reduced_and_saves_full_checkpoints(
    setup: tuple[Any, Any], tmp_path: Path
) -> None:
    tok, model = setup
    plan = plan_from_texts(tok, TEXTS)
    features = [dict(tok(t, truncation=True, max_length=32)) for t in TEXTS]  # full-vocab ids
    original = model.get_input_embeddings().weight.detach().clone()
    callback = VocabReductionCallback(plan, tok)
    seen_sizes: list[int] = []

    base = DataCollatorForLanguageModeling(tok, mlm_probability=0.15)
    wrapped = callback.wrap_collator(base)

    def collate(batch: Any) -> Any:
        out = wrapped(batch)
        seen_sizes.append(model.get_input_embeddings().num_embeddings)
        assert int(out["input_ids"].max()) < model.get_input_embeddings().num_embeddings
        return out

    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        max_steps=6,
        save_steps=3,
        logging_steps=3,
        learning_rate=1e-2,
        report_to=[],
        use_cpu=True,
        dataloader_num_workers=0,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=features,
        data_collator=collate,
        callbacks=[callback],
    )
    trainer.train()
    assert set(seen_sizes) == {plan.new_size}
    assert not callback.active
    weight = model.get_input_embeddings().weight
    assert weight.shape[0] == plan.vocab_size == model.config.vocab_size == len(tok)
    dropped = torch.ones(plan.vocab_size, dtype=torch.bool)
    dropped[torch.tensor(plan.kept)] = False
    assert torch.equal(weight[dropped].cpu(), original[dropped])
    assert not torch.equal(weight[~dropped].cpu(), original[~dropped])
    checkpoint = BertForMaskedLM.from_pretrained(str(tmp_path / "checkpoint-3"))
    assert checkpoint.config.vocab_size == plan.vocab_size
    assert checkpoint.get_input_embeddings().weight.shape[0] == plan.vocab_size
