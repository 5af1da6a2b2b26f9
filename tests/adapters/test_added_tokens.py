"""Added tokens: reachable per model type, other text unchanged, rows from pieces, reversible."""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from typing import Any

import pytest
import torch

from fixtures.fast_tokenizers import FAST_TOKENIZER_NAMES, copy_tokenizer, wrap_hf
from fixtures.tiny_bert import tiny_bert
from vocab_adapters import (
    apply_plan,
    export_reduced,
    fast_tokenizer,
    plan_from_texts,
    revert_plan,
    slow_tokenizer,
    suggest_tokens,
)
from vocab_adapters.stages.tokenizer_adapter import token_pieces
from vocabcore import VocabError, VocabPlan

TEXTS = slice(0, 400)


def _join(model: dict[str, Any], pieces: Sequence[str]) -> str:
    default = "##" if model["type"] == "WordPiece" else ""
    prefix = model.get("continuing_subword_prefix") or default
    out = pieces[0]
    for piece in pieces[1:]:
        out += piece[len(prefix) :] if prefix and piece.startswith(prefix) else piece
    return out


def _word_of(model: dict[str, Any], token: str) -> str:
    suffix = model.get("end_of_word_suffix") or ""
    return token[: -len(suffix)] if suffix and token.endswith(suffix) else token


def _tokens_for(name: str, tok: Any, texts: list[str]) -> list[str]:
    """Tokens to add: suggestions, or for WordLevel words the vocabulary lacks."""
    if name == "wordlevel":
        vocab = tok.get_vocab()
        words = sorted({w for t in texts for w, _ in tok.pre_tokenizer.pre_tokenize_str(t)})
        return [w for w in words if w not in vocab and w.isalpha()][:6]
    found = suggest_tokens(tok, texts, n=8, min_count=2)
    assert found, name
    return found


def _clean(text: str) -> str:
    return text.replace("##", "")


def _check_encodings(
    original: Any, reduced: Any, plan: VocabPlan, texts: list[str]
) -> tuple[int, int]:
    """Compare every text; returns (added-token occurrences, those encoding to the new id)."""
    model = json.loads(original.to_str())["model"]
    words = [_word_of(model, t) for t in plan.added]
    unk = original.token_to_id(str(model.get("unk_token"))) if model.get("unk_token") else None
    occurrences = reached = 0
    for text in texts:
        full = original.encode(text, add_special_tokens=False)
        got = reduced.encode(text, add_special_tokens=False)
        # (the suffix-BPE fixture's BPEDecoder keeps "##" between pieces, so compare without;
        # a word the original could only write as unk now decodes to itself)
        if unk is None or unk not in full.ids:
            assert _clean(reduced.decode(got.ids)) == _clean(original.decode(full.ids)), text
        expected: list[int] | None = []
        found = 0
        for word in sorted(set(full.word_ids) - {None}):
            idx = [i for i, w in enumerate(full.word_ids) if w == word]
            joined = _join(model, [full.tokens[i] for i in idx])
            if model["type"] == "WordLevel":  # its pieces are the word or unk: use the text
                joined = text[full.offsets[idx[0]][0] : full.offsets[idx[-1]][1]]
            if joined in plan.added:
                found += 1
                expected.append(plan.added_id(joined))  # type: ignore[union-attr]
            elif any(w in _word_of(model, joined) for w in words):
                expected = None  # a longer pre-token holding an added token's text
                break
            else:
                expected.extend(plan.remap([full.ids[i] for i in idx]))  # type: ignore[union-attr]
        if expected is not None:
            assert got.ids == expected, text
            occurrences += found
            reached += sum(1 for i in got.ids if i >= len(plan.kept))
    return occurrences, reached


@pytest.mark.parametrize("name", FAST_TOKENIZER_NAMES)
def test_added_tokens_are_reachable_and_other_text_is_unchanged(
    name: str, trained_tokenizers: dict[str, Any], corpus_texts: list[str]
) -> None:
    original = trained_tokenizers[name]
    texts = corpus_texts[TEXTS]
    tokens = _tokens_for(name, original, texts)
    plan = plan_from_texts(original, texts, add_tokens=tokens)
    assert plan.added == tuple(tokens)
    tok = copy_tokenizer(original)
    before = tok.to_str()
    applied = fast_tokenizer.apply(plan, tok)
    assert tok.get_vocab_size(with_added_tokens=True) == plan.new_size
    for token in tokens:
        assert tok.token_to_id(token) == plan.added_id(token)
        assert tok.id_to_token(plan.added_id(token)) == token
    occurrences, reached = _check_encodings(original, tok, plan, texts)
    if name != "byte_fallback_bpe":  # its pre-token is the whole text (no pre-tokenizer)
        assert occurrences > 0 and reached == occurrences
    else:  # the whole text being the word is that pre-token
        for token in tokens:
            surface = token.replace("▁", " ")[1:]
            assert tok.encode(surface, add_special_tokens=False).ids == [plan.added_id(token)]
    applied.revert()
    assert tok.to_str() == before


def test_wordpiece_continuation_token_and_longer_words(
    wordpiece_tokenizer: Any, corpus_texts: list[str]
) -> None:
    texts = corpus_texts[TEXTS]
    pieces = wordpiece_tokenizer.encode("assertion", add_special_tokens=False).tokens
    assert len(pieces) > 1
    plan = plan_from_texts(wordpiece_tokenizer, texts, add_tokens=["assertion", "##ertion"])
    tok = copy_tokenizer(wordpiece_tokenizer)
    applied = fast_tokenizer.apply(plan, tok)
    try:
        assert tok.encode("assertion", add_special_tokens=False).ids == [plan.added_id("assertion")]
        longer = tok.encode("assertions", add_special_tokens=False)
        assert longer.ids[0] == plan.added_id("assertion")
        assert tok.decode(longer.ids) == "assertions"
    finally:
        applied.revert()


def test_bpe_refuses_tokens_merges_cannot_reach(suffix_bpe_tokenizer: Any) -> None:
    word = "assertion"
    pieces = suffix_bpe_tokenizer.encode(word, add_special_tokens=False).tokens
    assert len(pieces) > 2
    plan = VocabPlan.identity(suffix_bpe_tokenizer.get_vocab_size()).adding([word + "</w>"])
    before = suffix_bpe_tokenizer.to_str()
    with pytest.raises(VocabError, match="pieces"):
        fast_tokenizer.apply(plan, suffix_bpe_tokenizer)
    bare = VocabPlan.identity(plan.vocab_size)
    with pytest.raises(VocabError, match="continuing-subword prefix"):
        fast_tokenizer.apply(bare.adding(["##zzqq"]), suffix_bpe_tokenizer)
    with pytest.raises(VocabError, match="end-of-word suffix"):
        fast_tokenizer.apply(bare.adding(["abc"]), suffix_bpe_tokenizer)
    assert suffix_bpe_tokenizer.to_str() == before


@pytest.mark.parametrize("name", ["wordpiece", "minilm", "byte_bpe"])
def test_slow_tokenizers_reach_added_tokens(
    name: str, slow_cases: dict[str, Any], slow_plan_texts: list[str]
) -> None:
    case = slow_cases[name]
    original, tok = case.make(), case.make()
    tokens = suggest_tokens(tok, slow_plan_texts, n=5, min_count=2)
    assert tokens
    plan = plan_from_texts(tok, slow_plan_texts, add_tokens=tokens)
    applied = slow_tokenizer.apply(plan, tok)
    assert len(tok) == plan.new_size
    for token in tokens:
        assert tok.convert_tokens_to_ids(token) == plan.added_id(token)
    hits = 0
    for text in slow_plan_texts:
        full = original.encode(text, add_special_tokens=False)
        got = tok.encode(text, add_special_tokens=False)
        assert tok.decode(got) == original.decode(full)
        words = [t.lstrip("Ġ").lower() for t in tokens]
        if not any(w in text.lower() for w in words):
            assert got == plan.remap(full)
        hits += sum(1 for i in got if i >= len(plan.kept))
    assert hits > 0
    applied.revert()
    assert tok.encode(slow_plan_texts[0]) == original.encode(slow_plan_texts[0])


# (slow sentencepiece tokenizers: tests/adapters/test_sp_added.py)


# -- model side -----------------------------------------------------------------------------------


@pytest.fixture
def hf_wordpiece(trained_tokenizers: dict[str, Any]) -> Any:
    return wrap_hf("wordpiece", trained_tokenizers["wordpiece"])


def _setup(hf_tok: Any, texts: list[str], rows: int | None = None) -> tuple[Any, Any, VocabPlan]:
    model = tiny_bert(rows or len(hf_tok), seed=1, hidden_dropout_prob=0.0)
    with torch.no_grad():
        model.cls.predictions.bias.normal_()
    plan = plan_from_texts(hf_tok, texts, add_tokens=6)
    return model, torch.optim.AdamW(model.parameters(), lr=1e-2), plan


def _step(model: Any, optimizer: Any, ids: list[list[int]]) -> None:
    batch = torch.tensor(ids)
    loss = model(input_ids=batch, labels=batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()


def test_rows_start_as_mean_of_pieces_and_optimizer_state_at_zero(
    hf_wordpiece: Any, corpus_texts: list[str]
) -> None:
    texts = corpus_texts[TEXTS]
    model, optimizer, plan = _setup(hf_wordpiece, texts)
    _step(model, optimizer, [hf_wordpiece.encode(texts[0])[:20]])
    weight = model.get_input_embeddings().weight.detach().clone()
    bias = model.cls.predictions.bias.detach().clone()
    pieces = token_pieces(hf_wordpiece, plan.added)
    for token, ids in zip(plan.added, pieces, strict=True):
        surface = hf_wordpiece.convert_ids_to_tokens(ids)
        assert _join({"type": "WordPiece"}, surface) == token
    applied = apply_plan(plan, model=model, tokenizer=hf_wordpiece, optimizer=optimizer)
    emb = model.get_input_embeddings().weight
    assert emb.shape[0] == plan.new_size == model.config.vocab_size == len(hf_wordpiece)
    assert model.get_output_embeddings().weight is emb  # tied stays tied
    n = len(plan.kept)
    assert torch.equal(emb[:n], weight[list(plan.kept)])
    for k, ids in enumerate(pieces):
        assert torch.allclose(emb[n + k], weight[ids].mean(0), atol=1e-6)
        assert torch.allclose(model.cls.predictions.bias[n + k], bias[ids].mean(), atol=1e-6)
    state = optimizer.state[emb]
    assert torch.count_nonzero(state["exp_avg"][n:]) == 0
    assert torch.count_nonzero(state["exp_avg_sq"][n:]) == 0
    assert torch.count_nonzero(state["exp_avg"][:n]) > 0
    ids = hf_wordpiece(texts[1])["input_ids"][:30]
    _step(model, optimizer, [ids])
    revert_plan(applied)


def test_revert_is_exact(hf_wordpiece: Any, corpus_texts: list[str]) -> None:
    texts = corpus_texts[TEXTS]
    model, optimizer, plan = _setup(hf_wordpiece, texts)
    _step(model, optimizer, [hf_wordpiece.encode(texts[0])[:20]])
    state = copy.deepcopy(model.state_dict())
    opt_state = copy.deepcopy(optimizer.state_dict())
    config = model.config.to_dict()
    tok_json = hf_wordpiece.backend_tokenizer.to_str()
    applied = apply_plan(plan, model=model, tokenizer=hf_wordpiece, optimizer=optimizer)
    revert_plan(applied)
    assert model.config.to_dict() == config
    assert hf_wordpiece.backend_tokenizer.to_str() == tok_json
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    after = optimizer.state_dict()
    for key, value in opt_state["state"].items():
        for name, tensor in value.items():
            assert torch.equal(after["state"][key][name], tensor), (key, name)


@pytest.mark.parametrize("padding", [0, 3, 20])
def test_keep_added_grows_and_round_trips(
    padding: int, hf_wordpiece: Any, corpus_texts: list[str], tmp_path: Any
) -> None:
    texts = corpus_texts[TEXTS]
    size = len(hf_wordpiece)
    model, optimizer, plan = _setup(hf_wordpiece, texts, rows=size + padding)
    n_added = len(plan.added)
    full_before = model.get_input_embeddings().weight.detach().clone()
    applied = apply_plan(plan, model=model, tokenizer=hf_wordpiece, optimizer=optimizer)
    ids = hf_wordpiece(" ".join(plan.added) + " " + texts[2])["input_ids"][:40]
    _step(model, optimizer, [ids])
    reduced = model.get_input_embeddings().weight.detach().clone()
    reduced_state = optimizer.state[model.get_input_embeddings().weight]["exp_avg"].clone()
    emb_param = applied.swaps[0].full
    revert_plan(applied, keep_added=True)

    rows = max(size + padding, size + n_added)
    emb = model.get_input_embeddings().weight
    assert emb is emb_param and emb.shape[0] == rows
    assert model.get_output_embeddings().weight is emb
    assert model.config.vocab_size == rows
    assert len(hf_wordpiece) == size + n_added
    n = len(plan.kept)
    dropped = sorted(set(range(size)) - set(plan.kept))
    assert torch.equal(emb[dropped], full_before[dropped])  # original ids unchanged
    assert torch.equal(emb[list(plan.kept)], reduced[:n])  # kept rows as trained
    positions = list(range(size, size + n_added))
    assert torch.equal(emb[positions], reduced[n:])  # added rows as trained
    state = optimizer.state[emb]["exp_avg"]
    assert state.shape == emb.shape
    assert torch.equal(state[positions], reduced_state[n:])
    for k, token in enumerate(plan.added):
        assert hf_wordpiece.convert_tokens_to_ids(token) == size + k
        assert hf_wordpiece(token, add_special_tokens=False)["input_ids"] == [size + k]
    _step(model, optimizer, [ids])  # the grown model and optimizer train

    model.save_pretrained(tmp_path)
    hf_wordpiece.save_pretrained(tmp_path)
    from transformers import AutoTokenizer, BertForMaskedLM

    model2 = BertForMaskedLM.from_pretrained(tmp_path).eval()
    tok2 = AutoTokenizer.from_pretrained(tmp_path)
    assert len(tok2) == size + n_added
    batch = tok2(texts[3] + " " + plan.added[0], return_tensors="pt")
    assert (
        batch["input_ids"][0].tolist() == hf_wordpiece(texts[3] + " " + plan.added[0])["input_ids"]
    )
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(**batch).logits, model2(**batch).logits, atol=1e-5)


def test_keep_added_for_bare_and_unigram_tokenizers(
    trained_tokenizers: dict[str, Any], corpus_texts: list[str]
) -> None:
    for name in ("unigram", "bytelevel_bpe"):
        original = trained_tokenizers[name]
        tok = copy_tokenizer(original)
        texts = corpus_texts[:200]
        plan = plan_from_texts(tok, texts, add_tokens=2)
        assert plan.added
        applied = apply_plan(plan, tokenizer=tok)
        size = original.get_vocab_size(with_added_tokens=True)
        revert_plan(applied, keep_added=True)
        assert tok.get_vocab_size(with_added_tokens=True) == size + len(plan.added)
        for k, token in enumerate(plan.added):
            assert tok.token_to_id(token) == size + k
        for text in ("plain text stays", "x = [1, 2]"):
            assert tok.encode(text).ids == original.encode(text).ids


def test_export_writes_kept_and_added(
    hf_wordpiece: Any, corpus_texts: list[str], tmp_path: Any
) -> None:
    texts = corpus_texts[TEXTS]
    model, _, plan = _setup(hf_wordpiece, texts)
    out = export_reduced(model, hf_wordpiece, plan, tmp_path / "out")
    from transformers import AutoTokenizer, BertForMaskedLM

    tok2 = AutoTokenizer.from_pretrained(out)
    model2 = BertForMaskedLM.from_pretrained(out)
    assert len(tok2) == plan.new_size == model2.config.vocab_size
    assert tok2(plan.added[0], add_special_tokens=False)["input_ids"] == [len(plan.kept)]
    assert VocabPlan.load(out / "vocabcore_plan.json") == plan


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tokens", "message"),
    [(["[CLS]"], "already has it as one token"), ([""], "non-empty"), (["zqx", "zqx"], "twice")],
)
def test_bad_tokens_are_refused(
    tokens: list[str], message: str, hf_wordpiece: Any, corpus_texts: list[str]
) -> None:
    texts = corpus_texts[:50]
    with pytest.raises(VocabError, match=message):
        plan_from_texts(hf_wordpiece, texts, add_tokens=tokens)


def test_apply_refuses_a_token_the_tokenizer_has(
    hf_wordpiece: Any, corpus_texts: list[str]
) -> None:
    model = tiny_bert(len(hf_wordpiece))
    state = copy.deepcopy(model.state_dict())
    before = hf_wordpiece.backend_tokenizer.to_str()
    plan = plan_from_texts(hf_wordpiece, corpus_texts[:50])
    for token in ("the", "hello world"):  # a model token, a tokenizer-level added token
        with pytest.raises(VocabError, match="already has it as one token"):
            apply_plan(plan.adding([token]), model=model, tokenizer=hf_wordpiece)
    with pytest.raises(VocabError, match="pass tokenizer="):
        apply_plan(plan.adding(["zzqq"]), model=model)
    assert hf_wordpiece.backend_tokenizer.to_str() == before
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key])


# -- sentencepiece-style BPE (Llama 2, Mistral v1, Gemma): no pre-tokenizer cuts the words --------


def _sentencepiece_bpe(corpus: list[str]) -> Any:
    """byte_fallback BPE behind Prepend("▁") + Replace(" ", "▁") and no pre-tokenizer, trained
    on words cut at "▁" as sentencepiece does (so no token holds "▁" after another character)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.pre_tokenizer = pre_tokenizers.Split("▁", "merged_with_next")
    specials = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256))]
    trainer = trainers.BpeTrainer(
        vocab_size=1200, special_tokens=specials, limit_alphabet=150, show_progress=False
    )
    tok.train_from_iterator(corpus, trainer)
    tok.pre_tokenizer = None  # as converted checkpoints have it: the whole text is one pre-token
    tok.decoder = decoders.Sequence(
        [
            decoders.Replace("▁", " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(" ", 1, 0),
        ]
    )
    return tok


@pytest.mark.parametrize("wrapped", [False, True])
def test_sentencepiece_bpe_reaches_multi_piece_tokens_inside_sentences(
    wrapped: bool, corpus_texts: list[str], tmp_path: Any
) -> None:
    tok = _sentencepiece_bpe(corpus_texts)
    if wrapped:  # as AutoTokenizer gives it (transformers 5 rewrites it as Metaspace(split=False))
        from transformers import AutoTokenizer, LlamaTokenizerFast

        LlamaTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>").save_pretrained(
            str(tmp_path)
        )
        tok = AutoTokenizer.from_pretrained(str(tmp_path))

    def encode(text: str) -> list[int]:
        if wrapped:
            ids: list[int] = tok(text, add_special_tokens=False)["input_ids"]
            return ids
        return list(tok.encode(text, add_special_tokens=False).ids)

    texts = [t for t in corpus_texts[:300] if "ibuprofen" not in t and "acetaminophen" not in t]
    sentences = [
        "Take ibuprofen now, or acetaminophen later.",
        "ibuprofen",
        "ibuprofens and acetaminophen-based ibuprofen",
    ]
    words = ["▁ibuprofen", "▁acetaminophen"]
    assert all(len(encode(w.lstrip("▁"))) > 2 for w in words)  # merges alone cannot join them
    full = [encode(t) for t in texts]
    before = encode(sentences[0])
    assert len(before) > 4
    plan = plan_from_texts(tok, texts).adding(words)
    applied = apply_plan(plan, tokenizer=tok)
    new = {w: len(plan.kept) + k for k, w in enumerate(words)}
    assert [encode(t) for t in texts] == [plan.remap(ids) for ids in full]
    got = encode(sentences[0])
    assert new["▁ibuprofen"] in got and new["▁acetaminophen"] in got
    assert encode("ibuprofen") == [new["▁ibuprofen"]]
    for text in [*sentences, *texts[:50]]:
        assert tok.decode(encode(text)) == text
    revert_plan(applied)
    assert encode(sentences[0]) == before
    assert [encode(t) for t in texts] == full


def test_sentencepiece_bpe_with_tokens_across_words_keeps_its_pre_tokenizer(
    load_llm_tokenizer: Any, corpus_texts: list[str]
) -> None:
    """The llm fixtures' byte_fallback BPE was trained on whole lines ("e▁" is a token): cutting
    at "▁" would change encodings, so the added token is reached where it is the whole text."""
    tok = load_llm_tokenizer("gemma")
    backend = tok.backend_tokenizer
    before = backend.pre_tokenizer.__getstate__() if backend.pre_tokenizer is not None else None
    texts = corpus_texts[:200]
    full = [tok(t)["input_ids"] for t in texts]
    plan = plan_from_texts(tok, texts).adding(["▁ibuprofen"])
    apply_plan(plan, tokenizer=tok)
    backend = tok.backend_tokenizer
    after = backend.pre_tokenizer.__getstate__() if backend.pre_tokenizer is not None else None
    assert after == before
    normalizer = backend.normalizer
    text = next(
        t
        for t in ("ibuprofen", " ibuprofen")
        if (normalizer.normalize_str(t) if normalizer is not None else t.replace(" ", "▁"))
        == "▁ibuprofen"
    )
    assert tok(text, add_special_tokens=False)["input_ids"] == [len(plan.kept)]
    assert [tok(t)["input_ids"] for t in texts] == [plan.remap(ids) for ids in full]


def test_exported_family_tokenizer_reaches_added_tokens_after_reload(
    load_llm_tokenizer: Any, tmp_path: Any
) -> None:
    """A Qwen2-style tokenizer whose added token needs ignore_merges, exported and reloaded as
    docs/added_tokens.md says (transformers 5's family class rebuilds the BPE without it)."""
    import transformers

    from fixtures.fast_tokenizers import build_corpus
    from fixtures.llm_models import build_llm_case

    tok = load_llm_tokenizer("qwen2")
    model = build_llm_case("qwen2", tok)
    corpus = build_corpus()
    plan = plan_from_texts(tok, corpus[200:240]).adding(["Ġcombined"])
    assert len(tok.tokenize(" combined")) > 2
    out = export_reduced(model, tok, plan, tmp_path / "out")
    generic = getattr(transformers, "TokenizersBackend", None)
    if generic is not None:  # transformers 5: the export names the class that reads the file
        config = json.loads((out / "tokenizer_config.json").read_text(encoding="utf-8"))
        assert config["tokenizer_class"] == "TokenizersBackend"
        loaded = generic.from_pretrained(out)
    else:
        loaded = transformers.AutoTokenizer.from_pretrained(out)
    new_id = plan.new_size - 1
    assert loaded(" combined", add_special_tokens=False)["input_ids"] == [new_id]
    applied = apply_plan(plan, tokenizer=tok)  # the reduced tokenizer in memory
    try:
        for text in corpus[200:210]:
            want = tok(text, add_special_tokens=False)["input_ids"]
            assert loaded(text, add_special_tokens=False)["input_ids"] == want
    finally:
        revert_plan(applied)
