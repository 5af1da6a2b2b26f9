"""memory_estimate's activation, loss and peak terms against what torch really saves and holds.

The activation term is compared with the bytes autograd saves for backward in a real forward
pass of tiny Llama, Qwen2 and Gemma 3 models (``saved_tensors_hooks``, each storage once,
parameters excluded); the loss term with what a real cross-entropy saves and what its backward
allocates.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import transformers
from torch import nn

from vocab_adapters import apply_plan, memory_estimate, revert_plan
from vocabcore import VocabError, VocabPlan

VOCAB = 211
HAS_GEMMA3 = hasattr(transformers, "Gemma3TextConfig")  # transformers >= 4.50
# The activation formulas follow transformers 5's layer implementations, where they are exact.
# transformers 4's SDPA paths also save attention-mask tensors the formula leaves out: measured
# up to 6% low there (4.46: Llama/Qwen2 SDPA; 4.57: Gemma 3 SDPA).
EXACT = int(transformers.__version__.split(".")[0]) >= 5


def config(kind: str, attention: str, **extra: Any) -> Any:
    common: dict[str, Any] = {
        "vocab_size": VOCAB,
        "hidden_size": 48,
        "intermediate_size": 80,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "tie_word_embeddings": True,
    }
    common.update(extra)
    if kind == "llama":
        cfg = transformers.LlamaConfig(head_dim=16, architectures=["LlamaForCausalLM"], **common)
    elif kind == "qwen2":
        cfg = transformers.Qwen2Config(architectures=["Qwen2ForCausalLM"], **common)
    else:
        common.setdefault("layer_types", ["sliding_attention", "full_attention"])
        cfg = transformers.Gemma3TextConfig(
            head_dim=16,
            sliding_window=6,
            query_pre_attn_scalar=16,
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=1,
            architectures=["Gemma3ForCausalLM"],
            **common,
        )
    cfg._attn_implementation = attention
    return cfg


def build(kind: str, attention: str, dtype: torch.dtype = torch.float32, **extra: Any) -> Any:
    torch.manual_seed(0)
    cfg = config(kind, attention, **extra)
    cls = getattr(transformers, cfg.architectures[0])
    return cls(cfg).to(dtype).train()


def saved_bytes(model: nn.Module, run: Any) -> int:
    """Bytes of the tensors autograd saves while ``run()`` runs: each storage once, no params."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: set[int] = set()
    total = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal total
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params and storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return total


CASES = [
    ("llama", "sdpa", torch.float32, {}),
    ("llama", "eager", torch.float32, {}),
    ("llama", "sdpa", torch.bfloat16, {}),
    ("llama", "eager", torch.bfloat16, {"num_key_value_heads": 4}),
    ("qwen2", "sdpa", torch.float32, {}),
    ("qwen2", "eager", torch.bfloat16, {}),
    ("gemma3", "sdpa", torch.float32, {}),
    ("gemma3", "eager", torch.float32, {}),
    (
        "gemma3",
        "sdpa",
        torch.bfloat16,
        {
            "num_hidden_layers": 3,
            "layer_types": ["sliding_attention", "sliding_attention", "full_attention"],
        },
    ),
    ("gemma3", "eager", torch.bfloat16, {"num_key_value_heads": 1}),
    ("gemma3", "sdpa", torch.float32, {"num_key_value_heads": 1}),
    ("llama", "eager", torch.float32, {"num_key_value_heads": 1}),
]


@pytest.mark.parametrize(("kind", "attention", "dtype", "extra"), CASES)
@pytest.mark.parametrize(("batch", "seq"), [(2, 11), (1, 5), (1, 9)])
def test_activations_equal_what_the_forward_pass_saves(
    kind: str, attention: str, dtype: torch.dtype, extra: dict[str, Any], batch: int, seq: int
) -> None:
    if kind == "gemma3" and not HAS_GEMMA3:
        pytest.skip("this transformers has no Gemma 3")
    model = build(kind, attention, dtype, **extra)
    ids = torch.randint(3, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(1))
    # without labels: the decoder, the final norm and the output layer's input; no loss
    measured = saved_bytes(model, lambda: model(input_ids=ids))
    est = memory_estimate(model, batch_size=batch, seq_len=seq)
    # from the config alone (meta device), the same figure
    from_config = memory_estimate(
        model.config, batch_size=batch, seq_len=seq, dtype=dtype
    ).full.activation_bytes
    assert from_config == est.full.activation_bytes
    assert est.full.activation_bytes is not None
    if not EXACT:
        assert abs(est.full.activation_bytes - measured) <= 0.1 * measured
        return
    assert est.full.activation_bytes == measured
    # the base model (no output layer) saves the same minus the output layer's input
    base = model.model
    measured_base = saved_bytes(base, lambda: base(input_ids=ids))
    assert measured - measured_base == batch * seq * model.config.hidden_size * dtype.itemsize


def test_unknown_model_types_have_no_activation_term() -> None:
    cfg = transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=1, n_head=2)
    cfg.architectures = ["GPT2LMHeadModel"]
    est = memory_estimate(cfg, batch_size=2, seq_len=8)
    assert est.full.activation_bytes is None
    # the peak then leaves activations out: parameters + state + the largest other moment
    full = est.full
    vocab_grad = VOCAB * 32 * 4  # tied: the head's weight gradient, and two copies at the end
    moments = (
        full.logits_bytes + full.loss_bytes,
        full.logits_bytes + vocab_grad,
        full.gradient_bytes + 2 * vocab_grad,
    )
    assert full.peak_bytes == full.parameter_bytes + full.optimizer_state_bytes + max(moments)


def test_attention_dropout_is_not_estimated() -> None:
    cfg = config("llama", "sdpa", attention_dropout=0.1)
    assert memory_estimate(cfg, batch_size=1, seq_len=4).full.activation_bytes is None


def test_loss_term_is_what_one_real_cross_entropy_holds() -> None:
    """The Trainer's loss path (the model called with labels, the output dropped): at the start
    of backward the log-softmax (saved), its gradient and the logits' gradient exist at once:
    logits_bytes + loss_bytes."""
    if not EXACT:
        pytest.skip("written against transformers 5's causal-LM loss path")
    model = build("llama", "sdpa")
    batch, seq = 2, 9
    ids = torch.randint(3, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(2))
    est = memory_estimate(model, batch_size=batch, seq_len=seq).full
    logits = batch * seq * VOCAB * 4
    assert est.logits_bytes == logits and est.loss_bytes == 2 * logits
    # what the loss saves beyond the model's own activations: one logits-sized tensor (the
    # log-softmax; ForCausalLMLoss shifts the labels, not the logits)
    with_loss = saved_bytes(model, lambda: model(input_ids=ids, labels=ids))
    label_bytes = batch * seq * 8  # the shifted labels, saved by nll_loss
    # (and nll_loss its 0-dim total weight)
    assert with_loss - est.activation_bytes == logits + label_bytes + 4
    # its backward allocates the log-softmax's gradient and the logits' gradient, each logits-
    # sized, while the saved log-softmax is alive: 3 x logits at once
    sizes: list[int] = []
    loss = model(input_ids=ids, labels=ids).loss
    node = loss.grad_fn
    while node is not None and "LogSoftmax" not in type(node).__name__:
        node = node.next_functions[0][0]
    assert node is not None

    def record(grad_inputs: Any, grad_outputs: Any) -> None:
        sizes.extend(g.numel() * g.element_size() for g in (*grad_outputs, *grad_inputs))

    node.register_hook(record)
    loss.backward()
    assert sizes == [logits, logits]  # its gradient in, the logits' gradient out


def test_full_and_shifted_softmax_figures() -> None:
    model = build("llama", "sdpa")
    ids = list(range(3, 60))
    plan = VocabPlan.from_ids([ids], vocab_size=VOCAB, keep=range(3))
    batch, seq = 2, 16
    base = memory_estimate(model, plan, batch_size=batch, seq_len=seq).reduced
    full = memory_estimate(model, plan, batch_size=batch, seq_len=seq, softmax="full").reduced
    shifted = memory_estimate(model, plan, batch_size=batch, seq_len=seq, softmax="shifted").reduced
    assert base is not None and full is not None and shifted is not None
    assert full.logits_bytes == batch * seq * (plan.new_size + 1) * 4
    dropped = VOCAB - plan.new_size
    hidden = model.config.hidden_size
    # the gathered rows of one chunk (here all dropped rows fit in one), one positions x rows
    # fp32 block, two positions x hidden fp32 blocks
    workspace = dropped * hidden * 4 + batch * seq * dropped * 4 + 2 * batch * seq * hidden * 4
    assert full.loss_bytes == 2 * full.logits_bytes + workspace
    assert full.parameters == base.parameters
    assert shifted.parameters == base.parameters + hidden
    assert shifted.optimizer_state_bytes == base.optimizer_state_bytes + 2 * hidden * 4
    # the estimate of the applied model (shift vector in place) agrees on the parameters
    applied = apply_plan(plan, model=model, softmax="shifted")
    live = memory_estimate(model, batch_size=batch, seq_len=seq).full
    assert live.parameters == shifted.parameters
    assert live.optimizer_state_bytes == shifted.optimizer_state_bytes
    revert_plan(applied)
    with pytest.raises(VocabError, match="softmax"):
        memory_estimate(model, plan, softmax="fast")


def test_peak_is_the_largest_moment_of_a_step() -> None:
    model = build("llama", "sdpa")
    est = memory_estimate(model, batch_size=2, seq_len=8).full
    assert est.activation_bytes is not None
    weight = model.get_input_embeddings().weight
    vocab_grad = weight.numel() * 4
    start = est.activation_bytes + est.logits_bytes + est.loss_bytes
    head = est.activation_bytes + est.logits_bytes + vocab_grad
    end = est.gradient_bytes + 2 * vocab_grad  # tied: two copies while the second is added
    assert est.peak_bytes == (
        est.parameter_bytes + est.optimizer_state_bytes + max(start, head, end)
    )
    as_dict = est.as_dict()
    assert {"loss_bytes", "activation_bytes", "peak_bytes", "total_bytes"} <= as_dict.keys()
