"""``slow_tokenizer``: apply a plan to a Python ("slow") Hugging Face tokenizer, and revert it.

Three families are recognised by what the tokenizer holds, not by its class name:

* **WordPiece** (``vocab`` dict and ``ids_to_tokens``; BERT): the vocabulary dicts are replaced by
  reduced ones.
* **byte-level BPE** (``encoder``/``decoder``, ``bpe_ranks``, ``byte_encoder``; GPT-2, RoBERTa,
  CLVP): vocabulary and merges are replaced by reduced ones. The plan must be closed under
  merges (see :func:`close_plan`).
* **SentencePiece** (a ``sentencepiece.SentencePieceProcessor`` at ``sp_model`` or
  ``_tokenizer.spm``; XLM-R with its fairseq id table, DeBERTa-v2/v3, every
  ``SentencePieceBackend``): a reduced copy of the model proto is built in memory and loaded
  into a new processor. The ``.model`` file on disk is never written. For sentencepiece BPE
  models the plan must be closed under merges as well.

Every change replaces whole attributes of the tokenizer's instance dictionary with new objects
(nothing existing is mutated), so revert puts the original objects back and the tokenizer is
exactly as it was. See ``docs/slow_tokenizers.md`` for the supported classes.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from vocab_adapters.stages.reversible import RECORD, Applied, RevertInputs
from vocab_adapters.tokenization.tokenizer_backend import (
    backend_of,
    check_size,
    fingerprint,
    id_to_token_list,
    tokenizer_size,
)
from vocabcore import PlanMismatchError, VocabError, VocabPlan

__all__ = [
    "BYTE_BPE",
    "SENTENCEPIECE",
    "SP_BPE",
    "SlowTokenizerApplied",
    "SlowTokenizerPrepared",
    "WORDPIECE",
    "apply",
    "close_plan",
    "merges_and_vocab",
    "prepare",
    "slow_token_pieces",
    "sp_processor",
    "sp_proto",
    "supports",
    "tokenizer_family",
]

WORDPIECE, BYTE_BPE, SENTENCEPIECE = "WordPiece", "byte-level BPE", "SentencePiece"
# sentencepiece ModelProto.SentencePiece.Type and TrainerSpec.ModelType values
_SP_NORMAL, _SP_UNKNOWN, SP_BPE = 1, 2, 2


# -- detection ------------------------------------------------------------------------------------


def sp_processor(tokenizer: Any) -> tuple[Any, Any] | None:
    """``(owner, processor)``: the object holding the sentencepiece processor, and the processor."""
    import sentencepiece

    candidates = [(tokenizer, "sp_model"), (getattr(tokenizer, "_tokenizer", None), "spm")]
    for owner, name in candidates:
        if owner is None:
            continue
        proc = vars(owner).get(name) if hasattr(owner, "__dict__") else None
        if isinstance(proc, sentencepiece.SentencePieceProcessor):
            return owner, proc
    return None


def tokenizer_family(tokenizer: Any) -> str | None:
    """``WORDPIECE``, ``BYTE_BPE`` or ``SENTENCEPIECE`` for a supported slow tokenizer, or None."""
    if backend_of(tokenizer) is not None:
        return None  # fast tokenizer: vocab_adapters.stages.fast_tokenizer
    state = getattr(tokenizer, "__dict__", {})
    if "_added_tokens_decoder" not in state or not callable(
        getattr(tokenizer, "convert_ids_to_tokens", None)
    ):
        return None
    if sp_processor(tokenizer) is not None:
        return SENTENCEPIECE
    if all(isinstance(state.get(n), dict) for n in ("encoder", "decoder", "bpe_ranks")) and (
        "byte_encoder" in state
    ):
        return BYTE_BPE
    if isinstance(state.get("vocab"), dict) and isinstance(state.get("ids_to_tokens"), dict):
        return WORDPIECE
    return None


def supports(tokenizer: Any) -> bool:
    """Whether this module can reduce ``tokenizer``.

    True for Python tokenizers holding a WordPiece, byte-level BPE or sentencepiece model.

    >>> supports(object())
    False
    """
    return tokenizer_family(tokenizer) is not None


# -- merges and closure ---------------------------------------------------------------------------


def _byte_bpe_merges(tokenizer: Any) -> list[tuple[str, str]]:
    ranks: dict[tuple[str, str], int] = tokenizer.bpe_ranks
    return sorted(ranks, key=ranks.__getitem__)


def sp_proto(processor: Any) -> Any:
    """The ``ModelProto`` of a sentencepiece processor (a copy, parsed from its bytes)."""
    from sentencepiece import sentencepiece_model_pb2

    proto_class: Any = getattr(sentencepiece_model_pb2, "ModelProto")  # noqa: B009 (generated)
    return proto_class.FromString(processor.serialized_model_proto())


def _sp_merges(proto: Any) -> list[tuple[str, str]]:
    """The merges a sentencepiece BPE model can make, in rank order.

    Sentencepiece BPE joins two adjacent symbols whenever the joined text is a piece, best
    score first; so every split of a normal piece into two pieces is a merge, ranked by the
    score of the piece it makes.
    """
    pieces = {p.piece for p in proto.pieces if p.type == _SP_NORMAL}
    order = sorted(
        (i for i, p in enumerate(proto.pieces) if p.type == _SP_NORMAL),
        key=lambda i: (-proto.pieces[i].score, i),
    )
    merges: list[tuple[str, str]] = []
    for i in order:
        text = proto.pieces[i].piece
        merges.extend(
            (text[:k], text[k:])
            for k in range(1, len(text))
            if text[:k] in pieces and text[k:] in pieces
        )
    return merges


def _sp_unknown_id(tokenizer: Any) -> int | None:
    """Tokenizer id of the unknown piece of a sentencepiece model."""
    found = sp_processor(tokenizer) if tokenizer_family(tokenizer) == SENTENCEPIECE else None
    if found is None:
        return None
    proto = sp_proto(found[1])
    unknown = [i for i, p in enumerate(proto.pieces) if p.type == _SP_UNKNOWN]
    return unknown[0] + _fairseq_offset(tokenizer) if unknown else None


def _lowest_unigram_id(tokenizer: Any) -> int | None:
    """Tokenizer id of the lowest-scoring normal piece of a sentencepiece Unigram model."""
    found = sp_processor(tokenizer) if tokenizer_family(tokenizer) == SENTENCEPIECE else None
    if found is None:
        return None
    proto = sp_proto(found[1])
    if proto.trainer_spec.model_type == SP_BPE:
        return None
    normal = [i for i, p in enumerate(proto.pieces) if p.type == _SP_NORMAL]
    if not normal:
        return None
    return min(normal, key=lambda i: (proto.pieces[i].score, i)) + _fairseq_offset(tokenizer)


def merges_and_vocab(tokenizer: Any) -> tuple[list[tuple[str, str]], dict[str, int]] | None:
    """The merges a plan must be closed under, and token → id, or ``None`` if none apply."""
    family = tokenizer_family(tokenizer)
    if family == BYTE_BPE:
        return _byte_bpe_merges(tokenizer), dict(tokenizer.encoder)
    if family == SENTENCEPIECE:
        found = sp_processor(tokenizer)
        assert found is not None
        proto = sp_proto(found[1])
        if proto.trainer_spec.model_type != SP_BPE:
            return None
        offset = _fairseq_offset(tokenizer)
        vocab = {p.piece: i + offset for i, p in enumerate(proto.pieces) if p.type == _SP_NORMAL}
        return _sp_merges(proto), vocab
    return None


def _require_closed(
    plan: VocabPlan, vocab: Mapping[str, int], merges: list[tuple[str, str]], family: str
) -> None:
    from vocab_adapters.tokenization.bpe_closure import close_under_merges

    closed = close_under_merges(plan, vocab, merges)
    missing = sorted(set(closed.kept).difference(plan.kept))
    if missing:
        tokens = {i: t for t, i in vocab.items()}
        shown = ", ".join(repr(tokens.get(i)) for i in missing[:5])
        raise VocabError(
            f"the plan is not closed under the {family} merges: it drops {len(missing)} "
            f"token(s) ({shown}{', ...' if len(missing) > 5 else ''}) that the merges need to "
            "build tokens it keeps, so the reduced tokenizer would split text differently; "
            "close the plan first: plan = vocab_adapters.stages.slow_tokenizer.close_plan(plan, "
            "tokenizer)"
        )


def close_plan(plan: VocabPlan, tokenizer: Any) -> VocabPlan:
    """``plan`` plus what ``tokenizer`` needs to encode exactly once reduced.

    Byte-level BPE: the byte alphabet (any text still encodes) and the merge closure
    (:func:`vocab_adapters.tokenization.bpe_closure.close_under_merges`). Sentencepiece: the unknown
    piece, for Unigram the lowest-scoring normal piece (whose score sets the penalty of unknown
    characters), for BPE the merge closure. Returns ``plan`` itself when nothing is missing (always
    for WordPiece).
    """
    if not isinstance(plan, VocabPlan):
        raise VocabError(f"'plan' must be a VocabPlan (got {type(plan).__name__})")
    needed = {_lowest_unigram_id(tokenizer), _sp_unknown_id(tokenizer)}
    needed.update(_byte_alphabet_ids(tokenizer))
    plan = plan.keeping(i for i in needed if i is not None and 0 <= i < plan.vocab_size)
    found = merges_and_vocab(tokenizer)
    if found is None:
        return plan
    from vocab_adapters.tokenization.bpe_closure import close_under_merges

    merges, vocab = found
    closed: VocabPlan = close_under_merges(plan, vocab, merges)
    return closed


def _byte_alphabet_ids(tokenizer: Any) -> set[int]:
    """The ids of a byte-level BPE's 256 byte symbols (empty for other families)."""
    if tokenizer_family(tokenizer) != BYTE_BPE:
        return set()
    encoder = tokenizer.encoder
    alphabet = getattr(tokenizer, "byte_encoder", None)
    if not isinstance(alphabet, dict):
        return set()
    return {i for c in alphabet.values() if (i := encoder.get(c)) is not None}


# -- prepare --------------------------------------------------------------------------------------


def _fairseq_offset(tokenizer: Any) -> int:
    offset = vars(tokenizer).get("fairseq_offset", 0)
    return offset if isinstance(offset, int) and not isinstance(offset, bool) else 0


def _shallow_copy(obj: Any) -> Any:
    copy = object.__new__(type(obj))
    copy.__dict__.update(obj.__dict__)
    return copy


def _check_plan(plan: VocabPlan, tokenizer: Any) -> None:
    if not isinstance(plan, VocabPlan):
        raise VocabError(f"'plan' must be a VocabPlan (got {type(plan).__name__})")
    if tokenizer_family(tokenizer) is None:
        kind = "a fast tokenizer" if backend_of(tokenizer) is not None else type(tokenizer).__name__
        raise VocabError(
            f"slow_tokenizer cannot reduce {kind}: it needs a Python tokenizer holding a "
            "WordPiece vocab (vocab, ids_to_tokens), a byte-level BPE (encoder, decoder, "
            "bpe_ranks) or a sentencepiece model (sp_model); use "
            "vocab_adapters.stages.fast_tokenizer for fast tokenizers"
        )
    RECORD.check_free(tokenizer, "tokenizer")
    check_size(plan, tokenizer)
    if plan.fingerprint is not None and plan.fingerprint != fingerprint(tokenizer):
        raise PlanMismatchError(
            "plan.fingerprint does not match this tokenizer's vocabulary; the plan was built "
            "for another tokenizer: build it from this one (plan_from_texts(tokenizer, texts))"
        )


def _check_kept(plan: VocabPlan, tokenizer: Any, tokens: list[str | None]) -> None:
    must = {int(i): str(t) for i, t in vars(tokenizer)["_added_tokens_decoder"].items()}
    for i in tokenizer.all_special_ids:
        if i is not None and 0 <= i < plan.vocab_size:
            must.setdefault(int(i), str(tokens[i]))
    for i in sorted(must):
        if not 0 <= i < plan.vocab_size or not plan.is_kept(i):
            raise VocabError(
                f"the plan drops special/added token {must[i]!r} (id {i}); a reduced tokenizer "
                f"must keep every special and added token: rebuild the plan with keep={i} "
                "(plan_from_texts keeps them for you)"
            )


# -- added tokens (see vocab_adapters.tokenization.added_tokens) ---------------------------------


def slow_token_pieces(tokenizer: Any, tokens: Any) -> list[list[int]]:
    """Ids of the pieces ``tokenizer`` splits each token's pre-token into (every family)."""
    from vocab_adapters.tokenization.added_tokens import wordpiece_pieces

    family = tokenizer_family(tokenizer)
    if family == WORDPIECE:
        model = {"continuing_subword_prefix": "##", "unk_token": tokenizer.unk_token}
        return [wordpiece_pieces(model, tokenizer.vocab, t) for t in tokens]
    if family == BYTE_BPE:
        encoder = tokenizer.encoder
        unk = encoder.get(str(getattr(tokenizer, "unk_token", None)))
        pieces = [tokenizer.bpe(t).split(" ") for t in tokens]
        return [[encoder.get(p, unk) for p in ps] for ps in pieces]
    if family == SENTENCEPIECE:
        from vocab_adapters.tokenization.sp_added import sentencepiece_token_pieces

        found = sp_processor(tokenizer)
        assert found is not None
        return sentencepiece_token_pieces(tokenizer, sp_proto(found[1]), list(tokens))
    raise VocabError(
        f"adding tokens to a slow {family} tokenizer is not supported; load the fast tokenizer "
        "(use_fast=True) to add tokens"
    )


def _add_slow_tokens(plan: VocabPlan, tokenizer: Any, new: dict[str, Any]) -> None:
    """Add ``plan.added`` to the reduced state ``new`` (vocab entries, merges or pieces)."""
    from vocab_adapters.tokenization.added_tokens import check_new_tokens

    check_new_tokens(tokenizer.get_vocab(), plan.added)
    first = len(plan.kept)
    if "ids_to_tokens" in new:  # WordPiece: a vocabulary entry; greedy longest match finds it
        for k, token in enumerate(plan.added):
            new["vocab"][token] = first + k
            new["ids_to_tokens"][first + k] = token
        return
    if "bpe_ranks" not in new:  # sentencepiece: new pieces in the in-memory model proto
        _add_sentencepiece_tokens(plan, tokenizer, new)
        return
    # Byte-level BPE: one merge of the two pieces BPE leaves for the pre-token, ranked last.
    clone = _shallow_copy(tokenizer)
    clone.__dict__.update(new)
    order = sorted(range(len(plan.added)), key=lambda k: (len(plan.added[k]), k))
    for k in order:
        token = plan.added[k]
        clone.cache = {}
        pieces = clone.bpe(token).split(" ")
        if len(pieces) != 2 or any(p not in new["encoder"] for p in pieces):
            raise VocabError(
                f"cannot make {token!r} reachable in this slow byte-level BPE tokenizer: BPE "
                f"splits it into {len(pieces)} pieces, and merges join two; add a shorter prefix "
                "of it first, or use the fast tokenizer (which can look whole words up)"
            )
        new["encoder"][token] = first + k
        new["decoder"][first + k] = token
        new["bpe_ranks"][(pieces[0], pieces[1])] = len(new["bpe_ranks"])
    new["cache"] = {}


def _add_sentencepiece_tokens(plan: VocabPlan, tokenizer: Any, new: dict[str, Any]) -> None:
    """Reload the reduced processor of ``new`` with the added pieces (see ``sp_added``)."""
    import sentencepiece

    from vocab_adapters.tokenization.sp_added import extend_proto

    found = sp_processor(tokenizer)
    assert found is not None
    current = new["sp_model"] if "sp_model" in new else new["_tokenizer"].spm
    added_tokens: dict[int, str] = {}  # new id -> text of the tokenizer-level added tokens
    for old, token in vars(tokenizer)["_added_tokens_decoder"].items():
        if (j := plan.old_to_new(old)) is not None:
            added_tokens[j] = str(token)
    offset, table = _fairseq_offset(tokenizer), new.get("fairseq_tokens_to_ids")
    proto, table = extend_proto(plan, sp_proto(current), offset, table, added_tokens)
    processor = sentencepiece.SentencePieceProcessor(
        **(vars(tokenizer).get("sp_model_kwargs") or {})
    )
    processor.LoadFromSerializedProto(proto.SerializeToString())
    new.update(_processor_state(tokenizer, found[0], processor, list(proto.pieces)))
    if table is not None:
        new["fairseq_tokens_to_ids"] = table
        if "fairseq_ids_to_tokens" in new:
            new["fairseq_ids_to_tokens"] = {v: k for k, v in table.items()}


def _check_keep_added(tokenizer: Any) -> None:
    """Refuse ``revert_plan(..., keep_added=True)`` where the grown tokenizer would not reload.

    (XLM-R on transformers 4: see :func:`vocab_adapters.tokenization.sp_added.check_keep_added`.)
    """
    found = sp_processor(tokenizer) if tokenizer_family(tokenizer) == SENTENCEPIECE else None
    if found is None:
        return
    from vocab_adapters.tokenization.sp_added import check_keep_added as check

    end = len(sp_proto(found[1]).pieces) + _fairseq_offset(tokenizer)
    check(type(tokenizer).__name__, vars(tokenizer).get("fairseq_tokens_to_ids"), end)


def _wordpiece_state(plan: VocabPlan, tokenizer: Any) -> dict[str, Any]:
    old_ids_to_tokens: Mapping[int, str] = tokenizer.ids_to_tokens
    base = len(old_ids_to_tokens)
    vocab: OrderedDict[str, int] = OrderedDict()
    ids_to_tokens: OrderedDict[int, str] = OrderedDict()
    for new, old in enumerate(plan.kept):
        if old < base and old in old_ids_to_tokens:
            vocab[old_ids_to_tokens[old]] = new
            ids_to_tokens[new] = old_ids_to_tokens[old]
    state: dict[str, Any] = {"vocab": vocab, "ids_to_tokens": ids_to_tokens}
    wordpiece = vars(tokenizer).get("wordpiece_tokenizer")
    if wordpiece is not None and isinstance(getattr(wordpiece, "vocab", None), dict):
        wordpiece = _shallow_copy(wordpiece)
        wordpiece.vocab = vocab
        state["wordpiece_tokenizer"] = wordpiece
    return state


def _byte_bpe_state(plan: VocabPlan, tokenizer: Any) -> dict[str, Any]:
    merges = _byte_bpe_merges(tokenizer)
    encoder_old: Mapping[str, int] = tokenizer.encoder
    _require_closed(plan, encoder_old, merges, "BPE")
    decoder_old: Mapping[int, str] = tokenizer.decoder
    encoder: dict[str, int] = {}
    decoder: dict[int, str] = {}
    for new, old in enumerate(plan.kept):
        token = decoder_old.get(old)
        if token is not None and encoder_old.get(token) == old:
            encoder[token] = new
            decoder[new] = token
    kept_merges = [(a, b) for a, b in merges if a in encoder and b in encoder and a + b in encoder]
    return {
        "encoder": encoder,
        "decoder": decoder,
        "bpe_ranks": {pair: rank for rank, pair in enumerate(kept_merges)},
        "cache": {},
    }


def _sentencepiece_state(plan: VocabPlan, tokenizer: Any) -> dict[str, Any]:
    """The reduced state of a sentencepiece tokenizer: validate, rebuild the proto, collect."""
    found = sp_processor(tokenizer)
    assert found is not None
    owner, processor = found
    proto = sp_proto(processor)
    offset = _fairseq_offset(tokenizer)
    kept_pieces = [old - offset for old in plan.kept if 0 <= old - offset < len(proto.pieces)]
    _check_sentencepiece_plan(plan, tokenizer, proto, offset, kept_pieces)
    table = _fairseq_table(plan, tokenizer)  # validated before anything is built
    pieces = [proto.pieces[s] for s in kept_pieces]
    kwargs = vars(tokenizer).get("sp_model_kwargs") or {}
    new_processor = _reduced_processor(proto, kept_pieces, kwargs)
    state = _processor_state(tokenizer, owner, new_processor, pieces)
    if table is not None:
        state["fairseq_tokens_to_ids"] = table
        if isinstance(vars(tokenizer).get("fairseq_ids_to_tokens"), dict):
            state["fairseq_ids_to_tokens"] = {v: k for k, v in table.items()}
    if isinstance(vars(tokenizer).get("vocab_file"), str):
        state["vocab_file"] = _in_memory_path(tokenizer.vocab_file)
    return state


def _check_sentencepiece_plan(
    plan: VocabPlan, tokenizer: Any, proto: Any, offset: int, kept_pieces: list[int]
) -> None:
    """BPE: closed under the merges; Unigram: the lowest piece kept; the unknown piece kept."""
    if proto.trainer_spec.model_type == SP_BPE:
        vocab = {p.piece: i + offset for i, p in enumerate(proto.pieces) if p.type == _SP_NORMAL}
        _require_closed(plan, vocab, _sp_merges(proto), "sentencepiece BPE")
    else:
        lowest = _lowest_unigram_id(tokenizer)
        if lowest is not None and not plan.is_kept(lowest):
            raise VocabError(
                f"the plan drops the lowest-scoring Unigram piece (id {lowest}), whose score "
                "sets the penalty of unknown characters, so the reduced tokenizer could split "
                "text differently; close the plan first: plan = "
                "vocab_adapters.stages.slow_tokenizer.close_plan(plan, tokenizer)"
            )
    unknown = [i for i, p in enumerate(proto.pieces) if p.type == _SP_UNKNOWN]
    if unknown and unknown[0] not in set(kept_pieces):
        raise VocabError(
            f"the plan drops the sentencepiece unknown piece {proto.pieces[unknown[0]].piece!r} "
            f"(id {unknown[0] + offset}); rebuild the plan with keep={unknown[0] + offset}, "
            "or close it: plan = vocab_adapters.stages.slow_tokenizer.close_plan(plan, tokenizer)"
        )


def _fairseq_table(plan: VocabPlan, tokenizer: Any) -> dict[str, int] | None:
    """The remapped fairseq token → id table (XLM-R under transformers 4), if there is one."""
    table = vars(tokenizer).get("fairseq_tokens_to_ids")
    if not isinstance(table, dict):
        return None
    new_table = {}
    for token, old in table.items():
        new = plan.old_to_new(old) if 0 <= old < plan.vocab_size else None
        if new is None:
            raise VocabError(
                f"the plan drops {token!r} (id {old}) of the fairseq id table; rebuild the "
                f"plan with keep={old}"
            )
        new_table[token] = new
    return new_table


def _reduced_processor(proto: Any, kept_pieces: list[int], kwargs: dict[str, Any]) -> Any:
    """A new processor loaded from an in-memory copy of ``proto`` with the kept pieces only."""
    import sentencepiece

    position = {s: j for j, s in enumerate(kept_pieces)}
    reduced = type(proto)()
    reduced.CopyFrom(proto)
    del reduced.pieces[:]
    reduced.pieces.extend(proto.pieces[s] for s in kept_pieces)
    spec = reduced.trainer_spec
    for name in ("unk_id", "bos_id", "eos_id", "pad_id"):
        old_id = getattr(spec, name)
        if old_id >= 0:
            setattr(spec, name, position.get(old_id, -1))
    spec.vocab_size = len(kept_pieces)
    processor = sentencepiece.SentencePieceProcessor(**kwargs)
    processor.LoadFromSerializedProto(reduced.SerializeToString())
    return processor


def _processor_state(
    tokenizer: Any, owner: Any, processor: Any, pieces: list[Any]
) -> dict[str, Any]:
    """The tokenizer attributes that hold the processor (directly, or through DeBERTa's SPM)."""
    state: dict[str, Any] = {}
    if owner is tokenizer:
        state["sp_model"] = processor
        if isinstance(vars(tokenizer).get("sp_model_proto"), bytes):
            state["sp_model_proto"] = processor.serialized_model_proto()
        return state
    inner = _shallow_copy(owner)  # DeBERTa-v2 under transformers 4: SPMTokenizer
    inner.spm = processor
    if isinstance(vars(owner).get("vocab"), dict):
        inner.vocab = {p.piece: j for j, p in enumerate(pieces)}
    if isinstance(vars(owner).get("ids_to_tokens"), list):
        inner.ids_to_tokens = [p.piece for p in pieces]
    if isinstance(vars(owner).get("vocab_file"), str):
        inner.vocab_file = _in_memory_path(owner.vocab_file)
    state["_tokenizer"] = inner
    return state


def _in_memory_path(path: str) -> str:
    """A name that is not a file, so ``save_vocabulary`` writes the in-memory reduced proto.

    (It copies the ``.model`` file instead when ``vocab_file`` names one.)
    """
    return os.path.abspath(path) + ".vocabcore-reduced-in-memory"


def _verify(plan: VocabPlan, tokenizer: Any, clone: Any, tokens: list[str | None]) -> None:
    """Check the reduced clone maps every new id to the token its old id had."""
    size = tokenizer_size(clone)
    expected = [*(tokens[i] for i in plan.kept), *plan.added]
    problem = None
    if size != plan.new_size:
        problem = f"len(tokenizer) would be {size}, not new_size {plan.new_size}"
    else:
        got = id_to_token_list(clone)
        bad = next((j for j, (a, b) in enumerate(zip(got, expected, strict=True)) if a != b), None)
        if bad is not None:
            problem = f"new id {bad} would be {got[bad]!r}, not {expected[bad]!r}"
        elif list(clone.all_special_ids) != plan.remap(tokenizer.all_special_ids):
            problem = "the special token ids would not follow the plan"
    if problem is not None:
        raise VocabError(
            f"cannot reduce this {type(tokenizer).__name__} consistently ({problem}); its layout "
            "is not one slow_tokenizer knows: report it, and use the fast tokenizer meanwhile"
        )


class SlowTokenizerApplied(Applied):
    """Undo handle of a plan applied to a slow tokenizer."""

    what = "tokenizer"

    def __init__(
        self,
        tokenizer: Any,
        old: dict[str, Any],
        new: dict[str, Any],
        added: dict[int, Any],
        plan: VocabPlan | None = None,
    ) -> None:
        super().__init__(tokenizer)
        self._tokenizer = tokenizer
        self._old = old
        self._new = new
        self._added = added
        self.plan = plan

    def _check_revert(self) -> None:
        state = vars(self._tokenizer)
        if dict(state["_added_tokens_decoder"]) != self._added:
            raise VocabError(
                "tokens were added to the reduced tokenizer; their ids belong to the reduced "
                "vocabulary and would clash after revert: add tokens before applying the plan, "
                "or after reverting it (rollback() undoes the reduction and drops them)"
            )
        changed = [n for n, v in self._new.items() if state.get(n) is not v]
        if changed:
            raise VocabError(
                f"the reduced tokenizer's {', '.join(changed)} was replaced since the "
                "plan was applied, so reverting would lose that change; undo it (or reload the "
                "tokenizer) instead of reverting"
            )

    def _prepare_revert(
        self, inputs: RevertInputs
    ) -> tuple[Callable[[], None], Callable[[], None]]:
        state = vars(self._tokenizer)
        plan = self.plan
        if inputs.keep_added and plan is not None and plan.added:
            return self._grown(plan, inputs)
        return (lambda: state.update(self._old), lambda: state.update(self._new))

    def _grown(
        self, plan: VocabPlan, inputs: RevertInputs
    ) -> tuple[Callable[[], None], Callable[[], None]]:
        """The original state plus the plan's added tokens at ids ``vocab_size ..``.

        Computed here on a copy of the original (every check); installed by assignment.
        """
        if inputs.added != len(plan.added):
            raise VocabError(
                f"keep_added expects {inputs.added} added tokens but the plan applied to this "
                f"tokenizer adds {len(plan.added)}; revert with the plan that was applied"
            )
        grow = VocabPlan.identity(plan.vocab_size).adding(plan.added)
        clone = _shallow_copy(self._tokenizer)
        clone.__dict__.update(self._old)
        _check_keep_added(clone)
        grown = prepare(grow, clone)._new
        tokenizer = self._tokenizer
        reduced = {name: vars(tokenizer)[name] for name in grown if name in vars(tokenizer)}

        def install() -> None:
            vars(tokenizer).update(self._old)
            vars(tokenizer).update(grown)

        def uninstall() -> None:
            for name in grown:
                if name not in reduced:
                    vars(tokenizer).pop(name, None)
            vars(tokenizer).update(reduced)
            vars(tokenizer).update(self._new)

        return install, uninstall

    def _rollback(self) -> None:
        vars(self._tokenizer).update(self._old)


class SlowTokenizerPrepared:
    """A validated reduction of a slow tokenizer, computed out of place."""

    def __init__(self, tokenizer: Any, new: dict[str, Any], plan: VocabPlan | None = None) -> None:
        self._tokenizer = tokenizer
        self._new = new
        self._old = {name: vars(tokenizer)[name] for name in new}
        self.plan = plan

    def commit(self) -> SlowTokenizerApplied:
        """Install the reduced state with plain assignments and return its undo handle."""
        RECORD.check_free(self._tokenizer, "tokenizer")
        vars(self._tokenizer).update(self._new)
        return SlowTokenizerApplied(
            self._tokenizer,
            self._old,
            self._new,
            dict(self._new["_added_tokens_decoder"]),
            self.plan,
        )


def prepare(plan: VocabPlan, tokenizer: Any) -> SlowTokenizerPrepared:
    """Validate ``plan`` against ``tokenizer`` and compute the reduced tokenizer state.

    Touches nothing; :meth:`SlowTokenizerPrepared.commit` installs the result.

    Raises:
        PlanMismatchError: The plan's size or fingerprint differs from the tokenizer's.
        VocabError: The tokenizer is not supported or already reduced; the plan drops a special
            or added token, or is not closed under the tokenizer's BPE merges.
    """
    _check_plan(plan, tokenizer)
    tokens = id_to_token_list(tokenizer)
    _check_kept(plan, tokenizer, tokens)
    family = tokenizer_family(tokenizer)
    if family == WORDPIECE:
        new = _wordpiece_state(plan, tokenizer)
    elif family == BYTE_BPE:
        new = _byte_bpe_state(plan, tokenizer)
    else:
        new = _sentencepiece_state(plan, tokenizer)
    if plan.added:
        _add_slow_tokens(plan, tokenizer, new)
    state = vars(tokenizer)
    decoder = {plan.old_to_new(i): t for i, t in sorted(state["_added_tokens_decoder"].items())}
    new["_added_tokens_decoder"] = decoder
    if isinstance(state.get("_added_tokens_encoder"), dict):
        new["_added_tokens_encoder"] = {str(t): i for i, t in decoder.items()}
    if isinstance(state.get("total_vocab_size"), int):
        new["total_vocab_size"] = plan.new_size
    missing = [name for name in new if name not in state]
    if missing:
        raise VocabError(
            f"cannot reduce this {type(tokenizer).__name__}: it has no instance attribute "
            f"{missing[0]!r}; report it, and use the fast tokenizer meanwhile"
        )
    clone = _shallow_copy(tokenizer)
    clone.__dict__.update(new)
    _verify(plan, tokenizer, clone, tokens)
    return SlowTokenizerPrepared(tokenizer, new, plan)


def apply(plan: VocabPlan, tokenizer: Any) -> SlowTokenizerApplied:
    """Reduce ``tokenizer`` to ``plan`` in place; ``prepare(plan, tokenizer).commit()``.

    Returns the handle whose ``revert()`` restores the full vocabulary.
    """
    return prepare(plan, tokenizer).commit()
