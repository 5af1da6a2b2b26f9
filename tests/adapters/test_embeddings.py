"""Embeddings adapter: forward equality, exact round trips, ties, in-place changes, faults."""

from __future__ import annotations

import copy
import warnings
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from fixtures.models import TINY_MODEL_NAMES, TinyModel, remap, sample_batch
from vocab_adapters.stages import embeddings
from vocab_adapters.stages.embeddings import ParamSwap, VocabSizedTensorWarning
from vocabcore import PlanMismatchError, VocabError, VocabPlan

cuda = pytest.mark.cuda
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def snapshot(model: nn.Module) -> dict[str, Any]:
    """Everything apply may touch: tensors (by value and identity) and size attributes."""
    tensors = {
        name: (t, t.detach().clone())
        for name, t in [
            *model.named_parameters(remove_duplicate=False),
            *model.named_buffers(remove_duplicate=False),
        ]
    }
    attrs = {
        (name, attr): getattr(module, attr)
        for name, module in model.named_modules(remove_duplicate=False)
        for attr in ("num_embeddings", "padding_idx", "out_features", "max_norm")
        if hasattr(module, attr)
    }
    grads = {name: t.requires_grad for name, t in model.named_parameters()}
    return {"tensors": tensors, "attrs": attrs, "grads": grads}


def assert_unchanged(model: nn.Module, before: dict[str, Any]) -> None:
    after = snapshot(model)
    assert after["tensors"].keys() == before["tensors"].keys()
    for name, (tensor, value) in before["tensors"].items():
        now, _ = after["tensors"][name]
        if isinstance(tensor, nn.Parameter):
            assert now is tensor, f"{name} is not the original Parameter object"
        assert now.dtype == value.dtype and now.device == value.device, name
        assert torch.equal(now, value), f"{name} changed"
    assert after["attrs"] == before["attrs"]
    assert after["grads"] == before["grads"]


def assert_scores_equal(reduced: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal up to matmul rounding: a head with fewer rows may take another GEMM path."""
    torch.testing.assert_close(reduced, expected, rtol=1e-6, atol=1e-6)


def logits(tiny: TinyModel, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = tiny.model(**tiny.inputs(ids))
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def tied(model: nn.Module) -> bool:
    out = model.get_output_embeddings()
    return out is not None and out.weight is model.get_input_embeddings().weight


@pytest.mark.parametrize("name", TINY_MODEL_NAMES)
def test_forward_equality_and_round_trip(make_tiny_model: Any, name: str) -> None:
    tiny = make_tiny_model(name)
    model = tiny.model
    ids, plan = sample_batch(tiny, seed=1)
    before = snapshot(model)
    was_tied = tied(model)
    reference = logits(tiny, ids)
    with torch.no_grad():
        hidden = model(**tiny.inputs(ids), output_hidden_states=True)

    applied = embeddings.apply(plan, model)
    assert applied.tied == was_tied
    assert tied(model) == was_tied
    assert model.get_input_embeddings().num_embeddings == plan.new_size
    new_ids = remap(plan, ids)
    reduced = logits(tiny, new_ids)
    kept = torch.tensor(plan.kept)
    if tiny.kind == "token_classification":
        assert torch.equal(reduced, reference)
    else:
        assert_scores_equal(reduced, reference.index_select(-1, kept))
    with torch.no_grad():
        hidden_reduced = model(**tiny.inputs(new_ids), output_hidden_states=True)
    for key in ("hidden_states", "encoder_hidden_states", "decoder_hidden_states"):
        for a, b in zip(hidden.get(key) or (), hidden_reduced.get(key) or (), strict=True):
            assert torch.equal(a, b), key

    applied.revert()
    assert_unchanged(model, before)
    assert tied(model) == was_tied
    assert torch.equal(logits(tiny, ids), reference)


@pytest.mark.parametrize("name", TINY_MODEL_NAMES)
def test_training_writes_kept_rows_back(make_tiny_model: Any, name: str) -> None:
    tiny = make_tiny_model(name)
    model = tiny.model.train()
    ids, plan = sample_batch(tiny, seed=2)
    before = snapshot(model)
    was_tied = tied(model)
    applied = embeddings.apply(plan, model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(2):
        model(**tiny.inputs(remap(plan, ids))).logits.float().pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    trained = [swap.reduced.detach().clone() for swap in applied.swaps]
    applied.revert()

    kept = torch.tensor(plan.kept)
    for swap, rows in zip(applied.swaps, trained, strict=True):
        original = before["tensors"][_name_of(model, swap.full)][1]
        dropped = torch.ones(original.shape[0], dtype=torch.bool)
        dropped[kept] = False
        assert torch.equal(swap.full.detach()[kept], rows)
        assert torch.equal(swap.full.detach()[dropped], original[dropped])
        assert not torch.equal(swap.full.detach()[kept], original[kept])
    assert model.get_input_embeddings().weight is before["tensors"][_emb_name(model)][0]
    assert tied(model) == was_tied
    assert set(model.state_dict()) == {k for k in before["tensors"] if k in model.state_dict()}


def _out_weight(model: nn.Module) -> Any:
    out = model.get_output_embeddings()
    return None if out is None else out.weight


def _name_of(model: nn.Module, tensor: torch.Tensor) -> str:
    for name, t in model.named_parameters(remove_duplicate=False):
        if t is tensor:
            return name
    raise AssertionError("not in the model")


def _emb_name(model: nn.Module) -> str:
    return _name_of(model, model.get_input_embeddings().weight)


@pytest.mark.parametrize("name", ["bert-mlm", "bart-cg", "t5-v1_1"])
def test_rollback_is_exact(make_tiny_model: Any, name: str) -> None:
    tiny = make_tiny_model(name)
    _, plan = sample_batch(tiny, seed=3)
    before = snapshot(tiny.model)
    applied = embeddings.prepare(plan, tiny.model).commit()
    applied.rollback()
    assert_unchanged(tiny.model, before)
    with pytest.raises(VocabError, match="already rolled back"):
        applied.revert()


def test_revert_twice_raises(make_tiny_model: Any) -> None:
    tiny = make_tiny_model("bert-mlm")
    applied = embeddings.apply(sample_batch(tiny, seed=4)[1], tiny.model)
    applied.revert()
    with pytest.raises(VocabError, match="already reverted"):
        applied.revert()


def test_t5_padding_rows_dropped_and_restored(make_tiny_model: Any) -> None:
    tiny = make_tiny_model("t5-v1_0")
    rows = tiny.model.get_input_embeddings().weight.shape[0]
    assert rows > tiny.vocab_size
    plan = VocabPlan.identity(tiny.vocab_size)
    before = snapshot(tiny.model)
    applied = embeddings.apply(plan, tiny.model)
    assert tiny.model.shared.weight.shape[0] == tiny.vocab_size
    assert tiny.model.lm_head.out_features == tiny.vocab_size
    applied.revert()
    assert_unchanged(tiny.model, before)


def test_untied_t5_v1_1_head_sliced_separately(make_tiny_model: Any) -> None:
    tiny = make_tiny_model("t5-v1_1")
    _, plan = sample_batch(tiny, seed=5)
    head = tiny.model.lm_head.weight
    applied = embeddings.apply(plan, tiny.model)
    assert not applied.tied and len(applied.swaps) == 2
    assert tiny.model.lm_head.weight is not tiny.model.shared.weight
    assert torch.equal(tiny.model.lm_head.weight, head.detach()[list(plan.kept)])
    applied.revert()
    assert tiny.model.lm_head.weight is head


def test_plan_larger_than_embedding_is_a_mismatch(make_tiny_model: Any) -> None:
    tiny = make_tiny_model("bert-mlm")
    before = snapshot(tiny.model)
    with pytest.raises(PlanMismatchError, match="fewer than the plan's vocab_size 300"):
        embeddings.prepare(VocabPlan.identity(300), tiny.model)
    assert_unchanged(tiny.model, before)


@pytest.mark.parametrize(("name", "pad"), [("roberta-mlm", 1), ("bart-cg", 1), ("bert-mlm", 0)])
def test_padding_idx_remapped_or_refused(make_tiny_model: Any, name: str, pad: int) -> None:
    tiny = make_tiny_model(name)
    model = tiny.model
    keep = sorted({*range(pad + 1), *range(pad + 5, 40)})
    plan = VocabPlan(tiny.vocab_size, keep)
    applied = embeddings.apply(plan, model)
    for module in model.modules():
        if isinstance(module, nn.Embedding) and module.num_embeddings == plan.new_size:
            assert module.padding_idx == plan.old_to_new(pad)
    applied.revert()
    assert model.get_input_embeddings().padding_idx == pad

    before = snapshot(model)
    dropping = VocabPlan(tiny.vocab_size, [i for i in keep if i != pad])
    with pytest.raises(VocabError, match=rf"padding_idx {pad} is an id the plan drops.*keep="):
        embeddings.prepare(dropping, model)
    assert_unchanged(model, before)


def test_plain_embedding_padding_idx_is_remapped() -> None:
    model = _ExtraVocabModel()
    model.emb.padding_idx = 7
    del model.other, model.scale
    applied = embeddings.apply(VocabPlan(50, [3, 7, 9]), model)
    assert model.emb.padding_idx == 1
    applied.revert()
    assert model.emb.padding_idx == 7


@pytest.mark.parametrize("name", ["roberta-mlm", "xlmr-mlm"])
def test_position_numbering_pad_must_keep_its_value(make_tiny_model: Any, name: str) -> None:
    tiny = make_tiny_model(name)
    before = snapshot(tiny.model)
    with pytest.raises(VocabError, match=r"numbers positions.*keep=\(0, 1\)"):
        embeddings.prepare(VocabPlan(tiny.vocab_size, [1, 2, 3]), tiny.model)
    assert_unchanged(tiny.model, before)


def test_module_class_hooks_and_flags_kept(make_tiny_model: Any) -> None:
    tiny = make_tiny_model("bart-cg")
    model = tiny.model
    model.enable_input_require_grads()
    calls: list[int] = []
    emb = (
        model.model.encoder.embed_tokens
    )  # a BartScaledWordEmbedding sharing model.shared's weight
    emb.register_forward_hook(lambda module, args, out: calls.append(out.shape[-1]))
    emb.max_norm = 10.0
    cls = type(emb)
    hooks = len(emb._forward_hooks)
    ids, plan = sample_batch(tiny, seed=6)
    applied = embeddings.apply(plan, model)
    assert type(model.model.encoder.embed_tokens) is cls and model.model.encoder.embed_tokens is emb
    assert emb.weight is model.get_input_embeddings().weight
    assert emb.max_norm == 10.0
    out = model(**tiny.inputs(remap(plan, ids)))
    assert calls and out.logits.shape[-1] == plan.new_size
    applied.revert()
    assert emb.max_norm == 10.0 and len(emb._forward_hooks) == hooks


def test_frozen_stays_frozen(make_tiny_model: Any) -> None:
    tiny = make_tiny_model("bert-tokcls")
    weight = tiny.model.get_input_embeddings().weight
    weight.requires_grad_(False)
    ids, plan = sample_batch(tiny, seed=7)
    applied = embeddings.apply(plan, tiny.model)
    assert not tiny.model.get_input_embeddings().weight.requires_grad
    tiny.model(**tiny.inputs(remap(plan, ids))).logits.sum().backward()
    applied.revert()
    assert tiny.model.get_input_embeddings().weight is weight and not weight.requires_grad


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_weights(make_tiny_model: Any, dtype: torch.dtype) -> None:
    tiny = make_tiny_model("gpt2-lm")
    tiny.model.to(dtype)
    ids, plan = sample_batch(tiny, seed=8)
    before = snapshot(tiny.model)
    reference = logits(tiny, ids)
    applied = embeddings.apply(plan, tiny.model)
    assert tiny.model.lm_head.weight.dtype == dtype
    assert_scores_equal(logits(tiny, remap(plan, ids)), reference[..., list(plan.kept)])
    applied.revert()
    assert_unchanged(tiny.model, before)


def test_model_cast_while_reduced(make_tiny_model: Any) -> None:
    """A model cast after apply gets its full weights back in the new dtype."""
    tiny = make_tiny_model("bert-mlm")
    _, plan = sample_batch(tiny, seed=9)
    original = tiny.model.get_input_embeddings().weight
    applied = embeddings.apply(plan, tiny.model)
    tiny.model.half()
    applied.revert()
    weight = tiny.model.get_input_embeddings().weight
    assert weight is original and weight.dtype == torch.float16
    assert tiny.model.cls.predictions.bias.dtype == torch.float16


def test_replaced_embedding_refuses_revert(make_tiny_model: Any) -> None:
    tiny = make_tiny_model("bert-mlm")
    _, plan = sample_batch(tiny, seed=10)
    applied = embeddings.apply(plan, tiny.model)
    tiny.model.resize_token_embeddings(plan.new_size + 3)
    with pytest.raises(VocabError, match="replaced or resized"):
        applied.check_revert()
    with pytest.raises(VocabError, match="replaced or resized"):
        applied.revert()


class _ExtraVocabModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 4)
        self.head = nn.Linear(4, 50)
        self.other = nn.Embedding(50, 3)  # some unrelated table of the vocabulary's size
        self.scale = nn.Parameter(torch.ones(50, 2))

    def get_input_embeddings(self) -> nn.Module:
        return self.emb

    def get_output_embeddings(self) -> nn.Module:
        return self.head


def test_unknown_vocab_sized_tensors_are_named_in_a_warning() -> None:
    model = _ExtraVocabModel()
    plan = VocabPlan(50, range(0, 50, 2))
    with pytest.warns(VocabSizedTensorWarning) as record:
        prepared = embeddings.prepare(plan, model)
    assert "other.weight" in str(record[0].message) and "scale" in str(record[0].message)
    assert set(prepared.sliced) == {"emb.weight", "head.weight", "head.bias"}
    applied = prepared.commit()
    assert model.other.weight.shape[0] == 50 and model.head.bias.shape[0] == 25
    applied.revert()


class _QuantizedLike(nn.Parameter):
    pass


def test_fault_injection_leaves_model_unchanged(make_tiny_model: Any) -> None:
    tiny = make_tiny_model("bert-mlm")
    model = tiny.model
    _, plan = sample_batch(tiny, seed=11)
    before = snapshot(model)
    with pytest.raises(VocabError, match="offload"):
        embeddings.prepare(plan, model, offload="disk")
    with pytest.raises(VocabError, match="keeps no ids"):
        embeddings.prepare(VocabPlan(tiny.vocab_size, ()), model)
    with pytest.raises(VocabError, match="get_input_embeddings"):
        embeddings.prepare(plan, nn.Linear(3, 3))
    assert_unchanged(model, before)

    weird = make_tiny_model("bert-tokcls").model
    emb = weird.get_input_embeddings()
    emb.weight = _QuantizedLike(emb.weight.detach().clone())
    weird_before = snapshot(weird)
    with pytest.raises(VocabError, match="apply the plan before quantizing"):
        embeddings.prepare(plan, weird)
    assert_unchanged(weird, weird_before)

    # A failure between two assignments of commit is rolled back exactly by rollback().
    prepared = embeddings.prepare(plan, model)
    applied = prepared.commit()
    applied.rollback()
    assert_unchanged(model, before)


def test_param_swaps_describe_the_slicing(make_tiny_model: Any) -> None:
    tiny = make_tiny_model("bert-mlm")
    _, plan = sample_batch(tiny, seed=12)
    prepared = embeddings.prepare(plan, tiny.model)
    assert all(isinstance(s, ParamSwap) for s in prepared.swaps)
    for swap in prepared.swaps:
        assert swap.index.dtype == torch.long and swap.index.tolist() == list(plan.kept)
        assert torch.equal(swap.reduced, swap.full.index_select(swap.dim, swap.index))


def test_deepcopy_of_reduced_model_keeps_ties(make_tiny_model: Any) -> None:
    tiny = make_tiny_model("distilbert-mlm")
    _, plan = sample_batch(tiny, seed=13)
    applied = embeddings.apply(plan, tiny.model)
    clone = copy.deepcopy(tiny.model)
    assert clone.vocab_projector.weight is clone.get_input_embeddings().weight
    applied.revert()


@settings(max_examples=15, deadline=None)
@given(st.sets(st.integers(0, 210), min_size=1), st.integers(0, 2**16))
def test_forward_equality_property(kept: set[int], seed: int) -> None:
    from fixtures.models import build_tiny_model

    tiny = build_tiny_model("roberta-mlm")
    plan = VocabPlan(tiny.vocab_size, sorted(kept | {0, 1}))
    generator = torch.Generator().manual_seed(seed)
    pool = torch.tensor(plan.kept)
    ids = pool[torch.randint(len(pool), (1, 7), generator=generator)]
    reference = logits(tiny, ids)
    before = snapshot(tiny.model)
    applied = embeddings.apply(plan, tiny.model)
    assert_scores_equal(logits(tiny, remap(plan, ids)), reference[..., pool])
    applied.revert()
    assert_unchanged(tiny.model, before)


def test_minilm_hidden_states_equal(minilm: TinyModel) -> None:
    model = minilm.model
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, minilm.vocab_size, (2, 16), generator=generator)
    ids[:, 0] = 101
    plan = VocabPlan.from_ids(ids.tolist(), vocab_size=minilm.vocab_size, keep=(0, 100, 101, 102))
    before = snapshot(model)
    with torch.no_grad():
        reference = model(input_ids=ids).last_hidden_state
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        applied = embeddings.apply(plan, model)
    assert model.embeddings.word_embeddings.weight.shape[0] == plan.new_size
    with torch.no_grad():
        assert torch.equal(model(input_ids=remap(plan, ids)).last_hidden_state, reference)
    applied.revert()
    assert_unchanged(model, before)


@cuda
@needs_cuda
@pytest.mark.parametrize("offload", [None, "cpu"])
@pytest.mark.parametrize("name", ["bert-mlm", "t5-v1_1", "bart-cg"])
def test_cuda_round_trip(make_tiny_model: Any, name: str, offload: str | None) -> None:
    tiny = make_tiny_model(name)
    model = tiny.model.cuda()
    ids, plan = sample_batch(tiny, seed=14)
    ids = ids.cuda()
    before = snapshot(model)
    reference = logits(tiny, ids)
    applied = embeddings.apply(plan, model, offload=offload)
    for swap in applied.swaps:
        assert swap.index.is_cuda and swap.reduced.is_cuda
        assert swap.full.device.type == ("cpu" if offload else "cuda")
    new_ids = remap(plan, ids.cpu()).cuda()
    assert_scores_equal(logits(tiny, new_ids), reference[..., torch.tensor(plan.kept).cuda()])
    applied.revert()
    assert_unchanged(model, before)
    assert model.get_input_embeddings().weight.is_cuda
