"""The dropped-row normaliser against the naive ``torch.logsumexp(hidden @ rows.T + bias, -1)``.

Values and hidden-state gradients in float32, bfloat16 and float64, at and around chunk
boundaries, with no row and one row, more positions than rows per chunk, rows given as a full
weight with an index (views, gathers and mixed chunks), and the sampled estimate.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from fixtures.models import tiny_llama_lm
from vocab_adapters.stages.normaliser import (
    DroppedRows,
    SampledDropped,
    dropped_logsumexp_bf16,
    dropped_logsumexp_exact,
    dropped_logsumexp_sampled,
    matmul_dtype,
    sample_size,
)
from vocabcore import VocabError

# bfloat16 logits are rounded to 8 bits of mantissa by the matmul, in both implementations
TOLERANCE = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (1e-5, 1e-5),
    torch.bfloat16: (6e-2, 3e-2),
}


def _naive(
    hidden: torch.Tensor, rows: torch.Tensor, bias: torch.Tensor | None, weight_grad: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Value and hidden gradient of the naive formula, in float64 over the same inputs."""
    h = hidden.detach().double().requires_grad_(True)
    logits = h @ rows.double().T
    if bias is not None:
        logits = logits + bias.double()
    value = torch.logsumexp(logits, -1)
    value.backward(weight_grad.double())
    assert h.grad is not None
    return value.detach(), h.grad


def _case(
    positions: int, n: int, size: int, dtype: torch.dtype, seed: int, bias: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(positions, size, generator=g).to(dtype).requires_grad_(True)
    rows = (torch.randn(n, size, generator=g) / math.sqrt(size) * 3).to(dtype)
    b = torch.randn(n, generator=g) if bias else None
    upstream = torch.randn(positions, generator=g)
    return hidden, rows, b, upstream


def _check(
    out: torch.Tensor,
    hidden: torch.Tensor,
    rows: torch.Tensor,
    bias: torch.Tensor | None,
    upstream: torch.Tensor,
) -> None:
    rtol, atol = TOLERANCE[hidden.dtype]
    value, grad = _naive(hidden, rows, bias, upstream)
    torch.testing.assert_close(out.double(), value, rtol=rtol, atol=atol)
    out.backward(upstream.to(out.dtype))
    assert hidden.grad is not None and hidden.grad.dtype == hidden.dtype
    torch.testing.assert_close(hidden.grad.double(), grad, rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("n,chunk", [(64, 64), (64, 63), (64, 65), (65, 16), (100, 1), (7, 1000)])
def test_value_and_gradient_equal_the_naive_formula(dtype: torch.dtype, n: int, chunk: int) -> None:
    hidden, rows, bias, upstream = _case(9, n, 12, dtype, seed=n * 1000 + chunk)
    out = dropped_logsumexp_exact(hidden, rows, bias, chunk=chunk)
    assert out.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    _check(out, hidden, rows, bias, upstream)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_more_positions_than_rows_per_chunk_and_batched_shapes(dtype: torch.dtype) -> None:
    hidden, rows, bias, upstream = _case(2 * 3 * 50, 40, 8, dtype, seed=1)
    batched = hidden.detach().reshape(2, 3, 50, 8).requires_grad_(True)
    out = dropped_logsumexp_exact(batched, rows, bias, chunk=16)
    assert out.shape == (2, 3, 50)
    rtol, atol = TOLERANCE[dtype]
    value, grad = _naive(hidden, rows, bias, upstream)
    torch.testing.assert_close(out.reshape(-1).double(), value, rtol=rtol, atol=atol)
    out.backward(upstream.reshape(2, 3, 50).to(out.dtype))
    assert batched.grad is not None
    torch.testing.assert_close(batched.grad.reshape(-1, 8).double(), grad, rtol=rtol, atol=atol)


def test_without_bias() -> None:
    hidden, rows, _, upstream = _case(5, 30, 6, torch.float32, seed=2, bias=False)
    _check(dropped_logsumexp_exact(hidden, rows, chunk=7), hidden, rows, None, upstream)


def test_one_row_is_its_logit_and_its_gradient_is_the_row() -> None:
    hidden, rows, bias, _ = _case(4, 1, 6, torch.float64, seed=3)
    out = dropped_logsumexp_exact(hidden, rows, bias, chunk=8)
    assert bias is not None
    torch.testing.assert_close(out, (hidden @ rows.T).squeeze(1).detach() + bias.double())
    out.backward(torch.ones(4, dtype=torch.float64))
    assert hidden.grad is not None
    torch.testing.assert_close(hidden.grad, rows.expand(4, 6))


def test_no_rows_is_minus_infinity_with_a_zero_gradient() -> None:
    hidden = torch.randn(3, 5, requires_grad=True)
    out = dropped_logsumexp_exact(hidden, torch.empty(0, 5), chunk=4)
    assert out.shape == (3,) and bool(torch.isneginf(out).all())
    out.sum().backward()
    assert hidden.grad is not None and bool((hidden.grad == 0).all())


def test_extreme_logits_neither_overflow_nor_underflow() -> None:
    hidden = torch.tensor([[1.0], [-1.0]], requires_grad=True)
    rows = torch.tensor([[1000.0], [999.0], [-1000.0], [5.0]])
    upstream = torch.tensor([1.0, 2.0])
    out = dropped_logsumexp_exact(hidden, rows, chunk=1)
    assert bool(torch.isfinite(out).all())
    _check(out, hidden, rows, None, upstream)


def test_masked_out_positions_of_minus_infinity_bias_contribute_nothing() -> None:
    hidden, rows, bias, upstream = _case(6, 20, 4, torch.float32, seed=4)
    assert bias is not None
    bias[:10] = float("-inf")  # a whole first chunk of -inf: the running max stays -inf
    out = dropped_logsumexp_exact(hidden, rows, bias, chunk=10)
    _check(out, hidden, rows[10:], bias[10:], upstream)


@pytest.mark.parametrize("chunk", [1, 3, 4, 5, 64])
def test_rows_given_by_index_into_the_full_weight(chunk: int) -> None:
    # runs of consecutive rows (views) and scattered rows (gathered into a buffer) in one sweep
    hidden, weight, _, upstream = _case(7, 30, 5, torch.float32, seed=5)
    index = torch.tensor([0, 1, 2, 3, 7, 9, 10, 11, 12, 13, 20, 25, 29])
    bias = torch.randn(len(index))
    rows = DroppedRows(weight, index, bias)
    out = rows.logsumexp(hidden, chunk)
    _check(out, hidden, weight[index], bias, upstream)
    assert len(rows) == len(index)


def test_rows_moved_to_another_device_are_one_contiguous_copy() -> None:
    weight = torch.randn(10, 3)
    rows = DroppedRows(weight, torch.tensor([1, 4, 5]), torch.zeros(3))
    assert rows.to(torch.device("cpu")) is rows
    meta = rows.to(torch.device("meta"))
    assert meta.index is None and tuple(meta.weight.shape) == (3, 3)


def test_no_gradient_reaches_the_rows_and_no_graph_is_kept_without_grad() -> None:
    hidden, rows, bias, _ = _case(4, 9, 3, torch.float32, seed=6)
    rows.requires_grad_(True)
    dropped_logsumexp_exact(hidden, rows, bias, chunk=4).sum().backward()
    assert rows.grad is None
    with torch.no_grad():
        assert dropped_logsumexp_exact(hidden, rows, bias, chunk=4).grad_fn is None


def test_bad_arguments_are_refused_by_name() -> None:
    hidden, rows, bias, _ = _case(2, 4, 3, torch.float32, seed=7)
    with pytest.raises(VocabError, match="'chunk' must be a positive int"):
        dropped_logsumexp_exact(hidden, rows, bias, chunk=0)
    with pytest.raises(VocabError, match="'hidden' has size 2"):
        dropped_logsumexp_exact(hidden[:, :2], rows, bias)
    with pytest.raises(VocabError, match="one value per dropped row"):
        DroppedRows(rows, None, torch.zeros(3))
    with pytest.raises(VocabError, match="inside DroppedRows"):
        dropped_logsumexp_exact(hidden, DroppedRows(rows), bias)
    with pytest.raises(VocabError, match="'sample' must be a positive int"):
        dropped_logsumexp_sampled(hidden, DroppedRows(rows), 0)


def test_sampling_every_row_is_exact_and_a_sample_is_corrected_by_its_size() -> None:
    hidden, weight, bias, _ = _case(5, 50, 4, torch.float64, seed=8)
    rows = DroppedRows(weight, None, bias)
    exact = rows.logsumexp(hidden.detach())
    torch.testing.assert_close(SampledDropped(rows, 50).logsumexp(hidden.detach()), exact)
    # identical rows: any sample of m rows estimates the sum exactly once scaled by n / m
    same = DroppedRows(weight[:1].expand(50, 4).contiguous(), None, None)
    g = torch.Generator().manual_seed(0)
    estimate = dropped_logsumexp_sampled(hidden.detach(), same, 7, generator=g)
    torch.testing.assert_close(estimate, same.logsumexp(hidden.detach()))


def test_the_sampled_estimate_is_unbiased_in_the_exponent() -> None:
    hidden, weight, bias, _ = _case(3, 40, 4, torch.float64, seed=9)
    index = torch.arange(0, 40, 2)
    rows = DroppedRows(weight, index, None if bias is None else bias[index])
    g = torch.Generator().manual_seed(1)
    draws = torch.stack(
        [SampledDropped(rows, 5, g).logsumexp(hidden.detach()) for _ in range(4000)]
    )
    mean_of_sums = torch.logsumexp(draws, 0) - math.log(len(draws))
    torch.testing.assert_close(mean_of_sums, rows.logsumexp(hidden.detach()), rtol=0, atol=0.05)


@pytest.mark.parametrize("index", [None, torch.tensor([0, 2, 3, 4, 5, 9, 11, 12])])
def test_bfloat16_matmuls_approximate_the_float32_normaliser(index: torch.Tensor | None) -> None:
    hidden, weight, _, upstream = _case(6, 14, 32, torch.float32, seed=10)
    selected = weight if index is None else weight[index]
    bias = torch.randn(len(selected))
    rows = DroppedRows(weight, index, bias)
    out = dropped_logsumexp_bf16(hidden, rows, chunk=3)
    assert out.dtype == torch.float32
    value, grad = _naive(hidden, selected, bias, upstream)
    torch.testing.assert_close(out.double(), value, rtol=0, atol=0.05)
    out.backward(upstream)
    assert hidden.grad is not None and hidden.grad.dtype == torch.float32
    torch.testing.assert_close(hidden.grad.double(), grad, rtol=0.05, atol=0.02)
    assert not torch.equal(out.detach().double(), value)  # it is an approximation


def test_normaliser_names_are_checked() -> None:
    assert matmul_dtype("exact") is None and matmul_dtype("bfloat16") is torch.bfloat16
    with pytest.raises(VocabError, match="'normaliser' must be 'exact', 'bfloat16' or 'sampled:M'"):
        matmul_dtype("sampled")
    assert sample_size("sampled:1/8", 100) == 12 and sample_size("sampled:1/1000", 100) == 1
    assert sample_size("sampled:64", 100) == 64 and sample_size("bfloat16", 100) is None
    for bad in ("sampled:", "sampled:0", "sampled:1/0", "sampled:x", "sampled:-3"):
        with pytest.raises(VocabError, match="needs M, a positive row count, or 1/K"):
            sample_size(bad, 100)


def _tiny_llama() -> Any:
    return tiny_llama_lm(300, tied=True, seed=0)


@pytest.mark.parametrize("normaliser", ["bfloat16", "sampled:1/2", "sampled:40"])
def test_a_model_reduced_with_an_approximate_normaliser_trains_near_the_full_loss(
    normaliser: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import copy

    from vocab_adapters import apply_plan, revert_plan
    from vocab_adapters.stages import softmax as stage
    from vocabcore import VocabPlan

    model = _tiny_llama()
    ids = torch.randint(0, 300, (2, 24), generator=torch.Generator().manual_seed(1))
    expected = float(copy.deepcopy(model)(input_ids=ids, labels=ids).loss.detach())
    plan = VocabPlan.from_ids(ids.tolist(), vocab_size=300, keep=(0, 1, 2))
    monkeypatch.setattr(stage, "DEFAULT_CHUNK_ROWS", 40)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    applied = apply_plan(
        plan, model=model, optimizer=optimizer, softmax="shifted", normaliser=normaliser
    )
    small = torch.tensor([plan.remap(row) for row in ids.tolist()])
    with torch.no_grad():  # without gradients the sampled normaliser is exact
        exact = float(model(input_ids=small, labels=small).loss)
    assert abs(exact - expected) < (1e-5 if normaliser.startswith("sampled") else 0.02)
    losses = [float(model(input_ids=small, labels=small).loss.detach()) for _ in range(2)]
    if normaliser.startswith("sampled"):  # a fresh draw per call
        assert losses[0] != losses[1]
    loss = model(input_ids=small, labels=small).loss
    assert abs(float(loss) - expected) < 0.05
    loss.backward()
    shift = model.get_output_embeddings().vocab_shift
    assert shift.grad is not None and bool((shift.grad != 0).any())
    optimizer.step()
    revert_plan(applied, optimizer=optimizer)
    assert model.get_output_embeddings().weight.shape[0] == 300


@pytest.mark.parametrize(
    ("softmax", "normaliser", "message"),
    [
        ("shifted", "fast", "'normaliser' must be"),
        ("shifted", "sampled:0", "needs M, a positive row count, or 1/K"),
        ("reduced", "sampled:8", "applies to softmax='full' or 'shifted' only"),
    ],
)
def test_a_bad_normaliser_is_refused_before_anything_changes(
    softmax: str, normaliser: str, message: str
) -> None:
    from vocab_adapters import VocabReductionCallback, apply_plan, reduced_vocab
    from vocabcore import VocabPlan

    model = _tiny_llama()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plan = VocabPlan.from_ids([[5, 6, 7]], vocab_size=300, keep=(0, 1, 2))
    with pytest.raises(VocabError, match=message):
        apply_plan(plan, model=model, softmax=softmax, normaliser=normaliser)
    with (
        pytest.raises(VocabError, match=message),
        reduced_vocab(model, plan=plan, softmax=softmax, normaliser=normaliser),
    ):
        pass
    with pytest.raises(VocabError, match=message):
        VocabReductionCallback(plan, softmax=softmax, normaliser=normaliser)
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], v) for k, v in before.items())
