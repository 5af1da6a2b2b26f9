"""The vocabcore command and export_reduced, on a tiny BERT with the real MiniLM tokenizer."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer

from fixtures.tiny_bert import minilm_path, tiny_bert
from vocab_adapters.cli import main
from vocab_adapters.demo import demo_corpus
from vocab_adapters.export import PLAN_FILE, export_reduced
from vocabcore import VocabError, VocabPlan

TEXTS = demo_corpus(80)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tok = AutoTokenizer.from_pretrained(minilm_path())
    model = tiny_bert(len(tok))
    out = tmp_path_factory.mktemp("bert")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def texts_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("texts") / "train.txt"
    path.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def plan_file(model_dir: Path, texts_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("plan") / "plan.json"
    assert (
        main(["plan", "--tokenizer", str(model_dir), "--texts", str(texts_file), "-o", str(out)])
        == 0
    )
    return out


def test_plan_command_writes_a_plan(plan_file: Path, model_dir: Path) -> None:
    plan = VocabPlan.load(plan_file)
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    assert plan.vocab_size == len(tok)
    assert 0 < plan.new_size < plan.vocab_size
    assert plan.metadata["corpus"] == "train.txt"
    for special in tok.all_special_ids:
        assert plan.old_to_new(special) is not None


@pytest.mark.parametrize("kind", ["jsonl", "csv", "parquet", "dataset"])
def test_plan_command_reads_every_file_kind(
    kind: str, model_dir: Path, plan_file: Path, tmp_path: Path
) -> None:
    rows = [{"id": i, "sentence": t} for i, t in enumerate(TEXTS)]
    if kind == "jsonl":
        source = tmp_path / "t.jsonl"
        source.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    elif kind == "csv":
        source = tmp_path / "t.csv"
        with source.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=["id", "sentence"])
            writer.writeheader()
            writer.writerows(rows)
    else:
        import datasets

        dataset = datasets.Dataset.from_list(rows)
        if kind == "parquet":
            source = tmp_path / "t.parquet"
            dataset.to_parquet(str(source))
        else:
            source = tmp_path / "ds"
            dataset.save_to_disk(str(source))
    out = tmp_path / "p.json"
    args = ["plan", "--tokenizer", str(model_dir), "--texts", str(source), "-o", str(out)]
    assert main([*args, "--column", "sentence", "-q"]) == 0
    assert VocabPlan.load(out) == VocabPlan.load(plan_file)


def test_stats_json(plan_file: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stats", str(plan_file), "--model", str(model_dir), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    plan = VocabPlan.load(plan_file)
    assert stats["vocab_size"] == plan.vocab_size
    assert stats["new_size"] == plan.new_size
    assert 0 < stats["removed_fraction"] < 1
    removed_rows = plan.vocab_size - plan.new_size
    # tied decoder counted once: word embeddings (16 wide) + the LM head bias
    assert stats["params_before"] - stats["params_after"] == removed_rows * (16 + 1)
    assert stats["adam_state_bytes_saved"] == 8 * removed_rows * 17
    assert main(["stats", str(plan_file)]) == 0
    assert "vocabulary removed" in capsys.readouterr().out


def test_export_loads_as_is_and_matches_logits(
    plan_file: Path, model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "reduced"
    args = ["export", "--model", str(model_dir), "--plan", str(plan_file), "-o", str(out)]
    assert main(args) == 0
    plan = VocabPlan.load(plan_file)
    assert VocabPlan.load(out / PLAN_FILE) == plan
    reduced_tok = AutoTokenizer.from_pretrained(str(out))
    reduced: Any = AutoModelForMaskedLM.from_pretrained(str(out)).eval()
    assert reduced.config.vocab_size == plan.new_size == len(reduced_tok)
    full_tok = AutoTokenizer.from_pretrained(str(model_dir))
    full: Any = AutoModelForMaskedLM.from_pretrained(str(model_dir)).eval()
    batch = full_tok(TEXTS[:4], padding=True, return_tensors="pt")
    small = reduced_tok(TEXTS[:4], padding=True, return_tensors="pt")
    assert small["input_ids"].tolist() == [plan.remap(r) for r in batch["input_ids"].tolist()]
    with torch.no_grad():
        expected = full(**batch).logits[..., torch.tensor(plan.kept)]
        got = reduced(**small).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_export_refuses_a_non_empty_directory(
    plan_file: Path, model_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "keep.txt").write_text("x")
    model = AutoModelForMaskedLM.from_pretrained(str(model_dir))
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    with pytest.raises(VocabError, match="not empty"):
        export_reduced(model, tok, VocabPlan.load(plan_file), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["plan", "--tokenizer", "{model}", "--texts", "missing.txt", "-o", "{tmp}/p.json"],
            "does not exist",
        ),
        (
            ["plan", "--tokenizer", "{tmp}/nope", "--texts", "{texts}", "-o", "{tmp}/p.json"],
            "tokenizer directory",
        ),
        (
            [
                "plan",
                "--tokenizer",
                "{model}",
                "--texts",
                "{texts}",
                "--column",
                "x",
                "-o",
                "{tmp}/p.json",
            ],
            "column",
        ),
        (["stats", "{tmp}/missing.json"], "cannot read plan file"),
        (["export", "--model", "{tmp}", "--plan", "{plan}", "-o", "{tmp}/out"], "no config.json"),
    ],
)
def test_errors_are_one_line_with_exit_code_2(
    argv: list[str],
    message: str,
    model_dir: Path,
    texts_file: Path,
    plan_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if "--column" in argv:
        jsonl = tmp_path / "t.jsonl"
        jsonl.write_text(json.dumps({"text": "hello"}) + "\n")
        texts_file = jsonl
    filled = [
        a.format(model=model_dir, texts=texts_file, plan=plan_file, tmp=tmp_path) for a in argv
    ]
    assert main(filled) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_wrong_tokenizer_plan_is_refused_by_export(
    plan_file: Path, model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = VocabPlan.load(plan_file)
    bad = tmp_path / "bad.json"
    VocabPlan(plan.vocab_size, plan.kept, "sha256:" + "1" * 64).save(bad)
    out = tmp_path / "out"
    assert main(["export", "--model", str(model_dir), "--plan", str(bad), "-o", str(out)]) == 2
    assert "fingerprint" in capsys.readouterr().err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def test_console_script_runs(plan_file: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "vocab_adapters.cli", "stats", str(plan_file), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(result.stdout)["new_size"] == VocabPlan.load(plan_file).new_size
