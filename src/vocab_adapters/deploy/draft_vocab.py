"""A plan's kept ids as the draft vocabulary of speculative decoding.

Serving engines already trim the draft head's vocabulary to frequent tokens: FR-Spec in SGLang
(``--speculative-token-map``) and EAGLE-3 drafts (``d2t``/``t2d``). A plan built with
``max_size`` on a domain corpus is such a subset, so it can be written in their formats:

* ``"sglang"``: ``torch.save`` of a 1-D int64 tensor of target ids, draft id ``i`` standing
  for target id ``ids[i]``. SGLang's ``load_token_map`` reads it with
  ``torch.tensor(torch.load(path, weights_only=True), dtype=torch.int64)`` and slices the draft
  ``lm_head`` with it.
* ``"eagle3"``: the two tensors of an EAGLE-3 draft checkpoint, ``d2t`` (int64, length K,
  ``target_id - draft_id`` for target ids in ascending order, so ``target = d + d2t[d]``) and
  ``t2d`` (bool, one entry per target id, true for those in the draft vocabulary). Engines
  read them with the draft's weights (``hot_token_id = d2t + arange(len(d2t))``); written as a
  ``.safetensors`` file, or as a ``torch.save`` dict for any other suffix (the form SpecForge
  caches).

Draft id ``i`` is the plan's new id ``i`` in both formats (kept ids are in ascending order),
so a draft trained on the trimmed model needs no further mapping.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vocabcore import VocabError, VocabPlan

__all__ = ["DRAFT_FORMATS", "draft_maps", "draft_vocab"]

DRAFT_FORMATS = ("sglang", "eagle3")


def draft_maps(plan: VocabPlan, target_vocab_size: int | None = None) -> dict[str, Any]:
    """The draft maps of ``plan`` as tensors: ``hot`` (SGLang), ``d2t`` and ``t2d`` (EAGLE-3).

    Args:
        plan: A plan of the target model's vocabulary, without added tokens.
        target_vocab_size: Rows of the target model's output (``config.vocab_size``, which may
            exceed the tokenizer's length); default ``plan.vocab_size``.

    Returns:
        ``{"hot": int64[K], "d2t": int64[K], "t2d": bool[target_vocab_size]}``.

    Raises:
        VocabError: The plan adds tokens (a draft can only propose target ids), or
            ``target_vocab_size`` is smaller than the plan's vocabulary.
    """
    import torch

    if plan.added:
        raise VocabError(
            f"a draft vocabulary holds target ids, but the plan adds {len(plan.added)} new "
            f"tokens ({', '.join(map(repr, plan.added[:3]))}...); build the draft plan without "
            "added tokens"
        )
    size = plan.vocab_size if target_vocab_size is None else target_vocab_size
    if not isinstance(size, int) or size < plan.vocab_size:
        raise VocabError(
            f"'target_vocab_size' must be an int of at least the plan's vocab_size "
            f"{plan.vocab_size} (got {target_vocab_size!r}); pass the target config.vocab_size"
        )
    hot = torch.tensor(plan.kept, dtype=torch.int64)
    t2d = torch.zeros(size, dtype=torch.bool)
    t2d[hot] = True
    return {"hot": hot, "d2t": hot - torch.arange(hot.numel(), dtype=torch.int64), "t2d": t2d}


def draft_vocab(
    plan: VocabPlan,
    out: str | Path,
    *,
    format: str = "sglang",
    target_vocab_size: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``plan``'s kept ids as a draft vocabulary that a serving engine loads.

    Example (SGLang): ``draft_vocab(plan, "hot.pt")`` then
    ``--speculative-token-map hot.pt``. EAGLE-3: ``draft_vocab(plan, "d2t.safetensors",
    format="eagle3")`` and put ``d2t``/``t2d`` beside the draft's weights.

    Args:
        plan: A plan of the target's vocabulary (``vocabcore plan --max-size K``).
        out: File to write.
        format: ``"sglang"`` or ``"eagle3"`` (see the module docstring).
        target_vocab_size: The target's ``config.vocab_size`` when it exceeds the plan's.
        overwrite: Replace ``out`` if it exists.

    Returns:
        The path written.

    Raises:
        VocabError: An unknown format, an existing ``out``, or a plan ``draft_maps`` refuses.
    """
    import torch

    if format not in DRAFT_FORMATS:
        raise VocabError(f"'format' must be one of {', '.join(DRAFT_FORMATS)} (got {format!r})")
    target = Path(out)
    if target.exists() and not overwrite:
        raise VocabError(f"{str(target)!r} exists; choose another path or pass overwrite=True")
    maps = draft_maps(plan, target_vocab_size)
    target.parent.mkdir(parents=True, exist_ok=True)
    if format == "sglang":
        torch.save(maps["hot"], target)
    elif target.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({"d2t": maps["d2t"], "t2d": maps["t2d"]}, str(target))
    else:
        torch.save({"d2t": maps["d2t"], "t2d": maps["t2d"]}, target)
    return target
