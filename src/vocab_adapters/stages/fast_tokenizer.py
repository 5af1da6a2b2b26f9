"""Apply a plan to a ``tokenizers.Tokenizer`` or a Hugging Face fast tokenizer, and revert it.

The reduced tokenizer is built out of place from the backend's JSON
(:func:`reduce_tokenizer_json`): the model's vocabulary is renumbered (WordPiece, WordLevel,
BPE with its merges, Unigram with its scores), added tokens keep their content and flags,
and every post-processor and the padding settings get their special ids remapped.

For a Hugging Face tokenizer, commit swaps the backend object (``tokenizer._tokenizer``);
the wrapper reads its vocabulary, added tokens, special ids and ``len()`` from the backend in
transformers 4 and 5 alike, so everything reports the reduced vocabulary. Revert puts the
original backend object back: no parsing, and ``to_str()`` is identical by construction.
A bare ``tokenizers.Tokenizer`` is changed in place (``__setstate__``), since callers hold
the object itself.

Example:
    >>> from tokenizers import Tokenizer, models, pre_tokenizers
    >>> from vocabcore import VocabPlan
    >>> tok = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1, "b": 2, "c": 3}, "[UNK]"))
    >>> tok.pre_tokenizer = pre_tokenizers.Whitespace()
    >>> applied = apply(VocabPlan(4, (0, 2, 3)), tok)
    >>> tok.encode("a b c").ids
    [0, 1, 2]
    >>> applied.revert()
    >>> tok.encode("a b c").ids
    [1, 2, 3]
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

from vocab_adapters.stages.reversible import EXACT, RECORD, Applied, RevertInputs
from vocab_adapters.tokenization.bpe_closure import (
    cached_merge_table,
    cached_parse_merges,
    closure_ids,
    merge_table,
    parse_merges,
)
from vocab_adapters.tokenization.tokenizer_backend import (
    backend_of,
    dump_json,
    keep_needed,
    load_json,
    parsed,
    tokenizer_document,
)
from vocabcore import PlanMismatchError, VocabError, VocabPlan

__all__ = [
    "AppliedFastTokenizer",
    "PreparedFastTokenizer",
    "SUPPORTED_MODELS",
    "apply",
    "close_plan",
    "fallback_ids",
    "prepare",
    "reduce_tokenizer_json",
    "required_ids",
]

SUPPORTED_MODELS = ("BPE", "Unigram", "WordLevel", "WordPiece")


# -- pure JSON surgery ------------------------------------------------------------------------


def _model_of(document: Mapping[str, Any]) -> dict[str, Any]:
    model = document.get("model")
    if not isinstance(model, dict):
        raise VocabError("the tokenizer JSON has no 'model' object; pass a tokenizer.json dict")
    kind = model.get("type")
    if kind not in SUPPORTED_MODELS:
        raise VocabError(
            f"tokenizer model type {kind!r} is not supported; supported types are "
            f"{', '.join(SUPPORTED_MODELS)}"
        )
    return model


def _vocab_items(model: Mapping[str, Any]) -> dict[str, int]:
    """The model vocabulary as token → id (Unigram pieces numbered by position)."""
    vocab = model.get("vocab")
    if model["type"] == "Unigram":
        if not isinstance(vocab, list):
            raise VocabError("a Unigram model's 'vocab' must be a list of [piece, score]")
        return {piece[0]: i for i, piece in enumerate(vocab)}
    if not isinstance(vocab, dict):
        raise VocabError(f"a {model['type']} model's 'vocab' must be an object token → id")
    return vocab


def _token_name(document: Mapping[str, Any], old_id: int) -> str:
    for added in document.get("added_tokens") or ():
        if added.get("id") == old_id:
            return str(added.get("content"))
    model = document.get("model") or {}
    vocab = model.get("vocab")
    if isinstance(vocab, list) and 0 <= old_id < len(vocab):
        return str(vocab[old_id][0])
    if isinstance(vocab, dict):
        for token, i in vocab.items():
            if i == old_id:
                return str(token)
    return "?"


def _new_id(plan: VocabPlan, document: Mapping[str, Any], old_id: Any, what: str) -> int:
    if isinstance(old_id, bool) or not isinstance(old_id, int) or not 0 <= old_id < plan.vocab_size:
        raise PlanMismatchError(
            f"{what} uses id {old_id!r}, outside the plan's vocab_size {plan.vocab_size}; "
            "build the plan from this tokenizer"
        )
    new = plan.old_to_new(old_id)
    if new is None:
        raise VocabError(
            f"the plan drops id {old_id} ({_token_name(document, old_id)!r}), which {what} "
            f"needs; keep it (keep=[{old_id}]) or build the plan with plan_from_texts, which "
            "keeps special tokens"
        )
    return new


def _remap_processor(
    plan: VocabPlan, document: Mapping[str, Any], processor: Mapping[str, Any]
) -> dict[str, Any]:
    kind = processor.get("type")
    out = copy.deepcopy(dict(processor))
    what = f"the post-processor ({kind})"
    if kind in ("BertProcessing", "RobertaProcessing"):
        for key in ("sep", "cls"):
            token, old_id = processor[key]
            out[key] = [token, _new_id(plan, document, old_id, what)]
    elif kind == "TemplateProcessing":
        specials = {}
        for name, special in processor.get("special_tokens", {}).items():
            entry = dict(special)
            entry["ids"] = [_new_id(plan, document, i, what) for i in special["ids"]]
            entry["tokens"] = list(special["tokens"])
            specials[name] = entry
        out["special_tokens"] = specials
    elif kind == "Sequence":
        out["processors"] = [
            _remap_processor(plan, document, p) for p in processor.get("processors", [])
        ]
    elif kind != "ByteLevel":
        raise VocabError(
            f"post-processor type {kind!r} is not supported; supported types are "
            "TemplateProcessing, BertProcessing, RobertaProcessing, ByteLevel and Sequence"
        )
    return out


def _is_byte_level(document: Mapping[str, Any]) -> bool:
    def walk(part: Any) -> bool:
        if not isinstance(part, dict):
            return False
        if part.get("type") == "ByteLevel":
            return True
        inner = part.get("pretokenizers") or part.get("decoders") or ()
        return any(walk(p) for p in inner)

    return walk(document.get("pre_tokenizer")) or walk(document.get("decoder"))


def required_ids(document: Mapping[str, Any], kept: Any = None) -> set[int]:
    """Old ids that a plan keeping ``kept`` must also keep for exact encoding.

    BPE: every intermediate token and character on the way to a kept token (merge
    closure). Unigram: the lowest-scoring piece, whose score sets the penalty of unknown
    characters, so segmentation is unchanged. Other models need nothing.

    Args:
        document: A parsed ``tokenizer.json``.
        kept: Old ids the plan keeps (an iterable of ints).
    """
    model = _model_of(document)
    kind = model["type"]
    if kind == "BPE":
        vocab = _vocab_items(model)
        merges = model.get("merges")
        prefix = model.get("continuing_subword_prefix")
        table = (
            cached_merge_table(merges, prefix)
            if isinstance(merges, list)
            else merge_table(merges or (), prefix)
        )
        return closure_ids(
            kept or (),
            vocab,
            table,
            continuing_subword_prefix=model.get("continuing_subword_prefix"),
            end_of_word_suffix=model.get("end_of_word_suffix"),
        )
    if kind == "Unigram":
        scores = [piece[1] for piece in model.get("vocab") or ()]
        return {scores.index(min(scores))} if scores else set()
    return set()


def fallback_ids(document: Mapping[str, Any]) -> set[int]:
    """Ids that let any text encode in range: the byte-level alphabet, byte-fallback pieces.

    For byte-level BPE these are the 256 byte symbols, for ``byte_fallback`` models the
    ``<0x00>`` .. ``<0xFF>`` pieces; present ones only.
    """
    model = _model_of(document)
    wanted: list[str] = []
    if model["type"] == "BPE" and _is_byte_level(document):
        from tokenizers import pre_tokenizers

        wanted.extend(pre_tokenizers.ByteLevel.alphabet())
    if model.get("byte_fallback"):
        wanted.extend(f"<0x{b:02X}>" for b in range(256))
    if not wanted:  # most models: no need to index the vocabulary (250k entries for XLM-R)
        return set()
    vocab = _vocab_items(model)
    return {vocab[t] for t in wanted if t in vocab}


def reduce_tokenizer_json(
    plan: VocabPlan, tokenizer_json: Mapping[str, Any], *, check_closed: bool = True
) -> dict[str, Any]:
    """The ``tokenizer.json`` document of the reduced tokenizer (pure: the input is unchanged).

    Args:
        plan: The plan; its ``vocab_size`` must cover every id of the document.
        tokenizer_json: A parsed ``tokenizer.json`` (``json.loads(tokenizer.to_str())``).
        check_closed: Refuse a plan that misses ids :func:`required_ids` asks for.

    Raises:
        VocabError: The model or a post-processor type is unsupported, the plan drops a
            token the tokenizer needs (unk, a post-processor's or padding's special token),
            or the plan is not closed (see :func:`close_plan`).
        PlanMismatchError: The document holds ids beyond ``plan.vocab_size``.

    >>> from vocabcore import VocabPlan
    >>> doc = {"model": {"type": "WordLevel", "vocab": {"<unk>": 0, "a": 1, "b": 2},
    ...        "unk_token": "<unk>"}, "added_tokens": []}
    >>> reduce_tokenizer_json(VocabPlan(3, (0, 2)), doc)["model"]["vocab"]
    {'<unk>': 0, 'b': 1}
    """
    if not isinstance(plan, VocabPlan):
        raise VocabError(f"'plan' must be a VocabPlan (got {type(plan).__name__})")
    if not isinstance(tokenizer_json, Mapping):
        raise VocabError(
            f"'tokenizer_json' must be a parsed tokenizer.json dict (got "
            f"{type(tokenizer_json).__name__})"
        )
    document = tokenizer_json
    model = _model_of(document)
    if model["type"] == "Unigram":
        new_model = _reduced_unigram(plan, document, model)
    else:
        new_model = _reduced_vocab_model(plan, document, model)
    if check_closed:
        _check_closed(plan, document, model["type"])
    out = _reduced_document(plan, document, new_model)
    if plan.added:  # tokens the plan adds: reachable per model type (see added_tokens)
        from vocab_adapters.tokenization.added_tokens import add_to_tokenizer_json

        known = {str(a.get("content")): a.get("id") for a in document.get("added_tokens") or ()}
        known.update(_vocab_items(model))
        out = add_to_tokenizer_json(out, plan.added, len(plan.kept), known=known)
    return out


def _model_copy(model: Mapping[str, Any]) -> dict[str, Any]:
    return {k: copy.deepcopy(v) for k, v in model.items() if k not in ("vocab", "merges")}


def _reduced_unigram(
    plan: VocabPlan, document: Mapping[str, Any], model: Mapping[str, Any]
) -> dict[str, Any]:
    """The Unigram model with the kept pieces, in plan order."""
    new_model = _model_copy(model)
    pieces = model.get("vocab")
    if not isinstance(pieces, list):
        raise VocabError("a Unigram model's 'vocab' must be a list of [piece, score]")
    if len(pieces) > plan.vocab_size:
        raise PlanMismatchError(
            f"the tokenizer's Unigram model has {len(pieces)} pieces, more than the plan's "
            f"vocab_size {plan.vocab_size}; build the plan from this tokenizer"
        )
    n = len(pieces)
    new_model["vocab"] = [list(pieces[i]) for i in plan.kept if i < n]
    unk_id = model.get("unk_id")
    if unk_id is not None:
        new_model["unk_id"] = _new_id(plan, document, unk_id, "the Unigram model (unk_id)")
    return new_model


def _reduced_vocab_model(
    plan: VocabPlan, document: Mapping[str, Any], model: Mapping[str, Any]
) -> dict[str, Any]:
    """WordPiece, WordLevel or BPE with the kept tokens renumbered.

    BPE keeps the merges whose parts and result are all kept (a dropped token's merges go).
    """
    kind = model["type"]
    new_model = _model_copy(model)
    vocab = _vocab_items(model)
    if vocab and max(vocab.values()) >= plan.vocab_size:
        raise PlanMismatchError(
            f"the tokenizer's {kind} model holds id {max(vocab.values())}, outside the "
            f"plan's vocab_size {plan.vocab_size}; build the plan from this tokenizer"
        )
    table = plan.old_to_new_table()
    reduced = sorted(((table[i], token) for token, i in vocab.items() if table[i] >= 0))
    new_vocab = {token: new for new, token in reduced}
    new_model["vocab"] = new_vocab
    unk = model.get("unk_token")
    if unk is not None and unk in vocab and unk not in new_vocab:
        _new_id(plan, document, vocab[unk], f"the {kind} model (unk_token)")
    if kind == "BPE":
        merges = model.get("merges") or []
        prefix = model.get("continuing_subword_prefix")
        pairs = (
            cached_parse_merges(merges, prefix)
            if isinstance(merges, list)
            else parse_merges(merges, prefix)
        )
        new_model["merges"] = [
            list(merge) if not isinstance(merge, str) else merge
            for merge, (left, right, merged) in zip(merges, pairs, strict=True)
            if left in new_vocab and right in new_vocab and merged in new_vocab
        ]
    return new_model


def _check_closed(plan: VocabPlan, document: Mapping[str, Any], kind: str) -> None:
    """Refuse a plan missing ids :func:`required_ids` asks for."""
    needed = required_ids(document, plan.kept)
    table = plan.old_to_new_table()
    missing = sorted(i for i in needed if table[i] < 0)
    if missing:
        names = ", ".join(repr(_token_name(document, i)) for i in missing[:5])
        why = (
            "BPE merges need intermediate tokens to build the kept ones"
            if kind == "BPE"
            else "the lowest-scoring Unigram piece sets the penalty of unknown characters"
        )
        raise VocabError(
            f"the plan is not closed for this {kind} tokenizer: it drops {len(missing)} "
            f"id(s) the reduced tokenizer needs (e.g. {names}; {why}); close it with "
            "vocab_adapters.stages.fast_tokenizer.close_plan(plan, tokenizer) or build it "
            "with plan_from_texts"
        )


def _reduced_document(
    plan: VocabPlan, document: Mapping[str, Any], new_model: dict[str, Any]
) -> dict[str, Any]:
    """The whole document around ``new_model``.

    Added tokens, post-processor and padding are remapped; everything else is copied.
    """
    added_out = []
    for added in document.get("added_tokens") or ():
        new = plan.old_to_new(_check_id(plan, added.get("id"), "an added token"))
        if new is None:
            continue
        entry = dict(added)
        entry["id"] = new
        added_out.append(entry)
    out: dict[str, Any] = {}
    for key, value in document.items():
        if key == "model":
            out[key] = new_model
        elif key == "added_tokens":
            out[key] = added_out
        elif key == "post_processor" and value is not None:
            out[key] = _remap_processor(plan, document, value)
        elif key == "padding" and value is not None:
            padding = copy.deepcopy(value)
            padding["pad_id"] = _new_id(plan, document, value.get("pad_id"), "padding (pad_id)")
            out[key] = padding
        else:
            out[key] = copy.deepcopy(value)
    return out


def _check_id(plan: VocabPlan, old_id: Any, what: str) -> int:
    if isinstance(old_id, bool) or not isinstance(old_id, int) or not 0 <= old_id < plan.vocab_size:
        raise PlanMismatchError(
            f"{what} has id {old_id!r}, outside the plan's vocab_size {plan.vocab_size}; "
            "build the plan from this tokenizer"
        )
    return old_id


# -- closure on a live tokenizer --------------------------------------------------------------


def close_plan(plan: VocabPlan, tokenizer: Any) -> VocabPlan:
    """``plan`` plus what ``tokenizer`` needs to encode exactly once reduced.

    The ids of :func:`fallback_ids` (byte alphabet, byte pieces: any text still encodes) and
    of :func:`required_ids` (BPE merge closure, the Unigram fallback piece). Returns ``plan``
    itself when nothing is missing; otherwise a plan with the same fingerprint and metadata.
    """
    if not isinstance(plan, VocabPlan):
        raise VocabError(f"'plan' must be a VocabPlan (got {type(plan).__name__})")
    _, document = tokenizer_document(tokenizer)
    return close_plan_with_document(plan, document)


def close_plan_with_document(plan: VocabPlan, document: Mapping[str, Any]) -> VocabPlan:
    """:func:`close_plan` on a parsed ``tokenizer.json`` (``plan`` itself if closed)."""
    fallback = fallback_ids(document)
    needed = fallback | required_ids(document, fallback.union(plan.kept))
    closed: VocabPlan = keep_needed(plan, needed)
    return closed


# -- prepare / commit / revert ----------------------------------------------------------------


_COMPONENTS = ("model", "normalizer", "pre_tokenizer", "post_processor", "decoder")


class _BareState:
    """What restores a bare ``tokenizers.Tokenizer`` exactly: its JSON and its components.

    Reloading the JSON alone may round float scores by an ulp, so the original component
    objects (which share the original Rust state) are put back over the reload.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.state: bytes = tokenizer.__getstate__()
        self.components = {name: getattr(tokenizer, name) for name in _COMPONENTS}
        self.encode_special_tokens: bool = tokenizer.encode_special_tokens

    @classmethod
    def of_reduced(cls, text: str, reduced: Any, original: _BareState) -> _BareState:
        """The state that installs the reduced backend ``reduced`` (serialized as ``text``)."""
        state = cls.__new__(cls)
        state.state = text.encode("utf-8")
        state.components = {name: getattr(reduced, name) for name in _COMPONENTS}
        state.encode_special_tokens = original.encode_special_tokens
        return state

    def restore(self, tokenizer: Any) -> None:
        """Make ``tokenizer`` (the same object) hold this state."""
        tokenizer.__setstate__(self.state)
        for name, value in self.components.items():
            setattr(tokenizer, name, value)
        tokenizer.encode_special_tokens = self.encode_special_tokens


class PreparedFastTokenizer:
    """A reduced backend, built and checked, not yet installed."""

    def __init__(
        self, plan: VocabPlan, tokenizer: Any, original: Any, reduced: Any, reduced_text: str
    ) -> None:
        self.plan = plan
        self.tokenizer = tokenizer
        self._original = original
        self._reduced = reduced
        self._reduced_text = reduced_text

    def commit(self) -> AppliedFastTokenizer:
        """Install the reduced backend and return the undo handle."""
        RECORD.check_free(self.tokenizer, "tokenizer")
        if self._original is self.tokenizer:  # bare tokenizers.Tokenizer: change it in place
            state = _BareState(self._original)
            _BareState.of_reduced(self._reduced_text, self._reduced, state).restore(self._original)
            return AppliedFastTokenizer(self.plan, self.tokenizer, state, self._original)
        self.tokenizer._tokenizer = self._reduced
        return AppliedFastTokenizer(self.plan, self.tokenizer, self._original, self._reduced)


class AppliedFastTokenizer(Applied):
    """Undo handle of a plan applied to a fast tokenizer."""

    what = "tokenizer"

    def __init__(self, plan: VocabPlan, tokenizer: Any, original: Any, reduced: Any) -> None:
        super().__init__(tokenizer)
        self.plan = plan
        self.tokenizer = tokenizer
        self._original = original  # the original backend, or its pickled state (bare)
        self._reduced = reduced

    def _check_revert(self) -> None:
        backend = backend_of(self.tokenizer)
        if backend is None or backend is not self._reduced:
            raise VocabError(
                "the tokenizer's backend was replaced after the plan was applied; revert "
                "cannot tell what to restore. Revert before replacing it"
            )
        size = _cheap_size(backend)
        if size != self.plan.new_size:
            raise VocabError(
                f"tokens were added to the reduced tokenizer (size {size}, plan new_size "
                f"{self.plan.new_size}); reverting would drop them. Add tokens before "
                "applying the plan, or after reverting it"
            )

    def _prepare_revert(
        self, inputs: RevertInputs = EXACT
    ) -> tuple[Callable[[], None], Callable[[], None]]:
        if inputs.keep_added and self.plan.added:
            return self._grown(inputs)
        if isinstance(self._original, _BareState):
            original, bare = self._original, self._reduced
            reduced = _BareState(bare)
            return (lambda: original.restore(bare), lambda: reduced.restore(bare))
        tokenizer, full, small = self.tokenizer, self._original, self._reduced

        def install() -> None:
            tokenizer._tokenizer = full

        def uninstall() -> None:
            tokenizer._tokenizer = small

        return install, uninstall

    def _grown(self, inputs: RevertInputs) -> tuple[Callable[[], None], Callable[[], None]]:
        """The original backend plus the plan's added tokens at ids ``vocab_size ..``.

        Built here (every check and allocation); the added tokens are added exactly as
        :mod:`vocab_adapters.tokenization.added_tokens` adds them to a reduced tokenizer.
        """
        plan = self.plan
        if inputs.added != len(plan.added):
            raise VocabError(
                f"keep_added expects {inputs.added} added tokens but the plan applied to this "
                f"tokenizer adds {len(plan.added)}; revert with the plan that was applied"
            )
        grow = VocabPlan.identity(plan.vocab_size).adding(plan.added)
        original = self._original
        bare = isinstance(original, _BareState)
        text = original.state.decode("utf-8") if bare else original.to_str()
        grown_doc = reduce_tokenizer_json(grow, load_json(text), check_closed=False)
        grown_text = dump_json(grown_doc)
        from tokenizers import Tokenizer, models

        grown = Tokenizer.from_str(grown_text)
        model = grown_doc["model"]
        if model["type"] == "Unigram":
            grown.model = models.Unigram(
                [(piece, score) for piece, score in model["vocab"]],
                model.get("unk_id"),
                bool(model.get("byte_fallback", False)),
            )
        special = original.encode_special_tokens
        grown.encode_special_tokens = special
        size = grown.get_vocab_size(with_added_tokens=True)
        if size != plan.vocab_size + len(plan.added):
            raise VocabError(
                f"the tokenizer with the added tokens would have {size} tokens, not "
                f"{plan.vocab_size + len(plan.added)}; keep_added cannot grow this tokenizer"
            )
        tokenizer, small = self.tokenizer, self._reduced

        def install() -> None:
            if bare:
                tokenizer.__setstate__(grown_text.encode("utf-8"))
                for name in _COMPONENTS:
                    setattr(tokenizer, name, getattr(grown, name))
                tokenizer.encode_special_tokens = special
            else:
                tokenizer._tokenizer = grown

        if bare:
            reduced = _BareState(small)
            return install, lambda: reduced.restore(small)

        def uninstall() -> None:
            tokenizer._tokenizer = small

        return install, uninstall

    def _rollback(self) -> None:
        self._prepare_revert()[0]()


def prepare(plan: VocabPlan, tokenizer: Any) -> PreparedFastTokenizer:
    """Check ``plan`` against ``tokenizer`` and build the reduced backend; change nothing.

    Raises:
        PlanMismatchError: ``plan.vocab_size != len(tokenizer)``, or the plan's fingerprint
            is set and is not ``fingerprint(tokenizer)``.
        VocabError: A plan is already applied, the tokenizer is slow, its model type is
            unsupported, or the plan drops ids the tokenizer needs.
    """
    if not isinstance(plan, VocabPlan):
        raise VocabError(f"'plan' must be a VocabPlan (got {type(plan).__name__})")
    backend = backend_of(tokenizer)
    if backend is None:
        raise VocabError(
            f"{type(tokenizer).__name__} is a slow tokenizer (no 'tokenizers' backend); use "
            "vocab_adapters.stages.slow_tokenizer for it, or load the fast one (use_fast=True)"
        )
    RECORD.check_free(tokenizer, "tokenizer")
    entry = parsed(backend)
    size = entry.size(backend)  # len(tokenizer), without building the token map again
    if plan.vocab_size != size:
        raise PlanMismatchError(
            f"the plan's vocab_size is {plan.vocab_size} but the tokenizer has {size} tokens "
            "(len(tokenizer)); build the plan from this tokenizer"
        )
    if plan.fingerprint is not None:
        actual = entry.fingerprint(backend, size)
        if actual != plan.fingerprint:
            raise PlanMismatchError(
                f"the plan was built for another tokenizer (fingerprint {plan.fingerprint!r}, "
                f"this one {actual!r}); build the plan from this tokenizer"
            )
    cached = entry.extras.get(plan)
    if cached is None:
        reduced_doc = reduce_tokenizer_json(plan, entry.document)
        model = reduced_doc["model"]
        pieces = None
        if model["type"] == "Unigram":
            pieces = [(piece, score) for piece, score in model["vocab"]]
        cached = (dump_json(reduced_doc), model, _loader_text(reduced_doc), pieces)
        entry.extras.clear()  # keep one reduced tokenizer per tokenizer state
        entry.extras[plan] = cached
    reduced_text, reduced_model, loader_text, pieces = cached
    from tokenizers import Tokenizer, models

    try:
        if loader_text is None:
            reduced = Tokenizer.from_str(reduced_text)
        else:
            # Unigram: tokenizers' JSON reader may round scores by an ulp, so the model is
            # built from the Python floats, and the JSON load carries a stand-in model that
            # gives every added token its id (building the Unigram twice costs ~50 ms on 20k
            # pieces).
            reduced = Tokenizer.from_str(loader_text)
            reduced.model = models.Unigram(
                pieces,
                reduced_model.get("unk_id"),
                bool(reduced_model.get("byte_fallback", False)),
            )
    except Exception as exc:  # tokenizers raises plain Exception subclasses
        raise VocabError(f"the reduced tokenizer JSON does not load ({exc})") from None
    reduced.encode_special_tokens = backend.encode_special_tokens
    _check_reduced(plan, entry.tokens(backend, size), reduced)
    return PreparedFastTokenizer(plan, tokenizer, backend, reduced, reduced_text)


def _loader_text(document: Mapping[str, Any]) -> str | None:
    """For a Unigram document, the same JSON with a stand-in WordLevel model (else ``None``).

    The stand-in holds exactly the added tokens at their ids, so loading assigns each added
    token the id the Unigram model would give it; the real model is installed afterwards.
    :func:`_check_reduced` verifies the ids.
    """
    model = document["model"]
    if model.get("type") != "Unigram":
        return None
    added = {a["content"]: a["id"] for a in document.get("added_tokens") or ()}
    unk_id = model.get("unk_id")
    vocab = model["vocab"]
    unk = vocab[unk_id][0] if isinstance(unk_id, int) and 0 <= unk_id < len(vocab) else None
    if unk is not None:
        added.setdefault(unk, unk_id)
    standin = {"type": "WordLevel", "vocab": added, "unk_token": unk or "<unk>"}
    return dump_json({**document, "model": standin})


def _cheap_size(backend: Any) -> int:
    """``backend.get_vocab_size(with_added_tokens=True)``, read without the token map.

    The model's size plus the added tokens above it, when their ids run on without a gap (the
    usual case; otherwise the backend is asked). The backend's own call builds the whole token
    map (10-40 ms on large vocabularies in tokenizers < 0.23).
    """
    model_size = int(backend.get_vocab_size(with_added_tokens=False))
    above = sorted(i for i in backend.get_added_tokens_decoder() if i >= model_size)
    if above and above[-1] != model_size + len(above) - 1:
        return int(backend.get_vocab_size(with_added_tokens=True))
    return model_size + len(above)


def _check_reduced(plan: VocabPlan, tokens: list[str | None], reduced: Any) -> None:
    got = _cheap_size(reduced)
    if got != plan.new_size:
        raise VocabError(
            f"the reduced tokenizer has {got} tokens, not the plan's new_size {plan.new_size}; "
            "the tokenizer's added tokens leave gaps in its ids, which tokenizers cannot "
            "represent after renumbering"
        )
    for new_id, added in reduced.get_added_tokens_decoder().items():
        old_id = plan.kept[new_id] if new_id < plan.new_size else None
        if old_id is None or tokens[old_id] != added.content:
            raise VocabError(
                f"added token {added.content!r} lands on id {new_id} in the reduced tokenizer, "
                "which does not match the plan; the tokenizer's added token ids are not "
                "contiguous"
            )


def apply(plan: VocabPlan, tokenizer: Any) -> AppliedFastTokenizer:
    """``prepare(plan, tokenizer).commit()``: reduce ``tokenizer`` in place."""
    return prepare(plan, tokenizer).commit()
