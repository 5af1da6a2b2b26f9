"""Revert composes: each stage owns its final state, whatever the options and the stage order.

keep_added with every softmax mode, keep_added on models without padding rows (every
vocabulary-sized attribute grows), the caller's logits with a full softmax, offload reaching
every stage that holds full-size data, the normaliser's frozen rows moved once, the user's
exception kept by ``reduced_vocab``, a failed revert that leaves the held tensors untouched,
and a revert whose result does not depend on ``session.STAGES``.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import sys
from typing import Any

import pytest
import torch

from fixtures.fast_tokenizers import build_corpus, wrap_hf
from fixtures.llm_models import LLM_CASES, build_llm_case
from fixtures.tiny_bert import tiny_bert
from vocab_adapters import apply_plan, plan_from_texts, reduced_vocab, revert_plan, session
from vocab_adapters.stages import fast_tokenizer as fast_tokenizer_adapter
from vocab_adapters.stages import optimizer as optimizer_adapter
from vocab_adapters.stages import softmax as softmax_adapter
from vocabcore import VocabError, VocabPlan

TEXTS = slice(0, 400)


@pytest.fixture
def hf_wordpiece(trained_tokenizers: dict[str, Any]) -> Any:
    return wrap_hf("wordpiece", trained_tokenizers["wordpiece"])


def _bert(tok: Any, rows: int | None = None) -> Any:
    model = tiny_bert(rows or len(tok), seed=1, hidden_dropout_prob=0.0)
    with torch.no_grad():
        model.cls.predictions.bias.normal_(generator=torch.Generator().manual_seed(2))
    return model


def _step(model: Any, optimizer: Any, ids: list[list[int]]) -> None:
    batch = torch.tensor(ids)
    loss = model(input_ids=batch, labels=batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()


def _skip_unmasked_per_layer(name: str) -> None:
    """transformers 4's ``Gemma3nTextModel`` indexes its per-layer table with every id.

    Ids at or beyond ``vocab_size_per_layer_input`` raise ``IndexError`` there (the original
    model's too); transformers 5 maps them to row 0. Added tokens' ids are beyond the table.
    """
    import transformers

    if name == "gemma3n" and int(transformers.__version__.split(".")[0]) < 5:
        pytest.skip("transformers 4's Gemma3nTextModel cannot take ids beyond its per-layer table")


def _dropped(plan: VocabPlan) -> list[int]:
    return sorted(set(range(plan.vocab_size)) - set(plan.kept))


# -- 1. keep_added with softmax="shifted": the dropped rows get the trained shift ----------------


@pytest.mark.parametrize("padding", [0, 20])
def test_keep_added_with_shifted_softmax_moves_the_dropped_rows(
    padding: int, hf_wordpiece: Any, corpus_texts: list[str]
) -> None:
    texts = corpus_texts[TEXTS]
    size = len(hf_wordpiece)
    model = _bert(hf_wordpiece, size + padding)
    plan = plan_from_texts(hf_wordpiece, texts, add_tokens=4)
    weight = model.get_input_embeddings().weight
    before = weight.detach().clone()
    bias_before = model.cls.predictions.bias.detach().clone()
    applied = apply_plan(plan, model=model, tokenizer=hf_wordpiece, softmax="shifted")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids = hf_wordpiece(" ".join(plan.added) + " " + texts[2])["input_ids"][:40]
    _step(model, optimizer, [ids])
    head = model.get_output_embeddings()
    shift = getattr(head, softmax_adapter.SHIFT).detach().clone()
    shift_bias = getattr(head, softmax_adapter.SHIFT_BIAS).detach().clone()
    assert bool((shift != 0).any()) and bool((shift_bias != 0).any())
    reduced = model.get_input_embeddings().weight.detach().clone()

    revert_plan(applied, keep_added=True, optimizer=optimizer)

    emb = model.get_input_embeddings().weight
    assert emb is weight and emb.shape[0] == max(size + padding, size + len(plan.added))
    dropped = _dropped(plan)
    assert torch.equal(emb[dropped], before[dropped] + shift)  # as a plain revert moves them
    bias = model.cls.predictions.bias
    assert torch.equal(bias[dropped], bias_before[dropped] + shift_bias)
    n = len(plan.kept)
    assert torch.equal(emb[list(plan.kept)], reduced[:n])
    positions = list(range(size, size + len(plan.added)))
    assert torch.equal(emb[positions], reduced[n:])  # added rows as trained, not shifted
    assert len(hf_wordpiece) == size + len(plan.added)


# -- 2. keep_added without padding rows: every vocabulary-sized attribute grows ------------------


def _vocab_sizes(model: Any) -> dict[str, int]:
    sizes = {}
    for path, module in model.named_modules():
        for name in ("vocab_size", "num_embeddings", "out_features", "vocab_size_per_layer_input"):
            value = vars(module).get(name)
            if isinstance(value, int) and not isinstance(value, bool):
                sizes[f"{path}.{name}"] = value
    return sizes


@pytest.mark.parametrize(
    ("name", "shape"), [("qwen3-moe", "qwen2"), ("gemma3", "gemma"), ("gemma3n", "gemma")]
)
def test_keep_added_without_padding_rows_grows_every_vocabulary_size(
    name: str, shape: str, load_llm_tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _skip_unmasked_per_layer(name)
    monkeypatch.setitem(LLM_CASES, name, dataclasses.replace(LLM_CASES[name], extra_rows=0))
    tok = load_llm_tokenizer(shape)
    model = build_llm_case(name, tok)
    size = len(tok)
    texts = build_corpus()[:300]
    plan = plan_from_texts(tok, texts, add_tokens=3)
    assert plan.added
    before = {k: v for k, v in _vocab_sizes(model).items() if v == size}
    per_layer = getattr(model.get_decoder(), "embed_tokens_per_layer", None)
    applied = apply_plan(plan, model=model, tokenizer=tok)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = tok(texts[0])["input_ids"][:20] + tok.convert_tokens_to_ids(list(plan.added))
    _step(model, optimizer, [ids])
    per_layer_row0 = None
    if per_layer is not None:
        per_layer_row0 = model.get_decoder().embed_tokens_per_layer.weight[0].detach().clone()
    revert_plan(applied, keep_added=True, optimizer=optimizer)

    grown = size + len(plan.added)
    assert len(tok) == grown
    after = _vocab_sizes(model)
    assert {k: after[k] for k in before} == dict.fromkeys(before, grown)
    text_config = model.config.get_text_config()
    assert model.config.vocab_size == text_config.vocab_size == grown
    assert model.get_input_embeddings().weight.shape[0] == grown
    if per_layer is not None:  # as large as the vocabulary: grows; added ids read row 0
        assert text_config.vocab_size_per_layer_input == grown
        table = model.get_decoder().embed_tokens_per_layer.weight
        assert table.shape[0] == grown
        for position in range(size, grown):
            assert torch.equal(table[position], per_layer_row0)
    batch = torch.tensor(
        [tok(texts[1])["input_ids"][:20] + tok.convert_tokens_to_ids(list(plan.added))]
    )
    assert int(batch.max()) >= size  # the added ids are used
    out = model(input_ids=batch, labels=batch)
    assert out.logits.shape[-1] == grown and torch.isfinite(out.loss)
    out.loss.backward()
    optimizer.step()  # the grown optimizer state fits the grown parameters


def test_per_layer_table_smaller_than_the_vocabulary_keeps_its_size(
    load_llm_tokenizer: Any,
) -> None:
    """Gemma 3n with padding rows: the added ids land beyond the table and read row 0."""
    _skip_unmasked_per_layer("gemma3n")
    tok = load_llm_tokenizer("gemma")
    model = build_llm_case("gemma3n", tok)
    table_size = model.config.vocab_size_per_layer_input
    assert table_size < model.config.vocab_size
    texts = build_corpus()[:300]
    plan = plan_from_texts(tok, texts, add_tokens=3)
    table = model.get_decoder().embed_tokens_per_layer.weight
    applied = apply_plan(plan, model=model, tokenizer=tok)
    revert_plan(applied, keep_added=True)
    assert model.get_decoder().embed_tokens_per_layer.weight is table
    assert table.shape[0] == model.config.vocab_size_per_layer_input == table_size
    batch = torch.tensor(
        [tok(texts[1])["input_ids"][:9] + tok.convert_tokens_to_ids(list(plan.added))]
    )
    assert int(batch.max()) >= len(tok) - len(plan.added) >= table_size
    assert torch.isfinite(model(input_ids=batch, labels=batch).loss)


# -- 3. softmax="full"/"shifted": the caller gets new_size logit columns ------------------------


@pytest.mark.parametrize("mode", ["full", "shifted"])
def test_caller_gets_new_size_logit_columns(mode: str, hf_wordpiece: Any) -> None:
    model = _bert(hf_wordpiece).eval()
    texts = build_corpus()[:200]
    plan = plan_from_texts(hf_wordpiece, texts)
    ids = torch.tensor([plan.remap(hf_wordpiece(texts[0])["input_ids"][:20])])
    full_ids = torch.tensor([hf_wordpiece(texts[0])["input_ids"][:20]])
    with torch.no_grad():
        expected = model(input_ids=full_ids, labels=full_ids).loss
    applied = apply_plan(plan, model=model, softmax=mode)
    with torch.no_grad():
        out = model(input_ids=ids, labels=ids)
        as_tuple = model(input_ids=ids, labels=ids, return_dict=False)
    assert out.logits.shape[-1] == plan.new_size
    assert int(out.logits.argmax(-1).max()) < plan.new_size
    torch.testing.assert_close(out.loss, expected, rtol=1e-6, atol=1e-6)  # full-vocabulary loss
    assert torch.equal(as_tuple[0], out.loss)
    assert as_tuple[1].shape[-1] == plan.new_size
    assert torch.equal(as_tuple[1], out.logits)
    revert_plan(applied)


# -- 4. offload reaches every stage that holds full-size data -----------------------------------


def test_offload_reaches_the_optimizer_stage(
    hf_wordpiece: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _bert(hf_wordpiece)
    plan = plan_from_texts(hf_wordpiece, build_corpus()[:200])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids = hf_wordpiece(build_corpus()[0])["input_ids"][:20]
    _step(model, optimizer, [ids])
    seen: list[Any] = []
    real = optimizer_adapter.prepare

    def prepare(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("offload"))
        return real(*args, **kwargs)

    monkeypatch.setattr(optimizer_adapter, "prepare", prepare)
    applied = apply_plan(
        plan, model=model, tokenizer=hf_wordpiece, optimizer=optimizer, offload="cpu"
    )
    assert seen == ["cpu"]
    revert_plan(applied)


def test_held_tensors_name_what_the_plan_keeps_for_revert(hf_wordpiece: Any) -> None:
    model = _bert(hf_wordpiece)
    plan = plan_from_texts(hf_wordpiece, build_corpus()[:200])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    _step(model, optimizer, [hf_wordpiece(build_corpus()[0])["input_ids"][:20]])
    weight = model.get_input_embeddings().weight
    bias = model.cls.predictions.bias
    state = optimizer.state[weight]
    bias_state = optimizer.state[bias]
    applied = apply_plan(plan, model=model, tokenizer=hf_wordpiece, optimizer=optimizer)
    held = applied.held_tensors()
    want = [weight, bias] + [
        kept[key] for key in ("exp_avg", "exp_avg_sq") for kept in (state, bias_state)
    ]
    assert sorted(id(t) for t in held) == sorted(id(t) for t in want)
    expected = sum(t.numel() * t.element_size() for t in held)
    assert applied.held_bytes() == expected == applied.held_bytes("cpu")
    assert applied.held_bytes("meta") == 0
    revert_plan(applied)
    assert applied.held_tensors() == ()


@pytest.mark.cuda
def test_offload_holds_nothing_full_size_on_the_gpu(hf_wordpiece: Any) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    model = _bert(hf_wordpiece).cuda()
    plan = plan_from_texts(hf_wordpiece, build_corpus()[:200])
    batch = [hf_wordpiece(build_corpus()[0])["input_ids"][:20]]
    results = {}
    for offload in (None, "cpu"):
        m = copy.deepcopy(model)
        optimizer = torch.optim.AdamW(m.parameters(), lr=1e-2)
        loss = m(input_ids=torch.tensor(batch).cuda(), labels=torch.tensor(batch).cuda()).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        applied = apply_plan(plan, model=m, optimizer=optimizer, offload=offload)
        results[offload] = applied.held_bytes("cuda")
        assert all(t.device.type == ("cpu" if offload else "cuda") for t in applied.held_tensors())
        loss = m(
            input_ids=torch.tensor([plan.remap(batch[0])]).cuda(),
            labels=torch.tensor([plan.remap(batch[0])]).cuda(),
        ).loss
        loss.backward()
        optimizer.step()
        revert_plan(applied)
        assert m.get_input_embeddings().weight.device.type == "cuda"
        assert optimizer.state[m.get_input_embeddings().weight]["exp_avg"].device.type == "cuda"
    assert results[None] > 0 and results["cpu"] == 0


# -- 5. the normaliser moves its frozen rows once -----------------------------------------------


def test_normaliser_moves_the_frozen_rows_once(hf_wordpiece: Any) -> None:
    model = _bert(hf_wordpiece)
    plan = plan_from_texts(hf_wordpiece, build_corpus()[:200])
    applied = apply_plan(plan, model=model, softmax="full")
    normaliser = model.__dict__["_vocabcore_softmax"].normaliser
    meta = torch.device("meta")  # stands in for the device the model moved to
    first = normaliser.on(meta)
    second = normaliser.on(meta)
    assert first[0] is second[0]  # copied once, then reused
    assert first[1] is None and first[0].is_contiguous()  # the dropped rows, contiguous
    assert first[0].shape[0] == normaliser.count
    hidden = torch.randn(3, model.config.hidden_size)
    assert softmax_adapter.dropped_logsumexp(model, hidden.to(meta)).shape == (3,)
    assert normaliser.on(meta)[0] is first[0]
    revert_plan(applied)


@pytest.mark.cuda
def test_normaliser_after_moving_the_model_to_the_gpu(hf_wordpiece: Any) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    model = _bert(hf_wordpiece)
    plan = plan_from_texts(hf_wordpiece, build_corpus()[:200])
    ids = torch.tensor([plan.remap(hf_wordpiece(build_corpus()[0])["input_ids"][:20])])
    applied = apply_plan(plan, model=model, softmax="full")
    with torch.no_grad():
        expected = model(input_ids=ids, labels=ids).loss
    model.cuda()
    normaliser = model.__dict__["_vocabcore_softmax"].normaliser
    with torch.no_grad():
        got = model(input_ids=ids.cuda(), labels=ids.cuda()).loss
        source = normaliser.on(torch.device("cuda", torch.cuda.current_device()))[0]
        again = model(input_ids=ids.cuda(), labels=ids.cuda()).loss
    assert normaliser.on(torch.device("cuda", torch.cuda.current_device()))[0] is source
    torch.testing.assert_close(got.cpu(), expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(again, got)
    model.cpu()
    revert_plan(applied)


# -- 6. reduced_vocab keeps the user's exception ------------------------------------------------


class Boom(Exception):
    pass


def test_reduced_vocab_keeps_the_blocks_exception_when_revert_fails(hf_wordpiece: Any) -> None:
    model = _bert(hf_wordpiece)
    plan = plan_from_texts(hf_wordpiece, build_corpus()[:200])
    raised = Boom("the user's failure")
    with pytest.raises(Boom) as info, reduced_vocab(model, hf_wordpiece, plan=plan):
        model.config.vocab_size += 1  # makes the revert refuse
        raise raised
    exc = info.value
    assert exc is raised
    assert isinstance(exc.vocabcore_revert_error, VocabError)  # type: ignore[attr-defined]
    assert "vocab_size was changed" in str(exc.vocabcore_revert_error)  # type: ignore[attr-defined]
    if sys.version_info >= (3, 11):
        assert any("revert_plan" in note for note in exc.__notes__)
    applied = exc.vocabcore_applied_plan  # type: ignore[attr-defined]
    assert applied.active  # still reduced, and the handle reverts it once fixed
    model.config.vocab_size -= 1
    revert_plan(applied)
    assert len(hf_wordpiece) == plan.vocab_size == model.get_input_embeddings().weight.shape[0]


def test_reduced_vocab_without_a_block_error_raises_the_revert_failure(hf_wordpiece: Any) -> None:
    model = _bert(hf_wordpiece)
    plan = plan_from_texts(hf_wordpiece, build_corpus()[:200])
    with (
        pytest.raises(VocabError, match="vocab_size was changed"),
        reduced_vocab(model, hf_wordpiece, plan=plan),
    ):
        model.config.vocab_size += 1


# -- 7. a failed revert leaves the held full tensors as they were -------------------------------


class Injected(Exception):
    pass


def test_failed_revert_leaves_the_held_parameters_untouched(
    hf_wordpiece: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _bert(hf_wordpiece)
    plan = plan_from_texts(hf_wordpiece, build_corpus()[:200])
    resumed = torch.optim.AdamW(model.parameters(), lr=1e-2)
    _step(model, resumed, [hf_wordpiece(build_corpus()[1])["input_ids"][:20]])
    weight = model.get_input_embeddings().weight
    original = weight.detach().clone()
    state = dict(resumed.state[weight])  # the full-size state the plan holds for revert
    held = {k: v.clone() for k, v in state.items()}
    applied = apply_plan(
        plan, model=model, tokenizer=hf_wordpiece, optimizer=resumed, softmax="shifted"
    )
    late = torch.optim.AdamW(model.parameters(), lr=1e-2)
    _step(model, late, [hf_wordpiece(build_corpus()[0])["input_ids"][:20]])
    resumed.step()  # the resumed optimizer trains too (same gradients were zeroed: no-op rows)

    def refuse(self: Any) -> None:
        raise Injected("the tokenizer stage refuses, after every other stage prepared")

    with monkeypatch.context() as m:
        m.setattr(fast_tokenizer_adapter.AppliedFastTokenizer, "_check_revert", refuse)
        with pytest.raises(Injected):
            revert_plan(applied, optimizer=late)
    assert torch.equal(weight, original)  # the object users may hold is unchanged
    for key, value in held.items():
        assert torch.equal(state[key], value), key  # the optimizer's held state too
    assert applied.active
    for stage in ("optimizer", "embeddings"):
        applied.stages[stage].rollback()  # exact: the original values
    assert model.get_input_embeddings().weight is weight and torch.equal(weight, original)


# -- the stage order does not matter ------------------------------------------------------------


def _run(trained: dict[str, Any], order: tuple[str, ...], monkeypatch: pytest.MonkeyPatch) -> Any:
    texts = build_corpus()[:300]
    tok = wrap_hf("wordpiece", trained["wordpiece"])
    model = _bert(tok, len(tok) + 3)
    plan = plan_from_texts(tok, texts, add_tokens=4)
    resumed = torch.optim.AdamW(model.parameters(), lr=1e-2)
    _step(model, resumed, [tok(texts[5])["input_ids"][:20]])
    applied = apply_plan(plan, model=model, tokenizer=tok, optimizer=resumed, softmax="shifted")
    late = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    ids = tok(" ".join(plan.added) + " " + texts[2])["input_ids"][:40]
    batch = torch.tensor([ids])
    loss = model(input_ids=batch, labels=batch).loss
    loss.backward()
    resumed.step()
    late.step()
    with monkeypatch.context() as m:
        m.setattr(session, "STAGES", order)
        revert_plan(applied, keep_added=True, optimizer=late)
    states = []
    for opt in (resumed, late):
        states.append(
            [
                {k: v.clone() for k, v in opt.state[p].items() if isinstance(v, torch.Tensor)}
                for group in opt.param_groups
                for p in group["params"]
                if p in opt.state
            ]
        )
    return (
        {k: v.detach().clone() for k, v in model.state_dict().items()},
        model.config.to_dict(),
        tok.backend_tokenizer.to_str(),
        states,
        _vocab_sizes(model),
    )


def test_revert_result_does_not_depend_on_the_stage_order(
    trained_tokenizers: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    default = _run(trained_tokenizers, session.STAGES, monkeypatch)
    orders = list(itertools.permutations(session.STAGES))
    for order in (orders[-1], orders[len(orders) // 2]):
        other = _run(trained_tokenizers, order, monkeypatch)
        assert other[0].keys() == default[0].keys()
        for key, value in default[0].items():
            assert torch.equal(other[0][key], value), (order, key)
        assert other[1:3] == default[1:3] and other[4] == default[4]
        for a, b in zip(other[3], default[3], strict=True):
            assert len(a) == len(b)
            for x, y in zip(a, b, strict=True):
                assert x.keys() == y.keys()
                assert all(torch.equal(x[k], y[k]) for k in x), order


@pytest.mark.parametrize("decay_groups", [False, True])
def test_shift_trains_in_an_optimizer_given_to_apply(hf_wordpiece: Any, decay_groups: bool) -> None:
    """softmax="shifted" with an existing optimizer: the shift joins it, trains, and leaves."""
    model = _bert(hf_wordpiece)
    plan = plan_from_texts(hf_wordpiece, build_corpus()[:200])
    if decay_groups:  # the usual two groups: the shift goes to the one without weight decay
        decay = [p for n, p in model.named_parameters() if not n.endswith("bias")]
        rest = [p for n, p in model.named_parameters() if n.endswith("bias")]
        groups = [{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}]
        optimizer = torch.optim.AdamW(groups, lr=1e-2)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    before = [list(g["params"]) for g in optimizer.param_groups]
    ids = hf_wordpiece(build_corpus()[0])["input_ids"][:20]
    _step(model, optimizer, [ids])
    state_before = {id(p): {k: v.clone() for k, v in s.items()} for p, s in optimizer.state.items()}
    applied = apply_plan(
        plan, model=model, tokenizer=hf_wordpiece, optimizer=optimizer, softmax="shifted"
    )
    shift = applied.stages["softmax"].parameters[0]
    group = optimizer.param_groups[1 if decay_groups else 0]
    assert any(p is shift for p in group["params"])
    reduced_ids = plan.remap(ids)
    _step(model, optimizer, [reduced_ids])
    assert bool((shift != 0).any()), "the shift did not train"
    assert shift in optimizer.state
    revert_plan(applied)
    after = [list(g["params"]) for g in optimizer.param_groups]
    assert [[id(p) for p in g] for g in after] == [[id(p) for p in g] for g in before]
    assert shift not in optimizer.state
    assert set(map(id, optimizer.state)) == set(state_before)
    _step(model, optimizer, [ids])  # the full model trains on


def test_failed_apply_takes_the_shift_out_of_the_optimizer_again(
    hf_wordpiece: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _bert(hf_wordpiece)
    plan = plan_from_texts(hf_wordpiece, build_corpus()[:200])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    _step(model, optimizer, [hf_wordpiece(build_corpus()[0])["input_ids"][:20]])
    groups = [list(g["params"]) for g in optimizer.param_groups]
    state = {id(p): {k: v.clone() for k, v in s.items()} for p, s in optimizer.state.items()}
    monkeypatch.setattr(session, "STAGES", (*session.STAGES, "boom"))

    class Boom:
        def commit(self) -> Any:
            raise RuntimeError("injected")

    real = session._prepare_stages

    def prepare_stages(*args: Any, **kwargs: Any) -> Any:
        stages, swaps = real(*args, **kwargs)
        return [*stages, ("boom", Boom())], swaps

    monkeypatch.setattr(session, "_prepare_stages", prepare_stages)
    with pytest.raises(RuntimeError, match="injected"):
        apply_plan(
            plan, model=model, tokenizer=hf_wordpiece, optimizer=optimizer, softmax="shifted"
        )
    assert [[id(p) for p in g["params"]] for g in optimizer.param_groups] == [
        [id(p) for p in g] for g in groups
    ]
    for p, s in optimizer.state.items():
        for k, v in s.items():
            assert torch.equal(v, state[id(p)][k])
