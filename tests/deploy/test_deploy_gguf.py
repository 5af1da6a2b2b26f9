"""GGUF export: trimmed Llama, Qwen2/3 and Gemma 3 decoders as one file for llama.cpp.

Per family and tokenizer shape (byte-level BPE: Llama 3, Qwen2; byte-fallback BPE: Llama 2,
Gemma): the file written by ``export_reduced(..., format="gguf")`` read back with ``gguf``'s
reader holds the trimmed vocabulary id for id, the parent's pre-tokenizer name (not a hash of
renumbered ids), every byte token, the trimmed weights and the plan. Two reference tokenizers
built only from the file (byte-level: ``tokenizers`` BPE from the file's tokens and merges with
the named pre-tokenizer's regex; byte-fallback: a port of llama.cpp's SentencePiece-style
tokenizer, scores from the file) encode domain and held-out texts of every script of the
corpus to the trimmed Hugging Face tokenizer's ids. Where ``llama_cpp`` is installed
(``nox -s deploy``), llama.cpp itself loads the file, tokenizes to the same ids, and its logits
and greedy generation match the trimmed PyTorch model (f32 file: 5e-4, f16 file: 2e-2).
"""

from __future__ import annotations

import copy
import heapq
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from fixtures.fast_tokenizers import build_corpus
from fixtures.llm_models import LLM_CASES, LLMCase, build_llm_case
from fixtures.llm_tokenizers import CONVERSATIONS, HELD_OUT
from vocab_adapters import apply_plan, export_reduced, plan_from_texts, revert_plan
from vocabcore import VocabError, VocabPlan

gguf = pytest.importorskip("gguf")

TEXTS = build_corpus(300)
DOMAIN = TEXTS[1::9][:25]
# held-out scripts, emoji, whitespace, plus text the corpus never saw at all
OUT_OF_DOMAIN = [*HELD_OUT, "Ünïcödé ẞ ß naïve", "ትግርኛ ᎠᏍᎦᏯ ꦗꦮ 𝔘𝔫𝔦", "x" * 40, "  lead", "tail  "]  # noqa: RUF001

# family -> (tiny model case, tokenizer shape, llama.cpp pre name, vocabulary kind)
CASES = {
    "llama3": ("llama-tied", "llama3", "llama-bpe", "gpt2"),
    "llama2": ("llama-untied", "llama2", "default", "llama"),
    "qwen2": ("qwen2", "qwen2", "qwen2", "gpt2"),
    "qwen3": ("qwen3", "qwen2", "qwen2", "gpt2"),
    "gemma3": ("gemma3-deploy", "gemma", "default", "llama"),
}
# Gemma 3 as its checkpoints have it: query_pre_attn_scalar == head_dim (llama.cpp assumes it)
LLM_CASES.setdefault(
    "gemma3-deploy",
    LLMCase(
        "gemma3-deploy",
        "Gemma3TextConfig",
        "Gemma3ForCausalLM",
        "gemma",
        "<pad>",
        64,
        options={"query_pre_attn_scalar": 8},
    ),
)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Exported:
    """One family exported: parent model/tokenizer, plan, file, and the trimmed HF pair."""

    def __init__(self, family: str, load_llm_tokenizer: Any, root: Path) -> None:
        case, shape, self.pre, self.kind = CASES[family]
        self.tok = load_llm_tokenizer(shape)
        self.model = build_llm_case(case, self.tok)
        self.plan = plan_from_texts(self.tok, TEXTS, model=self.model).union(
            plan_from_texts(
                self.tok, CONVERSATIONS, chat_template_kwargs={"add_generation_prompt": True}
            )
        )
        self.path = export_reduced(
            self.model, self.tok, self.plan, root / f"{family}.gguf", format="gguf"
        )
        self.reader = gguf.GGUFReader(self.path)

    def field(self, key: str) -> Any:
        found = self.reader.fields.get(key)
        return None if found is None else found.contents()

    def trimmed(self) -> tuple[Any, Any, Any]:
        """Apply the plan (the caller reverts the returned ``AppliedPlan``)."""
        return apply_plan(self.plan, model=self.model, tokenizer=self.tok), self.model, self.tok


@pytest.fixture(scope="module")
def exported(load_llm_tokenizer: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("gguf")
    cache: dict[str, Exported] = {}

    def get(family: str) -> Exported:
        if family not in cache:
            cache[family] = Exported(family, load_llm_tokenizer, root)
        return cache[family]

    return get


def comparable(tok: Any, texts: list[str]) -> list[str]:
    """``texts`` less those llama.cpp and this tokenizer split differently before trimming.

    transformers 5 rebuilds Llama 2 style tokenizers with ``Metaspace(prepend_scheme="first")``,
    which adds no ``▁`` before a text that already starts with a space; SentencePiece and
    llama.cpp (``add_space_prefix``) always add one. That is a difference of the parent
    tokenizer, not of trimming, so texts starting with a space are left out there.
    """
    spec = json.loads(tok.backend_tokenizer.to_str())
    pre = spec.get("pre_tokenizer") or {}
    first = pre.get("type") == "Metaspace" and pre.get("prepend_scheme") == "first"
    return [t for t in texts if not (first and t.startswith(" "))]


# -- reference tokenizers built from the file alone ------------------------------------------


def byte_level_reference(ex: Exported) -> Any:
    """``tokenizers`` BPE from the file's tokens and merges, pre-tokenized by its pre name."""
    from tokenizers import AddedToken, Regex, Tokenizer, models, pre_tokenizers

    from vocab_adapters.deploy.gguf import PRE_TOKENIZERS

    tokens = ex.field("tokenizer.ggml.tokens")
    types = ex.field("tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ", 1)) for m in ex.field("tokenizer.ggml.merges")]
    normal = {t: i for i, (t, k) in enumerate(zip(tokens, types, strict=True)) if k == 1}
    model = models.BPE(normal, merges, ignore_merges=ex.pre == "llama-bpe")
    ref = Tokenizer(model)
    regex = next(r for r, name in PRE_TOKENIZERS.items() if name == ex.pre)
    ref.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(regex), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    specials = [(i, t) for i, (t, k) in enumerate(zip(tokens, types, strict=True)) if k in (3, 4)]
    ref.add_special_tokens([AddedToken(t, special=True, normalized=False) for _, t in specials])
    assert all(ref.token_to_id(t) == i for i, t in specials)
    return lambda text: ref.encode(text, add_special_tokens=False).ids


def spm_reference(ex: Exported) -> Any:
    """llama.cpp's SentencePiece-style tokenizer (``llm_tokenizer_spm``), ported to Python.

    Symbols are characters; repeatedly the adjacent pair whose concatenation is a token with
    the highest score (leftmost first) merges; a final symbol that is no token falls back to
    its UTF-8 bytes as ``<0xXX>`` pieces.
    """
    tokens = ex.field("tokenizer.ggml.tokens")
    scores = ex.field("tokenizer.ggml.scores")
    ids = {t: i for i, t in enumerate(tokens)}
    space_prefix = bool(ex.field("tokenizer.ggml.add_space_prefix"))

    def encode(text: str) -> list[int]:
        text = ("▁" if space_prefix else "") + text.replace(" ", "▁")
        symbols: list[str | None] = list(text)
        left = list(range(-1, len(symbols) - 1))
        right = list(range(1, len(symbols) + 1))
        queue: list[tuple[float, int, int, str]] = []

        def push(a: int, b: int) -> None:
            if a < 0 or b >= len(symbols):
                return
            joined = str(symbols[a]) + str(symbols[b])
            if joined in ids:
                heapq.heappush(queue, (-float(scores[ids[joined]]), a, b, joined))

        for i in range(len(symbols) - 1):
            push(i, i + 1)
        while queue:
            _, a, b, joined = heapq.heappop(queue)
            if symbols[a] is None or symbols[b] is None or right[a] != b:
                continue
            if str(symbols[a]) + str(symbols[b]) != joined:
                continue
            symbols[a], symbols[b] = joined, None
            right[a] = right[b]
            if right[b] < len(symbols):
                left[right[b]] = a
            push(left[a], a)
            push(a, right[a])
        out: list[int] = []
        for symbol in symbols:
            if symbol is None:
                continue
            if symbol in ids:
                out.append(ids[symbol])
            else:
                out.extend(ids[f"<0x{b:02X}>"] for b in symbol.encode("utf-8"))
        return out

    return encode


# -- the file ---------------------------------------------------------------------------------


@pytest.mark.parametrize("family", list(CASES))
def test_file_holds_trimmed_vocab_parent_pre_tokenizer_weights_and_plan(
    family: str, exported: Any
) -> None:
    ex = exported(family)
    arch = {"llama3": "llama", "llama2": "llama"}.get(family, family)
    assert ex.field("general.architecture") == arch
    assert ex.field("tokenizer.ggml.model") == ex.kind
    assert ex.field("tokenizer.ggml.pre") == ex.pre
    assert VocabPlan.from_json(ex.field("vocabcore.plan")) == ex.plan
    tensors = {t.name: t for t in ex.reader.tensors}
    applied, model, tok = ex.trimmed()
    try:
        vocab = tok.get_vocab()
        rows = model.get_input_embeddings().weight.shape[0]
        tokens = ex.field("tokenizer.ggml.tokens")
        assert len(tokens) == rows == ex.plan.new_size
        assert all(tokens[i] == t for t, i in vocab.items())
        embedding = torch.from_numpy(tensors["token_embd.weight"].data.copy()).reshape(rows, -1)
        assert torch.equal(embedding, model.get_input_embeddings().weight.detach())
        if ex.kind == "gpt2":
            assert tokens[:] and len(ex.field("tokenizer.ggml.merges")) == len(
                json.loads(tok.backend_tokenizer.to_str())["model"]["merges"]
            )
        assert ex.field("tokenizer.ggml.bos_token_id") == tok.bos_token_id
        assert ex.field("tokenizer.ggml.eos_token_id") == tok.eos_token_id
        assert ("output.weight" in tensors) == (not model.config.tie_word_embeddings)
    finally:
        revert_plan(applied)


@pytest.mark.parametrize("family", list(CASES))
def test_reference_tokenizer_from_the_file_encodes_like_the_trimmed_tokenizer(
    family: str, exported: Any
) -> None:
    ex = exported(family)
    encode = byte_level_reference(ex) if ex.kind == "gpt2" else spm_reference(ex)
    applied, _, tok = ex.trimmed()
    try:
        for text in comparable(tok, DOMAIN + OUT_OF_DOMAIN):
            assert encode(text) == tok(text, add_special_tokens=False)["input_ids"], text
    finally:
        revert_plan(applied)


# -- refusals ---------------------------------------------------------------------------------


def test_unhandled_model_family_is_refused_before_writing(
    load_llm_tokenizer: Any, tmp_path: Path
) -> None:
    tok = load_llm_tokenizer("qwen2")
    model = build_llm_case("olmo2", tok)
    plan = plan_from_texts(tok, TEXTS[:50])
    with pytest.raises(VocabError, match="Olmo2ForCausalLM"):
        export_reduced(model, tok, plan, tmp_path / "m.gguf", format="gguf")
    assert list(tmp_path.iterdir()) == []


def test_wordpiece_tokenizer_is_refused(
    minilm_dir: str, load_llm_tokenizer: Any, tmp_path: Path
) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_dir)
    model = build_llm_case("llama-tied", load_llm_tokenizer("llama3"))
    plan = VocabPlan.identity(len(tok))
    with pytest.raises(VocabError, match="WordPiece"):
        export_reduced(model, tok, plan, tmp_path / "m.gguf", format="gguf")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("shape", ["qwen2", "llama2"])
def test_plan_dropping_byte_tokens_is_refused_with_the_ids_to_keep(
    shape: str, load_llm_tokenizer: Any, tmp_path: Path
) -> None:
    tok = load_llm_tokenizer(shape)
    model = build_llm_case("qwen2" if shape == "qwen2" else "llama-untied", tok)
    plan = plan_from_texts(tok, TEXTS[:50], model=model)
    byte = "Ā" if shape == "qwen2" else "<0x00>"  # byte 0 in each shape
    byte_id = tok.convert_tokens_to_ids(byte)
    assert plan.is_kept(byte_id)
    without = VocabPlan(plan.vocab_size, [i for i in plan.kept if i != byte_id])
    with pytest.raises(VocabError, match=rf"drops 1: keep ids \[{byte_id}\]"):
        export_reduced(model, tok, without, tmp_path / "m.gguf", format="gguf")
    assert list(tmp_path.iterdir()) == []


def test_gemma3_attention_scale_llama_cpp_cannot_express_is_refused(
    load_llm_tokenizer: Any, tmp_path: Path
) -> None:
    tok = load_llm_tokenizer("gemma")
    model = build_llm_case("gemma3", tok)  # the generic fixture: query_pre_attn_scalar 256
    plan = plan_from_texts(tok, TEXTS[:50], model=model)
    with pytest.raises(VocabError, match="query_pre_attn_scalar is 256"):
        export_reduced(model, tok, plan, tmp_path / "m.gguf", format="gguf")
    assert list(tmp_path.iterdir()) == []


def test_unknown_format_is_refused(load_llm_tokenizer: Any, tmp_path: Path) -> None:
    tok = load_llm_tokenizer("qwen2")
    with pytest.raises(VocabError, match="'format' must be one of hf, gguf, onnx"):
        export_reduced(None, tok, VocabPlan.identity(len(tok)), tmp_path / "x", format="ggml")


# -- llama.cpp itself -------------------------------------------------------------------------


@pytest.mark.parametrize("family", list(CASES))
@pytest.mark.parametrize("precision", ["f32", "f16"])
def test_llama_cpp_loads_tokenizes_and_matches_logits_and_greedy_generation(
    family: str, precision: str, exported: Any, tmp_path: Path
) -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    ex = exported(family)
    path = ex.path
    if precision == "f16":
        half = copy.deepcopy(ex.model).half()
        path = export_reduced(half, ex.tok, ex.plan, tmp_path / "f16.gguf", format="gguf")
    llm = llama_cpp.Llama(
        model_path=str(path),
        n_ctx=128,
        logits_all=True,
        verbose=False,
        n_threads=1,
        seed=0,
        # an f32 KV cache for the f32 file: llama.cpp's default f16 cache alone moves logits
        **({"type_k": 0, "type_v": 0} if precision == "f32" else {}),  # GGML_TYPE_F32
    )
    applied, model, tok = ex.trimmed()
    try:
        for text in comparable(tok, DOMAIN[:8] + OUT_OF_DOMAIN):
            ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
            assert ids == tok(text, add_special_tokens=False)["input_ids"], text
        prompt = tok("The for statement is used to iterate over")["input_ids"]
        assert (
            llm.tokenize(b"The for statement is used to iterate over", add_bos=True, special=False)
            == prompt
        )
        llm.reset()
        llm.eval(prompt)
        ours = torch.tensor(llm.scores[: len(prompt)], dtype=torch.float32)
        with torch.no_grad():
            theirs = model(torch.tensor([prompt])).logits[0].float()
        # f32: ggml's GELU goes through an f16 table (Gemma 3's MLP), so 5e-4 rather than 1e-5
        tolerance = {"f32": 5e-4, "f16": 2e-2}[precision]
        torch.testing.assert_close(ours, theirs, atol=tolerance, rtol=tolerance)
        if precision == "f16":
            # greedy choices agree wherever PyTorch's top two are further apart than f16 noise
            top2 = theirs.topk(2).values
            clear = (top2[:, 0] - top2[:, 1]) > 4 * tolerance
            assert torch.equal(ours.argmax(-1)[clear], theirs.argmax(-1)[clear])
            return
        with torch.no_grad():
            greedy = model.generate(
                torch.tensor([prompt]), max_new_tokens=8, do_sample=False, pad_token_id=0
            )[0, len(prompt) :].tolist()
        generated = []
        for token in llm.generate(prompt, temp=0.0, top_k=1, reset=True):
            generated.append(token)
            if len(generated) == len(greedy):
                break
        assert generated == greedy
    finally:
        revert_plan(applied)
