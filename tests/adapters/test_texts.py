"""plan_from_texts and count_tokens: every input kind, special tokens, metadata."""

from __future__ import annotations

from collections import Counter
from itertools import chain
from typing import Any

import pytest
from tokenizers import Tokenizer

from vocab_adapters.planning.texts import count_tokens, plan_from_texts
from vocab_adapters.tokenization.tokenizer_backend import fingerprint
from vocabcore import TokenCounts, VocabError


def naive_counts(tok: Tokenizer, texts: list[Any], **kwargs: Any) -> Counter[int]:
    return Counter(chain.from_iterable(e.ids for e in tok.encode_batch(texts, **kwargs)))


def test_counts_match_naive(wordpiece_tokenizer: Tokenizer, corpus_texts: list[str]) -> None:
    texts = corpus_texts[:50]
    counts = count_tokens(wordpiece_tokenizer, texts, batch_size=7)
    assert isinstance(counts, TokenCounts)
    assert counts.fingerprint == fingerprint(wordpiece_tokenizer)
    expected = naive_counts(wordpiece_tokenizer, texts)
    assert {i: c for i, c in enumerate(counts.counts) if c} == dict(expected)


def test_hf_matches_bare(
    hf_trained_tokenizers: dict[str, Any],
    trained_tokenizers: dict[str, Tokenizer],
    corpus_texts: list[str],
) -> None:
    for name, hf in hf_trained_tokenizers.items():
        texts = corpus_texts[:20]
        assert count_tokens(hf, texts) == count_tokens(trained_tokenizers[name], texts), name
        hf_counts = Counter(chain.from_iterable(hf(texts)["input_ids"]))
        assert {i: c for i, c in enumerate(count_tokens(hf, texts).counts) if c} == dict(hf_counts)


def test_pairs_and_words(hf_wordpiece_tokenizer: Any, corpus_texts: list[str]) -> None:
    tok = hf_wordpiece_tokenizer
    first, second = corpus_texts[:10], corpus_texts[10:20]
    pairs = list(zip(first, second, strict=True))
    got = count_tokens(tok, pairs)
    expected = Counter(chain.from_iterable(tok(first, second)["input_ids"]))
    assert {i: c for i, c in enumerate(got.counts) if c} == dict(expected)
    words = [t.split() for t in first]
    got = count_tokens(tok, words)
    expected = Counter(chain.from_iterable(tok(words, is_split_into_words=True)["input_ids"]))
    assert {i: c for i, c in enumerate(got.counts) if c} == dict(expected)


def test_streamed_generator(wordlevel_tokenizer: Tokenizer, corpus_texts: list[str]) -> None:
    consumed = []

    def gen() -> Any:
        for t in corpus_texts[:30]:
            consumed.append(t)
            yield t

    plan = plan_from_texts(wordlevel_tokenizer, gen(), batch_size=4)
    assert len(consumed) == 30
    assert plan.metadata["num_texts"] == 30


def test_specials_keep_and_metadata(hf_unigram_tokenizer: Any, corpus_texts: list[str]) -> None:
    tok = hf_unigram_tokenizer
    plan = plan_from_texts(tok, corpus_texts[:5], keep=["▁the", 7], min_count=2)
    for i in (*tok.all_special_ids, *tok.added_tokens_decoder):
        assert plan.is_kept(i)
    assert plan.is_kept(tok.convert_tokens_to_ids("▁the")) and plan.is_kept(7)
    assert plan.fingerprint == fingerprint(tok)
    assert plan.metadata["tokenizer"] == "local/unigram"
    assert plan.metadata["min_count"] == 2
    assert plan.metadata["num_texts"] == 5
    assert plan.metadata["num_tokens"] > 5


def test_byte_alphabet_and_fallback_kept(
    bytelevel_bpe_tokenizer: Tokenizer, byte_fallback_bpe_tokenizer: Tokenizer
) -> None:
    from tokenizers import pre_tokenizers

    plan = plan_from_texts(bytelevel_bpe_tokenizer, ["a"])
    for c in pre_tokenizers.ByteLevel.alphabet():
        assert plan.is_kept(bytelevel_bpe_tokenizer.token_to_id(c))
    plan = plan_from_texts(byte_fallback_bpe_tokenizer, ["a"])
    for b in range(256):
        assert plan.is_kept(byte_fallback_bpe_tokenizer.token_to_id(f"<0x{b:02X}>"))


def test_dataset_columns(wordpiece_tokenizer: Tokenizer, corpus_texts: list[str]) -> None:
    datasets = pytest.importorskip("datasets")
    texts = corpus_texts[:25]
    ds = datasets.Dataset.from_dict({"body": texts, "label": list(range(25))})
    assert count_tokens(wordpiece_tokenizer, ds) == count_tokens(wordpiece_tokenizer, texts)
    streamed = ds.to_iterable_dataset()
    got = count_tokens(wordpiece_tokenizer, streamed, columns="body")
    assert got == count_tokens(wordpiece_tokenizer, texts)
    pairs = datasets.Dataset.from_dict({"a": texts, "b": texts[::-1]})
    got = count_tokens(wordpiece_tokenizer, pairs, columns=["a", "b"])
    assert got == count_tokens(wordpiece_tokenizer, list(zip(texts, texts[::-1], strict=True)))
    with pytest.raises(VocabError, match=r"none is named .text.; choose with columns="):
        count_tokens(wordpiece_tokenizer, pairs)
    with pytest.raises(VocabError, match="lacks"):
        count_tokens(wordpiece_tokenizer, ds, columns="nope")


def test_num_proc_dataset(hf_wordpiece_tokenizer: Any, corpus_texts: list[str]) -> None:
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"text": corpus_texts[:40]})
    got = count_tokens(hf_wordpiece_tokenizer, ds, batch_size=10, num_proc=2)
    assert got == count_tokens(hf_wordpiece_tokenizer, corpus_texts[:40])
    streamed = iter(corpus_texts[:40])
    assert count_tokens(hf_wordpiece_tokenizer, streamed, batch_size=10, num_proc=2) == got


def test_bad_input(wordpiece_tokenizer: Tokenizer) -> None:
    with pytest.raises(VocabError, match="not a single str"):
        plan_from_texts(wordpiece_tokenizer, "a text")
    with pytest.raises(VocabError, match="item 1 of texts is none of"):
        plan_from_texts(wordpiece_tokenizer, ["a", 2])
    with pytest.raises(VocabError, match="lacks"):
        plan_from_texts(wordpiece_tokenizer, ["a"], keep=["no-such-token-xyz"])
    with pytest.raises(VocabError, match="min_count"):
        plan_from_texts(wordpiece_tokenizer, ["a"], min_count=0)


def test_slow_tokenizer_counts_like_fast(minilm_tokenizer: Any, corpus_texts: list[str]) -> None:
    import transformers

    slow_cls = getattr(transformers, "BertTokenizer", None)
    if (
        slow_cls is None
        or getattr(slow_cls, "is_fast", False) is True
        or int(transformers.__version__.split(".")[0]) >= 5
    ):
        pytest.skip("no slow BERT tokenizer in this transformers")
    slow = slow_cls.from_pretrained(minilm_tokenizer.name_or_path)
    texts = corpus_texts[:15]
    assert count_tokens(slow, texts).counts == count_tokens(minilm_tokenizer, texts).counts
    assert plan_from_texts(slow, texts) == plan_from_texts(minilm_tokenizer, texts)


def _roberta(tok: Tokenizer, add_prefix_space: bool) -> Any:
    """transformers' own RoBERTa fast tokenizer class around a copy of ``tok``."""
    import transformers

    from fixtures.fast_tokenizers import copy_tokenizer

    cls = getattr(transformers, "RobertaTokenizerFast", None) or transformers.RobertaTokenizer
    return cls(
        tokenizer_object=copy_tokenizer(tok),
        add_prefix_space=add_prefix_space,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
    )


def test_model_class_counts_like_its_call(
    bytelevel_bpe_tokenizer: Tokenizer, corpus_texts: list[str]
) -> None:
    # RoBERTa's class overrides its encoding methods (4.x) only to check arguments: the
    # backend counts, with the same ids as the wrapper's __call__
    tok = _roberta(bytelevel_bpe_tokenizer, add_prefix_space=True)
    texts = corpus_texts[:30]
    words = [t.split() for t in texts]
    for batch, options in ((texts, {}), (words, {"is_split_into_words": True})):
        expected = Counter(chain.from_iterable(tok(batch, **options)["input_ids"]))
        got = count_tokens(tok, batch, batch_size=8)
        assert {i: c for i, c in enumerate(got.counts) if c} == dict(expected)


def test_words_without_prefix_space_refused_where_the_class_refuses(
    bytelevel_bpe_tokenizer: Tokenizer, corpus_texts: list[str]
) -> None:
    tok = _roberta(bytelevel_bpe_tokenizer, add_prefix_space=False)
    words = [t.split() for t in corpus_texts[:3]]
    try:
        tok(words, is_split_into_words=True)
    except (ValueError, AssertionError):  # transformers 4.x refuses pre-split words here
        with pytest.raises(VocabError, match="add_prefix_space=True"):
            count_tokens(tok, words)
    else:  # transformers 5 encodes them: so does counting
        expected = Counter(chain.from_iterable(tok(words, is_split_into_words=True)["input_ids"]))
        got = count_tokens(tok, words)
        assert {i: c for i, c in enumerate(got.counts) if c} == dict(expected)


def test_split_special_tokens_honoured(hf_wordpiece_tokenizer: Any) -> None:
    from fixtures.fast_tokenizers import copy_tokenizer, wrap_hf

    tok = wrap_hf("wordpiece", copy_tokenizer(hf_wordpiece_tokenizer.backend_tokenizer))
    texts = ["hello [SEP] world", "[CLS] the [MASK]"]
    before = tok.backend_tokenizer.encode_special_tokens
    for split in (False, True):
        tok.split_special_tokens = split
        expected = Counter(chain.from_iterable(tok(texts)["input_ids"]))
        tok.backend_tokenizer.encode_special_tokens = before
        got = count_tokens(tok, texts)
        assert {i: c for i, c in enumerate(got.counts) if c} == dict(expected), split
        assert tok.backend_tokenizer.encode_special_tokens == before


def test_padding_and_truncation_left_as_they_were(hf_unigram_tokenizer: Any) -> None:
    backend = hf_unigram_tokenizer.backend_tokenizer
    padding, truncation = backend.padding, backend.truncation
    count_tokens(hf_unigram_tokenizer, ["a b c", "d e"])
    assert backend.padding == padding and backend.truncation == truncation
