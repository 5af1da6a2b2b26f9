"""Added tokens for slow sentencepiece tokenizers: new pieces in the in-memory model proto.

:mod:`vocab_adapters.stages.slow_tokenizer` reduces a sentencepiece tokenizer by loading a reduced
copy of its ``ModelProto`` into a new processor. A plan's added tokens (``"▁ibuprofen"``, in the
pieces' own form) become new pieces of that copy, of type NORMAL, at the ids after the kept ones:

* **Unigram**: a piece scored 1 above the best segmentation of the token's text (its Viterbi
  score in the reduced model, with the added tokens that are substrings of it already in), and
  never below the lowest score (which sets the penalty of unknown characters). The Viterbi
  search then takes the whole piece wherever that text is a word of its own. In a model with
  user-defined symbols, whose score derives from the highest piece score, a token whose piece
  would score above it is refused.
* **BPE**: sentencepiece BPE joins two adjacent symbols whenever their concatenation is a
  piece, highest score first. A token the reduced model splits into exactly two pieces gets a
  score below every other piece's, so its join happens only after all original joins are done,
  and only where those two pieces meet. Tokens of more than two pieces are refused (the joins
  would need intermediate pieces, which have no ids and would change words holding only part
  of the token); so are tokens whose text needs unknown or byte pieces.

The proto is laid out so that piece ``j`` has id ``j + fairseq_offset``. Ids between the last
kept piece and the first added token held by tokenizer-level added tokens (CamemBERT's and
DeBERTa's ``<mask>``, T5's ``<extra_id_*>``) get CONTROL pieces of the same text, which
encoding never produces.
XLM-R under transformers 4 counts its ``<mask>`` after the pieces in its fairseq id table (the
class adds 1 to the number of pieces), so there the added pieces follow the kept ones directly
and the table maps their text to their ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vocabcore import VocabError, VocabPlan

__all__ = ["check_keep_added", "extend_proto", "sentencepiece_token_pieces"]

# sentencepiece ModelProto.SentencePiece.Type and TrainerSpec.ModelType values
_NORMAL, _CONTROL, _USER_DEFINED, _BPE = 1, 3, 4, 2


def _model_only(proto: Any) -> Any:
    """A processor that segments its input as the model segments one pre-token (no normalizer)."""
    import sentencepiece

    bare = type(proto)()
    bare.CopyFrom(proto)
    spec = bare.normalizer_spec
    spec.name = "identity"
    spec.precompiled_charsmap = b""
    spec.add_dummy_prefix = False
    spec.remove_extra_whitespaces = False
    bare.ClearField("denormalizer_spec")
    processor = sentencepiece.SentencePieceProcessor()
    processor.LoadFromSerializedProto(bare.SerializeToString())
    return processor


def sentencepiece_token_pieces(
    tokenizer: Any, proto: Any, tokens: Sequence[str]
) -> list[list[int]]:
    """Tokenizer ids of the pieces ``proto`` (the tokenizer's model) splits each token into."""
    processor = _model_only(proto)
    out = []
    for token in tokens:
        pieces = processor.encode(str(token), out_type=str)
        out.append([int(i) for i in tokenizer.convert_tokens_to_ids(pieces)])
    return out


def _refuse_pieces(token: str, proto: Any, ids: list[int], bpe: bool) -> None:
    kinds = {proto.pieces[i].type for i in ids}
    if kinds != {_NORMAL}:
        raise VocabError(
            f"cannot add {token!r} to this sentencepiece model: its text needs unknown or byte "
            "pieces (or user-defined symbols), which no piece score can join; add only tokens "
            "made of characters the vocabulary has"
        )
    if bpe and len(ids) != 2:
        raise VocabError(
            f"cannot make {token!r} reachable in this sentencepiece BPE model: it splits it into "
            f"{len(ids)} pieces, and one new piece joins two; add a shorter prefix of it first "
            "(so that it is two pieces), or use the fast tokenizer (which can look whole words up)"
        )


def _scores(proto: Any, tokens: Sequence[str]) -> list[float]:
    """The score of each token's new piece (see the module docstring), in ``tokens`` order."""
    normal = [p.score for p in proto.pieces if p.type == _NORMAL]
    if not normal:
        raise VocabError("the sentencepiece model has no normal pieces to score added tokens by")
    bpe = proto.trainer_spec.model_type == _BPE
    lowest, highest = min(normal), max(normal)
    user_defined = any(p.type == _USER_DEFINED for p in proto.pieces)
    _check_normalized(proto, tokens)
    trial = type(proto)()
    trial.CopyFrom(proto)
    processor = _model_only(trial)
    scores: dict[int, float] = {}
    done: list[str] = []
    next_bpe = lowest
    for k in sorted(range(len(tokens)), key=lambda k: (len(tokens[k]), k)):
        token = tokens[k]
        if any(d in token for d in done):  # earlier added pieces may act inside this token
            processor = _model_only(trial)
        ids = [int(i) for i in processor.encode(token)]
        _refuse_pieces(token, trial, ids, bpe)
        if bpe:  # below every score so far, by at least 8 float32 steps
            next_bpe -= max(1.0, abs(next_bpe) * 2.0**-20)
            scores[k] = next_bpe
        else:
            scores[k] = max(sum(float(trial.pieces[i].score) for i in ids) + 1.0, lowest)
            if scores[k] > highest and user_defined:
                raise VocabError(
                    f"cannot add {token!r} to this sentencepiece Unigram model: its piece would "
                    f"score {scores[k]:.3f}, above the highest score {highest:.3f}, which sets "
                    "the score of the model's user-defined symbols; use the fast tokenizer "
                    "(use_fast=True) to add it"
                )
        trial.pieces.add(piece=token, score=scores[k], type=_NORMAL)
        next_bpe = min(next_bpe, trial.pieces[-1].score)  # as stored (float32)
        done.append(token)
    return [scores[k] for k in range(len(tokens))]


def _check_normalized(proto: Any, tokens: Sequence[str]) -> None:
    """Refuse tokens that the model's normalizer changes: normalized text never holds them."""
    import sentencepiece

    spec = type(proto)()
    spec.CopyFrom(proto)
    spec.normalizer_spec.add_dummy_prefix = False
    spec.normalizer_spec.remove_extra_whitespaces = False
    processor = sentencepiece.SentencePieceProcessor()
    processor.LoadFromSerializedProto(spec.SerializeToString())
    for token in tokens:
        normalized = processor.normalize(token)
        if normalized != token:
            raise VocabError(
                f"cannot add {token!r} to this sentencepiece model: its normalizer turns that "
                f"text into {normalized!r}, so normalized text never holds it; add "
                f"{normalized!r} (the token form writes a space as '\u2581')"
            )


def extend_proto(
    plan: VocabPlan,
    proto: Any,
    offset: int,
    table: dict[str, int] | None,
    added_tokens: dict[int, str],
) -> tuple[Any, dict[str, int] | None]:
    """The reduced ``proto`` with ``plan.added`` as new pieces, and the fairseq table to use.

    Args:
        plan: The plan; its added tokens take ids ``len(plan.kept) + k``.
        proto: The reduced model proto (the kept pieces; piece ``j`` has id ``j + offset``).
        offset: The tokenizer's fairseq offset (0 for most classes).
        table: The reduced fairseq token → id table, if the tokenizer has one.
        added_tokens: New id → text of the tokenizer-level added tokens.

    Returns:
        The new proto, and the grown fairseq table (``None`` where the table is left as is).

    Raises:
        VocabError: A token cannot be made reachable (see the module docstring).
    """
    first = len(plan.kept)
    gap = range(len(proto.pieces) + offset, first)
    in_table = table is not None and len(gap) > 0 and set(gap) <= set(table.values())
    extended = type(proto)()
    extended.CopyFrom(proto)
    if not in_table:
        texts = {p.piece for p in proto.pieces} | set(plan.added)
        for i in gap:
            text = added_tokens.get(i) or ""
            if not text or text in texts:
                text = f"<vocabcore-unused-{i}>"
            extended.pieces.add(piece=text, score=0.0, type=_CONTROL)
    for token, score in zip(plan.added, _scores(extended, plan.added), strict=True):
        extended.pieces.add(piece=token, score=score, type=_NORMAL)
    extended.trainer_spec.vocab_size = len(extended.pieces)
    if not in_table or table is None:
        return extended, None
    grown = dict(table)
    grown.update({token: first + k for k, token in enumerate(plan.added)})
    return extended, grown


def check_keep_added(name: str, table: dict[str, int] | None, end: int) -> None:
    """Refuse ``keep_added`` where the grown tokenizer would not reload with the same ids.

    XLM-R under transformers 4 places ``<mask>`` after the sentencepiece pieces (ids below
    ``end``) through its fairseq id table; pieces appended for the added tokens are saved before
    it, so a saved and reloaded tokenizer would number them (and ``<mask>``) differently.

    >>> check_keep_added("T5Tokenizer", None, 100)
    """
    after = sorted(t for t, i in (table or {}).items() if i >= end)
    if after:
        raise VocabError(
            f"keep_added cannot grow this {name}: its fairseq id table puts {after[0]!r} after "
            "the sentencepiece pieces, so a saved and reloaded tokenizer would give the added "
            "pieces other ids; revert without keep_added, or use the fast tokenizer "
            "(use_fast=True) to keep added tokens"
        )
