"""What a plan costs on a set of texts: :func:`coverage` and the budget curve behind ``--plot``.

:func:`coverage` encodes the texts with the full tokenizer and with the reduced one (the plan
applied, then reverted before it returns) and compares them exactly.

:func:`coverage_curve` estimates the same two numbers for a whole range of budgets from one encoding
of the texts, without re-encoding per budget: a budget keeps a prefix of one fixed order (see
:mod:`~vocab_adapters.planning.budget`), so a text encodes identically under a budget exactly when
the latest id of that order it uses is inside the prefix (the plan being merge-closed).
Tokens growth is estimated: a dropped token counts as the pieces it splits into, taken
recursively down to kept ones (for BPE its last merge; otherwise the two-piece split of its
text whose parts are kept longest), or as one unk token where no split exists.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from vocab_adapters.tokenization.tokenizer_backend import (
    backend_of,
    id_to_token_list,
    tokenizer_document,
    tokenizer_size,
)
from vocabcore import TokenCounts, VocabError, VocabPlan

__all__ = ["CoverageCurve", "CoverageReport", "coverage", "coverage_curve", "plot_coverage"]


@attrs.frozen
class CoverageReport:
    """How a plan changes the encoding of a set of texts.

    Attributes:
        texts: Number of texts.
        tokens_full: Tokens of the full tokenizer (without the post-processor's specials).
        tokens_reduced: Tokens of the reduced tokenizer (same count rules).
        identical_fraction: Share of texts whose reduced ids are exactly
            ``plan.remap(full ids)``.
        unk_fraction: Share of the reduced tokens that are the unk token.
        tokens_growth: ``tokens_reduced / tokens_full - 1``: how much longer sequences get.
    """

    texts: int
    tokens_full: int
    tokens_reduced: int
    identical_fraction: float
    unk_fraction: float
    tokens_growth: float

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return attrs.asdict(self)


@attrs.frozen
class CoverageCurve:
    """Budget estimates from one encoding: ``sizes[k]`` ids keep ``identical_fraction[k]``.

    Attributes:
        sizes: Plan sizes (ids kept), ascending.
        identical_fraction: Share of texts encoding identically at each size (exact for a
            merge-closed budget plan).
        tokens_growth: Estimated tokens growth at each size.
    """

    sizes: tuple[int, ...]
    identical_fraction: tuple[float, ...]
    tokens_growth: tuple[float, ...]


def _check_texts(texts: Any) -> list[str]:
    if isinstance(texts, (str, bytes)):
        raise VocabError("'texts' must be an iterable of texts, not a single str; wrap it: [text]")
    out = list(texts)
    bad = next((t for t in out if not isinstance(t, str)), None)
    if bad is not None:
        raise VocabError(f"'texts' must hold str (got {type(bad).__name__} {bad!r:.80})")
    return out


def _encode(tokenizer: Any, texts: list[str], batch_size: int = 1000) -> list[list[int]]:
    """Ids of each text, without the post-processor's special tokens, padding or truncation."""
    from vocab_adapters.planning.texts import settings_kept, uses_plain_backend

    backend = backend_of(tokenizer)
    out: list[list[int]] = []
    with settings_kept(backend):
        if backend is not None:
            backend.no_padding()
            backend.no_truncation()
        plain = backend is not None and (
            backend is tokenizer or uses_plain_backend(tokenizer, backend)
        )
        for start in range(0, len(texts), batch_size):
            batch = texts[start : start + batch_size]
            if plain and backend is not None:
                out.extend(e.ids for e in backend.encode_batch(batch, add_special_tokens=False))
            elif batch:
                ids = tokenizer(batch, add_special_tokens=False, truncation=False)["input_ids"]
                out.extend(list(x) for x in ids)
    return out


def coverage(
    plan: VocabPlan, tokenizer: Any, texts: Iterable[str], *, batch_size: int = 1000
) -> CoverageReport:
    """Encode ``texts`` with ``tokenizer`` full and reduced by ``plan``, and compare.

    The plan is applied to ``tokenizer`` and reverted before this returns (also on error), so
    the tokenizer is left as it was. Tokens are counted without the post-processor's special
    tokens.

    Args:
        plan: A plan for ``tokenizer``; it may drop ids the texts use.
        tokenizer: A fast or slow Hugging Face tokenizer, or a ``tokenizers.Tokenizer``.
        texts: The texts (str).
        batch_size: Texts per batch call.

    Returns:
        The :class:`CoverageReport`.

    Raises:
        VocabError / PlanMismatchError: As :func:`vocab_adapters.apply_plan` for the plan, or
            ``texts`` is not an iterable of str.

    >>> from tokenizers import Tokenizer, models, pre_tokenizers
    >>> from vocabcore import VocabPlan
    >>> tok = Tokenizer(models.WordLevel({"<unk>": 0, "a": 1, "b": 2}, "<unk>"))
    >>> tok.pre_tokenizer = pre_tokenizers.Whitespace()
    >>> report = coverage(VocabPlan(3, (0, 1)), tok, ["a a", "a b"])
    >>> report.identical_fraction, report.unk_fraction
    (0.5, 0.25)
    """
    from vocab_adapters.planning.budget import unk_ids
    from vocab_adapters.session import apply_plan, revert_plan

    if not isinstance(plan, VocabPlan):
        raise VocabError(f"'plan' must be a VocabPlan (got {type(plan).__name__})")
    items = _check_texts(texts)
    unk_old = sorted(i for i in unk_ids(tokenizer) if 0 <= i < plan.vocab_size)
    full = _encode(tokenizer, items, batch_size)
    applied = apply_plan(plan, tokenizer=tokenizer)
    try:
        reduced = _encode(tokenizer, items, batch_size)
    finally:
        revert_plan(applied)
    table = plan.old_to_new_table()
    identical = 0
    for f, r in zip(full, reduced, strict=True):
        if len(f) == len(r) and all(table[i] == j for i, j in zip(f, r, strict=True)):
            identical += 1
    unk_new = {n for i in unk_old if (n := plan.old_to_new(i)) is not None}
    tokens_full = sum(map(len, full))
    tokens_reduced = sum(map(len, reduced))
    unk = sum(1 for r in reduced for i in r if i in unk_new)
    return CoverageReport(
        texts=len(items),
        tokens_full=tokens_full,
        tokens_reduced=tokens_reduced,
        identical_fraction=identical / len(items) if items else 1.0,
        unk_fraction=unk / tokens_reduced if tokens_reduced else 0.0,
        tokens_growth=tokens_reduced / tokens_full - 1 if tokens_full else 0.0,
    )


def _segmentation_rules(tokenizer: Any) -> tuple[str, dict[str, tuple[str, str]], str]:
    """``(kind, merged -> (left, right), continuing prefix)`` of the tokenizer's model.

    ``kind`` is ``"bpe"``, ``"wordpiece"``, ``"pieces"`` (Unigram and sentencepiece) or
    ``"word"`` (WordLevel: a dropped word is the unk token).
    """
    from vocab_adapters.tokenization.bpe_closure import merge_table

    backend = backend_of(tokenizer)
    merges: Any = ()
    prefix = ""
    kind = "pieces"
    if backend is not None:
        _, document = tokenizer_document(backend)
        model = document.get("model") or {}
        model_type = model.get("type")
        if model_type == "BPE":
            kind, merges = "bpe", model.get("merges") or ()
            prefix = model.get("continuing_subword_prefix") or ""
        elif model_type == "WordPiece":
            kind, prefix = "wordpiece", model.get("continuing_subword_prefix") or "##"
        elif model_type == "WordLevel":
            kind = "word"
    else:
        from vocab_adapters.stages import slow_tokenizer

        found = slow_tokenizer.merges_and_vocab(tokenizer)
        if found is not None:
            kind, merges = "bpe", found[0]
        elif isinstance(vars(tokenizer).get("ids_to_tokens"), dict):
            kind, prefix = "wordpiece", "##"
    parts: dict[str, tuple[str, str]] = {}
    for (left, right), (_, merged) in merge_table(merges, prefix or None).items():
        parts.setdefault(merged, (left, right))
    return kind, parts, prefix


class _Resegmenter:
    """How many kept pieces a dropped token becomes when the first ``k`` groups are kept."""

    def __init__(self, tokenizer: Any, rank: np.ndarray[Any, np.dtype[np.int64]]) -> None:
        self.kind, self.parts, self.prefix = _segmentation_rules(tokenizer)
        self.tokens = id_to_token_list(tokenizer)
        self.ids = {t: i for i, t in enumerate(self.tokens) if t is not None}
        self.rank = rank
        self.k = 0
        self.memo: dict[int, int] = {}

    def at(self, k: int) -> None:
        self.k, self.memo = k, {}

    def _kept(self, piece: str) -> bool:
        i = self.ids.get(piece)
        return i is not None and int(self.rank[i]) < self.k

    def length(self, old: int, depth: int = 0) -> int:
        if int(self.rank[old]) < self.k:
            return 1
        found = self.memo.get(old)
        if found is not None:
            return found
        text = self.tokens[old]
        n = 1
        if text is not None and depth < 64:
            if self.kind == "bpe":
                pair = self.parts.get(text)
                if pair is not None and pair[0] in self.ids and pair[1] in self.ids:
                    n = self.length(self.ids[pair[0]], depth + 1) + self.length(
                        self.ids[pair[1]], depth + 1
                    )
            elif self.kind == "wordpiece":
                n = self._greedy(text)
            elif self.kind == "pieces":
                n = self._fewest(text)
        self.memo[old] = n
        return n

    def _greedy(self, text: str) -> int:
        """WordPiece: longest kept piece first; the unk token when a part has none."""
        prefix = self.prefix
        inner = text.startswith(prefix) and len(text) > len(prefix)
        body = text[len(prefix) :] if inner else text
        start, count = 0, 0
        while start < len(body):
            end = len(body)
            while end > start:
                piece = body[start:end]
                if start > 0 or inner:
                    piece = prefix + piece
                if self._kept(piece):
                    break
                end -= 1
            if end == start:
                return 1
            start, count = end, count + 1
        return count

    def _fewest(self, text: str) -> int:
        """Unigram / sentencepiece: the fewest kept pieces (an unknown character counts one)."""
        best = [0] + [len(text) + 1] * len(text)
        for j in range(1, len(text) + 1):
            best[j] = best[j - 1] + 1  # one character, as itself or as unk
            for i in range(j - 1):
                if best[i] + 1 < best[j] and self._kept(text[i:j]):
                    best[j] = best[i] + 1
        return best[len(text)]


def coverage_curve(
    tokenizer: Any,
    texts: Iterable[str],
    *,
    min_count: int = 1,
    keep: Iterable[int | str] = (),
    points: int = 40,
    extra_sizes: Sequence[int] = (),
    batch_size: int = 1000,
    order: TokenCounts | None = None,
    prefer: VocabPlan | None = None,
) -> CoverageCurve:
    """Identical fraction and tokens growth of ``plan_from_texts(..., max_size=N)`` for many N.

    The texts are encoded once; each budget's numbers come from the budget order (see the
    module docstring), so many budgets cost little more than one. Budgets run from the
    smallest plan (what encoding needs) to the plan without a budget, ``points`` of them
    evenly spaced, plus ``extra_sizes``.

    Args:
        tokenizer: The full tokenizer.
        texts: The texts to measure on (str).
        min_count: As in :func:`vocab_adapters.plan_from_texts`.
        keep: As in :func:`vocab_adapters.plan_from_texts`.
        points: Budgets evenly spaced between the smallest and the largest plan.
        extra_sizes: More budgets (for instance a chosen plan's ``new_size``).
        batch_size: Texts per batch call.
        order: Counts that order the budgets (the plans built from other texts, such as a
            training set, measured on ``texts``); default: the counts of ``texts``.
        prefer: A plan whose ids come first in the order, so the curve passes through it
            (``prefer.new_size`` then keeps exactly ``prefer.kept``).
    """
    from vocab_adapters.planning.budget import budget_order, closure_pricer
    from vocab_adapters.planning.texts import plan_from_counts, resolve_keep
    from vocab_adapters.tokenization.tokenizer_backend import fingerprint

    items = _check_texts(texts)
    size = tokenizer_size(tokenizer)
    encoded = _encode(tokenizer, items, batch_size)
    flat = np.fromiter((i for ids in encoded for i in ids), dtype=np.int64)
    counts = np.bincount(flat, minlength=size) if flat.size else np.zeros(size, np.int64)
    keep_ids = sorted(resolve_keep(tokenizer, keep, size))
    zero = TokenCounts(size, [0] * size, fingerprint(tokenizer))
    base = plan_from_counts(tokenizer, zero, keep=keep_ids)
    ranking = counts if order is None else np.asarray(order.counts, dtype=np.int64)
    if ranking.shape != counts.shape:
        raise VocabError(
            f"'order' counts have vocab_size {ranking.size}, the tokenizer {size}; count with "
            "this tokenizer"
        )
    if prefer is not None:
        if prefer.vocab_size != size:
            raise VocabError(
                f"'prefer' has vocab_size {prefer.vocab_size}, the tokenizer {size}; build "
                "the plan from this tokenizer"
            )
        ranking = ranking.copy()
        ranking[list(prefer.kept)] += int(ranking.sum()) + max(min_count, 1)
    _, sizes, groups = budget_order(base, ranking, min_count, closure_pricer(tokenizer))
    # rank of an id: -1 kept by every budget, k taken with group k, len(groups) never
    rank = np.full(size, len(groups), dtype=np.int64)
    rank[list(base.kept)] = -1
    for k, group in enumerate(groups):
        rank[group] = k
    latest = np.array([int(rank[ids].max()) if ids else -1 for ids in encoded], dtype=np.int64)
    used = np.flatnonzero(counts).tolist()
    total = int(counts.sum())
    resegment = _Resegmenter(tokenizer, rank)

    n_groups = len(groups)
    steps = sorted(
        {round(n_groups * j / max(points - 1, 1)) for j in range(points)}
        | {_groups_for(sizes, s) for s in extra_sizes}
    )
    out_sizes, out_identical, out_growth = [], [], []
    for k in steps:
        resegment.at(k)
        grown = sum(int(counts[i]) * resegment.length(i) for i in used)
        out_sizes.append(sizes[k - 1] if k else base.new_size)
        out_identical.append(float((latest < k).mean()) if items else 1.0)
        out_growth.append(grown / total - 1 if total else 0.0)
    return CoverageCurve(tuple(out_sizes), tuple(out_identical), tuple(out_growth))


def _groups_for(sizes: list[int], size: int) -> int:
    """How many groups a budget of ``size`` ids takes."""
    from bisect import bisect_right

    return bisect_right(sizes, size)


def plot_coverage(
    curve: CoverageCurve,
    path: str | Path,
    *,
    chosen: tuple[int, CoverageReport] | None = None,
    title: str | None = None,
) -> Path:
    """Draw kept size against identical fraction and tokens growth into ``path`` (PNG).

    Args:
        curve: From :func:`coverage_curve`.
        path: Image file to write.
        chosen: ``(plan.new_size, coverage report)`` of the plan to mark.
        title: Figure title.

    Raises:
        ImportError: matplotlib is not installed (``pip install 'vocabcore[plot]'``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, left = plt.subplots(figsize=(7, 4.2), dpi=120)
    right = left.twinx()
    left.plot(curve.sizes, [100 * f for f in curve.identical_fraction], color="tab:blue")
    right.plot(curve.sizes, [100 * g for g in curve.tokens_growth], color="tab:red", linestyle="--")
    left.set_xlabel("kept vocabulary size (ids)")
    left.set_ylabel("texts encoded identically (%)", color="tab:blue")
    right.set_ylabel("tokens growth (%, estimated)", color="tab:red")
    left.set_ylim(0, 101)
    right.set_ylim(bottom=0)
    if chosen is not None:
        size, report = chosen
        left.axvline(size, color="gray", linewidth=0.8)
        left.plot([size], [100 * report.identical_fraction], "o", color="tab:blue")
        right.plot([size], [100 * report.tokens_growth], "o", color="tab:red")
        left.annotate(
            f"plan: {size:,} ids\n{report.identical_fraction:.1%} identical, "
            f"+{report.tokens_growth:.1%} tokens",
            (size, 100 * report.identical_fraction),
            textcoords="offset points",
            xytext=(6, -30),
            fontsize=8,
        )
    if title:
        left.set_title(title, fontsize=10)
    left.grid(alpha=0.3)
    fig.tight_layout()
    target = Path(path)
    fig.savefig(target)
    plt.close(fig)
    return target
