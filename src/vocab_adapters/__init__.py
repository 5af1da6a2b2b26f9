"""vocab_adapters: apply a vocabcore plan to tokenizers, models, configs and optimizers.

The top-level functions import torch and transformers lazily, so ``import vocab_adapters``
is cheap; the adapter modules (``fast_tokenizer``, ``slow_tokenizer``, ``embeddings``,
``config``, ``optimizer``) can be imported directly for lower-level use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vocab_adapters.export import export_reduced
    from vocab_adapters.fingerprint import fingerprint
    from vocab_adapters.session import (
        AppliedPlan,
        apply_plan,
        reduced_vocab,
        revert_plan,
        track_optimizer,
    )
    from vocab_adapters.texts import (
        count_tokens,
        count_tokens_parallel,
        plan_from_counts,
        plan_from_texts,
    )

__all__ = [
    "AppliedPlan",
    "apply_plan",
    "count_tokens",
    "count_tokens_parallel",
    "export_reduced",
    "fingerprint",
    "plan_from_counts",
    "plan_from_texts",
    "reduced_vocab",
    "revert_plan",
    "track_optimizer",
]

_HOMES = {
    "AppliedPlan": "session",
    "apply_plan": "session",
    "reduced_vocab": "session",
    "revert_plan": "session",
    "track_optimizer": "session",
    "fingerprint": "fingerprint",
    "plan_from_texts": "texts",
    "count_tokens": "texts",
    "count_tokens_parallel": "texts",
    "plan_from_counts": "texts",
    "export_reduced": "export",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'vocab_adapters' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f"vocab_adapters.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
