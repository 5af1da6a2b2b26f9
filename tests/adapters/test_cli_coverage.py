"""vocabcore plan --max-size and vocabcore stats --tokenizer/--texts/--plot, with the real
MiniLM tokenizer."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from fixtures.tiny_bert import minilm_path
from vocab_adapters import coverage
from vocab_adapters.cli import main
from vocab_adapters.demo import demo_corpus
from vocabcore import VocabPlan

TEXTS = demo_corpus(120)


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tok")
    AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("texts")
    train, held = folder / "train.txt", folder / "held.jsonl"
    train.write_text("\n".join(TEXTS[::2]) + "\n", encoding="utf-8")
    held.write_text("".join(json.dumps({"body": t}) + "\n" for t in TEXTS[1::2]), "utf-8")
    return {"train": train, "held": held}


@pytest.fixture(scope="module")
def budget_plan(tok_dir: Path, files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("plan") / "plan.json"
    args = ["plan", "--tokenizer", str(tok_dir), "--texts", str(files["train"]), "-o", str(out)]
    assert main([*args, "--max-size", "300", "-q"]) == 0
    return out


def test_plan_max_size(budget_plan: Path, tok_dir: Path, files: dict[str, Path]) -> None:
    from vocab_adapters import plan_from_texts

    plan = VocabPlan.load(budget_plan)
    assert plan.new_size <= 300
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    assert plan == plan_from_texts(tok, TEXTS[::2], max_size=300)


def test_plan_max_size_too_small(
    tok_dir: Path, files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["plan", "--tokenizer", str(tok_dir), "--texts", str(files["train"])]
    assert main([*args, "-o", str(tmp_path / "p.json"), "--max-size", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "max_size >= " in err[0]
    assert not (tmp_path / "p.json").exists()


def test_stats_json_has_coverage(
    budget_plan: Path,
    tok_dir: Path,
    files: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    png = tmp_path / "coverage.png"
    args = ["stats", str(budget_plan), "--tokenizer", str(tok_dir), "--texts", str(files["held"])]
    assert main([*args, "--column", "body", "--json", "--plot", str(png)]) == 0
    out = json.loads(capsys.readouterr().out)
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    expected = coverage(VocabPlan.load(budget_plan), tok, TEXTS[1::2]).to_dict()
    assert out["coverage"] == expected
    assert set(expected) == {
        "texts",
        "tokens_full",
        "tokens_reduced",
        "identical_fraction",
        "unk_fraction",
        "tokens_growth",
    }
    assert png.read_bytes()[:4] == b"\x89PNG"

    assert main([*args[:-2], "--texts", str(files["held"]), "--column", "body"]) == 0
    text = capsys.readouterr().out
    assert "identical encoding:" in text and "tokens growth:" in text


def test_stats_coverage_needs_both(
    budget_plan: Path, tok_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["stats", str(budget_plan), "--tokenizer", str(tok_dir)]) == 2
    assert "--texts" in capsys.readouterr().err


def test_plot_without_matplotlib_exits_2(
    budget_plan: Path,
    tok_dir: Path,
    files: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as if not installed
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "matplotlib" else real_find_spec(name, *a),
    )
    args = ["stats", str(budget_plan), "--tokenizer", str(tok_dir), "--texts", str(files["train"])]
    assert main([*args, "--plot", str(tmp_path / "c.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "vocabcore[plot]" in err[0]
    assert not (tmp_path / "c.png").exists()
