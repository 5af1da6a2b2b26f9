"""``revert_plan(applied, keep_added=True)``: the original vocabulary plus the added tokens.

The added tokens take ids ``len(tokenizer)``, ``len(tokenizer) + 1``, ... in plan order. Every
original id is unchanged; the added rows keep their trained values. A model with padding rows
(more rows than ``len(tokenizer)``) puts the added rows there and grows only when they run out.
The tokenizer (the original one with the tokens added exactly as :mod:`added_tokens` adds them
to a reduced one), the config's ``vocab_size`` and the optimizer state grow to match.

:func:`prepare_keep_added` runs before the ordinary revert and changes nothing: it computes the
grown tokenizer (the step that can refuse) and takes copies of the added rows of every reduced
tensor and of the optimizer state. The ordinary revert then restores the original vocabulary,
and :meth:`KeepAdded.commit` grows it by the added rows.
"""

from __future__ import annotations

from typing import Any

import torch

from vocabcore import VocabError, VocabPlan

__all__ = ["KeepAdded", "prepare_keep_added"]


class KeepAdded:
    """The grown tokenizer and the added rows, computed; :meth:`commit` installs them."""

    def __init__(
        self,
        plan: VocabPlan,
        tokenizer_commit: Any,
        tensors: list[tuple[Any, torch.Tensor, int]],
        changes: list[Any],
        sizes: list[Any],
        optimizer_rows: list[tuple[Any, Any, dict[str, torch.Tensor], int]],
    ) -> None:
        self.plan = plan
        self._tokenizer_commit = tokenizer_commit
        self._tensors = tensors
        self._changes = changes
        self._sizes = sizes
        self._optimizer_rows = optimizer_rows

    @property
    def positions(self) -> list[int]:
        """Ids of the added tokens after the revert."""
        start = self.plan.vocab_size
        return list(range(start, start + len(self.plan.added)))

    def commit(self) -> None:
        """Grow the reverted targets by the added tokens (call after the ordinary revert)."""
        rows_by_id: dict[int, int] = {}
        with torch.no_grad():
            for full, added, dim in self._tensors:
                grown = _grow(full.data, dim, added, self.positions)
                rows_by_id[id(full)] = grown.shape[dim]
                full.data = grown
            for optimizer, param, added_state, dim in self._optimizer_rows:
                state = optimizer.state.get(param)
                if not state:
                    continue
                for key, value in list(state.items()):
                    if key in added_state and isinstance(value, torch.Tensor):
                        state[key] = _grow(value, dim, added_state[key], self.positions)
        rows = max(rows_by_id.values(), default=self.plan.vocab_size + len(self.plan.added))
        for change in self._changes:  # num_embeddings / out_features
            if change.name in ("num_embeddings", "out_features"):
                setattr(change.module, change.name, max(change.old, rows))
        for field in self._sizes:  # config vocab_size fields
            vars(field.owner)[field.key] = max(field.old, rows)
        if self._tokenizer_commit is not None:
            self._tokenizer_commit()


def _grow(full: torch.Tensor, dim: int, added: torch.Tensor, positions: list[int]) -> torch.Tensor:
    """``full`` with ``added`` written at ``positions`` along ``dim``, grown if they don't fit."""
    need = positions[-1] + 1
    have = full.shape[dim]
    if need > have:
        shape = list(full.shape)
        shape[dim] = need - have
        full = torch.cat([full, full.new_zeros(shape)], dim)
    else:
        full = full.clone()
    index = torch.tensor(positions, dtype=torch.long, device=full.device)
    return full.index_copy_(dim, index, added.to(device=full.device, dtype=full.dtype))


def _grown_tokenizer(plan: VocabPlan, applied_stage: Any, tokenizer: Any) -> Any:
    """A function installing the original tokenizer plus the added tokens (computed now)."""
    grow = VocabPlan.identity(plan.vocab_size).adding(plan.added)
    from vocab_adapters import fast_tokenizer, slow_tokenizer

    if isinstance(applied_stage, fast_tokenizer.AppliedFastTokenizer):
        original = applied_stage._original
        bare = isinstance(original, fast_tokenizer._BareState)
        from tokenizers import Tokenizer

        from vocab_adapters.tokenizer_backend import load_json

        text = original.state.decode("utf-8") if bare else original.to_str()
        document = load_json(text)
        grown_doc = fast_tokenizer.reduce_tokenizer_json(grow, document, check_closed=False)
        from vocab_adapters.tokenizer_backend import dump_json

        grown_text = dump_json(grown_doc)
        grown = Tokenizer.from_str(grown_text)
        model = grown_doc["model"]
        if model["type"] == "Unigram":
            from tokenizers import models

            grown.model = models.Unigram(
                [(piece, score) for piece, score in model["vocab"]],
                model.get("unk_id"),
                bool(model.get("byte_fallback", False)),
            )
        special = original.encode_special_tokens
        grown.encode_special_tokens = special
        size = grown.get_vocab_size(with_added_tokens=True)
        if size != plan.vocab_size + len(plan.added):
            raise VocabError(
                f"the tokenizer with the added tokens would have {size} tokens, not "
                f"{plan.vocab_size + len(plan.added)}; keep_added cannot grow this tokenizer"
            )

        def commit_fast() -> None:
            if bare:
                tokenizer.__setstate__(grown_text.encode("utf-8"))
                for name in fast_tokenizer._COMPONENTS:
                    setattr(tokenizer, name, getattr(grown, name))
                tokenizer.encode_special_tokens = special
            else:
                tokenizer._tokenizer = grown

        return commit_fast
    if isinstance(applied_stage, slow_tokenizer.SlowTokenizerApplied):
        clone = slow_tokenizer._shallow_copy(tokenizer)
        clone.__dict__.update(applied_stage._old)
        clone.__dict__.pop(slow_tokenizer._MARK, None)
        prepared = slow_tokenizer.prepare(grow, clone)
        state = prepared._new

        def commit_slow() -> None:
            vars(tokenizer).update(state)

        return commit_slow
    raise VocabError(f"keep_added cannot grow a {type(tokenizer).__name__}")


def prepare_keep_added(applied: Any, optimizers: list[Any]) -> KeepAdded:
    """Compute what ``revert_plan(applied, keep_added=True)`` adds; change nothing.

    Args:
        applied: The :class:`~vocab_adapters.session.AppliedPlan`, still active.
        optimizers: Every optimizer that the revert restores.

    Raises:
        VocabError: The tokenizer cannot hold the added tokens at its end (see
            :mod:`vocab_adapters.added_tokens`).
    """
    plan: VocabPlan = applied.plan
    stages = dict(applied._stages)
    tokenizer_commit = None
    if "tokenizer" in stages:
        tokenizer_commit = _grown_tokenizer(plan, stages["tokenizer"], applied.tokenizer)
    tensors: list[tuple[Any, torch.Tensor, int]] = []
    changes: list[Any] = []
    sizes: list[Any] = []
    n_kept, n_added = len(plan.kept), len(plan.added)
    embeddings = stages.get("embeddings")
    if embeddings is not None:
        with torch.no_grad():
            for group in embeddings._groups:
                current = group.slots[0].get()
                rows = current.detach().narrow(group.dim, n_kept, n_added).clone()
                tensors.append((group.full, rows, group.dim))
        changes = list(embeddings._changes)
    config = stages.get("config")
    if config is not None:
        sizes = list(config._sizes)
    optimizer_rows: list[tuple[Any, Any, dict[str, torch.Tensor], int]] = []
    swaps = applied.swaps
    for optimizer in optimizers:
        if optimizer is None:
            continue
        for swap in swaps:
            state = optimizer.state.get(swap.reduced)
            if not state:
                continue
            rows_of = {
                key: value.detach().narrow(swap.dim, n_kept, n_added).clone()
                for key, value in state.items()
                if isinstance(value, torch.Tensor) and value.shape == swap.reduced.shape
            }
            optimizer_rows.append((optimizer, swap.full, rows_of, swap.dim))
    return KeepAdded(plan, tokenizer_commit, tensors, changes, sizes, optimizer_rows)
