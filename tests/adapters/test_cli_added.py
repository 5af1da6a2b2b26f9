"""``vocabcore suggest`` and ``vocabcore plan --add-tokens N / --add-token TOKEN``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from fixtures.tiny_bert import minilm_path
from vocab_adapters import plan_from_texts, suggest_tokens
from vocab_adapters.cli import main
from vocab_adapters.demo import demo_corpus
from vocabcore import VocabPlan

TEXTS = demo_corpus(200)


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tok")
    AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def texts_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("texts") / "train.txt"
    path.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def expected(tok_dir: Path) -> list[str]:
    tokens = suggest_tokens(AutoTokenizer.from_pretrained(str(tok_dir)), TEXTS, n=5, min_count=2)
    assert len(tokens) == 5
    return tokens


def test_suggest_prints_the_suggestions(
    tok_dir: Path, texts_file: Path, expected: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["suggest", "--tokenizer", str(tok_dir), "--texts", str(texts_file)]
    assert main([*args, "-n", "5", "--min-count", "2"]) == 0
    assert capsys.readouterr().out.splitlines() == expected
    assert main([*args, "-n", "5", "--min-count", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == expected
    assert main(args) == 0  # defaults: n=100, min_count=5
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    assert capsys.readouterr().out.splitlines() == suggest_tokens(tok, TEXTS)


def test_plan_adds_suggested_tokens(
    tok_dir: Path, texts_file: Path, expected: list[str], tmp_path: Path
) -> None:
    out = tmp_path / "plan.json"
    base = ["plan", "--tokenizer", str(tok_dir), "--texts", str(texts_file), "-q"]
    assert main([*base, "--add-tokens", "5", "--add-min-count", "2", "-o", str(out)]) == 0
    plan = VocabPlan.load(out)
    assert plan.added == tuple(expected)
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    plain = plan_from_texts(tok, TEXTS, progress=False)
    assert plan.kept == plain.kept and plan.new_size == len(plain.kept) + 5


def test_plan_adds_listed_tokens(
    tok_dir: Path, texts_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "plan.json"
    base = ["plan", "--tokenizer", str(tok_dir), "--texts", str(texts_file), "-o", str(out)]
    assert main([*base, "-q", "--add-token", "ibuprofen", "--add-token", "##ofen"]) == 0
    assert VocabPlan.load(out).added == ("ibuprofen", "##ofen")
    assert "added 2 tokens" in capsys.readouterr().out
    assert main(["stats", str(out)]) == 0
    assert "added tokens:         2" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--add-tokens", "3", "--add-token", "zzqq"], "not allowed with"),
        (["--add-tokens", "0"], "positive integer"),
        (["--add-token", "[CLS]"], "already has it as one token"),
        (["--add-token", "zzqq", "--add-token", "zzqq"], "twice"),
        (["--add-min-count", "2"], "needs --add-tokens"),
    ],
)
def test_plan_add_errors_are_one_line(
    extra: list[str],
    message: str,
    tok_dir: Path,
    texts_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "plan.json"
    argv = ["plan", "--tokenizer", str(tok_dir), "--texts", str(texts_file), "-o", str(out)]
    assert main([*argv, "-q", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["-n", "0"], "positive integer"),
        (["--min-count", "x"], "positive integer"),
        (["--texts", "missing.txt"], "does not exist"),
    ],
)
def test_suggest_errors_are_one_line(
    extra: list[str],
    message: str,
    tok_dir: Path,
    texts_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["suggest", "--tokenizer", str(tok_dir), "--texts", str(texts_file), *extra]
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err
    assert captured.out == ""


def test_help_lists_suggest(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "suggest" in capsys.readouterr().out
    assert main(["plan", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--add-tokens" in text and "--add-token" in text
