"""Plans that add tokens: maps, equality, JSON (formats 1 and 2), algebra, bad input."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.test_plan_properties import plans
from vocabcore import VocabError, VocabPlan
from vocabcore.codec import FORMAT

_TOKENS = st.text(
    alphabet=st.sampled_from("abcĠ▁#é日"), min_size=1, max_size=6
)  # token-form strings, including byte-level and Metaspace markers


@st.composite
def adding_plans(
    draw: st.DrawFn, vocab_size: int | None = None, fingerprint: str | None = None
) -> VocabPlan:
    """A generated plan (see ``plans``) with 0-8 distinct added tokens."""
    base = draw(plans(vocab_size, fingerprint))
    added = draw(st.lists(_TOKENS, max_size=8, unique=True))
    return base.adding(added)


@given(adding_plans())
def test_added_tokens_follow_the_kept_ids_in_order(plan: VocabPlan) -> None:
    kept, added = plan.kept, plan.added
    assert plan.new_size == len(kept) + len(added)
    for j in range(plan.new_size):
        old = plan.new_to_old(j)
        if j < len(kept):
            assert old == kept[j]
            assert plan.old_to_new(old) == j
        else:
            assert old is None
            assert plan.added_id(added[j - len(kept)]) == j


@given(adding_plans(), st.data())
def test_adding_leaves_old_ids_and_remap_unchanged(plan: VocabPlan, data: st.DataObject) -> None:
    bare = VocabPlan(plan.vocab_size, plan.kept, plan.fingerprint)
    for old in range(plan.vocab_size):
        assert plan.old_to_new(old) == bare.old_to_new(old)
    if plan.kept:
        ids = data.draw(st.lists(st.sampled_from(plan.kept), max_size=30))
        assert plan.remap(ids) == bare.remap(ids)
    assert plan.removed_fraction == bare.removed_fraction
    assert plan.is_identity is (bare.is_identity and not plan.added)


@given(adding_plans())
def test_json_round_trip_covers_added(plan: VocabPlan) -> None:
    text = plan.to_json()
    again = VocabPlan.from_json(text)
    assert again == plan
    assert again.added == plan.added
    assert hash(again) == hash(plan)
    assert again.to_json() == text
    document = json.loads(text)
    assert document["format"] == FORMAT == 2
    assert document["added"] == list(plan.added)
    assert document["new_size"] == plan.new_size


@given(adding_plans(), _TOKENS)
def test_equality_and_hash_see_added(plan: VocabPlan, token: str) -> None:
    if token in plan.added:
        return
    other = plan.adding([token])
    assert other != plan
    assert other.added[-1] == token
    assert other == VocabPlan(
        plan.vocab_size, plan.kept, plan.fingerprint, added=(*plan.added, token)
    )
    assert hash(other) == hash(plan.adding([token]))


@st.composite
def adding_plan_pairs(draw: st.DrawFn) -> tuple[VocabPlan, VocabPlan]:
    size = draw(st.integers(1, 100))
    fp = draw(st.sampled_from([None, "sha256:x"]))
    return draw(adding_plans(size, fp)), draw(adding_plans(size, fp))


@given(adding_plan_pairs())
def test_union_keeps_first_added_then_others_new(pair: tuple[VocabPlan, VocabPlan]) -> None:
    a, b = pair
    u = a.union(b)
    assert u.added[: len(a.added)] == a.added
    assert set(u.added) == set(a.added) | set(b.added)
    assert len(u.added) == len(set(u.added))
    rest = [t for t in b.added if t not in a.added]
    assert list(u.added[len(a.added) :]) == rest
    assert set(u.kept) == set(a.kept) | set(b.kept)
    assert a.union(a) == a


@given(adding_plans())
def test_keeping_and_metadata_carry_added(plan: VocabPlan) -> None:
    assert plan.with_metadata(note=1).added == plan.added
    assert plan.keeping([0]).added == plan.added


def test_then_refuses_plans_with_added_tokens() -> None:
    plain = VocabPlan(6, (1, 3, 5))
    with pytest.raises(VocabError, match="cannot compose plans that add tokens"):
        plain.adding(["x"]).then(VocabPlan(4, (0, 2)))
    with pytest.raises(VocabError, match="'other' adds"):
        plain.then(VocabPlan(3, (0, 2)).adding(["x"]))
    assert plain.then(VocabPlan(3, (0, 2))).kept == (1, 5)


def test_format_1_documents_still_load() -> None:
    document = {
        "created_by": "vocabcore 0.1.0",
        "fingerprint": "sha256:abc",
        "format": 1,
        "kept": {"data": "EgAI", "encoding": "bitmap-lsb0-base64"},
        "metadata": {"min_count": 1},
        "new_size": 3,
        "vocab_size": 20,
    }
    plan = VocabPlan.from_json(json.dumps(document))
    assert plan == VocabPlan(20, (1, 4, 19), "sha256:abc")
    assert plan.added == ()
    assert dict(plan.metadata) == {"min_count": 1}
    assert json.loads(plan.to_json())["format"] == 2


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        (["a", ""], "empty string"),
        (["a", "b", "a"], "holds 'a' twice"),
        ([3], "token strings"),
        ("abc", "wrap it in a list"),
    ],
)
def test_adding_rejects_bad_tokens(tokens: object, message: str) -> None:
    plan = VocabPlan(5, (0, 2))
    with pytest.raises(VocabError, match=message):
        plan.adding(tokens)  # type: ignore[arg-type]
    with pytest.raises(VocabError, match="twice"):
        plan.adding(["a"]).adding(["a"])


def test_format_2_documents_are_checked() -> None:
    document = json.loads(VocabPlan(20, (1, 4)).adding(["x", "y"]).to_json())
    document["added"] = ["x", 3]
    with pytest.raises(VocabError, match="'added' must hold token strings"):
        VocabPlan.from_json(json.dumps(document))
    document["added"] = ["x"]
    with pytest.raises(VocabError, match="'new_size' is 4 but 'kept' holds 2 ids and 'added' 1"):
        VocabPlan.from_json(json.dumps(document))
    document["added"] = ["x", "x"]
    document["new_size"] = 4
    with pytest.raises(VocabError, match="twice"):
        VocabPlan.from_json(json.dumps(document))
    del document["added"]
    with pytest.raises(VocabError, match="lacks the field 'added'"):
        VocabPlan.from_json(json.dumps(document))


def test_codec_does_not_import_plan() -> None:
    import ast
    from pathlib import Path

    import vocabcore.codec

    tree = ast.parse(Path(vocabcore.codec.__file__).read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    assert not {"vocabcore.plan", "vocabcore.counts", "vocabcore.serialization"} & imported
