"""vocabcore and transformer-smaller-training-vocab behind one interface, for the workers.

Imported in vocabcore's environment and in the predecessor's venv (``.bench-envs/tstv``):
only the standard library at import time; each class imports its library when made.
"""

from __future__ import annotations

from typing import Any


class Library:
    name = ""
    version = ""

    def count(self, tokenizer: Any, texts: list[Any]) -> Any:
        """Plan (or kept-id list) from texts."""
        raise NotImplementedError

    def kept(self, plan: Any) -> list[int]:
        raise NotImplementedError

    def reduce(
        self, plan: Any, model: Any = None, tokenizer: Any = None, optimizer: Any = None
    ) -> Any:
        raise NotImplementedError

    def restore(self, handle: Any) -> None:
        raise NotImplementedError

    def track(self, handle: Any, optimizer: Any) -> None:
        """Tell the library about an optimizer created while reduced (if it has a way)."""


class Vocabcore(Library):
    name = "vocabcore"

    def __init__(self) -> None:
        import vocab_adapters
        import vocabcore

        self.va = vocab_adapters
        self.version = vocabcore.__version__

    def count(self, tokenizer: Any, texts: list[Any]) -> Any:
        return self.va.plan_from_texts(tokenizer, texts)

    def kept(self, plan: Any) -> list[int]:
        return list(plan.kept)

    def reduce(
        self, plan: Any, model: Any = None, tokenizer: Any = None, optimizer: Any = None
    ) -> Any:
        return self.va.apply_plan(plan, model=model, tokenizer=tokenizer, optimizer=optimizer)

    def restore(self, handle: Any) -> None:
        self.va.revert_plan(handle)

    def track(self, handle: Any, optimizer: Any) -> None:
        handle.track(optimizer)


class Tstv(Library):
    name = "transformer-smaller-training-vocab"

    def __init__(self) -> None:
        from importlib.metadata import version

        from transformer_smaller_training_vocab import modify_model, modify_tokenizer, token_stats

        self.mm, self.mt, self.ts = modify_model, modify_tokenizer, token_stats
        self.version = version("transformer-smaller-training-vocab")

    def count(self, tokenizer: Any, texts: list[Any]) -> Any:
        return self.ts.get_token_stats(tokenizer, texts)

    def kept(self, plan: Any) -> list[int]:
        return list(plan)

    def reduce(
        self, plan: Any, model: Any = None, tokenizer: Any = None, optimizer: Any = None
    ) -> Any:
        # What reduce_train_vocab_and_context does after counting, part by part.
        saved_emb = saved_vocab = None
        if model is not None:
            saved_emb = self.mm.reduce_embedding(
                model, plan, empty_cuda_cache=False, optimizer=optimizer
            )
        if tokenizer is not None:
            saved_vocab = self.mt.reduce_tokenizer(tokenizer, plan)
        return (plan, model, tokenizer, saved_emb, saved_vocab)

    def restore(self, handle: Any) -> None:
        plan, model, tokenizer, saved_emb, saved_vocab = handle
        if model is not None:
            self.mm.recreate_embedding(model, saved_emb, plan, empty_cuda_cache=False)
        if tokenizer is not None:
            self.mt.recreate_tokenizer(tokenizer, saved_vocab)


def load(name: str) -> Library:
    """``vocabcore`` or ``tstv``."""
    return Vocabcore() if name == "vocabcore" else Tstv()
