"""A Flair trainer plugin that trains with a reduced vocabulary and restores it at the end.

The counterpart of Flair's own ``reduce_transformer_vocab=True`` (which uses
transformer-smaller-training-vocab), built on :func:`vocab_adapters.reduced_vocab`::

    from flair.trainers import ModelTrainer
    from vocab_adapters import reduce_vocab_plugin

    trainer = ModelTrainer(tagger, corpus)
    trainer.fine_tune("out", plugins=[reduce_vocab_plugin()])   # reduce_transformer_vocab=False

At ``after_setup`` the plugin counts the tokens of the corpus exactly as Flair's plugin does
(``model.get_used_tokens(corpus, context_length, respect_document_boundaries)``: pre-split
word lists), builds a plan for each transformer embedding of the model (``StackedEmbeddings``
are searched) and enters :func:`~vocab_adapters.reduced_vocab` on the trainer's context stack
with the trainer's optimizer. Flair leaves that stack after training and the final test, also
when training raises: the model, tokenizer and optimizer have their full vocabulary again,
trained rows written back. ``best-model.pt`` / ``final-model.pt`` were written while reduced,
so ``after_training`` saves the model again with its full vocabulary, as Flair's plugin does.

Flair is imported only when a plugin is made, so this module imports without it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

from vocabcore import VocabError, VocabPlan

__all__ = ["reduce_vocab_plugin"]

log = logging.getLogger("flair")


def reduce_vocab_plugin(
    *,
    min_count: int = 1,
    keep: Iterable[int | str] = (),
    softmax: str = "reduced",
    offload: str | None = None,
    base_path: str | Path | None = None,
    save_optimizer_state: bool = False,
) -> Any:
    """A Flair ``TrainerPlugin`` that reduces the transformer vocabulary during training.

    Pass it to ``ModelTrainer.train`` / ``fine_tune`` in ``plugins=[...]``, with Flair's own
    ``reduce_transformer_vocab`` left ``False``. The class is
    ``vocab_adapters.integrations.flair_plugin.ReduceVocabPlugin`` (made on first use; it needs
    flair).

    Args:
        min_count: Keep ids the corpus uses at least this often (special tokens always).
        keep: Ids or token strings kept whatever the counts.
        softmax: As in :func:`vocab_adapters.apply_plan`.
        offload: ``"cpu"`` to hold the full-size rows on the CPU while reduced.
        base_path: Where the trainer writes; ``None`` takes the ``base_path`` that the trainer
            passes to its plugins. The full-vocabulary re-save goes to ``best-model.pt`` there,
            else ``final-model.pt`` (whichever exists).
        save_optimizer_state: Whether the re-save is a checkpoint (optimizer state included);
            match the trainer's own ``save_optimizer_state``.

    Raises:
        ImportError: flair is not installed.
    """
    return _plugin_class()(
        min_count=min_count,
        keep=tuple(keep),
        softmax=softmax,
        offload=offload,
        base_path=base_path,
        save_optimizer_state=save_optimizer_state,
    )


def __getattr__(name: str) -> Any:
    if name == "ReduceVocabPlugin":
        return _plugin_class()
    raise AttributeError(
        f"module 'vocab_adapters.integrations.flair_plugin' has no attribute {name!r}"
    )


def transformer_embeddings(model: Any) -> list[Any]:
    """The distinct transformer embeddings of a Flair model, ``StackedEmbeddings`` searched.

    Embeddings sharing one transformers model count once (its vocabulary is reduced once).
    """
    from flair.embeddings import StackedEmbeddings, TransformerEmbeddings
    from flair.models import FewshotClassifier

    root = (
        model.tars_embeddings
        if isinstance(model, FewshotClassifier)
        else getattr(model, "embeddings", None)
    )
    found: dict[int, Any] = {}
    stack = [root] if root is not None else []
    while stack:
        emb = stack.pop()
        if isinstance(emb, StackedEmbeddings):
            stack.extend(reversed(emb.embeddings))
        elif isinstance(emb, TransformerEmbeddings):
            found.setdefault(id(emb.model), emb)
    return list(found.values())


@cache
def _plugin_class() -> type:
    from flair.nn.model import ReduceTransformerVocabMixin
    from flair.trainers.plugins import TrainerPlugin

    from vocab_adapters.planning.texts import plan_from_texts
    from vocab_adapters.session import reduced_vocab

    class ReduceVocabPlugin(TrainerPlugin):  # type: ignore[misc,unused-ignore]
        """Train with the vocabulary the corpus uses; restore the full one afterwards.

        Attributes:
            plans: The plan applied to each transformer embedding (after ``after_setup``).
            disabled: True when the model has nothing to reduce (a warning is logged).
        """

        def __init__(
            self,
            *,
            min_count: int = 1,
            keep: tuple[int | str, ...] = (),
            softmax: str = "reduced",
            offload: str | None = None,
            base_path: str | Path | None = None,
            save_optimizer_state: bool = False,
        ) -> None:
            super().__init__()
            self.min_count = min_count
            self.keep = keep
            self.softmax = softmax
            self.offload = offload
            self.base_path = None if base_path is None else Path(base_path)
            self.save_optimizer_state = save_optimizer_state
            self.disabled = False
            self.plans: list[VocabPlan] = []

        @TrainerPlugin.hook("after_setup")  # type: ignore[untyped-decorator,unused-ignore]
        def reduce_vocab(self, base_path: Any = None, **kw: Any) -> None:
            """Count the corpus's tokens, reduce every transformer embedding until the end."""
            if self.base_path is None and base_path is not None:
                self.base_path = Path(base_path)
            model = self.model
            if not isinstance(model, ReduceTransformerVocabMixin):
                log.warning("Cannot reduce the transformer vocab: model is not supported.")
                self.disabled = True
                return
            embeddings = transformer_embeddings(model)
            if not embeddings:
                log.warning("Cannot reduce the transformer vocab: no transformer embeddings found.")
                self.disabled = True
                return
            if len(embeddings) > 1:
                raise VocabError(
                    f"the model has {len(embeddings)} transformer embeddings sharing one "
                    "optimizer; this plugin reduces one. Use Flair's "
                    "reduce_transformer_vocab=True for this model, or reduce one embedding"
                )
            (emb,) = embeddings
            context_length = emb.context_length
            respect_boundaries = emb.respect_document_boundaries
            tokens = [
                words
                for words in model.get_used_tokens(self.corpus, context_length, respect_boundaries)
                if words
            ]
            plan = plan_from_texts(
                emb.tokenizer, tokens, min_count=self.min_count, keep=self.keep, model=emb.model
            )
            self.trainer.context_stack.enter_context(
                reduced_vocab(
                    emb.model,
                    emb.tokenizer,
                    plan=plan,
                    optimizer=self.trainer.optimizer,
                    offload=self.offload,
                    softmax=self.softmax,
                )
            )
            self.plans.append(plan)

        @TrainerPlugin.hook("after_training")  # type: ignore[untyped-decorator,unused-ignore]
        def save_full_model(self, **kw: Any) -> None:
            """Save best/final model again: they were written while the vocabulary was reduced."""
            if self.disabled or not self.plans or self.base_path is None:
                return
            for name in ("best-model.pt", "final-model.pt"):
                path = self.base_path / name
                if path.exists():
                    self.model.save(path, checkpoint=self.save_optimizer_state)
                    return

        @property
        def attach_to_all_processes(self) -> bool:
            return False

    ReduceVocabPlugin.__module__ = __name__
    ReduceVocabPlugin.__qualname__ = "ReduceVocabPlugin"
    return ReduceVocabPlugin
