"""vocab_adapters: apply a vocabcore plan to tokenizers, models, configs and optimizers.

The top-level names are loaded on first use, so ``import vocab_adapters`` (and the
``vocabcore`` command's start, ``--help`` and argument errors) does not import torch and
transformers: measured, that saves about 3.5 s of a 3.7 s cold start, while importing every
adapter module once torch is loaded costs about 60 ms. No public name is also the name of a
submodule (a submodule, once imported, would shadow the name); a test checks both facts. The
adapter modules (``fast_tokenizer``, ``slow_tokenizer``, ``embeddings``, ``config``,
``optimizer``) can be imported directly for lower-level use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vocab_adapters.coverage_report import CoverageReport, coverage
    from vocab_adapters.export import export_reduced
    from vocab_adapters.flair_plugin import reduce_vocab_plugin
    from vocab_adapters.memory import memory_estimate
    from vocab_adapters.session import (
        AppliedPlan,
        apply_plan,
        reduced_vocab,
        revert_plan,
        track_optimizer,
    )
    from vocab_adapters.suggest import suggest_tokens
    from vocab_adapters.texts import (
        count_tokens,
        count_tokens_parallel,
        plan_from_counts,
        plan_from_texts,
    )
    from vocab_adapters.tokenizer_backend import fingerprint
    from vocab_adapters.trainer import VocabReductionCallback

__all__ = [
    "AppliedPlan",
    "CoverageReport",
    "VocabReductionCallback",
    "apply_plan",
    "coverage",
    "count_tokens",
    "count_tokens_parallel",
    "export_reduced",
    "fingerprint",
    "memory_estimate",
    "plan_from_counts",
    "plan_from_texts",
    "reduce_vocab_plugin",
    "reduced_vocab",
    "revert_plan",
    "suggest_tokens",
    "track_optimizer",
]

_HOMES = {
    "AppliedPlan": "session",
    "apply_plan": "session",
    "reduced_vocab": "session",
    "revert_plan": "session",
    "track_optimizer": "session",
    "fingerprint": "tokenizer_backend",
    "plan_from_texts": "texts",
    "count_tokens": "texts",
    "count_tokens_parallel": "texts",
    "plan_from_counts": "texts",
    "export_reduced": "export",
    "memory_estimate": "memory",
    "coverage": "coverage_report",
    "CoverageReport": "coverage_report",
    "suggest_tokens": "suggest",
    "reduce_vocab_plugin": "flair_plugin",
    "VocabReductionCallback": "trainer",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'vocab_adapters' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f"vocab_adapters.{home}"), name)
    globals()[name] = value
    return value


def _check_no_shadowing() -> None:  # run by the tests: a public name must not be a module
    import pkgutil

    modules = {info.name for info in pkgutil.iter_modules(__path__)}
    clash = sorted(modules & set(__all__))
    if clash:
        raise AssertionError(f"public names that are also submodules: {clash}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
