"""TRL ``SFTTrainer`` on conversations with a reduced vocabulary (the docs/recipes.md recipe).

A tiny Qwen2 with the Qwen tokenizer shape (pad ``<|endoftext|>`` after the ordinary
vocabulary, ``config.pad_token_id`` unset as in real Qwen2.5 configs), trained a few steps on a
conversational ``datasets.Dataset`` with a ``messages`` column. Also the callback path (a
Trainer built before the plan is applied, TRL's collator keeping the full pad id, a training
step that raises), PEFT LoRA with ``embed_tokens``/``lm_head`` in ``modules_to_save``, the
softmax modes through SFTTrainer's fused LM head, and DPOTrainer's log-probs with a reference
model reduced beside the policy or precomputed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from fixtures.llm_models import build_llm_case
from fixtures.llm_tokenizers import CONVERSATIONS
from vocab_adapters import apply_plan, plan_from_texts, revert_plan
from vocabcore import VocabError, VocabPlan

trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

MESSAGES = [
    [
        {"role": "user", "content": f"What is {a} plus {b}?"},
        {"role": "assistant", "content": f"{a} plus {b} is {a + b}."},
    ]
    for a, b in [(1, 2), (3, 4), (5, 6), (7, 8), (2, 9), (4, 4), (6, 1), (9, 9)]
] + CONVERSATIONS


# Trainer options every run here shares: no checkpoints, reports, progress bars or workers.
QUIET: dict[str, Any] = {
    "save_strategy": "no",
    "report_to": [],
    "use_cpu": True,
    "dataloader_num_workers": 0,
    "disable_tqdm": True,
}


@pytest.fixture(autouse=True)
def one_thread() -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _args(out: Path, **extra: Any) -> Any:
    return trl.SFTConfig(
        output_dir=str(out),
        max_steps=3,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        logging_steps=1,
        **QUIET,
        **extra,
    )


def _model_and_tokenizer(load_llm_tokenizer: Any) -> tuple[Any, Any]:
    tok = load_llm_tokenizer("qwen2")
    model = build_llm_case("qwen2", tok)
    model.config.pad_token_id = None  # as in Qwen2.5 / Llama 3 configs
    model.generation_config.pad_token_id = None
    return model, tok


def test_sft_trainer_recipe(load_llm_tokenizer: Any, tmp_path: Path) -> None:
    model, tok = _model_and_tokenizer(load_llm_tokenizer)
    train = datasets.Dataset.from_dict({"messages": MESSAGES})
    embedding_before = model.get_input_embeddings().weight.detach().clone()

    # the recipe: plan from the training conversations, apply, build the trainer, train, revert
    plan = plan_from_texts(tok, train, model=model)
    applied = apply_plan(plan, model=model, tokenizer=tok)
    trainer = trl.SFTTrainer(
        model=model, args=_args(tmp_path / "run"), train_dataset=train, processing_class=tok
    )
    trainer.train()
    revert_plan(applied)

    full_pad = tok.convert_tokens_to_ids("<|endoftext|>")
    assert len(tok) == plan.vocab_size and tok.pad_token_id == full_pad
    # TRL 1.x writes the (reduced) pad id into the config; older TRL leaves it unset
    written = (full_pad,) if int(trl.__version__.split(".")[0]) >= 1 else (None, full_pad)
    assert model.config.pad_token_id in written
    weight = model.get_input_embeddings().weight.detach()
    dropped = [i for i in range(weight.shape[0]) if i >= plan.vocab_size or i not in plan.kept]
    assert torch.equal(weight[dropped], embedding_before[dropped])
    assert not torch.equal(weight[list(plan.kept)], embedding_before[list(plan.kept)])

    model.save_pretrained(str(tmp_path / "out"))
    tok.save_pretrained(str(tmp_path / "out"))
    from transformers import AutoModelForCausalLM, AutoTokenizer

    reloaded = AutoModelForCausalLM.from_pretrained(str(tmp_path / "out")).eval()
    tok2 = AutoTokenizer.from_pretrained(str(tmp_path / "out"))
    assert reloaded.config.pad_token_id in written
    prompt = tok2.apply_chat_template(
        MESSAGES[0][:1], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = reloaded.generate(**prompt, max_new_tokens=4, do_sample=False)
    assert out.shape[1] == prompt["input_ids"].shape[1] + 4 or out[0, -1] == tok2.eos_token_id


def _tokenized(tok: Any) -> Any:
    ids = [tok.apply_chat_template(m, tokenize=True, return_dict=False) for m in MESSAGES]
    return datasets.Dataset.from_dict({"input_ids": [list(i) for i in ids]})


def test_callback_with_trl_collator_and_a_failing_step(
    load_llm_tokenizer: Any, tmp_path: Path
) -> None:
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from vocab_adapters.integrations.trainer import VocabReductionCallback

    model, tok = _model_and_tokenizer(load_llm_tokenizer)
    train = _tokenized(tok)  # tokenized with the full tokenizer
    plan = plan_from_texts(tok, MESSAGES, model=model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    callback = VocabReductionCallback(plan, tok)
    collator = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id)  # the full id
    trainer = trl.SFTTrainer(
        model=model,
        args=_args(tmp_path / "cb", dataset_kwargs={"skip_prepare_dataset": True}),
        train_dataset=train,
        processing_class=tok,
        data_collator=callback.wrap_collator(collator),
        callbacks=[callback],
    )
    callback.train(trainer)
    assert not callback.active and len(tok) == plan.vocab_size
    assert collator.pad_token_id == tok.pad_token_id

    class Boom(Exception):
        pass

    def fail(*args: Any, **kwargs: Any) -> None:
        assert callback.active  # raised while reduced
        raise Boom

    trainer.compute_loss = fail  # type: ignore[method-assign]
    with pytest.raises(Boom):
        callback.train(trainer)
    assert not callback.active and len(tok) == plan.vocab_size
    assert (
        model.get_input_embeddings().weight.shape[0] == state["model.embed_tokens.weight"].shape[0]
    )


def test_peft_lora_modules_to_save_on_qwen2(load_llm_tokenizer: Any) -> None:
    peft = pytest.importorskip("peft")
    model, tok = _model_and_tokenizer(load_llm_tokenizer)
    plan: VocabPlan = plan_from_texts(tok, MESSAGES, model=model)
    ids = torch.tensor([tok.apply_chat_template(MESSAGES[0], tokenize=True, return_dict=False)])
    initial = model.get_input_embeddings().weight.detach().clone()
    config = peft.LoraConfig(
        r=4, target_modules=["q_proj", "v_proj"], modules_to_save=["embed_tokens", "lm_head"]
    )
    lora = peft.get_peft_model(model, config)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        applied = apply_plan(plan, model=lora, tokenizer=tok)
    reduced = torch.tensor([plan.remap(ids[0].tolist())])
    optimizer = torch.optim.AdamW([p for p in lora.parameters() if p.requires_grad], lr=1e-2)
    lora(input_ids=reduced, labels=reduced).loss.backward()
    optimizer.step()
    revert_plan(applied)
    merged = lora.merge_and_unload()
    weight = merged.get_input_embeddings().weight.detach()
    dropped = [i for i in range(weight.shape[0]) if i >= plan.vocab_size or i not in plan.kept]
    assert weight.shape == initial.shape
    assert torch.equal(weight[dropped], initial[dropped])
    assert not torch.equal(weight[list(plan.kept)], initial[list(plan.kept)])


# -- softmax="full"/"shifted" under SFTTrainer's fused LM head (issue 23) -------------------------


def _sft_first_loss(
    model: Any, tok: Any, out: Path, run: Any = None, **extra: Any
) -> tuple[float, Any]:
    """The loss SFTTrainer computes at step 1 (its own ``compute_loss``, recorded), and the run.

    ``run``: given a built trainer, trains it (default ``trainer.train()``).
    """
    losses: list[float] = []

    class Recording(trl.SFTTrainer):  # type: ignore[misc]
        def compute_loss(self, *args: Any, **kwargs: Any) -> Any:
            result = super().compute_loss(*args, **kwargs)
            loss = result[0] if isinstance(result, tuple) else result
            losses.append(float(loss.detach()))
            return result

    keys = ("compute_loss_func", "data_collator", "callbacks", "train_dataset")
    options = {k: extra.pop(k) for k in list(extra) if k in keys}
    train = options.pop("train_dataset", datasets.Dataset.from_dict({"messages": MESSAGES}))
    args = trl.SFTConfig(
        output_dir=str(out),
        max_steps=1,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        **QUIET,
        **extra,
    )
    trainer = Recording(
        model=model, args=args, train_dataset=train, processing_class=tok, **options
    )
    if run is None:
        trainer.train()
    else:
        run(trainer)
    return losses[0], trainer


def _fused_by_default() -> bool:
    from trl.trainer import utils

    return hasattr(utils, "add_fused_lm_head")


@pytest.mark.parametrize("mode", ["full", "shifted", "reduced"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_sft_trainer_softmax_modes_give_the_full_vocabulary_loss(
    mode: str, smoothing: float, load_llm_tokenizer: Any, tmp_path: Path
) -> None:
    """SFTTrainer's step-1 loss with a reduced model equals the full model's, shift trains."""
    extra = {"label_smoothing_factor": smoothing} if smoothing else {}
    full, full_tok = _model_and_tokenizer(load_llm_tokenizer)
    expected, _ = _sft_first_loss(full, full_tok, tmp_path / "full", **extra)

    model, tok = _model_and_tokenizer(load_llm_tokenizer)
    plan = plan_from_texts(tok, MESSAGES, model=model)
    assert plan.new_size < plan.vocab_size
    head_before = model.get_output_embeddings().weight.detach().clone()
    applied = apply_plan(plan, model=model, tokenizer=tok, softmax=mode)
    loss, trainer = _sft_first_loss(model, tok, tmp_path / mode, **extra)
    if mode == "reduced":  # the check is sensitive: the reduced loss is another number
        assert loss != pytest.approx(expected, rel=1e-3)
        assert loss < expected or smoothing  # a normaliser over fewer rows
    else:
        assert loss == pytest.approx(expected, rel=1e-5)
    if mode == "shifted":
        shift = model.get_output_embeddings().vocab_shift.detach().clone()
        assert bool((shift != 0).any())
    revert_plan(applied, optimizer=trainer.optimizer)
    head = model.get_output_embeddings().weight.detach()
    dropped = torch.tensor([i for i in range(head.shape[0]) if i not in set(plan.kept)])
    if mode == "shifted":
        torch.testing.assert_close(head[dropped], head_before[dropped] + shift)
    else:
        assert torch.equal(head[dropped], head_before[dropped])


def test_sft_trainer_unmarked_compute_loss_func_is_refused(
    load_llm_tokenizer: Any, tmp_path: Path
) -> None:
    from vocabcore import VocabError

    model, tok = _model_and_tokenizer(load_llm_tokenizer)
    plan = plan_from_texts(tok, MESSAGES, model=model)
    applied = apply_plan(plan, model=model, tokenizer=tok, softmax="shifted")

    def loss_func(outputs: Any, labels: Any, num_items_in_batch: Any = None) -> Any:
        logits = outputs.logits[:, :-1]
        return torch.nn.functional.cross_entropy(
            logits.flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100
        )

    with pytest.raises(VocabError, match="compute_loss_func"):
        _sft_first_loss(model, tok, tmp_path / "r", compute_loss_func=loss_func)
    revert_plan(applied)


@pytest.mark.parametrize("mode", ["full", "shifted"])
def test_callback_softmax_under_sft_trainer(
    mode: str, load_llm_tokenizer: Any, tmp_path: Path
) -> None:
    """The callback applies after TRL added its fused head: the loss is still the full one."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from vocab_adapters.integrations.trainer import VocabReductionCallback

    full, full_tok = _model_and_tokenizer(load_llm_tokenizer)
    collated = {"dataset_kwargs": {"skip_prepare_dataset": True}}
    expected, _ = _sft_first_loss(
        full,
        full_tok,
        tmp_path / "full",
        train_dataset=_tokenized(full_tok),
        data_collator=DataCollatorForLanguageModeling(pad_token_id=full_tok.pad_token_id),
        **collated,
    )
    model, tok = _model_and_tokenizer(load_llm_tokenizer)
    head_before = model.get_output_embeddings().weight.detach().clone()
    plan = plan_from_texts(tok, MESSAGES, model=model)
    callback = VocabReductionCallback(plan, tok, softmax=mode)
    collator = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id)
    loss, _ = _sft_first_loss(
        model,
        tok,
        tmp_path / mode,
        run=callback.train,
        train_dataset=_tokenized(tok),
        data_collator=callback.wrap_collator(collator),
        callbacks=[callback],
        **collated,
    )
    assert not callback.active
    assert loss == pytest.approx(expected, rel=1e-5)
    head = model.get_output_embeddings().weight.detach()
    dropped = [i for i in range(head.shape[0]) if i not in set(plan.kept)]
    assert torch.equal(head[dropped], head_before[dropped]) == (mode == "full")


# -- DPO: the policy's and the reference's log-probs are full-vocabulary ones ----------------------

PREFERENCES = {
    "prompt": [f"What is {a} plus {b}?" for a, b in [(1, 2), (3, 4), (5, 6), (7, 8)]],
    "chosen": [f" {a} plus {b} is {a + b}." for a, b in [(1, 2), (3, 4), (5, 6), (7, 8)]],
    "rejected": [f" It is {a * b + 1}, I think." for a, b in [(1, 2), (3, 4), (5, 6), (7, 8)]],
}


def _dpo_first_metrics(model: Any, tok: Any, out: Path, **extra: Any) -> dict[str, float]:
    """The metrics DPOTrainer logs at its first step (log-probs of chosen and rejected)."""
    args = trl.DPOConfig(
        output_dir=str(out),
        max_steps=1,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        logging_steps=1,
        **QUIET,
        **{k: v for k, v in extra.items() if k != "ref_model"},
    )
    trainer = trl.DPOTrainer(
        model=model,
        ref_model=extra.get("ref_model"),
        args=args,
        train_dataset=datasets.Dataset.from_dict(PREFERENCES),
        processing_class=tok,
    )
    trainer.train()
    logged = next(entry for entry in trainer.state.log_history if "loss" in entry)
    return {key: float(value) for key, value in logged.items() if isinstance(value, float)}


def _dpo_plan(tok: Any, model: Any) -> VocabPlan:
    texts = [p + c for p, c in zip(PREFERENCES["prompt"], PREFERENCES["chosen"], strict=True)]
    texts += [p + r for p, r in zip(PREFERENCES["prompt"], PREFERENCES["rejected"], strict=True)]
    return plan_from_texts(tok, texts, model=model)


def _has(module: str) -> bool:
    """Whether TRL has ``module``, without importing it (trl 0.17's GRPO config module edits
    transformers 4.46's ``TrainingArguments`` fields on import)."""
    import importlib.util

    return importlib.util.find_spec(f"trl.trainer.{module}") is not None


@pytest.mark.skipif(not _has("dpo_trainer"), reason="this TRL has no DPOTrainer")
@pytest.mark.parametrize("mode", ["shifted", "reduced"])
@pytest.mark.parametrize("reference", ["ref_model", "precomputed"])
def test_dpo_trainer_log_probs_are_the_full_vocabulary_ones(
    mode: str, reference: str, load_llm_tokenizer: Any, tmp_path: Path
) -> None:
    """DPOTrainer (fused LM head) on a reduced policy logs the full model's log-probs.

    The reference is a second model reduced with the same plan (``softmax="full"`` beside a
    ``"full"``/``"shifted"`` policy: frozen, full-vocabulary log-probs; ``"reduced"`` beside a
    ``"reduced"`` one, else the rewards compare log-probs normalised over different rows), or
    the policy itself before training (``precompute_ref_log_probs=True``); a reduced model
    cannot be copied for one.
    """
    import copy

    full, full_tok = _model_and_tokenizer(load_llm_tokenizer)
    if reference == "ref_model":
        options: dict[str, Any] = {"ref_model": copy.deepcopy(full)}
    else:
        options = {"precompute_ref_log_probs": True}
    expected = _dpo_first_metrics(full, full_tok, tmp_path / "full", **options)

    model, tok = _model_and_tokenizer(load_llm_tokenizer)
    plan = _dpo_plan(tok, model)
    assert plan.new_size < plan.vocab_size
    if reference == "ref_model":
        ref = copy.deepcopy(model)  # before apply: a reduced model refuses to be copied
        ref_mode = "reduced" if mode == "reduced" else "full"
        ref_applied = apply_plan(plan, model=ref, softmax=ref_mode)
        options = {"ref_model": ref}
    applied = apply_plan(plan, model=model, tokenizer=tok, softmax=mode)
    try:
        if mode == "shifted" and not _fused_by_default():
            # older TRL computes log-probs from the logits: refused, never silently "reduced"
            with pytest.raises(VocabError, match="calls the model without labels"):
                _dpo_first_metrics(model, tok, tmp_path / mode, **options)
            return
        got = _dpo_first_metrics(model, tok, tmp_path / mode, **options)
    finally:
        revert_plan(applied)
        if reference == "ref_model":
            revert_plan(ref_applied)
    for key in ("logps/chosen", "logps/rejected"):
        if mode == "shifted":
            assert got[key] == pytest.approx(expected[key], rel=1e-4), key
        else:  # normalised over the kept ids: every log-prob is higher
            assert got[key] > expected[key] + 1e-3, key
    assert got["loss"] == pytest.approx(expected["loss"], rel=1e-4)


# -- GRPO: rollouts from the reduced model, log-probs through the corrected fused head ------------


@pytest.fixture
def training_args_fields() -> Any:
    """Undo trl 0.17's edit of transformers 4.x's ``_VALID_DICT_FIELDS`` (made on importing its
    GRPO config), which breaks every later plain ``TrainingArguments`` in the process."""
    from transformers import training_args

    fields = getattr(training_args, "_VALID_DICT_FIELDS", None)
    saved = list(fields) if isinstance(fields, list) else None
    yield
    if saved is not None and isinstance(fields, list):
        fields[:] = saved


@pytest.mark.skipif(not _has("grpo_trainer"), reason="this TRL has no GRPOTrainer")
@pytest.mark.usefixtures("training_args_fields")
def test_grpo_trainer_trains_the_shift(load_llm_tokenizer: Any, tmp_path: Path) -> None:
    """GRPOTrainer generates with the reduced model and trains it with softmax="shifted".

    Older TRL (no fused LM head) copies the model for a reference and computes log-probs from
    logits: refused with an error naming the fix.
    """
    model, tok = _model_and_tokenizer(load_llm_tokenizer)
    prompts = [f"What is {a} plus {b}?" for a, b in [(1, 2), (3, 4), (5, 6), (7, 8)]]
    plan = plan_from_texts(tok, [*prompts, *PREFERENCES["chosen"]], model=model)
    head_before = model.get_output_embeddings().weight.detach().clone()
    applied = apply_plan(plan, model=model, tokenizer=tok, softmax="shifted")
    seen: list[str] = []

    def reward(completions: list[str], **kwargs: Any) -> list[float]:
        seen.extend(completions)
        return [float(sum(map(ord, c)) % 5) for c in completions]  # varied: nonzero advantages

    args = trl.GRPOConfig(
        output_dir=str(tmp_path / "grpo"),
        max_steps=1,
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=4,
        learning_rate=1e-2,
        **QUIET,
    )

    def build() -> Any:
        return trl.GRPOTrainer(
            model=model,
            reward_funcs=reward,
            args=args,
            train_dataset=datasets.Dataset.from_dict({"prompt": prompts}),
            processing_class=tok,
        )

    if not _fused_by_default():
        with pytest.raises(VocabError, match=r"cannot be copied|calls the model without labels"):
            build().train()
        revert_plan(applied)
        return
    trainer = build()
    trainer.train()
    shift = model.get_output_embeddings().vocab_shift.detach().clone()
    revert_plan(applied, optimizer=trainer.optimizer)
    assert seen  # rollouts were generated and decoded by the reduced tokenizer
    assert bool((shift != 0).any())  # the log-probs went through the normaliser
    head = model.get_output_embeddings().weight.detach()
    assert head.shape == head_before.shape
    dropped = torch.tensor([i for i in range(head.shape[0]) if i not in set(plan.kept)])
    torch.testing.assert_close(head[dropped], head_before[dropped] + shift)


def test_sft_trainer_with_the_sampled_normaliser(load_llm_tokenizer: Any, tmp_path: Path) -> None:
    """normaliser="sampled:M" through TRL's fused head: near the full loss, the shift trains."""
    full, full_tok = _model_and_tokenizer(load_llm_tokenizer)
    expected, _ = _sft_first_loss(full, full_tok, tmp_path / "full")
    model, tok = _model_and_tokenizer(load_llm_tokenizer)
    rows = model.get_output_embeddings().weight.shape[0]
    plan = plan_from_texts(tok, MESSAGES, model=model)
    dropped = plan.vocab_size - plan.new_size
    applied = apply_plan(
        plan, model=model, tokenizer=tok, softmax="shifted", normaliser="sampled:1/2"
    )
    loss, trainer = _sft_first_loss(model, tok, tmp_path / "sampled")
    assert dropped > 4 and loss == pytest.approx(expected, rel=0.05)
    shift = model.get_output_embeddings().vocab_shift.detach().clone()
    assert bool((shift != 0).any())
    revert_plan(applied, optimizer=trainer.optimizer)
    assert model.get_output_embeddings().weight.shape[0] == rows
