"""Plans from corpora counted in pieces: shards → TokenCounts JSON → sum → plan_from_counts."""

from __future__ import annotations

from functools import reduce
from operator import add
from typing import Any

import pytest

from vocab_adapters import count_tokens, plan_from_texts
from vocab_adapters.planning.texts import count_tokens_parallel, plan_from_counts
from vocabcore import PlanMismatchError, TokenCounts


def shards(texts: list[str], n: int) -> list[list[str]]:
    return [texts[i::n] for i in range(n)]


@pytest.mark.parametrize("name", ["hf_bytelevel_bpe_tokenizer", "hf_wordpiece_tokenizer"])
def test_sharded_counts_give_the_single_process_plan(
    request: pytest.FixtureRequest, name: str, corpus_texts: list[str]
) -> None:
    tokenizer = request.getfixturevalue(name)
    texts = corpus_texts[:300]
    want = plan_from_texts(tokenizer, texts, min_count=2, keep=[0])
    parts = [TokenCounts.from_json(count_tokens(tokenizer, s).to_json()) for s in shards(texts, 3)]
    got = plan_from_counts(tokenizer, reduce(add, parts), min_count=2, keep=[0])
    assert got == want
    assert got.metadata["num_tokens"] == want.metadata["num_tokens"]
    # counts.to_plan() keeps counted ids only: no specials, no byte alphabet, no merge closure
    assert set(reduce(add, parts).to_plan(min_count=2).kept) <= set(want.kept)


def test_plan_from_counts_refuses_other_tokenizers(
    hf_wordpiece_tokenizer: Any, hf_bytelevel_bpe_tokenizer: Any, corpus_texts: list[str]
) -> None:
    counts = count_tokens(hf_wordpiece_tokenizer, corpus_texts[:10])
    with pytest.raises(PlanMismatchError, match="another tokenizer"):
        plan_from_counts(hf_bytelevel_bpe_tokenizer, counts)


@pytest.mark.slow
def test_count_tokens_parallel_any_iterable(
    hf_bytelevel_bpe_tokenizer: Any, corpus_texts: list[str]
) -> None:
    texts = corpus_texts[:400]
    got = count_tokens_parallel(hf_bytelevel_bpe_tokenizer, iter(texts), 2, batch_size=50)
    assert got == count_tokens(hf_bytelevel_bpe_tokenizer, texts)


@pytest.mark.slow
def test_dask_two_workers_give_the_single_process_plan(
    hf_bytelevel_bpe_tokenizer: Any, corpus_texts: list[str]
) -> None:
    pytest.importorskip("dask.bag")
    distributed = pytest.importorskip("distributed")
    import dask.bag as db

    tokenizer = hf_bytelevel_bpe_tokenizer
    texts = corpus_texts[:400]
    want = plan_from_texts(tokenizer, texts)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        # the recipe of docs/distributed.md: map = count a partition, reduce = add the counts
        bag = db.from_sequence(texts, npartitions=4)
        jsons = bag.map_partitions(lambda part: [count_tokens(tokenizer, part).to_json()])
        parts = client.compute(jsons).result()
        workers = len(client.scheduler_info()["workers"])
    assert workers == 2 and len(parts) == 4
    total = reduce(add, map(TokenCounts.from_json, parts))
    assert plan_from_counts(tokenizer, total) == want
