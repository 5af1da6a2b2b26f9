"""memory_estimate against what real tiny models allocate in one real training step."""

from __future__ import annotations

import resource
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from vocab_adapters import apply_plan, memory_estimate
from vocab_adapters.reports.memory import MemoryEstimate
from vocabcore import PlanMismatchError, VocabError, VocabPlan

VOCAB = 211
PADDED_ROWS = 224
BATCH, SEQ = 2, 12
OPTIMIZERS = ("adamw", "sgd", "sgd-momentum", "adamw8bit")
MODELS = ("tied", "untied", "padded", "lora", "lora-modules-to-save")


def llama_config(**extra: Any) -> LlamaConfig:
    base: dict[str, Any] = {
        "vocab_size": VOCAB,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 1,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 64,
        "tie_word_embeddings": True,
        "architectures": ["LlamaForCausalLM"],
    }
    base.update(extra)
    return LlamaConfig(**base)


def build(kind: str) -> Any:
    torch.manual_seed(0)
    if kind == "untied":
        return LlamaForCausalLM(llama_config(tie_word_embeddings=False))
    if kind == "padded":  # Qwen-style: more embedding rows than the tokenizer has ids
        config = Qwen2Config(
            vocab_size=PADDED_ROWS,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=1,
            num_attention_heads=4,
            num_key_value_heads=2,
            tie_word_embeddings=True,
        )
        return Qwen2ForCausalLM(config)
    model = LlamaForCausalLM(llama_config())
    if kind.startswith("lora"):
        peft = pytest.importorskip("peft")
        extra: dict[str, Any] = {}
        if kind == "lora-modules-to-save":
            model = LlamaForCausalLM(llama_config(tie_word_embeddings=False))
            extra["modules_to_save"] = ["embed_tokens", "lm_head"]
        config = peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], **extra)
        model = peft.get_peft_model(model, config)
    return model


def plan() -> VocabPlan:
    kept = sorted({0, 1, 2, *range(3, VOCAB, 4)})
    return VocabPlan.from_ids([kept], vocab_size=VOCAB)


def make_optimizer(name: str, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    if name == "adamw":
        return torch.optim.AdamW(params, lr=1e-3)
    if name == "sgd":
        return torch.optim.SGD(params, lr=1e-3)
    if name == "sgd-momentum":
        return torch.optim.SGD(params, lr=1e-3, momentum=0.9)
    bnb = pytest.importorskip("bitsandbytes")
    optimizer: torch.optim.Optimizer = bnb.optim.AdamW8bit(params, lr=1e-3)
    return optimizer


def one_step(model: Any, optimizer_name: str, ids: torch.Tensor) -> dict[str, int]:
    """Run one real step; return what it allocated (tensors counted once by identity)."""
    unique: dict[int, torch.nn.Parameter] = {}
    for parameter in model.parameters():
        unique.setdefault(id(parameter), parameter)
    params = list(unique.values())
    trainable = [p for p in params if p.requires_grad]
    optimizer = make_optimizer(optimizer_name, trainable)
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    optimizer.step()
    state: dict[int, torch.Tensor] = {}
    for entries in optimizer.state.values():
        for value in entries.values():
            if isinstance(value, torch.Tensor) and value.dim() > 0:  # not the scalar step
                state.setdefault(value.data_ptr(), value)
    return {
        "parameters": sum(p.numel() for p in params),
        "trainable_parameters": sum(p.numel() for p in trainable),
        "parameter_bytes": sum(p.numel() * p.element_size() for p in params),
        "gradient_bytes": sum(
            p.grad.numel() * p.grad.element_size() for p in params if p.grad is not None
        ),
        "optimizer_state_bytes": sum(t.numel() * t.element_size() for t in state.values()),
        "logits_bytes": out.logits.float().numel() * 4,
    }


def figures(estimate: Any) -> dict[str, int]:
    result: dict[str, int] = estimate.as_dict()
    # loss, activations and peak: tests/adapters/test_memory_activations.py
    # held_bytes: test_held_bytes_are_what_the_applied_plan_holds
    for key in ("total_bytes", "loss_bytes", "activation_bytes", "peak_bytes", "held_bytes"):
        del result[key]
    return result


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("kind", MODELS)
def test_estimate_equals_one_real_step(kind: str, optimizer: str) -> None:
    ids = torch.randint(0, VOCAB, (BATCH, SEQ), generator=torch.Generator().manual_seed(0))
    the_plan = plan()
    model = build(kind)
    est = memory_estimate(model, the_plan, batch_size=BATCH, seq_len=SEQ, optimizer=optimizer)
    assert est.reduced is not None
    assert figures(est.full) == one_step(model, optimizer, ids)

    reduced_model = build(kind)
    with warnings.catch_warnings():
        # PEFT's untouched original_module embedding stays full-size, as the estimate says
        warnings.simplefilter("ignore")
        apply_plan(the_plan, model=reduced_model)
    small_ids = torch.tensor([the_plan.remap([int(i) for i in row], unk=0) for row in ids])
    assert figures(est.reduced) == one_step(reduced_model, optimizer, small_ids)
    byte_fields = ("parameter_bytes", "gradient_bytes", "optimizer_state_bytes", "logits_bytes")
    assert est.full.total_bytes == sum(getattr(est.full, name) for name in byte_fields)
    assert est.full.held_bytes == 0
    held = est.reduced.held_bytes
    assert est.reduced.total_bytes == sum(getattr(est.reduced, n) for n in byte_fields) + held
    assert est.saved_bytes == est.full.total_bytes - est.reduced.total_bytes


def test_lora_counts_only_adapters_as_trainable() -> None:
    est = memory_estimate(build("lora"), plan())
    assert est.reduced is not None
    assert 0 < est.full.trainable_parameters == est.reduced.trainable_parameters
    assert est.full.trainable_parameters < est.full.parameters // 10
    assert est.full.parameters > est.reduced.parameters  # the frozen embedding still shrinks


def test_tied_weights_count_once() -> None:
    tied, untied = (memory_estimate(build(k)).full for k in ("tied", "untied"))
    assert untied.parameters - tied.parameters == VOCAB * 64


def test_config_directory_and_model_agree(tmp_path: Path) -> None:
    config = llama_config()
    config.save_pretrained(tmp_path)
    by_model = memory_estimate(LlamaForCausalLM(config), plan(), optimizer="sgd-momentum")
    by_config = memory_estimate(config, plan(), optimizer="sgd-momentum")
    by_dir = memory_estimate(tmp_path, plan(), optimizer="sgd-momentum")
    assert by_model == by_config == by_dir
    assert by_dir == memory_estimate(str(tmp_path), plan(), optimizer="sgd-momentum")


def test_base_model_without_architectures_has_no_logits() -> None:
    config = llama_config(architectures=None)
    est = memory_estimate(config, plan())
    assert est.reduced is not None
    assert est.full.logits_bytes == est.reduced.logits_bytes == 0
    assert est.full.parameters - est.reduced.parameters == (VOCAB - plan().new_size) * 64


def test_dtype_from_argument_then_config_then_float32() -> None:
    params = memory_estimate(llama_config()).full.parameters
    assert memory_estimate(llama_config()).full.parameter_bytes == 4 * params
    bf16 = llama_config(dtype="bfloat16")
    assert memory_estimate(bf16).full.parameter_bytes == 2 * params
    assert memory_estimate(bf16, dtype="float32").full.parameter_bytes == 4 * params
    est = memory_estimate(llama_config(), dtype=torch.float16, optimizer="adamw")
    assert est.full.optimizer_state_bytes == 2 * 2 * params
    assert est.full.logits_bytes == 512 * VOCAB * 4  # logits stay fp32


def test_real_size_config_allocates_nothing() -> None:
    config = llama_config(
        vocab_size=128256,
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=131072,
        dtype="bfloat16",
    )
    the_plan = VocabPlan.from_ids([range(20000)], vocab_size=128256)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_before = _rss_kib()
    est = memory_estimate(config, the_plan, seq_len=2048, optimizer="adamw8bit")
    grown_mib = (_rss_kib() - rss_before) / 1024
    assert grown_mib < 300, f"the estimate allocated {grown_mib:.0f} MiB"  # the model is 2.5 GB
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before < 300 * 1024
    assert est.full.parameters == 1_235_814_400  # Llama-3.2-1B
    assert est.full.parameter_bytes == 2 * est.full.parameters
    assert est.reduced is not None
    assert est.full.parameters - est.reduced.parameters == (128256 - 20000) * 2048


def _rss_kib() -> int:
    if sys.platform.startswith("linux"):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # pragma: no cover


def test_adamw8bit_layout() -> None:
    model = build("untied")
    est = memory_estimate(model, optimizer="adamw8bit")
    small = [p.numel() for p in model.parameters() if p.numel() < 4096]
    large = [p.numel() for p in model.parameters() if p.numel() >= 4096]
    assert small and large
    want = 8 * sum(small) + sum(2 * n + 8 * -(-n // 256) for n in large) + 2 * 256 * 4
    assert est.full.optimizer_state_bytes == want


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"optimizer": "adam"}, "'optimizer' must be one of adamw, adamw8bit, sgd, sgd-momentum"),
        ({"batch_size": 0}, "'batch_size' must be a positive int"),
        ({"seq_len": True}, "'seq_len' must be a positive int"),
        ({"seq_len": 2.5}, "'seq_len' must be a positive int"),
        ({"dtype": "int8"}, "'dtype' must be a floating torch.dtype"),
        ({"dtype": "float99"}, "'dtype' must be a floating torch.dtype"),
        ({"plan": "plan.json"}, "'plan' must be a VocabPlan or None"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(VocabError, match=match):
        memory_estimate(llama_config(), **kwargs)


def test_bad_sources(tmp_path: Path) -> None:
    with pytest.raises(VocabError, match="'model_or_config_or_dir' must be"):
        memory_estimate(42)
    with pytest.raises(VocabError, match=r"has no config\.json"):
        memory_estimate(tmp_path)
    with pytest.raises(VocabError, match="a model keeps its own dtypes"):
        memory_estimate(build("tied"), dtype="bfloat16")
    with pytest.raises(PlanMismatchError, match="fewer than the plan's vocab_size 300"):
        memory_estimate(llama_config(), VocabPlan.from_ids([[0, 1]], vocab_size=300))


def test_estimate_is_frozen_and_reduced_is_none_without_plan() -> None:
    est = memory_estimate(llama_config())
    assert isinstance(est, MemoryEstimate) and est.reduced is None and est.saved_bytes == 0
    with pytest.raises(AttributeError):
        est.full.parameters = 1  # type: ignore[misc]


# -- held_bytes: what the applied plan keeps besides the reduced model ---------------------------


def _held_tensors(root: Any, exclude: set[int]) -> dict[int, torch.Tensor]:
    """Floating tensors (not scalars) reachable from ``root`` through vocab_adapters objects.

    Models, optimizers and tokenizers are not entered; tensors whose storage ``exclude``
    names (the live model's and optimizer's) are left out; each storage counts once.
    """
    found: dict[int, torch.Tensor] = {}
    seen: set[int] = set()
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, torch.Tensor):
            storage = obj.untyped_storage()
            if obj.is_floating_point() and obj.dim() > 0 and storage.data_ptr() not in exclude:
                found.setdefault(storage.data_ptr(), obj)
            continue
        if isinstance(obj, (torch.nn.Module, torch.optim.Optimizer)):
            continue
        if isinstance(obj, dict):
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack.extend(obj)
        elif callable(obj) and getattr(obj, "__closure__", None):
            stack.extend(cell.cell_contents for cell in obj.__closure__ or () if cell_full(cell))
        elif type(obj).__module__.startswith("vocab_adapters"):
            stack.extend(vars(obj).values() if hasattr(obj, "__dict__") else ())
            for name in getattr(type(obj), "__slots__", ()):
                if hasattr(obj, name):
                    stack.append(getattr(obj, name))
    return found


def cell_full(cell: Any) -> bool:
    try:
        cell.cell_contents  # noqa: B018
    except ValueError:
        return False
    return True


def _live_storages(model: Any, optimizer: Any) -> set[int]:
    live = {t.untyped_storage().data_ptr() for t in model.state_dict(keep_vars=True).values()}
    live |= {p.untyped_storage().data_ptr() for p in model.parameters()}
    if optimizer is not None:
        for state in optimizer.state.values():
            for value in state.values():
                if isinstance(value, torch.Tensor):
                    live.add(value.untyped_storage().data_ptr())
    return live


HELD_MODELS = ("tied", "untied", "padded", "bert-mlm", "bart-cg")


def _held_model(kind: str) -> tuple[Any, VocabPlan]:
    if kind in ("bert-mlm", "bart-cg"):
        from fixtures.models import build_tiny_model

        tiny = build_tiny_model(kind)
        kept = sorted({0, 1, 2, 3, *range(4, tiny.vocab_size, 3)})
        return tiny.model, VocabPlan.from_ids([kept], vocab_size=tiny.vocab_size)
    return build(kind), plan()


def _stepped_optimizer(model: Any, name: str) -> torch.optim.Optimizer:
    optimizer = make_optimizer(name, [p for p in model.parameters() if p.requires_grad])
    ids = torch.randint(0, 100, (BATCH, SEQ), generator=torch.Generator().manual_seed(0))
    inputs = {"input_ids": ids, "labels": ids}
    if getattr(model.config, "is_encoder_decoder", False):
        inputs["decoder_input_ids"] = ids
    model(**inputs).loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return optimizer


@pytest.mark.parametrize("softmax", ["reduced", "full", "shifted"])
@pytest.mark.parametrize("optimizer", ["adamw", "sgd-momentum", "sgd"])
@pytest.mark.parametrize("kind", HELD_MODELS)
def test_held_bytes_are_what_the_applied_plan_holds(
    kind: str, optimizer: str, softmax: str
) -> None:
    model, the_plan = _held_model(kind)
    est = memory_estimate(model, the_plan, optimizer=optimizer, softmax=softmax)
    assert est.reduced is not None and est.full.held_bytes == 0
    # an optimizer with state when the plan is applied (resuming; the Trainer callback after
    # a checkpoint): its full-size state is held too
    live_optimizer = _stepped_optimizer(model, optimizer)
    applied = apply_plan(the_plan, model=model, optimizer=live_optimizer, softmax=softmax)
    held = _held_tensors(applied, _live_storages(model, live_optimizer))
    assert est.reduced.held_bytes == sum(t.nbytes for t in held.values())
    # the held full parameters are the ones the swaps name
    fulls = {swap.full.untyped_storage().data_ptr() for swap in applied.swaps}
    assert fulls <= held.keys()
    assert est.reduced.total_bytes - est.reduced.held_bytes == sum(
        getattr(est.reduced, n)
        for n in ("parameter_bytes", "gradient_bytes", "optimizer_state_bytes", "logits_bytes")
    )
    assert est.reduced.peak_bytes > est.reduced.held_bytes


def test_held_bytes_without_optimizer_state_and_with_offload() -> None:
    model, the_plan = _held_model("untied")
    est = memory_estimate(model, the_plan, optimizer="sgd")  # no optimizer state
    applied = apply_plan(the_plan, model=model)  # an optimizer is created after apply
    held = _held_tensors(applied, _live_storages(model, None))
    assert est.reduced is not None
    assert est.reduced.held_bytes == sum(t.nbytes for t in held.values()) > 0
    # On a CPU model the held tensors are on the model's device whatever offload says.
    cpu = memory_estimate(build("untied"), the_plan, offload="cpu")
    assert cpu.reduced == memory_estimate(build("untied"), the_plan).reduced
    # A config is taken to train on an accelerator: offloaded, nothing full-size stays there,
    # except the normaliser's copy of the dropped rows for softmax="full"/"shifted".
    config = llama_config(tie_word_embeddings=False)
    on_device = memory_estimate(config, the_plan).reduced
    offloaded = memory_estimate(config, the_plan, offload="cpu").reduced
    assert on_device is not None and offloaded is not None
    assert on_device.held_bytes > 0 and offloaded.held_bytes == 0
    assert on_device.total_bytes - offloaded.total_bytes == on_device.held_bytes
    assert on_device.peak_bytes - offloaded.peak_bytes == on_device.held_bytes
    full = memory_estimate(config, the_plan, offload="cpu", softmax="full").reduced
    assert full is not None
    dropped = VOCAB - the_plan.new_size
    assert full.held_bytes == dropped * 64 * 4  # hidden 64, float32; no output bias
    with pytest.raises(VocabError, match="'offload'"):
        memory_estimate(config, the_plan, offload="disk")
