"""Impact table: what a plan from a CoNLL-like training set removes, per model family.

Each family's model is really instantiated from a config with the real dimensions (random
weights; the sizes are what matters), the plan is built with ``plan_from_texts`` on the
benchmark tokenizer of the real size, applied with ``apply_plan`` (model + tokenizer), the
parameters counted, and reverted. Adam's state is two fp32 tensors per trainable parameter
(``exp_avg``, ``exp_avg_sq``), so its bytes are 8 x trainable parameters.

    python benchmarks/impact.py [--quick]
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from typing import Any

import _harness as h

h.setup()

import _corpus  # noqa: E402
import _tokenizers  # noqa: E402

BASE = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
}
FAMILIES: dict[str, dict[str, Any]] = {
    "bert": {
        "label": "BERT-base (WordPiece, all-MiniLM-L6-v2 tokenizer)",
        "type": "bert",
        "head": "mlm",
        "config": {
            **BASE,
            "vocab_size": 30_522,
            "max_position_embeddings": 512,
            "type_vocab_size": 2,
        },
    },
    "roberta": {
        "label": "RoBERTa-base (byte-level BPE)",
        "type": "roberta",
        "head": "mlm",
        "config": {
            **BASE,
            "vocab_size": 50_265,
            "max_position_embeddings": 514,
            "type_vocab_size": 1,
            "pad_token_id": 1,
            "bos_token_id": 0,
            "eos_token_id": 2,
        },
    },
    "xlmr": {
        "label": "XLM-R-base (Unigram 250k)",
        "type": "xlm-roberta",
        "head": "mlm",
        "config": {
            **BASE,
            "vocab_size": 250_002,
            "max_position_embeddings": 514,
            "type_vocab_size": 1,
            "pad_token_id": 1,
            "bos_token_id": 0,
            "eos_token_id": 2,
        },
    },
    "deberta": {
        "label": "DeBERTa-v3-base (Unigram 128k)",
        "type": "deberta-v2",
        "head": "mlm",
        "config": {
            **BASE,
            "vocab_size": 128_100,
            "max_position_embeddings": 512,
            "relative_attention": True,
            "position_buckets": 256,
            "norm_rel_ebd": "layer_norm",
            "share_att_key": True,
            "pos_att_type": ["p2c", "c2p"],
            "layer_norm_eps": 1e-7,
            "max_relative_positions": -1,
            "position_biased_input": False,
            "type_vocab_size": 0,
            "pad_token_id": 0,
        },
    },
    "t5": {
        "label": "T5-base (Unigram 32k, 32,128 rows)",
        "type": "t5",
        "head": "seq2seq",
        "config": {
            "vocab_size": 32_128,
            "d_model": 768,
            "d_kv": 64,
            "d_ff": 3072,
            "num_layers": 12,
            "num_decoder_layers": 12,
            "num_heads": 12,
            "tie_word_embeddings": True,
            "feed_forward_proj": "relu",
            "decoder_start_token_id": 0,
            "pad_token_id": 0,
            "eos_token_id": 1,
        },
    },
    "gpt2": {
        "label": "GPT-2 small (byte-level BPE)",
        "type": "gpt2",
        "head": "causal",
        "config": {
            "vocab_size": 50_257,
            "n_embd": 768,
            "n_layer": 12,
            "n_head": 12,
            "n_positions": 1024,
        },
    },
}
QUICK_FAMILIES = ("bert", "xlmr")


def _tiny(cfg: dict[str, Any], model_type: str) -> dict[str, Any]:
    """The same vocabulary with a tiny body, for --quick."""
    small = dict(cfg)
    if model_type == "t5":
        small.update(d_model=32, d_kv=8, d_ff=64, num_layers=1, num_decoder_layers=1, num_heads=2)
    elif model_type == "gpt2":
        small.update(n_embd=32, n_layer=1, n_head=2)
    else:
        small.update(
            hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
        )
    return small


def build_model(family: str, quick: bool = False) -> Any:
    spec = FAMILIES[family]
    cfg = _tiny(spec["config"], spec["type"]) if quick else spec["config"]
    if family == "xlmr" and quick:
        cfg = {**cfg, "vocab_size": 20_002}
    return h.model_from_config(spec["type"], cfg, spec["head"])


def measure(family: str, texts: list[list[str]], quick: bool = False) -> dict[str, Any]:
    import warnings

    from transformers import AutoTokenizer

    from vocab_adapters import apply_plan, plan_from_texts, revert_plan

    tok = AutoTokenizer.from_pretrained(_tokenizers.build(family, quick=quick))
    ids = tok(texts, is_split_into_words=True)["input_ids"]
    used = len({i for s in ids for i in s})
    t0 = time.perf_counter()
    plan = plan_from_texts(tok, texts)
    plan_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    model = build_model(family, quick)
    init_s = time.perf_counter() - t0

    def counts(m: Any) -> tuple[int, int, int]:
        params = list(m.parameters())
        return (
            sum(p.numel() for p in params),
            sum(p.numel() for p in params if p.requires_grad),
            m.get_input_embeddings().weight.shape[0],
        )

    full, full_trainable, rows = counts(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        applied = apply_plan(plan, model=model, tokenizer=tok)
        apply_s = time.perf_counter() - t0
    reduced, reduced_trainable, new_rows = counts(model)
    t0 = time.perf_counter()
    revert_plan(applied)
    revert_s = time.perf_counter() - t0
    back, _, _ = counts(model)
    row = {
        "family": family,
        "label": FAMILIES[family]["label"],
        "tokenizer_size": len(tok),
        "embedding_rows": rows,
        "used_by_texts": used,
        "kept": plan.new_size,
        "kept_pct": 100.0 * plan.new_size / len(tok),
        "reduced_rows": new_rows,
        "params_full": full,
        "params_reduced": reduced,
        "params_removed_pct": 100.0 * (1 - reduced / full),
        "adam_bytes_full": 8 * full_trainable,
        "adam_bytes_reduced": 8 * reduced_trainable,
        "adam_removed_pct": 100.0 * (1 - reduced_trainable / full_trainable),
        "restored_ok": back == full,
        "plan_s": plan_s,
        "init_s": init_s,
        "apply_s": apply_s,
        "revert_s": revert_s,
        "warnings": sorted(
            {str(w.message)[:160] for w in caught if "vocab" in str(w.message).lower()}
        ),
    }
    del model, applied
    gc.collect()
    return row


def run(quick: bool = False, threads: int = 1) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    texts = _corpus.word_lists(quick)
    rows = []
    for family in QUICK_FAMILIES if quick else FAMILIES:
        row = measure(family, texts, quick)
        print(
            f"[impact] {family}: kept {row['kept']}/{row['tokenizer_size']} "
            f"({row['kept_pct']:.1f}%), params -{row['params_removed_pct']:.1f}%",
            file=sys.stderr,
        )
        rows.append(row)
    return {"n_texts": len(texts), "n_words": sum(map(len, texts)), "rows": rows}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    print(json.dumps(run(a.quick, a.threads), indent=1))
