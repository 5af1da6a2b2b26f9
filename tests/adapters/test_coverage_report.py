"""coverage(): exact comparison of full and reduced encodings; the tokenizer is left unchanged;
coverage_curve(): one-pass budget estimates that agree with coverage() on real plans."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from tokenizers import Tokenizer

from fixtures.fast_tokenizers import FAST_TOKENIZER_NAMES, copy_tokenizer
from vocab_adapters import CoverageReport, count_tokens, coverage, plan_from_texts
from vocab_adapters.reports.coverage_report import coverage_curve, plot_coverage
from vocab_adapters.tokenization.tokenizer_backend import fingerprint
from vocabcore import VocabError, VocabPlan


def _naive(plan: VocabPlan, tok: Tokenizer, texts: list[str]) -> dict[str, Any]:
    """The report computed the slow, obvious way: two tokenizers side by side."""
    from vocab_adapters import apply_plan, revert_plan

    reduced_tok = copy_tokenizer(tok)
    full = [tok.encode(t, add_special_tokens=False).ids for t in texts]
    applied = apply_plan(plan, tokenizer=reduced_tok)
    reduced = [reduced_tok.encode(t, add_special_tokens=False).ids for t in texts]
    unk_token = tok.model.unk_token if hasattr(tok.model, "unk_token") else None
    unk = reduced_tok.token_to_id(unk_token) if unk_token else None
    if hasattr(tok.model, "unk_id") or type(tok.model).__name__ == "Unigram":
        unk = reduced_tok.token_to_id("<unk>")
    revert_plan(applied)
    identical = 0
    for f, r in zip(full, reduced, strict=True):
        if all(plan.is_kept(i) for i in f) and plan.remap(f) == r:
            identical += 1
    n_full, n_reduced = sum(map(len, full)), sum(map(len, reduced))
    return {
        "texts": len(texts),
        "tokens_full": n_full,
        "tokens_reduced": n_reduced,
        "identical_fraction": identical / len(texts),
        "unk_fraction": sum(i == unk for r in reduced for i in r) / n_reduced,
        "tokens_growth": n_reduced / n_full - 1,
    }


@pytest.fixture(params=FAST_TOKENIZER_NAMES)
def family(request: pytest.FixtureRequest, trained_tokenizers: dict[str, Tokenizer]) -> Any:
    return request.param, copy_tokenizer(trained_tokenizers[request.param])


def test_report_matches_naive_and_changes_nothing(family: Any, corpus_texts: list[str]) -> None:
    name, tok = family
    train, held = corpus_texts[::2], corpus_texts[1::2]
    plan = plan_from_texts(tok, train, max_size=plan_from_texts(tok, []).new_size + 200)
    before = (tok.to_str(), fingerprint(tok), [e.ids for e in tok.encode_batch(held)])
    padding = tok.padding

    report = coverage(plan, tok, held)

    assert isinstance(report, CoverageReport)
    assert attrs.asdict(report) == pytest.approx(_naive(plan, tok, held)), name
    assert report.to_dict() == attrs.asdict(report)
    assert 0 < report.identical_fraction < 1
    assert report.tokens_growth >= 0
    assert (tok.to_str(), fingerprint(tok), [e.ids for e in tok.encode_batch(held)]) == before
    assert tok.padding == padding
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        report.texts = 0  # type: ignore[misc]


def test_plan_of_the_texts_is_identical(hf_trained_tokenizers: dict[str, Any], corpus_texts):  # type: ignore[no-untyped-def]
    for name, tok in hf_trained_tokenizers.items():
        plan = plan_from_texts(tok, corpus_texts)
        report = coverage(plan, tok, corpus_texts)
        assert report.identical_fraction == 1.0, name
        assert report.tokens_growth == 0.0 and report.tokens_full == report.tokens_reduced
        # no post-processor specials counted
        ids = tok(corpus_texts, add_special_tokens=False)["input_ids"]
        assert report.tokens_full == sum(map(len, ids))


def test_slow_tokenizer_left_unchanged(slow_cases: Any, slow_plan_texts: list[str]) -> None:
    tok = slow_cases["xlmr_unigram"].make()
    plan = plan_from_texts(tok, slow_plan_texts[::2], max_size=300)
    before = (tok.get_vocab(), [tok(t)["input_ids"] for t in slow_plan_texts])
    report = coverage(plan, tok, slow_plan_texts)
    assert 0 < report.identical_fraction < 1 and report.unk_fraction >= 0
    assert (tok.get_vocab(), [tok(t)["input_ids"] for t in slow_plan_texts]) == before


def test_bad_input(wordpiece_tokenizer: Tokenizer) -> None:
    plan = plan_from_texts(wordpiece_tokenizer, ["a b"])
    with pytest.raises(VocabError, match="not a single str"):
        coverage(plan, wordpiece_tokenizer, "a b")
    with pytest.raises(VocabError, match="must hold str"):
        coverage(plan, wordpiece_tokenizer, [("a", "b")])
    with pytest.raises(VocabError, match="VocabPlan"):
        coverage(None, wordpiece_tokenizer, ["a"])  # type: ignore[arg-type]


def test_curve_agrees_with_coverage_at_each_budget(family: Any, corpus_texts: list[str]) -> None:
    """Identical fraction is exact; tokens growth an estimate close to the real one."""
    name, tok = family
    held = corpus_texts[1::2]
    curve = coverage_curve(tok, held, points=6)
    assert list(curve.sizes) == sorted(curve.sizes)
    assert list(curve.identical_fraction) == sorted(curve.identical_fraction)
    assert curve.identical_fraction[-1] == 1.0 and curve.tokens_growth[-1] == 0.0
    for size, identical, growth in zip(
        curve.sizes[1:-1], curve.identical_fraction[1:-1], curve.tokens_growth[1:-1], strict=True
    ):
        plan = plan_from_texts(tok, held, max_size=size)
        assert plan.new_size == size
        report = coverage(plan, tok, held)
        assert report.identical_fraction == pytest.approx(identical), (name, size)
        # WordPiece turns a whole word into unk where the estimate splits the token
        tolerance = 0.15 if name == "wordpiece" else 0.02 + 0.1 * report.tokens_growth
        assert abs(report.tokens_growth - growth) <= tolerance, (name, size)


def test_plot_writes_png(wordpiece_tokenizer: Tokenizer, corpus_texts: list[str], tmp_path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("matplotlib")
    train, held = corpus_texts[::2], corpus_texts[1::2]
    plan = plan_from_texts(wordpiece_tokenizer, train, max_size=600)
    report = coverage(plan, wordpiece_tokenizer, held)
    # ordered by the plan's ids first, the curve passes through the plan exactly
    curve = coverage_curve(wordpiece_tokenizer, held, extra_sizes=[plan.new_size], prefer=plan)
    at = curve.sizes.index(plan.new_size)
    assert curve.identical_fraction[at] == pytest.approx(report.identical_fraction)
    # ordered by the training counts: the curve's plans are plan_from_texts(train, max_size=N)
    order = count_tokens(wordpiece_tokenizer, train)
    by_train = coverage_curve(wordpiece_tokenizer, held, extra_sizes=[600], order=order)
    assert by_train.identical_fraction[by_train.sizes.index(plan.new_size)] == pytest.approx(
        report.identical_fraction
    )
    out = plot_coverage(curve, tmp_path / "c.png", chosen=(plan.new_size, report), title="t")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
