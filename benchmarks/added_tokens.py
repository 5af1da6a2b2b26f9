"""Adding domain tokens to all-MiniLM-L6-v2: fewer tokens, reachability, short-training MLM loss.

Domain corpus (offline): Python's own documentation, ``pydoc_data.topics`` and the docstrings
of standard-library modules, cut into paragraphs, shuffled with a fixed seed and split 80/20
into training and held-out text. Measured:

1. tokens per held-out text before and after adding the top 50 / 100 / 500 suggestions
   (``suggest_tokens`` on the training split);
2. the fraction of held-out pre-tokens equal to an added token that encode to its single id,
   with vocabcore (a plan that keeps every id and adds the tokens) and with
   ``tokenizer.add_tokens`` on the same words; also how many other pre-tokens change. The same
   for a byte-level BPE trained here on the training split (tokens written ``Ġword``);
3. MLM loss on held-out text after the same short training of MiniLM with and without the
   top 100 added tokens (3 seeds).

Run: ``PYTHONPATH=src python benchmarks/added_tokens.py [--steps N] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import random
import re
import statistics
import time
from typing import Any

import _harness as h

h.setup()

_MODULE_NAMES = (
    "os re json collections itertools functools asyncio subprocess pathlib typing argparse "
    "logging unittest email http.client xml.etree.ElementTree sqlite3 socket threading "
    "multiprocessing datetime decimal fractions statistics random string textwrap shutil "
    "tempfile glob fnmatch csv configparser pickle copy pprint inspect dis ast tokenize "
    "importlib zipfile tarfile gzip hashlib hmac secrets base64 binascii struct codecs "
    "unicodedata locale gettext calendar time sched queue heapq bisect array weakref types enum "
    "numbers math cmath operator contextlib abc dataclasses traceback warnings doctest pdb "
    "timeit trace platform sysconfig urllib.parse urllib.request ftplib smtplib imaplib "
    "selectors signal mmap ctypes concurrent.futures io"
)
MODULES = _MODULE_NAMES.split()


def corpus(seed: int = 0) -> tuple[list[str], list[str]]:
    """(training, held-out) paragraphs of Python documentation."""
    from pydoc_data.topics import topics

    raw: list[str] = [topics[k] for k in sorted(topics)]
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        raw.append(module.__doc__ or "")
        for attr in sorted(dir(module)):
            if attr.startswith("_"):
                continue
            doc = getattr(getattr(module, attr, None), "__doc__", None)
            if isinstance(doc, str):
                raw.append(doc)
    seen: set[str] = set()
    paragraphs = []
    for text in raw:
        for para in re.split(r"\n\s*\n", text):
            para = " ".join(para.split())
            if 40 <= len(para) <= 1000 and para not in seen:
                seen.add(para)
                paragraphs.append(para)
    random.Random(seed).shuffle(paragraphs)
    cut = len(paragraphs) * 4 // 5
    return paragraphs[:cut], paragraphs[cut:]


def minilm_tokenizer() -> Any:
    from _tokenizers import minilm_dir
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_dir())


def tokens_per_text(tok: Any, texts: list[str]) -> float:
    return statistics.fmean(len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"])


def _pre_tokens(tok: Any, text: str) -> list[tuple[str, tuple[int, int]]]:
    backend = tok.backend_tokenizer
    normalized = backend.normalizer.normalize_str(text) if backend.normalizer else text
    return backend.pre_tokenizer.pre_tokenize_str(normalized)


def reachability(tok: Any, texts: list[str], words: list[str], vocab_form: list[str]) -> dict:
    """For the original ``tok``, with vocabcore's added tokens and with AddedTokens.

    ``words``: the surface words; ``vocab_form``: the same tokens in token form.
    """
    from vocab_adapters import apply_plan, fingerprint, revert_plan
    from vocabcore import VocabPlan

    original = copy.deepcopy(tok)
    ours = copy.deepcopy(tok)
    plan = VocabPlan.identity(len(tok), fingerprint(tok)).adding(vocab_form)
    applied = apply_plan(plan, tokenizer=ours)
    theirs = copy.deepcopy(tok)
    theirs.add_tokens(words)
    wanted = set(vocab_form)
    result = {}
    for name, t in (("vocabcore", ours), ("add_tokens", theirs)):
        counts = dict.fromkeys(("hits", "total", "changed", "others"), 0)
        for text in texts:
            base = original(text, add_special_tokens=False, return_offsets_mapping=True)
            enc = t(text, add_special_tokens=False, return_offsets_mapping=True)
            base_words = _word_spans(base)
            new_words = _word_spans(enc)
            for span, ids in base_words.items():
                token = _token_form(original, ids)
                _tally(counts, token, ids, new_words.get(span), wanted, len(tok), wanted)
        result[name] = _reached(counts)
    revert_plan(applied)
    return result


def _tally(
    counts: dict[str, int],
    token: str,
    ids: list[int],
    got: list[int] | None,
    wanted: set[str],
    size: int,
    parts: set[str],
) -> None:
    """Count one pre-token: an added token's (reached when it became one new id) or, when
    none of ``parts`` is in it, another one's (changed or not)."""
    if token in wanted:
        counts["total"] += 1
        counts["hits"] += got is not None and len(got) == 1 and got[0] >= size
    elif not any(w in token for w in parts):
        counts["others"] += 1
        counts["changed"] += got != ids


def _reached(counts: dict[str, int]) -> dict[str, Any]:
    total = counts["total"]
    return {
        "occurrences": total,
        "reached_fraction": counts["hits"] / total if total else None,
        "other_pre_tokens": counts["others"],
        "other_pre_tokens_changed": counts["changed"],
    }


def _word_spans(enc: Any) -> dict[tuple[int, int], list[int]]:
    """Pre-token span -> ids (pre-tokens as the original tokenizer's word ids cut them)."""
    spans: dict[tuple[int, int], list[int]] = {}
    words = enc.word_ids()
    current: list[int] = []
    start = end = None
    last = None
    for i, (w, (a, b)) in enumerate(zip(words, enc["offset_mapping"], strict=True)):
        if w is None:
            continue
        if w != last and current:
            spans[(start, end)] = current  # type: ignore[index]
            current, start = [], None
        if start is None:
            start = a
        current.append(enc["input_ids"][i])
        end = b
        last = w
    if current:
        spans[(start, end)] = current  # type: ignore[index]
    return spans


def _token_form(tok: Any, ids: list[int]) -> str:
    pieces = tok.convert_ids_to_tokens(ids)
    out = pieces[0]
    for piece in pieces[1:]:
        out += piece[2:] if piece.startswith("##") else piece
    return out


def byte_level_reachability(train: list[str], held: list[str], n: int) -> dict:
    """The same comparison on a byte-level BPE trained on the training split."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from vocab_adapters import apply_plan, revert_plan, suggest_tokens
    from vocabcore import VocabPlan

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        train,
        trainers.BpeTrainer(
            vocab_size=2000,
            special_tokens=["<unk>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe)
    tokens = suggest_tokens(tok, train, n=n, min_count=5)
    ours = copy.deepcopy(tok)
    applied = apply_plan(VocabPlan.identity(len(tok)).adding(tokens), tokenizer=ours)
    theirs = copy.deepcopy(tok)
    theirs.add_tokens([t.replace("Ġ", " ").strip() for t in tokens])
    wanted = set(tokens)
    parts = {w.replace("Ġ", "") for w in wanted}
    result: dict[str, Any] = {}
    for name, t in (("vocabcore", ours), ("add_tokens", theirs)):
        counts = dict.fromkeys(("hits", "total", "changed", "others"), 0)
        lossless = 0
        for text in held:
            base = tok(text, add_special_tokens=False, return_offsets_mapping=True)
            enc = t(text, add_special_tokens=False, return_offsets_mapping=True)
            lossless += t.decode(enc["input_ids"]) == text
            new_words = _spans_by_offsets(enc)
            for span, ids in _word_spans(base).items():
                token = "".join(tok.convert_ids_to_tokens(ids))
                _tally(counts, token, ids, new_words.get(span), wanted, len(tok), parts)
        result[name] = _reached(counts) | {"texts_decoding_exactly": lossless / len(held)}
    revert_plan(applied)
    result["tokens_added"] = len(tokens)
    return result


def _spans_by_offsets(enc: Any) -> dict[tuple[int, int], list[int]]:
    """Span -> ids for every contiguous run of tokens (to look a pre-token's span up)."""
    offsets = enc["offset_mapping"]
    ids = enc["input_ids"]
    out: dict[tuple[int, int], list[int]] = {}
    for i in range(len(ids)):
        for j in range(i, min(len(ids), i + 64)):
            out.setdefault((offsets[i][0], offsets[j][1]), ids[i : j + 1])
    return out


def mlm_loss(
    train: list[str],
    held: list[str],
    added: list[str],
    seed: int,
    steps: int,
    batch_size: int = 16,
    max_length: int = 128,
) -> float:
    """Held-out MLM loss of MiniLM after ``steps`` AdamW steps, with ``added`` tokens or not."""
    import torch
    from _tokenizers import minilm_dir
    from transformers import AutoModelForMaskedLM, DataCollatorForLanguageModeling

    from vocab_adapters import apply_plan, fingerprint, revert_plan
    from vocabcore import VocabPlan

    tok = minilm_tokenizer()
    torch.manual_seed(0)  # the randomly initialised MLM transform is the same for every run
    model = AutoModelForMaskedLM.from_pretrained(minilm_dir())
    applied = None
    if added:
        plan = VocabPlan.identity(len(tok), fingerprint(tok)).adding(added)
        applied = apply_plan(plan, model=model, tokenizer=tok)
    collate = DataCollatorForLanguageModeling(tok, mlm_probability=0.15)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    model.train()
    for _ in range(steps):
        texts = rng.sample(train, batch_size)
        batch = collate([tok(t, truncation=True, max_length=max_length) for t in texts])
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    torch.manual_seed(1234)
    losses = []
    with torch.no_grad():
        for i in range(0, len(held), 32):
            chunk = held[i : i + 32]
            batch = collate([tok(t, truncation=True, max_length=max_length) for t in chunk])
            losses.append(model(**batch).loss.item())
    if applied is not None:
        revert_plan(applied)
    return statistics.fmean(losses)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--eval-texts", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--out", default="benchmarks/added_tokens.json")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(2)
    from vocab_adapters import apply_plan, fingerprint, revert_plan, suggest_tokens
    from vocabcore import VocabPlan

    start = time.perf_counter()
    train, held = corpus()
    tok = minilm_tokenizer()
    report: dict[str, Any] = {"train_texts": len(train), "held_out_texts": len(held)}
    suggestions = suggest_tokens(tok, train, n=500, min_count=5)
    report["suggestions_first_20"] = suggestions[:20]
    before = tokens_per_text(tok, held)
    rows = [{"added": 0, "tokens_per_text": before}]
    for n in (50, 100, 500):
        t = copy.deepcopy(tok)
        applied = apply_plan(
            VocabPlan.identity(len(tok), fingerprint(tok)).adding(suggestions[:n]), tokenizer=t
        )
        rows.append({"added": n, "tokens_per_text": tokens_per_text(t, held)})
        revert_plan(applied)
    report["tokens_per_text"] = rows
    print(json.dumps(rows, indent=1))

    top = suggestions[:100]
    report["reachability_minilm"] = reachability(tok, held, top, top)
    print(json.dumps(report["reachability_minilm"], indent=1))
    report["reachability_byte_level_bpe"] = byte_level_reachability(train, held, 100)
    print(json.dumps(report["reachability_byte_level_bpe"], indent=1))
    h.write_json(args.out, report, ascii_only=False)  # the MLM part is the slow one

    held_eval = held[: args.eval_texts]
    runs = []
    for seed in (0, 1, 2):
        for name, added in (("without", []), ("with_top_100", top)):
            t0 = time.perf_counter()
            loss = mlm_loss(
                train, held_eval, added, seed, args.steps, args.batch_size, args.max_length
            )
            runs.append({"seed": seed, "variant": name, "held_out_mlm_loss": loss})
            print(name, seed, round(loss, 4), f"{time.perf_counter() - t0:.0f}s", flush=True)
    report["mlm"] = {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "lr": 1e-4,
        "eval_texts": len(held_eval),
        "runs": runs,
        "mean": {
            v: statistics.fmean(r["held_out_mlm_loss"] for r in runs if r["variant"] == v)
            for v in ("without", "with_top_100")
        },
        "tokens_per_eval_text": {
            "without": tokens_per_text(tok, held_eval),
        },
    }
    report["seconds"] = time.perf_counter() - start
    h.write_json(args.out, report, ascii_only=False)
    print(json.dumps(report["mlm"]["mean"], indent=1), f"{report['seconds']:.0f}s")


if __name__ == "__main__":
    main()
