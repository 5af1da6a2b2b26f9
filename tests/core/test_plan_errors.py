"""Bad input to the core gives VocabError naming the field and value."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from vocabcore import PlanMismatchError, TokenCounts, VocabError, VocabPlan


def test_vocab_error_is_a_value_error() -> None:
    assert issubclass(VocabError, ValueError)
    assert issubclass(PlanMismatchError, VocabError)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"vocab_size": 0, "kept": ()}, "'vocab_size' must be >= 1 (got 0)"),
        ({"vocab_size": -3, "kept": ()}, "'vocab_size' must be >= 1 (got -3)"),
        ({"vocab_size": 5, "kept": (1, 1)}, "duplicate id 1"),
        ({"vocab_size": 5, "kept": (2, 1)}, "unsorted id 1"),
        ({"vocab_size": 5, "kept": (1, 5)}, "below vocab_size 5 (got 5)"),
        ({"vocab_size": 5, "kept": (-1, 2)}, "'kept'"),
        ({"vocab_size": 5, "kept": (1,), "fingerprint": ""}, "'fingerprint'"),
    ],
)
def test_constructor_rejects_bad_fields(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(VocabError, match=message.replace("(", r"\(").replace(")", r"\)")):
        VocabPlan(**kwargs)  # type: ignore[arg-type]


def test_from_counts_errors_name_the_field() -> None:
    with pytest.raises(VocabError, match=r"'keep' must hold ids below vocab_size 10 \(got 10\)"):
        VocabPlan.from_counts({1: 1}, vocab_size=10, keep=(10,))
    with pytest.raises(VocabError, match=r"'counts' as a sequence must have length"):
        VocabPlan.from_counts([1, 2], vocab_size=3)
    with pytest.raises(VocabError, match=r"'counts' must hold counts >= 0 \(got -1\)"):
        VocabPlan.from_counts({1: -1}, vocab_size=3)
    with pytest.raises(VocabError, match="'min_count' must be >= 1"):
        VocabPlan.from_counts({1: 1}, vocab_size=3, min_count=0)


def test_remap_errors() -> None:
    plan = VocabPlan(6, (0, 3))
    with pytest.raises(VocabError, match="id 4 is not kept"):
        plan.remap([3, 4])
    with pytest.raises(VocabError, match=r"\[0, 6\)"):
        plan.remap([6])
    with pytest.raises(VocabError, match=r"\[0, 6\)"):
        plan.remap([-1])
    with pytest.raises(VocabError, match="'unk' must be an old id that the plan keeps"):
        plan.remap([4], unk=5)


def test_algebra_mismatches() -> None:
    with pytest.raises(PlanMismatchError, match="vocab_size 5 vs 6"):
        VocabPlan(5, (1,)).union(VocabPlan(6, (1,)))
    with pytest.raises(PlanMismatchError, match="fingerprint"):
        VocabPlan(5, (1,), "a").union(VocabPlan(5, (1,), "b"))
    with pytest.raises(PlanMismatchError, match="new_size 2"):
        VocabPlan(5, (1, 2)).then(VocabPlan(5, (1,)))


def _doc() -> dict[str, object]:
    return json.loads(VocabPlan(20, (1, 4, 19), "fp").to_json())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(format=3), "format' 3 is newer"),
        (lambda d: d.pop("vocab_size"), "lacks the field 'vocab_size'"),
        (lambda d: d.update(vocab_size=-1), "'vocab_size' must be >= 1 \\(got -1\\)"),
        (lambda d: d.update(vocab_size=8), "holds 3 bytes, but vocab_size 8 needs 1"),
        (lambda d: d.update(vocab_size=18), "holds id 19, out of range for vocab_size 18"),
        (lambda d: d.update(new_size=4), "'new_size' is 4 but 'kept' holds 3"),
        (lambda d: d.update(new_size=-4), "'new_size' must be >= 0"),
        (lambda d: d["kept"].update(data="!!"), "not valid base64"),
        (lambda d: d["kept"].update(encoding="runs"), "kept.encoding"),
        (lambda d: d.update(vocab_size="20"), "wrong type"),
    ],
)
def test_from_json_rejects_bad_documents(change: object, message: str) -> None:
    doc = _doc()
    change(doc)  # type: ignore[operator]
    with pytest.raises(VocabError, match=message):
        VocabPlan.from_json(json.dumps(doc))


def test_from_json_rejects_corrupt_text() -> None:
    text = VocabPlan(20, (1, 4)).to_json()
    with pytest.raises(VocabError, match="corrupt or truncated"):
        VocabPlan.from_json(text[: len(text) // 2])
    with pytest.raises(VocabError, match="must be an object"):
        VocabPlan.from_json("[1, 2]")


def test_save_and_load(tmp_path) -> None:  # type: ignore[no-untyped-def]
    plan = VocabPlan(30, (0, 7, 29), "fp", {"corpus": "x"})
    plan.save(tmp_path / "p.json")
    back = VocabPlan.load(tmp_path / "p.json")
    assert back == plan and back.metadata["corpus"] == "x"
    with pytest.raises(VocabError, match="cannot read plan file"):
        VocabPlan.load(tmp_path / "missing.json")


def test_token_counts_merge_and_round_trip() -> None:
    a = TokenCounts.from_ids([[1, 2, 2]], vocab_size=5, fingerprint="f")
    b = TokenCounts.from_ids([[4]], vocab_size=5, fingerprint="f")
    merged = a + b
    assert merged.counts == (0, 1, 2, 0, 1)
    assert TokenCounts.from_json(merged.to_json()) == merged
    assert merged.to_plan(min_count=2).kept == (2,)
    with pytest.raises(PlanMismatchError):
        a + TokenCounts.zeros(5, "g")


def test_importing_the_core_pulls_in_no_framework() -> None:
    code = (
        "import sys, vocabcore; "
        "vocabcore.VocabPlan.identity(3).to_json(); "
        "heavy = ('torch', 'numpy', 'transformers', 'tokenizers'); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
