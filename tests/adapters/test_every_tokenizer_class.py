"""plan_from_texts -> apply_plan -> revert_plan works for every tokenizer class supported.

The plan that ``plan_from_texts`` returns must apply as it is, whatever the tokenizer: fast
(bare ``tokenizers.Tokenizer`` and ``PreTrainedTokenizerFast``, every model family) and slow
(every class of the installed transformers major: BERT, RoBERTa / CLVP byte-level BPE, XLM-R
and DeBERTa-v2 on 4.x, ``SentencePieceBackend`` on 5.x, Unigram and BPE sentencepiece).
"""

from __future__ import annotations

from typing import Any

import pytest

from fixtures.fast_tokenizers import FAST_TOKENIZER_NAMES, copy_tokenizer, wrap_hf
from fixtures.slow_tokenizers import SlowCase
from vocab_adapters import apply_plan, plan_from_texts, revert_plan
from vocab_adapters.tokenization.tokenizer_backend import backend_of, id_to_token_list

SLOW_NAMES = (
    "xlmr_unigram",
    "xlmr_bpe",
    "deberta_unigram",
    "deberta_bpe",
    "wordpiece",
    "minilm",
    "byte_bpe",
)


def _round_trip(tok: Any, texts: list[str], held_out: list[str]) -> None:
    before_tokens = id_to_token_list(tok)
    before_ids = [_encode(tok, t) for t in texts + held_out]
    plan = plan_from_texts(tok, texts)
    applied = apply_plan(plan, tokenizer=tok)  # the plan applies as it is
    try:
        for text, ids in zip(texts, before_ids, strict=False):
            assert _encode(tok, text) == plan.remap(ids), text
        for text in held_out:  # unseen text still encodes within the reduced vocabulary
            assert all(0 <= i < plan.new_size for i in _encode(tok, text))
    finally:
        revert_plan(applied)
    assert id_to_token_list(tok) == before_tokens
    assert [_encode(tok, t) for t in texts + held_out] == before_ids


def _encode(tok: Any, text: str) -> list[int]:
    if backend_of(tok) is tok:
        return list(tok.encode(text).ids)
    return list(tok.encode(text, add_special_tokens=True))


HELD_OUT = ["zebra quokka 12345", "Übermäßig naïve café", "x = lambda y: y ** 2  # ok"]


@pytest.mark.parametrize("name", FAST_TOKENIZER_NAMES)
@pytest.mark.parametrize("wrapped", [False, True], ids=["tokenizers.Tokenizer", "HF fast"])
def test_fast(
    name: str,
    wrapped: bool,
    trained_tokenizers: dict[str, Any],
    corpus_texts: list[str],
) -> None:
    base = trained_tokenizers[name]
    tok = wrap_hf(name, base) if wrapped else copy_tokenizer(base)
    _round_trip(tok, corpus_texts[:150], HELD_OUT)


@pytest.mark.parametrize("name", SLOW_NAMES)
def test_slow(name: str, slow_cases: dict[str, SlowCase], slow_plan_texts: list[str]) -> None:
    if name not in slow_cases:
        pytest.skip(f"no slow {name} class in this transformers major")
    tok = slow_cases[name].make()
    assert backend_of(tok) is None, type(tok).__name__
    _round_trip(tok, slow_plan_texts[:150], HELD_OUT)
