"""suggest_tokens: costliest pre-tokens in the tokenizer's own token form."""

from __future__ import annotations

from typing import Any

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from vocab_adapters import plan_from_texts, suggest_tokens
from vocabcore import VocabError


@pytest.fixture
def toy() -> Tokenizer:
    vocab = {"[UNK]": 0, "a": 1, "b": 2, "c": 3, "##b": 4, "##c": 5, "##a": 6, "ab": 7}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok


def test_ranks_by_count_times_extra_pieces_then_string(toy: Tokenizer) -> None:
    texts = ["abc abc abc", "cba cba", "bc bc bc", "ca ca ca", "ab ab ab ab", "cab"]
    # abc: 3 x (2-1) = 3 ("ab", "##c"); cba: 2 x 2 = 4; bc: 3 x 1 = 3; ca: 3 x 1 = 3
    assert suggest_tokens(toy, texts, n=10, min_count=2) == ["cba", "abc", "bc", "ca"]
    assert suggest_tokens(toy, texts, n=2, min_count=2) == ["cba", "abc"]
    assert suggest_tokens(toy, texts, n=10, min_count=3) == ["abc", "bc", "ca"]
    assert suggest_tokens(toy, texts, n=0) == []


@pytest.mark.parametrize(
    ("name", "marker"),
    [("bytelevel_bpe", "Ġ"), ("unigram", "▁"), ("suffix_bpe", "</w>"), ("wordpiece", "")],
)
def test_suggestions_are_in_token_form_and_not_yet_tokens(
    name: str, marker: str, trained_tokenizers: dict[str, Any], corpus_texts: list[str]
) -> None:
    tok = trained_tokenizers[name]
    found = suggest_tokens(tok, corpus_texts, n=30, min_count=1)
    assert len(found) == 30
    vocab = tok.get_vocab(with_added_tokens=True)
    assert not set(found) & set(vocab)
    if marker:
        assert any(marker in t for t in found)
    for token in found:
        assert token and token == token.strip(" ")


def test_bpe_suggestions_are_addable(
    trained_tokenizers: dict[str, Any], corpus_texts: list[str]
) -> None:
    tok = trained_tokenizers["suffix_bpe"]  # neither ignore_merges nor safe to switch on
    for token in suggest_tokens(tok, corpus_texts, n=20, min_count=3):
        word = token[: -len("</w>")]
        assert len(tok.encode(word, add_special_tokens=False).ids) == 2


def test_slow_and_fast_wordpiece_agree(
    slow_cases: dict[str, Any], slow_plan_texts: list[str]
) -> None:
    case = slow_cases["minilm"]
    assert case.make_fast is not None
    slow = suggest_tokens(case.make(), slow_plan_texts, n=20, min_count=2)
    fast = suggest_tokens(case.make_fast(), slow_plan_texts, n=20, min_count=2)
    assert slow == fast and slow


def test_plan_from_texts_with_an_int_uses_suggestions(minilm_tokenizer: Any) -> None:
    texts = (f"ibuprofen and acetaminophen dose {i}" for i in range(6))
    plan = plan_from_texts(minilm_tokenizer, texts, add_tokens=5)
    again = list(f"ibuprofen and acetaminophen dose {i}" for i in range(6))
    assert plan.added == tuple(suggest_tokens(minilm_tokenizer, again, n=5, min_count=1))
    assert {"ibuprofen", "acetaminophen"} <= set(plan.added)
    assert plan.kept == plan_from_texts(minilm_tokenizer, again).kept


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"n": -1}, "'n' must be an int >= 0"), ({"min_count": 0}, "'min_count' must be")],
)
def test_bad_arguments(toy: Tokenizer, kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(VocabError, match=message):
        suggest_tokens(toy, ["abc"], **kwargs)


def test_a_single_string_is_refused(toy: Tokenizer) -> None:
    with pytest.raises(VocabError, match="single str"):
        suggest_tokens(toy, "abc abc")


def _text_of(tok: Any, token: str) -> str:
    """The text the tokenizer's normalizer and pre-tokenizer make exactly ``token`` of."""
    backend = tok.backend_tokenizer
    word = token.replace("▁", " ")
    for text in (word.lstrip(" "), word):
        normalizer = backend.normalizer
        normalized = normalizer.normalize_str(text) if normalizer is not None else text
        pre = backend.pre_tokenizer
        parts = (
            [p for p, _ in pre.pre_tokenize_str(normalized)] if pre is not None else [normalized]
        )
        if parts == [token]:
            return text
    raise AssertionError(f"no text normalizes to {token!r}")


@pytest.mark.parametrize("shape", ["gemma", "llama2"])
def test_metaspace_tokenizer_without_pre_tokenizer_gets_word_suggestions(
    shape: str, load_llm_tokenizer: Any, corpus_texts: list[str]
) -> None:
    """Llama 2 / Gemma shape: the whole text is one pre-token, words start at each "▁"
    (transformers 5 writes Gemma's with a Split(" ") that never matches after the normalizer)."""
    from vocab_adapters import apply_plan

    tok = load_llm_tokenizer(shape)
    texts = corpus_texts[:300]
    plan = plan_from_texts(tok, texts, add_tokens=10)
    assert len(plan.added) == 10
    vocab = tok.get_vocab()
    for token in plan.added:
        assert token not in vocab
        assert "▁" not in token[1:], token  # one word, not a run of them
    full = {t: tok(t)["input_ids"] for t in texts[:40]}
    apply_plan(plan, tokenizer=tok)
    for k, token in enumerate(plan.added):  # a word alone is the whole pre-token
        text = _text_of(tok, token)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert ids == [len(plan.kept) + k]
        assert tok.decode(ids) == text.lstrip(" ") or tok.decode(ids) == text
    for text, ids in full.items():
        if not any(token.lstrip("▁") in text for token in plan.added):
            assert tok(text)["input_ids"] == plan.remap(ids)
        assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text


def test_add_tokens_n_never_adds_nothing_silently(suffix_bpe_tokenizer: Any) -> None:
    """Candidates exist but none can be added (more than two pieces, merges only): said why."""
    texts = ["assertion assertion assertion"]
    assert suggest_tokens(suffix_bpe_tokenizer, texts, n=5, min_count=1) == []
    with pytest.raises(VocabError, match=r"'add_tokens' 5 found no token.*more than two pieces"):
        plan_from_texts(suffix_bpe_tokenizer, texts, add_tokens=5)
    # no candidate at all (every word one token, or too rare): nothing to add, no error
    assert plan_from_texts(suffix_bpe_tokenizer, texts, add_tokens=5, min_count=9).added == ()
