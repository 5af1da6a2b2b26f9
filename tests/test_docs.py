"""Generated docs are current; README commands and links hold."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_troubleshooting_page_is_current() -> None:
    spec = importlib.util.spec_from_file_location(
        "gen_troubleshooting", ROOT / "docs" / "tools" / "gen_troubleshooting.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    current = (ROOT / "docs" / "troubleshooting.md").read_text(encoding="utf-8")
    assert current == module.render(), "run: python docs/tools/gen_troubleshooting.py"


def test_readme_links_exist() -> None:
    import re

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for target in re.findall(r"\]\(((?:docs/)[^)#]+)\)", readme):
        assert (ROOT / target).exists(), target
