"""Errors raised by vocabcore and vocab_adapters."""

from __future__ import annotations


class VocabError(ValueError):
    """A plan, or its use, is invalid; the message says what and how to fix it."""


class PlanMismatchError(VocabError):
    """A plan meets a tokenizer, model or plan whose fingerprint or size differs."""
