"""Memory a training step needs, for the full model and for the model a plan reduces.

``memory_estimate`` counts what training keeps in memory: parameters, their gradients, the
optimizer's state and the fp32 logits of one step (``total_bytes``), and beside them what the
loss holds at its peak, the activations the decoder layers save for the backward pass (for the
decoder types it knows) and the peak of one step. Given a config or a model directory it builds
the model on the meta device, so nothing is allocated and a real 1B-8B config answers in
seconds. The reduced figures are arithmetic: the vocabulary-sized
tensors that ``apply_plan`` would slice (input embeddings, LM head rows, output biases, padded
rows included) get ``plan.new_size`` rows, and ``held_bytes`` counts the full-size data the
applied plan keeps for revert; nothing is applied.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn

from vocabcore import PlanMismatchError, VocabError, VocabPlan

__all__ = ["OPTIMIZERS", "MemoryEstimate", "MemoryFigures", "memory_estimate"]

OPTIMIZERS = ("adamw", "adamw8bit", "sgd", "sgd-momentum")

# bitsandbytes' 8-bit optimizers (checked against 0.50): a parameter with fewer than
# min_8bit_size (4096) elements keeps two fp32 state tensors; a larger one keeps two uint8 tensors
# of its size, one fp32 absmax per block of 256 elements for each, and two 256-entry fp32
# quantization maps that every parameter of the optimizer shares.
BNB_MIN_8BIT_SIZE = 4096
BNB_BLOCKSIZE = 256
BNB_QMAP_BYTES = 2 * 256 * 4

_DTYPE_ALIASES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "half": "float16"}


@attrs.frozen
class MemoryFigures:
    """Bytes one training step needs, for one model.

    Attributes:
        parameters: Parameters, tied tensors counted once.
        trainable_parameters: Those with ``requires_grad``.
        parameter_bytes: Bytes of all parameters.
        gradient_bytes: One gradient per trainable parameter, in its dtype.
        optimizer_state_bytes: The optimizer's state as torch or bitsandbytes keeps it (scalar
            ``step`` entries not counted).
        logits_bytes: ``batch_size x seq_len x output columns x 4`` (fp32 logits of one step);
            0 without a vocabulary-sized output layer. With ``softmax="full"``/``"shifted"`` the
            reduced logits have ``new_size + 1`` columns (the normaliser's column).
        loss_bytes: What the cross-entropy holds at its peak besides one logits-sized fp32
            tensor: at the start of the backward pass the log-softmax (saved), its gradient and
            the logits' gradient exist at once, so ``2 x logits_bytes`` (the logits themselves
            are freed once the model's output is dropped, as the ``Trainer`` does; a loop that
            keeps the output during ``backward()`` holds one ``logits_bytes`` more). With
            ``softmax="full"``/``"shifted"``, plus the normaliser's chunk workspace (the chunk's
            gathered output rows, one ``positions x chunk`` fp32 block and two ``positions x
            hidden`` fp32 blocks).
        activation_bytes: Bytes the model saves for the backward pass at ``batch_size x
            seq_len`` (the decoder layers, the final norm and the output layer's input), for
            the decoder types whose layers are known (``llama``, ``qwen2``, ``gemma3_text``:
            eager or SDPA attention, no attention dropout, sequences without padding); ``None``
            for any other model, and then ``peak_bytes`` leaves them out. Exact for
            transformers 5's layers; transformers 4's SDPA paths also save attention-mask
            tensors, which this leaves out (measured up to 6% low).
        peak_bytes: The peak of one step that starts without gradients (``zero_grad()``'s
            default) and ends with the optimizer's step: parameters + optimizer state + the
            largest of three moments: the start of the backward pass (activations + logits +
            loss), the output layer's backward (activations + the logits' gradient + the output
            weight's gradient) and the end of it (every gradient, plus two copies of a tied
            embedding's weight while its second gradient is added). With gradients kept
            between steps (gradient accumulation) add ``gradient_bytes`` to the first two.
            ``held_bytes`` is added to it, as it is to ``total_bytes``.
        held_bytes: What an applied plan keeps on the model's device besides the reduced
            model (0 for the full figures): the full-size vocabulary tensors held aside for
            revert (embedding, LM head, output biases, vocabulary-sized buffers), the
            optimizer's full-size state of the trainable ones (held when the plan is applied
            to an optimizer that has state: resuming, or ``VocabReductionCallback`` after its
            first checkpoint; an optimizer created after ``apply_plan`` holds none, so this is
            the upper bound), and with ``softmax="full"``/``"shifted"`` the normaliser's
            float32 biases of the dropped rows. With ``offload="cpu"`` the full-size tensors
            and state are on the CPU (0 here), and the normaliser keeps its own device copy of
            the dropped output rows, which is counted. The device is the model's: for a model
            on the CPU, offloading changes nothing (the held tensors are on the CPU, where the
            model is); a config or directory is taken to train on an accelerator. Index
            tensors (8 bytes per kept or dropped id) are not counted.
    """

    parameters: int
    trainable_parameters: int
    parameter_bytes: int
    gradient_bytes: int
    optimizer_state_bytes: int
    logits_bytes: int
    loss_bytes: int = 0
    activation_bytes: int | None = None
    peak_bytes: int = 0
    held_bytes: int = 0

    @property
    def total_bytes(self) -> int:
        """Sum of parameter, gradient, optimizer-state, logits and held bytes."""
        return (
            self.parameter_bytes
            + self.gradient_bytes
            + self.optimizer_state_bytes
            + self.logits_bytes
            + self.held_bytes
        )

    def as_dict(self) -> dict[str, int | None]:
        """The fields and ``total_bytes``, as plain ints (``activation_bytes`` may be None)."""
        return {**attrs.asdict(self), "total_bytes": self.total_bytes}


@attrs.frozen
class MemoryEstimate:
    """``memory_estimate``'s answer: ``full`` and ``reduced`` (``None`` without a plan)."""

    full: MemoryFigures
    reduced: MemoryFigures | None
    batch_size: int
    seq_len: int
    optimizer: str

    @property
    def saved_bytes(self) -> int:
        """``full.total_bytes - reduced.total_bytes`` (0 without a plan)."""
        return 0 if self.reduced is None else self.full.total_bytes - self.reduced.total_bytes


@attrs.frozen
class _Tensor:
    numel: int
    itemsize: int
    trainable: bool
    rows: int | None  # the size of its vocabulary dimension, for a tensor apply_plan slices
    role: str | None = None  # "input", "output", "tied" (embedding weights), "output bias"


def _check_positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise VocabError(f"{name!r} must be a positive int (got {value!r})")
    return value


def _resolve_dtype(dtype: object) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str):
        name = dtype.removeprefix("torch.")
        found = getattr(torch, _DTYPE_ALIASES.get(name, name), None)
        if isinstance(found, torch.dtype) and found.is_floating_point:
            return found
    raise VocabError(
        "'dtype' must be a floating torch.dtype or its name, e.g. 'float32', 'bfloat16', "
        f"'float16' (got {dtype!r})"
    )


def _config_dtype(config: Any) -> torch.dtype | None:
    value = getattr(config, "dtype", None)
    if value is None:  # transformers 4 names it torch_dtype (5 warns when that name is read)
        value = vars(config).get("torch_dtype")
    if value is None or value == "auto":
        return None
    try:
        return _resolve_dtype(value)
    except VocabError:
        return None


def _load_config(directory: Path) -> Any:
    if not (directory / "config.json").is_file():
        raise VocabError(
            f"model directory {str(directory)!r} has no config.json; pass a saved model's "
            "folder, a transformers config or a model"
        )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(directory))
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise VocabError(f"cannot read the config in {str(directory)!r}: {first}") from None


def _meta_model(config: Any) -> nn.Module:
    """The model ``config`` describes, built on the meta device.

    The class is the first one ``architectures`` names, else the base ``AutoModel``.
    """
    import transformers

    names = list(getattr(config, "architectures", None) or [])
    cls = getattr(transformers, names[0], None) if names else None
    try:
        with torch.device("meta"):
            if cls is not None and hasattr(cls, "_from_config"):
                model: nn.Module = cls._from_config(config)
            else:
                model = transformers.AutoModel.from_config(config)  # type: ignore[no-untyped-call]
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise VocabError(
            f"cannot build a {type(config).__name__} model on the meta device: {first}"
        ) from None
    return model


def _output_weight(model: nn.Module, rows: int) -> torch.Tensor | None:
    get_output = getattr(model, "get_output_embeddings", None)
    output = get_output() if callable(get_output) else None
    weight = getattr(output, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.dim() == 2 and weight.shape[0] == rows:
        return weight
    return None


def _tensors(model: nn.Module, dtype: torch.dtype | None) -> tuple[list[_Tensor], bool]:
    """Every parameter once (by identity), and whether there is a vocabulary-sized output.

    A tensor that ``apply_plan`` would slice carries its vocabulary rows.
    """
    from vocab_adapters.stages.embeddings import tensor_slots, vocab_dim

    get_input = getattr(model, "get_input_embeddings", None)
    embedding = get_input() if callable(get_input) else None
    weight = getattr(embedding, "weight", None)
    rows = int(weight.shape[0]) if isinstance(weight, torch.Tensor) and weight.dim() == 2 else 0
    output_weight = _output_weight(model, rows) if rows else None
    roles: dict[int, str] = {}
    if rows:
        roles[id(weight)] = "input embeddings"
    if output_weight is not None:
        roles.setdefault(id(output_weight), "output embeddings")
        output = model.get_output_embeddings()  # type: ignore[operator]
        bias = getattr(output, "bias", None)
        if isinstance(bias, torch.Tensor) and bias.shape == (rows,):
            roles.setdefault(id(bias), "output bias")

    by_id: dict[int, tuple[torch.Tensor, list[Any]]] = {}
    for slot, tensor in tensor_slots(model):
        if slot.is_param:
            by_id.setdefault(id(tensor), (tensor, []))[1].append(slot)
    found: list[_Tensor] = []
    for key, (tensor, slots) in by_id.items():
        vocab = bool(rows) and rows in tensor.shape
        if vocab:
            dim = vocab_dim(slots, tensor, rows, roles.get(key))
            vocab = dim is not None and tensor.shape[dim] == rows
        itemsize = tensor.element_size()
        if dtype is not None and tensor.is_floating_point():
            itemsize = dtype.itemsize
        role = None
        if rows and key == id(weight):
            role = "tied" if output_weight is weight else "input"
        elif output_weight is not None and key == id(output_weight):
            role = "output"
        elif roles.get(key) == "output bias":
            role = "output bias"
        found.append(
            _Tensor(
                int(tensor.numel()),
                itemsize,
                bool(tensor.requires_grad),
                rows if vocab else None,
                role,
            )
        )
    return found, output_weight is not None


def _model_itemsize(model: nn.Module) -> int:
    """Bytes per element of the model's activations: its first floating parameter's dtype."""
    for parameter in model.parameters():
        if parameter.is_floating_point():
            return int(parameter.element_size())
    return 4


def _optimizer_bytes(tensors: Iterable[_Tensor], optimizer: str) -> int:
    trainable = [t for t in tensors if t.trainable and t.numel]
    if optimizer == "adamw":
        return sum(2 * t.numel * t.itemsize for t in trainable)
    if optimizer == "sgd":
        return 0
    if optimizer == "sgd-momentum":
        return sum(t.numel * t.itemsize for t in trainable)
    total = 0
    quantized = False
    for t in trainable:
        if t.numel < BNB_MIN_8BIT_SIZE:
            total += 2 * 4 * t.numel
        else:
            quantized = True
            total += 2 * t.numel + 2 * 4 * math.ceil(t.numel / BNB_BLOCKSIZE)
    return total + (BNB_QMAP_BYTES if quantized else 0)


def _figures(
    tensors: list[_Tensor],
    output_columns: int,
    batch_size: int,
    seq_len: int,
    optimizer: str,
    activations: int | None,
    workspace: int = 0,
    held: int = 0,
) -> MemoryFigures:
    trainable = [t for t in tensors if t.trainable]
    parameter_bytes = sum(t.numel * t.itemsize for t in tensors)
    gradient_bytes = sum(t.numel * t.itemsize for t in trainable)
    state_bytes = _optimizer_bytes(tensors, optimizer)
    logits = batch_size * seq_len * output_columns * 4
    loss = 2 * logits + workspace if output_columns else 0
    output_grad = sum(t.numel * t.itemsize for t in trainable if t.role in ("output", "tied"))
    tied = sum(2 * t.numel * t.itemsize for t in trainable if t.role == "tied")
    acts = activations or 0
    moments = (
        acts + logits + loss,  # start of backward: log-softmax, its gradient, logits' gradient
        acts + (logits + output_grad if output_columns else 0),  # the output layer's backward
        gradient_bytes + tied,  # end of backward: a tied embedding's second gradient is added
    )
    return MemoryFigures(
        parameters=sum(t.numel for t in tensors),
        trainable_parameters=sum(t.numel for t in trainable),
        parameter_bytes=parameter_bytes,
        gradient_bytes=gradient_bytes,
        optimizer_state_bytes=state_bytes,
        logits_bytes=logits,
        loss_bytes=loss,
        activation_bytes=activations,
        peak_bytes=parameter_bytes + state_bytes + held + max(moments),
        held_bytes=held,
    )


def _layer_bytes(config: Any, batch: int, seq: int, itemsize: int, has_output: bool) -> int | None:
    """Bytes one forward pass saves for backward (see ``MemoryFigures.activation_bytes``).

    Counted per tensor as torch saves them (each storage once, parameters excluded) for the
    Llama layout (``llama``, ``qwen2``: RMSNorm in fp32, rotary q/k, SwiGLU) and Gemma 3's
    (four fp32 RMSNorms per layer, q/k norms, GELU-gated MLP, sliding-window layers). ``None``
    for anything else.
    """
    kind = getattr(config, "model_type", None)
    if kind not in ("llama", "qwen2", "gemma3_text"):
        return None
    attention = getattr(config, "_attn_implementation", None) or "sdpa"
    if attention not in ("sdpa", "eager") or float(getattr(config, "attention_dropout", 0) or 0):
        return None
    try:
        hidden = int(config.hidden_size)
        inner = int(config.intermediate_size)
        heads = int(config.num_attention_heads)
        kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
        head_dim = int(getattr(config, "head_dim", None) or hidden // heads)
        layers = int(config.num_hidden_layers)
    except (AttributeError, TypeError, ValueError):
        return None
    gemma = kind == "gemma3_text"
    types = list(getattr(config, "layer_types", None) or ["full_attention"] * layers)[:layers]
    window = getattr(config, "sliding_window", None)
    e, f = itemsize, 4  # activations in the model's dtype; norms, softmax, lse in fp32
    tokens = batch * seq
    h, q, kv = tokens * hidden, tokens * heads * head_dim, tokens * kv_heads * head_dim
    scores = batch * heads * seq * seq
    total = tokens * 8  # the input ids, saved by the embedding
    for layer_type in types:
        masked = layer_type == "sliding_attention" and window is not None and seq > window
        if masked and not gemma:
            return None
        if gemma:
            # four norms: x in fp32, rsqrt, normalised, 1 + weight; two outputs feed linears
            norms = 4 * (2 * h * f + tokens * f + hidden * f) + 2 * h * e
            # q and k norms over head_dim (x, normalised, rsqrt, 1 + weight)
            norms += 2 * q * f + tokens * heads * f + 2 * kv * f + tokens * kv_heads * f
            norms += 2 * head_dim * f
        else:
            # two RMSNorms: x in fp32, rsqrt, normalised, output (fed to the linears)
            norms = 2 * (h * f + tokens * f + 2 * h * e)
        # k and v repeated to every head: a copy, except with one KV head, where repeat_kv's
        # reshape stays a view (and eager's matmul then folds the batch without a copy only at
        # batch 1)
        repeated = kv if kv_heads == 1 and (batch == 1 or attention == "sdpa") else q
        if attention == "eager":
            # q, repeated k and v, the output; softmax in fp32 (and its cast to the dtype)
            attn = 2 * q * e + 2 * repeated * e + scores * f + (scores * e if e != f else 0)
        else:
            native_gqa = not masked and head_dim <= 256
            kv_saved = 2 * kv * e if native_gqa else 2 * repeated * e
            attn = 2 * q * e + kv_saved + batch * heads * seq * f  # q, k, v, out, logsumexp
            if masked:
                attn += batch * seq * seq * e  # the sliding-window mask
        mlp = 4 * tokens * inner * e  # gate output, activation, up output, their product
        total += norms + attn + mlp
    rotary = len(set(types)) if gemma else 1
    total += rotary * 2 * seq * head_dim * e  # cos and sin
    if gemma:
        total += e + 2 * h * f + tokens * f + hidden * f  # embed scale, final norm
    else:
        total += h * f + tokens * f + h * e  # final norm
    if has_output:
        total += h * e  # the final norm's output, saved by the output layer
    return total


def _buffer_bytes(model: nn.Module, rows: int, dtype: torch.dtype | None) -> int:
    """Full-size bytes of the vocabulary-sized buffers (BART's ``final_logits_bias``)."""
    from vocab_adapters.stages.embeddings import tensor_slots, vocab_dim

    by_id: dict[int, tuple[torch.Tensor, list[Any]]] = {}
    for slot, tensor in tensor_slots(model):
        if not slot.is_param and rows in tensor.shape:
            by_id.setdefault(id(tensor), (tensor, []))[1].append(slot)
    total = 0
    for tensor, slots in by_id.values():
        if vocab_dim(slots, tensor, rows, None) is None:
            continue
        itemsize = tensor.element_size()
        if dtype is not None and tensor.is_floating_point():
            itemsize = dtype.itemsize
        total += int(tensor.numel()) * itemsize
    return total


def _held_state_bytes(tensors: list[_Tensor], optimizer: str) -> int:
    """The optimizer's full-size state of the trainable vocabulary tensors.

    bitsandbytes' 8-bit state can't be split by token, so a plan applied to such an optimizer
    needs those parameters overridden to 32-bit state: two fp32 tensors each.
    """
    vocab = [t for t in tensors if t.rows is not None]
    if optimizer == "adamw8bit":
        return sum(2 * 4 * t.numel for t in vocab if t.trainable)
    return _optimizer_bytes(vocab, optimizer)


def _on_cpu(model: nn.Module) -> bool:
    get_input = getattr(model, "get_input_embeddings", None)
    embedding = get_input() if callable(get_input) else None
    weight = getattr(embedding, "weight", None)
    return isinstance(weight, torch.Tensor) and weight.device.type == "cpu"


def _reduce(tensor: _Tensor, new_rows: int) -> _Tensor:
    if tensor.rows is None:
        return tensor
    return attrs.evolve(tensor, numel=tensor.numel // tensor.rows * new_rows)


def memory_estimate(
    model_or_config_or_dir: Any,
    plan: VocabPlan | None = None,
    *,
    batch_size: int = 1,
    seq_len: int = 512,
    optimizer: str = "adamw",
    dtype: torch.dtype | str | None = None,
    softmax: str = "reduced",
    offload: str | None = None,
) -> MemoryEstimate:
    """Parameters, gradients, optimizer state, logits, loss, activations and peak of one step.

    Args:
        model_or_config_or_dir: A model (its own tensors, dtypes and ``requires_grad``: a frozen
            base with LoRA counts only the adapters and ``modules_to_save`` as trainable), a
            transformers config, or a directory holding ``config.json``. A config or directory
            is built on the meta device with the class its ``architectures`` names first (else
            the base ``AutoModel``), every parameter trainable; nothing is allocated.
        plan: A plan for the model's vocabulary; ``reduced`` is ``None`` without one.
        batch_size: Sequences per step, for the logits.
        seq_len: Tokens per sequence, for the logits.
        optimizer: ``"adamw"``, ``"adamw8bit"`` (bitsandbytes' blockwise layout), ``"sgd"`` or
            ``"sgd-momentum"``.
        dtype: For a config or directory, the parameters' dtype (a ``torch.dtype`` or its
            name); default the config's dtype, else float32. A model keeps its own dtypes.
        softmax: The ``apply_plan(..., softmax=)`` mode the reduced figures are for:
            ``"full"`` and ``"shifted"`` add the normaliser's column and chunk workspace,
            ``"shifted"`` its trainable vector (and scalar, with a trainable output bias).
        offload: The ``apply_plan(..., offload=)`` the reduced ``held_bytes`` are for:
            ``None`` (full-size tensors held on the model's device) or ``"cpu"``.

    Returns:
        A ``MemoryEstimate`` with ``full`` and ``reduced`` ``MemoryFigures``.

    Raises:
        VocabError: A bad argument (named in the message with what it must be).
        PlanMismatchError: The plan's vocabulary is larger than the model's embedding.

    >>> from transformers import LlamaConfig
    >>> config = LlamaConfig(vocab_size=1000, hidden_size=64, intermediate_size=128,
    ...                      num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=4,
    ...                      tie_word_embeddings=True, architectures=["LlamaForCausalLM"])
    >>> plan = VocabPlan.from_ids([range(100)], vocab_size=1000)
    >>> est = memory_estimate(config, plan, batch_size=2, seq_len=16)
    >>> est.full.parameters - est.reduced.parameters  # 900 rows x 64, tied: counted once
    57600
    >>> est.full.logits_bytes, est.reduced.logits_bytes
    (128000, 12800)
    >>> est.full.peak_bytes > est.full.total_bytes  # activations and the loss's workspace
    True
    """
    batch_size = _check_positive("batch_size", batch_size)
    seq_len = _check_positive("seq_len", seq_len)
    if optimizer not in OPTIMIZERS:
        raise VocabError(f"'optimizer' must be one of {', '.join(OPTIMIZERS)} (got {optimizer!r})")
    wanted = _resolve_dtype(dtype)
    if plan is not None and not isinstance(plan, VocabPlan):
        raise VocabError(f"'plan' must be a VocabPlan or None (got {type(plan).__name__})")
    if plan is not None and plan.new_size == 0:
        raise VocabError("the plan keeps no ids; keep at least the special tokens")
    from vocab_adapters.stages.softmax import check_mode

    check_mode(softmax)
    if offload not in (None, "cpu"):
        raise VocabError(f"'offload' must be None or 'cpu' (got {offload!r})")

    source = model_or_config_or_dir
    if isinstance(source, nn.Module):
        if wanted is not None:
            raise VocabError(
                "'dtype' applies to a config or a model directory; a model keeps its own "
                "dtypes (convert it with model.to(dtype) first)"
            )
        model = source
    else:
        if isinstance(source, (str, os.PathLike)):
            config = _load_config(Path(source))
        elif hasattr(source, "to_dict") and hasattr(source, "model_type"):
            config = source
        else:
            raise VocabError(
                "'model_or_config_or_dir' must be a torch model, a transformers config or a "
                f"model directory (got {type(source).__name__})"
            )
        model = _meta_model(config)
        if wanted is None:
            wanted = _config_dtype(config) or torch.float32
        for parameter in model.parameters():
            parameter.requires_grad_(True)

    tensors, has_output = _tensors(model, wanted)
    get_input = getattr(model, "get_input_embeddings", None)
    embedding = get_input() if callable(get_input) else None
    input_weight = getattr(embedding, "weight", None)
    input_rows = int(input_weight.shape[0]) if isinstance(input_weight, torch.Tensor) else None
    itemsize = wanted.itemsize if wanted is not None else _model_itemsize(model)
    activations = _layer_bytes(
        getattr(model, "config", None), batch_size, seq_len, itemsize, has_output
    )
    full = _figures(
        tensors,
        (input_rows or 0) if has_output else 0,
        batch_size,
        seq_len,
        optimizer,
        activations,
    )
    reduced = None
    if plan is not None:
        if input_rows is None:
            raise VocabError(
                "the model has no input embeddings found through get_input_embeddings(); "
                "a plan can't be estimated for it"
            )
        if input_rows < plan.vocab_size:
            raise PlanMismatchError(
                f"the model's input embeddings have {input_rows} rows, fewer than the plan's "
                f"vocab_size {plan.vocab_size}; build the plan with this model's tokenizer"
            )
        small = [_reduce(t, plan.new_size) for t in tensors]
        columns = plan.new_size if has_output else 0
        workspace = 0
        offloaded = offload == "cpu" and not _on_cpu(model)
        held = 0
        if not offloaded:  # the full-size tensors and optimizer state, on the model's device
            held += sum(t.numel * t.itemsize for t in tensors if t.rows is not None)
            held += _buffer_bytes(model, input_rows, wanted)
            held += _held_state_bytes(tensors, optimizer)
        dropped = (input_rows - plan.new_size) if has_output else 0
        if softmax != "reduced" and dropped > 0:
            from vocab_adapters.stages import softmax as softmax_module

            assert isinstance(input_weight, torch.Tensor)
            width = int(input_weight.shape[1])
            tokens = batch_size * seq_len
            chunk = min(softmax_module.DEFAULT_CHUNK_ROWS, dropped)
            columns += 1
            # the two-pass kernel (stages/normaliser.py): one reused buffer of gathered rows and
            # one positions x rows fp32 block of logits, exponentiated in place; the hidden-state
            # gradient it accumulates (saved for backward) and its product in backward
            rows_item = wanted.itemsize if wanted is not None else input_weight.element_size()
            workspace = chunk * width * rows_item + tokens * chunk * 4 + 2 * tokens * width * 4
            # held by the normaliser: the dropped rows' biases in fp32, and with offloading its
            # own device copy of the dropped output rows (else it reads the held full weight)
            if any(t.role == "output bias" for t in tensors) or _buffer_bytes(
                model, input_rows, wanted
            ):
                held += 4 * dropped
            if offloaded:
                held += dropped * width * rows_item
            if softmax == "shifted":
                head = next((t for t in small if t.role in ("output", "tied")), None)
                item = head.itemsize if head is not None else itemsize
                small.append(_Tensor(width, item, True, None))
                bias = next((t for t in small if t.role == "output bias"), None)
                if bias is not None and bias.trainable:
                    small.append(_Tensor(1, bias.itemsize, True, None))
        reduced = _figures(
            small, columns, batch_size, seq_len, optimizer, activations, workspace, held
        )
    return MemoryEstimate(full, reduced, batch_size, seq_len, optimizer)
