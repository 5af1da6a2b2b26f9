"""The command line of deployment: ``export --format gguf|onnx`` and choosing a draft size.

A tiny Qwen2 model saved with its tokenizer goes through ``vocabcore plan --max-size K``,
``vocabcore stats --texts held_out --plot`` (the coverage that chooses K),
``vocabcore draft`` and ``vocabcore export --format gguf``; the bundled MiniLM through
``export --format onnx``. Unknown formats and unhandled families exit with status 2 and one
line naming the problem, and write nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from fixtures.fast_tokenizers import build_corpus
from fixtures.llm_models import build_llm_case
from fixtures.llm_tokenizers import HELD_OUT
from vocab_adapters.cli import main
from vocabcore import VocabPlan

gguf = pytest.importorskip("gguf")
TEXTS = build_corpus(300)


@pytest.fixture(scope="module")
def qwen_dir(load_llm_tokenizer: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("qwen_cli")
    tok = load_llm_tokenizer("qwen2")
    model = build_llm_case("qwen2", tok)
    model.save_pretrained(str(root / "model"))
    tok.save_pretrained(str(root / "model"))
    (root / "train.txt").write_text("\n".join(TEXTS), encoding="utf-8")
    (root / "held_out.txt").write_text("\n".join(TEXTS[1::5] + HELD_OUT), encoding="utf-8")
    return root


def test_plan_max_size_stats_coverage_draft_and_gguf_export(
    qwen_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, plan_file = qwen_dir / "model", tmp_path / "plan.json"
    args = ["plan", "--tokenizer", str(model), "--texts", str(qwen_dir / "train.txt")]
    assert main([*args, "--max-size", "700", "-o", str(plan_file), "-q"]) == 0
    plan = VocabPlan.load(plan_file)
    stats = ["stats", str(plan_file), "--tokenizer", str(model)]
    plot = tmp_path / "coverage.png"
    pytest.importorskip("matplotlib")
    code = main([*stats, "--texts", str(qwen_dir / "held_out.txt"), "--plot", str(plot)])
    assert code == 0 and plot.stat().st_size > 0
    assert "coverage" in capsys.readouterr().out.lower()

    hot = tmp_path / "hot.pt"
    assert main(["draft", "--plan", str(plan_file), "-o", str(hot)]) == 0
    assert torch.load(hot, weights_only=True).tolist() == list(plan.kept)

    out = tmp_path / "trimmed.gguf"
    export = ["export", "--model", str(model), "--plan", str(plan_file), "-o", str(out)]
    assert main([*export, "--format", "gguf"]) == 0
    reader = gguf.GGUFReader(out)
    assert reader.fields["tokenizer.ggml.pre"].contents() == "qwen2"
    assert len(reader.fields["tokenizer.ggml.tokens"].contents()) == plan.new_size


def test_onnx_export_of_a_sentence_transformer_directory(
    minilm_dir: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("onnx")
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS), encoding="utf-8")
    plan_file = tmp_path / "plan.json"
    args = ["plan", "--tokenizer", minilm_dir, "--texts", str(texts), "-o", str(plan_file)]
    assert main([*args, "-q"]) == 0
    out = tmp_path / "onnx"
    export = ["export", "--model", minilm_dir, "--plan", str(plan_file), "-o", str(out)]
    assert main([*export, "--format", "onnx"]) == 0
    assert (out / "model.onnx").is_file() and (out / "tokenizer.json").is_file()
    assert "ONNX" in capsys.readouterr().out


def test_bad_format_and_unhandled_family_exit_2_and_write_nothing(
    qwen_dir: Path, minilm_dir: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan_file = tmp_path / "plan.json"
    VocabPlan.identity(30522).save(plan_file)
    export = ["export", "--model", minilm_dir, "--plan", str(plan_file)]
    assert main([*export, "-o", str(tmp_path / "x"), "--format", "ggml"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    assert main([*export, "-o", str(tmp_path / "m.gguf"), "--format", "gguf"]) == 2
    err = capsys.readouterr().err
    assert "GGUF export handles" in err and "SentenceTransformer" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.json"]
