"""Chat data for :func:`vocab_adapters.plan_from_texts`: conversations and a model's config ids.

A conversation is a list of ``{"role": ..., "content": ...}`` dicts. Conversations are counted
through the tokenizer's own chat template, ``tokenizer.apply_chat_template(conversation,
tokenize=True, **chat_template_kwargs)``, so the template's tokens (``<|im_start|>``, role
names, ``<|eot_id|>``...) are counted, and kept, exactly as training will see them. They go
into the same id counter as texts (:mod:`vocab_adapters.planning.texts` classifies every item on its
own, so one input may mix texts, pairs, word lists and conversations).

Example:
    >>> is_conversation([{"role": "user", "content": "hi"}])
    True
    >>> is_conversation("hi")
    False
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import chain
from typing import Any

import numpy as np

from vocabcore import VocabError

__all__ = [
    "check_conversation",
    "check_template",
    "config_token_ids",
    "conversation_ids",
    "is_conversation",
    "template_kwargs",
]

# Config and generation-config fields naming ids the model emits or needs (single or lists).
CONFIG_ID_FIELDS = (
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "sep_token_id",
    "decoder_start_token_id",
)


def is_conversation(item: Any) -> bool:
    """Whether ``item`` looks like a conversation: a non-empty list of mappings."""
    return isinstance(item, (list, tuple)) and len(item) > 0 and isinstance(item[0], Mapping)


def check_conversation(item: Any, index: int) -> list[Any]:
    """``item`` as a list of turns, or ``VocabError`` naming ``index`` if it is no conversation."""
    if isinstance(item, (list, tuple)) and item:
        for turn in item:
            if not (
                isinstance(turn, Mapping)
                and isinstance(turn.get("role"), str)
                and "content" in turn
            ):
                break
        else:
            return list(item)
    raise VocabError(
        f"item {index} of texts is not a conversation: a conversation is a non-empty list of "
        f"{{'role': str, 'content': ...}} dicts (got {type(item).__name__} {item!r:.80}); fix "
        "or drop that item"
    )


def template_kwargs(chat_template_kwargs: Any) -> dict[str, Any] | None:
    """Checked ``chat_template_kwargs`` (``None`` stays ``None``: none were given)."""
    if chat_template_kwargs is None:
        return None
    if not isinstance(chat_template_kwargs, Mapping):
        raise VocabError(
            "'chat_template_kwargs' must be a dict of apply_chat_template arguments "
            f"(got {type(chat_template_kwargs).__name__})"
        )
    kwargs = dict(chat_template_kwargs)
    for reserved in ("tokenize", "return_dict", "return_tensors"):
        if reserved in kwargs:
            raise VocabError(
                f"'chat_template_kwargs' may not set {reserved!r}: conversations are counted as "
                "token ids; pass the template's own arguments (add_generation_prompt, tools...)"
            )
    return kwargs


def check_template(tokenizer: Any) -> None:
    """``VocabError`` unless ``tokenizer`` can render conversations with a chat template."""
    if not callable(getattr(tokenizer, "apply_chat_template", None)) or not getattr(
        tokenizer, "chat_template", None
    ):
        raise VocabError(
            f"the tokenizer ({type(tokenizer).__name__}) has no chat template, so conversations "
            "can't be counted; set tokenizer.chat_template (as the model's checkpoint has it) "
            "or pass the texts as strings"
        )


def conversation_ids(
    tokenizer: Any, batch: list[list[Any]], kwargs: Mapping[str, Any] | None
) -> np.ndarray[Any, np.dtype[np.int64]]:
    """The ids of ``batch`` (checked conversations) rendered with the chat template, flat."""
    check_template(tokenizer)
    out = tokenizer.apply_chat_template(batch, tokenize=True, **dict(kwargs or {}))
    if isinstance(out, Mapping) or hasattr(out, "keys"):  # transformers 5: a BatchEncoding
        out = out["input_ids"]
    return np.fromiter(chain.from_iterable(out), dtype=np.int64)


def config_token_ids(model: Any, size: int) -> set[int]:
    """Ids below ``size`` that ``model``'s config tree and generation config name.

    ``bos/eos/pad/sep/decoder_start_token_id``, single ids or lists (Llama 3's eos list), in
    the config, its nested configs (``text_config``...) and ``model.generation_config``.
    """
    config = getattr(model, "config", None)
    if config is None:
        raise VocabError(
            f"'model' must be a model with a .config (got {type(model).__name__}); pass the "
            "transformers model whose config names the special ids"
        )
    owners: list[Any] = []
    pending = [config]
    while pending:
        owner = pending.pop()
        if any(owner is o for o in owners):
            continue
        owners.append(owner)
        for value in vars(owner).values():
            if hasattr(value, "to_dict") and hasattr(value, "vocab_size"):
                pending.append(value)
    generation = getattr(model, "generation_config", None)
    if generation is not None:
        owners.append(generation)
    ids: set[int] = set()
    for owner in owners:
        for name in CONFIG_ID_FIELDS:
            value = getattr(owner, name, None)
            values = value if isinstance(value, (list, tuple)) else [value]
            for v in values:
                if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < size:
                    ids.add(v)
    return ids
