"""``revert_plan(applied, keep_added=True)``: the original vocabulary plus the added tokens.

The added tokens take ids ``len(tokenizer)``, ``len(tokenizer) + 1``, ... in plan order. Every
original id is unchanged; the added rows keep their trained values. A model with padding rows
(more rows than ``len(tokenizer)``) puts the added rows there and grows only when they run out.
The tokenizer (the original one with the tokens added exactly as :mod:`added_tokens` adds them
to a reduced one), the config's ``vocab_size`` and the optimizer state grow to match.

:func:`prepare_keep_added` is one more step of the two-phase revert: it runs after every stage
has computed its full state (``prepare_revert``) and before anything is installed, and it
computes everything it will install (the grown tokenizer, the grown tensors and optimizer
state: every allocation). :meth:`KeepAdded.commit` then only assigns, after the ordinary
stages have installed the original vocabulary, and :meth:`KeepAdded.undo` puts their state
back if a later commit fails.
"""

from __future__ import annotations

from typing import Any

import torch

from vocabcore import VocabError, VocabPlan

__all__ = ["KeepAdded", "prepare_keep_added"]


class KeepAdded:
    """The grown tokenizer, tensors and optimizer state, computed; :meth:`commit` installs them."""

    def __init__(
        self,
        plan: VocabPlan,
        tokenizer_swap: tuple[Any, Any] | None,
        tensors: list[tuple[Any, torch.Tensor, torch.Tensor]],
        sizes: list[tuple[Any, str, Any, Any]],
        states: list[tuple[Any, Any, dict[str, Any], dict[str, Any]]],
    ) -> None:
        self.plan = plan
        self._tokenizer_swap = tokenizer_swap  # (install grown, put the original back)
        self._tensors = tensors  # (full parameter, grown data, data the revert installs)
        self._sizes = sizes  # (owner, attribute, grown value, value the revert installs)
        self._states = states  # (optimizer, full parameter, grown state, state of the revert)

    @property
    def positions(self) -> list[int]:
        """Ids of the added tokens after the revert."""
        start = self.plan.vocab_size
        return list(range(start, start + len(self.plan.added)))

    def commit(self) -> None:
        """Grow the reverted targets by the added tokens (plain assignments)."""
        for full, grown, _ in self._tensors:
            full.data = grown
        for optimizer, param, grown_state, _ in self._states:
            optimizer.state[param] = grown_state
        for owner, name, grown_value, _ in self._sizes:
            vars(owner)[name] = grown_value
        if self._tokenizer_swap is not None:
            self._tokenizer_swap[0]()

    def undo(self) -> None:
        """Put back what the ordinary revert installed."""
        if self._tokenizer_swap is not None:
            self._tokenizer_swap[1]()
        for owner, name, _, value in self._sizes:
            vars(owner)[name] = value
        for optimizer, param, _, state in self._states:
            optimizer.state[param] = state
        for full, _, data in self._tensors:
            full.data = data


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
    from vocab_adapters.stages import fast_tokenizer, slow_tokenizer

    if isinstance(applied_stage, fast_tokenizer.AppliedFastTokenizer):
        original = applied_stage._original
        bare = isinstance(original, fast_tokenizer._BareState)
        from tokenizers import Tokenizer

        from vocab_adapters.tokenization.tokenizer_backend import load_json

        text = original.state.decode("utf-8") if bare else original.to_str()
        document = load_json(text)
        grown_doc = fast_tokenizer.reduce_tokenizer_json(grow, document, check_closed=False)
        from vocab_adapters.tokenization.tokenizer_backend import dump_json

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

        def undo_fast() -> None:
            if bare:
                original.restore(tokenizer)
            else:
                tokenizer._tokenizer = original

        return commit_fast, undo_fast
    if isinstance(applied_stage, slow_tokenizer.SlowTokenizerApplied):
        clone = slow_tokenizer._shallow_copy(tokenizer)
        clone.__dict__.update(applied_stage._old)
        slow_tokenizer._check_keep_added(clone)
        prepared = slow_tokenizer.prepare(grow, clone)
        state = prepared._new
        old = {name: applied_stage._old[name] for name in state if name in applied_stage._old}

        def commit_slow() -> None:
            vars(tokenizer).update(state)

        def undo_slow() -> None:
            for name in state:
                if name in old:
                    vars(tokenizer)[name] = old[name]
                else:
                    vars(tokenizer).pop(name, None)

        return commit_slow, undo_slow
    raise VocabError(f"keep_added cannot grow a {type(tokenizer).__name__}")


def prepare_keep_added(applied: Any, optimizers: list[Any]) -> KeepAdded:
    """Compute what ``revert_plan(applied, keep_added=True)`` adds; change nothing.

    Call it after every stage's ``prepare_revert`` (it grows the full state they computed).

    Args:
        applied: The :class:`~vocab_adapters.session.AppliedPlan`, still active.
        optimizers: The optimizer stage and undo handles of every optimizer the revert
            restores (their computed full-size state is grown).

    Raises:
        VocabError: The tokenizer cannot hold the added tokens at its end (see
            :mod:`vocab_adapters.tokenization.added_tokens`).
    """
    plan: VocabPlan = applied.plan
    stages = applied.stages
    positions = list(range(plan.vocab_size, plan.vocab_size + len(plan.added)))
    tokenizer_swap = None
    if "tokenizer" in stages:
        tokenizer_swap = _grown_tokenizer(plan, stages["tokenizer"], applied.tokenizer)
    n_kept, n_added = len(plan.kept), len(plan.added)
    tensors: list[tuple[Any, torch.Tensor, torch.Tensor]] = []
    sizes: list[tuple[Any, str, Any, Any]] = []
    rows = plan.vocab_size + n_added
    embeddings = stages.get("embeddings")
    if embeddings is not None:
        with torch.no_grad():
            for group, full in embeddings._pending:
                if group.added == 0:
                    continue
                current = group.slots[0].get()
                added = current.detach().narrow(group.dim, n_kept, n_added)
                grown = _grow(full, group.dim, added, positions)
                rows = max(rows, grown.shape[group.dim])
                tensors.append((group.full, grown, full))
        for change in embeddings._changes:  # num_embeddings / out_features
            if change.name in ("num_embeddings", "out_features"):
                sizes.append((change.module, change.name, max(change.old, rows), change.old))
    config = stages.get("config")
    if config is not None:
        for field in config._sizes:
            sizes.append((field.owner, field.key, max(field.old, rows), field.old))
    states: list[tuple[Any, Any, dict[str, Any], dict[str, Any]]] = []
    with torch.no_grad():
        for handle in optimizers:
            restore = getattr(handle, "_pending", None)
            if restore is None:
                continue
            for entry in restore._entries:
                if not entry.new_state or not entry.old_state:
                    continue
                swap = entry.swap
                grown_state = dict(entry.new_state)
                for key, value in entry.old_state.items():
                    if isinstance(value, torch.Tensor) and value.shape == swap.reduced.shape:
                        added = value.detach().narrow(swap.dim, n_kept, n_added)
                        grown_state[key] = _grow(entry.new_state[key], swap.dim, added, positions)
                states.append((restore.optimizer, swap.full, grown_state, entry.new_state))
    return KeepAdded(plan, tokenizer_swap, tensors, sizes, states)
