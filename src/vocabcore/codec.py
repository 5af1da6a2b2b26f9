"""JSON documents of plans and counts: plain fields in, plain fields out.

The codec knows the document layouts and checks every field on the way in; it knows nothing
of the classes. ``vocabcore.plan`` and ``vocabcore.counts`` import it (never the other way
round) and build their objects from the fields it returns.

Plan documents:

* format 1: ``vocab_size``, ``new_size``, ``kept`` (a base64 bitmap), ``fingerprint``,
  ``metadata``;
* format 2 (written now): format 1 plus ``added``, a list of token strings appended after the
  kept ids; ``new_size`` counts them too. Format-1 documents still load (no added tokens).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from vocabcore._version import __version__
from vocabcore.errors import VocabError
from vocabcore.validate import check_int

__all__ = [
    "COUNTS_FORMAT",
    "FORMAT",
    "CountsFields",
    "PlanFields",
    "bitmap_of",
    "counts_from_json",
    "counts_to_json",
    "ids_of_bitmap",
    "plan_fields_from_json",
    "plan_fields_to_json",
]

FORMAT = 2
COUNTS_FORMAT = 1
_ENCODING = "bitmap-lsb0-base64"


class PlanFields(NamedTuple):
    """The fields of a plan document."""

    vocab_size: int
    kept: list[int]
    fingerprint: str | None
    metadata: dict[str, Any]
    added: list[str]


class CountsFields(NamedTuple):
    """The fields of a counts document (sparse: only non-zero counts)."""

    vocab_size: int
    counts: dict[int, int]
    fingerprint: str | None


def bitmap_of(ids: Sequence[int], size: int) -> bytes:
    r"""Pack sorted ids below ``size`` into a bitmap, bit ``i % 8`` of byte ``i // 8``.

    >>> bitmap_of([0, 3, 9], 10)
    b'\t\x02'
    """
    bits = bytearray((size + 7) // 8)
    for i in ids:
        bits[i >> 3] |= 1 << (i & 7)
    return bytes(bits)


def ids_of_bitmap(bits: bytes) -> list[int]:
    r"""Unpack a bitmap written by :func:`bitmap_of` into sorted ids.

    >>> ids_of_bitmap(b'\t\x02')
    [0, 3, 9]
    """
    out: list[int] = []
    append = out.append
    for byte_index, byte in enumerate(bits):
        if byte:
            base = byte_index << 3
            for bit in range(8):
                if byte >> bit & 1:
                    append(base + bit)
    return out


def plan_fields_to_json(
    vocab_size: int,
    kept: Sequence[int],
    fingerprint: str | None,
    metadata: Mapping[str, Any],
    added: Sequence[str],
) -> str:
    """A format-2 plan document; keys are sorted so equal fields give identical text."""
    document = {
        "format": FORMAT,
        "created_by": f"vocabcore {__version__}",
        "vocab_size": vocab_size,
        "new_size": len(kept) + len(added),
        "kept": {
            "encoding": _ENCODING,
            "data": base64.b64encode(bitmap_of(kept, vocab_size)).decode("ascii"),
        },
        "added": list(added),
        "fingerprint": fingerprint,
        "metadata": dict(metadata),
    }
    return json.dumps(document, sort_keys=True, indent=1, ensure_ascii=False)


def _field(document: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    if name not in document:
        raise VocabError(f"plan JSON lacks the field '{name}'; the file is not a vocabcore plan")
    value = document[name]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise VocabError(
            f"plan JSON field '{name}' has the wrong type (got {type(value).__name__} {value!r})"
        )
    return value


def _load(text: str | bytes, what: str) -> Any:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise VocabError(f"{what} JSON is corrupt or truncated ({exc})") from None


def plan_fields_from_json(text: str | bytes) -> PlanFields:
    """Parse a plan document (format 1 or 2), checking every field.

    Raises:
        VocabError: The text is not JSON, not a plan, from a newer vocabcore, or inconsistent;
            the message names the field.
    """
    document = _load(text, "plan")
    if not isinstance(document, dict):
        raise VocabError(
            f"plan JSON must be an object (got {type(document).__name__}); "
            "the file is not a vocabcore plan"
        )
    fmt = _field(document, "format", int)
    if fmt > FORMAT:
        raise VocabError(
            f"plan JSON 'format' {fmt} is newer than this vocabcore {__version__} reads "
            f"(format {FORMAT}); upgrade vocabcore to read it"
        )
    if fmt < 1:
        raise VocabError(f"plan JSON 'format' must be >= 1 (got {fmt})")
    vocab_size = _field(document, "vocab_size", int)
    if vocab_size < 1:
        raise VocabError(f"plan JSON 'vocab_size' must be >= 1 (got {vocab_size})")
    new_size = _field(document, "new_size", int)
    if new_size < 0:
        raise VocabError(f"plan JSON 'new_size' must be >= 0 (got {new_size})")
    kept_field = _field(document, "kept", dict)
    if kept_field.get("encoding") != _ENCODING:
        raise VocabError(
            f"plan JSON 'kept.encoding' must be {_ENCODING!r} (got {kept_field.get('encoding')!r})"
        )
    data = kept_field.get("data")
    if not isinstance(data, str):
        raise VocabError(f"plan JSON 'kept.data' must be a base64 string (got {data!r})")
    try:
        bits = base64.b64decode(data.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise VocabError("plan JSON 'kept.data' is not valid base64 (corrupt file?)") from None
    if len(bits) != (vocab_size + 7) // 8:
        raise VocabError(
            f"plan JSON 'kept.data' holds {len(bits)} bytes, but vocab_size {vocab_size} "
            f"needs {(vocab_size + 7) // 8} (truncated or corrupt file?)"
        )
    kept = ids_of_bitmap(bits)
    if kept and kept[-1] >= vocab_size:
        raise VocabError(
            f"plan JSON 'kept' holds id {kept[-1]}, out of range for vocab_size {vocab_size}"
        )
    added: list[str] = []
    if fmt >= 2:
        added = _field(document, "added", list)
        bad = next((t for t in added if not isinstance(t, str)), None)
        if bad is not None:
            raise VocabError(f"plan JSON 'added' must hold token strings (got {bad!r})")
    if len(kept) + len(added) != new_size:
        raise VocabError(
            f"plan JSON 'new_size' is {new_size} but 'kept' holds {len(kept)} ids and 'added' "
            f"{len(added)} tokens (corrupt file?)"
        )
    fingerprint = document.get("fingerprint")
    if fingerprint is not None and not isinstance(fingerprint, str):
        raise VocabError(f"plan JSON 'fingerprint' must be a string or null (got {fingerprint!r})")
    metadata = document.get("metadata", {})
    if not isinstance(metadata, dict):
        raise VocabError(f"plan JSON 'metadata' must be an object (got {metadata!r})")
    return PlanFields(vocab_size, kept, fingerprint or None, metadata, added)


def counts_to_json(vocab_size: int, counts: Sequence[int], fingerprint: str | None) -> str:
    """A sparse counts document (only non-zero counts); equal counts give identical text."""
    ids = [i for i, c in enumerate(counts) if c]
    return json.dumps(
        {
            "format": COUNTS_FORMAT,
            "kind": "vocabcore.TokenCounts",
            "vocab_size": vocab_size,
            "fingerprint": fingerprint,
            "ids": ids,
            "counts": [counts[i] for i in ids],
        },
        sort_keys=True,
        separators=(",", ":"),
    )


def counts_from_json(text: str | bytes) -> CountsFields:
    """Parse a counts document; ids and counts are checked by the caller's constructor."""
    doc = _load(text, "counts")
    if not isinstance(doc, dict) or doc.get("kind") != "vocabcore.TokenCounts":
        raise VocabError("counts JSON is not a vocabcore TokenCounts document")
    if doc.get("format") != COUNTS_FORMAT:
        raise VocabError(
            f"counts JSON 'format' must be {COUNTS_FORMAT} (got {doc.get('format')!r}); "
            "upgrade vocabcore to read newer files"
        )
    vocab_size = check_int("vocab_size", doc.get("vocab_size"), minimum=1)
    ids, counts = doc.get("ids"), doc.get("counts")
    if not isinstance(ids, list) or not isinstance(counts, list) or len(ids) != len(counts):
        raise VocabError("counts JSON 'ids' and 'counts' must be lists of equal length")
    fingerprint = doc.get("fingerprint")
    if fingerprint is not None and not isinstance(fingerprint, str):
        raise VocabError(f"counts JSON 'fingerprint' must be a string or null ({fingerprint!r})")
    return CountsFields(vocab_size, dict(zip(ids, counts, strict=False)), fingerprint)
