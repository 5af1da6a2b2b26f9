"""Counting by distinct pieces equals encoding every text, on every pipeline shape.

The reference is the backend's own ``encode_batch`` of each item; the counts under test come
from ``count_tokens``, which encodes each distinct piece once where the pipeline allows it
(:mod:`vocab_adapters.planning.piece_counts`). Texts are built from pieces chosen to break a
careless cut: runs and edges of spaces, tabs and newlines, other Unicode spaces, combining marks
after a space, a grapheme ``Prepend`` character before one, compatibility characters that
normalize to a space, added tokens with ``lstrip``/``single_word``, a literal ``▁``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from itertools import chain
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from vocab_adapters.planning import texts as texts_module
from vocab_adapters.planning.piece_counts import separability
from vocab_adapters.planning.texts import count_tokens, plan_from_texts

_PIECES = [
    "the", "a", "b", "cat", "ing", "Hello", "WORLD", "x1", "42", "7",
    " ", " ", " ", " ", " ", " ", "  ", "   ", "\t", "\n", " \n", "\u00a0", "\u3000",
    "\u2002", "\x1c", "\u200b", "\u200d", "\ufeff",
    "é", "e\u0301", "\u0301", "¨", "ﬁ", "İ", "Σ", "中", "日本", "🤗", "\u0600",
    ".", ",", "'s", "(", "-", "▁", "<mask>", "[MASK]", "<ent>", "hello world", "<s>",
]  # fmt: skip
_TEXT = st.lists(st.sampled_from(_PIECES), max_size=12).map("".join)
_WORD = st.lists(st.sampled_from(_PIECES), min_size=1, max_size=4).map("".join)


def _edit(tok: Tokenizer, **parts: Any) -> Tokenizer:
    document = json.loads(tok.to_str())
    document.update(parts)
    out = Tokenizer.from_str(json.dumps(document))
    out.no_padding()
    return out


def _with_space_runs(tok: Tokenizer) -> Tokenizer:
    """A byte-level BPE that also has tokens for runs of whitespace (as GPT-2's has).

    Without them a wrong cut inside a whitespace run would still give the same ids.
    """
    document = json.loads(tok.to_str())
    model = document["model"]
    for pair in (["Ġ", "Ġ"], ["ĠĠ", "Ġ"], ["ĉ", "Ġ"], ["Ċ", "Ġ"], ["Ġ", "Ċ"], ["ĉ", "ĉ"]):
        merged = "".join(pair)
        if merged not in model["vocab"]:
            taken = [*model["vocab"].values(), *(a["id"] for a in document["added_tokens"])]
            model["vocab"][merged] = max(taken) + 1
            model["merges"].append(pair)
    out = Tokenizer.from_str(json.dumps(document))
    assert "ĠĠ" in out.encode("a   b", add_special_tokens=False).tokens
    return out


def _metaspace(scheme: str) -> dict[str, Any]:
    return {"type": "Metaspace", "replacement": "▁", "prepend_scheme": scheme, "split": True}


def _variants(trained: dict[str, Tokenizer]) -> dict[str, tuple[Tokenizer, str]]:
    """name → (tokenizer without padding, the mode its texts should count in)."""
    unigram, gpt2 = trained["unigram"], _with_space_runs(trained["gpt2_bpe"])
    wordpiece = json.loads(trained["wordpiece"].to_str())
    plain_added = [a for a in wordpiece["added_tokens"] if " " not in a["content"]]
    nfkc = {"type": "NFKC"}
    collapse = {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}
    out = {
        "wordpiece": (_edit(trained["wordpiece"]), "words"),  # "hello world" is added
        "wordpiece_no_spaced_token": (
            _edit(trained["wordpiece"], added_tokens=plain_added),
            "whitespace",
        ),
        "bytelevel_bpe": (_edit(_with_space_runs(trained["bytelevel_bpe"])), "space"),
        "gpt2_bpe": (_edit(gpt2), "space"),
        "gpt2_prefix_space": (
            _edit(
                gpt2,
                pre_tokenizer={
                    "type": "ByteLevel",
                    "add_prefix_space": True,
                    "trim_offsets": True,
                    "use_regex": True,
                },
            ),
            "space",
        ),
        "gpt2_bert_normalizer": (
            _edit(
                gpt2,
                normalizer={
                    "type": "BertNormalizer",
                    "clean_text": True,
                    "handle_chinese_chars": True,
                    "strip_accents": None,
                    "lowercase": True,
                },
            ),
            "space",
        ),
        "gpt2_nfc_lowercase": (
            _edit(
                gpt2,
                normalizer={
                    "type": "Sequence",
                    "normalizers": [{"type": "NFC"}, {"type": "Lowercase"}],
                },
            ),
            "space",
        ),
        "suffix_bpe": (_edit(trained["suffix_bpe"]), "whitespace"),
        "byte_fallback_bpe": (_edit(trained["byte_fallback_bpe"]), "words"),  # Prepend
        "unigram": (_edit(unigram), "space"),
        "unigram_first": (_edit(unigram, pre_tokenizer=_metaspace("first")), "space"),
        "unigram_never": (_edit(unigram, pre_tokenizer=_metaspace("never")), "space"),
        "unigram_collapse": (
            _edit(unigram, normalizer={"type": "Sequence", "normalizers": [nfkc, collapse]}),
            "space",
        ),
        "unigram_whitespace_first": (
            _edit(
                unigram,
                normalizer={
                    "type": "Sequence",
                    "normalizers": [
                        {"type": "Strip", "strip_left": True, "strip_right": True},
                        {"type": "NFD"},
                        {"type": "StripAccents"},
                        collapse,
                    ],
                },
                pre_tokenizer={
                    "type": "Sequence",
                    "pretokenizers": [{"type": "WhitespaceSplit"}, _metaspace("first")],
                },
            ),
            "whitespace",
        ),
        "wordlevel": (_edit(trained["wordlevel"]), "whitespace"),
        "wordlevel_digits": (
            _edit(
                trained["wordlevel"],
                pre_tokenizer={
                    "type": "Sequence",
                    "pretokenizers": [
                        {"type": "Whitespace"},
                        {"type": "Digits", "individual_digits": True},
                    ],
                },
            ),
            "whitespace",
        ),
    }
    from fixtures.fast_tokenizers import build_corpus
    from fixtures.llm_tokenizers import _llama3, _qwen2, _tekken

    corpus = build_corpus(400)
    for name, build in (("llama3", _llama3), ("qwen2", _qwen2), ("tekken", _tekken)):
        out[name] = (_edit(_with_space_runs(build(corpus)[0])), "space")
    return out


@pytest.fixture(scope="module")
def variants(trained_tokenizers: dict[str, Tokenizer]) -> dict[str, tuple[Tokenizer, str]]:
    return _variants(trained_tokenizers)


@pytest.fixture(scope="module", params=["precompiled", "precompiled_strip"])
def precompiled(
    request: pytest.FixtureRequest,
    trained_tokenizers: dict[str, Tokenizer],
    slow_spm_models: dict[str, Any],
) -> Tokenizer:
    """The Unigram fixture with XLM-R's normalizer: a sentencepiece Precompiled charsmap, and
    (``precompiled_strip``) the right ``Strip`` transformers 4.57 adds when converting it."""
    from tokenizers import Regex, normalizers

    tok = _edit(trained_tokenizers["unigram"])
    steps = [_precompiled_normalizer(slow_spm_models["xlmr_unigram"])]
    if request.param == "precompiled_strip":
        steps.append(normalizers.Strip(left=False, right=True))
    steps.append(normalizers.Replace(Regex(" {2,}"), " "))
    tok.normalizer = normalizers.Sequence(steps)
    return tok


def _precompiled_normalizer(model: Any) -> Any:
    from sentencepiece import sentencepiece_model_pb2 as pb
    from tokenizers import normalizers

    proto = pb.ModelProto()
    proto.ParseFromString(model.read_bytes())
    return normalizers.Precompiled(proto.normalizer_spec.precompiled_charsmap)


def _reference(tok: Tokenizer, items: list[Any], **kwargs: Any) -> dict[int, int]:
    encodings = tok.encode_batch(items, add_special_tokens=True, **kwargs)
    return dict(Counter(chain.from_iterable(e.ids for e in encodings)))


def _counted(tok: Tokenizer, items: list[Any], batch_size: int) -> dict[int, int]:
    counts = count_tokens(tok, items, batch_size=batch_size).counts
    return {i: c for i, c in enumerate(counts) if c}


@pytest.mark.parametrize(
    "name",
    [
        "wordpiece", "wordpiece_no_spaced_token", "bytelevel_bpe", "gpt2_bpe",
        "gpt2_prefix_space", "gpt2_bert_normalizer", "gpt2_nfc_lowercase", "suffix_bpe",
        "byte_fallback_bpe", "unigram", "unigram_first", "unigram_never", "unigram_collapse",
        "unigram_whitespace_first", "wordlevel", "wordlevel_digits", "llama3", "qwen2", "tekken",
    ],
)  # fmt: skip
def test_mode_of_each_pipeline(variants: dict[str, tuple[Tokenizer, str]], name: str) -> None:
    tok, mode = variants[name]
    rules = separability(json.loads(tok.to_str()))
    assert rules is not None and rules.mode == mode


def test_clean_batches_take_the_piece_path(variants: dict[str, tuple[Tokenizer, str]]) -> None:
    clean = ["the cat sat", "a b 42", "Hello WORLD cat"]
    for name, (tok, mode) in variants.items():
        with texts_module._Encoder(tok) as encoder:
            assert encoder.count_pieces(clean, "text") is (mode != "words"), name
            assert encoder.count_pieces([["the", "cat"], ["a"]], "words"), name


def _check(tok: Tokenizer, items: list[Any], batch_size: int, **kwargs: Any) -> None:
    assert _counted(tok, items, batch_size) == _reference(tok, items, **kwargs)


@settings(max_examples=40, deadline=None)
@given(items=st.lists(_TEXT, min_size=1, max_size=6), batch_size=st.integers(1, 4))
def test_texts_count_as_encoded(
    variants: dict[str, tuple[Tokenizer, str]], items: list[str], batch_size: int
) -> None:
    for tok, _ in variants.values():
        _check(tok, items, batch_size)


@settings(max_examples=25, deadline=None)
@given(
    items=st.lists(st.tuples(_TEXT, _TEXT), min_size=1, max_size=4),
    batch_size=st.integers(1, 3),
)
def test_pairs_count_as_encoded(
    variants: dict[str, tuple[Tokenizer, str]], items: list[tuple[str, str]], batch_size: int
) -> None:
    for tok, _ in variants.values():
        _check(tok, items, batch_size)


@settings(max_examples=25, deadline=None)
@given(
    items=st.lists(st.lists(_WORD, min_size=1, max_size=6), min_size=1, max_size=4),
    batch_size=st.integers(1, 3),
)
def test_word_lists_count_as_encoded(
    variants: dict[str, tuple[Tokenizer, str]], items: list[list[str]], batch_size: int
) -> None:
    for tok, _ in variants.values():
        _check(tok, items, batch_size, is_pretokenized=True)


@settings(max_examples=40, deadline=None)
@given(items=st.lists(_TEXT, min_size=1, max_size=6), batch_size=st.integers(1, 4))
def test_precompiled_counts_as_encoded(
    precompiled: Tokenizer, items: list[str], batch_size: int
) -> None:
    _check(precompiled, items, batch_size)


def test_precompiled_is_checked_per_piece(precompiled: Tokenizer) -> None:
    rules = separability(json.loads(precompiled.to_str()))
    assert rules is not None and rules.mode == "space" and rules.checked and rules.graphemes
    with texts_module._Encoder(precompiled) as encoder:
        assert encoder.count_pieces(["the cat sat", "a b"], "text")
        assert not encoder.count_pieces(["the  cat"], "text")  # collapsed at the cut


def test_corpus_counts_and_plan_unchanged(
    variants: dict[str, tuple[Tokenizer, str]], corpus_texts: list[str]
) -> None:
    """A real corpus, many batches, through the piece path: counts and plans as encoded."""
    items = corpus_texts[:400] * 2
    for name, (tok, _) in variants.items():
        assert _counted(tok, items, 64) == _reference(tok, items), name
        words = [text.split() for text in items if text.split()]
        assert _counted(tok, words, 64) == _reference(tok, words, is_pretokenized=True), name


def test_flush_bound_keeps_counts(
    variants: dict[str, tuple[Tokenizer, str]],
    corpus_texts: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Flushing every few pieces (bounded memory) gives the same counts and plan."""
    from vocab_adapters.planning import piece_counts

    tok, _ = variants["wordlevel"]
    items = corpus_texts[:200]
    expected = plan_from_texts(tok, items)
    monkeypatch.setattr(piece_counts, "_MAX_DISTINCT", 5)
    assert _counted(tok, items, 16) == _reference(tok, items)
    assert plan_from_texts(tok, items, batch_size=16) == expected


def test_hf_wrappers_take_the_same_path(
    hf_trained_tokenizers: dict[str, Any], corpus_texts: list[str]
) -> None:
    count: Callable[..., Any] = count_tokens
    for name, hf in hf_trained_tokenizers.items():
        items = corpus_texts[:100]
        expected = Counter(chain.from_iterable(hf(items)["input_ids"]))
        assert {i: c for i, c in enumerate(count(hf, items).counts) if c} == dict(expected), name


def test_corpus_without_repeats_goes_text_by_text(
    variants: dict[str, tuple[Tokenizer, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pieces that hardly repeat (ids, hashes) stop the piece path; counts stay exact."""
    import random
    import string

    from vocab_adapters.planning import piece_counts

    monkeypatch.setattr(piece_counts, "_PROBE", 500)
    rng = random.Random(0)
    items = [
        " ".join("".join(rng.choices(string.ascii_lowercase, k=8)) for _ in range(10))
        for _ in range(300)
    ]
    tok, _ = variants["wordlevel"]
    with texts_module._Encoder(tok) as encoder:
        pieces = encoder.pieces
        assert pieces is not None
        for start in range(0, 60, 20):
            encoder.count_pieces(items[start : start + 20], "text")
        assert pieces.stopped
        assert not encoder.count_pieces(items[:20], "text")
    repeated = items[:10] * 30
    with texts_module._Encoder(tok) as encoder:
        for start in range(0, len(repeated), 20):
            assert encoder.count_pieces(repeated[start : start + 20], "text")
    assert _counted(tok, items, 20) == _reference(tok, items)


@given(st.text(alphabet=" \t\n\r\x0b\x0c\x1c\x1f\x85ab.\u00a0\u3000\u200b", max_size=10))
def test_space_guard_equals_its_regex(text: str) -> None:
    """The substring shortcut for ASCII batches finds exactly what the regex finds."""
    from vocab_adapters.planning import piece_counts

    assert piece_counts._bad_space(text) == (piece_counts._BAD_SPACE.search(text) is not None)
