"""PEFT/LoRA beside a reduced vocabulary: frozen embedding, ``modules_to_save``, embedding LoRA.

The model is an encoder with a classification head (no vocabulary-sized output), so the
loss doesn't depend on the vocabulary's size and a reduced run must equal a full one.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from _integration import assert_same_state, global_batches, plan_for, remap, tiny_bert

from vocab_adapters import apply_plan, revert_plan
from vocab_adapters.stages.embeddings import VocabSizedTensorWarning
from vocabcore import VocabError

peft = pytest.importorskip("peft")

LABELS = torch.tensor([0, 1, 1, 0])
EMBEDDING = "bert.embeddings.word_embeddings.weight"


def classifier() -> Any:
    from transformers import BertForSequenceClassification

    config = tiny_bert().config
    torch.manual_seed(0)
    return BertForSequenceClassification(config)


def lora(model: Any, **config: Any) -> Any:
    config.setdefault("target_modules", ["query", "value"])
    torch.manual_seed(1)
    return peft.get_peft_model(model, peft.LoraConfig(r=4, **config))


def train(model: Any, ids: list[torch.Tensor]) -> None:
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2, weight_decay=0.0)
    for batch in ids:
        model(input_ids=batch, labels=LABELS).loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def run(reduce: bool, checkpointing: bool = False, **config: Any) -> dict[str, torch.Tensor]:
    """LoRA-train 3 steps (reduced or not), then merge and unload."""
    batches = global_batches()
    plan = plan_for(batches)
    model = lora(classifier(), **config)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
        model.enable_input_require_grads()
    applied = None
    if reduce and "modules_to_save" in config:
        # PEFT's untouched original_module stays full-size (it isn't used while the adapter
        # is active), and is named in a warning
        with pytest.warns(VocabSizedTensorWarning, match="original_module"):
            applied = apply_plan(plan, model=model)
    elif reduce:
        applied = apply_plan(plan, model=model)  # after get_peft_model
    train(model, [remap(plan, b) for b in batches] if reduce else batches)
    if applied is not None:
        revert_plan(applied)
    return {k: v.detach().clone() for k, v in model.merge_and_unload().state_dict().items()}


def test_frozen_embedding_with_checkpointing_equals_full_run() -> None:
    want = run(reduce=False, checkpointing=True)
    got = run(reduce=True, checkpointing=True)
    assert_same_state(got, want)
    assert torch.equal(got[EMBEDDING], classifier().state_dict()[EMBEDDING])  # frozen
    query = "bert.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(got[query], classifier().state_dict()[query])  # LoRA trained


def test_modules_to_save_embedding_equals_full_run() -> None:
    want = run(reduce=False, modules_to_save=["word_embeddings"])
    got = run(reduce=True, modules_to_save=["word_embeddings"])
    assert_same_state(got, want)
    plan = plan_for(global_batches())
    initial = classifier().state_dict()[EMBEDDING]
    dropped = [i for i in range(plan.vocab_size) if plan.old_to_new(i) is None]
    assert torch.equal(got[EMBEDDING][dropped], initial[dropped])
    assert not torch.equal(got[EMBEDDING][list(plan.kept)], initial[list(plan.kept)])


def test_modules_to_save_copied_after_apply_is_refused_at_revert() -> None:
    plan = plan_for(global_batches())
    model = classifier()
    applied = apply_plan(plan, model=model)  # wrong order: before get_peft_model
    lora(model, modules_to_save=["word_embeddings"])
    with pytest.raises(VocabError, match="apply the plan after get_peft_model"):
        revert_plan(applied)
    assert applied.active


def test_embedding_lora() -> None:
    plan = plan_for(global_batches())
    targets = ["query", "value", "word_embeddings"]
    with pytest.raises(VocabError, match="LoRA layer on the embedding"):
        apply_plan(plan, model=lora(classifier(), target_modules=targets))

    # Applied first, LoRA on the reduced embedding trains; merge, then revert.
    model = classifier()
    applied = apply_plan(plan, model=model)
    peft_model = peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=targets))
    train(peft_model, [remap(plan, b) for b in global_batches()])
    with pytest.raises(VocabError, match="merge it before reverting"):
        revert_plan(applied)
    merged = peft_model.merge_and_unload()
    revert_plan(applied)
    got, initial = merged.state_dict()[EMBEDDING], classifier().state_dict()[EMBEDDING]
    dropped = [i for i in range(plan.vocab_size) if plan.old_to_new(i) is None]
    assert got.shape == initial.shape
    assert torch.equal(got[dropped], initial[dropped])
    assert not torch.equal(got[list(plan.kept)], initial[list(plan.kept)])
