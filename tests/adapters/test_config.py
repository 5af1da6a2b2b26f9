"""Config adapter: vocab_size and special ids remapped, restored exactly, refused when dropped."""

from __future__ import annotations

import copy
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from transformers import BertConfig, EncoderDecoderConfig

from fixtures.models import TINY_MODEL_NAMES, remap, sample_batch, special_ids
from vocab_adapters.stages import config as config_adapter
from vocab_adapters.stages import embeddings
from vocabcore import PlanMismatchError, VocabError, VocabPlan


def dicts(model: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
    generation = getattr(model, "generation_config", None)
    return copy.deepcopy(model.config.to_dict()), (
        None if generation is None else copy.deepcopy(generation.to_dict())
    )


@pytest.mark.parametrize("name", TINY_MODEL_NAMES)
def test_round_trip_and_remap(make_tiny_model: Any, name: str) -> None:
    tiny = make_tiny_model(name)
    model = tiny.model
    _, plan = sample_batch(tiny, seed=1)
    before = dicts(model)
    applied = config_adapter.apply(plan, model)
    assert model.config.vocab_size == plan.new_size
    for owner in (model.config, getattr(model, "generation_config", None)):
        if owner is None:
            continue
        for key in ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id"):
            old = before[0 if owner is model.config else 1].get(key)  # type: ignore[union-attr]
            if isinstance(old, int) and 0 <= old < tiny.vocab_size:
                assert getattr(owner, key) == plan.old_to_new(old), key
    applied.revert()
    assert dicts(model) == before


@pytest.mark.parametrize("name", ["bert-mlm", "gpt2-lm", "bart-cg", "t5-v1_0"])
def test_loss_works_while_reduced(make_tiny_model: Any, name: str) -> None:
    """Models reshape their logits by config.vocab_size for the loss."""
    tiny = make_tiny_model(name)
    ids, plan = sample_batch(tiny, seed=2)
    applied_embeddings = embeddings.apply(plan, tiny.model)
    applied_config = config_adapter.apply(plan, tiny.model)
    new_ids = remap(plan, ids)
    loss = tiny.model(**tiny.inputs(new_ids), labels=new_ids).loss
    assert torch.isfinite(loss)
    applied_config.revert()
    applied_embeddings.revert()


def test_dropped_special_id_is_refused(make_tiny_model: Any) -> None:
    tiny = make_tiny_model("bart-cg")
    model = tiny.model
    eos = model.config.eos_token_id
    plan = VocabPlan(tiny.vocab_size, [i for i in range(tiny.vocab_size) if i != eos])
    before = dicts(model)
    with pytest.raises(VocabError, match=rf"eos_token_id is {eos}, an id the plan drops.*keep="):
        config_adapter.prepare(plan, model)
    assert dicts(model) == before


def test_t5_padded_rows(make_tiny_model: Any) -> None:
    tiny = make_tiny_model("t5-v1_0")
    assert tiny.model.config.vocab_size > tiny.vocab_size
    plan = VocabPlan.identity(tiny.vocab_size)
    applied = config_adapter.apply(plan, tiny.model)
    assert tiny.model.config.vocab_size == tiny.vocab_size
    applied.revert()
    assert tiny.model.config.vocab_size == 224


def test_special_id_in_padded_rows_is_dropped(make_tiny_model: Any) -> None:
    tiny = make_tiny_model("t5-v1_0")
    tiny.model.config.pad_token_id = 220  # a row beyond the tokenizer
    with pytest.raises(VocabError, match="pad_token_id is 220, an id the plan drops"):
        config_adapter.prepare(VocabPlan.identity(tiny.vocab_size), tiny.model)


def test_ids_outside_the_model_are_left_alone() -> None:
    config = SimpleNamespace(vocab_size=10, bos_token_id=50256, eos_token_id=-1, pad_token_id=3)
    applied = config_adapter.apply(VocabPlan(10, [0, 3, 5]), config)
    assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (50256, -1, 1)
    applied.revert()
    assert config.pad_token_id == 3


def test_plain_and_nested_configs() -> None:
    text = SimpleNamespace(vocab_size=20, pad_token_id=4)
    vision = SimpleNamespace(vocab_size=8, hidden=3)  # a codebook, smaller than the vocabulary
    config = SimpleNamespace(
        text_config=text,
        vision_config=vision,
        image_token_id=19,
        eos_token_id=[2, 19],
        suppress_tokens=[1, 2, 5],
        bad_words_ids=[[1, 2], [19]],
        forced_decoder_ids=[[1, 19]],
    )
    before = copy.deepcopy(vars(config)), copy.deepcopy(vars(text)), copy.deepcopy(vars(vision))
    plan = VocabPlan(20, [0, 2, 4, 19])
    prepared = config_adapter.prepare(plan, config)
    assert prepared.changes["config.text_config.vocab_size"] == (20, 4)
    applied = prepared.commit()
    assert (text.vocab_size, text.pad_token_id, vision.vocab_size) == (4, 2, 8)
    assert config.image_token_id == 3 and config.eos_token_id == [1, 3]
    assert config.suppress_tokens == [1] and config.bad_words_ids == [[3]]
    assert config.forced_decoder_ids == [[1, 3]]
    applied.revert()
    assert (vars(config), vars(text), vars(vision)) == before


def test_encoder_decoder_config() -> None:
    config = EncoderDecoderConfig.from_encoder_decoder_configs(
        BertConfig(vocab_size=30, pad_token_id=0), BertConfig(vocab_size=30, pad_token_id=0)
    )
    before = copy.deepcopy(config.to_dict())
    applied = config_adapter.apply(VocabPlan(30, [0, 5, 6]), config)
    assert config.encoder.vocab_size == config.decoder.vocab_size == 3
    applied.revert()
    assert config.to_dict() == before


def test_size_mismatches() -> None:
    with pytest.raises(PlanMismatchError, match="at least the plan's vocab_size 30"):
        config_adapter.prepare(VocabPlan.identity(30), SimpleNamespace(vocab_size=20))
    with pytest.raises(VocabError, match="config object"):
        config_adapter.prepare(VocabPlan.identity(3), 5)


def test_changed_while_reduced_refuses_revert(make_tiny_model: Any) -> None:
    tiny = make_tiny_model("gpt2-lm")
    _, plan = sample_batch(tiny, seed=3)
    applied = config_adapter.apply(plan, tiny.model)
    tiny.model.config.vocab_size = 5
    with pytest.raises(VocabError, match=r"config.vocab_size was changed.*set it back"):
        applied.revert()
    tiny.model.config.vocab_size = plan.new_size
    applied.revert()
    with pytest.raises(VocabError, match="already reverted"):
        applied.revert()


def test_ids_set_again_while_reduced_come_back_in_full_ids() -> None:
    # A trainer rewrites an id field the plan remapped (TRL writes eos as a list, pad anew).
    config = SimpleNamespace(vocab_size=10, eos_token_id=7, pad_token_id=2, bos_token_id=0)
    plan = VocabPlan(10, (0, 2, 5, 7, 9))
    applied = config_adapter.apply(plan, config)
    assert (config.eos_token_id, config.pad_token_id) == (3, 1)
    config.eos_token_id = [3]  # same id, as a list
    config.pad_token_id = 2  # another reduced id: old id 5
    applied.revert()
    assert config.eos_token_id == [7] and config.pad_token_id == 5
    assert config.vocab_size == 10 and config.bos_token_id == 0


def test_an_id_set_beyond_the_reduced_vocabulary_refuses_revert() -> None:
    config = SimpleNamespace(vocab_size=10, eos_token_id=7)
    applied = config_adapter.apply(VocabPlan(10, (0, 7)), config)
    config.eos_token_id = 4  # no such reduced id
    with pytest.raises(VocabError, match="has no full id"):
        applied.revert()
    config.eos_token_id = "oops"
    with pytest.raises(VocabError, match="set it to a reduced id"):
        applied.revert()
    config.eos_token_id = 1
    applied.revert()
    assert config.eos_token_id == 7


def test_rollback(make_tiny_model: Any) -> None:
    tiny = make_tiny_model("bart-cg")
    before = dicts(tiny.model)
    applied = config_adapter.prepare(sample_batch(tiny, seed=4)[1], tiny.model).commit()
    applied.rollback()
    assert dicts(tiny.model) == before


def test_special_ids_helper_finds_them(make_tiny_model: Any) -> None:
    assert special_ids(make_tiny_model("bart-cg")) == [0, 1, 2]
