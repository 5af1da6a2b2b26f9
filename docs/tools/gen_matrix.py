"""Write docs/matrix.md from the test runs' records (tests/conftest.py writes them).

VOCABCORE_MATRIX_DIR=.matrix nox -s tests    # one record per transformers version
python docs/tools/gen_matrix.py .matrix
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "matrix.md"

# (test file, param id) -> row label, per table
FAST = {
    "wordpiece": "WordPiece (BERT-style, trained locally)",
    "minilm": "WordPiece: the real all-MiniLM-L6-v2 tokenizer",
    "bytelevel_bpe": "byte-level BPE (RoBERTa-style)",
    "gpt2_bpe": "byte-level BPE (GPT-2-style)",
    "suffix_bpe": "BPE with ## prefix and </w> suffix",
    "byte_fallback_bpe": "BPE with byte_fallback (Llama-style)",
    "unigram": "Unigram with Metaspace (XLM-R/T5-style)",
    "wordlevel": "WordLevel",
}
SLOW = {
    "wordpiece": "WordPiece vocab file (BertTokenizer / BertTokenizerLegacy)",
    "minilm": "all-MiniLM-L6-v2 vocab.txt (BertTokenizer / BertTokenizerLegacy)",
    "byte_bpe": "vocab.json + merges.txt (RobertaTokenizer / ClvpTokenizer)",
    "xlmr_unigram": "sentencepiece Unigram (XLMRobertaTokenizer / SentencePieceBackend)",
    "xlmr_bpe": "sentencepiece BPE (XLMRobertaTokenizer / SentencePieceBackend)",
    "deberta_unigram": "sentencepiece Unigram (DebertaV2Tokenizer / SentencePieceBackend)",
    "deberta_bpe": "sentencepiece BPE (DebertaV2Tokenizer / SentencePieceBackend)",
}
MODELS = {
    "bert-mlm": "BertForMaskedLM (tied head, output bias)",
    "bert-tokcls": "BertForTokenClassification",
    "roberta-mlm": "RobertaForMaskedLM",
    "xlmr-mlm": "XLMRobertaForMaskedLM",
    "deberta-v2-mlm": "DebertaV2ForMaskedLM",
    "deberta-v2-mlm-new-head": "DebertaV2ForMaskedLM (new-style head)",
    "electra-mlm": "ElectraForMaskedLM",
    "albert-mlm": "AlbertForMaskedLM",
    "distilbert-mlm": "DistilBertForMaskedLM",
    "gpt2-lm": "GPT2LMHeadModel",
    "bart-cg": "BartForConditionalGeneration (final_logits_bias)",
    "t5-v1_0": "T5ForConditionalGeneration v1.0 (tied, padded rows)",
    "t5-v1_1": "T5ForConditionalGeneration v1.1 (untied lm_head, padded rows)",
}
LLM_SHAPES = {
    "llama3": "Llama 3 (byte-level BPE, ignore_merges, reserved specials after)",
    "llama2": "Llama 2 / Mistral v1 / Phi-3 (BPE with byte_fallback)",
    "gemma": "Gemma (BPE with byte_fallback, GemmaTokenizerFast)",
    "qwen2": "Qwen2/3 (NFC, Split regex, byte-level BPE, ChatML)",
    "tekken": "Mistral Tekken (1,000 special tokens first)",
}
LLMS = {
    "llama-tied": "LlamaForCausalLM (tied, pad after the vocabulary)",
    "llama-untied": "LlamaForCausalLM (untied, padded rows)",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM (padded rows)",
    "qwen3": "Qwen3ForCausalLM",
    "qwen3-moe": "Qwen3MoeForCausalLM",
    "gemma2": "Gemma2ForCausalLM",
    "gemma3": "Gemma3ForCausalLM (scaled embedding)",
    "gemma3n": "Gemma3nForCausalLM (per-layer embedding)",
    "phi3": "Phi3ForCausalLM",
    "olmo2": "Olmo2ForCausalLM",
    "olmoe": "OlmoeForCausalLM",
    "llama-seqcls": "LlamaForSequenceClassification",
}
# (title, test file, rows, test-name prefix the rows' tests start with)
TABLES = [
    ("Fast tokenizers", "tests/adapters/test_fast_tokenizer.py", FAST, ""),
    ("Slow tokenizers", "tests/adapters/test_slow_tokenizer.py", SLOW, ""),
    ("Models", "tests/adapters/test_embeddings.py", MODELS, ""),
    ("Decoder LLM tokenizer shapes", "tests/adapters/test_llm.py", LLM_SHAPES, "test_shape_"),
    ("Decoder LLMs", "tests/adapters/test_llm.py", LLMS, "test_family_"),
]


def _cell(outcomes: list[str]) -> str:
    if not outcomes:
        return "not run"
    if "failed" in outcomes:
        return f"FAIL ({outcomes.count('failed')}/{len(outcomes)})"
    passed = outcomes.count("passed")
    if passed == 0:
        return "skipped"
    skipped = len(outcomes) - passed
    return f"pass ({passed})" + (f", {skipped} skipped" if skipped else "")


def render(records: list[dict[str, object]]) -> str:
    """The page, from one record per transformers version."""
    records = sorted(
        records, key=lambda r: [int(x) for x in re.findall(r"\d+", str(r["transformers"]))]
    )
    versions = [str(r["transformers"]) for r in records]
    lines = [
        "# Supported matrix",
        "",
        "Generated from the test runs by `docs/tools/gen_matrix.py`: each cell counts the tests",
        "of that row (apply, revert, round trip, differential and error tests) that passed under",
        "that transformers version. Regenerate with",
        "`VOCABCORE_MATRIX_DIR=.matrix nox -s tests` then `python docs/tools/gen_matrix.py .matrix`.",
        "",
        "| run | python | torch | tokenizers |",
        "|---|---|---|---|",
    ]
    for r in records:
        lines.append(
            f"| transformers {r['transformers']} | {r['python']} | {r['torch']} | {r['tokenizers']} |"
        )
    for title, test_file, rows, prefix in TABLES:
        lines += [
            "",
            f"## {title}",
            "",
            "| | " + " | ".join(f"transformers {v}" for v in versions) + " |",
        ]
        lines.append("|---|" + "---|" * len(versions))
        for key, label in rows.items():
            cells = []
            for r in records:
                outcomes = r["outcomes"]
                assert isinstance(outcomes, dict)
                k = re.escape(key)
                pattern = re.compile(
                    rf"^{re.escape(test_file)}::{prefix}(.*\[{k}\]|test_{k})$"
                )
                cells.append(_cell([o for n, o in outcomes.items() if pattern.match(n)]))
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "In transformers 5 the slow tokenizer classes of transformers 4 are gone or became fast",
        "tokenizers; the slow adapter then covers the Python and sentencepiece backends that remain",
        "(see [slow_tokenizers.md](slow_tokenizers.md)).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else ".matrix")
    found = [
        json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("matrix-*.json"))
    ]
    if not found:
        sys.exit(f"no matrix-*.json in {folder}: run the tests with VOCABCORE_MATRIX_DIR={folder}")
    OUT.write_text(render(found), encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)} from {len(found)} runs")
