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

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from vocab_adapters.tokenization.tokenizer_backend import keep_needed
from vocabcore import VocabError, VocabPlan

__all__ = [
    "cached_merge_table",
    "cached_parse_merges",
    "close_under_merges",
    "closure_ids",
    "merge_table",
    "parse_merges",
    "token_closure",
]

MergeTable = dict[tuple[str, str], tuple[int, str]]


def parse_merges(
    merges: Iterable[tuple[str, str] | Sequence[str] | str],
    continuing_subword_prefix: str | None = None,
) -> list[tuple[str, str, str]]:
    """``[(left, right, merged), ...]`` for BPE merges given as pairs or ``"a b"`` strings.

    The one parser of merges: a string must hold exactly one space, a pair two strings.

    >>> parse_merges(["a b", ("ab", "##c")], "##")
    [('a', 'b', 'ab'), ('ab', '##c', 'abc')]
    """
    prefix = continuing_subword_prefix or ""
    out: list[tuple[str, str, str]] = []
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
        out.append((left, right, left + right[cut:]))
    return out


def merge_table(
    merges: Iterable[tuple[str, str] | Sequence[str] | str],
    continuing_subword_prefix: str | None = None,
) -> MergeTable:
    """``{(left, right): (rank, merged)}`` for BPE merges given as pairs or ``"a b"`` strings.

    >>> merge_table([("a", "b"), "ab c"])
    {('a', 'b'): (0, 'ab'), ('ab', 'c'): (1, 'abc')}
    """
    return _table_of(parse_merges(merges, continuing_subword_prefix))


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
    """Ids of the vocabulary symbols BPE meets while building each of ``token_ids``.

    The result is exactly the set of symbols of the runs BPE makes on each token's own
    characters. Without a subword prefix or word suffix it is computed by walking the merge
    graph (see :func:`_walk_closure`), with the exact run only where the walk cannot tell
    which merge BPE uses; with them, by running BPE on every token.
    """
    prefix = continuing_subword_prefix or ""
    suffix = end_of_word_suffix or ""
    id_to_token = {i: t for t, i in vocab.items()}
    roots = [t for i in dict.fromkeys(token_ids) if (t := id_to_token.get(i)) is not None]
    seen: set[str] | None = None
    if not prefix and not suffix:
        seen = _walk_closure(roots, vocab, table)
    if seen is None:
        seen = set()
        for token in roots:
            if token not in seen:
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


# Data derived from a merge table or a merges list, cached by the object's id (the object
# is held, so its id is not reused); a few entries, for the tokenizers in use.
_DERIVED: dict[tuple[str, int], tuple[Any, Any]] = {}


def _cached(kind: str, owner: Any, make: Callable[[], Any]) -> Any:
    key = (kind, id(owner))
    found = _DERIVED.get(key)
    if found is not None and found[0] is owner:
        return found[1]
    value = make()
    if len(_DERIVED) >= 12:
        _DERIVED.clear()
    _DERIVED[key] = (owner, value)
    return value


def cached_parse_merges(
    merges: list[Any], continuing_subword_prefix: str | None = None
) -> list[tuple[str, str, str]]:
    """:func:`parse_merges` of ``merges``, cached while the same list object is passed."""
    return _cached(  # type: ignore[no-any-return]
        f"parsed:{continuing_subword_prefix or ''}",
        merges,
        lambda: parse_merges(merges, continuing_subword_prefix),
    )


def cached_merge_table(
    merges: list[Any], continuing_subword_prefix: str | None = None
) -> MergeTable:
    """:func:`merge_table` of ``merges``, cached while the same list object is passed."""
    return _cached(  # type: ignore[no-any-return]
        f"table:{continuing_subword_prefix or ''}",
        merges,
        lambda: _table_of(cached_parse_merges(merges, continuing_subword_prefix)),
    )


def _table_of(parsed: list[tuple[str, str, str]]) -> MergeTable:
    table: MergeTable = {}
    for rank, (left, right, merged) in enumerate(parsed):
        table.setdefault((left, right), (rank, merged))
    return table


def _producers(table: MergeTable) -> dict[str, list[tuple[str, str]]]:
    """``{merged: [(left, right), ...]}``: every merge that yields each token (cached)."""
    return _cached("producers", table, lambda: _make_producers(table))  # type: ignore[no-any-return]


def _make_producers(table: MergeTable) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for pair, (_, merged) in table.items():
        found = out.get(merged)
        if found is None:
            out[merged] = [pair]
        else:
            found.append(pair)
    return out


def _reachable(roots: list[str], vocab: Mapping[str, int], table: MergeTable) -> set[str] | None:
    """The roots that BPE, run on their own characters, turns into themselves.

    Asks a plain ``tokenizers`` BPE model (no dropout, no ``ignore_merges``, no unknown
    token) built from ``vocab`` and the merges, encoding every root as one pre-split word in
    one batch. ``None`` when such a model cannot be built.
    """
    if len(set(vocab.values())) != len(vocab):  # ids must name one token each
        return None
    made = _cached("runner", table, lambda: (vocab, _make_runner(vocab, table)))
    if made[0] is not vocab:  # the same merges with another vocabulary object
        made = (vocab, _make_runner(vocab, table))
        _DERIVED[("runner", id(table))] = (table, made)
    runner = made[1]
    if runner is None:
        return None
    words = [[t] for t in roots]
    encode = getattr(runner, "encode_batch_fast", None) or runner.encode_batch
    encodings = encode(words, is_pretokenized=True, add_special_tokens=False)
    return {t for t, e in zip(roots, encodings, strict=True) if e.ids == [vocab[t]]}


def _make_runner(vocab: Mapping[str, int], table: MergeTable) -> Any:
    try:
        from tokenizers import Tokenizer, models

        merges = [pair for pair, _ in sorted(table.items(), key=lambda item: item[1][0])]
        return Tokenizer(models.BPE(dict(vocab), merges))
    except Exception:  # merges naming tokens outside the vocabulary
        return None


def _walk_closure(roots: list[str], vocab: Mapping[str, int], table: MergeTable) -> set[str] | None:
    """The exact closure (no prefix, no suffix) by walking the merge graph.

    If BPE turns a token ``T``'s characters into ``T`` itself (``T`` is *reachable*), its
    last merge ``a b -> T`` splits the characters in two, and because BPE never merges
    across that split, the merges before it are exactly BPE's runs on ``a``'s and on ``b``'s
    own characters, which end in ``a`` and ``b``. So the run's symbols are ``{T}`` and those
    of ``a`` and ``b``, which are reachable too. Where only one merge yields ``T``, that is
    the last merge; where several do, BPE's ranks choose, and the token is run exactly, as is
    every root that is not reachable. Equal to running BPE on every root (tested).
    """
    reachable = _reachable([t for t in roots if len(t) > 1], vocab, table)
    if reachable is None:
        return None
    producers = _producers(table)
    seen: set[str] = set()
    for root in roots:
        if root in seen:
            continue
        if len(root) > 1 and root not in reachable:
            _run(list(root), table, seen)
            continue
        stack = [root]
        while stack:
            token = stack.pop()
            if token in seen:
                # met before: its own run's symbols are in ``seen`` already
                continue
            if len(token) == 1:
                seen.add(token)
                continue
            made_by = producers.get(token)
            if made_by is not None and len(made_by) == 1:
                seen.add(token)
                stack.extend(made_by[0])
            else:
                _run(list(token), table, seen)
    return seen


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
