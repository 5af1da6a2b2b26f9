"""Trim a 250k-piece Unigram model to one language for good: size, coverage, agreement.

The tokenizer is the benchmarks' XLM-R-sized Metaspace Unigram (250,002 ids: 32,000 pieces
learnt from English-like text, the rest other scripts; see ``_tokenizers.py``). The model is an
XLM-R-base-shaped ``XLMRobertaForMaskedLM`` (hidden 768, 12 heads, tied 250,002 x 768
embedding) cut to 2 layers, with random weights from a fixed seed. "The language" is English:
the paragraphs of Python's ``pydoc_data.topics``, split by topic into a training part (the
plans are built from it) and a held-out part. "Another language" is the held-out part written
letter by letter in Cyrillic (a stand-in for text in another script).

For each budget (``plan_from_texts(..., max_size=N)``, and no budget) it measures the exported
directory's size on disk against the full model's, ``coverage`` on both held-out sets, and the
agreement of the exported model with the full one on held-out English: the largest absolute
difference of the MLM logits at kept ids on texts that encode identically, and the cosine of
the mean-pooled last hidden states on every text. The second part does the same agreement
measurement with the real, trained all-MiniLM-L6-v2 sentence embeddings.

Run from the repository root (writes ``docs/img/trim_coverage.png`` and
``benchmarks/trim_coverage.json``, which records the run's wall time in ``seconds``)::

    HF_HUB_OFFLINE=1 python benchmarks/trim_coverage.py
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import _harness as h

h.setup()

import _tokenizers  # noqa: E402

ROOT = h.ROOT
_LETTERS = "а б ц д е ф г х и й к л м н о п к р с т у в ш кс ы з".split()  # noqa: RUF001, SIM905
_CYRILLIC = dict(zip("abcdefghijklmnopqrstuvwxyz", _LETTERS, strict=True))


def english() -> tuple[list[str], list[str]]:
    """(training, held-out) paragraphs of ``pydoc_data.topics``, split by topic (1 in 5 out)."""
    from pydoc_data.topics import topics

    train: list[str] = []
    held: list[str] = []
    for key in sorted(topics):
        out = held if zlib.crc32(key.encode()) % 5 == 0 else train
        for para in topics[key].split("\n\n"):
            text = re.sub(r"\s+", " ", para).strip()
            if 20 < len(text) < 600:
                out.append(text)
    return train, held


def cyrillic(text: str) -> str:
    """``text`` written letter by letter in Cyrillic (case kept)."""
    out = []
    for c in text:
        low = c.lower()
        if low in _CYRILLIC:
            mapped = _CYRILLIC[low]
            out.append(mapped.upper() if c != low else mapped)
        else:
            out.append(c)
    return "".join(out)


def budgets_for(full_size: int) -> list[int]:
    """Three quarters, half and a quarter of the plan without a budget, in hundreds."""
    return [int(round(full_size * f, -2)) for f in (0.75, 0.5, 0.25)]


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def xlmr_model(vocab_size: int) -> Any:
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaForMaskedLM

    torch.manual_seed(0)
    config = XLMRobertaConfig(
        vocab_size=vocab_size,
        hidden_size=768,
        num_hidden_layers=2,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=514,
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    return XLMRobertaForMaskedLM(config).eval()


def _batches(tokenizer: Any, texts: list[str], size: int = 16) -> Any:
    for start in range(0, len(texts), size):
        yield tokenizer(
            texts[start : start + size],
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=128,
        )


def mlm_outputs(model: Any, tokenizer: Any, texts: list[str]) -> tuple[list, list]:
    """Per text: the mean-pooled last hidden state, and the LM head's input to its decoder."""
    import torch

    pooled, heads = [], []
    head = model.lm_head
    with torch.no_grad():
        for batch in _batches(tokenizer, texts):
            hidden = model.roberta(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled.extend((hidden * mask).sum(1) / mask.sum(1))
            x = head.layer_norm(torch.nn.functional.gelu(head.dense(hidden)))
            heads.extend(
                row[:n] for row, n in zip(x, batch["attention_mask"].sum(1).tolist(), strict=True)
            )
    return pooled, heads


def _logits(model: Any, x: Any, kept: Any = None) -> Any:
    head = model.lm_head
    weight = head.decoder.weight if kept is None else head.decoder.weight[kept]
    bias = head.bias if kept is None else head.bias[kept]
    return x @ weight.T + bias


def agreement(
    plan: Any,
    models: tuple[Any, Any],
    full: tuple[list, list],
    reduced: tuple[list, list],
    same: list[bool],
) -> dict[str, float]:
    import torch

    cos = [
        float(torch.nn.functional.cosine_similarity(a, b, dim=0))
        for a, b in zip(full[0], reduced[0], strict=True)
    ]
    kept = torch.tensor(plan.kept)
    with torch.no_grad():
        diffs = [
            float((_logits(models[0], a, kept) - _logits(models[1], b)).abs().max())
            for a, b, s in zip(full[1], reduced[1], same, strict=True)
            if s
        ]
    changed = [c for c, s in zip(cos, same, strict=True) if not s]
    return {
        "logits_max_abs_diff_identical": max(diffs) if diffs else 0.0,
        "pooled_cosine_mean": sum(cos) / len(cos),
        "pooled_cosine_min": min(cos),
        "pooled_cosine_mean_changed": sum(changed) / len(changed) if changed else 1.0,
    }


def identical_mask(plan: Any, tokenizer: Any, reduced_tok: Any, texts: list[str]) -> list[bool]:
    out = []
    for text in texts:
        ids = tokenizer(text, truncation=True, max_length=128)["input_ids"]
        new = reduced_tok(text, truncation=True, max_length=128)["input_ids"]
        out.append(all(plan.is_kept(i) for i in ids) and plan.remap(ids) == new)
    return out


def part_xlmr(train: list[str], held: list[str], other: list[str], work: Path) -> dict[str, Any]:
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from vocab_adapters import count_tokens, coverage, export_reduced, plan_from_texts
    from vocab_adapters.reports.coverage_report import coverage_curve, plot_coverage

    tokenizer = AutoTokenizer.from_pretrained(str(_tokenizers.build("xlmr")))
    vocab = len(tokenizer)
    t0 = time.perf_counter()
    full_plan = plan_from_texts(tokenizer, train)
    seconds_plan = time.perf_counter() - t0
    model = xlmr_model(vocab)
    model.save_pretrained(work / "full")
    tokenizer.save_pretrained(work / "full")
    size_full = dir_size(work / "full")
    shutil.rmtree(work / "full")
    full_out = mlm_outputs(model, tokenizer, held)
    budgets = [None, *budgets_for(full_plan.new_size)]
    rows = []
    for budget in budgets:
        t0 = time.perf_counter()
        plan = full_plan if budget is None else plan_from_texts(tokenizer, train, max_size=budget)
        seconds = time.perf_counter() - t0
        out = export_reduced(model, tokenizer, plan, work / f"plan-{budget}")
        row: dict[str, Any] = {
            "max_size": budget,
            "new_size": plan.new_size,
            "plan_seconds": round(seconds if budget else seconds_plan, 2),
            "disk_bytes": dir_size(out),
            "coverage_english": coverage(plan, tokenizer, held).to_dict(),
            "coverage_other": coverage(plan, tokenizer, other).to_dict(),
        }
        reduced_model = AutoModelForMaskedLM.from_pretrained(str(out)).eval()
        reduced_tok = AutoTokenizer.from_pretrained(str(out))
        same = identical_mask(plan, tokenizer, reduced_tok, held)
        row["agreement_english"] = agreement(
            plan,
            (model, reduced_model),
            full_out,
            mlm_outputs(reduced_model, reduced_tok, held),
            same,
        )
        shutil.rmtree(out)
        rows.append(row)
        print(json.dumps(row), flush=True)
    chosen = rows[2]
    plan = plan_from_texts(tokenizer, train, max_size=chosen["max_size"])
    curve = coverage_curve(
        tokenizer,
        held,
        order=count_tokens(tokenizer, train),
        extra_sizes=[r["new_size"] for r in rows],
        points=60,
    )
    report = coverage(plan, tokenizer, held)
    assert report.to_dict() == chosen["coverage_english"]
    plot_coverage(
        curve,
        ROOT / "docs" / "img" / "trim_coverage.png",
        chosen=(plan.new_size, report),
        title=f"250,002-id Unigram trimmed to English: held-out English ({len(held)} texts)",
    )
    estimated = {
        s: (i, g)
        for s, i, g in zip(curve.sizes, curve.identical_fraction, curve.tokens_growth, strict=True)
    }
    for r in rows:
        i, g = estimated[r["new_size"]]
        r["curve_identical_english"], r["curve_growth_english"] = i, g
    return {"vocab_size": vocab, "disk_bytes_full": size_full, "budgets": rows}


def part_minilm(train: list[str], held: list[str], other: list[str], work: Path) -> dict:
    import torch
    from sentence_transformers import SentenceTransformer

    from vocab_adapters import coverage, export_reduced, plan_from_texts

    path = str(_tokenizers.minilm_dir())
    st = SentenceTransformer(path, device="cpu")
    size_full = dir_size(Path(path))
    full_en = st.encode(held, convert_to_tensor=True)
    full_other = st.encode(other, convert_to_tensor=True)
    rows = []
    full_plan = plan_from_texts(st.tokenizer, train)
    for budget in (None, *budgets_for(full_plan.new_size)[1:]):
        plan = (
            full_plan if budget is None else plan_from_texts(st.tokenizer, train, max_size=budget)
        )
        out = export_reduced(st, st.tokenizer, plan, work / f"st-{budget}")
        reduced = SentenceTransformer(str(out), device="cpu")
        row = {"max_size": budget, "new_size": plan.new_size, "disk_bytes": dir_size(out)}
        for name, texts, full in (("english", held, full_en), ("other", other, full_other)):
            emb = reduced.encode(texts, convert_to_tensor=True)
            cos = torch.nn.functional.cosine_similarity(full, emb, dim=1)
            row[f"coverage_{name}"] = coverage(plan, st.tokenizer, texts).to_dict()
            row[f"cosine_{name}_mean"] = float(cos.mean())
            row[f"cosine_{name}_min"] = float(cos.min())
        shutil.rmtree(out)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return {"vocab_size": len(st.tokenizer), "disk_bytes_full": size_full, "budgets": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "trim_coverage.json"))
    parser.add_argument("--held", type=int, default=200, help="held-out texts per language")
    args = parser.parse_args()
    train, held = english()
    held = held[: args.held]
    other = [cyrillic(t) for t in held]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="trim-coverage-") as tmp:
        work = Path(tmp)
        result = {
            "train_texts": len(train),
            "held_out_texts": len(held),
            "xlmr": part_xlmr(train, held, other, work),
            "minilm": part_minilm(train, held, other, work),
        }
    result["seconds"] = round(time.perf_counter() - started, 1)
    h.write_json(args.out, result, newline=True)
    print(f"wrote {args.out} in {result['seconds']} s")


if __name__ == "__main__":
    main()
