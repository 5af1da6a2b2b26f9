"""Which adapter module serves a tokenizer, and its closure of a plan.

A fast tokenizer (a ``tokenizers`` backend) is served by
:mod:`vocab_adapters.stages.fast_tokenizer`, a supported slow one by
:mod:`vocab_adapters.stages.slow_tokenizer`. Each adapter has one ``close_plan(plan, tokenizer)``:
the plan plus what that tokenizer needs to encode exactly after reduction (byte alphabets or byte
pieces, the BPE merge closure, the Unigram fallback piece); :func:`vocab_adapters.plan_from_texts`
calls it through :func:`close_plan`, so every plan it returns applies.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import Any

from vocab_adapters.tokenization.tokenizer_backend import backend_of
from vocabcore import VocabError, VocabPlan

__all__ = ["adapter_for", "close_plan", "token_pieces"]


def adapter_for(tokenizer: Any) -> ModuleType:
    """The adapter module for ``tokenizer``.

    Raises:
        VocabError: The tokenizer is neither fast nor a supported slow tokenizer.
    """
    if backend_of(tokenizer) is not None:
        from vocab_adapters.stages import fast_tokenizer

        return fast_tokenizer
    from vocab_adapters.stages import slow_tokenizer

    if not slow_tokenizer.supports(tokenizer):
        raise VocabError(
            f"tokenizer of type {type(tokenizer).__name__} is not supported: pass a Hugging Face "
            "fast tokenizer, a tokenizers.Tokenizer, or a BERT/RoBERTa/GPT-2/XLM-R/DeBERTa-v2 "
            "slow tokenizer (see docs/slow_tokenizers.md)"
        )
    return slow_tokenizer


def close_plan(plan: VocabPlan, tokenizer: Any) -> VocabPlan:
    """``plan`` plus what ``tokenizer`` needs to encode exactly once reduced."""
    closed: VocabPlan = adapter_for(tokenizer).close_plan(plan, tokenizer)
    return closed


def token_pieces(tokenizer: Any, tokens: Sequence[str]) -> list[list[int]]:
    """Original ids of the pieces of each token: what ``tokenizer`` splits its pre-token into.

    Fast tokenizers (any model type) and the slow families of
    :mod:`vocab_adapters.stages.slow_tokenizer`; what added tokens' rows start from.
    """
    if backend_of(tokenizer) is not None:
        from vocab_adapters.tokenization.added_tokens import document_pieces
        from vocab_adapters.tokenization.tokenizer_backend import tokenizer_document

        _, document = tokenizer_document(tokenizer)
        return document_pieces(document, tokens)
    from vocab_adapters.stages.slow_tokenizer import slow_token_pieces

    pieces: list[list[int]] = slow_token_pieces(tokenizer, tokens)
    return pieces
