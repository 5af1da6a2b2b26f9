"""Vocabulary budgets: keep at most ``max_size`` ids, most frequent first.

:func:`fit_budget` is what ``plan_from_texts(..., max_size=N)`` and
``plan_from_counts(..., max_size=N)`` run when the plan they would build otherwise is larger
than ``N``. ``N`` caps ``new_size``, the plan's added tokens included. The order: what
encoding needs first (special and added tokens of the tokenizer, the unk token, byte pieces or
the byte alphabet, Unigram's lowest-scoring piece, and the BPE merge closure of all of these);
then the plan's added tokens (``add_tokens``, in order; they take the last ids); then ordinary
ids by count, highest first (ties: lower id first), each with whatever of its own merge
closure is not kept yet, until the next one would not fit. Nothing after that one is taken,
so the plan is a prefix of one fixed order and a larger budget always keeps a superset. What
encoding needs plus the added tokens above ``N`` raises ``VocabError`` naming both numbers.

:func:`budget_order` returns that order with the size each prefix costs; the coverage plot
uses it to estimate every budget from one encoding of the texts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from vocab_adapters.tokenization.bpe_closure import merge_table, token_closure
from vocab_adapters.tokenization.tokenizer_backend import backend_of, tokenizer_document
from vocabcore import VocabError, VocabPlan

__all__ = ["budget_order", "check_room", "closure_pricer", "fit_budget", "unk_ids"]

_Counts = np.ndarray[Any, np.dtype[np.int64]]


def unk_ids(tokenizer: Any, document: Mapping[str, Any] | None = None) -> set[int]:
    """The id of the tokenizer model's unk token (empty when it has none).

    Hugging Face tokenizers list it among their special ids already; a bare
    ``tokenizers.Tokenizer`` names it only in its model (``unk_token`` / ``unk_id``).
    ``document`` is the backend's parsed JSON, when the caller has it already.
    """
    out: set[int] = set()
    unk = getattr(tokenizer, "unk_token_id", None)
    if isinstance(unk, int) and not isinstance(unk, bool):
        out.add(unk)
    backend = backend_of(tokenizer)
    if backend is not None:
        if document is None:
            _, document = tokenizer_document(backend)
        model = document.get("model") or {}
        if model.get("type") == "Unigram":
            if isinstance(model.get("unk_id"), int):
                out.add(int(model["unk_id"]))
        elif isinstance(model.get("unk_token"), str) and isinstance(model.get("vocab"), dict):
            found = model["vocab"].get(model["unk_token"])
            if isinstance(found, int):
                out.add(found)
    return out


def _bpe_pricer(
    vocab: Mapping[str, int], merges: Any, prefix: str | None, suffix: str | None
) -> Callable[[int], set[int]]:
    table = merge_table(merges, prefix)
    tokens = {i: t for t, i in vocab.items()}

    def price(old_id: int) -> set[int]:
        token = tokens.get(old_id)
        if token is None:
            return set()
        return token_closure(
            token, vocab, table, continuing_subword_prefix=prefix, end_of_word_suffix=suffix
        )

    return price


def closure_pricer(tokenizer: Any) -> Callable[[int], set[int]]:
    """``old id -> ids BPE meets building that token alone`` (empty for non-BPE models).

    Uses :func:`vocab_adapters.tokenization.bpe_closure.token_closure` with the merges of the fast
    tokenizer's model, or of a slow byte-level / sentencepiece BPE tokenizer.
    """
    backend = backend_of(tokenizer)
    if backend is not None:
        _, document = tokenizer_document(backend)
        model = document.get("model") or {}
        if model.get("type") == "BPE" and isinstance(model.get("vocab"), dict):
            return _bpe_pricer(
                model["vocab"],
                model.get("merges") or (),
                model.get("continuing_subword_prefix"),
                model.get("end_of_word_suffix"),
            )
        return lambda _old_id: set()
    from vocab_adapters.stages import slow_tokenizer

    if slow_tokenizer.supports(tokenizer):
        found = slow_tokenizer.merges_and_vocab(tokenizer)
        if found is not None:
            merges, vocab = found
            return _bpe_pricer(vocab, merges, None, None)
    return lambda _old_id: set()


def budget_order(
    base: VocabPlan,
    counts: _Counts,
    min_count: int,
    price: Callable[[int], set[int]],
    limit: int | None = None,
) -> tuple[list[int], list[int], list[list[int]]]:
    """The order in which a budget takes ids after ``base``, and what each step costs.

    Returns:
        ``(candidates, sizes, groups)``: candidate ids by count (highest first, ties by id),
        the plan size after taking the first ``k + 1`` of them (``sizes[k]``), and the new ids
        each one brings (itself and the part of its closure not kept yet). Candidates that
        ``base`` or an earlier closure already keeps cost nothing and are left out. With
        ``limit``, the walk stops at the first candidate that would exceed it.
    """
    values = np.asarray(counts, dtype=np.int64)
    ids = np.flatnonzero(values >= min_count)
    ids = ids[np.lexsort((ids, -values[ids]))]
    kept = set(base.kept)
    size = len(kept)
    candidates: list[int] = []
    sizes: list[int] = []
    groups: list[list[int]] = []
    for old in ids.tolist():
        if old in kept:
            continue
        group = {old}
        group.update(price(old))
        group.difference_update(kept)
        if limit is not None and size + len(group) > limit:
            break
        kept.update(group)
        size += len(group)
        candidates.append(old)
        sizes.append(size)
        groups.append(sorted(group))
    return candidates, sizes, groups


def check_room(needed: int, added: int, max_size: int) -> None:
    """``VocabError`` when the ``needed`` ids plus ``added`` tokens exceed ``max_size``.

    >>> check_room(10, 5, 15)
    >>> check_room(10, 6, 15)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    vocabcore.errors.VocabError: 'max_size' 15 is below the 10 ids that encoding needs plus ...
    """
    if needed + added <= max_size:
        return
    what = (
        "(special and added tokens, the unk token, byte pieces or alphabet, Unigram's "
        "lowest piece, BPE merge closure)"
    )
    if added:
        raise VocabError(
            f"'max_size' {max_size} is below the {needed} ids that encoding needs plus the "
            f"{added} added tokens ({needed + added}) {what}; max_size counts added tokens "
            f"too: pass max_size >= {needed + added} or add fewer tokens"
        )
    raise VocabError(
        f"'max_size' {max_size} is below the {needed} ids that encoding needs {what}; pass "
        f"max_size >= {needed}"
    )


def fit_budget(
    tokenizer: Any,
    base: VocabPlan,
    counts: _Counts,
    min_count: int,
    max_size: int,
    close: Callable[[VocabPlan], VocabPlan],
    added: int = 0,
) -> VocabPlan:
    """``base`` plus the most frequent ids that fit in ``max_size - added``.

    See the module docstring for the order; the ``added`` tokens the caller appends afterwards
    (``plan.adding``) take the last ``added`` places of ``max_size``.

    Args:
        tokenizer: The tokenizer the plan is for.
        base: The closed plan of what encoding needs (and the user's ``keep``).
        counts: Per-id counts over the texts.
        min_count: Ids counted fewer times are never taken.
        max_size: The most ids the plan may have, added tokens included (``new_size``).
        close: Closes a plan for ``tokenizer`` exactly as the unbudgeted path does.
        added: How many tokens the caller adds after the kept ids.

    Raises:
        VocabError: ``base`` plus ``added`` exceeds ``max_size`` (the message names both).
    """
    check_room(base.new_size, added, max_size)
    max_size -= added
    price = closure_pricer(tokenizer)
    _, _, groups = budget_order(base, counts, min_count, price, limit=max_size)
    taken = [i for group in groups for i in group]
    plan = close(base.keeping(taken))
    if plan.new_size <= max_size:
        return plan
    # The per-token closures should add up to the whole closure; if a tokenizer's merges
    # make them not, take the longest prefix whose closed plan still fits.
    low, high = 0, len(groups)
    while low < high:
        mid = (low + high + 1) // 2
        trial = close(base.keeping(i for group in groups[:mid] for i in group))
        if trial.new_size <= max_size:
            low = mid
        else:
            high = mid - 1
    return close(base.keeping(i for group in groups[:low] for i in group))
