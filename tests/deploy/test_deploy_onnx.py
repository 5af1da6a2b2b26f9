"""ONNX export: a trimmed sentence-transformer and a trimmed decoder run in ONNX Runtime.

The bundled all-MiniLM-L6-v2 (mean pooling, normalized) and a tiny Llama with a Llama 3
tokenizer are exported with ``export_reduced(..., format="onnx")``; the directory's
``tokenizer.json``, loaded with ``tokenizers`` alone, encodes like the trimmed Hugging Face
tokenizer, and ONNX Runtime's outputs on those ids equal the trimmed PyTorch model's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fixtures.fast_tokenizers import build_corpus
from fixtures.llm_models import build_llm_case
from vocab_adapters import apply_plan, export_reduced, plan_from_texts, revert_plan
from vocabcore import VocabError, VocabPlan

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

TEXTS = build_corpus(300)
DOMAIN = TEXTS[2::11][:16]


def _run(directory: Path, texts: list[str]) -> tuple[list[list[int]], dict[str, np.ndarray]]:
    """Encode with the exported tokenizer.json and run model.onnx, as a deployment does."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(directory / "tokenizer.json"))
    encodings = [tok.encode(t) for t in texts]
    width = max(len(e.ids) for e in encodings)
    ids = np.zeros((len(texts), width), dtype=np.int64)
    mask = np.zeros((len(texts), width), dtype=np.int64)
    for row, e in enumerate(encodings):
        ids[row, : len(e.ids)] = e.ids
        mask[row, : len(e.ids)] = 1
    session = ort.InferenceSession(str(directory / "model.onnx"))
    names = [o.name for o in session.get_outputs()]
    outputs = session.run(None, {"input_ids": ids, "attention_mask": mask})
    return [e.ids for e in encodings], dict(zip(names, outputs, strict=True))


def test_minilm_sentence_embeddings_equal_the_trimmed_pytorch_model(
    minilm_dir: str, tmp_path: Path
) -> None:
    from sentence_transformers import SentenceTransformer

    st_model = SentenceTransformer(minilm_dir, device="cpu")
    plan = plan_from_texts(st_model.tokenizer, TEXTS)
    out = export_reduced(st_model, None, plan, tmp_path / "onnx", format="onnx")
    assert {"model.onnx", "tokenizer.json", "config.json", "vocabcore_plan.json"} <= {
        p.name for p in out.iterdir()
    }
    ids, outputs = _run(out, DOMAIN)
    assert outputs["sentence_embedding"].shape == (len(DOMAIN), 384)
    full = st_model.encode(DOMAIN, convert_to_numpy=True)
    applied = apply_plan(plan, model=st_model[0].auto_model, tokenizer=st_model.tokenizer)
    try:
        assert ids == [st_model.tokenizer(t)["input_ids"] for t in DOMAIN]
        assert st_model[0].auto_model.config.vocab_size == plan.new_size < 30522
        reduced = st_model.encode(DOMAIN, convert_to_numpy=True)
    finally:
        revert_plan(applied)
    np.testing.assert_allclose(outputs["sentence_embedding"], reduced, atol=2e-5, rtol=1e-4)
    np.testing.assert_allclose(outputs["sentence_embedding"], full, atol=2e-5, rtol=1e-4)


def test_tiny_decoder_logits_equal_the_trimmed_pytorch_model(
    load_llm_tokenizer: Any, tmp_path: Path
) -> None:
    tok = load_llm_tokenizer("llama3")
    model = build_llm_case("llama-tied", tok)
    plan = plan_from_texts(tok, TEXTS, model=model)
    out = export_reduced(model, tok, plan, tmp_path / "onnx", format="onnx")
    ids, outputs = _run(out, DOMAIN[:4])
    applied = apply_plan(plan, model=model, tokenizer=tok)
    try:
        assert ids == [tok(t)["input_ids"] for t in DOMAIN[:4]]
        for row, row_ids in enumerate(ids):
            with torch.no_grad():
                logits = model(torch.tensor([row_ids])).logits[0].numpy()
            assert logits.shape[-1] == plan.new_size
            got = outputs["logits"][row, : len(row_ids)]
            np.testing.assert_allclose(got, logits, atol=1e-4, rtol=1e-4)
    finally:
        revert_plan(applied)
    # the model is restored, SDPA or not
    assert model.get_input_embeddings().weight.shape[0] == len(tok)


def test_existing_output_is_refused(load_llm_tokenizer: Any, tmp_path: Path) -> None:
    tok = load_llm_tokenizer("llama3")
    (tmp_path / "onnx").mkdir()
    (tmp_path / "onnx" / "keep.txt").write_text("x")
    with pytest.raises(VocabError, match="exists and is not empty"):
        export_reduced(None, tok, VocabPlan.identity(len(tok)), tmp_path / "onnx", format="onnx")
