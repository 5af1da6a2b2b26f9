"""Draft vocabularies: a plan's kept ids read back the way SGLang and EAGLE-3 read them.

SGLang (``sglang.srt.speculative.eagle_worker.load_token_map``) does
``torch.tensor(torch.load(path, weights_only=True), dtype=torch.int64)`` and slices the draft
``lm_head`` rows with it, mapping a draft top-k id ``i`` to target id ``hot[i]``. EAGLE-3
drafts carry ``d2t`` (``target - draft``) and ``t2d`` (a mask over the target vocabulary);
engines rebuild ``hot_token_id = d2t + arange(len(d2t))`` while loading the draft's weights and
SpecForge inverts ``t2d`` into a target → draft index. Each is checked against the plan, and the
sliced head's logits against the model reduced by the same plan.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from fixtures.fast_tokenizers import build_corpus
from fixtures.llm_models import build_llm_case
from vocab_adapters import apply_plan, plan_from_texts, revert_plan
from vocab_adapters.cli import main
from vocab_adapters.deploy.draft_vocab import draft_maps, draft_vocab
from vocabcore import VocabError, VocabPlan

TEXTS = build_corpus(200)


def sglang_load_token_map(path: Path) -> torch.Tensor:
    """SGLang's ``load_token_map`` for a local file (its hub download branch left out)."""
    hot_token_id = torch.load(path, weights_only=True)
    with warnings.catch_warnings():  # torch.tensor(tensor) warns about copy-constructing
        warnings.simplefilter("ignore", UserWarning)
        return torch.tensor(hot_token_id, dtype=torch.int64)


def eagle3_load(weights: dict[str, torch.Tensor]) -> torch.Tensor:
    """The engines' EAGLE-3 ``load_weights`` branch for the maps: ``t2d`` skipped."""
    hot_token_id = None
    for name, loaded_weight in weights.items():
        if "d2t" in name:
            hot_token_id = loaded_weight + torch.arange(loaded_weight.shape[0])
    assert hot_token_id is not None
    return hot_token_id


def specforge_t2d_index(t2d: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """SpecForge's target id → draft id index (-1 outside the draft vocabulary)."""
    index = torch.full((vocab_size,), -1, dtype=torch.long)
    used = torch.nonzero(t2d.bool(), as_tuple=False).squeeze(1)
    index[used] = torch.arange(used.numel(), dtype=torch.long)
    return index


@pytest.fixture(scope="module")
def qwen(load_llm_tokenizer: Any) -> tuple[Any, Any, VocabPlan]:
    tok = load_llm_tokenizer("qwen2")
    model = build_llm_case("qwen2", tok)
    plan = plan_from_texts(tok, TEXTS, model=model, max_size=600)
    return tok, model, plan


def test_sglang_map_is_the_plans_kept_ids_and_slices_the_head_like_the_reduced_model(
    qwen: tuple[Any, Any, VocabPlan], tmp_path: Path
) -> None:
    tok, model, plan = qwen
    path = draft_vocab(plan, tmp_path / "hot.pt", format="sglang")
    hot = sglang_load_token_map(path)
    assert hot.dtype == torch.int64
    assert hot.tolist() == list(plan.kept)
    assert len(plan.kept) <= 600 + 300  # max_size plus what exact encoding must keep

    # a training text whose ids the draft vocabulary all holds, so the reduced model can run it
    text = next(t for t in TEXTS if all(plan.is_kept(i) for i in tok(t)["input_ids"]))
    ids = torch.tensor([tok(text)["input_ids"]])
    with torch.no_grad():
        hidden = model.model(ids).last_hidden_state[:, -1]
        # SGLang: the draft head keeps the hot rows; top-k draft ids map back through hot
        draft_logits = hidden @ model.lm_head.weight[hot].T
        top_draft = draft_logits.topk(5).indices[0]
        top_target = hot[top_draft]
    applied = apply_plan(plan, model=model, tokenizer=tok)
    try:
        with torch.no_grad():
            reduced = model(torch.tensor([plan.remap(ids[0].tolist())])).logits[:, -1]
    finally:
        revert_plan(applied)
    torch.testing.assert_close(draft_logits, reduced)
    assert [plan.new_to_old(int(i)) for i in reduced.topk(5).indices[0]] == top_target.tolist()


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_eagle3_maps_load_as_the_engines_read_them(
    qwen: tuple[Any, Any, VocabPlan], tmp_path: Path, suffix: str
) -> None:
    _, model, plan = qwen
    rows = model.config.vocab_size  # 43 padded rows beyond the tokenizer
    assert rows > plan.vocab_size
    path = draft_vocab(plan, tmp_path / f"eagle3{suffix}", format="eagle3", target_vocab_size=rows)
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        weights = load_file(str(path))
    else:
        weights = torch.load(path, weights_only=True)
    assert set(weights) == {"d2t", "t2d"}
    d2t, t2d = weights["d2t"], weights["t2d"]
    assert d2t.dtype == torch.int64 and t2d.dtype == torch.bool
    assert d2t.shape == (len(plan.kept),) and t2d.shape == (rows,)
    assert eagle3_load(weights).tolist() == list(plan.kept)
    index = specforge_t2d_index(t2d, rows)
    expected = [plan.old_to_new(i) if i < plan.vocab_size else None for i in range(rows)]
    assert index.tolist() == [-1 if e is None else e for e in expected]
    # EAGLE's own construction from the sorted used tokens gives the same tensors
    used = sorted(plan.kept)
    assert d2t.tolist() == [u - i for i, u in enumerate(used)]
    assert t2d.tolist() == [i in set(used) for i in range(rows)]


def test_cli_draft_writes_both_formats(qwen: tuple[Any, Any, VocabPlan], tmp_path: Path) -> None:
    _, _, plan = qwen
    plan.save(tmp_path / "plan.json")
    out = tmp_path / "hot.pt"
    assert main(["draft", "--plan", str(tmp_path / "plan.json"), "-o", str(out)]) == 0
    assert sglang_load_token_map(out).tolist() == list(plan.kept)
    assert main(["draft", "--plan", str(tmp_path / "plan.json"), "-o", str(out)]) == 2  # exists
    eagle = tmp_path / "d2t.safetensors"
    args = ["draft", "--plan", str(tmp_path / "plan.json"), "-o", str(eagle), "--format"]
    assert main([*args, "eagle3", "--target-vocab-size", str(plan.vocab_size + 7)]) == 0
    from safetensors.torch import load_file

    assert load_file(str(eagle))["t2d"].shape == (plan.vocab_size + 7,)


def test_bad_draft_requests_are_refused_before_writing(tmp_path: Path) -> None:
    plan = VocabPlan(10, (0, 3, 4))
    with pytest.raises(VocabError, match="format"):
        draft_vocab(plan, tmp_path / "x.pt", format="vllm")
    with pytest.raises(VocabError, match="adds 1 new tokens"):
        draft_vocab(plan.adding(["Ġnew"]), tmp_path / "x.pt")
    with pytest.raises(VocabError, match="target_vocab_size"):
        draft_maps(plan, target_vocab_size=5)
    assert not (tmp_path / "x.pt").exists()
    maps = draft_maps(plan)
    assert maps["hot"].tolist() == [0, 3, 4]
    assert maps["d2t"].tolist() == [0, 2, 2]
    assert maps["t2d"].nonzero().squeeze(1).tolist() == [0, 3, 4]
