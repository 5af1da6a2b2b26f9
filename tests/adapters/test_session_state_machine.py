"""A Hypothesis state machine over apply / train step / save plan / revert / failing block."""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from transformers import AutoTokenizer

from fixtures.tiny_bert import minilm_path, tiny_bert
from vocab_adapters import apply_plan, plan_from_texts, reduced_vocab, revert_plan
from vocab_adapters.demo import demo_corpus
from vocabcore import VocabError, VocabPlan

TEXTS = demo_corpus(60)


class Boom(Exception):
    """Raised by user code inside the block."""


class ApplyRevertMachine(RuleBasedStateMachine):
    """Drives one model, tokenizer and optimizer through apply/revert sequences."""

    @initialize()
    def setup(self) -> None:
        self.tok: Any = AutoTokenizer.from_pretrained(minilm_path())
        self.model: Any = tiny_bert(
            len(self.tok), hidden_size=8, intermediate_size=16, max_position_embeddings=64
        )
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9)
        self.plan = plan_from_texts(self.tok, TEXTS)
        self.original = self.model.get_input_embeddings().weight.detach().clone()
        self.full_ids = [self.tok(t)["input_ids"] for t in TEXTS[:5]]
        self.full_json = self.tok.backend_tokenizer.to_str()
        self.applied: Any = None
        self.dropped = torch.ones(self.plan.vocab_size, dtype=torch.bool)
        self.dropped[torch.tensor(self.plan.kept)] = False

    @property
    def active(self) -> bool:
        return self.applied is not None and self.applied.active

    @precondition(lambda self: not self.active)
    @rule()
    def apply(self) -> None:
        self.applied = apply_plan(
            self.plan, model=self.model, tokenizer=self.tok, optimizer=self.optimizer
        )

    @precondition(lambda self: self.active)
    @rule(start=st.integers(0, len(TEXTS) - 4))
    def train_step(self, start: int) -> None:
        batch = self.tok(
            TEXTS[start : start + 4],
            truncation=True,
            max_length=24,
            padding=True,
            return_tensors="pt",
        )
        loss = self.model(**batch, labels=batch["input_ids"]).loss
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()

    @precondition(lambda self: self.active)
    @rule()
    def save_and_reload_plan(self) -> None:
        assert VocabPlan.from_json(self.plan.to_json()) == self.plan

    @precondition(lambda self: self.active)
    @rule()
    def revert(self) -> None:
        revert_plan(self.applied)

    @precondition(lambda self: self.applied is not None and not self.active)
    @rule()
    def revert_again_fails(self) -> None:
        with pytest.raises(VocabError):
            revert_plan(self.applied)

    @precondition(lambda self: self.active)
    @rule()
    def apply_again_fails(self) -> None:
        with pytest.raises(VocabError):
            apply_plan(self.plan, model=self.model)

    @precondition(lambda self: not self.active)
    @rule()
    def error_inside_block(self) -> None:
        with (
            pytest.raises(Boom),
            reduced_vocab(self.model, self.tok, plan=self.plan, optimizer=self.optimizer),
        ):
            raise Boom

    @invariant()
    def shapes_follow_the_state(self) -> None:
        size = self.plan.new_size if self.active else self.plan.vocab_size
        embedding = self.model.get_input_embeddings()
        assert embedding.weight.shape[0] == size == self.model.config.vocab_size == len(self.tok)
        assert self.model.get_output_embeddings().weight is embedding.weight
        params = {id(p) for p in self.model.parameters()}
        assert all(id(p) in params for g in self.optimizer.param_groups for p in g["params"])

    @invariant()
    def tokenizer_follows_the_state(self) -> None:
        for text, full in zip(TEXTS[:5], self.full_ids, strict=True):
            ids = self.tok(text)["input_ids"]
            assert ids == (self.plan.remap(full) if self.active else full)
        if not self.active:
            assert self.tok.backend_tokenizer.to_str() == self.full_json

    @invariant()
    def dropped_rows_never_change(self) -> None:
        if not self.active:
            weight = self.model.get_input_embeddings().weight.detach()
            assert torch.equal(weight[self.dropped], self.original[self.dropped])

    def teardown(self) -> None:
        if self.active:
            revert_plan(self.applied)


_THOROUGH = os.environ.get("VOCABCORE_HYPOTHESIS_PROFILE") == "thorough"
ApplyRevertMachine.TestCase.settings = settings(
    max_examples=60 if _THOROUGH else 8, stateful_step_count=12 if _THOROUGH else 8, deadline=None
)
TestApplyRevertMachine = ApplyRevertMachine.TestCase
