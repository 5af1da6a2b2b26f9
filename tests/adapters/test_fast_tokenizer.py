"""Differential tests of the fast-tokenizer adapter over every tokenizer family."""

from __future__ import annotations

import filecmp
import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from fixtures.fast_tokenizers import FAST_TOKENIZER_NAMES, copy_tokenizer, wrap_hf
from vocab_adapters.planning.texts import plan_from_texts
from vocab_adapters.stages import fast_tokenizer
from vocab_adapters.stages.fast_tokenizer import close_plan, reduce_tokenizer_json
from vocab_adapters.tokenization.tokenizer_backend import fingerprint, load_json
from vocabcore import PlanMismatchError, VocabError, VocabPlan

UNSEEN = [
    "",
    " ",
    "   leading and trailing   ",
    "Zebra quokka xylophone!!",
    "emoji 🤗🤖 and 中文字符 mixed in",
    "tabs\tand\nnewlines",
    "[CLS] literal special tokens [SEP] <s> </s> <mask> hello world",
]


def backend(tok: Any) -> Tokenizer:
    return tok if isinstance(tok, Tokenizer) else tok.backend_tokenizer


def encode_all(tok: Tokenizer, texts: list[str]) -> list[Any]:
    singles = tok.encode_batch(texts)
    pairs = tok.encode_batch(list(zip(texts, reversed(texts), strict=True)))
    plain = tok.encode_batch(texts, add_special_tokens=False)
    return [*singles, *pairs, *plain]


def assert_same_encoding(plan: VocabPlan, before: list[Any], after: list[Any]) -> None:
    for b, a in zip(before, after, strict=True):
        assert a.ids == plan.remap(b.ids)
        assert a.offsets == b.offsets
        assert a.attention_mask == b.attention_mask
        assert a.word_ids == b.word_ids
        assert a.type_ids == b.type_ids
        assert a.special_tokens_mask == b.special_tokens_mask
        assert a.tokens == b.tokens


def roundtrip(tok: Any, plan: VocabPlan, texts: list[str], unseen: list[str]) -> None:
    """Apply, compare every encoding with the remapped original, revert, compare JSON."""
    back = backend(tok)
    original = back.to_str()
    before = encode_all(back, texts)
    applied = fast_tokenizer.apply(plan, tok)
    try:
        reduced = backend(tok)
        assert reduced.get_vocab_size(with_added_tokens=True) == plan.new_size
        assert_same_encoding(plan, before, encode_all(reduced, texts))
        for enc in encode_all(reduced, unseen):
            assert all(0 <= i < plan.new_size for i in enc.ids)
    finally:
        applied.revert()
    assert backend(tok).to_str() == original


@pytest.mark.parametrize("name", FAST_TOKENIZER_NAMES)
def test_differential_bare(
    name: str, trained_tokenizers: dict[str, Tokenizer], corpus_texts: list[str]
) -> None:
    tok = trained_tokenizers[name]
    subset = corpus_texts[:40] + corpus_texts[-4:]
    plan = plan_from_texts(tok, subset)
    assert plan.new_size < plan.vocab_size
    roundtrip(tok, plan, subset, UNSEEN + corpus_texts[100:140])


@pytest.mark.parametrize("name", FAST_TOKENIZER_NAMES)
def test_differential_hf(
    name: str, hf_trained_tokenizers: dict[str, Any], corpus_texts: list[str]
) -> None:
    tok = hf_trained_tokenizers[name]
    subset = corpus_texts[200:240]
    plan = plan_from_texts(tok, subset)
    before = tok(subset, subset[::-1], return_offsets_mapping=True)
    roundtrip(tok, plan, subset, UNSEEN)
    applied = fast_tokenizer.apply(plan, tok)
    try:
        after = tok(subset, subset[::-1], return_offsets_mapping=True)
        assert after["input_ids"] == [plan.remap(ids) for ids in before["input_ids"]]
        assert after["attention_mask"] == before["attention_mask"]
        assert after["offset_mapping"] == before["offset_mapping"]
        assert after.word_ids(3) == before.word_ids(3)
    finally:
        applied.revert()


@pytest.mark.parametrize("name", ["wordpiece", "bytelevel_bpe", "unigram", "suffix_bpe"])
@settings(max_examples=8)
@given(data=st.data())
def test_property_random_corpus(
    name: str, trained_tokenizers: dict[str, Tokenizer], corpus_texts: list[str], data: Any
) -> None:
    tok = trained_tokenizers[name]
    picked = data.draw(st.lists(st.sampled_from(corpus_texts), min_size=1, max_size=12))
    generated = data.draw(
        st.lists(
            st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30)
            | st.sampled_from(["", "  ", "\t\n", "🤗🤗", "héllo wörld"]),
            max_size=6,
        )
    )
    texts = picked + generated
    plan = plan_from_texts(tok, texts)
    roundtrip(tok, plan, texts, UNSEEN)


def test_minilm(minilm_tokenizer: Any, corpus_texts: list[str]) -> None:
    tok = minilm_tokenizer
    subset = corpus_texts[:80]
    plan = plan_from_texts(tok, subset)
    assert plan.new_size < 5000
    roundtrip(tok, plan, subset, UNSEEN)
    applied = fast_tokenizer.apply(plan, tok)
    try:
        assert len(tok) == plan.new_size
        assert tok.vocab_size == plan.new_size
        assert tok.unk_token_id == plan.old_to_new(100)
        assert tok.cls_token_id == plan.old_to_new(101)
        assert tok.pad_token_id == plan.old_to_new(0)
        assert sorted(tok.all_special_ids) == sorted(
            plan.old_to_new(i) for i in (0, 100, 101, 102, 103)
        )
        assert tok.convert_tokens_to_ids("[SEP]") == plan.old_to_new(102)
        assert tok.decode(tok("the function")["input_ids"]) == "[CLS] the function [SEP]"
    finally:
        applied.revert()
    assert len(tok) == 30522


def test_hf_save_reload(hf_unigram_tokenizer: Any, corpus_texts: list[str], tmp_path: Any) -> None:
    from transformers import AutoTokenizer

    tok = hf_unigram_tokenizer
    tok.save_pretrained(tmp_path / "before")
    plan = plan_from_texts(tok, corpus_texts[:30])
    applied = fast_tokenizer.apply(plan, tok)
    try:
        tok.save_pretrained(tmp_path / "reduced")
        reloaded = AutoTokenizer.from_pretrained(tmp_path / "reduced")
        assert len(reloaded) == plan.new_size
        assert reloaded(corpus_texts[:30])["input_ids"] == tok(corpus_texts[:30])["input_ids"]
        assert fingerprint(reloaded) == fingerprint(tok)
        assert reloaded.pad_token_id == tok.pad_token_id == plan.old_to_new(1)
    finally:
        applied.revert()
    tok.save_pretrained(tmp_path / "after")
    names = sorted(os.listdir(tmp_path / "before"))
    assert names == sorted(os.listdir(tmp_path / "after"))
    _, mismatch, errors = filecmp.cmpfiles(
        tmp_path / "before", tmp_path / "after", names, shallow=False
    )
    assert mismatch == [] and errors == []


def test_padding_and_postprocessor_ids_remapped(
    unigram_tokenizer: Tokenizer, corpus_texts: list[str]
) -> None:
    tok = unigram_tokenizer
    plan = plan_from_texts(tok, corpus_texts[:20])
    doc = reduce_tokenizer_json(plan, load_json(tok.to_str()))
    assert doc["padding"]["pad_id"] == plan.old_to_new(tok.token_to_id("<pad>"))
    specials = doc["post_processor"]["special_tokens"]
    assert specials["</s>"]["ids"] == [plan.old_to_new(tok.token_to_id("</s>"))]
    mask = next(t for t in doc["added_tokens"] if t["content"] == "<mask>")
    assert mask["lstrip"] is True and mask["id"] == plan.new_size - 1


def test_unigram_scores_kept_exactly(unigram_tokenizer: Tokenizer, corpus_texts: list[str]) -> None:
    plan = plan_from_texts(unigram_tokenizer, corpus_texts[:20])
    doc = load_json(unigram_tokenizer.to_str())
    reduced = reduce_tokenizer_json(plan, doc)
    pieces = doc["model"]["vocab"]
    assert reduced["model"]["vocab"] == [pieces[i] for i in plan.kept if i < len(pieces)]
    assert reduced["model"]["unk_id"] == plan.old_to_new(doc["model"]["unk_id"])


# -- bad input: clear error, nothing changed --------------------------------------------------


def unchanged_after(tok: Tokenizer, call: Any, error: type[Exception], match: str) -> None:
    before = tok.to_str()
    with pytest.raises(error, match=match):
        call()
    assert tok.to_str() == before


def test_other_fingerprint(wordpiece_tokenizer: Tokenizer, wordlevel_tokenizer: Tokenizer) -> None:
    size = wordpiece_tokenizer.get_vocab_size(with_added_tokens=True)
    plan = VocabPlan(size, range(10), fingerprint(wordlevel_tokenizer))
    unchanged_after(
        wordpiece_tokenizer,
        lambda: fast_tokenizer.apply(plan, wordpiece_tokenizer),
        PlanMismatchError,
        "built for another tokenizer",
    )


def test_other_size(wordpiece_tokenizer: Tokenizer) -> None:
    plan = VocabPlan(10, range(5))
    unchanged_after(
        wordpiece_tokenizer,
        lambda: fast_tokenizer.apply(plan, wordpiece_tokenizer),
        PlanMismatchError,
        "vocab_size is 10",
    )


def test_unknown_model_type() -> None:
    doc = {"model": {"type": "Mystery", "vocab": {}}, "added_tokens": []}
    with pytest.raises(VocabError, match="'Mystery' is not supported"):
        reduce_tokenizer_json(VocabPlan(3, (0,)), doc)


def test_apply_twice_and_revert_twice(
    wordlevel_tokenizer: Tokenizer, corpus_texts: list[str]
) -> None:
    tok = wordlevel_tokenizer
    plan = plan_from_texts(tok, corpus_texts[:10])
    identity = VocabPlan.identity(plan.vocab_size)
    applied = fast_tokenizer.apply(plan, tok)
    try:
        with pytest.raises(VocabError, match="already has a plan applied"):
            fast_tokenizer.apply(identity, tok)
    finally:
        applied.revert()
    with pytest.raises(VocabError, match="already reverted"):
        applied.revert()
    applied = fast_tokenizer.apply(identity, tok)
    applied.rollback()
    with pytest.raises(VocabError, match="already rolled back"):
        applied.rollback()


def test_prepare_changes_nothing(hf_bytelevel_bpe_tokenizer: Any, corpus_texts: list[str]) -> None:
    tok = hf_bytelevel_bpe_tokenizer
    original = tok.backend_tokenizer
    prepared = fast_tokenizer.prepare(plan_from_texts(tok, corpus_texts[:5]), tok)
    assert tok.backend_tokenizer is original
    applied = prepared.commit()
    assert tok.backend_tokenizer is not original
    applied.revert()
    assert tok.backend_tokenizer is original


def test_drops_special_token(wordpiece_tokenizer: Tokenizer) -> None:
    size = wordpiece_tokenizer.get_vocab_size(with_added_tokens=True)
    cls = wordpiece_tokenizer.token_to_id("[CLS]")
    plan = VocabPlan(size, [i for i in range(size) if i != cls])
    unchanged_after(
        wordpiece_tokenizer,
        lambda: fast_tokenizer.apply(plan, wordpiece_tokenizer),
        VocabError,
        r"drops id 2 \('\[CLS\]'\).*post-processor",
    )


def test_unclosed_bpe_plan(bytelevel_bpe_tokenizer: Tokenizer) -> None:
    tok = bytelevel_bpe_tokenizer
    size = tok.get_vocab_size(with_added_tokens=True)
    longest = max(tok.get_vocab(), key=len)
    plan = VocabPlan(size, sorted({0, 1, 2, 3, size - 1, tok.token_to_id(longest)}))
    unchanged_after(tok, lambda: fast_tokenizer.apply(plan, tok), VocabError, "close_plan")
    closed = close_plan(plan, tok)
    assert set(plan.kept) < set(closed.kept)
    applied = fast_tokenizer.apply(closed, tok)
    try:
        enc = tok.encode(longest, add_special_tokens=False)
        assert enc.tokens == [longest]
    finally:
        applied.revert()


def test_revert_refuses_after_added_tokens(hf_trained_tokenizers: dict[str, Any]) -> None:
    tok = wrap_hf("wordlevel", hf_trained_tokenizers["wordlevel"].backend_tokenizer)
    plan = VocabPlan.identity(len(tok))
    applied = fast_tokenizer.apply(plan, tok)
    tok.add_tokens(["brand-new-token"])
    with pytest.raises(VocabError, match="tokens were added"):
        applied.revert()
    applied.rollback()
    assert len(tok) == plan.vocab_size


def test_slow_tokenizer_refused() -> None:
    class Slow:
        def __len__(self) -> int:
            return 3

    with pytest.raises(VocabError, match="slow tokenizer"):
        fast_tokenizer.prepare(VocabPlan(3, (0,)), Slow())


def test_bare_revert_is_exact_for_unigram(
    unigram_tokenizer: Tokenizer, corpus_texts: list[str]
) -> None:
    tok = copy_tokenizer(unigram_tokenizer)
    original = tok.to_str()
    applied = fast_tokenizer.apply(plan_from_texts(tok, corpus_texts[:5]), tok)
    applied.revert()
    assert tok.to_str() == original


def test_size_without_token_map_equals_backend(trained_tokenizers: dict[str, Tokenizer]) -> None:
    """``len(tokenizer)`` read from the model size and added ids equals the backend's count."""
    for name, original in trained_tokenizers.items():
        tok = wrap_hf(name, original)
        tok.add_tokens(["brand-new-token", "another-new-token"])
        tok.add_special_tokens({"additional_special_tokens": ["<extra-special>"]})
        backend = tok.backend_tokenizer
        expected = backend.get_vocab_size(with_added_tokens=True)
        assert fast_tokenizer._cheap_size(backend) == expected == len(tok), name


def test_unigram_added_tokens_keep_their_ids(hf_trained_tokenizers: dict[str, Any]) -> None:
    """The Unigram load goes through a stand-in model: added tokens still land on their ids."""
    tok = wrap_hf("unigram", hf_trained_tokenizers["unigram"].backend_tokenizer)
    tok.add_tokens(["brand-new-token"])
    tok.add_special_tokens({"additional_special_tokens": ["<extra-special>"]})
    size = len(tok)
    plan = VocabPlan(size, sorted({*range(0, size, 3), *tok.all_special_ids, size - 2, size - 1}))
    plan = close_plan(plan, tok)
    applied = fast_tokenizer.apply(plan, tok)
    try:
        for token in ("brand-new-token", "<extra-special>"):
            old_id = applied._original.token_to_id(token)
            tok_id = tok.convert_tokens_to_ids(token)
            assert tok_id == plan.old_to_new(old_id), token
        assert tok.backend_tokenizer.get_vocab_size(with_added_tokens=True) == plan.new_size
    finally:
        applied.revert()
    assert len(tok) == size
