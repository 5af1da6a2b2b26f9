"""Versioned JSON for plans: kept ids as a base64 bitmap, strict checks on the way in."""

from __future__ import annotations

import base64
import binascii
import json
from typing import TYPE_CHECKING, Any

from vocabcore._version import __version__
from vocabcore.errors import VocabError

if TYPE_CHECKING:
    from vocabcore.plan import VocabPlan

__all__ = ["FORMAT", "plan_from_json", "plan_to_json", "bitmap_of", "ids_of_bitmap"]

FORMAT = 1
_ENCODING = "bitmap-lsb0-base64"


def bitmap_of(ids: tuple[int, ...], size: int) -> bytes:
    """Pack sorted ids below ``size`` into a bitmap, bit ``i % 8`` of byte ``i // 8``."""
    bits = bytearray((size + 7) // 8)
    for i in ids:
        bits[i >> 3] |= 1 << (i & 7)
    return bytes(bits)


def ids_of_bitmap(bits: bytes) -> list[int]:
    """Unpack a bitmap written by :func:`bitmap_of` into sorted ids."""
    out: list[int] = []
    append = out.append
    for byte_index, byte in enumerate(bits):
        if byte:
            base = byte_index << 3
            for bit in range(8):
                if byte >> bit & 1:
                    append(base + bit)
    return out


def plan_to_json(plan: VocabPlan) -> str:
    """Serialize ``plan``; keys are sorted so equal plans give identical text."""
    document = {
        "format": FORMAT,
        "created_by": f"vocabcore {__version__}",
        "vocab_size": plan.vocab_size,
        "new_size": plan.new_size,
        "kept": {
            "encoding": _ENCODING,
            "data": base64.b64encode(bitmap_of(plan.kept, plan.vocab_size)).decode("ascii"),
        },
        "fingerprint": plan.fingerprint,
        "metadata": dict(plan.metadata),
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


def plan_from_json(text: str | bytes) -> VocabPlan:
    """Parse a plan, checking every field; raises ``VocabError`` naming what is wrong."""
    from vocabcore.plan import VocabPlan

    try:
        document = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise VocabError(f"plan JSON is corrupt or truncated ({exc})") from None
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
    if len(kept) != new_size:
        raise VocabError(
            f"plan JSON 'new_size' is {new_size} but 'kept' holds {len(kept)} ids (corrupt file?)"
        )
    fingerprint = document.get("fingerprint")
    if fingerprint is not None and not isinstance(fingerprint, str):
        raise VocabError(f"plan JSON 'fingerprint' must be a string or null (got {fingerprint!r})")
    metadata = document.get("metadata", {})
    if not isinstance(metadata, dict):
        raise VocabError(f"plan JSON 'metadata' must be an object (got {metadata!r})")
    return VocabPlan(vocab_size, kept, fingerprint or None, metadata)
