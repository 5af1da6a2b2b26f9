"""vocabcore: the pure core of vocabulary reduction (standard library and attrs only).

A :class:`VocabPlan` says which ids of a vocabulary a training run keeps and how old and new
ids map. Adapters that apply plans to tokenizers, models and optimizers live in
``vocab_adapters``.
"""

from vocabcore._version import __version__
from vocabcore.counts import TokenCounts
from vocabcore.errors import PlanMismatchError, VocabError
from vocabcore.plan import VocabPlan

__all__ = ["PlanMismatchError", "TokenCounts", "VocabError", "VocabPlan", "__version__"]
