"""A trimmed decoder as one GGUF file for llama.cpp, written with the ``gguf`` package.

llama.cpp's converter cannot take a trimmed model as it is: it names the pre-tokenizer by
hashing the ids of a test string (``chkhsh``), and renumbered ids give a hash it refuses. This
writer names the pre-tokenizer from the parent's own regex instead (the Split pattern the
trimmed ``tokenizer.json`` still carries), and checks what llama.cpp's tokenizer needs: its
byte-level BPE looks bytes up one by one and drops a byte that has no token, and its
byte-fallback (SentencePiece-style) tokenizer emits ``<0xXX>`` pieces, so every byte token or
byte piece must be in the trimmed vocabulary.

Handled: ``LlamaForCausalLM`` (and ``MistralForCausalLM``), ``Qwen2ForCausalLM``,
``Qwen3ForCausalLM`` and ``Gemma3ForCausalLM`` with a byte-level BPE tokenizer whose
pre-tokenizer llama.cpp knows (``llama-bpe``, ``qwen2``, ``tekken``, ``gpt-2``) or a
``byte_fallback`` BPE (written as llama.cpp's ``llama`` vocabulary, merge ranks as scores).
Anything else is refused with a :class:`~vocabcore.VocabError` before a file is written.
Tensors follow llama.cpp's converter: Llama's q/k rows are permuted for its rotary layout,
Gemma 3's norms are stored as ``1 + w``, 1-D tensors stay float32, matrices are float32 or
float16.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from vocabcore import VocabError, VocabPlan

__all__ = [
    "ARCHITECTURES",
    "PLAN_KEY",
    "export_gguf",
    "PRE_TOKENIZERS",
    "check_gguf_export",
    "write_gguf",
]

# transformers class -> gguf architecture name
ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "Gemma3ForCausalLM": "gemma3",
}

# The Split regex of a byte-level BPE pre-tokenizer -> llama.cpp's name for it
# (``tokenizer.ggml.pre``): the patterns of Llama 3, Qwen 2/2.5/3 and Mistral's Tekken.
PRE_TOKENIZERS = {
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+": "llama-bpe",
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+": "qwen2",
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|"
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+": "tekken",
}

PLAN_KEY = "vocabcore.plan"  # GGUF metadata key holding the plan's JSON

# token types of llama.cpp's vocabulary (gguf.TokenType)
_NORMAL, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 3, 4, 5, 6
_BYTE_PIECE = re.compile(r"<0x[0-9A-F]{2}>")


def _byte_level_alphabet() -> list[str]:
    """The 256 characters GPT-2's byte-level BPE maps bytes to, in byte order."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    chars = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def _tokenizer_shape(spec: Mapping[str, Any]) -> tuple[str, str | None]:
    """``("gpt2", pre)`` for byte-level BPE, ``("llama", None)`` for byte-fallback BPE.

    Raises:
        VocabError: Not a BPE, or a pre-tokenizer llama.cpp has no name for.
    """
    model = spec.get("model") or {}
    if model.get("type") != "BPE":
        raise VocabError(
            f"GGUF export handles BPE tokenizers (byte-level or byte_fallback), not a "
            f"{model.get('type')!r} model; export this one with format='hf' or 'onnx'"
        )
    if model.get("byte_fallback"):
        spaces_replaced = any(
            p.get("type") == "Replace" and (p.get("pattern") or {}).get("String") == " "
            for p in _parts(spec.get("normalizer"), "normalizers")
        )
        splitting = [
            p
            for p in _parts(spec.get("pre_tokenizer"), "pretokenizers")
            if not (p.get("type") == "Metaspace" and not p.get("split", True))
            # Gemma's split on " " after a normalizer that replaced every " ": a no-op
            and not (
                p.get("type") == "Split"
                and (p.get("pattern") or {}).get("String") == " "
                and spaces_replaced
            )
        ]
        if splitting:
            raise VocabError(
                f"GGUF export: llama.cpp's byte-fallback tokenizer does not split words, but "
                f"this tokenizer's pre-tokenizer does ({[p.get('type') for p in splitting]})"
            )
        return "llama", None
    parts = _parts(spec.get("pre_tokenizer"), "pretokenizers")
    kinds = [p.get("type") for p in parts]
    if "ByteLevel" not in kinds:
        raise VocabError(
            f"GGUF export needs a byte-level or byte_fallback BPE; this BPE's pre-tokenizer is "
            f"{kinds} and its model has no byte_fallback, so llama.cpp would lose text"
        )
    splits = [p for p in parts if p.get("type") == "Split"]
    if not splits:
        level = next(p for p in parts if p.get("type") == "ByteLevel")
        if level.get("use_regex", True):
            return "gpt2", "gpt-2"
        raise VocabError("GGUF export: a ByteLevel pre-tokenizer without a regex is unknown")
    pattern = (splits[0].get("pattern") or {}).get("Regex")
    name = PRE_TOKENIZERS.get(pattern or "")
    if len(splits) != 1 or name is None:
        raise VocabError(
            f"GGUF export: llama.cpp has no pre-tokenizer known here for the Split pattern "
            f"{pattern!r}; the ones handled are {', '.join(sorted(set(PRE_TOKENIZERS.values())))}"
        )
    return "gpt2", name


def _byte_tokens(kind: str) -> list[str]:
    """The 256 byte tokens (byte-level) or byte pieces (byte-fallback) llama.cpp looks up."""
    if kind == "gpt2":
        return _byte_level_alphabet()
    return [f"<0x{b:02X}>" for b in range(256)]


def _model_class(model: Any) -> str:
    name = type(model).__name__
    if name not in ARCHITECTURES:
        raise VocabError(
            f"GGUF export handles {', '.join(ARCHITECTURES)}; got {name}. Export it with "
            "format='hf' (or 'onnx') and convert it with llama.cpp's own converter"
        )
    return name


def _config_value(config: Any, *names: str, default: Any = None) -> Any:
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    return default


def _rope(config: Any) -> tuple[float, float | None, Mapping[str, Any]]:
    """``(rope_theta, local rope_theta or None, scaling)`` under transformers 4 and 5."""
    params = getattr(config, "rope_parameters", None) or {}
    if "full_attention" in params:
        full = params["full_attention"] or {}
        local = (params.get("sliding_attention") or {}).get("rope_theta")
    else:
        full = params
        local = getattr(config, "rope_local_base_freq", None)
    theta = full.get("rope_theta", getattr(config, "rope_theta", None))
    scaling = dict(full) if full.get("rope_type", "default") != "default" else {}
    if not scaling and getattr(config, "rope_scaling", None):
        scaling = dict(config.rope_scaling)
    if scaling.get("rope_type", scaling.get("type", "default")) == "default":
        scaling = {}
    return float(theta if theta is not None else 10000.0), local, scaling


def check_gguf_export(model: Any, tokenizer: Any, plan: VocabPlan) -> tuple[str, str]:
    """Refuse what the writer cannot write faithfully; returns ``(vocab kind, pre name)``.

    Reads the *parent* tokenizer (its pre-tokenizer is the identity the GGUF file carries)
    and checks that ``plan`` keeps every byte token or byte piece. Touches nothing.

    Raises:
        VocabError: A model family, tokenizer shape or setting the writer does not handle,
            byte tokens the plan drops (with their ids, to keep), or no ``gguf`` package.
    """
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise VocabError(
            "GGUF export needs the gguf package: pip install 'vocabcore[deploy]'"
        ) from None
    name = _model_class(model)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise VocabError(
            f"GGUF export needs a fast tokenizer (got {type(tokenizer).__name__}); load it "
            "with AutoTokenizer.from_pretrained(path, use_fast=True)"
        )
    spec = json.loads(backend.to_str())
    kind, pre = _tokenizer_shape(spec)
    vocab = spec["model"]["vocab"]
    needed = [vocab[t] for t in _byte_tokens(kind) if t in vocab]
    dropped = [i for i in needed if i >= plan.vocab_size or not plan.is_kept(i)]
    if len(needed) < 256 or dropped:
        absent = 256 - len(needed)
        raise VocabError(
            "llama.cpp needs every byte token to encode any text, but "
            + (f"the tokenizer lacks {absent} of them" if absent else "")
            + (" and " if absent and dropped else "")
            + (
                f"the plan drops {len(dropped)}: keep ids {dropped[:16]}"
                f"{' ...' if len(dropped) > 16 else ''} (plan.keeping(ids), or build the plan "
                "with plan_from_texts, which keeps them)"
                if dropped
                else ""
            )
        )
    config = model.config
    _, _, scaling = _rope(config)
    rope = scaling.get("rope_type", scaling.get("type"))
    allowed = {"llama": ("llama3", "linear"), "gemma3": ("linear",)}.get(ARCHITECTURES[name], ())
    if scaling and rope not in allowed:
        raise VocabError(f"GGUF export: rope scaling {rope!r} of {name} is not handled here")
    if name == "Gemma3ForCausalLM":
        head_dim = config.head_dim
        scalar = getattr(config, "query_pre_attn_scalar", head_dim)
        if scalar != head_dim:
            raise VocabError(
                f"GGUF export: llama.cpp scales Gemma 3 attention by 1/sqrt(head_dim "
                f"{head_dim}), but this config's query_pre_attn_scalar is {scalar}"
            )
    return kind, pre or "default"


def _permute(weights: Any, n_head: int) -> Any:
    """Llama's q/k rows from Hugging Face's rotary layout to llama.cpp's (as its converter)."""
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _llama3_rope_factors(config: Any, theta: float, scaling: Mapping[str, Any]) -> Any:
    import torch

    dim = _config_value(config, "head_dim") or config.hidden_size // config.num_attention_heads
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    factor = scaling.get("factor", 8.0)
    low, high = scaling.get("low_freq_factor", 1.0), scaling.get("high_freq_factor", 4.0)
    old = scaling.get("original_max_position_embeddings", 8192)
    factors = []
    for freq in freqs.tolist():
        wavelen = 2 * math.pi / freq
        if wavelen < old / high:
            factors.append(1.0)
        elif wavelen > old / low:
            factors.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return torch.tensor(factors, dtype=torch.float32)


def _tensors(model: Any, arch_name: str, arch: Any, rows: int) -> Iterator[tuple[str, Any]]:
    """(gguf name, float32 torch tensor) for each weight, transformed as llama.cpp expects."""
    import gguf
    import torch

    config = model.config
    n_blocks = config.num_hidden_layers
    names = gguf.get_tensor_name_map(arch, n_blocks)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    for hf_name, tensor in model.state_dict().items():
        if "rotary_emb" in hf_name:
            continue
        if hf_name == "lm_head.weight" and tied:
            continue
        data = tensor.detach().to(torch.float32).cpu()
        if hf_name.endswith("embed_tokens.weight") or hf_name == "lm_head.weight":
            data = data[:rows]
        if arch_name == "llama":
            heads = config.num_attention_heads
            if hf_name.endswith("q_proj.weight"):
                data = _permute(data, heads)
            elif hf_name.endswith("k_proj.weight"):
                data = _permute(data, config.num_key_value_heads)
        if arch_name == "gemma3" and hf_name.endswith("norm.weight"):
            data = data + 1.0
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise VocabError(f"GGUF export: no llama.cpp tensor for {hf_name!r} ({arch_name})")
        yield name, data


def _token_table(
    spec: Mapping[str, Any], kind: str, rows: int, specials: set[int]
) -> tuple[list[str], list[int], list[float]]:
    """Tokens, token types and scores for ``rows`` ids (unused rows padded as llama.cpp's)."""
    vocab: Mapping[str, int] = spec["model"]["vocab"]
    by_id: dict[int, str] = {i: t for t, i in vocab.items()}
    added = {a["id"]: a for a in spec.get("added_tokens", [])}
    merges = spec["model"].get("merges") or []
    rank: dict[str, int] = {}
    for position, merge in enumerate(merges):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        rank.setdefault(left + right, position)
    tokens, types, scores = [], [], []
    for i in range(rows):
        if i in added:
            token = added[i]["content"]
            types.append(_CONTROL if added[i].get("special") or i in specials else _USER_DEFINED)
            scores.append(0.0)
        elif i in by_id:
            token = by_id[i]
            if kind == "llama" and _BYTE_PIECE.fullmatch(token):
                types.append(_BYTE)
            else:
                types.append(_CONTROL if i in specials else _NORMAL)
            scores.append(-float(rank[token]) - 1.0 if token in rank else 0.0)
        else:
            token = f"[PAD{i}]"
            types.append(_UNUSED)
            scores.append(0.0)
        tokens.append(token)
    return tokens, types, scores


def _parts(component: Mapping[str, Any] | None, key: str) -> list[Mapping[str, Any]]:
    """The steps of a normalizer or pre-tokenizer (``key`` names a Sequence's list)."""
    if not component:
        return []
    if component.get("type") == "Sequence":
        return list(component.get(key) or [])
    return [component]


def _prepends_space(spec: Mapping[str, Any]) -> bool:
    """Whether the tokenizer puts ``▁`` before the text (Prepend, or Metaspace's scheme)."""
    normalizers = _parts(spec.get("normalizer"), "normalizers")
    pre = _parts(spec.get("pre_tokenizer"), "pretokenizers")
    return any(p.get("type") == "Prepend" for p in normalizers) or any(
        p.get("type") == "Metaspace" and p.get("prepend_scheme", "always") != "never" for p in pre
    )


def write_gguf(
    model: Any,
    tokenizer: Any,
    path: str | Path,
    *,
    dtype: str = "f16",
    kind: str | None = None,
    pre: str | None = None,
    plan: VocabPlan | None = None,
) -> Path:
    """Write ``model`` and its fast ``tokenizer`` (both already reduced) as one GGUF file.

    Call :func:`check_gguf_export` first (``export_reduced(..., format="gguf")`` does both,
    on the reduced tokenizer, and names the pre-tokenizer from the parent).

    Args:
        model: A ``*ForCausalLM`` of :data:`ARCHITECTURES`.
        tokenizer: Its fast tokenizer.
        path: The ``.gguf`` file to write.
        dtype: ``"f16"`` or ``"f32"`` for matrices (1-D tensors are always float32).
        kind: ``"gpt2"`` or ``"llama"``; default from the tokenizer.
        pre: llama.cpp's pre-tokenizer name; default from the tokenizer.
        plan: The plan that reduced them, stored as JSON under ``vocabcore.plan`` so ids can
            be mapped back.

    Returns:
        ``path``.
    """
    import gguf

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    if kind is None:
        kind, found = _tokenizer_shape(spec)
        pre = pre or found
    if dtype not in ("f16", "f32"):
        raise VocabError(f"'dtype' must be 'f16' or 'f32' (got {dtype!r})")
    config = model.config
    name = _model_class(model)
    arch_name = ARCHITECTURES[name]
    arch = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == arch_name)
    rows = int(model.get_input_embeddings().weight.shape[0])
    specials = set(tokenizer.all_special_ids)
    tokens, types, scores = _token_table(spec, kind, rows, specials)

    writer = gguf.GGUFWriter(str(path), arch_name)
    writer.add_name(str(getattr(config, "_name_or_path", "") or "vocabcore-trimmed"))
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(int(_config_value(config, "max_position_embeddings", default=4096)))
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(
        _config_value(config, "num_key_value_heads", default=config.num_attention_heads)
    )
    head_dim = _config_value(config, "head_dim") or config.hidden_size // config.num_attention_heads
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_layer_norm_rms_eps(float(_config_value(config, "rms_norm_eps", default=1e-6)))
    theta, local_theta, scaling = _rope(config)
    writer.add_rope_freq_base(theta)
    if arch_name == "llama":
        writer.add_rope_dimension_count(head_dim)
    if scaling.get("rope_type", scaling.get("type")) == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(scaling["factor"]))
    writer.add_vocab_size(rows)
    if arch_name == "gemma3":
        writer.add_sliding_window(int(_config_value(config, "sliding_window", default=4096)))
        if local_theta is not None:
            writer.add_rope_freq_base_swa(float(local_theta))
        softcap = getattr(config, "final_logit_softcapping", None)
        if softcap:
            writer.add_final_logit_softcapping(float(softcap))
    writer.add_file_type(
        gguf.LlamaFileType.MOSTLY_F16 if dtype == "f16" else gguf.LlamaFileType.ALL_F32
    )

    writer.add_tokenizer_model(kind)
    writer.add_tokenizer_pre(pre or "default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    if kind == "llama":
        writer.add_token_scores(scores)
        writer.add_add_space_prefix(_prepends_space(spec))
    else:
        merges = spec["model"].get("merges") or []
        writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    for key, value in (
        ("bos", tokenizer.bos_token_id),
        ("eos", tokenizer.eos_token_id),
        ("unk", tokenizer.unk_token_id),
        ("pad", tokenizer.pad_token_id),
    ):
        if value is not None:
            getattr(writer, f"add_{key}_token_id")(int(value))
    probe = tokenizer("a")["input_ids"]
    writer.add_add_bos_token(bool(probe) and probe[0] == tokenizer.bos_token_id)
    writer.add_add_eos_token(bool(probe) and len(probe) > 1 and probe[-1] == tokenizer.eos_token_id)
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, str):
        writer.add_chat_template(template)
    if plan is not None:
        writer.add_string(PLAN_KEY, plan.to_json())

    if scaling.get("rope_type", scaling.get("type")) == "llama3":
        factors = _llama3_rope_factors(config, theta, scaling)
        writer.add_tensor(
            gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", factors.numpy()
        )
    for tensor_name, data in _tensors(model, arch_name, arch, rows):
        array = data.numpy()
        if dtype == "f16" and array.ndim > 1:
            array = array.astype("float16")
        writer.add_tensor(tensor_name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)


def export_gguf(
    model: Any, tokenizer: Any, plan: VocabPlan, out: str | Path, *, overwrite: bool = False
) -> Path:
    """``export_reduced(..., format="gguf")``: check, reduce, write one file, restore.

    ``out`` is the ``.gguf`` file (a path without that suffix is taken as a directory that
    gets ``model.gguf``). Matrices are float32 for a float32 model and float16 otherwise
    (``model.half()`` first for a float16 file). Everything is checked before anything is
    written; the model and tokenizer end as they were, also on error, and no partial file is
    left.
    """
    import torch

    from vocab_adapters.session import apply_plan, revert_plan

    target = Path(out)
    if target.suffix != ".gguf":
        target = target / "model.gguf"
    if target.exists() and not overwrite:
        raise VocabError(f"{str(target)!r} exists; choose another path or pass overwrite=True")
    kind, pre = check_gguf_export(model, tokenizer, plan)
    dtype = "f32" if next(model.parameters()).dtype == torch.float32 else "f16"
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.partial")
    try:
        applied = apply_plan(plan, model=model, tokenizer=tokenizer)
        try:
            write_gguf(model, tokenizer, staging, dtype=dtype, kind=kind, pre=pre, plan=plan)
        finally:
            revert_plan(applied)
        staging.replace(target)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    return target
