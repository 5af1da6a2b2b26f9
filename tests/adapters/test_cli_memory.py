"""``vocabcore stats --model DIR --batch-size --seq-len --optimizer``, and one-line CLI errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import LlamaConfig, LlamaForCausalLM

from vocab_adapters import memory_estimate
from vocab_adapters.cli import main
from vocabcore import VocabPlan

VOCAB = 211


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    out = tmp_path_factory.mktemp("llama")
    LlamaForCausalLM(config).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def plan_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("plan") / "plan.json"
    VocabPlan.from_ids([range(0, VOCAB, 3)], vocab_size=VOCAB).save(out)
    return out


def test_stats_json_has_the_memory_keys(
    model_dir: Path, plan_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["stats", str(plan_file), "--model", str(model_dir), "--json"]
    flags = ["--batch-size", "4", "--seq-len", "256", "--optimizer", "adamw8bit"]
    assert main([*argv, *flags]) == 0
    stats = json.loads(capsys.readouterr().out)
    plan = VocabPlan.load(plan_file)
    est = memory_estimate(model_dir, plan, batch_size=4, seq_len=256, optimizer="adamw8bit")
    assert est.reduced is not None
    assert stats["logits_bytes_before"] == 4 * 256 * VOCAB * 4 == est.full.logits_bytes
    assert stats["logits_bytes_after"] == 4 * 256 * plan.new_size * 4
    assert stats["train_bytes_before"] == est.full.total_bytes
    assert stats["train_bytes_after"] == est.reduced.total_bytes
    for key in ("loss_bytes", "activation_bytes", "peak_bytes"):
        assert stats[f"{key}_before"] == getattr(est.full, key)
        assert stats[f"{key}_after"] == getattr(est.reduced, key)
    # the full float32 embedding and head held for revert, and the optimizer's full-size state
    # of them (8-bit state can't be split by token: these keep 32-bit state, 2 x fp32)
    assert stats["held_bytes_after"] == est.reduced.held_bytes == 2 * VOCAB * 32 * (4 + 8)
    assert stats["activation_bytes_before"] > 0  # a Llama: the layers are known
    assert stats["peak_bytes_after"] < stats["peak_bytes_before"]
    removed = (VOCAB - plan.new_size) * 32 * 2  # untied: embedding and head
    assert stats["params_before"] - stats["params_after"] == removed
    assert stats["adam_state_bytes_saved"] == 8 * removed
    assert stats["params_removed_fraction"] == pytest.approx(removed / stats["params_before"])
    assert (stats["batch_size"], stats["seq_len"], stats["optimizer"]) == (4, 256, "adamw8bit")


def test_stats_defaults_and_table(
    model_dir: Path, plan_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["stats", str(plan_file), "--model", str(model_dir), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert (stats["batch_size"], stats["seq_len"], stats["optimizer"]) == (1, 512, "adamw")
    assert main(["stats", str(plan_file), "--model", str(model_dir), "--seq-len", "64"]) == 0
    out = capsys.readouterr().out
    assert "batch 1 x seq 64, adamw" in out
    for label in ("full", "reduced", "saved", "gradients", "optimizer state", "logits", "total"):
        assert label in out
    for label in ("loss workspace", "activations", "peak of a step", "held for revert"):
        assert label in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch-size", "0"], "argument --batch-size: must be a positive integer (got '0')"),
        (["--seq-len", "x"], "argument --seq-len: must be a positive integer (got 'x')"),
        (["--optimizer", "adam"], "argument --optimizer: invalid choice: 'adam'"),
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    ],
)
def test_argument_errors_are_one_line(
    args: list[str],
    message: str,
    model_dir: Path,
    plan_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["stats", str(plan_file), "--model", str(model_dir), *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and message in captured.err, captured.err


def test_memory_flags_need_a_model(plan_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stats", str(plan_file), "--seq-len", "128"]) == 2
    err = capsys.readouterr().err
    assert err == "vocabcore stats: error: --seq-len needs --model DIR (the model to estimate)\n"


@pytest.mark.parametrize("argv", [[], ["nope"], ["stats"], ["plan", "--tokenizer", "x"]])
def test_every_usage_error_is_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith("vocabcore"), captured.err


def test_model_error_is_one_line(
    plan_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["stats", str(plan_file), "--model", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has no config.json" in err


def test_console_script_exits_2_with_one_line(plan_file: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "vocab_adapters.cli", "stats", str(plan_file), "--optimizer", "x"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "invalid choice: 'x'" in done.stderr
