"""A trimmed encoder or decoder exported to ONNX for ONNX Runtime.

``export_onnx`` (``export_reduced(..., format="onnx")``) reduces the model and tokenizer by the
plan, exports the model with ``torch.onnx.export`` (the TorchScript exporter, which needs no
extra package), restores both, and leaves a directory with:

* ``model.onnx``: inputs ``input_ids`` and ``attention_mask`` (int64, ``[batch, sequence]``);
  outputs ``logits`` for a causal or masked LM (no KV cache), ``last_hidden_state`` for a bare
  encoder, and ``last_hidden_state`` plus ``sentence_embedding`` for a sentence-transformers
  model (its pooling, ``mean`` or ``cls``, and its ``Normalize`` step included);
* the trimmed tokenizer as ``save_pretrained`` writes it (``tokenizer.json`` is the file an
  ONNX Runtime deployment loads with ``tokenizers.Tokenizer.from_file``), the model's
  ``config.json`` with the reduced ``vocab_size``, and the plan (``vocabcore_plan.json``).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from vocabcore import VocabError, VocabPlan

__all__ = ["ONNX_FILE", "export_onnx"]

ONNX_FILE = "model.onnx"


def _pooling(st_model: Any) -> tuple[str, bool]:
    """``(pooling mode, normalized)`` of a sentence-transformers pipeline."""
    mode, normalize = None, False
    for module in list(st_model)[1:]:
        kind = type(module).__name__
        if kind == "Pooling":
            found = getattr(module, "pooling_mode", None)  # sentence-transformers 6
            if not isinstance(found, str):
                found = module.get_pooling_mode_str()
            mode = found
        elif kind == "Normalize":
            normalize = True
        else:
            raise VocabError(
                f"ONNX export handles Transformer, Pooling and Normalize modules; this "
                f"sentence-transformers model also has {kind}"
            )
    if mode not in ("mean", "cls"):
        raise VocabError(
            f"ONNX export handles mean and cls pooling; this model pools with {mode!r}"
        )
    return mode, normalize


def _wrapper(model: Any, pooling: tuple[str, bool] | None) -> tuple[Any, list[str]]:
    """The module to trace and its output names."""
    import torch

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            out = self.model(input_ids=input_ids, attention_mask=attention_mask)
            hidden = out.last_hidden_state
            if pooling is None:
                return hidden
            mode, normalize = pooling
            if mode == "mean":
                mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
                embedding = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            else:
                embedding = hidden[:, 0]
            if normalize:
                embedding = torch.nn.functional.normalize(embedding, p=2, dim=1)
            return hidden, embedding

    causal = type(model).__name__.endswith("ForCausalLM")

    class WithHead(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            kwargs = {"use_cache": False} if getattr(model.config, "use_cache", None) else {}
            mask = attention_mask
            if causal:
                # the 4-D additive mask, built here: transformers 4.5x builds its own with
                # vmap, which the TorchScript tracer cannot follow; every version takes this
                n = input_ids.shape[1]
                allowed = torch.ones(n, n, dtype=torch.bool, device=input_ids.device).tril()
                allowed = allowed[None, None] & attention_mask[:, None, None, :].bool()
                dtype = model.get_input_embeddings().weight.dtype
                blocked = torch.full(allowed.shape, torch.finfo(dtype).min, dtype=dtype)
                mask = torch.where(allowed, torch.zeros_like(blocked), blocked)
            out = self.model(input_ids=input_ids, attention_mask=mask, **kwargs)
            return out.logits

    if pooling is not None:
        return Encoder(), ["last_hidden_state", "sentence_embedding"]
    if model.get_output_embeddings() is not None:
        return WithHead(), ["logits"]
    return Encoder(), ["last_hidden_state"]


def _set_attention(model: Any, implementation: str) -> None:
    """Switch the attention implementation (eager traces into ONNX everywhere; SDPA may not)."""
    setter = getattr(model, "set_attn_implementation", None)
    if callable(setter):
        try:
            setter(implementation)
            return
        except (ValueError, TypeError, AttributeError, ImportError):
            pass
    model.config._attn_implementation = implementation


def export_onnx(
    model: Any, tokenizer: Any, plan: VocabPlan, out_dir: str | Path, *, overwrite: bool = False
) -> Path:
    """``export_reduced(..., format="onnx")``: a directory ONNX Runtime runs (module docstring).

    Args:
        model: A transformers model (causal LM, masked LM, bare encoder) or a
            sentence-transformers model (or the path of its directory).
        tokenizer: Its fast tokenizer (``None`` for a sentence-transformers model).
        plan: The plan to apply.
        out_dir: Directory to create.
        overwrite: Replace ``out_dir`` if it exists.

    Returns:
        The output directory.

    Raises:
        VocabError: No ``onnx`` package, a slow tokenizer, a pipeline this exporter does not
            handle, or an existing ``out_dir``; raised before anything is written.
    """
    import torch

    from vocab_adapters.integrations import sentence_transformer as st

    target = Path(out_dir)
    if target.exists() and not overwrite and any(target.iterdir()):
        raise VocabError(
            f"output directory {str(target)!r} exists and is not empty; choose another "
            "or pass overwrite=True (--overwrite)"
        )
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise VocabError(
            "ONNX export needs the onnx package: pip install 'vocabcore[deploy]'"
        ) from None
    pooling = None
    if isinstance(model, (str, Path)) and st.is_sentence_transformer_dir(model):
        model = st.load(model)
    if st.is_sentence_transformer(model):
        pooling = _pooling(model)
        model, tokenizer = st.transformer_parts(model, tokenizer)
    if getattr(tokenizer, "backend_tokenizer", None) is None:
        raise VocabError(
            f"ONNX export needs a fast tokenizer (its tokenizer.json is what a deployment "
            f"loads; got {type(tokenizer).__name__}); load it with use_fast=True"
        )
    from vocab_adapters.export import write_reduced

    def save(staging: Path) -> None:
        attention = getattr(model.config, "_attn_implementation", None)
        training = model.training
        try:
            _set_attention(model, "eager")
            model.eval()
            module, outputs = _wrapper(model, pooling)
            sample = tokenizer("an example to trace")["input_ids"]
            ids = torch.tensor([sample, sample], dtype=torch.long)
            mask = torch.ones_like(ids)
            axes = {"input_ids": {0: "batch", 1: "sequence"}}
            axes["attention_mask"] = {0: "batch", 1: "sequence"}
            for name in outputs:
                axes[name] = {0: "batch"} if name == "sentence_embedding" else axes["input_ids"]
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    module,
                    (ids, mask),
                    str(staging / ONNX_FILE),
                    input_names=["input_ids", "attention_mask"],
                    output_names=outputs,
                    dynamic_axes=axes,
                    opset_version=17,
                    dynamo=False,
                )
            tokenizer.save_pretrained(str(staging))
            model.config.save_pretrained(str(staging))
        finally:
            if attention is not None:
                _set_attention(model, attention)
            model.train(training)

    return write_reduced(plan, model, tokenizer, target, save)
