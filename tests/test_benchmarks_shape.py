"""The benchmark scripts stay small and their pages stay reproducible from the stored results.

Nothing here measures anything: the first test reads the scripts' syntax trees, the others
render the docs pages from the committed results JSON files (in a subprocess, so that the
scripts' ``sys.path`` and environment set-up stays out of the test session) and compare them
with the committed pages.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
DOCS = ROOT / "docs"
MAX_LINES = 80

# Renders every generated page from the committed results; prints {name: markdown} as JSON.
RENDER = """
import json, sys, tempfile
from pathlib import Path

sys.path.insert(0, "benchmarks")
import _harness as h
import flair_finetune, llm_memory, run_all, softmax_mlm, softmax_quality, softmax_speed

results = h.read_json("benchmarks/results.json")
pages = {
    "benchmarks.md": run_all.render(
        results, run_all.command_line(results["threads"]), run_all.chart_names(results)
    ),
    "flair.md": flair_finetune.render(h.read_json("benchmarks/flair_finetune.json")),
    "softmax_quality": softmax_quality.table(h.read_json("benchmarks/softmax_quality.json")),
    "softmax_mlm": softmax_mlm.table(h.read_json("benchmarks/softmax_mlm.json")),
    "trl_quality": softmax_quality.table(h.read_json("benchmarks/trl_quality.json")),
    "normaliser_quality": softmax_speed.quality_table(h.read_json("benchmarks/softmax_speed.json")),
}
with tempfile.TemporaryDirectory() as tmp:
    out = Path(tmp) / "llm_memory.md"
    llm_memory.write_doc(h.read_json("benchmarks/llm_memory.json"), out)
    pages["llm_memory.md"] = out.read_text(encoding="utf-8")
print(json.dumps(pages))
"""


def _long_functions(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [
        f"{path.name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_LINES
    ]


def test_no_benchmark_function_is_longer_than_80_lines() -> None:
    scripts = sorted(BENCHMARKS.glob("*.py"))
    assert scripts, f"no scripts found in {BENCHMARKS}"
    too_long = [f for path in scripts for f in _long_functions(path)]
    assert not too_long, "split these into smaller functions:\n" + "\n".join(too_long)


@pytest.fixture(scope="module")
def rendered() -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(
        [sys.executable, "-c", RENDER],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    pages: dict[str, str] = json.loads(done.stdout)
    return pages


@pytest.mark.parametrize("page", ["benchmarks.md", "flair.md", "llm_memory.md"])
def test_page_renders_from_the_committed_results(rendered: dict[str, str], page: str) -> None:
    assert rendered[page] == (DOCS / page).read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "name", ["softmax_quality", "softmax_mlm", "trl_quality", "normaliser_quality"]
)
def test_softmax_tables_render_from_the_committed_results(
    rendered: dict[str, str], name: str
) -> None:
    table = rendered[name]
    assert table.startswith("| fine-tuning |" if "normaliser" not in name else "| task |")
    assert table in (DOCS / "softmax_modes.md").read_text(encoding="utf-8")
