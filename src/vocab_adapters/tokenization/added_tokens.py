"""Make a plan's added tokens reachable by ordinary encoding, per tokenizer model type.

An added token is a string in the tokenizer's own token form (``get_vocab()``): ``"Ġibuprofen"``
(byte-level BPE, after a space), ``"▁ibuprofen"`` (Metaspace / sentencepiece), ``"ibuprofen"``
or ``"##ing"`` (WordPiece), ``"ibuprofen</w>"`` (BPE with an end-of-word suffix). The functions
here append such tokens to a ``tokenizer.json`` document (already reduced by the plan's kept
ids) at the ids after the kept ones, so that wherever the original normalizer and
pre-tokenizer produce exactly that pre-token, the model encodes it to the single new id, and
every pre-token that does not contain the token's text encodes as before:

* **WordPiece, WordLevel**: a vocabulary entry. WordPiece's greedy longest match finds the whole
  word first; WordLevel looks words up.
* **BPE**: the pieces BPE produces for the pre-token are computed with the reduced model (plus
  the merges added for shorter added tokens, which are processed first). Two pieces ``a b``:
  one merge ``a b`` is appended after every existing merge, so it fires only once all original
  merges are done, and only where ``a`` and ``b`` meet, i.e. inside text containing the token's
  text. More pieces: merges would need intermediate tokens, which have no ids and would change
  words holding only part of the token, so instead the model looks whole pre-tokens up in its
  vocabulary first (``ignore_merges``, as Llama 3 does). That is already the case for models
  with ``ignore_merges``, and it is switched on when it changes nothing else: when every other
  token of the reduced model encodes to itself when BPE runs on its text alone. Where neither
  holds (``continuing_subword_prefix`` / ``end_of_word_suffix`` models, whose tokens never
  encode to themselves alone), a token of more than two pieces raises ``VocabError`` naming it;
  adding a shorter prefix of it first (``"Ġibup"``) makes it two pieces. Tokens whose pieces
  are byte-fallback or unknown pieces are refused (merges cannot build them).
* **Unigram**: a piece whose score beats the best segmentation of the pre-token (its Viterbi
  score plus 1, and never below the lowest score, which sets the penalty of unknown
  characters).

Inside a longer pre-token containing the token's text (``Ġibuprofens``): WordPiece takes the
token when it is the longest vocabulary prefix at that point; WordLevel is unchanged; BPE merges
join the two pieces wherever they meet (``ignore_merges`` vocabulary entries act on whole
pre-tokens only, so there nothing changes); Unigram may choose the new piece when it scores
better. Encoding stays lossless throughout (the token's text is the concatenation of pieces).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from vocabcore import VocabError

__all__ = [
    "add_to_tokenizer_json",
    "check_new_tokens",
    "document_pieces",
    "model_word",
    "self_encoding",
    "unk_piece_ids",
    "wordpiece_pieces",
]

_UNK_PENALTY = 10.0  # tokenizers' and sentencepiece's kUnkPenalty


def _model_only(model: Mapping[str, Any]) -> Any:
    """A ``tokenizers.Tokenizer`` holding only ``model`` (no normalizer, pre-tokenizer, ...)."""
    from tokenizers import Tokenizer

    document: dict[str, Any] = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [],
        "normalizer": None,
        "pre_tokenizer": None,
        "post_processor": None,
        "decoder": None,
        "model": model,
    }
    try:
        return Tokenizer.from_str(json.dumps(document))
    except Exception as exc:  # tokenizers raises plain Exception subclasses
        raise VocabError(f"the tokenizer model does not load ({exc})") from None


def _vocab(model: Mapping[str, Any]) -> dict[str, int]:
    vocab = model.get("vocab")
    if model.get("type") == "Unigram":
        return {piece[0]: i for i, piece in enumerate(vocab or ())}
    return dict(vocab or {})


def model_word(model: Mapping[str, Any], token: str) -> str:
    """The pre-token text that ``model`` turns into ``token`` when it is one whole pre-token.

    BPE with an ``end_of_word_suffix`` writes whole words with the suffix (``"word</w>"``), so
    the word is the token without it. A BPE continuation token (``"##ing"`` under a
    ``continuing_subword_prefix``) never is a whole pre-token and is refused.

    >>> model_word({"type": "BPE", "end_of_word_suffix": "</w>"}, "word</w>")
    'word'
    """
    if model.get("type") != "BPE":
        return token
    prefix = model.get("continuing_subword_prefix") or ""
    suffix = model.get("end_of_word_suffix") or ""
    if prefix and token.startswith(prefix):
        raise VocabError(
            f"cannot add {token!r} to this BPE tokenizer: it starts with the continuing-subword "
            f"prefix {prefix!r}, so no pre-token ever encodes to it alone; add the whole word"
        )
    if suffix:
        if not token.endswith(suffix) or token == suffix:
            raise VocabError(
                f"cannot add {token!r} to this BPE tokenizer: whole words end with its "
                f"end-of-word suffix {suffix!r} (write {token + suffix!r})"
            )
        return token[: -len(suffix)]
    return token


def check_new_tokens(vocab: Mapping[str, int], tokens: Sequence[str]) -> None:
    """Refuse empty strings, duplicates and tokens ``vocab`` already has as one id.

    ``vocab`` is the tokenizer's full token → id map, added tokens included.

    >>> check_new_tokens({"a": 0}, ["b", "c"])
    >>> check_new_tokens({"a": 0}, ["a"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    vocabcore.errors.VocabError: cannot add 'a': the tokenizer already has it as one token ...
    """
    seen: set[str] = set()
    for token in tokens:
        if not isinstance(token, str) or not token:
            raise VocabError(f"added tokens must be non-empty strings (got {token!r})")
        if token in seen:
            raise VocabError(f"{token!r} is listed twice among the added tokens; list it once")
        seen.add(token)
        if token in vocab:
            raise VocabError(
                f"cannot add {token!r}: the tokenizer already has it as one token (id "
                f"{vocab[token]}); keep that id instead"
            )


def wordpiece_pieces(model: Mapping[str, Any], vocab: Mapping[str, int], token: str) -> list[int]:
    """Greedy longest-match WordPiece, also for a continuation token (``"##ing"``)."""
    prefix = model.get("continuing_subword_prefix") or "##"
    continuing = token.startswith(prefix) and len(token) > len(prefix)
    word = token[len(prefix) :] if continuing else token
    unk = vocab.get(str(model.get("unk_token")))
    out: list[int] = []
    start = 0
    while start < len(word):
        end = len(word)
        found = None
        while start < end:
            piece = word[start:end]
            if start > 0 or continuing:
                piece = prefix + piece
            if piece in vocab:
                found = vocab[piece]
                break
            end -= 1
        if found is None:
            return [unk] if unk is not None else []
        out.append(found)
        start = end
    return out


def document_pieces(document: Mapping[str, Any], tokens: Sequence[str]) -> list[list[int]]:
    """The ids the document's model splits each token's pre-token into (its "pieces").

    Args:
        document: A parsed ``tokenizer.json`` (the original, unreduced one).
        tokens: Tokens in the model's token form.
    """
    model = document["model"]
    vocab = _vocab(model)
    if model["type"] == "WordPiece":
        return [wordpiece_pieces(model, vocab, t) for t in tokens]
    backend = _model_only(model).model
    return [[piece.id for piece in backend.tokenize(model_word(model, t))] for t in tokens]


# -- JSON surgery ---------------------------------------------------------------------------------


def _merge_format(merges: list[Any]) -> bool:
    """Whether merges are written as ``[a, b]`` lists (tokenizers >= 0.20) rather than strings."""
    return not merges or not isinstance(merges[0], str)


def self_encoding(model: Mapping[str, Any], skip: set[str]) -> str | None:
    """A vocabulary token BPE does not encode to itself alone (``None`` if there is none)."""
    backend = _model_only(model).model
    for token in _vocab(model):
        if token in skip:
            continue
        pieces = backend.tokenize(token)
        if len(pieces) != 1 or pieces[0].value != token:
            return token
    return None


def unk_piece_ids(model: Mapping[str, Any], vocab: Mapping[str, int]) -> set[int]:
    """Ids of the model's unknown token and byte-fallback pieces (never part of a suggestion)."""
    bad = set()
    unk = model.get("unk_token")
    if isinstance(unk, str) and unk in vocab:
        bad.add(vocab[unk])
    if model.get("byte_fallback"):
        bad.update(vocab[f"<0x{b:02X}>"] for b in range(256) if f"<0x{b:02X}>" in vocab)
    return bad


def _add_bpe(
    model: dict[str, Any],
    tokens: Sequence[str],
    ids: Sequence[int],
    skip: set[str],
    document: dict[str, Any] | None = None,
) -> None:
    vocab: dict[str, int] = model["vocab"]
    merges: list[Any] = model.setdefault("merges", [])
    as_lists = _merge_format(merges)
    prefix = model.get("continuing_subword_prefix") or ""
    base = copy.deepcopy(model)
    bad_ids = unk_piece_ids(base, vocab)
    current = _model_only(base).model
    done: list[str] = []
    lookup_whole: list[tuple[str, int]] = []
    order = sorted(range(len(tokens)), key=lambda k: (len(model_word(model, tokens[k])), k))
    for k in order:
        token, word = tokens[k], model_word(model, tokens[k])
        if any(model_word(model, d) in word for d in done):
            current = _model_only(model).model  # earlier added merges may act inside this word
        pieces = current.tokenize(word)
        if any(p.id in bad_ids for p in pieces):
            raise VocabError(
                f"cannot add {token!r} to this BPE tokenizer: its text needs byte-fallback or "
                "unknown pieces, which merges cannot join; add only tokens made of characters "
                "the vocabulary has"
            )
        vocab[token] = ids[k]
        if model.get("ignore_merges"):
            pass  # a whole pre-token found in the vocabulary wins before any merge
        elif len(pieces) == 2:
            left, right = pieces[0].value, pieces[1].value
            joined = left + (right[len(prefix) :] if prefix and right.startswith(prefix) else right)
            if joined != token:
                raise VocabError(
                    f"cannot add {token!r}: its pieces {left!r} + {right!r} make {joined!r}"
                )
            merges.append([left, right] if as_lists else f"{left} {right}")
        else:
            lookup_whole.append((token, len(pieces)))
        done.append(token)
    if lookup_whole and not model.get("ignore_merges"):
        blocker = self_encoding(base, skip)
        if blocker is not None:
            token, n = lookup_whole[0]
            raise VocabError(
                f"cannot make {token!r} reachable in this BPE tokenizer: BPE splits it into {n} "
                "pieces; merges join two pieces only (more would need intermediate tokens, "
                "which have no ids and would change words holding part of it), and whole-word "
                f"lookup (ignore_merges) would change how {blocker!r} encodes, since BPE does "
                "not build that token from its own text. BPE models where this happens: "
                "continuing-subword-prefix / end-of-word-suffix models, and sentencepiece-"
                "converted BPE whose tokens do not all encode to themselves. Add a shorter "
                "prefix of it first so that it is two pieces, or leave it out"
            )
        model["ignore_merges"] = True
        if document is not None:
            _cut_metaspace_words(document, model)


_WORD_START = re.compile("[^▁]▁")
# Pre-tokens at "▁" boundaries: text before the first "▁", then each run of "▁" with its word.
_METASPACE_WORDS = {
    "type": "Split",
    "pattern": {"Regex": "[^▁]+|▁+[^▁]*"},
    "behavior": "Isolated",
    "invert": False,
}


def _whole_text_metaspace(document: Mapping[str, Any]) -> bool:
    """Whether the document writes spaces as "▁" and keeps several words one pre-token.

    Llama 2 / Mistral v1 / Gemma as converted from sentencepiece: a Prepend + Replace
    normalizer (or Replace alone, or ``Metaspace(split=False)``) and no pre-tokenizer that
    cuts, so a whole text is one pre-token.
    """
    from tokenizers import Tokenizer

    shell: dict[str, Any] = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [],
        "normalizer": document.get("normalizer"),
        "pre_tokenizer": document.get("pre_tokenizer"),
        "post_processor": None,
        "decoder": None,
        "model": {"type": "BPE", "vocab": {}, "merges": []},
    }
    try:
        backend = Tokenizer.from_str(json.dumps(shell))
    except Exception:  # tokenizers raises plain Exception subclasses
        return False
    text = "ab cd"
    if backend.normalizer is not None:
        text = backend.normalizer.normalize_str(text)
    pre = backend.pre_tokenizer
    parts = [p for p, _ in pre.pre_tokenize_str(text)] if pre is not None else [text]
    return len(parts) == 1 and "▁" in parts[0] and " " not in parts[0]


def _cut_metaspace_words(document: dict[str, Any], model: Mapping[str, Any]) -> None:
    """Cut pre-tokens at "▁" word starts where that changes no encoding.

    Whole-word lookup acts on whole pre-tokens, and a Llama 2 style tokenizer has one per
    text; so that ``"▁ibuprofen"`` reaches its id inside a sentence, a ``Split`` appended to
    the pre-tokenizer cuts before each run of "▁" that follows another character. That is
    exact when no token holds "▁" after another character (sentencepiece trained with
    whitespace splitting): BPE then never merges across such a cut, so every text encodes to
    the same pieces; only ``word_ids`` now count words. Otherwise nothing is cut and an
    added token is reached where it is the whole text.
    """
    if not _whole_text_metaspace(document):
        return
    vocab = _vocab(model)
    if "▁" not in vocab or any(_crosses_word_start(token) for token in vocab):
        return
    pre = document.get("pre_tokenizer")
    cut = dict(_METASPACE_WORDS)
    if pre is None:
        document["pre_tokenizer"] = cut
    elif pre.get("type") == "Sequence":
        pre["pretokenizers"] = [*pre.get("pretokenizers", []), cut]
    else:
        document["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [pre, cut]}


def _crosses_word_start(token: str) -> bool:
    """Whether ``token`` holds "▁" right after another character (a merge across words)."""
    return _WORD_START.search(token) is not None


def _add_unigram(
    model: dict[str, Any],
    tokens: Sequence[str],
    ids: Sequence[int],
    filler: Mapping[int, str],
) -> None:
    pieces: list[list[Any]] = model["vocab"]
    if not pieces:
        raise VocabError("the Unigram model has no pieces; nothing to score added tokens against")
    lowest = min(float(p[1]) for p in pieces)
    unk_id = model.get("unk_id")
    first = min(ids)
    while len(pieces) < first:  # ids held by tokenizer-level added tokens beyond the pieces
        pieces.append([filler.get(len(pieces), f"<vocabcore-unused-{len(pieces)}>"), lowest])
    new: list[tuple[int, list[Any]]] = []
    current = _model_only(model).model
    done: list[str] = []
    order = sorted(range(len(tokens)), key=lambda k: (len(tokens[k]), k))
    for k in order:
        token = tokens[k]
        if any(d in token for d in done):
            trial = copy.deepcopy(model)
            trial["vocab"] = [*pieces, *(p for _, p in sorted(new))]
            current = _model_only(trial).model
        best = 0.0
        for piece in current.tokenize(token):
            if unk_id is not None and piece.id == unk_id:
                best += (lowest - _UNK_PENALTY) * len(piece.value)
            else:
                best += float(_score(model, new, piece.id))
        new.append((ids[k], [token, max(best + 1.0, lowest)]))
        done.append(token)
    new.sort()
    if [i for i, _ in new] != list(range(len(pieces), len(pieces) + len(new))):
        raise VocabError("added tokens must take the ids right after the kept ones")
    pieces.extend(p for _, p in new)


def _score(model: Mapping[str, Any], new: list[tuple[int, list[Any]]], piece_id: int) -> float:
    pieces = model["vocab"]
    if piece_id < len(pieces):
        return float(pieces[piece_id][1])
    return float(dict(new)[piece_id][1])


def add_to_tokenizer_json(
    document: Mapping[str, Any],
    tokens: Sequence[str],
    first_id: int,
    *,
    known: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """``document`` with ``tokens`` added at ids ``first_id, first_id + 1, ...`` (pure).

    Args:
        document: A parsed ``tokenizer.json`` whose ids below ``first_id`` are all taken (the
            plan's kept ids after reduction, or the whole original vocabulary).
        tokens: The tokens to add, in the model's token form, in id order.
        first_id: Id of the first added token.
        known: Every token the original tokenizer has (token → id), to refuse tokens it
            already has; defaults to ``document``'s own.

    Raises:
        VocabError: A token is empty, duplicated, already one token, or cannot be made
            reachable (see the module docstring); the document is unchanged.
    """
    out = copy.deepcopy(dict(document))
    model = out.get("model")
    if not isinstance(model, dict):
        raise VocabError("the tokenizer JSON has no 'model' object")
    added_contents = {
        str(a.get("content")): int(a.get("id")) for a in out.get("added_tokens") or ()
    }
    if known is None:
        known = {**_vocab(model), **added_contents}
    check_new_tokens(known, tokens)
    if not tokens:
        return out
    ids = list(range(first_id, first_id + len(tokens)))
    taken = set(_vocab(model).values()) | set(added_contents.values())
    clash = sorted(taken.intersection(ids))
    if clash:
        raise VocabError(
            f"added tokens would take id {clash[0]}, which the tokenizer already uses; its ids "
            "are not contiguous"
        )
    kind = model.get("type")
    # Tokenizer-level added tokens outside the model vocabulary get their ids from the model's
    # size when the document loads, so once the model grows they must be in its vocabulary
    # too, at their own ids (pre-tokenizers split them apart, so the model never meets them).
    filler = {i: t for t, i in added_contents.items() if i < first_id and t not in _vocab(model)}
    if kind in ("WordPiece", "WordLevel", "BPE"):
        for i, content in sorted(filler.items()):
            model["vocab"][content] = i
    if kind in ("WordPiece", "WordLevel"):
        vocab = model["vocab"]
        for token, i in zip(tokens, ids, strict=True):
            vocab[token] = i
    elif kind == "BPE":
        _add_bpe(model, tokens, ids, set(added_contents), out)
    elif kind == "Unigram":
        _add_unigram(model, tokens, ids, filler)
    else:
        raise VocabError(f"cannot add tokens to a {kind!r} tokenizer model")
    return out
