"""Added tokens in slow sentencepiece tokenizers: new pieces of the in-memory model proto."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch

from fixtures.slow_tokenizers import V5, SlowCase
from fixtures.tiny_bert import tiny_bert
from vocab_adapters import apply_plan, plan_from_texts, revert_plan, suggest_tokens
from vocab_adapters.stages import slow_tokenizer
from vocab_adapters.stages.slow_tokenizer import slow_token_pieces, sp_processor
from vocabcore import VocabError, VocabPlan

SP_CASES = ["xlmr_unigram", "xlmr_bpe", "deberta_unigram", "deberta_bpe"]


def _proto_bytes(tok: Any) -> bytes:
    found = sp_processor(tok)
    assert found is not None
    data: bytes = found[1].serialized_model_proto()
    return data


def _words(tok: Any, text: str) -> list[list[str]]:
    """The pieces of ``text`` grouped into words (a word starts at a piece beginning with ▁)."""
    added = tok.added_tokens_encoder
    words: list[list[str]] = []
    for piece in tok.tokenize(text):
        if piece in added or piece.startswith("▁") or not words or words[-1][0] in added:
            words.append([piece])
        else:
            words[-1].append(piece)
    return words


def _check_texts(original: Any, tok: Any, plan: VocabPlan, texts: list[str]) -> int:
    """Every text: words equal to an added token encode to its id, other words as before.

    Returns how many added-token words were met (texts with a longer word holding an added
    token's text are only checked to decode as before).
    """
    hits = 0
    for text in texts:
        full = original.encode(text, add_special_tokens=False)
        got = tok.encode(text, add_special_tokens=False)
        assert tok.decode(got) == original.decode(full), text
        expected: list[int] = []
        found = 0
        for pieces in _words(original, text):
            word = "".join(pieces)
            if word in plan.added:
                expected.append(plan.added_id(word))  # type: ignore[arg-type]
                found += 1
            elif any(t in word for t in plan.added):
                break
            else:
                expected.extend(plan.remap(original.convert_tokens_to_ids(pieces)))
        else:
            assert got == expected, text
            hits += found
    return hits


@pytest.fixture(params=SP_CASES)
def case(request: pytest.FixtureRequest, slow_cases: dict[str, SlowCase]) -> SlowCase:
    return slow_cases[request.param]


def _tokens(tok: Any, texts: list[str]) -> list[str]:
    tokens = suggest_tokens(tok, texts, n=6, min_count=2)
    assert tokens and all(t.startswith("▁") for t in tokens)
    return tokens


def test_added_pieces_are_reachable_and_revert_is_exact(
    case: SlowCase, slow_plan_texts: list[str], tmp_path: Path
) -> None:
    original, tok = case.make(), case.make()
    tokens = _tokens(tok, slow_plan_texts)
    plan = plan_from_texts(tok, slow_plan_texts, add_tokens=tokens)
    proto, vocab = _proto_bytes(tok), tok.get_vocab()
    applied = slow_tokenizer.apply(plan, tok)
    assert len(tok) == plan.new_size
    for k, token in enumerate(tokens):
        new_id = plan.new_size - len(tokens) + k
        assert plan.added_id(token) == new_id
        assert tok.convert_tokens_to_ids(token) == new_id
        assert tok.convert_ids_to_tokens(new_id) == token
        assert tok.encode(token[1:], add_special_tokens=False) == [new_id]
        assert new_id in tok.encode(f"see {token[1:]} here", add_special_tokens=False)
    sentences = [f"{t[1:]} and {t[1:]}." for t in tokens]
    assert _check_texts(original, tok, plan, [*slow_plan_texts, *sentences]) > 0
    if not _keep_added_refused(tok):  # saved while applied, it loads as it is
        tok.save_pretrained(str(tmp_path))
        again = type(tok).from_pretrained(str(tmp_path))
        assert [again.encode(t) for t in sentences] == [tok.encode(t) for t in sentences]
    applied.revert()
    assert _proto_bytes(tok) == proto and tok.get_vocab() == vocab
    for text in slow_plan_texts[:20]:
        assert tok.encode(text) == original.encode(text)


def test_rows_start_as_the_mean_of_the_original_pieces(
    case: SlowCase, slow_plan_texts: list[str]
) -> None:
    tok = case.make()
    tokens = _tokens(tok, slow_plan_texts)[:3]
    pieces = slow_token_pieces(tok, tokens)
    for token, ids in zip(tokens, pieces, strict=True):
        assert len(ids) > 1 and "".join(tok.convert_ids_to_tokens(ids)) == token
        assert ids == tok.encode(token[1:], add_special_tokens=False)
    model = tiny_bert(len(tok), seed=2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    weight = model.get_input_embeddings().weight.detach().clone()
    state = copy.deepcopy(model.state_dict())
    plan = plan_from_texts(tok, slow_plan_texts, add_tokens=tokens)
    applied = apply_plan(plan, model=model, tokenizer=tok, optimizer=optimizer)
    emb = model.get_input_embeddings().weight
    n = len(plan.kept)
    assert emb.shape[0] == plan.new_size == len(tok) == model.config.vocab_size
    for k, ids in enumerate(pieces):
        assert torch.allclose(emb[n + k], weight[ids].mean(0), atol=1e-6)
    revert_plan(applied)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def _keep_added_refused(tok: Any) -> bool:
    """transformers 4 XLM-R: ``<mask>`` is in the fairseq table after the pieces."""
    return "fairseq_tokens_to_ids" in vars(tok)


def test_keep_added_appends_the_pieces(
    case: SlowCase, slow_plan_texts: list[str], tmp_path: Path
) -> None:
    original, tok = case.make(), case.make()
    if _keep_added_refused(tok):
        pytest.skip("refused: see test_keep_added_refused_for_the_fairseq_table")
    size = len(tok)
    tokens = _tokens(tok, slow_plan_texts)
    plan = plan_from_texts(tok, slow_plan_texts, add_tokens=tokens)
    model = tiny_bert(size, seed=3)
    applied = apply_plan(plan, model=model, tokenizer=tok)
    revert_plan(applied, keep_added=True)
    assert len(tok) == size + len(tokens) == model.get_input_embeddings().weight.shape[0]
    grown = VocabPlan.identity(size).adding(tokens)
    for k, token in enumerate(tokens):
        assert tok.convert_tokens_to_ids(token) == size + k
        assert tok.encode(token[1:], add_special_tokens=False) == [size + k]
    sentences = [f"{t[1:]} or {t[1:]}" for t in tokens]
    assert _check_texts(original, tok, grown, [*slow_plan_texts, *sentences]) > 0
    tok.save_pretrained(str(tmp_path))
    again = type(tok).from_pretrained(str(tmp_path))
    assert len(again) == len(tok)
    for text in [*slow_plan_texts[:30], *sentences]:
        assert again.encode(text) == tok.encode(text), text


def test_keep_added_refused_for_the_fairseq_table(
    slow_cases: dict[str, SlowCase], slow_plan_texts: list[str]
) -> None:
    tok = slow_cases["xlmr_unigram"].make()
    if not _keep_added_refused(tok):
        pytest.skip("transformers 5 has no slow XLM-R class (the generic backend grows)")
    original = slow_cases["xlmr_unigram"].make()
    plan = plan_from_texts(tok, slow_plan_texts, add_tokens=_tokens(tok, slow_plan_texts))
    applied = apply_plan(plan, tokenizer=tok)
    reduced = {name: id(value) for name, value in vars(tok).items()}
    ids = [tok.encode(t) for t in slow_plan_texts]
    with pytest.raises(VocabError, match="fast tokenizer"):
        revert_plan(applied, keep_added=True)
    assert {name: id(value) for name, value in vars(tok).items()} == reduced
    assert [tok.encode(t) for t in slow_plan_texts] == ids
    revert_plan(applied)
    assert tok.get_vocab() == original.get_vocab()
    assert [tok.encode(t) for t in slow_plan_texts] == [original.encode(t) for t in slow_plan_texts]


def test_refusals_change_nothing(case: SlowCase, slow_plan_texts: list[str]) -> None:
    tok = case.make()
    plan = plan_from_texts(tok, slow_plan_texts)
    state = {name: id(value) for name, value in vars(tok).items()}
    proto = _proto_bytes(tok)
    refused = ["▁zz☃qq", "▁in order", "▁\uff46\uff4f\uff4fbar"]  # unknown; normalized
    if case.bpe:  # a word of more than two pieces
        word = next(
            "".join(w)
            for t in slow_plan_texts
            for w in _words(tok, t)
            if len(w) > 2 and "".join(w) not in tok.get_vocab()
        )
        refused.append(word)
    messages = ["unknown or byte pieces", "'▁in▁order'", "'▁foobar'", "two"]
    for token, message in zip(refused, messages, strict=False):
        with pytest.raises(VocabError, match=message):
            slow_tokenizer.apply(plan.adding([token]), tok)
    with pytest.raises(VocabError, match="already has it as one token"):
        slow_tokenizer.apply(plan.adding([tok.convert_ids_to_tokens(plan.kept[-2])]), tok)
    assert {name: id(value) for name, value in vars(tok).items()} == state
    assert _proto_bytes(tok) == proto


@pytest.mark.skipif(V5, reason="CamembertTokenizer is a fast tokenizer in transformers 5")
def test_camembert_mask_after_the_pieces(
    slow_cases: dict[str, SlowCase], slow_plan_texts: list[str], tmp_path: Path
) -> None:
    from transformers import CamembertTokenizer

    model_file = str(slow_cases["xlmr_unigram"].files / "sentencepiece.bpe.model")
    original, tok = CamembertTokenizer(model_file), CamembertTokenizer(model_file)
    size = len(tok)
    assert tok.mask_token_id == size - 1  # a tokenizer-level added token after the pieces
    tokens = _tokens(tok, slow_plan_texts)
    plan = plan_from_texts(tok, slow_plan_texts, add_tokens=tokens)
    applied = apply_plan(plan, tokenizer=tok)
    assert tok.mask_token_id == plan.old_to_new(size - 1)
    sentences = [f"{t[1:]} <mask> {t[1:]}" for t in tokens]
    assert _check_texts(original, tok, plan, [*slow_plan_texts, *sentences]) > 0
    revert_plan(applied, keep_added=True)
    assert tok.mask_token_id == size - 1
    for k, token in enumerate(tokens):
        assert tok.encode(token[1:], add_special_tokens=False) == [size + k]
    tok.save_pretrained(str(tmp_path))
    again = CamembertTokenizer.from_pretrained(str(tmp_path))
    for text in [*slow_plan_texts[:30], *sentences]:
        assert again.encode(text) == tok.encode(text), text


def test_an_added_token_inside_a_longer_one(case: SlowCase, slow_plan_texts: list[str]) -> None:
    """A shorter added token is a piece when the longer one is scored (or split, for BPE)."""
    original, tok = case.make(), case.make()
    vocab = tok.get_vocab()
    pairs = []  # (shorter, longer): the longer word's first pieces make the shorter one
    for text in slow_plan_texts:
        for pieces in _words(original, text):
            if len(pieces) != 3 or "".join(pieces) in vocab:
                continue
            short = pieces[0] + pieces[1]
            if short not in vocab and original.tokenize(short[1:]) == pieces[:2]:
                pairs.append((short, "".join(pieces)))
    assert pairs
    short, long = pairs[0]
    plan = plan_from_texts(tok, slow_plan_texts, add_tokens=[long, short])
    applied = slow_tokenizer.apply(plan, tok)
    for token in (short, long):
        assert tok.encode(token[1:], add_special_tokens=False) == [plan.added_id(token)]
    assert _check_texts(original, tok, plan, [f"{long[1:]} {short[1:]}", *slow_plan_texts]) > 0
    applied.revert()
    assert tok.get_vocab() == vocab


# Other slow sentencepiece classes of the installed major, on the same trained models.
OTHER_CLASSES = (
    ["BertGenerationTokenizer", "GPTSw3Tokenizer", "SiglipTokenizer", "SpeechT5Tokenizer"]
    if V5
    else ["T5Tokenizer", "LlamaTokenizer", "AlbertTokenizer", "XLNetTokenizer", "BigBirdTokenizer"]
)


@pytest.mark.parametrize("kind", ["unigram", "bpe"])
@pytest.mark.parametrize("class_name", OTHER_CLASSES)
def test_other_sentencepiece_classes(
    class_name: str, kind: str, slow_cases: dict[str, SlowCase], slow_plan_texts: list[str]
) -> None:
    import transformers

    cls = getattr(transformers, class_name)
    model_file = str(slow_cases[f"xlmr_{kind}"].files / "sentencepiece.bpe.model")
    original, tok = cls(vocab_file=model_file), cls(vocab_file=model_file)
    assert slow_tokenizer.supports(tok)
    size = len(tok)
    tokens = suggest_tokens(tok, slow_plan_texts, n=4, min_count=2)
    plan = plan_from_texts(tok, slow_plan_texts, add_tokens=tokens)
    sentences = [f"{t[1:]} is {t[1:]}" for t in tokens]
    applied = apply_plan(plan, tokenizer=tok)
    assert _check_texts(original, tok, plan, [*slow_plan_texts, *sentences]) > 0
    revert_plan(applied, keep_added=True)
    grown = VocabPlan.identity(size).adding(tokens)
    assert len(tok) == grown.new_size
    assert _check_texts(original, tok, grown, [*slow_plan_texts, *sentences]) > 0


def test_unigram_with_user_defined_symbols_refuses_a_top_score(
    slow_cases: dict[str, SlowCase], slow_plan_texts: list[str], tmp_path: Path
) -> None:
    import transformers
    from sentencepiece import sentencepiece_model_pb2

    tok = slow_cases["xlmr_unigram"].make()
    proto = sentencepiece_model_pb2.ModelProto.FromString(_proto_bytes(tok))  # type: ignore[attr-defined]
    for piece in proto.pieces:
        if piece.type == 1:
            piece.score = -0.5  # every two-piece word scores -1: its piece would need 0
    proto.pieces.add(piece="<user>", score=0.0, type=4)
    path = tmp_path / "user.model"
    path.write_bytes(proto.SerializeToString())
    cls = transformers.SentencePieceBackend if V5 else transformers.LlamaTokenizer
    tok = cls(vocab_file=str(path), unk_token="<unk>")
    before = _proto_bytes(tok)
    word = next(w for t in slow_plan_texts for w in _words(tok, t) if len(w) == 2)
    plan = VocabPlan.identity(len(tok)).adding(["".join(word)])
    with pytest.raises(VocabError, match="user-defined symbols"):
        slow_tokenizer.apply(plan, tok)
    assert _proto_bytes(tok) == before and len(tok) == plan.vocab_size


def test_byte_fallback_pieces_are_neither_suggested_nor_added(
    slow_corpus: list[str], tmp_path: Path
) -> None:
    import sentencepiece as spm
    import transformers

    rare = "\u2603\u2604 snowman comet \u2603\u2604"  # characters left to byte pieces
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([*slow_corpus[:400], rare]),
        model_prefix=str(tmp_path / "bytes"),
        vocab_size=500,
        model_type="unigram",  # (BPE never suggests them: bytes make three pieces or more)
        byte_fallback=True,
        character_coverage=0.99,
        minloglevel=2,
        num_threads=1,
    )
    cls = transformers.SentencePieceBackend if V5 else transformers.LlamaTokenizer
    tok = cls(vocab_file=str(tmp_path / "bytes.model"), unk_token="<unk>")
    texts = [rare] * 5
    assert any(p.startswith("<0x") for p in tok.tokenize(rare))
    assert all("<0x" not in t for t in suggest_tokens(tok, texts, n=20, min_count=1))
    plan = VocabPlan.identity(len(tok)).adding(["\u2581\u2603\u2604"])
    with pytest.raises(VocabError, match="unknown or byte pieces"):
        slow_tokenizer.apply(plan, tok)
