"""The TRL recipe's quality: ``SFTTrainer`` with TRL's defaults, full vocabulary vs reduced.

A tiny Qwen2-style chat model (Qwen2 architecture, tied embeddings, ChatML template with
``<|im_start|>``/``<|im_end|>``, an 8,192-token byte-level BPE trained here) is pretrained from
scratch on conversations about general text (Python's ``pydoc_data.topics`` and the docstrings
of the standard library: "Describe X." answered with X's documentation), then fine-tuned with
TRL's ``SFTTrainer`` on conversations about a narrow domain held out of pretraining (the e-mail
modules of ``softmax_quality.py``), following docs/recipes.md: ``plan_from_texts`` on the
training ``Dataset``, ``apply_plan(..., softmax=MODE)`` before the trainer is built,
``trainer.train()``, ``revert_plan``. Four fine-tunings per seed: no reduction, and each
softmax mode.

``SFTConfig`` keeps TRL's defaults (its fused LM head, bf16 autocast, gradient checkpointing,
3 epochs, batch 8, ``max_length`` 1024, loss on every token of the conversation) except the
learning rate (1e-3 instead of 2e-5, which barely moves a model this small), ``seed`` and the
bookkeeping options (output directory, no reports, no checkpoints, CPU). After revert every
model is measured over the full vocabulary on held-out domain and general conversations.

Each run is a fresh process. Run: ``python benchmarks/trl_quality.py [--seeds 3]`` (CPU, about
25 minutes on 2 cores). Writes ``benchmarks/trl_quality.json``; ``--table`` prints the table.
"""

from __future__ import annotations

import importlib
import inspect
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _harness as h
import softmax_quality as sq

h.setup(quiet=True, tokenizer_threads=True)

VOCAB = 8192
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
MAX_CHARS = 700
PRETRAIN_STEPS = 400
PRETRAIN_LR = 3e-3
SFT_LR = 1e-3
BATCH = 8


def _named_docs(name: str) -> list[tuple[str, str]]:
    """(qualified name, docstring) of a module, its classes, functions and methods."""
    try:
        module = importlib.import_module(name)
    except Exception:
        return []
    out = [(name, inspect.getdoc(module) or "")]
    for key, obj in list(vars(module).items()):
        if getattr(obj, "__module__", None) != name:
            continue
        out.append((f"{name}.{key}", inspect.getdoc(obj) or ""))
        if inspect.isclass(obj):
            out.extend(
                (f"{name}.{key}.{k}", inspect.getdoc(o) or "")
                for k, o in vars(obj).items()
                if callable(o)
            )
    return [(n, d) for n, d in out if len(d) > 40]


def _conversation(name: str, text: str) -> list[dict[str, str]]:
    return [
        {"role": "user", "content": f"Describe {name}."},
        {"role": "assistant", "content": text[:MAX_CHARS]},
    ]


def conversations() -> dict[str, list[list[dict[str, str]]]]:
    """general_train, general_test, domain_train, domain_test: lists of conversations."""
    import pydoc_data.topics

    roots = {m.split(".")[0] for m in sq.DOMAIN_MODULES}
    general = [(f"the {k} topic", v) for k, v in pydoc_data.topics.topics.items() if len(v) > 40]
    for name in sorted(sys.stdlib_module_names):
        if not (name.startswith("_") or name in sq.SKIP or name in roots):
            general.extend(_named_docs(name))
    domain = [d for m in sq.DOMAIN_MODULES for d in _named_docs(m)]
    out: dict[str, list[list[dict[str, str]]]] = {}
    for key, docs in (("general", general), ("domain", domain)):
        docs = sorted(set(docs))
        random.Random(7).shuffle(docs)
        cut = len(docs) // (5 if key == "domain" else 10)
        convs = [_conversation(n, d) for n, d in docs]
        out[f"{key}_test"], out[f"{key}_train"] = convs[:cut], convs[cut:]
    out["general_test"] = out["general_test"][:200]
    return out


def tokenizer(cache: Path, convs: list[list[dict[str, str]]]) -> Any:
    """The chat tokenizer (trained once on the conversations' text, cached)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    path = cache / "tokenizer.json"
    if not path.exists():
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=VOCAB,
            special_tokens=SPECIALS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
        tok.train_from_iterator([m["content"] for c in convs for m in c], trainer)
        tok.save(str(path))
    out = PreTrainedTokenizerFast(
        tokenizer_file=str(path), eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    out.chat_template = TEMPLATE
    return out


def model_config(tok: Any) -> Any:
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=len(tok),
        **sq.SIZES,  # the causal LM of softmax_quality.py, as a Qwen2
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tok.eos_token_id,
        pad_token_id=None,  # as in Qwen2.5's config
    )


def encoded(tok: Any, convs: list[list[dict[str, str]]]) -> list[list[int]]:
    """Each conversation's ids as the chat template renders them (full tokenizer)."""
    texts = [tok.apply_chat_template(c, tokenize=False) for c in convs]
    ids: list[list[int]] = tok(texts, add_special_tokens=False)["input_ids"]
    return ids


def pretrain(cache: Path, tok: Any, convs: list[list[dict[str, str]]]) -> Path:
    """Pretrain on the general conversations, packed into 128-token blocks (cached)."""
    import torch
    from transformers import Qwen2ForCausalLM

    weights = cache / "pretrained.pt"
    if weights.exists():
        return weights
    stream = [i for ids in encoded(tok, convs) for i in ids]
    n = len(stream) // 128
    data = torch.tensor(stream[: n * 128]).reshape(n, 128)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(model_config(tok))
    seconds = sq.train(model, data, PRETRAIN_STEPS, PRETRAIN_LR, 0, warmup=50)
    torch.save(model.state_dict(), weights)
    h.write_json(cache / "pretrain.json", {"seconds": seconds, "blocks": n})
    return weights


def setup(cache: Path) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """Tokenizer, conversations and the pretrained weights."""
    import torch

    convs = conversations()
    tok = tokenizer(cache, convs["general_train"] + convs["domain_train"])
    weights = pretrain(cache, tok, convs["general_train"])
    return tok, convs, torch.load(weights)


def evaluate(model: Any, tok: Any, convs: list[list[dict[str, str]]], plan: Any) -> dict[str, Any]:
    """Full-vocabulary loss over every next token, loss over kept ids, mass on dropped ids."""
    import torch

    kept = torch.tensor(plan.kept)
    dropped = torch.tensor(sorted(set(range(plan.vocab_size)) - set(plan.kept)))
    model.eval()
    sums = []
    with torch.no_grad():
        for ids in encoded(tok, convs):
            batch = torch.tensor([ids])
            logits = model(input_ids=batch).logits[:, :-1].float()
            sums.append(sq.batch_sums(logits, batch[:, 1:], dropped, kept))
    return sq.averages(sums)


def sft_args(out: str, seed: int) -> Any:
    """TRL's defaults, but for the learning rate, the seed and bookkeeping."""
    from trl import SFTConfig

    return SFTConfig(
        output_dir=out,
        learning_rate=SFT_LR,
        seed=seed,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )


def run(mode: str, seed: int, cache: Path) -> dict[str, Any]:
    """One fine-tuning run in this process; measurements of the restored model."""
    import datasets
    import torch
    from transformers import Qwen2ForCausalLM
    from trl import SFTTrainer

    from vocab_adapters import apply_plan, plan_from_texts, revert_plan

    torch.set_num_threads(1)
    tok, convs, state = setup(cache)
    model = Qwen2ForCausalLM(model_config(tok))
    model.load_state_dict(state)
    train = datasets.Dataset.from_dict({"messages": convs["domain_train"]})
    plan = plan_from_texts(tok, train, model=model)
    result: dict[str, Any] = {"mode": mode, "seed": seed, "kept": plan.new_size, "rows": len(tok)}
    result["train_seconds"] = 0.0
    if mode != "pretrained":
        applied = None
        if mode != "full-vocab":
            applied = apply_plan(plan, model=model, tokenizer=tok, softmax=mode)
        with tempfile.TemporaryDirectory() as out:
            trainer = SFTTrainer(
                model=model, args=sft_args(out, seed), train_dataset=train, processing_class=tok
            )
            start = time.perf_counter()
            trainer.train()
            result["train_seconds"] = time.perf_counter() - start
        result["steps"] = trainer.state.global_step
        result["peak_rss_mb"] = sq.peak_rss_mb()
        if applied is not None:
            revert_plan(applied)
    for key in ("domain_test", "general_test"):
        result[key] = evaluate(model, tok, convs[key], plan)
    return result


def write(out: str, cache: Path, runs: list[dict[str, Any]]) -> None:
    """The results file: settings and every run."""
    import trl

    settings = {
        "vocab": VOCAB,
        "model": "Qwen2, hidden 96, 2 layers, tied embeddings",
        "pretrain_steps": PRETRAIN_STEPS,
        "pretrain_seconds": h.read_json(cache / "pretrain.json")["seconds"],
        "sft": "TRL SFTConfig defaults, learning_rate 1e-3",
        "sft_lr": SFT_LR,
        "trl": trl.__version__,
        "threads": 1,
    }
    h.write_json(out, {"settings": settings, "runs": runs})


def main() -> None:
    args = sq.arguments(__doc__, "benchmarks/trl_quality.json", "~/.cache/vocabcore-trl")
    sq.dispatch(__file__, args, run, write)


if __name__ == "__main__":
    main()
