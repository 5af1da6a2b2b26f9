"""One input pipeline: every item kind, mixed, through every option of plan_from_texts.

Texts, (str, str) pairs, pre-split word lists and conversations are classified item by item
and counted into one counter, so max_size, add_tokens, num_proc, progress, keep, model= and
min_count apply to each kind and to mixtures; max_size caps new_size with added tokens.
"""

from __future__ import annotations

from typing import Any

import pytest

from fixtures.fast_tokenizers import build_corpus
from fixtures.llm_tokenizers import CONVERSATIONS
from vocab_adapters import count_tokens, plan_from_texts
from vocabcore import VocabError

TEXTS = build_corpus(300)
# enough conversations that a budget binds: the corpus' texts as user/assistant turns
CHATS = [
    [{"role": "user", "content": a}, {"role": "assistant", "content": b}]
    for a, b in zip(TEXTS[:120:2], TEXTS[1:120:2], strict=True)
]
PAIRS = [(a, b) for a, b in zip(TEXTS[200:220], TEXTS[220:240], strict=True)]
WORDS = [t.split() for t in TEXTS[240:260]]


@pytest.fixture(scope="module")
def qwen(load_llm_tokenizer: Any) -> Any:
    return load_llm_tokenizer("qwen2")


def test_conversations_honour_max_size(qwen: Any) -> None:
    full = plan_from_texts(qwen, CHATS)
    plan = plan_from_texts(qwen, CHATS, max_size=300)
    assert full.new_size > 300
    assert plan.new_size <= 300
    assert set(plan.kept) < set(full.kept)
    assert plan.metadata["num_texts"] == len(CHATS)


def test_conversations_honour_add_tokens(qwen: Any) -> None:
    plan = plan_from_texts(qwen, CHATS, add_tokens=["Ġibuprofen"])
    assert plan.added == ("Ġibuprofen",)
    assert plan.kept == plan_from_texts(qwen, CHATS).kept
    # suggestions come from the turns' contents
    suggested = plan_from_texts(qwen, CHATS, add_tokens=5, min_count=2)
    contents = [turn["content"] for chat in CHATS for turn in chat]
    from vocab_adapters import suggest_tokens

    assert list(suggested.added) == suggest_tokens(qwen, contents, 5, 2)
    assert len(suggested.added) == 5


def test_conversations_honour_progress(qwen: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from tqdm import tqdm

    from vocab_adapters.planning import texts

    bars: list[Any] = []

    def progress(total: int | None, show: bool | None, batch_size: int) -> Any:
        # the bar the pipeline asks for, drawn into a buffer (tests set TQDM_DISABLE)
        if not show:
            return None
        bars.append(tqdm(total=total, file=io.StringIO(), disable=False))
        return bars[-1]

    monkeypatch.setattr(texts, "_progress", progress)
    plan_from_texts(qwen, CHATS, progress=True, batch_size=16)
    assert len(bars) == 1 and bars[0].n == len(CHATS)


def test_mixed_kinds_count_as_each_kind_alone(qwen: Any) -> None:
    mixed = [*TEXTS[:50], *CHATS[:10], *PAIRS, *WORDS, *CONVERSATIONS]
    mixed = mixed[::2] + mixed[1::2]  # interleave kinds inside batches
    kwargs = {"add_generation_prompt": True}
    got = count_tokens(qwen, mixed, batch_size=7, chat_template_kwargs=kwargs)
    parts = [
        count_tokens(qwen, [x for x in mixed if isinstance(x, str)]),
        count_tokens(qwen, [x for x in mixed if isinstance(x, tuple)]),
        count_tokens(qwen, [x for x in mixed if isinstance(x, list) and isinstance(x[0], str)]),
        count_tokens(
            qwen,
            [x for x in mixed if isinstance(x, list) and isinstance(x[0], dict)],
            chat_template_kwargs=kwargs,
        ),
    ]
    assert got == parts[0] + parts[1] + parts[2] + parts[3]
    plan = plan_from_texts(qwen, mixed, chat_template_kwargs=kwargs)
    singles = [
        plan_from_texts(qwen, [x for x in mixed if isinstance(x, str)]),
        plan_from_texts(
            qwen, [x for x in mixed if not isinstance(x, str)], **{"chat_template_kwargs": kwargs}
        ),
    ]
    assert plan.kept == singles[0].union(singles[1]).kept
    assert plan.metadata["num_texts"] == len(mixed)


def test_mixed_input_with_model_budget_and_added_tokens(
    load_llm_tokenizer: Any,
) -> None:
    from fixtures.llm_models import build_llm_case

    tok = load_llm_tokenizer("llama3")
    model = build_llm_case("llama-tied", tok)
    mixed = [*TEXTS[:40], *CHATS[:20], *PAIRS[:5]]
    eos = model.config.eos_token_id
    eos_ids = eos if isinstance(eos, list) else [eos]
    rare = tok.convert_ids_to_tokens(1700)
    plan = plan_from_texts(
        tok, mixed, model=model, max_size=600, add_tokens=["Ġibuprofen"], keep=[rare]
    )
    assert plan.new_size <= 600
    assert plan.added == ("Ġibuprofen",)
    for i in [*eos_ids, 1700]:
        assert plan.old_to_new(i) is not None
    # the same as counting each kind and building from the sum
    assert plan.kept == plan_from_texts(tok, mixed, model=model, max_size=599, keep=[rare]).kept


def test_bad_item_names_its_index_in_any_position(qwen: Any) -> None:
    with pytest.raises(VocabError, match="item 3 of texts is none of"):
        plan_from_texts(qwen, [TEXTS[0], CHATS[0], PAIRS[0], 3.5])
    with pytest.raises(VocabError, match="item 1002 of texts"):
        plan_from_texts(qwen, iter([*TEXTS[:2], *(["x"] * 1000), {"role": "user"}]))
    with pytest.raises(VocabError, match="item 1 of texts is not a conversation"):
        plan_from_texts(qwen, [TEXTS[0], [{"content": "no role"}]])


def test_chat_template_kwargs_without_conversations_is_named(qwen: Any) -> None:
    kwargs = {"add_generation_prompt": True}
    for texts in (TEXTS[:5], iter(TEXTS[:5])):  # a list is checked first, a stream at its end
        with pytest.raises(VocabError, match="'chat_template_kwargs' applies to conversations"):
            plan_from_texts(qwen, texts, chat_template_kwargs=kwargs)
    with pytest.raises(VocabError, match="'chat_template_kwargs' may not set 'tokenize'"):
        plan_from_texts(qwen, CHATS[:2], chat_template_kwargs={"tokenize": False})


def test_num_proc_with_conversations_and_texts(qwen: Any) -> None:
    mixed = [*CHATS[:20], *TEXTS[:20]]
    here = plan_from_texts(qwen, mixed, max_size=500)
    assert plan_from_texts(qwen, mixed, max_size=500, num_proc=2, batch_size=8) == here


def test_dataset_with_add_tokens_and_conversations(qwen: Any) -> None:
    datasets = pytest.importorskip("datasets")
    texts = datasets.Dataset.from_dict({"text": TEXTS[:60], "id": list(range(60))})
    plan = plan_from_texts(qwen, texts, add_tokens=3)
    assert plan == plan_from_texts(qwen, TEXTS[:60], add_tokens=3)
    assert len(plan.added) == 3
    chats = datasets.Dataset.from_dict({"messages": CHATS})
    assert plan_from_texts(qwen, chats, max_size=300) == plan_from_texts(qwen, CHATS, max_size=300)


# -- budgets count added tokens ----------------------------------------------------------------


def test_max_size_counts_added_tokens(qwen: Any) -> None:
    tokens = [f"Ġzzword{i}" for i in range(20)]
    plan = plan_from_texts(qwen, TEXTS, max_size=400, add_tokens=tokens)
    assert plan.new_size <= 400
    assert plan.added == tuple(tokens)
    # what encoding needs, then the added tokens, then ids by count into what is left
    assert plan.kept == plan_from_texts(qwen, TEXTS, max_size=380).kept
    suggested = plan_from_texts(qwen, TEXTS, max_size=400, add_tokens=20)
    assert suggested.new_size <= 400 and len(suggested.added) == 20
    # a budget that binds nothing: the same as none
    assert plan_from_texts(qwen, TEXTS, max_size=10**6, add_tokens=tokens) == plan_from_texts(
        qwen, TEXTS, add_tokens=tokens
    )


def test_max_size_below_needs_plus_added_names_both_numbers(qwen: Any) -> None:
    needs = plan_from_texts(qwen, []).new_size
    tokens = [f"Ġzzword{i}" for i in range(5)]
    assert plan_from_texts(qwen, TEXTS, max_size=needs + 5, add_tokens=tokens).kept == (
        plan_from_texts(qwen, [], add_tokens=tokens).kept
    )
    message = f"below the {needs} ids that encoding needs plus the 5 added tokens \\({needs + 5}\\)"
    with pytest.raises(VocabError, match=message):
        plan_from_texts(qwen, iter(TEXTS), max_size=needs + 4, add_tokens=tokens)


def test_conversations_from_a_jsonl_file(qwen: Any, tmp_path: Any) -> None:
    import json

    from vocab_adapters.planning.text_files import iter_texts

    path = tmp_path / "chats.jsonl"
    rows = [{"id": i, "messages": chat} for i, chat in enumerate(CHATS)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    got = plan_from_texts(qwen, iter_texts(path), max_size=300)
    assert got == plan_from_texts(qwen, CHATS, max_size=300)
