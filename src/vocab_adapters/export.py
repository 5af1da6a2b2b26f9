"""``export_reduced``: write a permanently reduced model and tokenizer that load as they are."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vocab_adapters.session import apply_plan, revert_plan
from vocab_adapters.tokenization.tokenizer_backend import backend_of
from vocabcore import VocabError, VocabPlan

__all__ = ["EXPORT_FORMATS", "PLAN_FILE", "export_reduced"]

PLAN_FILE = "vocabcore_plan.json"
EXPORT_FORMATS = ("hf", "gguf", "onnx")


def export_reduced(
    model: Any,
    tokenizer: Any,
    plan: VocabPlan,
    out_dir: str | Path,
    *,
    format: str = "hf",
    overwrite: bool = False,
) -> Path:
    """Save ``model`` and ``tokenizer`` reduced by ``plan``, for good, into ``out_dir``.

    The result loads with ``AutoModel*.from_pretrained(out_dir)`` and
    ``AutoTokenizer.from_pretrained(out_dir)`` as it is: ``config.vocab_size`` is the reduced
    size and the tokenizer produces the reduced ids. The plan is saved beside them
    (``vocabcore_plan.json``) so ids can be mapped back. ``model`` and ``tokenizer`` are
    reduced only while saving and are restored before this returns, also on error; nothing is
    left in ``out_dir`` if saving fails.

    A sentence-transformers model (a ``SentenceTransformer``, or the path of a directory with
    ``modules.json``) is saved with ``SentenceTransformer.save``: ``SentenceTransformer(out_dir)``
    loads it with the same modules and pooling (pass ``st_model.tokenizer``, or ``None``).

    ``format="gguf"`` writes one GGUF file for llama.cpp instead (Llama, Qwen2/3 and Gemma 3
    decoders with byte-level or byte-fallback BPE; see :mod:`vocab_adapters.deploy.gguf`) and
    returns its path; ``format="onnx"`` writes a directory with ``model.onnx`` and the trimmed
    ``tokenizer.json`` for ONNX Runtime (see :mod:`vocab_adapters.deploy.onnx`). What a format
    cannot write faithfully is refused with a ``VocabError`` before anything is written.

    Args:
        model: A transformers model, or a sentence-transformers model.
        tokenizer: Its fast tokenizer (a slow sentencepiece tokenizer cannot be saved reduced:
            load the fast one with ``AutoTokenizer.from_pretrained(..., use_fast=True)``).
        plan: The plan to apply.
        out_dir: Directory to create (for ``"gguf"``: the ``.gguf`` file).
        format: ``"hf"`` (a Hugging Face directory), ``"gguf"`` or ``"onnx"``.
        overwrite: Replace ``out_dir`` if it exists.

    Returns:
        The output directory (for ``"gguf"``: the file).
    """
    if format not in EXPORT_FORMATS:
        raise VocabError(f"'format' must be one of {', '.join(EXPORT_FORMATS)} (got {format!r})")
    if format == "gguf":
        from vocab_adapters.deploy.gguf import export_gguf

        return export_gguf(model, tokenizer, plan, out_dir, overwrite=overwrite)
    if format == "onnx":
        from vocab_adapters.deploy.onnx import export_onnx

        return export_onnx(model, tokenizer, plan, out_dir, overwrite=overwrite)
    target = Path(out_dir)
    if target.exists() and not overwrite and any(target.iterdir()):
        raise VocabError(
            f"output directory {str(target)!r} exists and is not empty; choose another "
            "or pass overwrite=True (--overwrite)"
        )
    from vocab_adapters.integrations import sentence_transformer as st

    if isinstance(model, (str, Path)) and st.is_sentence_transformer_dir(model):
        model = st.load(model)
    if st.is_sentence_transformer(model):
        st_model = model
        model, tokenizer = st.transformer_parts(st_model, tokenizer)
        return write_reduced(plan, model, tokenizer, target, lambda d: st_model.save(str(d)))

    def save(directory: Path) -> None:
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
        if plan.added:
            _load_tokenizer_json_as_saved(directory, tokenizer)

    return write_reduced(plan, model, tokenizer, target, save)


def write_reduced(
    plan: VocabPlan, model: Any, tokenizer: Any, target: Path, save: Callable[[Path], None]
) -> Path:
    """Apply, ``save`` into a staging directory, revert, then move it to ``target``.

    The one way every directory format is written (``hf`` here, ``onnx`` in
    :mod:`vocab_adapters.deploy.onnx`).

    Nothing is left behind if anything fails, and the model and tokenizer end as they were.
    """
    if backend_of(tokenizer) is None:
        raise VocabError(
            f"export needs a fast tokenizer (got the slow {type(tokenizer).__name__}); load it "
            "with AutoTokenizer.from_pretrained(path, use_fast=True)"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        applied = apply_plan(plan, model=model, tokenizer=tokenizer)
        try:
            save(staging)
        finally:
            revert_plan(applied)
        plan.save(staging / PLAN_FILE)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _load_tokenizer_json_as_saved(directory: Path, tokenizer: Any) -> None:
    """Name the generic class in ``tokenizer_config.json`` where the family class would rebuild.

    transformers 5's family classes with their own constructor (``Qwen2Tokenizer``,
    ``LlamaTokenizer``, ...) rebuild the model from the file's vocabulary and merges with fixed
    settings, which drops what added tokens rely on (``ignore_merges``, an appended ``Split``);
    ``TokenizersBackend`` loads ``tokenizer.json`` as it is. transformers 4 always does.
    """
    import transformers

    generic = getattr(transformers, "TokenizersBackend", None)
    cls = type(tokenizer)
    if generic is None or cls is generic or not isinstance(tokenizer, generic):
        return
    if "__init__" not in vars(cls):
        return
    config_file = directory / "tokenizer_config.json"
    if not config_file.is_file():
        return
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config["tokenizer_class"] = generic.__name__
    config_file.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", "utf-8")
