"""Chat data for :func:`vocab_adapters.plan_from_texts`: conversations and a model's config ids.

A conversation is a list of ``{"role": ..., "content": ...}`` dicts. Conversations are counted
through the tokenizer's own chat template, ``tokenizer.apply_chat_template(conversation,
tokenize=True, **chat_template_kwargs)``, so the template's tokens (``<|im_start|>``, role
names, ``<|eot_id|>``...) are counted, and kept, exactly as training will see them.

Example:
    >>> is_conversation([{"role": "user", "content": "hi"}])
    True
    >>> is_conversation("hi")
    False
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from itertools import chain, islice
from typing import Any

import numpy as np

from vocabcore import VocabError

__all__ = ["config_token_ids", "count_conversations", "is_conversation", "split_conversations"]

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


def _check(item: Any, index: int) -> list[Any]:
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
        f"{{'role': str, 'content': ...}} dicts (got {type(item).__name__} {item!r:.80}); pass "
        "only conversations, or only texts"
    )


def split_conversations(texts: Any, columns: Any = None) -> tuple[Iterable[Any] | None, Any]:
    """``(conversations, None)`` if ``texts`` holds conversations, else ``(None, texts)``.

    Only the first item is looked at. A ``datasets.Dataset`` with a ``messages`` column (TRL's
    conversational format) gives that column (or the column ``columns`` names). An iterator
    is re-chained after the item looked at, so the second value is what to count instead of
    ``texts``.
    """
    names = getattr(texts, "column_names", None)
    if names is not None and hasattr(texts, "iter"):
        name = columns if isinstance(columns, str) else "messages"
        if name not in names:
            return None, texts
        first: dict[str, list[Any]] = next(iter(texts.iter(batch_size=1)), {})
        if not is_conversation(first.get(name, [None])[0]):
            return None, texts
        return (row for batch in texts.iter(batch_size=256) for row in batch[name]), None
    if isinstance(texts, (str, bytes, Mapping)):
        return None, texts
    if isinstance(texts, Sequence):
        return (texts, None) if texts and is_conversation(texts[0]) else (None, texts)
    iterator = iter(texts)
    head = list(islice(iterator, 1))
    rest = chain(head, iterator)
    return (rest, None) if head and is_conversation(head[0]) else (None, rest)


def _template_ids(tokenizer: Any, batch: list[list[Any]], kwargs: dict[str, Any]) -> list[Any]:
    out = tokenizer.apply_chat_template(batch, tokenize=True, **kwargs)
    if isinstance(out, Mapping) or hasattr(out, "keys"):  # transformers 5: a BatchEncoding
        out = out["input_ids"]
    return list(out)


def count_conversations(
    tokenizer: Any,
    conversations: Iterable[Any],
    size: int,
    chat_template_kwargs: Mapping[str, Any] | None = None,
    batch_size: int = 1000,
) -> tuple[np.ndarray[Any, np.dtype[np.int64]], int]:
    """Count the ids of ``conversations`` rendered with ``tokenizer``'s chat template.

    Returns:
        ``(counts, number of conversations)``, counts an ``int64`` array of length ``size``.

    Raises:
        VocabError: The tokenizer has no chat template, an item is not a conversation (the
            message names its index), or ``chat_template_kwargs`` is not a mapping.
    """
    if chat_template_kwargs is not None and not isinstance(chat_template_kwargs, Mapping):
        raise VocabError(
            "'chat_template_kwargs' must be a dict of apply_chat_template arguments "
            f"(got {type(chat_template_kwargs).__name__})"
        )
    kwargs = dict(chat_template_kwargs or {})
    for reserved in ("tokenize", "return_dict", "return_tensors"):
        if reserved in kwargs:
            raise VocabError(
                f"'chat_template_kwargs' may not set {reserved!r}: conversations are counted as "
                "token ids; pass the template's own arguments (add_generation_prompt, tools...)"
            )
    if not callable(getattr(tokenizer, "apply_chat_template", None)) or not getattr(
        tokenizer, "chat_template", None
    ):
        raise VocabError(
            f"the tokenizer ({type(tokenizer).__name__}) has no chat template, so conversations "
            "can't be counted; set tokenizer.chat_template (as the model's checkpoint has it) "
            "or pass the texts as strings"
        )
    counts = np.zeros(size, dtype=np.int64)
    n = 0
    iterator = iter(conversations)
    while True:
        batch = [_check(item, n + i) for i, item in enumerate(islice(iterator, batch_size))]
        if not batch:
            break
        flat = np.fromiter(
            chain.from_iterable(_template_ids(tokenizer, batch, kwargs)), dtype=np.int64
        )
        if flat.size:
            if flat.min() < 0 or flat.max() >= size:
                raise VocabError(
                    f"the chat template produced id {int(flat.max())} beyond the tokenizer's "
                    f"size {size}; its vocabulary is inconsistent"
                )
            counts += np.bincount(flat, minlength=size)
        n += len(batch)
    return counts, n


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
