"""VocabReductionCallback inside a real transformers Trainer run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
from transformers import (
    AutoTokenizer,
    BertForMaskedLM,
    DataCollatorForLanguageModeling,
    Trainer,
    TrainingArguments,
    trainer_utils,
)

from fixtures.tiny_bert import minilm_path, tiny_bert
from vocab_adapters import VocabReductionCallback, plan_from_texts
from vocab_adapters.demo import demo_corpus
from vocabcore import VocabError

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


# -- every save strategy writes full checkpoints ------------------------------------------------

HAS_BEST = hasattr(trainer_utils, "SaveStrategy") and any(
    s.value == "best" for s in trainer_utils.SaveStrategy
)


def _args(tmp_path: Path, **overrides: Any) -> TrainingArguments:
    fields: dict[str, Any] = {
        "output_dir": str(tmp_path),
        "per_device_train_batch_size": 16,
        "per_device_eval_batch_size": 16,
        "learning_rate": 1e-2,
        "report_to": [],
        "use_cpu": True,
        "dataloader_num_workers": 0,
        "logging_steps": 1,
        "seed": 0,
        "data_seed": 0,
    }
    fields.update(overrides)
    return TrainingArguments(**fields)


def _run(
    tmp_path: Path,
    plan: Any = None,
    *,
    callback_options: dict[str, Any] | None = None,
    resume: str | None = None,
    **overrides: Any,
) -> tuple[Any, Any, Any, VocabReductionCallback, Any]:
    """A tiny BERT trained by a real Trainer with the callback; returns what the test needs."""
    tok = AutoTokenizer.from_pretrained(minilm_path())
    model = tiny_bert(len(tok), max_position_embeddings=64)
    plan = plan if plan is not None else plan_from_texts(tok, TEXTS)
    features = [dict(tok(t, truncation=True, max_length=32)) for t in TEXTS]
    callback = VocabReductionCallback(plan, tok, **(callback_options or {}))
    torch.manual_seed(0)
    trainer = Trainer(
        model=model,
        args=_args(tmp_path, **overrides),
        train_dataset=features,
        eval_dataset=features[:16],
        data_collator=callback.wrap_collator(DataCollatorForLanguageModeling(tok)),
        processing_class=tok,
        callbacks=[callback],
    )
    callback.train(trainer, resume_from_checkpoint=resume)
    return tok, model, plan, callback, trainer


def _checkpoints(path: Path) -> list[Path]:
    found = [p for p in path.iterdir() if p.name.startswith("checkpoint-")]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def _assert_full_checkpoint(directory: Path, size: int) -> BertForMaskedLM:
    model = BertForMaskedLM.from_pretrained(str(directory))
    assert model.config.vocab_size == size, directory.name
    assert model.get_input_embeddings().weight.shape[0] == size, directory.name
    assert model.cls.predictions.bias.shape[0] == size, directory.name
    assert len(AutoTokenizer.from_pretrained(str(directory))) == size, directory.name
    optimizer = torch.load(directory / "optimizer.pt", weights_only=True)
    shapes = [tuple(s["exp_avg"].shape) for s in optimizer["state"].values() if "exp_avg" in s]
    assert (size, 16) in shapes and (size,) in shapes, directory.name  # embedding and bias
    assert all(shape[0] != 0 and shape[:1] != (size - 1,) for shape in shapes)
    return model


@pytest.mark.parametrize(
    "strategy",
    [
        pytest.param({"save_strategy": "steps", "save_steps": 2, "max_steps": 6}, id="steps"),
        pytest.param({"save_strategy": "epoch", "num_train_epochs": 2}, id="epoch"),
        pytest.param(
            {
                "save_strategy": "epoch",
                "eval_strategy": "epoch",
                "num_train_epochs": 3,
                "load_best_model_at_end": True,
                "metric_for_best_model": "loss",
                "greater_is_better": False,
            },
            id="epoch-load-best",
        ),
        pytest.param(
            {
                "save_strategy": "best",
                "eval_strategy": "steps",
                "eval_steps": 2,
                "max_steps": 8,
                "metric_for_best_model": "loss",
                "greater_is_better": False,
            },
            id="best",
            marks=pytest.mark.skipif(not HAS_BEST, reason="save_strategy='best' is 4.47+"),
        ),
        pytest.param(
            {
                "save_strategy": "best",
                "eval_strategy": "steps",
                "eval_steps": 2,
                "max_steps": 7,
                "metric_for_best_model": "loss",
                "greater_is_better": False,
                "load_best_model_at_end": True,
            },
            id="best-load-best",
            marks=pytest.mark.skipif(not HAS_BEST, reason="save_strategy='best' is 4.47+"),
        ),
    ],
)
def test_every_checkpoint_is_full(tmp_path: Path, strategy: dict[str, Any]) -> None:
    tok, model, plan, callback, trainer = _run(tmp_path / "out", **strategy)
    size = plan.vocab_size
    assert not callback.active and len(tok) == size
    assert model.get_input_embeddings().weight.shape[0] == size == model.config.vocab_size
    assert "save_pretrained" not in vars(model)  # the save hook is gone after training
    checkpoints = _checkpoints(tmp_path / "out")
    assert checkpoints
    for directory in checkpoints:
        _assert_full_checkpoint(directory, size)
    if strategy.get("load_best_model_at_end"):
        best = trainer.state.best_model_checkpoint
        if best is None:  # transformers 4.x records no best checkpoint for save_strategy="best"
            assert strategy["save_strategy"] == "best" and transformers.__version__ < "5"
            return
        loaded = BertForMaskedLM.from_pretrained(best)
        for key, value in loaded.state_dict().items():
            assert torch.equal(model.state_dict()[key], value), key
    # the final save after training
    trainer.save_model(str(tmp_path / "final"))
    final = _assert_full_checkpoint_model_only(tmp_path / "final", size)
    assert torch.equal(final.get_input_embeddings().weight, model.get_input_embeddings().weight)


def _assert_full_checkpoint_model_only(directory: Path, size: int) -> BertForMaskedLM:
    model = BertForMaskedLM.from_pretrained(str(directory))
    assert model.config.vocab_size == size
    assert model.get_input_embeddings().weight.shape[0] == size
    assert len(AutoTokenizer.from_pretrained(str(directory))) == size
    return model


def test_training_goes_on_reduced_between_checkpoints(tmp_path: Path) -> None:
    tok = AutoTokenizer.from_pretrained(minilm_path())
    model = tiny_bert(len(tok), max_position_embeddings=64)
    plan = plan_from_texts(tok, TEXTS)
    features = [dict(tok(t, truncation=True, max_length=32)) for t in TEXTS]
    callback = VocabReductionCallback(plan, tok)
    sizes: list[int] = []
    wrapped = callback.wrap_collator(DataCollatorForLanguageModeling(tok))

    def collate(batch: Any) -> Any:
        sizes.append(model.get_input_embeddings().num_embeddings)
        return wrapped(batch)

    trainer = Trainer(
        model=model,
        args=_args(tmp_path, save_strategy="epoch", num_train_epochs=3),
        train_dataset=features,
        data_collator=collate,
        callbacks=[callback],
    )
    trainer.train()
    assert sizes and set(sizes) == {plan.new_size}  # every batch met the reduced model
    assert not callback.active


def test_resume_from_a_full_checkpoint(tmp_path: Path) -> None:
    _, _, plan, _, _ = _run(tmp_path, save_strategy="epoch", num_train_epochs=2)
    first = _checkpoints(tmp_path)[0]
    # transformers 4.46 loads it with torch.load's old defaults, which torch >= 2.6 refuses;
    # the RNG state is not what this test is about
    (first / "rng_state.pth").unlink(missing_ok=True)
    _, model, _, callback, trainer = _run(
        tmp_path, plan, resume=str(first), save_strategy="epoch", num_train_epochs=3
    )
    assert trainer.state.global_step > int(first.name.split("-")[1])
    assert not callback.active
    assert model.get_input_embeddings().weight.shape[0] == plan.vocab_size
    for directory in _checkpoints(tmp_path):
        _assert_full_checkpoint(directory, plan.vocab_size)


@pytest.mark.parametrize("normaliser", ["exact", "sampled:1/4"])
def test_shifted_softmax_trains_the_shift_and_checkpoints_fold_it(
    normaliser: str, tmp_path: Path
) -> None:
    tok = AutoTokenizer.from_pretrained(minilm_path())
    original = tiny_bert(len(tok), max_position_embeddings=64).get_input_embeddings().weight
    _, model, plan, _, _ = _run(
        tmp_path,
        callback_options={"softmax": "shifted", "normaliser": normaliser},
        save_strategy="epoch",
        num_train_epochs=2,
    )
    dropped = torch.ones(plan.vocab_size, dtype=torch.bool)
    dropped[torch.tensor(plan.kept)] = False
    checkpoints = _checkpoints(tmp_path)
    assert len(checkpoints) == 2
    previous = original.detach()
    for directory in checkpoints:
        weight = BertForMaskedLM.from_pretrained(str(directory)).get_input_embeddings().weight
        # every dropped row (tied: input rows are the output rows) moved by one trained vector;
        # in the second interval too: the shift went on training after the first checkpoint
        delta = (weight.detach() - previous)[dropped]
        assert float(delta.abs().max()) > 1e-4
        torch.testing.assert_close(delta, delta[:1].expand_as(delta), rtol=0, atol=1e-6)
        previous = weight.detach()
    assert torch.equal(model.get_input_embeddings().weight.detach(), previous)  # last = final


def test_keep_added_checkpoints_and_end_state(tmp_path: Path) -> None:
    tok = AutoTokenizer.from_pretrained(minilm_path())
    plan = plan_from_texts(tok, TEXTS).adding(["vocabcore", "checkpointing"])
    words = [w for w in plan.added if len(tok.tokenize(w)) > 1]
    assert words, "the added words must split into pieces"
    tok, model, plan, _, _ = _run(
        tmp_path,
        plan,
        callback_options={"keep_added": True},
        save_strategy="epoch",
        num_train_epochs=2,
    )
    size = plan.vocab_size + len(plan.added)
    assert len(tok) == size
    assert model.get_input_embeddings().weight.shape[0] == size == model.config.vocab_size
    assert tok.convert_tokens_to_ids(list(plan.added)) == list(range(plan.vocab_size, size))
    for directory in _checkpoints(tmp_path):
        saved = BertForMaskedLM.from_pretrained(str(directory))
        assert saved.get_input_embeddings().weight.shape[0] == size
        assert len(AutoTokenizer.from_pretrained(str(directory))) == size
    last = BertForMaskedLM.from_pretrained(str(_checkpoints(tmp_path)[-1]))
    assert torch.equal(last.get_input_embeddings().weight, model.get_input_embeddings().weight)


def test_full_checkpoints_false_writes_reduced_checkpoints(tmp_path: Path) -> None:
    _, model, plan, callback, _ = _run(
        tmp_path,
        callback_options={"full_checkpoints": False},
        save_strategy="epoch",
        num_train_epochs=2,
    )
    for directory in _checkpoints(tmp_path):
        saved = BertForMaskedLM.from_pretrained(str(directory))
        assert saved.config.vocab_size == plan.new_size
    assert model.config.vocab_size == plan.vocab_size and not callback.active


def test_bad_options_are_refused() -> None:
    tok = AutoTokenizer.from_pretrained(minilm_path())
    plan = plan_from_texts(tok, TEXTS[:4])
    with pytest.raises(VocabError, match="'softmax'"):
        VocabReductionCallback(plan, tok, softmax="everything")
    with pytest.raises(VocabError, match="'offload'"):
        VocabReductionCallback(plan, tok, offload="disk")
    with pytest.raises(VocabError, match="'keep_added'"):
        VocabReductionCallback(plan, tok, keep_added="yes")  # type: ignore[arg-type]
    with pytest.raises(VocabError, match="'plan'"):
        VocabReductionCallback(json.loads("{}"), tok)  # type: ignore[arg-type]


def test_loading_a_full_state_dict_into_the_reduced_model_restores_it_first() -> None:
    # What load_best_model_at_end does when training ends reduced (no save at the last step).
    tok = AutoTokenizer.from_pretrained(minilm_path())
    model = tiny_bert(len(tok), max_position_embeddings=64)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    full_state = {k: v.clone() + 1 for k, v in model.state_dict().items()}
    plan = plan_from_texts(tok, TEXTS)
    callback = VocabReductionCallback(plan, tok)
    args = _args(Path("unused"))
    callback.on_train_begin(args, None, None, model=model, optimizer=optimizer)
    assert callback.active and model.config.vocab_size == plan.new_size
    model.load_state_dict(full_state)
    assert not callback.active and len(tok) == plan.vocab_size
    for key, value in model.state_dict().items():
        assert torch.equal(value, full_state[key]), key
    assert optimizer.param_groups[0]["params"][0] is model.get_input_embeddings().weight
    callback.on_train_end(args, None, None, model=model, optimizer=optimizer)
    assert "save_pretrained" not in vars(model)
