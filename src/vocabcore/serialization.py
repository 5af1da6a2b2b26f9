"""Versioned JSON for plans (kept for callers of the old names; see :mod:`vocabcore.codec`).

This module imports :mod:`vocabcore.plan`, which imports only the codec, so there is no cycle.
"""

from __future__ import annotations

from vocabcore.codec import FORMAT, bitmap_of, ids_of_bitmap
from vocabcore.plan import VocabPlan

__all__ = ["FORMAT", "bitmap_of", "ids_of_bitmap", "plan_from_json", "plan_to_json"]


def plan_to_json(plan: VocabPlan) -> str:
    """``plan.to_json()``."""
    return plan.to_json()


def plan_from_json(text: str | bytes) -> VocabPlan:
    """``VocabPlan.from_json(text)``."""
    return VocabPlan.from_json(text)
