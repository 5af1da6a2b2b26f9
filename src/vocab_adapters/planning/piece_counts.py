"""Count a corpus by encoding each distinct piece of text once.

A fast tokenizer encodes a text as normalizer → pre-tokenizer → model → post-processor. For
many pipelines the ids of a text are the ids of its pieces put together, where the pieces
are the text cut before each ASCII space (the first piece bare, every later one starting
with its space), plus what the post-processor adds. A corpus repeats its pieces (a word
occurs about ten times on average in a CoNLL-sized corpus), so :class:`PieceCounter` counts
the pieces, encodes each distinct piece once and weights its ids by the piece's count: the
same counts as encoding every text, for a fraction of the tokenizer's work.

When that holds is decided from the tokenizer's JSON, component by component; anything not
known to be separable keeps the per-text path:

* pre-split word lists (``is_pretokenized``): always, since the backend runs the whole
  pipeline on each word by itself;
* texts, ``"whitespace"`` pipelines: the pre-tokenizer starts by splitting on whitespace
  and dropping it (``BertPreTokenizer``, ``Whitespace``, ``WhitespaceSplit``), later steps
  work on each split by itself, and the normalizer acts on each character (or grapheme,
  or canonical-combining sequence) by itself, so it cannot join two sides of a space;
* texts, ``"space"`` pipelines: the pre-tokenizer starts with ``Metaspace(split=True)``,
  byte-level BPE's regex (``ByteLevel(use_regex=True)``) or a ``Split`` by one of the known
  byte-level regexes (Llama 3, Qwen 2, Tekken). All cut before a space that follows a
  non-space and precedes one (and elsewhere, never across it); a batch whose texts have a space
  next to whitespace (or at a text's end) goes the per-text way. Normalizers that can turn
  a character into whitespace or remove one (``NFKC``, ``StripAccents``, ``Precompiled``,
  a whitespace-collapsing ``Replace``, a right-only ``Strip``) are checked on each distinct
  piece instead.

Added tokens whose content holds whitespace rule out texts; ``lstrip``/``rstrip`` tokens
(which swallow the whitespace next to them) rule out ``"space"`` pipelines for the batches
that contain them. Post-processors must only add tokens (Bert, Roberta, Template,
ByteLevel and sequences of these), models must be deterministic (no BPE dropout). The
property tests compare these counts with per-text encoding on random texts.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from itertools import chain
from typing import Any

import numpy as np

__all__ = ["PieceCounter", "separability"]

_WHITESPACE_FIRST = frozenset({"BertPreTokenizer", "Whitespace", "WhitespaceSplit"})
_PER_SPLIT = _WHITESPACE_FIRST | {
    "ByteLevel",
    "CharDelimiterSplit",
    "Digits",
    "Metaspace",
    "Punctuation",
    "Split",
    "UnicodeScripts",
}
# Split regexes (behaviour "Isolated") of byte-level BPE families in which a space occurs
# only as a match's first character or inside a whitespace run: GPT-2, Llama 3 (cl100k),
# Qwen 2, Mistral Tekken. A space with non-whitespace on both sides then always starts a
# match, and matching from it does not depend on what came before.
_SEPARABLE_SPLITS = frozenset(
    {
        r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+",
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+"
        r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+"
        r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|"
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|"
        r"\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    }
)
_PROCESSORS = frozenset({"BertProcessing", "RobertaProcessing", "TemplateProcessing", "ByteLevel"})
# Normalizers that map characters (or canonical sequences) one by one, never make or remove
# whitespace, and never join across a space: nothing to check per piece.
_PLAIN = frozenset({"Lowercase", "NFC", "NFD"})
# One by one too, but may make, remove or collapse whitespace (or, Precompiled, work on
# graphemes): fine before a whitespace-dropping pre-tokenizer, checked per piece otherwise.
_LOCAL = frozenset({"BertNormalizer", "NFKC", "NFKD", "StripAccents", "Precompiled"})
# Characters some regex engines count as whitespace though Python does not (or vice versa).
_ODD_SPACES = "\u180e\u200b\u200c\u200d\u2060\ufeff"
_PIECES_PER_SEQUENCE = 256
_FIRST = "\x00"  # marks a text's first piece (which has no space before it)
_MAX_DISTINCT = 1 << 20  # encode and forget the pieces once this many are held
# After _PROBE pieces, a corpus with more than _MOST_DISTINCT of them distinct (random ids,
# hashes) goes text by text: encoding distinct pieces only pays where pieces repeat.
_PROBE = 50_000
_MOST_DISTINCT = 0.5


class Separability:
    """How a tokenizer's texts may be cut into pieces (see the module docstring)."""

    __slots__ = (
        "checked",
        "graphemes",
        "guards",
        "mode",
        "no_trailing_space",
        "no_trailing_whitespace",
        "raw_guard",
    )

    def __init__(
        self,
        mode: str,
        *,
        checked: bool = False,
        graphemes: bool = False,
        no_trailing_space: bool = False,
        no_trailing_whitespace: bool = False,
        guards: tuple[str, ...] = (),
    ) -> None:
        self.mode = mode  # "words" (word lists only), "whitespace" or "space"
        self.checked = checked  # check each distinct piece's normalized form
        self.graphemes = graphemes  # Precompiled: check the grapheme before the cut
        self.no_trailing_space = no_trailing_space  # a collapsing Replace: no " " at the cut
        self.no_trailing_whitespace = no_trailing_whitespace  # Strip(right): no whitespace
        self.guards = guards  # batches containing these strings go the per-text way
        self.raw_guard = mode == "space" and not checked


def _steps(component: Any, key: str) -> list[dict[str, Any]] | None:
    if component is None:
        return []
    if not isinstance(component, dict):
        return None
    if component.get("type") == "Sequence":
        out: list[dict[str, Any]] = []
        for inner in component.get(key) or ():
            steps = _steps(inner, key)
            if steps is None:
                return None
            out += steps
        return out
    return [component]


def _pre_tokenizer_mode(pre: Any) -> str | None:
    steps = _steps(pre, "pretokenizers")
    if not steps:  # no pre-tokenizer: the model sees whole texts
        return None
    if any(step.get("type") not in _PER_SPLIT for step in steps[1:]):
        return None
    first = steps[0]
    kind = first.get("type")
    if kind in _WHITESPACE_FIRST:
        return "whitespace"
    if kind == "Metaspace" and first.get("split", True) is True:
        return "space"
    if kind == "ByteLevel" and first.get("use_regex", True) is True:
        return "space"
    if (
        kind == "Split"
        and (first.get("pattern") or {}).get("Regex") in _SEPARABLE_SPLITS
        and first.get("behavior") == "Isolated"
        and not first.get("invert")
    ):
        return "space"
    return None


def _collapsing(step: dict[str, Any]) -> bool:
    pattern = step.get("pattern") or {}
    regex = pattern.get("Regex")
    return regex in (" {2,}", " +") and step.get("content") == " "


def _literal(step: dict[str, Any]) -> bool:
    literal = (step.get("pattern") or {}).get("String")
    content = step.get("content")
    return (
        isinstance(literal, str)
        and isinstance(content, str)
        and literal != ""
        and not any(c.isspace() or c in _ODD_SPACES for c in literal)
    )


def _normalizer_rules(normalizer: Any, mode: str) -> dict[str, bool] | None:
    """The :class:`Separability` flags the normalizer needs, or ``None`` (not separable)."""
    steps = _steps(normalizer, "normalizers")
    if steps is None:
        return None
    checked = graphemes = collapsing = stripping = False
    for step in steps:
        kind = step.get("type")
        if kind in _PLAIN:
            continue
        if kind in _LOCAL:
            checked = checked or mode == "space"
            graphemes = graphemes or kind == "Precompiled"
        elif kind == "Strip" and mode == "whitespace":
            continue
        elif kind == "Strip" and not step.get("strip_left") and step.get("strip_right"):
            # strips a text's end only: a piece before a cut must not end in whitespace
            checked = stripping = True
        elif kind == "Replace" and _literal(step):
            content = step["content"]
            if mode == "space" and (not content or any(c.isspace() for c in content)):
                checked = True
        elif kind == "Replace" and _collapsing(step):
            collapsing = True
            checked = checked or mode == "space"
        else:
            return None
    return {
        "checked": checked,
        "graphemes": graphemes,
        "no_trailing_space": collapsing,
        "no_trailing_whitespace": stripping,
    }


def separability(document: dict[str, Any]) -> Separability | None:
    """How the texts of the tokenizer with this ``tokenizer.json`` may be cut, if at all.

    ``None``: count text by text. A ``"words"`` result allows only pre-split word lists.
    """
    model = document.get("model") or {}
    if model.get("type") not in ("BPE", "WordPiece", "WordLevel", "Unigram"):
        return None
    if model.get("type") == "BPE" and model.get("dropout") not in (None, 0, 0.0):
        return None
    processors = _steps(document.get("post_processor"), "processors")
    if processors is None or any(p.get("type") not in _PROCESSORS for p in processors):
        return None
    words = Separability("words")
    added = document.get("added_tokens") or ()
    if any(any(c.isspace() or c in _ODD_SPACES for c in a.get("content", "")) for a in added):
        return words
    mode = _pre_tokenizer_mode(document.get("pre_tokenizer"))
    if mode is None:
        return words
    rules = _normalizer_rules(document.get("normalizer"), mode)
    if rules is None:
        return words
    guards: list[str] = []
    if mode == "space":
        for token in added:
            if token.get("lstrip") or token.get("rstrip"):
                if token.get("normalized"):
                    return words
                guards.append(token["content"])
    return Separability(mode, guards=tuple(guards), **rules)


def _is_space_like(char: str) -> bool:
    return char.isspace() or char in _ODD_SPACES


class PieceCounter:
    """Accumulate piece counts batch by batch; :meth:`flush` encodes and adds them.

    Args:
        backend: The ``tokenizers.Tokenizer``, set up as the per-text path encodes (no
            padding, no truncation).
        rules: :func:`separability` of its JSON.
    """

    def __init__(self, backend: Any, rules: Separability) -> None:
        self.backend = backend
        self.rules = rules
        self._encode = getattr(backend, "encode_batch_fast", None) or backend.encode_batch
        self._bare: Counter[str] = Counter()  # the words of word lists
        self._text_pieces: Counter[str] = Counter()  # _FIRST + first piece, or piece sans space
        self._texts: Counter[str] = Counter()  # items per kind, for the post-processor's ids
        self._specials: dict[str, Counter[int]] = {}
        self._verified: set[str] = set()
        self._normalize: Any = None
        self._pieces_seen = 0  # since the last flush
        self.stopped = False  # set once the corpus shows it hardly repeats its pieces

    def accepts(self, kind: str) -> bool:
        """Whether batches of this kind (``text``, ``pair``, ``words``, ``word_pair``) may go."""
        if self.stopped:
            return False
        if kind in ("words", "word_pair"):
            return True
        return kind in ("text", "pair") and self.rules.mode != "words"

    def add(self, batch: list[Any], kind: str) -> bool:
        """Take ``batch`` in; ``False`` (nothing taken) if it must be encoded text by text."""
        if not batch or not self.accepts(kind):
            return False
        if kind not in self._specials:
            specials = self._specials_of(batch[0], kind)
            if specials is None:
                return False
            self._specials[kind] = specials
        if kind in ("words", "word_pair"):
            words = list(chain.from_iterable(batch))
            if kind == "word_pair":
                words = list(chain.from_iterable(words))
            self._bare.update(words)
            added = len(words)
        else:
            texts = batch if kind == "text" else list(chain.from_iterable(batch))
            added = self._add_texts(texts)
            if not added:
                return False
        self._texts[kind] += len(batch)
        self._pieces_seen += added
        if self._pieces_seen >= _PROBE and self._distinct() > _MOST_DISTINCT * self._pieces_seen:
            self.stopped = True  # the corpus hardly repeats: encoding text by text is faster
        return True

    def _distinct(self) -> int:
        return len(self._bare) + len(self._text_pieces)

    def _add_texts(self, texts: list[str]) -> int:
        """The number of pieces taken in (0: none, encode these texts one by one)."""
        rules = self.rules
        if rules.raw_guard or rules.guards:
            joined = "\n".join(texts)
            if rules.raw_guard and _bad_space(joined):
                return 0
            if any(guard in joined for guard in rules.guards):
                return 0
        # One split for the whole batch: a text's first piece comes out marked with _FIRST,
        # the pieces after a space come out without their space.
        marked = _FIRST + f" {_FIRST}".join(texts)
        if marked.count(_FIRST) != len(texts):  # a text holds the marker itself
            return 0
        pieces = marked.split(" ")
        if (rules.checked or rules.graphemes) and not self._verify(set(pieces)):
            return 0
        self._text_pieces.update(pieces)
        return len(pieces)

    def _verify(self, pieces: set[str]) -> bool:
        """Check the pieces not seen before (normalizers that need it, see the docstring)."""
        if self._normalize is None:
            normalizer = self.backend.normalizer
            self._normalize = normalizer.normalize_str if normalizer is not None else str
        new = pieces - self._verified
        for key in new:
            first = key.startswith(_FIRST)
            if not self._piece_ok(key[1:] if first else " " + key, spaced=not first):
                return False
        self._verified |= new
        return True

    def _piece_ok(self, piece: str, spaced: bool) -> bool:
        rules = self.rules
        normalize = self._normalize
        # a grapheme may reach over the cut (a Prepend character before the space)
        if (
            rules.graphemes
            and piece
            and not piece[-1].isascii()
            and normalize(piece + " ") != normalize(piece) + normalize(" ")
        ):
            return False
        if not rules.checked:
            return True
        normalized = normalize(piece)
        if spaced and (
            len(normalized) < 2 or normalized[0] != " " or _is_space_like(normalized[1])
        ):
            return False
        if rules.no_trailing_whitespace and normalized and _is_space_like(normalized[-1]):
            return False
        return not (rules.no_trailing_space and normalized.endswith(" "))

    def _specials_of(self, item: Any, kind: str) -> Counter[int] | None:
        """The ids the post-processor adds to one item (``None``: it does not only add)."""
        pretokenized = kind in ("words", "word_pair")
        if kind == "word_pair":
            item = (list(item[0]), list(item[1]))
        with_special = self._encode([item], add_special_tokens=True, is_pretokenized=pretokenized)
        without = self._encode([item], add_special_tokens=False, is_pretokenized=pretokenized)
        added = Counter(with_special[0].ids)
        added.subtract(without[0].ids)
        if any(n < 0 for n in added.values()):
            return None
        return +added

    @property
    def full(self) -> bool:
        """Whether enough distinct pieces are held that :meth:`flush` is due."""
        return self._distinct() > _MAX_DISTINCT

    def flush(self, counts: np.ndarray[Any, np.dtype[np.int64]]) -> None:
        """Encode the held pieces once each and add their weighted ids to ``counts``."""
        groups: defaultdict[int, list[str]] = defaultdict(list)
        for piece, n in self._bare.items():
            groups[n].append(piece)
        for key, n in self._text_pieces.items():
            groups[n].append(key[1:] if key.startswith(_FIRST) else " " + key)
        sequences: list[list[str]] = []
        weights: list[int] = []
        for weight, pieces in groups.items():
            for start in range(0, len(pieces), _PIECES_PER_SEQUENCE):
                sequences.append(pieces[start : start + _PIECES_PER_SEQUENCE])
                weights.append(weight)
        flat: list[int] = []
        lengths: list[int] = []
        for encodings in _chunks(self._encode, sequences):
            for encoding in encodings:
                ids = encoding.ids
                flat += ids
                lengths.append(len(ids))
        if flat:
            ids_array = np.asarray(flat, dtype=np.int64)
            check_range(ids_array, len(counts))
            repeated = np.repeat(np.asarray(weights, dtype=np.float64), lengths)
            summed = np.bincount(ids_array, weights=repeated, minlength=len(counts))
            counts += np.rint(summed).astype(np.int64)
        for kind, n in self._texts.items():
            for token_id, per_item in self._specials.get(kind, Counter()).items():
                check_range(np.asarray([token_id]), len(counts))
                counts[token_id] += n * per_item
        self._bare.clear()
        self._text_pieces.clear()
        self._texts.clear()
        self._pieces_seen = 0


def _chunks(encode: Any, sequences: list[list[str]]) -> Iterator[list[Any]]:
    for start in range(0, len(sequences), 64):
        yield encode(sequences[start : start + 64], add_special_tokens=False, is_pretokenized=True)


def _bad_space(joined: str) -> bool:
    """Whether a space of these (newline-joined) texts touches whitespace or a text's end."""
    if joined.isascii():  # the same test as the regex, by substring search
        if joined.startswith(" ") or joined.endswith(" "):
            return True
        rare = any(c in joined for c in _ASCII_SPACES[3:])  # whitespace besides " " "\n" "\t"
        pairs = _ASCII_BAD_PAIRS if rare else ("  ", " \n", "\n ", " \t", "\t ")
        return any(pair in joined for pair in pairs)
    return _BAD_SPACE.search(joined) is not None


_ASCII_SPACES = " \n\t\r\x0b\x0c\x1c\x1d\x1e\x1f"  # what Python's \s matches in ASCII
_ASCII_BAD_PAIRS = tuple(
    sorted({" " + c for c in _ASCII_SPACES} | {c + " " for c in _ASCII_SPACES})
)


def check_range(ids: np.ndarray[Any, Any], size: int) -> None:
    """``VocabError`` if an id the tokenizer produced lies outside ``0 .. size - 1``."""
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= size):
        from vocabcore import VocabError

        bad = int(ids.max()) if int(ids.max()) >= size else int(ids.min())
        raise VocabError(
            f"the tokenizer produced id {bad} beyond its size {size}; its vocabulary is "
            "inconsistent"
        )


def _bad_space_pattern() -> Any:
    import re

    odd = "".join(f"\\u{ord(c):04x}" for c in _ODD_SPACES)
    # a space before whitespace or the end, or after whitespace or the start
    return re.compile(rf" (?=[\s{odd}]|\Z)|(?<=[\s{odd}]) |\A ")


_BAD_SPACE = _bad_space_pattern()
