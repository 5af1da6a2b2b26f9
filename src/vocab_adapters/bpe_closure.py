"""Merge closure for BPE: keep every token that BPE needs on the way to a kept token.

BPE builds a word from its characters by applying merges in rank order. A token of the
reduced vocabulary is only produced if every merge on its way there survives, and a merge
survives only if both its parts and its result are kept. Because no merge crosses the
boundary of a final token, the merges that build a token ``T`` inside any word are exactly
the merges BPE applies to ``T``'s own characters; so keeping, for every kept ``T``, the
symbols of that run (characters included) makes the reduced tokenizer produce the same
pieces as the full one on every text the plan was built from.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from vocab_adapters.tokenizer_backend import keep_needed
from vocabcore import VocabError, VocabPlan

__all__ = ["close_under_merges", "closure_ids", "merge_table", "token_closure"]

MergeTable = dict[tuple[str, str], tuple[int, str]]


def merge_table(
    merges: Iterable[tuple[str, str] | Sequence[str] | str],
    continuing_subword_prefix: str | None = None,
) -> MergeTable:
    """``{(left, right): (rank, merged)}`` for BPE merges given as pairs or ``"a b"`` strings.

    >>> merge_table([("a", "b"), "ab c"])
    {('a', 'b'): (0, 'ab'), ('ab', 'c'): (1, 'abc')}
    """
    prefix = continuing_subword_prefix or ""
    table: MergeTable = {}
    for rank, merge in enumerate(merges):
        if isinstance(merge, str):
            parts = merge.split(" ")
            if len(parts) != 2:
                raise VocabError(
                    f"BPE merge {rank} must be 'left right' with one space (got {merge!r})"
                )
            left, right = parts
        else:
            if len(merge) != 2:
                raise VocabError(f"BPE merge {rank} must be a pair (got {merge!r})")
            left, right = merge[0], merge[1]
        cut = len(prefix) if prefix and right.startswith(prefix) else 0
        merged = left + right[cut:]
        table.setdefault((left, right), (rank, merged))
    return table


def _initial_symbols(token: str, prefix: str, suffix: str) -> list[str]:
    """The symbols BPE starts from when ``token`` is a span of a word on its own."""
    inner = False
    body = token
    if prefix and body.startswith(prefix) and len(body) > len(prefix):
        inner, body = True, body[len(prefix) :]
    last = False
    if suffix and body.endswith(suffix) and len(body) > len(suffix):
        last, body = True, body[: -len(suffix)]
    symbols = [(prefix if (inner or i > 0) else "") + c for i, c in enumerate(body)]
    if last and symbols:
        symbols[-1] += suffix
    return symbols


def _run(symbols: list[str], table: MergeTable, seen: set[str]) -> None:
    """Apply BPE merges to ``symbols`` in rank order, adding every symbol met to ``seen``."""
    seen.update(symbols)
    get = table.get
    while len(symbols) > 1:
        best_rank = -1
        best_at = -1
        best_merged = ""
        for i in range(len(symbols) - 1):
            found = get((symbols[i], symbols[i + 1]))
            if found is not None and (best_at < 0 or found[0] < best_rank):
                best_rank, best_merged, best_at = found[0], found[1], i
        if best_at < 0:
            return
        symbols[best_at : best_at + 2] = [best_merged]
        seen.add(best_merged)


def closure_ids(
    token_ids: Iterable[int],
    vocab: Mapping[str, int],
    table: MergeTable,
    *,
    continuing_subword_prefix: str | None = None,
    end_of_word_suffix: str | None = None,
) -> set[int]:
    """Ids of the vocabulary symbols BPE meets while building each of ``token_ids``."""
    prefix = continuing_subword_prefix or ""
    suffix = end_of_word_suffix or ""
    id_to_token = {i: t for t, i in vocab.items()}
    seen: set[str] = set()
    for i in token_ids:
        token = id_to_token.get(i)
        if token is None or token in seen:
            continue
        _run(_initial_symbols(token, prefix, suffix), table, seen)
    return {vocab[s] for s in seen if s in vocab}


def token_closure(
    token: str,
    vocab: Mapping[str, int],
    table: MergeTable,
    *,
    continuing_subword_prefix: str | None = None,
    end_of_word_suffix: str | None = None,
) -> set[int]:
    """Ids of the symbols BPE meets while building ``token`` alone (``token``'s own included).

    :func:`closure_ids` for one token, without its per-call pass over ``vocab``: what a
    budget uses to price each candidate token.

    >>> table = merge_table([("a", "b"), ("ab", "c")])
    >>> sorted(token_closure("abc", {"a": 0, "b": 1, "c": 2, "ab": 3, "abc": 4}, table))
    [0, 1, 2, 3, 4]
    """
    seen: set[str] = set()
    symbols = _initial_symbols(token, continuing_subword_prefix or "", end_of_word_suffix or "")
    _run(symbols, table, seen)
    return {vocab[s] for s in seen if s in vocab}


def close_under_merges(
    plan: VocabPlan,
    vocab: Mapping[str, int],
    merges: Sequence[tuple[str, str]] | Sequence[str],
    *,
    continuing_subword_prefix: str | None = None,
    end_of_word_suffix: str | None = None,
) -> VocabPlan:
    """``plan`` plus every BPE intermediate token needed to still produce each kept token.

    Args:
        plan: A plan over a vocabulary that includes ``vocab``'s ids.
        vocab: The BPE model's vocabulary, token → id (added tokens need not be in it).
        merges: The BPE merges in rank order, as pairs or ``"left right"`` strings.
        continuing_subword_prefix: The model's prefix for non-initial pieces (``"##"``).
        end_of_word_suffix: The model's suffix for word-final pieces (``"</w>"``).

    Returns:
        ``plan`` itself when nothing is missing, else a plan with the same fingerprint and
        metadata that also keeps the missing ids.

    >>> plan = VocabPlan(5, (4,))
    >>> vocab = {"a": 0, "b": 1, "c": 2, "ab": 3, "abc": 4}
    >>> close_under_merges(plan, vocab, [("a", "b"), ("ab", "c")]).kept
    (0, 1, 2, 3, 4)
    """
    if not isinstance(plan, VocabPlan):
        raise VocabError(f"'plan' must be a VocabPlan (got {type(plan).__name__})")
    table = merge_table(merges, continuing_subword_prefix)
    needed = closure_ids(
        plan.kept,
        vocab,
        table,
        continuing_subword_prefix=continuing_subword_prefix,
        end_of_word_suffix=end_of_word_suffix,
    )
    closed: VocabPlan = keep_needed(plan, needed, "the vocabulary")
    return closed
