"""The package layout: rooms by role, no private names across modules, flat paths still import."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import vocab_adapters

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "vocab_adapters"
ROOMS = {"stages", "tokenization", "planning", "reports", "integrations", "deploy"}
TOP = {"__init__", "session", "export", "cli", "demo"}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _dotted(path: Path) -> str:
    return ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")


def _private_uses(path: Path) -> list[str]:
    """``from vocab_adapters.x import _name`` and ``x._name`` on a vocab_adapters module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    own = _dotted(path)
    aliases: set[str] = set()
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vocab_adapters"):
            for alias in node.names:
                target = f"{node.module}.{alias.name}"
                if importlib.util.find_spec(node.module or "") and _is_module(target):
                    aliases.add(alias.asname or alias.name)
                elif alias.name.startswith("_") and node.module != own:
                    found.append(f"{own}:{node.lineno} imports {node.module}.{alias.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("vocab_adapters.") and alias.asname:
                    aliases.add(alias.asname)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            found.append(f"{own}:{node.lineno} uses {node.value.id}.{node.attr}")
    return found


def _is_module(dotted: str) -> bool:
    try:
        return importlib.util.find_spec(dotted) is not None
    except ModuleNotFoundError:
        return False


def test_every_module_sits_in_a_room() -> None:
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert top == TOP
    rooms = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert rooms == ROOMS
    for room in ROOMS:
        assert (PACKAGE / room / "__init__.py").read_text(encoding="utf-8").startswith('"""')


def test_no_private_names_across_modules() -> None:
    found = [use for path in _modules() for use in _private_uses(path)]
    assert found == []


@pytest.mark.parametrize("flat", sorted(vocab_adapters.MOVED))
def test_flat_paths_import_the_grouped_modules(flat: str) -> None:
    old = importlib.import_module(f"vocab_adapters.{flat}")
    new = importlib.import_module(f"vocab_adapters.{vocab_adapters.MOVED[flat]}")
    assert old is new
    assert new.__spec__ is not None and new.__spec__.name == new.__name__
