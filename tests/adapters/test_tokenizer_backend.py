"""fingerprint: the id -> token mapping only; slow == fast, stable across save/load."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from tokenizers import Tokenizer

from fixtures.fast_tokenizers import copy_tokenizer, wrap_hf
from vocab_adapters.tokenization.tokenizer_backend import dump_json, fingerprint, id_to_token_list


def test_bare_equals_hf(trained_tokenizers: dict[str, Tokenizer]) -> None:
    for name, tok in trained_tokenizers.items():
        hf = wrap_hf(name, tok)
        assert fingerprint(hf) == fingerprint(tok)
        assert id_to_token_list(tok) == [tok.id_to_token(i) for i in range(len(hf))]


def test_save_load_stable(minilm_tokenizer: Any, tmp_path: Any) -> None:
    from transformers import AutoTokenizer

    minilm_tokenizer.save_pretrained(tmp_path)
    assert fingerprint(AutoTokenizer.from_pretrained(tmp_path)) == fingerprint(minilm_tokenizer)
    backend = minilm_tokenizer.backend_tokenizer
    backend.save(str(tmp_path / "t.json"))
    assert fingerprint(Tokenizer.from_file(str(tmp_path / "t.json"))) == fingerprint(backend)


def test_changes_after_add_tokens(wordpiece_tokenizer: Tokenizer) -> None:
    tok = copy_tokenizer(wordpiece_tokenizer)
    before = fingerprint(tok)
    tok.add_tokens(["a-brand-new-token"])
    assert fingerprint(tok) != before


def test_ignores_everything_but_vocab(wordpiece_tokenizer: Tokenizer) -> None:
    from tokenizers import normalizers

    tok = copy_tokenizer(wordpiece_tokenizer)
    tok.normalizer = normalizers.Lowercase()
    tok.enable_padding()
    assert fingerprint(tok) == fingerprint(wordpiece_tokenizer)


def test_slow_equals_fast(minilm_tokenizer: Any) -> None:
    import pytest
    import transformers

    if int(transformers.__version__.split(".")[0]) >= 5:
        pytest.skip("transformers 5 has no slow BERT tokenizer")
    slow = transformers.BertTokenizer.from_pretrained(minilm_tokenizer.name_or_path)
    assert fingerprint(slow) == fingerprint(minilm_tokenizer)


@given(st.lists(st.none() | st.text()))
def test_dump_json_matches_stdlib(tokens: list[str | None]) -> None:
    assert dump_json(tokens) == json.dumps(tokens, ensure_ascii=False, separators=(",", ":"))


def test_size_read_from_the_document(
    trained_tokenizers: dict[str, Tokenizer], minilm_tokenizer: Any
) -> None:
    from vocab_adapters.tokenization.tokenizer_backend import parsed

    tokenizers = [*trained_tokenizers.values(), minilm_tokenizer.backend_tokenizer]
    for tok in tokenizers:
        copy = copy_tokenizer(tok)
        copy.add_tokens(["zz-new", "the"])  # one new string, one the model already has
        for t in (tok, copy):
            assert parsed(t).size(t) == t.get_vocab_size(with_added_tokens=True)
