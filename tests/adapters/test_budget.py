"""Vocabulary budgets: plan_from_texts(..., max_size=N) on every tokenizer family."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from tokenizers import Tokenizer

from fixtures.fast_tokenizers import FAST_TOKENIZER_NAMES, copy_tokenizer
from fixtures.slow_tokenizers import SlowCase
from vocab_adapters import apply_plan, count_tokens, plan_from_counts, plan_from_texts, revert_plan
from vocab_adapters.planning.budget import budget_order, closure_pricer
from vocab_adapters.stages.fast_tokenizer import close_plan, fallback_ids
from vocab_adapters.tokenization.tokenizer_backend import tokenizer_document
from vocabcore import VocabError, VocabPlan

# Text in scripts the training corpus (English Python docs) barely has.
HELD_OUT = [
    "Ελληνικά: η γρήγορη καφέ αλεπού πηδά πάνω από τον τεμπέλη σκύλο.",
    "Русский текст: съешь же ещё этих мягких французских булок.",
    "مرحبا بالعالم، هذا نص عربي قصير.",
    "中文文本用于测试分词器。日本語のテキストも。",
    "emoji 🤗🚀 and ✓ marks, naïve café, ẞ",
    "def zebra_quaff(x):\n\treturn x ** 2  # unseen identifiers",
]
# Byte-level and byte-fallback models encode any text and decode it back exactly.
LOSSLESS = {"bytelevel_bpe", "gpt2_bpe", "byte_fallback_bpe"}
SLOW_CASES = [
    "xlmr_unigram",
    "xlmr_bpe",
    "deberta_unigram",
    "deberta_bpe",
    "wordpiece",
    "minilm",
    "byte_bpe",
]


def _needs(tok: Any) -> VocabPlan:
    """The smallest plan: what plan_from_texts keeps from texts that use no ordinary token."""
    return plan_from_texts(tok, [], keep=())


def _closure(tok: Any, old_id: int, size: int) -> set[int]:
    return set(close_plan(VocabPlan(size, (old_id,)), tok).kept) - {
        *close_plan(VocabPlan(size, ()), tok).kept
    } | {old_id}


@pytest.fixture(params=FAST_TOKENIZER_NAMES)
def family(request: pytest.FixtureRequest, trained_tokenizers: dict[str, Tokenizer]) -> Any:
    return request.param, copy_tokenizer(trained_tokenizers[request.param])


def test_budget_keeps_needs_and_most_frequent(family: Any, corpus_texts: list[str]) -> None:
    _, tok = family
    size = tok.get_vocab_size(with_added_tokens=True)
    full = plan_from_texts(tok, corpus_texts)
    needs = _needs(tok)
    budget = (needs.new_size + full.new_size) // 2
    plan = plan_from_texts(tok, corpus_texts, max_size=budget)

    assert plan.new_size <= budget < full.new_size
    assert set(needs.kept) <= set(plan.kept)
    assert close_plan(plan, tok) == plan  # merge-closed
    _, document = tokenizer_document(tok)
    assert fallback_ids(document) <= set(plan.kept)
    assert {int(i) for i in tok.get_added_tokens_decoder()} <= set(plan.kept)
    assert plan.metadata["max_size"] == budget

    # ordinary ids by count, highest first, ties by lower id; stop at the first that misses
    counts = np.asarray(count_tokens(tok, corpus_texts).counts)
    order = sorted(np.flatnonzero(counts).tolist(), key=lambda i: (-counts[i], i))
    first_missing = next(i for i in order if not plan.is_kept(i))
    assert all(plan.is_kept(i) for i in order[: order.index(first_missing)])
    assert plan.new_size + len(_closure(tok, first_missing, size) - set(plan.kept)) > budget

    # a larger budget keeps a superset; one that binds nothing gives the plan without it
    bigger = plan_from_texts(tok, corpus_texts, max_size=budget + 50)
    assert set(plan.kept) <= set(bigger.kept)
    assert plan_from_texts(tok, corpus_texts, max_size=full.new_size) == full
    assert plan_from_texts(tok, corpus_texts, max_size=10**6) == full
    # plan_from_counts agrees
    assert plan_from_counts(tok, count_tokens(tok, corpus_texts), max_size=budget) == plan


def test_budget_below_needs_names_the_number(family: Any, corpus_texts: list[str]) -> None:
    _, tok = family
    needs = _needs(tok).new_size
    with pytest.raises(VocabError, match=f"max_size >= {needs}"):
        plan_from_texts(tok, corpus_texts, max_size=needs - 1)
    assert plan_from_texts(tok, corpus_texts, max_size=needs).new_size == needs
    with pytest.raises(VocabError, match="'max_size' must be"):
        plan_from_texts(tok, corpus_texts, max_size=0)


def test_tight_budget_encodes_everything_in_range(family: Any, corpus_texts: list[str]) -> None:
    """Dropped words re-segment into kept pieces: in range, never raising, lossless where the
    tokenizer is."""
    name, tok = family
    needs = _needs(tok).new_size
    plan = plan_from_texts(tok, corpus_texts, max_size=needs + 60)
    texts = [*corpus_texts, *HELD_OUT]
    full_ids = [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]
    applied = apply_plan(plan, tokenizer=tok)
    try:
        reduced = [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]
        for text, ids in zip(texts, reduced, strict=True):
            assert all(0 <= i < plan.new_size for i in ids), (name, text)
            if name in LOSSLESS:
                assert tok.decode(ids, skip_special_tokens=False) == text, (name, text)
        # the budget binds: the texts use ids the plan drops
        assert any(not plan.is_kept(i) for ids in full_ids for i in ids)
    finally:
        revert_plan(applied)


def test_wordpiece_falls_back_to_shorter_pieces_then_unk(
    trained_tokenizers: dict[str, Tokenizer], corpus_texts: list[str]
) -> None:
    tok = copy_tokenizer(trained_tokenizers["wordpiece"])
    plan = plan_from_texts(tok, corpus_texts, max_size=300)
    vocab = tok.get_vocab()
    dropped = [t for t, i in vocab.items() if len(t) > 4 and t.isalpha() and not plan.is_kept(i)]
    applied = apply_plan(plan, tokenizer=tok)
    try:
        unk = tok.token_to_id("[UNK]")
        for word in dropped[:50]:
            enc = tok.encode(word, add_special_tokens=False)
            if enc.ids != [unk]:
                assert len(enc.ids) > 1  # shorter kept subwords
                assert "".join(t.removeprefix("##") for t in enc.tokens) == word
    finally:
        revert_plan(applied)


def test_bpe_drops_merges_of_dropped_tokens(
    trained_tokenizers: dict[str, Tokenizer], corpus_texts: list[str]
) -> None:
    tok = copy_tokenizer(trained_tokenizers["bytelevel_bpe"])
    plan = plan_from_texts(tok, corpus_texts, max_size=400)
    applied = apply_plan(plan, tokenizer=tok)
    try:
        _, document = tokenizer_document(tok)
        model = document["model"]
        vocab = model["vocab"]
        assert (
            len(vocab)
            + len(document["added_tokens"])
            - sum(a["content"] in vocab for a in document["added_tokens"])
            == plan.new_size
        )
        for merge in model["merges"]:
            left, right = merge if isinstance(merge, list) else merge.split(" ")
            assert left in vocab and right in vocab and left + right in vocab
    finally:
        revert_plan(applied)


def test_budget_order_prefix_sizes(trained_tokenizers: dict[str, Tokenizer]) -> None:
    tok = trained_tokenizers["suffix_bpe"]
    counts = np.asarray(count_tokens(tok, ["the function returns a value"] * 3).counts)
    base = _needs(tok)
    candidates, sizes, groups = budget_order(base, counts, 1, closure_pricer(tok))
    assert sizes == sorted(sizes) and len(candidates) == len(groups)
    assert sizes[-1] == base.new_size + sum(len(g) for g in groups)
    for k, size in enumerate(sizes):
        plan = plan_from_counts(
            tok, count_tokens(tok, ["the function returns a value"] * 3), max_size=size
        )
        assert plan.new_size == size
        assert set(plan.kept) == set(base.kept).union(*groups[: k + 1])


@pytest.fixture(params=SLOW_CASES)
def slow_case(request: pytest.FixtureRequest, slow_cases: dict[str, SlowCase]) -> SlowCase:
    return slow_cases[request.param]


def test_slow_tokenizers_under_a_tight_budget(
    slow_case: SlowCase, slow_plan_texts: list[str]
) -> None:
    tok = slow_case.make()
    full = plan_from_texts(tok, slow_plan_texts)
    needs = _needs(tok).new_size
    budget = min(needs + 60, full.new_size - 1)
    plan = plan_from_texts(tok, slow_plan_texts, max_size=budget)
    assert plan.new_size <= budget
    assert plan_from_texts(tok, slow_plan_texts, max_size=full.new_size) == full
    texts = [*slow_plan_texts, *HELD_OUT]
    # byte-level BPE loses nothing but what its normalizer changes (CLVP lowercases)
    lossless = {
        t
        for t in texts
        if slow_case.name == "byte_bpe"
        and tok.decode(tok(t, add_special_tokens=False)["input_ids"]) == t
    }
    assert lossless or slow_case.name != "byte_bpe"
    applied = apply_plan(plan, tokenizer=tok)
    try:
        for text in texts:
            ids = tok(text, add_special_tokens=False)["input_ids"]
            assert all(0 <= i < plan.new_size for i in ids), (slow_case.name, text)
            if text in lossless:
                assert tok.decode(ids) == text
    finally:
        revert_plan(applied)
