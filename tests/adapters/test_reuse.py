"""Plans reused across processes, and resuming from reduced checkpoints."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoTokenizer

from fixtures.tiny_bert import tiny_bert as make_tiny_bert
from vocab_adapters import apply_plan, plan_from_texts, revert_plan
from vocab_adapters.demo import demo_corpus
from vocabcore import PlanMismatchError, VocabPlan

TEXTS = demo_corpus(60)


def tiny_bert(vocab_size: int) -> Any:
    # no dropout: runs interrupted or not see the same randomness
    return make_tiny_bert(
        vocab_size,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )


def test_plan_built_in_another_process_applies_here(minilm_dir: str, tmp_path: Path) -> None:
    plan_path = tmp_path / "plan.json"
    script = textwrap.dedent(
        f"""
        from transformers import AutoTokenizer
        from vocab_adapters import plan_from_texts
        from vocab_adapters.demo import demo_corpus
        tok = AutoTokenizer.from_pretrained({minilm_dir!r})
        plan_from_texts(tok, demo_corpus(60)).save({str(plan_path)!r})
        """
    )
    subprocess.run(
        [sys.executable, "-c", script], check=True, env={"HF_HUB_OFFLINE": "1", "PATH": ""}
    )
    plan = VocabPlan.load(plan_path)
    tok = AutoTokenizer.from_pretrained(minilm_dir)
    assert plan == plan_from_texts(tok, TEXTS)
    model = tiny_bert(len(tok))
    revert_plan(apply_plan(plan, model=model, tokenizer=tok))

    # a tokenizer with another vocabulary is refused, even at the same size
    other = AutoTokenizer.from_pretrained(minilm_dir)
    vocab = other.get_vocab()
    other.backend_tokenizer.add_tokens(["zzzz-new-token"])
    assert other.get_vocab() != vocab
    with pytest.raises(PlanMismatchError):
        apply_plan(plan, tokenizer=other)


def _steps(model: Any, tok: Any, optimizer: Any, start: int, count: int) -> None:
    for step in range(start, start + count):
        batch = tok(
            TEXTS[step * 4 : step * 4 + 4],
            truncation=True,
            max_length=24,
            padding=True,
            return_tensors="pt",
        )
        model(**batch, labels=batch["input_ids"]).loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def test_resume_from_a_reduced_checkpoint_equals_an_uninterrupted_run(
    minilm_dir: str, tmp_path: Path
) -> None:
    tok = AutoTokenizer.from_pretrained(minilm_dir)
    plan = plan_from_texts(tok, TEXTS)

    # uninterrupted: 4 steps reduced, then revert
    model = tiny_bert(len(tok))
    applied = apply_plan(plan, model=model, tokenizer=tok)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    _steps(model, tok, optimizer, 0, 4)
    revert_plan(applied, optimizer=optimizer)
    expected = {k: v.clone() for k, v in model.state_dict().items()}

    # interrupted after 2 steps: reduced checkpoint + plan, then a fresh process would resume
    model = tiny_bert(len(tok))
    applied = apply_plan(plan, model=model, tokenizer=tok)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    _steps(model, tok, optimizer, 0, 2)
    torch.save(
        {"model": model.state_dict(), "optimizer": optimizer.state_dict()}, tmp_path / "ckpt.pt"
    )
    plan.save(tmp_path / "ckpt.plan.json")
    revert_plan(applied, optimizer=optimizer)

    resumed_tok = AutoTokenizer.from_pretrained(minilm_dir)
    resumed = tiny_bert(len(resumed_tok))
    saved_plan = VocabPlan.load(tmp_path / "ckpt.plan.json")
    applied = apply_plan(saved_plan, model=resumed, tokenizer=resumed_tok)
    checkpoint = torch.load(tmp_path / "ckpt.pt")
    resumed.load_state_dict(checkpoint["model"])
    optimizer = torch.optim.Adam(resumed.parameters(), lr=1e-2)
    optimizer.load_state_dict(checkpoint["optimizer"])
    _steps(resumed, resumed_tok, optimizer, 2, 2)
    revert_plan(applied, optimizer=optimizer)
    got = resumed.state_dict()
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=0, msg=key)
