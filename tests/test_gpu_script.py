"""benchmarks/gpu.py: its CPU subset runs, writes the documented JSON, and the page renders.

The script runs in a subprocess (its ``sys.path`` set-up stays out of the test session). Nothing
here asserts on a time: the CPU subset only checks that every variant ran and what it computed.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu.py"
SHAPES = ("llama", "qwen", "gemma")
ALWAYS = ("full", "reduced", "shifted")


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str, str]:
    folder = tmp_path_factory.mktemp("gpu")
    out, doc = folder / "gpu.json", folder / "gpu.md"
    # a generous budget: on a busy machine nothing may be skipped for time here
    done = _run("--cpu", "--out", out, "--doc", doc, "--budget", "900")
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text(encoding="utf-8")), doc.read_text(encoding="utf-8"), done.stdout


def test_cpu_subset_measures_every_shape_and_variant(
    cpu_run: tuple[dict[str, Any], str, str],
) -> None:
    results = cpu_run[0]
    assert results["mode"] == "cpu"
    assert results["cuda_tests"] == {"not_run": "no CUDA device"}
    assert {"torch", "transformers", "python"} <= set(results["versions"])
    assert results["budget"]["skipped"] == []
    unavailable = results.get("shapes_unavailable", {})
    assert set(unavailable) <= {"gemma"}  # Gemma 3 needs transformers 4.50+
    assert [e["shape"] for e in results["shapes"]] == [s for s in SHAPES if s not in unavailable]
    for entry in results["shapes"]:
        assert 0 < entry["kept"] < entry["rows"]
        times = entry["times"]
        for name in ALWAYS:
            t = times[name]
            assert "error" not in t, (entry["shape"], name, t)
            assert len(t["times_s"]) == results["settings"]["steps"]
            assert isinstance(t["median_s"], float) and isinstance(t["best_s"], float)
            assert math.isfinite(t["loss"])
        assert times["full"]["head_rows"] == entry["rows"]
        assert times["reduced"]["head_rows"] == entry["kept"]


def test_shifted_loss_is_the_full_vocabulary_loss(
    cpu_run: tuple[dict[str, Any], str, str],
) -> None:
    for entry in cpu_run[0]["shapes"]:
        t = entry["times"]
        full = t["full"]["loss"]
        assert t["shifted"]["loss"] == pytest.approx(full, rel=1e-5), entry["shape"]
        # the tiny plans drop fewer than 8,192 rows: the sampled normaliser takes them all
        assert entry["rows"] - entry["kept"] < 8192
        assert t["shifted, sampled 8192"]["loss"] == pytest.approx(full, rel=1e-5)
        # the reduced loss normalises over the kept ids only: lower, for the same weights
        assert t["reduced"]["loss"] < full - 0.1
        assert t["shifted"]["time_vs_full"] > 0 and t["shifted"]["time_vs_reduced"] > 0


def test_optional_kernels_are_measured_or_listed_as_missing(
    cpu_run: tuple[dict[str, Any], str, str],
) -> None:
    results = cpu_run[0]
    missing = results["kernels_missing"]
    # the Triton kernels need a CUDA device: listed with a reason, never an error
    assert "CUDA" in missing["Liger FLCE"] and "CUDA" in missing["CCE"]
    for entry in results["shapes"]:
        names = set(entry["times"])
        assert not any("Liger" in n or "CCE" in n for n in names)
        if "torch LCE" in missing:
            assert "full + torch LCE" not in names
        else:
            lce = entry["times"]["full + torch LCE"]
            assert lce["loss"] == pytest.approx(entry["times"]["full"]["loss"], rel=1e-4)


def test_cpu_subset_page_has_the_table(cpu_run: tuple[dict[str, Any], str, str]) -> None:
    _, page, stdout = cpu_run
    header = "| shape | variant | median step | best | / full | / reduced |"
    assert header in page and header in stdout
    assert "|---|" in page
    assert "CPU subset" in page
    rows = [line for line in page.splitlines() if line.startswith("| ") and "(tiny)" in line]
    assert len(rows) >= len(cpu_run[0]["shapes"]) * len(ALWAYS)


def test_committed_page_renders_from_the_committed_results(tmp_path: Path) -> None:
    page = tmp_path / "gpu.md"
    done = _run("--render", "--doc", page)
    assert done.returncode == 0, done.stderr[-3000:]
    rendered = page.read_text(encoding="utf-8")
    assert rendered == (ROOT / "docs" / "gpu.md").read_text(encoding="utf-8")
    if not (ROOT / "benchmarks" / "gpu.json").exists():
        assert "No GPU figures are recorded yet" in rendered
        assert "python benchmarks/gpu.py" in rendered and "nox -s gpu" in rendered
