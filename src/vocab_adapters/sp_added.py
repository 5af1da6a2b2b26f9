"""Added tokens for slow sentencepiece tokenizers: new pieces in the in-memory model proto.

:mod:`vocab_adapters.slow_tokenizer` reduces a sentencepiece tokenizer by loading a reduced copy
of its ``ModelProto`` into a new processor. A plan's added tokens (``"▁ibuprofen"``, in the
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
DeBERTa's ``<mask>``) get CONTROL pieces of the same text, which encoding never produces.
XLM-R under transformers 4 counts its ``<mask>`` after the pieces in its fairseq id table (the
class adds 1 to the number of pieces), so there the added pieces follow the kept ones directly
and the table maps their text to their ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vocabcore import VocabError, VocabPlan

__all__ = ["add_sentencepiece_tokens", "check_keep_added", "sentencepiece_token_pieces"]

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


def _original_proto(tokenizer: Any) -> Any:
    from vocab_adapters.slow_tokenizer import _sp_processor, _sp_proto

    found = _sp_processor(tokenizer)
    assert found is not None
    return _sp_proto(found[1])


def sentencepiece_token_pieces(tokenizer: Any, tokens: Sequence[str]) -> list[list[int]]:
    """Tokenizer ids of the pieces the sentencepiece model splits each token's text into."""
    processor = _model_only(_original_proto(tokenizer))
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
            "pieces, which no piece score can join; add only tokens made of characters the "
            "vocabulary has"
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
        if bpe:
            next_bpe -= 1.0
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
        done.append(token)
    return [scores[k] for k in range(len(tokens))]


def _fairseq_gap(table: Any, gap: range) -> bool:
    """Whether the fairseq table holds every id of ``gap`` (XLM-R's ``<mask>`` after pieces)."""
    return isinstance(table, dict) and len(gap) > 0 and set(gap) <= set(table.values())


def add_sentencepiece_tokens(plan: VocabPlan, tokenizer: Any, new: dict[str, Any]) -> None:
    """Put ``plan.added`` into the reduced state ``new`` of a sentencepiece tokenizer.

    ``new`` is what :func:`vocab_adapters.slow_tokenizer._sentencepiece_state` computed for
    ``plan`` (its processor holds the kept pieces); it is updated with a processor that also
    holds the added tokens, and with their fairseq table entries where the class needs them.

    Raises:
        VocabError: A token cannot be made reachable (see the module docstring), or the
            layout leaves no place for it.
    """
    import sentencepiece

    from vocab_adapters.slow_tokenizer import (
        _fairseq_offset,
        _processor_state,
        _sp_processor,
        _sp_proto,
    )

    found = _sp_processor(tokenizer)
    assert found is not None
    owner = found[0]
    current = new["sp_model"] if "sp_model" in new else new["_tokenizer"].spm
    proto = _sp_proto(current)
    offset = _fairseq_offset(tokenizer)
    first = len(plan.kept)
    gap = range(len(proto.pieces) + offset, first)
    table = new.get("fairseq_tokens_to_ids")
    in_table = _fairseq_gap(table, gap)
    extended = type(proto)()
    extended.CopyFrom(proto)
    if not in_table:
        decoder = {
            plan.old_to_new(i): str(t) for i, t in vars(tokenizer)["_added_tokens_decoder"].items()
        }
        texts = {p.piece for p in proto.pieces} | set(plan.added)
        for i in gap:
            text = decoder.get(i) or ""
            if not text or text in texts:
                text = f"<vocabcore-unused-{i}>"
            extended.pieces.add(piece=text, score=0.0, type=_CONTROL)
    for token, score in zip(plan.added, _scores(extended, plan.added), strict=True):
        extended.pieces.add(piece=token, score=score, type=_NORMAL)
    extended.trainer_spec.vocab_size = len(extended.pieces)
    kwargs = vars(tokenizer).get("sp_model_kwargs") or {}
    processor = sentencepiece.SentencePieceProcessor(**kwargs)
    processor.LoadFromSerializedProto(extended.SerializeToString())
    new.update(_processor_state(tokenizer, owner, processor, list(extended.pieces)))
    if in_table:
        assert isinstance(table, dict)
        grown = dict(table)
        grown.update({token: first + k for k, token in enumerate(plan.added)})
        new["fairseq_tokens_to_ids"] = grown
        if "fairseq_ids_to_tokens" in new:
            new["fairseq_ids_to_tokens"] = {v: k for k, v in grown.items()}


def check_keep_added(tokenizer: Any) -> None:
    """Refuse ``keep_added`` where the grown tokenizer would not reload with the same ids.

    XLM-R under transformers 4 places ``<mask>`` after the sentencepiece pieces through its
    fairseq id table; pieces appended for the added tokens are saved before it, so a saved and
    reloaded tokenizer would number them (and ``<mask>``) differently.
    """
    from vocab_adapters.slow_tokenizer import _SENTENCEPIECE, _fairseq_offset, _family

    if _family(tokenizer) != _SENTENCEPIECE:
        return
    table = vars(tokenizer).get("fairseq_tokens_to_ids")
    end = len(_original_proto(tokenizer).pieces) + _fairseq_offset(tokenizer)
    after = sorted(t for t, i in (table or {}).items() if i >= end)
    if after:
        raise VocabError(
            f"keep_added cannot grow this {type(tokenizer).__name__}: its fairseq id table puts "
            f"{after[0]!r} after the sentencepiece pieces, so a saved and reloaded tokenizer "
            "would give the added pieces other ids; revert without keep_added, or use the fast "
            "tokenizer (use_fast=True) to keep added tokens"
        )
