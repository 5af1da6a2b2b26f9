"""softmax="full"/"shifted" through every loss path a trainer uses (issue 23, first bullet).

Each path runs through the real library on a reduced model and on an untouched full copy; the
step-1 loss of the reduced model must equal the full model's loss on the same batch through
the same path, and ``"shifted"``'s vector must get a gradient. Paths: a plain loop with
``model(..., labels=...)``, a loss outside the model from ``model(...).logits`` plus
``dropped_logsumexp``, the HF ``Trainer`` with the model's own loss, with
``label_smoothing_factor`` and with ``compute_loss_func``, TRL's fused LM head (the log-prob
path of its SFT/GRPO/RLOO/KTO/DPO trainers, with a temperature, added before or after
``apply_plan``), and a forward that computes its loss without the output layer (refused).
TRL's ``SFTTrainer`` itself is in ``tests/integration/test_trl.py``.
"""

from __future__ import annotations

import copy
import inspect
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from fixtures.models import remap, tiny_llama_lm
from vocab_adapters import apply_plan, revert_plan
from vocab_adapters.stages import softmax as softmax_adapter
from vocabcore import VocabError, VocabPlan

VOCAB = 211
MODES = ["full", "shifted"]


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(softmax_adapter, "DEFAULT_CHUNK_ROWS", 7)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def llama(tied: bool = False) -> Any:
    return tiny_llama_lm(VOCAB, tied=tied, seed=3).train()


def case(tied: bool = False) -> tuple[Any, Any, torch.Tensor, VocabPlan]:
    """A full model, a copy of it, a batch (old ids) and the plan of the batch."""
    generator = torch.Generator().manual_seed(5)
    pool = torch.randperm(VOCAB, generator=generator)[: VOCAB // 3]
    ids = pool[torch.randint(len(pool), (4, 12), generator=generator)]
    ids[:, 0] = 1
    plan = VocabPlan.from_ids(pool.reshape(1, -1).tolist(), vocab_size=VOCAB, keep=[0, 1, 2])
    model = llama()
    return model, copy.deepcopy(model), ids, plan


def shift_grad(model: Any) -> torch.Tensor:
    grad = model.get_output_embeddings().vocab_shift.grad
    assert grad is not None
    return grad


# -- a plain loop, and a loss outside the model ---------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_a_plain_loop_with_labels(mode: str) -> None:
    model, full, ids, plan = case()
    expected = full(input_ids=ids, labels=ids).loss
    applied = apply_plan(plan, model=model, softmax=mode)
    small = remap(plan, ids)
    loss = model(input_ids=small, labels=small).loss
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-6)
    loss.backward()
    if mode == "shifted":
        assert bool((shift_grad(model) != 0).any())
    revert_plan(applied)


@pytest.mark.parametrize("mode", MODES)
def test_a_loss_outside_the_model_from_its_outputs(mode: str) -> None:
    model, full, ids, plan = case()
    logits = full(input_ids=ids).logits[:, :-1]
    expected = nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())
    applied = apply_plan(plan, model=model, softmax=mode)
    small = remap(plan, ids)
    outputs = model(input_ids=small)  # no labels: new_size columns, the head input carried
    assert outputs.logits.shape[-1] == plan.new_size
    column = softmax_adapter.dropped_logsumexp(model, outputs)
    scores = torch.cat([outputs.logits, column.unsqueeze(-1)], dim=-1)[:, :-1]
    loss = nn.functional.cross_entropy(scores.flatten(0, 1), small[:, 1:].flatten())
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-6)
    loss.backward()
    if mode == "shifted":
        assert bool((shift_grad(model) != 0).any())
    with torch.no_grad():  # outside training, an output carries nothing
        plain = model(input_ids=small)
    with pytest.raises(VocabError, match="does not carry"):
        softmax_adapter.dropped_logsumexp(model, plain)
    revert_plan(applied)


# -- the HF Trainer -------------------------------------------------------------------------------


def recording(cls: type) -> type:
    """``cls`` (a Trainer class) recording the loss of every ``compute_loss`` call."""

    class Recording(cls):  # type: ignore[valid-type,misc]
        def compute_loss(self, *args: Any, **kwargs: Any) -> Any:
            out = super().compute_loss(*args, **kwargs)
            loss = out[0] if isinstance(out, tuple) else out
            self.losses.append(float(loss.detach()))
            return out

    Recording.losses = []  # type: ignore[attr-defined]
    return Recording


def trainer_run(model: Any, ids: torch.Tensor, out: Path, steps: int = 1, **extra: Any) -> Any:
    from transformers import Trainer, TrainingArguments

    options = {k: extra.pop(k) for k in list(extra) if k in ("compute_loss_func",)}
    args = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=len(ids),
        max_steps=steps,
        learning_rate=1e-2,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        use_cpu=True,
        disable_tqdm=True,
        **extra,
    )
    rows = [{"input_ids": row, "labels": row} for row in ids]
    cls = recording(Trainer)
    trainer = cls(model=model, args=args, train_dataset=rows, **options)
    trainer.losses = []
    trainer.train()
    return trainer


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("path", ["model loss", "label smoothing"])
def test_hf_trainer(mode: str, path: str, tmp_path: Path) -> None:
    extra = {"label_smoothing_factor": 0.1} if path == "label smoothing" else {}
    model, full, ids, plan = case()
    expected = trainer_run(full, ids, tmp_path / "full", **extra).losses[0]
    applied = apply_plan(plan, model=model, softmax=mode)
    trainer = trainer_run(model, remap(plan, ids), tmp_path / "reduced", **extra)
    assert trainer.losses[0] == pytest.approx(expected, rel=1e-5)
    if mode == "shifted":
        assert bool((model.get_output_embeddings().vocab_shift != 0).any())
    revert_plan(applied, optimizer=trainer.optimizer)


def test_hf_trainer_label_smoothing_differs_from_the_reduced_one(tmp_path: Path) -> None:
    """The check above is sensitive: ``"reduced"`` smooths over the kept ids only."""
    model, full, ids, plan = case()
    expected = trainer_run(full, ids, tmp_path / "full", label_smoothing_factor=0.1).losses[0]
    applied = apply_plan(plan, model=model, softmax="reduced")
    small = remap(plan, ids)
    trainer = trainer_run(model, small, tmp_path / "reduced", label_smoothing_factor=0.1)
    assert trainer.losses[0] != pytest.approx(expected, rel=1e-3)
    revert_plan(applied, optimizer=trainer.optimizer)


def test_hf_trainer_compute_loss_func_unmarked_is_refused(tmp_path: Path) -> None:
    model, _, ids, plan = case()

    def loss_func(outputs: Any, labels: Any, num_items_in_batch: Any = None) -> Any:
        logits = outputs.logits[:, :-1]
        return nn.functional.cross_entropy(logits.flatten(0, 1), labels[:, 1:].flatten())

    applied = apply_plan(plan, model=model, softmax="shifted")
    with pytest.raises(VocabError, match=r"compute_loss_func.*full_vocab_loss"):
        trainer_run(model, remap(plan, ids), tmp_path / "r", compute_loss_func=loss_func)
    revert_plan(applied)


@pytest.mark.parametrize("mode", MODES)
def test_hf_trainer_compute_loss_func_marked(mode: str, tmp_path: Path) -> None:
    model, full, ids, plan = case()

    def full_func(outputs: Any, labels: Any, num_items_in_batch: Any = None) -> Any:
        logits = outputs.logits[:, :-1]
        return nn.functional.cross_entropy(logits.flatten(0, 1), labels[:, 1:].flatten())

    @softmax_adapter.full_vocab_loss
    def reduced_func(outputs: Any, labels: Any, num_items_in_batch: Any = None) -> Any:
        column = softmax_adapter.dropped_logsumexp(model, outputs)
        logits = torch.cat([outputs.logits, column.unsqueeze(-1)], dim=-1)[:, :-1]
        return nn.functional.cross_entropy(logits.flatten(0, 1), labels[:, 1:].flatten())

    expected = trainer_run(full, ids, tmp_path / "f", compute_loss_func=full_func).losses[0]
    applied = apply_plan(plan, model=model, softmax=mode)
    small = remap(plan, ids)
    trainer = trainer_run(model, small, tmp_path / "r", compute_loss_func=reduced_func)
    assert trainer.losses[0] == pytest.approx(expected, rel=1e-5)
    if mode == "shifted":
        assert bool((model.get_output_embeddings().vocab_shift != 0).any())
    revert_plan(applied, optimizer=trainer.optimizer)


# -- TRL's fused LM head (SFT, GRPO, RLOO, KTO, DPO compute their log-probs with it) -------------


def fused(model: Any, ids: torch.Tensor, **kwargs: Any) -> Any:
    return model(input_ids=ids, labels=ids, fused_lm_head=True, **kwargs)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("order", ["head then apply", "apply then head"])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_trl_fused_lm_head(mode: str, order: str, temperature: float) -> None:
    trl_utils = pytest.importorskip("trl.trainer.utils")
    if not hasattr(trl_utils, "add_fused_lm_head"):
        pytest.skip("this TRL has no fused LM head")
    model, full, ids, plan = case()
    labels = ids.clone()
    labels[:, :3] = -100
    trl_utils.add_fused_lm_head(full, temperature=temperature)
    expected = fused(full, ids)
    logits = full(input_ids=ids).logits[:, :-1] / temperature
    reference = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    torch.testing.assert_close(expected.log_probs, reference, rtol=1e-5, atol=1e-5)
    expected_masked = full(input_ids=ids, labels=labels, fused_lm_head=True)

    if order == "head then apply":
        trl_utils.add_fused_lm_head(model, temperature=temperature)
    applied = apply_plan(plan, model=model, softmax=mode)
    if order == "apply then head":
        trl_utils.add_fused_lm_head(model, temperature=temperature)
    small = remap(plan, ids)
    # the wrapped forward keeps the signature generate() and the Trainer read
    assert list(inspect.signature(model.forward).parameters)[:2] == ["input_ids", "attention_mask"]
    with torch.no_grad():
        generated = model.generate(small[:1, :4], max_new_tokens=2, do_sample=False)
    assert int(generated.max()) < plan.new_size
    small_labels = small.masked_fill(labels == -100, -100)
    got = fused(model, small)
    torch.testing.assert_close(got.log_probs, expected.log_probs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.loss, expected.loss, rtol=1e-5, atol=1e-6)
    masked = model(input_ids=small, labels=small_labels, fused_lm_head=True, num_items_in_batch=5)
    assert bool((masked.log_probs[:, :2] == 0).all())
    torch.testing.assert_close(masked.log_probs, expected_masked.log_probs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        masked.loss, -expected_masked.log_probs.sum() / 5, rtol=1e-5, atol=1e-6
    )
    masked.loss.backward()
    if mode == "shifted":
        assert bool((shift_grad(model) != 0).any())
    # the un-fused call of the patched forward still gets the extra column
    own = model(input_ids=small, labels=small)
    torch.testing.assert_close(own.loss, full(input_ids=ids, labels=ids).loss, rtol=1e-6, atol=1e-6)
    revert_plan(applied)
    assert "forward" in model.__dict__  # TRL's head stays on the model after revert
    after = fused(model, ids)
    if mode == "full":
        torch.testing.assert_close(after.log_probs, expected.log_probs, rtol=1e-5, atol=1e-5)


def test_trl_fused_lm_head_gradients_equal_the_full_model() -> None:
    trl_utils = pytest.importorskip("trl.trainer.utils")
    if not hasattr(trl_utils, "add_fused_lm_head"):
        pytest.skip("this TRL has no fused LM head")
    model, full, ids, plan = case()
    trl_utils.add_fused_lm_head(full)
    fused(full, ids).loss.backward()
    applied = apply_plan(plan, model=model, softmax="full")
    trl_utils.add_fused_lm_head(model)
    fused(model, remap(plan, ids)).loss.backward()
    for (name, param), reference in zip(
        model.model.named_parameters(), full.model.parameters(), strict=True
    ):
        if param.grad is None:
            continue
        expected = reference.grad
        if name == "embed_tokens.weight":
            expected = expected.index_select(0, torch.tensor(plan.kept))
        torch.testing.assert_close(param.grad, expected, rtol=1e-4, atol=1e-6, msg=name)
    revert_plan(applied)


def test_an_unknown_fused_head_is_refused() -> None:
    model, _, ids, plan = case()
    applied = apply_plan(plan, model=model, softmax="full")
    original = model.forward

    def _fused_forward(self: Any, *args: Any, fused_lm_head: bool = False, **kwargs: Any) -> Any:
        return original(*args, **kwargs)

    model.forward = types.MethodType(_fused_forward, model)
    small = remap(plan, ids)
    with pytest.raises(VocabError, match="fused LM head vocabcore does not know"):
        model(input_ids=small, labels=small, fused_lm_head=True)
    revert_plan(applied)
    assert model.forward.__func__ is _fused_forward  # an instance forward stays after revert


def test_a_forward_whose_loss_skips_the_output_layer_is_refused() -> None:
    """A fused loss kernel (Liger's style) computes the loss from the weight: never silent."""
    from transformers.modeling_outputs import CausalLMOutput

    model, _, ids, plan = case()
    applied = apply_plan(plan, model=model, softmax="shifted")

    def fused_loss_forward(self: Any, input_ids: Any, labels: Any = None, **kwargs: Any) -> Any:
        hidden = self.model(input_ids=input_ids).last_hidden_state
        logits = nn.functional.linear(hidden, self.lm_head.weight)[:, :-1]
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), labels[:, 1:].flatten())
        return CausalLMOutput(loss=loss)

    model.forward = types.MethodType(fused_loss_forward, model)
    small = remap(plan, ids)
    with pytest.raises(VocabError, match="without calling the output layer"):
        model(input_ids=small, labels=small)
    revert_plan(applied)


def test_copying_a_reduced_model_is_refused_by_name() -> None:
    """TRL's DPO/KTO/GRPO copy the model for a reference model when none is given."""
    model, _, _, plan = case()
    applied = apply_plan(plan, model=model, softmax="full")
    with pytest.raises(VocabError, match="ref_model="):
        copy.deepcopy(model)
    revert_plan(applied)
    copy.deepcopy(model)


@pytest.mark.parametrize("mode", MODES)
def test_trl_fused_lm_head_under_peft(mode: str) -> None:
    """SFTTrainer adds TRL's head to the PEFT model's base model, the one it then calls."""
    peft = pytest.importorskip("peft")
    trl_utils = pytest.importorskip("trl.trainer.utils")
    if not hasattr(trl_utils, "add_fused_lm_head"):
        pytest.skip("this TRL has no fused LM head")
    import warnings

    model, full, ids, plan = case()
    trl_utils.add_fused_lm_head(full)
    expected = fused(full, ids)
    config = peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], modules_to_save=["lm_head"])
    lora = peft.get_peft_model(model, config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        applied = apply_plan(plan, model=lora, softmax=mode)
    trl_utils.add_fused_lm_head(lora.get_base_model())
    small = remap(plan, ids)
    got = fused(lora, small)
    torch.testing.assert_close(got.log_probs, expected.log_probs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.loss, expected.loss, rtol=1e-5, atol=1e-6)
    revert_plan(applied)
    assert "forward" in lora.get_base_model().__dict__


def test_hf_trainer_compute_loss_from_logits_is_refused_unless_marked(tmp_path: Path) -> None:
    """A ``compute_loss`` that calls the model without labels (older TRL trainers do)."""
    from transformers import Trainer

    model, full, ids, plan = case()

    class FromLogits(Trainer):
        def compute_loss(self, model: Any, inputs: Any, **kwargs: Any) -> Any:
            labels = inputs.pop("labels")
            outputs = model(**inputs)
            logits = outputs.logits
            if getattr(self, softmax_adapter.FULL_VOCAB_MARK, False):
                column = softmax_adapter.dropped_logsumexp(model, outputs)
                logits = torch.cat([logits, column.unsqueeze(-1)], dim=-1)
            logits = logits[:, :-1]
            loss = nn.functional.cross_entropy(logits.flatten(0, 1), labels[:, 1:].flatten())
            self.losses.append(float(loss.detach()))
            return loss

    def run(model: Any, ids: torch.Tensor, out: Path, mark: bool = False) -> Any:
        from transformers import TrainingArguments

        args = TrainingArguments(
            output_dir=str(out),
            per_device_train_batch_size=len(ids),
            max_steps=1,
            report_to=[],
            save_strategy="no",
            use_cpu=True,
            disable_tqdm=True,
        )
        rows = [{"input_ids": row, "labels": row} for row in ids]
        trainer = FromLogits(model=model, args=args, train_dataset=rows)
        trainer.losses = []  # type: ignore[attr-defined]
        if mark:
            softmax_adapter.full_vocab_loss(trainer)
        trainer.train()
        return trainer

    expected = run(full, ids, tmp_path / "full").losses[0]
    applied = apply_plan(plan, model=model, softmax="shifted")
    small = remap(plan, ids)
    with pytest.raises(VocabError, match=r"FromLogits.compute_loss calls the model without"):
        run(model, small, tmp_path / "refused")
    trainer = run(model, small, tmp_path / "marked", mark=True)
    assert trainer.losses[0] == pytest.approx(expected, rel=1e-5)
    revert_plan(applied, optimizer=trainer.optimizer)
