"""`vocabcore demo --quick`: full vocabulary, reduced and shifted side by side, restored."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import pytest

from vocab_adapters import demo
from vocab_adapters.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Any, str, Path]:
    """One quick demo through the command line: exit status, measurements, stdout, out dir."""
    out_dir = tmp_path_factory.mktemp("demo")
    results: list[demo.DemoResult] = []
    measure = demo.measure_demo

    def spy(*args: Any, **kwargs: Any) -> demo.DemoResult:
        results.append(measure(*args, **kwargs))
        return results[-1]

    capture = pytest.MonkeyPatch()
    capture.setattr(demo, "measure_demo", spy)
    stdout = io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout):
            code = main(["demo", "--quick", "-o", str(out_dir)])
    finally:
        capture.undo()
    (result,) = results
    return code, result, stdout.getvalue(), out_dir


def _runs(result: demo.DemoResult) -> tuple[demo.DemoRun, demo.DemoRun, demo.DemoRun]:
    full, reduced, shifted = (
        result.run(name) for name in ("full vocabulary", "reduced", "shifted")
    )
    return full, reduced, shifted


def test_three_runs_in_order(quick_demo: tuple[int, Any, str, Path]) -> None:
    code, result, _, _ = quick_demo
    assert code == 0
    assert [run.name for run in result.runs] == ["full vocabulary", "reduced", "shifted"]


def test_shifted_trains_with_the_full_vocabulary_loss(
    quick_demo: tuple[int, Any, str, Path],
) -> None:
    # Same seed, batch, masks and dropout: the first step's loss of softmax="shifted" is the
    # full-vocabulary loss (the shift starts at zero); "reduced" normalises over fewer ids.
    full, reduced, shifted = _runs(quick_demo[1])
    assert shifted.first_loss == pytest.approx(full.first_loss, abs=1e-4)
    assert reduced.first_loss < full.first_loss - 0.5
    # The shift (one hidden-size vector, one bias scalar for BERT's biased head) trains.
    assert shifted.params == reduced.params + 384 + 1 < full.params
    assert reduced.state < full.state / 1.5


def test_dropped_mass_tells_reduced_from_shifted(quick_demo: tuple[int, Any, str, Path]) -> None:
    full, reduced, shifted = _runs(quick_demo[1])
    assert 0.0 < full.dropped_mass < 1.0
    assert reduced.dropped_mass > full.dropped_mass + 0.1
    assert shifted.dropped_mass == pytest.approx(full.dropped_mass, abs=0.05)
    assert reduced.heldout > full.heldout
    assert shifted.heldout == pytest.approx(full.heldout, rel=0.01)


def test_restore_checks_of_both_reduced_runs(quick_demo: tuple[int, Any, str, Path]) -> None:
    _, result, _, out_dir = quick_demo
    full, reduced, shifted = _runs(result)
    assert full.checks == {}
    assert reduced.checks["dropped rows bit-identical to the original"]
    assert shifted.checks["dropped rows moved by one shared vector"]
    for run in (reduced, shifted):
        assert len(run.checks) == 3 and all(run.checks.values()), run.checks
        assert (out_dir / run.name / "config.json").exists()


def test_printed_table_and_story(quick_demo: tuple[int, Any, str, Path]) -> None:
    _, result, out, _ = quick_demo
    lines = out.splitlines()
    assert any(line.split()[-3:] == ["vocabulary", "reduced", "shifted"] for line in lines if line)
    rows = {
        "held-out mass on dropped ids": "dropped_mass",
        "held-out loss, full vocab": "heldout",
        "training loss, first step": "first_loss",
    }
    for label, field in rows.items():
        (row,) = [line for line in lines if line.startswith(label)]
        printed = [float(cell) for cell in row[len(label) :].split()]
        assert printed == pytest.approx([getattr(run, field) for run in result.runs], abs=1e-3)
    text = " ".join(out.split())
    assert f"over the {result.plan.new_size:,} kept ids only" in text
    assert "shifted: trains with the full-vocabulary loss" in text
    assert "shifted: dropped rows moved by one shared vector: yes" in out
