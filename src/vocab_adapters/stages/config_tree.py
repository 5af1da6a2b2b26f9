"""A model config and its nested configs (``text_config``, ...): the tree the stages read.

The config stage remaps what it finds there; the softmax stage reads the sizes and logit
transforms of the same owners. Neither imports the other: both walk the tree with this module.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from typing import Any

__all__ = ["config_owners", "is_config", "walk_owners"]


def is_config(value: Any) -> bool:
    """Whether ``value`` is a transformers config (or a namespace standing in for one)."""
    if isinstance(value, types.SimpleNamespace):
        return True
    try:
        from transformers import PretrainedConfig
    except ImportError:  # pragma: no cover - transformers is a dependency
        return False
    return isinstance(value, PretrainedConfig)


def walk_owners(path: str, config: Any, seen: set[int]) -> Iterator[tuple[str, Any]]:
    """The config and its nested configs, each once, with a dotted path for messages."""
    if id(config) in seen:
        return
    seen.add(id(config))
    yield path, config
    for key, value in list(vars(config).items()):
        if is_config(value):
            yield from walk_owners(f"{path}.{key}", value, seen)


def config_owners(config: Any) -> list[tuple[str, Any]]:
    """``config`` and its nested configs (``text_config``, ...), each once, with their paths."""
    return list(walk_owners("config", config, set()))
