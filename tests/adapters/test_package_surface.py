"""Every public name of vocab_adapters is the documented object, whatever was imported before."""

from __future__ import annotations

import itertools
import subprocess
import sys

import pytest

import vocab_adapters

NAMES = list(vocab_adapters.__all__)


def test_no_public_name_is_a_submodule() -> None:
    vocab_adapters._check_no_shadowing()


def _run(code: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize(
    "first",
    [
        "from vocab_adapters import plan_from_texts, apply_plan",
        "import vocab_adapters.session, vocab_adapters.planning.texts, vocab_adapters.export",
        "import vocab_adapters.tokenization.tokenizer_backend",
        "import vocab_adapters.stages.fast_tokenizer",
        "import vocab_adapters.cli",
        "pass",
    ],
)
def test_names_are_the_documented_objects_in_any_order(first: str) -> None:
    # In a fresh interpreter: import something first, then every public name, in two orders.
    for order in (NAMES, list(reversed(NAMES))):
        _run(
            f"{first}\n"
            "import inspect, types, vocab_adapters\n"
            f"for name in {order!r}:\n"
            "    value = getattr(vocab_adapters, name)\n"
            "    assert not isinstance(value, types.ModuleType), (name, value)\n"
            "    exec(f'from vocab_adapters import {name} as v')\n"
            "    assert v is value, name\n"
            "from vocab_adapters import fingerprint\n"
            "assert callable(fingerprint) and not isinstance(fingerprint, types.ModuleType)\n"
        )


def test_every_pair_of_first_imports() -> None:
    for a, b in itertools.permutations(["fingerprint", "plan_from_texts", "export_reduced"], 2):
        _run(
            f"from vocab_adapters import {a}\nfrom vocab_adapters import {b}\n"
            "import types, vocab_adapters\n"
            f"assert not isinstance(vocab_adapters.{a}, types.ModuleType)\n"
            f"assert not isinstance(vocab_adapters.{b}, types.ModuleType)\n"
        )


def test_cli_start_does_not_import_torch() -> None:
    _run("import sys, vocab_adapters.cli\nassert 'torch' not in sys.modules")
