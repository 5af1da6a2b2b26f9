"""sentence-transformers models: find the transformer inside, export one reduced for good.

A ``SentenceTransformer`` is a sequence of modules; its first module (a
``sentence_transformers.models.Transformer``) holds the transformers model
(``st[0].auto_model``) and the tokenizer (``st.tokenizer``). Reducing those two reduces the
whole model: pooling, dense and normalize modules work on hidden states, which do not depend
on the vocabulary. To train inside ``reduced_vocab``, pass ``st[0].auto_model`` and
``st.tokenizer`` (see docs/recipes.md).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vocab_adapters.tokenization.tokenizer_backend import backend_of
from vocabcore import VocabError

__all__ = ["is_sentence_transformer", "is_sentence_transformer_dir", "load", "transformer_parts"]

MODULES_FILE = "modules.json"


def is_sentence_transformer(model: Any) -> bool:
    """Whether ``model`` is a ``sentence_transformers.SentenceTransformer``.

    sentence-transformers is not imported when it is not loaded already.

    >>> is_sentence_transformer(object())
    False
    """
    import sys

    module = sys.modules.get("sentence_transformers")
    cls = getattr(module, "SentenceTransformer", None) if module is not None else None
    return cls is not None and isinstance(model, cls)


def is_sentence_transformer_dir(directory: str | Path) -> bool:
    """Whether ``directory`` holds a saved sentence-transformers model (``modules.json``)."""
    return (Path(directory) / MODULES_FILE).is_file()


def load(directory: str | Path) -> Any:
    """Load a saved ``SentenceTransformer`` from a local directory, offline, on the CPU."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise VocabError(
            f"{str(directory)!r} is a sentence-transformers model (modules.json); install "
            "sentence-transformers to load it"
        ) from None
    try:
        return SentenceTransformer(str(directory), device="cpu")
    except (OSError, ValueError, TypeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise VocabError(
            f"cannot load a SentenceTransformer from {str(directory)!r}: {first}"
        ) from None


def transformer_parts(st_model: Any, tokenizer: Any = None) -> tuple[Any, Any]:
    """``(transformers model, tokenizer)`` of a ``SentenceTransformer``'s first module.

    Raises:
        VocabError: The first module holds no transformers model, or ``tokenizer`` is given
            and is not the model's own (``st_model.tokenizer``).
    """
    first = st_model[0]
    auto_model = getattr(first, "auto_model", None)
    if auto_model is None or not hasattr(auto_model, "get_input_embeddings"):
        raise VocabError(
            f"the SentenceTransformer's first module ({type(first).__name__}) holds no "
            "transformers model (auto_model); only Transformer-based models can be reduced"
        )
    own = st_model.tokenizer
    if tokenizer is not None and tokenizer is not own:
        same_backend = backend_of(tokenizer) is not None and backend_of(tokenizer) is backend_of(
            own
        )
        if not same_backend:
            raise VocabError(
                "'tokenizer' must be the SentenceTransformer's own tokenizer "
                "(st_model.tokenizer), which its first module uses"
            )
    return auto_model, own
