"""Decoder LLMs: each family's tiny model with its tokenizer shape, reduced and restored.

Per family (fixtures.llm_models) and tokenizer shape (fixtures.llm_tokenizers): logits equal the
full model's at the kept ids, greedy generation equals the masked full model's, one AdamW step
then revert leaves dropped rows bit-identical and restores config, generation config and
tokenizer files, and apply + revert alone gives a bit-identical state dict, buffers included.
Per tokenizer shape: remap equality on texts and templated conversations, held-out scripts,
emoji and whitespace encode within the reduced vocabulary and decode like the original.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch

from fixtures.fast_tokenizers import build_corpus
from fixtures.llm_models import LLM_CASES, build_llm_case
from fixtures.llm_tokenizers import CONVERSATIONS, HELD_OUT, LLM_TOKENIZER_SHAPES
from vocab_adapters import apply_plan, plan_from_texts, revert_plan
from vocabcore import VocabError, VocabPlan

TEXTS = build_corpus(300)
PROMPT = "The for statement is used to iterate over the elements of a sequence"


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Any:
    """Tiny matrices: torch's thread pool only costs here (Gemma 3n's forward: 25x)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def llm_plans(load_llm_tokenizer: Any) -> dict[str, VocabPlan]:
    """Shape → plan from ``TEXTS`` and the conversations (with a generation prompt)."""
    plans = {}
    for shape in LLM_TOKENIZER_SHAPES:
        tok = load_llm_tokenizer(shape)
        from_texts = plan_from_texts(tok, TEXTS)
        from_chat = plan_from_texts(
            tok, CONVERSATIONS, chat_template_kwargs={"add_generation_prompt": True}
        )
        plans[shape] = from_texts.union(from_chat)
    return plans


def _template(tok: Any, conversation: Any, **kwargs: Any) -> list[int]:
    out = tok.apply_chat_template(conversation, tokenize=True, **kwargs)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


# -- tokenizer shapes ------------------------------------------------------------------------


@pytest.mark.parametrize("shape", LLM_TOKENIZER_SHAPES)
def test_shape_remaps_texts_conversations_and_held_out(
    shape: str, load_llm_tokenizer: Any, llm_plans: dict[str, VocabPlan], tmp_path: Path
) -> None:
    tok = load_llm_tokenizer(shape)
    plan = llm_plans[shape]
    texts = TEXTS[::7]
    full = [tok(t)["input_ids"] for t in texts]
    full_chat = [_template(tok, c) for c in CONVERSATIONS]
    full_prompt = _template(tok, CONVERSATIONS[0][:2], add_generation_prompt=True)
    held = [tok(t, add_special_tokens=False)["input_ids"] for t in HELD_OUT]
    tok.save_pretrained(str(tmp_path / "before"))

    applied = apply_plan(plan, tokenizer=tok)
    assert [tok(t)["input_ids"] for t in texts] == [plan.remap(ids) for ids in full]
    assert [_template(tok, c) for c in CONVERSATIONS] == [plan.remap(ids) for ids in full_chat]
    prompt = _template(tok, CONVERSATIONS[0][:2], add_generation_prompt=True)
    assert prompt == plan.remap(full_prompt)
    for text, full_ids in zip(HELD_OUT, held, strict=True):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert all(i < plan.new_size for i in ids)
        assert tok.decode(ids) == text
        assert len(ids) >= len(full_ids)
    revert_plan(applied)

    tok.save_pretrained(str(tmp_path / "after"))
    assert _files(tmp_path / "after") == _files(tmp_path / "before")


def test_conversation_item_that_is_not_one_names_its_index(load_llm_tokenizer: Any) -> None:
    tok = load_llm_tokenizer("qwen2")
    bad = [CONVERSATIONS[0], [{"content": "no role"}]]
    with pytest.raises(VocabError, match="item 1 of texts is not a conversation"):
        plan_from_texts(tok, bad)
    with pytest.raises(VocabError, match="item 2 of texts"):
        plan_from_texts(tok, iter([*CONVERSATIONS[:2], 42]))


def test_tokenizer_without_chat_template_refuses_conversations(load_llm_tokenizer: Any) -> None:
    tok = load_llm_tokenizer("llama2")
    tok.chat_template = None
    with pytest.raises(VocabError, match="has no chat template"):
        plan_from_texts(tok, CONVERSATIONS)


def test_chat_template_kwargs_need_conversations(load_llm_tokenizer: Any) -> None:
    tok = load_llm_tokenizer("qwen2")
    with pytest.raises(VocabError, match="applies to conversations"):
        plan_from_texts(tok, ["text"], chat_template_kwargs={"add_generation_prompt": True})


def test_conversations_from_a_dataset_messages_column(load_llm_tokenizer: Any) -> None:
    datasets = pytest.importorskip("datasets")
    tok = load_llm_tokenizer("qwen2")
    dataset = datasets.Dataset.from_dict({"messages": CONVERSATIONS})
    assert plan_from_texts(tok, dataset) == plan_from_texts(tok, CONVERSATIONS)


def test_model_keeps_config_ids_and_apply_refuses_dropping_them(load_llm_tokenizer: Any) -> None:
    tok = load_llm_tokenizer("llama3")
    model = build_llm_case("llama-tied", tok)
    eos = [tok.convert_tokens_to_ids(t) for t in ("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>")]
    model.generation_config.eos_token_id = eos
    plan = plan_from_texts(tok, ["hello"], model=model)
    assert all(plan.old_to_new(i) is not None for i in [*eos, model.config.pad_token_id])
    # a plan lacking a config id (hand-made): refused, nothing changed
    pad = model.config.pad_token_id
    dropping = VocabPlan(plan.vocab_size, [i for i in plan.kept if i != pad], plan.fingerprint)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(VocabError, match=rf"padding_idx {pad} is an id the plan drops.*model="):
        apply_plan(dropping, model=model, tokenizer=tok)
    dropping = VocabPlan(plan.vocab_size, [i for i in plan.kept if i != eos[1]], plan.fingerprint)
    with pytest.raises(
        VocabError, match=rf"eos_token_id\[1\] is {eos[1]}, an id the plan drops.*model="
    ):
        apply_plan(dropping, model=model, tokenizer=tok)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert len(tok) == plan.vocab_size


# -- families ---------------------------------------------------------------------------------


class _Mask:
    """A logits processor that masks the dropped ids (and padded rows) of the full model."""

    def __init__(self, dropped: torch.Tensor) -> None:
        self.dropped = dropped

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        scores = scores.clone()
        scores[:, self.dropped] = float("-inf")
        return scores


def _dropped(plan: VocabPlan, rows: int) -> torch.Tensor:
    """Dropped ids and padded rows beyond the tokenizer."""
    return torch.tensor(
        [i for i in range(rows) if i >= plan.vocab_size or plan.old_to_new(i) is None]
    )


def _state(model: Any) -> dict[str, torch.Tensor]:
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    state.update({f"buffer:{k}": v.detach().clone() for k, v in model.named_buffers()})
    return state


def _assert_same_state(before: dict[str, torch.Tensor], model: Any) -> None:
    after = _state(model)
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert after[key].dtype == value.dtype and torch.equal(after[key], value), key


@pytest.mark.parametrize("name", list(LLM_CASES))
def test_family_reduced_equals_full_and_reverts(
    name: str, load_llm_tokenizer: Any, llm_plans: dict[str, VocabPlan], tmp_path: Path
) -> None:
    case = LLM_CASES[name]
    tok = load_llm_tokenizer(case.shape)
    model = build_llm_case(name, tok)
    plan = llm_plans[case.shape]
    embedding_class = type(model.get_input_embeddings())
    full_ids = tok(PROMPT)["input_ids"]
    ids = torch.tensor([full_ids])
    pristine = _state(model)
    config_before = model.config.to_dict()
    generation = getattr(model, "generation_config", None)
    generation_before = generation.to_dict() if generation is not None else None
    original = model.get_input_embeddings().weight.detach().clone()
    tok.save_pretrained(str(tmp_path / "before"))
    kept = torch.tensor(plan.kept)
    with torch.no_grad():
        full_out = model(input_ids=ids).logits
    if case.kind == "causal":
        rows = model.get_output_embeddings().weight.shape[0]
        dropped = _dropped(plan, rows)
        eos = model.generation_config.eos_token_id
        full_gen = model.generate(
            ids,
            max_new_tokens=6,
            do_sample=False,
            logits_processor=[_Mask(dropped)],
            pad_token_id=eos,
        )[0, ids.shape[1] :].tolist()

    # apply + revert without training: bit-identical state, buffers included
    revert_plan(apply_plan(plan, model=model, tokenizer=tok))
    _assert_same_state(pristine, model)

    applied = apply_plan(plan, model=model, tokenizer=tok)
    assert type(model.get_input_embeddings()) is embedding_class
    reduced_ids = torch.tensor([tok(PROMPT)["input_ids"]])
    assert reduced_ids[0].tolist() == plan.remap(full_ids)
    with torch.no_grad():
        out = model(input_ids=reduced_ids).logits
    expected = full_out[..., kept] if case.kind == "causal" else full_out
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    if case.kind == "causal":
        gen = model.generate(
            reduced_ids,
            max_new_tokens=6,
            do_sample=False,
            pad_token_id=model.generation_config.eos_token_id,
        )[0, ids.shape[1] :].tolist()
        assert gen == plan.remap(full_gen)
        assert tok.decode(gen) == tok.decode(plan.remap(full_gen))

    # one AdamW step with labels, then revert
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    labels = reduced_ids if case.kind == "causal" else torch.tensor([1])
    loss = model(input_ids=reduced_ids, labels=labels).loss
    assert torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    revert_plan(applied, optimizer=optimizer)
    model.eval()

    weight = model.get_input_embeddings().weight.detach()
    rows = weight.shape[0]
    dropped_rows = _dropped(plan, rows)
    assert torch.equal(weight[dropped_rows], original[dropped_rows])
    assert not torch.equal(weight[kept], original[kept])
    for key, value in pristine.items():
        if key.endswith("embed_tokens_per_layer.weight"):
            current = model.state_dict()[key]
            assert current.shape == value.shape
            assert torch.equal(current[plan.vocab_size :], value[plan.vocab_size :])
    config_after = model.config.to_dict()
    if case.kind == "classification":  # the forward pass with labels sets it, as in full training
        config_after["problem_type"] = config_before["problem_type"]
    assert config_after == config_before
    if generation is not None:
        assert model.generation_config.to_dict() == generation_before
    tok.save_pretrained(str(tmp_path / "after"))
    assert _files(tmp_path / "after") == _files(tmp_path / "before")


@pytest.mark.parametrize("name", ["gemma2", "gemma3", "gemma3n", "qwen3-moe", "olmoe"])
def test_vocab_size_attributes_follow_the_config(
    name: str, load_llm_tokenizer: Any, llm_plans: dict[str, VocabPlan]
) -> None:
    case = LLM_CASES[name]
    tok = load_llm_tokenizer(case.shape)
    model = build_llm_case(name, tok)
    plan = llm_plans[case.shape]
    rows = model.config.vocab_size
    holders = [m for m in model.modules() if vars(m).get("vocab_size") == rows]
    per_layer_rows = getattr(model.config, "vocab_size_per_layer_input", None)
    applied = apply_plan(plan, model=model, tokenizer=tok)
    assert [m.vocab_size for m in holders] == [plan.new_size] * len(holders)
    if name == "gemma3n":
        per_layer = model.model.embed_tokens_per_layer
        assert per_layer.num_embeddings == model.config.vocab_size_per_layer_input
        assert per_layer.num_embeddings == sum(1 for i in plan.kept if i < per_layer_rows)
    revert_plan(applied)
    assert [m.vocab_size for m in holders] == [rows] * len(holders)


def test_id_set_while_reduced_comes_back_in_full_numbering(
    load_llm_tokenizer: Any, llm_plans: dict[str, VocabPlan]
) -> None:
    tok = load_llm_tokenizer("qwen2")
    model = build_llm_case("qwen2", tok)
    model.config.pad_token_id = None
    model.generation_config.pad_token_id = None
    plan = llm_plans["qwen2"]
    applied = apply_plan(plan, model=model, tokenizer=tok)
    model.config.pad_token_id = tok.pad_token_id  # as TRL's SFTTrainer does: a reduced id
    model.generation_config.pad_token_id = [tok.eos_token_id, tok.pad_token_id]
    revert_plan(applied)
    assert (
        model.config.pad_token_id == tok.pad_token_id == tok.convert_tokens_to_ids("<|endoftext|>")
    )
    assert model.generation_config.pad_token_id == [tok.eos_token_id, tok.pad_token_id]


def test_id_set_while_reduced_out_of_range_refuses_revert(
    load_llm_tokenizer: Any, llm_plans: dict[str, VocabPlan]
) -> None:
    tok = load_llm_tokenizer("qwen2")
    model = build_llm_case("qwen2", tok)
    model.config.pad_token_id = None
    plan = llm_plans["qwen2"]
    applied = apply_plan(plan, model=model, tokenizer=tok)
    model.config.pad_token_id = plan.new_size + 3
    with pytest.raises(VocabError, match=r"config.pad_token_id was set to .* while the vocab"):
        revert_plan(applied)
    assert applied.active and len(tok) == plan.new_size
    model.config.pad_token_id = 0
    revert_plan(applied)
    assert model.config.pad_token_id == plan.new_to_old(0)


def test_roberta_position_guard_message_is_short(make_tiny_model: Any) -> None:
    tiny = make_tiny_model("roberta-mlm")
    model = copy.deepcopy(tiny.model)
    with pytest.raises(VocabError) as error:
        apply_plan(VocabPlan(tiny.vocab_size, [1, 2, 3]), model=model)
    assert "position_embeddings numbers positions from the pad id" in str(error.value)
    assert len(str(error.value)) < 300
