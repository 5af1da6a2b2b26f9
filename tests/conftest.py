"""Shared test setup: Hypothesis profiles, offline Hugging Face, fixture modules."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "thorough", max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck)
)
settings.register_profile("dev", max_examples=20, deadline=None)
settings.load_profile(os.environ.get("VOCABCORE_HYPOTHESIS_PROFILE", "ci"))

# Session-scoped fixtures (locally trained tokenizers, tiny models) live in tests/fixtures/.
pytest_plugins = [
    "fixtures.fast_tokenizers",
    "fixtures.slow_tokenizers",
    "fixtures.models",
]
