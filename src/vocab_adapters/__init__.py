"""vocab_adapters: apply a vocabcore plan to tokenizers, models, configs and optimizers.

The package is grouped by role (``docs/concepts.md`` draws it): ``stages/`` (the reversible
stages, one module per target), ``tokenization/`` (tokenizer knowledge they share with the
planning code), ``planning/`` (building plans), ``reports/`` (coverage and memory figures),
``integrations/`` (Trainer, Flair, sentence-transformers, distributed training), ``deploy/``
(GGUF, ONNX, draft vocabularies), and on top
``session`` (``apply_plan``, ``revert_plan``, ``reduced_vocab``), ``export`` and ``cli``. The
modules' earlier flat paths (``vocab_adapters.fast_tokenizer``, ``vocab_adapters.softmax``,
...) still import, as the very same module objects.

The top-level names are loaded on first use, so ``import vocab_adapters`` (and the
``vocabcore`` command's start, ``--help`` and argument errors) does not import torch and
transformers: measured, that saves about 3.5 s of a 3.7 s cold start, while importing every
adapter module once torch is loaded costs about 60 ms. No public name is also the name of a
submodule (a submodule, once imported, would shadow the name); a test checks both facts. The
adapter modules (``fast_tokenizer``, ``slow_tokenizer``, ``embeddings``, ``config``,
``optimizer``) can be imported directly for lower-level use.
"""

from __future__ import annotations

import sys
from importlib.abc import Loader, MetaPathFinder
from importlib.machinery import ModuleSpec
from importlib.util import spec_from_loader
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vocab_adapters.deploy.draft_vocab import draft_vocab
    from vocab_adapters.export import export_reduced
    from vocab_adapters.integrations.flair_plugin import reduce_vocab_plugin
    from vocab_adapters.integrations.trainer import VocabReductionCallback
    from vocab_adapters.planning.suggest import suggest_tokens
    from vocab_adapters.planning.texts import (
        count_tokens,
        count_tokens_parallel,
        plan_from_counts,
        plan_from_texts,
    )
    from vocab_adapters.reports.coverage_report import CoverageReport, coverage
    from vocab_adapters.reports.memory import memory_estimate
    from vocab_adapters.session import (
        AppliedPlan,
        apply_plan,
        reduced_vocab,
        revert_plan,
        track_optimizer,
    )
    from vocab_adapters.tokenization.tokenizer_backend import fingerprint

__all__ = [
    "AppliedPlan",
    "CoverageReport",
    "VocabReductionCallback",
    "apply_plan",
    "coverage",
    "count_tokens",
    "count_tokens_parallel",
    "draft_vocab",
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
    "fingerprint": "tokenization.tokenizer_backend",
    "plan_from_texts": "planning.texts",
    "count_tokens": "planning.texts",
    "count_tokens_parallel": "planning.texts",
    "plan_from_counts": "planning.texts",
    "export_reduced": "export",
    "draft_vocab": "deploy.draft_vocab",
    "memory_estimate": "reports.memory",
    "coverage": "reports.coverage_report",
    "CoverageReport": "reports.coverage_report",
    "suggest_tokens": "planning.suggest",
    "reduce_vocab_plugin": "integrations.flair_plugin",
    "VocabReductionCallback": "integrations.trainer",
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


#: Where each module lives, by the flat name it had before the grouped layout.
MOVED = {
    **{
        name: f"stages.{name}"
        for name in (
            "reversible",
            "fast_tokenizer",
            "slow_tokenizer",
            "embeddings",
            "config",
            "optimizer",
            "softmax",
            "added_rows",
            "tokenizer_adapter",
            "wrappers",
        )
    },
    **{
        name: f"tokenization.{name}"
        for name in (
            "tokenizer_backend",
            "bpe_closure",
            "added_tokens",
            "sp_added",
        )
    },
    **{
        name: f"planning.{name}"
        for name in (
            "texts",
            "piece_counts",
            "chat",
            "budget",
            "suggest",
            "text_files",
        )
    },
    **{name: f"reports.{name}" for name in ("coverage_report", "memory")},
    **{
        name: f"integrations.{name}"
        for name in (
            "trainer",
            "flair_plugin",
            "sentence_transformer",
            "distributed",
        )
    },
}


class _FlatPaths(MetaPathFinder, Loader):
    """``import vocab_adapters.<flat name>`` gives the module at its grouped path."""

    def __init__(self) -> None:
        self._specs: dict[str, ModuleSpec | None] = {}

    def find_spec(
        self, fullname: str, path: Any = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        package, _, name = fullname.rpartition(".")
        if package != __name__ or name not in MOVED:
            return None
        return spec_from_loader(fullname, self)

    def create_module(self, spec: ModuleSpec) -> ModuleType:
        from importlib import import_module

        module = import_module(f"{__name__}.{MOVED[spec.name.rpartition('.')[2]]}")
        self._specs[module.__name__] = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run (the module ran at its grouped path); it keeps its own spec."""
        module.__spec__ = self._specs[module.__name__]


if not any(isinstance(finder, _FlatPaths) for finder in sys.meta_path):
    sys.meta_path.append(_FlatPaths())
