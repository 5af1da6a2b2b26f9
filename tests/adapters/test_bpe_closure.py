"""BPE merge closure: kept tokens stay reachable, closure is idempotent and minimal-ish."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from vocab_adapters.stages.fast_tokenizer import reduce_tokenizer_json
from vocab_adapters.tokenization.bpe_closure import close_under_merges as close_plan
from vocab_adapters.tokenization.bpe_closure import merge_table
from vocab_adapters.tokenization.tokenizer_backend import dump_json, load_json
from vocabcore import VocabPlan


def bpe_parts(tok: Tokenizer) -> tuple[dict[str, int], list[Any], dict[str, Any]]:
    model = load_json(tok.to_str())["model"]
    return model["vocab"], model["merges"], model


def test_simple_chain() -> None:
    vocab = {"a": 0, "b": 1, "c": 2, "ab": 3, "abc": 4, "x": 5}
    plan = VocabPlan(7, (4, 6), "fp", {"k": 1})
    closed = close_plan(plan, vocab, [("a", "b"), ("ab", "c")])
    assert closed.kept == (0, 1, 2, 3, 4, 6)
    assert closed.fingerprint == "fp" and closed.metadata["k"] == 1
    assert close_plan(closed, vocab, [("a", "b"), ("ab", "c")]) is closed


def test_prefix_and_suffix() -> None:
    vocab = {"a": 0, "##b": 1, "##c</w>": 2, "ab": 3, "abc</w>": 4, "##b##c": 5}
    merges = [("a", "##b"), ("ab", "##c</w>")]
    assert merge_table(merges, "##")[("ab", "##c</w>")] == (1, "abc</w>")
    closed = close_plan(
        VocabPlan(6, (4,)), vocab, merges, continuing_subword_prefix="##", end_of_word_suffix="</w>"
    )
    assert closed.kept == (0, 1, 2, 3, 4)


@settings(max_examples=25)
@given(data=st.data())
def test_closed_tokens_encode_to_themselves(
    data: Any, bytelevel_bpe_tokenizer: Tokenizer, suffix_bpe_tokenizer: Tokenizer
) -> None:
    tok = data.draw(st.sampled_from([bytelevel_bpe_tokenizer, suffix_bpe_tokenizer]))
    vocab, merges, model = bpe_parts(tok)
    size = tok.get_vocab_size(with_added_tokens=True)
    chosen = data.draw(st.lists(st.sampled_from(sorted(vocab.values())), max_size=20))
    plan = close_plan(
        VocabPlan(size, sorted({*chosen, *tok.get_added_tokens_decoder()})),
        vocab,
        merges,
        continuing_subword_prefix=model["continuing_subword_prefix"],
        end_of_word_suffix=model["end_of_word_suffix"],
    )
    again = close_plan(
        plan,
        vocab,
        merges,
        continuing_subword_prefix=model["continuing_subword_prefix"],
        end_of_word_suffix=model["end_of_word_suffix"],
    )
    assert again is plan
    reduced = Tokenizer.from_str(dump_json(reduce_tokenizer_json(plan, load_json(tok.to_str()))))
    inverse = {i: t for t, i in vocab.items()}
    for old in chosen:
        token = inverse[old]
        # the model alone, on the token's own symbols, gives the token back
        full = [t.value for t in tok.model.tokenize(_word(token, model))]
        if full == [token]:
            assert [t.value for t in reduced.model.tokenize(_word(token, model))] == [token]


def _word(token: str, model: dict[str, Any]) -> str:
    prefix = model["continuing_subword_prefix"] or ""
    suffix = model["end_of_word_suffix"] or ""
    if prefix and token.startswith(prefix):
        token = token[len(prefix) :]
    if suffix and token.endswith(suffix):
        token = token[: -len(suffix)]
    return token


def test_without_closure_encoding_differs(bytelevel_bpe_tokenizer: Tokenizer) -> None:
    tok = bytelevel_bpe_tokenizer
    vocab, merges, _ = bpe_parts(tok)
    size = tok.get_vocab_size(with_added_tokens=True)
    longest = max(vocab, key=len)
    alphabet = [vocab[c] for c in vocab if len(c) == 1]
    plan = VocabPlan(size, sorted({*alphabet, vocab[longest], *tok.get_added_tokens_decoder()}))
    doc = load_json(tok.to_str())
    unclosed = Tokenizer.from_str(dump_json(reduce_tokenizer_json(plan, doc, check_closed=False)))
    assert [t.value for t in unclosed.model.tokenize(longest)] != [longest]
    closed = close_plan(plan, vocab, merges)
    reduced = Tokenizer.from_str(dump_json(reduce_tokenizer_json(closed, doc)))
    assert [t.value for t in reduced.model.tokenize(longest)] == [longest]


def _exact_closure(ids: list[int], vocab: dict[str, int], merges: list[Any]) -> set[int]:
    """The reference: run BPE on every token's own characters, collect every symbol met."""
    from vocab_adapters.tokenization.bpe_closure import _initial_symbols, _run

    table = merge_table(merges)
    inverse = {i: t for t, i in vocab.items()}
    seen: set[str] = set()
    for i in ids:
        _run(_initial_symbols(inverse[i], "", ""), table, seen)
    return {vocab[s] for s in seen if s in vocab}


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_graph_walk_equals_exact_closure(
    data: Any,
    bytelevel_bpe_tokenizer: Tokenizer,
    gpt2_bpe_tokenizer: Tokenizer,
    byte_fallback_bpe_tokenizer: Tokenizer,
) -> None:
    from vocab_adapters.tokenization.bpe_closure import closure_ids

    tok = data.draw(
        st.sampled_from([bytelevel_bpe_tokenizer, gpt2_bpe_tokenizer, byte_fallback_bpe_tokenizer])
    )
    vocab, merges, _ = bpe_parts(tok)
    ids = data.draw(st.lists(st.sampled_from(sorted(vocab.values())), max_size=300))
    assert closure_ids(ids, vocab, merge_table(merges)) == _exact_closure(ids, vocab, merges)


def test_graph_walk_whole_vocabulary(bytelevel_bpe_tokenizer: Tokenizer) -> None:
    from vocab_adapters.tokenization.bpe_closure import closure_ids

    vocab, merges, _ = bpe_parts(bytelevel_bpe_tokenizer)
    ids = sorted(vocab.values())
    assert closure_ids(ids, vocab, merge_table(merges)) == _exact_closure(ids, vocab, merges)


@pytest.mark.parametrize(
    "merges, kept, expected",
    [
        # two merges yield "abc"; BPE's ranks pick (a, bc): "ab" is not on the way
        ([("b", "c"), ("a", "b"), ("a", "bc"), ("ab", "c")], ["abc"], {"a", "b", "c", "bc", "abc"}),
        ([("a", "b"), ("b", "c"), ("ab", "c"), ("a", "bc")], ["abc"], {"a", "b", "c", "ab", "abc"}),
        # "abc" is made by (ab, c) only, but BPE merges (b, c) first and never reaches it:
        # the run's symbols, not the merge graph's
        ([("b", "c"), ("a", "b"), ("ab", "c")], ["abc"], {"a", "b", "c", "bc"}),
        # a token no merge makes (a special token inside the model's vocabulary)
        ([("a", "b")], ["<s>"], {"<", "s", ">"}),
    ],
)
def test_graph_walk_where_the_graph_is_ambiguous(
    merges: list[tuple[str, str]], kept: list[str], expected: set[str]
) -> None:
    from vocab_adapters.tokenization.bpe_closure import closure_ids

    names = ["a", "b", "c", "ab", "bc", "abc", "<", "s", ">", "<s>"]
    vocab = {t: i for i, t in enumerate(names)}
    ids = [vocab[t] for t in kept]
    got = closure_ids(ids, vocab, merge_table(merges))
    assert got == _exact_closure(ids, vocab, merges) == {vocab[t] for t in expected}
