"""Shared test setup: Hypothesis profiles, offline Hugging Face, fixture modules."""

from __future__ import annotations

import os
from typing import Any

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
    "fixtures.tiny_bert",
    "fixtures.llm_tokenizers",
]


# -- the supported-matrix record --------------------------------------------------------------
# With VOCABCORE_MATRIX_DIR set, each run writes the outcome of every test to
# matrix-<transformers version>.json there; docs/tools/gen_matrix.py turns those into
# docs/matrix.md.
_OUTCOMES: dict[str, str] = {}


def pytest_runtest_logreport(report: Any) -> None:
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        _OUTCOMES[report.nodeid] = report.outcome


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    target = os.environ.get("VOCABCORE_MATRIX_DIR")
    if not target or hasattr(session.config, "workerinput"):  # controller only under xdist
        return
    import json
    import sys
    from pathlib import Path

    import tokenizers
    import torch
    import transformers

    out = Path(target)
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "outcomes": dict(sorted(_OUTCOMES.items())),
    }
    name = f"matrix-{transformers.__version__}.json"
    (out / name).write_text(json.dumps(record, indent=1), encoding="utf-8")
