"""``suggest_tokens``: the pre-tokens of a corpus that cost the most extra tokens.

A pre-token (a word, as the tokenizer's normalizer and pre-tokenizer cut the text) that the
model splits into ``p`` pieces costs ``p - 1`` tokens more than it would as one token; over a
corpus it costs ``count * (p - 1)``. The suggestions are the costliest pre-tokens, in the
tokenizer's own token form (``get_vocab()`` style: ``"Ġword"`` after a space in byte-level BPE,
``"▁word"`` with Metaspace, ``"word"`` in WordPiece, ``"word</w>"`` with an end-of-word
suffix), ready for ``plan.adding(...)`` / ``plan_from_texts(..., add_tokens=...)``.

Only tokens that can be added are suggested: for a BPE model that can neither look whole words up
nor switch that on safely (see :mod:`vocab_adapters.tokenization.added_tokens`), and for slow
byte-level BPE and sentencepiece BPE tokenizers, pre-tokens of exactly two pieces; never pre-tokens
holding byte-fallback or unknown pieces of a BPE model, or unknown or byte pieces of a slow
sentencepiece model. A model whose normalizer writes spaces as ``"▁"`` with no pre-tokenizer that
cuts there (Llama 2 and Gemma style, where the whole text is one pre-token; transformers 5 writes
Gemma's with a ``Split(" ")`` that never matches) is cut into words before each ``"▁"``, and each
word is split by the model alone; so are the pieces of a slow sentencepiece tokenizer. Conversations
suggest from their turns' contents.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from vocab_adapters.tokenization.tokenizer_backend import backend_of, tokenizer_document
from vocabcore import VocabError

__all__ = ["suggest_tokens", "suggest_with_reasons"]


def _strings(item: Any, index: int) -> list[str]:
    """The texts one input item holds: a text, a pair, a word list or a conversation's contents.

    A conversation's turns give their ``content`` (a str, or the ``text`` of its parts).
    """
    if isinstance(item, str):
        return [item]
    if isinstance(item, (tuple, list)):
        if item and isinstance(item[0], Mapping):
            from vocab_adapters.planning.chat import check_conversation

            out: list[str] = []
            for turn in check_conversation(item, index):
                content = turn.get("content")
                if isinstance(content, str):
                    out.append(content)
                elif isinstance(content, (list, tuple)):
                    out.extend(
                        part["text"]
                        for part in content
                        if isinstance(part, Mapping) and isinstance(part.get("text"), str)
                    )
            return out
        if all(isinstance(x, str) for x in item):
            return list(item)
        if len(item) == 2 and all(isinstance(x, (list, tuple)) for x in item):
            words = [w for x in item for w in x]
            if all(isinstance(w, str) for w in words):
                return words
    raise VocabError(
        f"item {index} of texts is none of str, (str, str) pair, pre-split word list or "
        f"conversation (got {type(item).__name__} {item!r:.80}); fix or drop that item"
    )


def _batches(texts: Iterable[Any], size: int) -> Iterator[list[str]]:
    if isinstance(texts, (str, bytes)):
        raise VocabError("'texts' must be an iterable of str (got a single str)")
    batch: list[str] = []
    for index, item in enumerate(texts):
        batch.extend(_strings(item, index))
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _join(pieces: Sequence[str], prefix: str) -> str:
    out = pieces[0]
    for piece in pieces[1:]:
        out += piece[len(prefix) :] if prefix and piece.startswith(prefix) else piece
    return out


def _fast_words(tokenizer: Any, texts: Iterable[Any]) -> tuple[Counter[tuple[str, ...]], Any]:
    backend: Any = backend_of(tokenizer)
    _, document = tokenizer_document(tokenizer)
    model = document["model"]
    words: Counter[tuple[str, ...]] = Counter()
    if model["type"] in ("BPE", "Unigram") and _metaspace_only(backend):
        inner = backend.model
        for batch in _batches(texts, 1000):
            for text in batch:
                for part in _metaspace_form(backend, text):
                    for word in re.split(r"(?=▁)", part):
                        if word:
                            words[tuple(t.value for t in inner.tokenize(word))] += 1
        return words, document
    for batch in _batches(texts, 1000):
        for encoding in backend.encode_batch(batch, add_special_tokens=False):
            current: list[str] = []
            last = None
            for token, word in zip(encoding.tokens, encoding.word_ids, strict=True):
                if word is None:
                    continue
                if word != last and current:
                    words[tuple(current)] += 1
                    current = []
                current.append(token)
                last = word
            if current:
                words[tuple(current)] += 1
    return words, document


def _metaspace_form(backend: Any, text: str) -> list[str]:
    """``text`` normalized and pre-tokenized by ``backend``: its pre-tokens."""
    normalizer, pre = backend.normalizer, backend.pre_tokenizer
    if normalizer is not None:
        text = normalizer.normalize_str(text)
    parts = [p for p, _ in pre.pre_tokenize_str(text)] if pre is not None else [text]
    return parts


def _metaspace_only(backend: Any) -> bool:
    """Whether ``"▁"`` marks the words and nothing cuts the text there (Llama 2, Gemma).

    Spaces come out as ``"▁"`` (a Prepend + Replace normalizer, Replace alone as transformers 5
    writes Gemma's, or a ``Metaspace(split=False)`` pre-tokenizer as it writes Llama 2's) and
    two words stay one pre-token (no pre-tokenizer, or transformers 5's ``Split(" ")`` that
    never matches after the normalizer): the whole text is one pre-token, so words are then
    cut before each ``"▁"``.
    """
    parts = _metaspace_form(backend, "ab cd")
    return len(parts) == 1 and "▁" in parts[0] and " " not in parts[0]


def _slow_words(tokenizer: Any, texts: Iterable[Any]) -> tuple[Counter[tuple[str, ...]], str]:
    from vocab_adapters.stages.slow_tokenizer import (
        BYTE_BPE,
        SENTENCEPIECE,
        WORDPIECE,
        tokenizer_family,
    )

    family = tokenizer_family(tokenizer)
    words: Counter[tuple[str, ...]] = Counter()
    if family == WORDPIECE:
        for batch in _batches(texts, 1000):
            for text in batch:
                for word in tokenizer.basic_tokenizer.tokenize(text):
                    words[tuple(tokenizer.wordpiece_tokenizer.tokenize(word))] += 1
        return words, family
    if family == BYTE_BPE:
        encoder = tokenizer.byte_encoder
        for batch in _batches(texts, 1000):
            for text in batch:
                # the text as the model sees it (some tokenizers normalise it first, e.g. CLVP)
                seen = tokenizer.convert_tokens_to_string(tokenizer.tokenize(text))
                for word in tokenizer.pat.findall(seen):
                    chars = "".join(encoder[b] for b in word.encode("utf-8"))
                    words[tuple(tokenizer.bpe(chars).split(" "))] += 1
        return words, family
    if family == SENTENCEPIECE:
        from vocab_adapters.stages.slow_tokenizer import sp_processor, sp_proto

        found = sp_processor(tokenizer)
        assert found is not None
        normal = {p.piece for p in sp_proto(found[1]).pieces if p.type == 1}  # NORMAL pieces
        for batch in _batches(texts, 1000):
            for text in batch:
                _sentencepiece_words(tokenizer, text, words, normal)
        return words, family
    raise VocabError(
        f"suggest_tokens supports fast tokenizers and slow WordPiece / byte-level BPE / "
        f"sentencepiece ones (got {type(tokenizer).__name__}); load the fast tokenizer"
    )


def _sentencepiece_words(
    tokenizer: Any, text: str, words: Counter[tuple[str, ...]], normal: set[str]
) -> None:
    """Count the words of ``text`` as pieces: a word starts at each piece beginning with ``▁``.

    Tokenizer-level added tokens end a word; unknown characters and byte pieces (anything but
    a ``normal`` piece) are written as the unknown token, so that the word is not suggested.
    """
    added = tokenizer.added_tokens_encoder
    current: list[str] = []
    for piece in tokenizer.tokenize(text):
        if piece in added or (piece.startswith("▁") and current):
            if current:
                words[tuple(current)] += 1
            current = []
            if piece in added:
                continue
        current.append(piece if piece in normal else str(tokenizer.unk_token))
    if current:
        words[tuple(current)] += 1


def suggest_tokens(
    tokenizer: Any, texts: Iterable[Any], n: int = 100, min_count: int = 5
) -> list[str]:
    """The ``n`` pre-tokens of ``texts`` that cost the most extra tokens, in token form.

    Cost is ``count * (pieces - 1)``; ties go to the string that sorts first. Pre-tokens seen
    fewer than ``min_count`` times, and those that already are one token, are left out.

    Args:
        tokenizer: A Hugging Face tokenizer (fast, or slow WordPiece, byte-level BPE or
            sentencepiece) or a ``tokenizers.Tokenizer``.
        texts: Iterable of str (or of (str, str) pairs).
        n: How many tokens to suggest at most.
        min_count: Fewest occurrences a suggested pre-token must have.

    >>> from tokenizers import Tokenizer, models, pre_tokenizers
    >>> tok = Tokenizer(models.WordPiece({"[UNK]": 0, "ab": 1, "##c": 2}, unk_token="[UNK]"))
    >>> tok.pre_tokenizer = pre_tokenizers.Whitespace()
    >>> suggest_tokens(tok, ["abc abc ab"], n=5, min_count=2)
    ['abc']
    """
    return suggest_with_reasons(tokenizer, texts, n, min_count)[0]


def suggest_with_reasons(
    tokenizer: Any, texts: Iterable[Any], n: int = 100, min_count: int = 5
) -> tuple[list[str], str | None]:
    """:func:`suggest_tokens`, and why candidates were left out when none could be suggested.

    The reason is ``None`` unless no token is suggested while pre-tokens of several pieces
    (seen ``min_count`` times, not yet tokens) exist that the tokenizer cannot add.
    """
    for name, value, low in (("n", n, 0), ("min_count", min_count, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise VocabError(f"'{name}' must be an int >= {low} (got {value!r})")
    if backend_of(tokenizer) is not None:
        words, document = _fast_words(tokenizer, texts)
        model = document["model"]
        kind = model["type"]
        prefix = model.get("continuing_subword_prefix") or ("##" if kind == "WordPiece" else "")
        vocab = {str(a.get("content")) for a in document.get("added_tokens") or ()}
        if kind == "Unigram":
            vocab.update(piece[0] for piece in model["vocab"])
        else:
            vocab.update(model["vocab"])
        two_only, bad = _bpe_limits(document) if kind == "BPE" else (False, set())
    else:
        words, family = _slow_words(tokenizer, texts)
        prefix = "##" if family == "WordPiece" else ""
        vocab = set(tokenizer.get_vocab())
        two_only = family != "WordPiece" and not _sentencepiece_unigram(tokenizer)
        bad = {str(getattr(tokenizer, "unk_token", None))}
    counts: Counter[str] = Counter()
    for pieces, count in words.items():
        if len(pieces) >= 2:
            counts[_join(pieces, prefix)] += count
    costs: Counter[str] = Counter()
    left_out: Counter[str] = Counter()  # reason -> how many candidate pre-tokens
    for pieces, count in words.items():
        if len(pieces) < 2:
            continue
        joined = _join(pieces, prefix)
        if joined in vocab or counts[joined] < min_count:
            continue
        if bad.intersection(pieces):
            left_out["their text needs byte-fallback or unknown pieces"] += 1
            continue
        if two_only and len(pieces) != 2:
            left_out[
                "they are more than two pieces, and this tokenizer joins only two (whole-word "
                "lookup would change how other tokens encode)"
            ] += 1
            continue
        costs[joined] += count * (len(pieces) - 1)
    ranked = sorted((t for t in costs if counts[t] >= min_count), key=lambda t: (-costs[t], t))
    reason = None
    if n > 0 and not ranked and left_out:
        reason = "; ".join(f"{k} of them: {why}" for why, k in left_out.most_common())
    return ranked[:n], reason


def _bpe_limits(document: dict[str, Any]) -> tuple[bool, set[str]]:
    """(only two-piece pre-tokens can be added, pieces that rule a pre-token out)."""
    from vocab_adapters.tokenization.added_tokens import self_encoding, unk_piece_ids

    model = document["model"]
    vocab = model["vocab"]
    names = {i: t for t, i in vocab.items()}
    bad = {names[i] for i in unk_piece_ids(model, vocab) if i in names}
    if model.get("ignore_merges"):
        return False, bad
    skip = {str(a.get("content")) for a in document.get("added_tokens") or ()}
    return self_encoding(model, skip) is not None, bad


def _sentencepiece_unigram(tokenizer: Any) -> bool:
    """Whether ``tokenizer`` is a slow sentencepiece Unigram one (any word can be added)."""
    from vocab_adapters.stages.slow_tokenizer import (
        SENTENCEPIECE,
        SP_BPE,
        sp_processor,
        tokenizer_family,
    )

    found = sp_processor(tokenizer) if tokenizer_family(tokenizer) == SENTENCEPIECE else None
    if found is None:
        return False
    from vocab_adapters.stages.slow_tokenizer import sp_proto

    return bool(sp_proto(found[1]).trainer_spec.model_type != SP_BPE)
