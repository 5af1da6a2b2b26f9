"""Property tests of VocabPlan: maps, order, algebra, serialization."""

from __future__ import annotations

from hypothesis import assume, given
from hypothesis import strategies as st

from vocabcore import VocabPlan


@st.composite
def plans(
    draw: st.DrawFn, vocab_size: int | None = None, fingerprint: str | None = None
) -> VocabPlan:
    size = vocab_size if vocab_size is not None else draw(st.integers(1, 300))
    kept = draw(st.sets(st.integers(0, size - 1), max_size=size))
    return VocabPlan(size, sorted(kept), fingerprint)


@st.composite
def plan_pairs(draw: st.DrawFn) -> tuple[VocabPlan, VocabPlan]:
    size = draw(st.integers(1, 200))
    fp = draw(st.sampled_from([None, "sha256:x"]))
    return draw(plans(size, fp)), draw(plans(size, fp))


@given(plans())
def test_new_ids_preserve_the_order_of_old_ids(plan: VocabPlan) -> None:
    news = [plan.old_to_new(i) for i in plan.kept]
    assert news == list(range(plan.new_size))
    assert list(plan.kept) == sorted(set(plan.kept))


@given(plans())
def test_old_to_new_and_new_to_old_are_inverse_on_kept_ids(plan: VocabPlan) -> None:
    for old in plan.kept:
        new = plan.old_to_new(old)
        assert new is not None
        assert plan.new_to_old(new) == old
    for new in range(plan.new_size):
        assert plan.old_to_new(plan.new_to_old(new)) == new
    kept = set(plan.kept)
    for old in range(plan.vocab_size):
        assert (plan.old_to_new(old) is None) == (old not in kept)


@given(plans(), st.data())
def test_remap_agrees_with_old_to_new(plan: VocabPlan, data: st.DataObject) -> None:
    assume(plan.new_size > 0)
    ids = data.draw(st.lists(st.sampled_from(plan.kept), max_size=50))
    assert plan.remap(ids) == [plan.old_to_new(i) for i in ids]
    unk = data.draw(st.sampled_from(plan.kept))
    any_ids = data.draw(st.lists(st.integers(0, plan.vocab_size - 1), max_size=50))
    expected = [
        plan.old_to_new(i) if plan.old_to_new(i) is not None else plan.old_to_new(unk)
        for i in any_ids
    ]
    assert plan.remap(any_ids, unk=unk) == expected


@given(
    plans(),
    st.one_of(st.none(), st.text(min_size=1, max_size=20)),
    st.dictionaries(st.text(max_size=5), st.one_of(st.integers(), st.text(max_size=5)), max_size=3),
)
def test_json_round_trip(plan: VocabPlan, fp: str | None, meta: dict[str, object]) -> None:
    plan = VocabPlan(plan.vocab_size, plan.kept, fp, meta)
    text = plan.to_json()
    back = VocabPlan.from_json(text)
    assert back == plan
    assert dict(back.metadata) == meta
    assert back.to_json() == text


@given(plans())
def test_equal_plans_give_identical_json_and_hash(plan: VocabPlan) -> None:
    twin = VocabPlan(plan.vocab_size, list(plan.kept), plan.fingerprint)
    assert twin == plan and hash(twin) == hash(plan)
    assert twin.to_json() == plan.to_json()


@given(plan_pairs())
def test_union_is_commutative_and_idempotent(pair: tuple[VocabPlan, VocabPlan]) -> None:
    a, b = pair
    assert a.union(b) == b.union(a)
    assert a.union(a) == a
    assert set(a.union(b).kept) == set(a.kept) | set(b.kept)


@given(st.data())
def test_union_is_associative(data: st.DataObject) -> None:
    size = data.draw(st.integers(1, 120))
    a, b, c = (data.draw(plans(size)) for _ in range(3))
    assert a.union(b).union(c) == a.union(b.union(c))


@given(st.data())
def test_then_agrees_with_remapping_twice(data: st.DataObject) -> None:
    first = data.draw(plans())
    assume(first.new_size > 0)
    second = data.draw(plans(first.new_size))
    both = first.then(second)
    survivors = [i for i in range(first.vocab_size) if both.old_to_new(i) is not None]
    assert survivors == list(both.kept)
    for old in first.kept:
        mid = first.old_to_new(old)
        assert mid is not None
        assert both.old_to_new(old) == second.old_to_new(mid)


@given(plans())
def test_identity_is_the_unit_of_then(plan: VocabPlan) -> None:
    assert VocabPlan.identity(plan.vocab_size, plan.fingerprint).then(plan) == plan
    if plan.new_size:
        assert plan.then(VocabPlan.identity(plan.new_size)) == plan


@given(st.data())
def test_from_counts_keeps_keep_and_thresholds_exactly(data: st.DataObject) -> None:
    size = data.draw(st.integers(1, 200))
    counts = data.draw(st.lists(st.integers(0, 6), min_size=size, max_size=size))
    keep = data.draw(st.sets(st.integers(0, size - 1), max_size=5))
    min_count = data.draw(st.integers(1, 7))
    plan = VocabPlan.from_counts(counts, vocab_size=size, keep=keep, min_count=min_count)
    expected = {i for i, c in enumerate(counts) if c >= min_count} | keep
    assert set(plan.kept) == expected
    sparse = {i: c for i, c in enumerate(counts) if c}
    assert VocabPlan.from_counts(sparse, vocab_size=size, keep=keep, min_count=min_count) == plan


@given(st.lists(st.lists(st.integers(0, 49), max_size=20), max_size=10), st.integers(1, 3))
def test_from_ids_counts_occurrences(seqs: list[list[int]], min_count: int) -> None:
    plan = VocabPlan.from_ids(seqs, vocab_size=50, min_count=min_count)
    flat = [i for s in seqs for i in s]
    assert set(plan.kept) == {i for i in set(flat) if flat.count(i) >= min_count}


@given(plans(), st.data())
def test_keeping_adds_exactly_the_given_ids(plan: VocabPlan, data: st.DataObject) -> None:
    ids = data.draw(st.lists(st.integers(0, plan.vocab_size - 1), max_size=10))
    grown = plan.keeping(ids)
    assert set(grown.kept) == set(plan.kept) | set(ids)
    assert grown.fingerprint == plan.fingerprint
    assert (grown is plan) == set(ids).issubset(plan.kept)
