"""One library's side of the side-by-side benchmark: read a JSON job, print JSON results.

Run as ``python benchmarks/_worker.py --lib vocabcore JOB.json`` in vocabcore's environment and
as ``python benchmarks/_worker.py --lib tstv JOB.json`` in the venv that holds
transformer-smaller-training-vocab (transformers 4.x), so both libraries see the same tokenizer
files, the same texts and the same model config, on the same machine, in one run. Only the
standard library, torch and transformers are imported besides the library under test.

The job (written by ``side_by_side.py``)::

    {"tokenizer_dir": ..., "texts": "texts.json", "model_config": {...}, "model_type": ...,
     "repeats": 3, "threads": 1, "checks": true, "memory": true}
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
import tempfile
import traceback
from collections.abc import Callable
from typing import Any

import _harness as h
import _libraries

h.setup(src=False, quiet=True)

LIB: _libraries.Library


# -- helpers ------------------------------------------------------------------------------------


def make_model(kind: str, cfg: dict[str, Any], model_type: str, seed: int = 0) -> Any:
    model = h.model_from_config(model_type, cfg, kind, seed)
    model.train()
    return model


def emb_weight(model: Any) -> Any:
    return model.get_input_embeddings().weight


def batch_of(tokenizer: Any, texts: list[list[str]], n: int = 4, max_len: int = 32) -> Any:
    return h.encode_words(tokenizer, texts[:n], max_len)


def tc_loss(model: Any, enc: Any) -> Any:
    return model(
        input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], labels=h.tc_labels(enc)
    ).loss


def rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def check(results: dict[str, Any], name: str, fn: Callable[[], tuple[bool, str]]) -> None:
    try:
        ok, detail = fn()
    except Exception as exc:  # a crash is a failure, with its message
        ok, detail = False, f"raised {type(exc).__name__}: {str(exc)[:200]}"
        traceback.print_exc(file=sys.stderr)
    results[name] = {"pass": bool(ok), "detail": detail}
    print(f"[{LIB.name}] check {name}: {'PASS' if ok else 'FAIL'} {detail}", file=sys.stderr)
    gc.collect()


# -- the measurements -----------------------------------------------------------------------


def bench_count(job: dict[str, Any], tokenizer: Any, texts: list[list[str]]) -> dict[str, Any]:
    reps = job["repeats"]
    floor = []
    for _ in range(reps):
        dt, _ = h.timed(
            lambda: [
                tokenizer(texts[i : i + 1000], is_split_into_words=True)["input_ids"]
                for i in range(0, len(texts), 1000)
            ]
        )
        floor.append(dt)
    times, plan = [], None
    for _ in range(reps):
        dt, plan = h.timed(lambda: LIB.count(tokenizer, texts))
        times.append(dt)
    kept = LIB.kept(plan)
    return {
        "floor_s": h.median(floor),
        "floor_best_s": min(floor),
        "count_s": h.median(times),
        "count_best_s": min(times),
        "count_first_s": times[0],
        "kept": len(kept),
        "kept_ids": kept,
        "plan": plan,
    }


def _index_floor(weight: Any, kept: list[int], repeats: int) -> list[float]:
    """Seconds of one ``index_select`` of the kept rows and one ``index_copy_`` back."""
    import torch

    idx = torch.tensor(kept, dtype=torch.long, device=weight.device)

    def one_round() -> Any:
        small = weight.index_select(0, idx)
        weight.index_copy_(0, idx, small)
        return small  # freed after the clock stops

    floor = []
    for _ in range(repeats):
        with torch.no_grad():
            seconds, small = h.timed(one_round)
            floor.append(seconds)
        del small
    return floor


def _apply_revert_rounds(plan: Any, kwargs: dict[str, Any], repeats: int) -> dict[str, float]:
    applies, reverts = [], []
    for _ in range(repeats + 1):  # the first round (imports, caches) is reported apart
        ta, handle = h.timed(lambda: LIB.reduce(plan, **kwargs))
        tr, _ = h.timed(lambda h_=handle: LIB.restore(h_))
        applies.append(ta)
        reverts.append(tr)
        gc.collect()
    totals = [a + r for a, r in zip(applies[1:], reverts[1:], strict=True)]
    return {
        "apply_s": h.median(applies[1:]),
        "revert_s": h.median(reverts[1:]),
        "total_s": h.median(totals),
        "first_total_s": applies[0] + reverts[0],
        "best_total_s": min(totals),
    }


def bench_apply_revert(job: dict[str, Any], tokenizer: Any, plan: Any) -> dict[str, Any]:
    model = make_model("tc", job["model_config"], job["model_type"])
    weight = emb_weight(model)
    floor = _index_floor(weight, LIB.kept(plan), max(7, job["repeats"]))
    out: dict[str, Any] = {
        "floor_s": h.median(floor),
        "floor_best_s": min(floor),
        "rows": weight.shape[0],
        "dim": weight.shape[1],
    }
    parts = {
        "model+tokenizer": {"model": model, "tokenizer": tokenizer},
        "model": {"model": model},
        "tokenizer": {"tokenizer": tokenizer},
    }
    for part, kwargs in parts.items():
        out[part] = _apply_revert_rounds(plan, kwargs, job["repeats"])
        print(f"[{LIB.name}] apply+revert {part}: {out[part]}", file=sys.stderr)
    return out


def bench_memory(
    job: dict[str, Any], tokenizer: Any, plan: Any, texts: list[list[str]]
) -> dict[str, Any]:
    """Parameters and Adam state while training, full vs reduced (optimizer made after apply)."""
    import torch

    out: dict[str, Any] = {}
    for mode in ("full", "reduced"):
        model = make_model("tc", job["model_config"], job["model_type"])
        handle = LIB.reduce(plan, model=model, tokenizer=tokenizer) if mode == "reduced" else None
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        enc = batch_of(tokenizer, texts)
        tc_loss(model, enc).backward()
        opt.step()
        out[mode] = {
            "params": sum(p.numel() for p in model.parameters()),
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "adam_state_bytes": h.state_bytes(opt),
            "embedding_rows": emb_weight(model).shape[0],
        }
        if handle is not None:
            LIB.track(handle, opt)
            LIB.restore(handle)
        del model, opt, handle
        gc.collect()
    out["rss_peak_gib"] = rss_gib()
    return out


# -- the correctness checks -----------------------------------------------------------------------


class Inputs:
    """What every check starts from: the job's model config, tokenizer files and texts."""

    def __init__(self, job: dict[str, Any], tokenizer_dir: str, texts: list[list[str]]) -> None:
        self.cfg, self.model_type = job["model_config"], job["model_type"]
        self.tokenizer_dir = tokenizer_dir
        self.texts = texts
        self.sample = texts[:8]

    def tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.tokenizer_dir)

    def model(self, kind: str) -> Any:
        return make_model(kind, self.cfg, self.model_type)


def full_ids(tok: Any, xs: list[list[str]]) -> list[list[int]]:
    return tok(xs, is_split_into_words=True)["input_ids"]


def check_tied_forward(inp: Inputs) -> tuple[bool, str]:
    """Tied head: forward after reduce gives the kept ids' logits, head still tied."""
    import torch

    tok = inp.tokenizer()
    model = inp.model("mlm")
    model.eval()  # no dropout: the two forwards must be comparable
    with torch.no_grad():
        ref = model(**batch_of(tok, inp.sample)).logits
    plan = LIB.count(tok, inp.texts)
    kept = torch.tensor(LIB.kept(plan))
    handle = LIB.reduce(plan, model=model, tokenizer=tok)
    with torch.no_grad():
        logits = model(**batch_of(tok, inp.sample)).logits
    out_emb = model.get_output_embeddings()
    tied = out_emb is not None and out_emb.weight is emb_weight(model)
    width = logits.shape[-1]
    same = width == len(kept) and torch.allclose(logits, ref[..., kept], atol=1e-4)
    LIB.restore(handle)
    return (
        tied and same,
        f"logits width {width} (kept {len(kept)}), head tied to input embedding: {tied}, "
        f"logits equal full logits at kept ids: {same}",
    )


def check_round_trip(inp: Inputs) -> tuple[bool, str]:
    """Round trip with no training: state_dict bit-exact, config and tie restored."""
    import torch

    tok = inp.tokenizer()
    model = inp.model("mlm")
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    vocab_size = model.config.vocab_size
    plan = LIB.count(tok, inp.texts)
    LIB.restore(LIB.reduce(plan, model=model, tokenizer=tok))
    after = model.state_dict()
    bad = [
        k
        for k in before
        if k not in after
        or before[k].dtype != after[k].dtype
        or before[k].shape != after[k].shape
        or not torch.equal(before[k], after[k])
    ]
    extra = [k for k in after if k not in before]
    tied = model.get_output_embeddings().weight is emb_weight(model)
    ok = not bad and not extra and model.config.vocab_size == vocab_size and tied
    return ok, (
        f"{len(before)} tensors, {len(bad)} differ {bad[:3]}, {len(extra)} extra, "
        f"config.vocab_size {model.config.vocab_size}/{vocab_size}, "
        f"head tied after restore: {tied}"
    )


def check_trained_rows(inp: Inputs) -> tuple[bool, str]:
    """Trained rows carried back (token classification, optimizer made while reduced)."""
    import torch

    tok = inp.tokenizer()
    model = inp.model("tc")
    original = emb_weight(model).detach().clone()
    plan = LIB.count(tok, inp.texts)
    kept = torch.tensor(LIB.kept(plan))
    handle = LIB.reduce(plan, model=model, tokenizer=tok)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    tc_loss(model, batch_of(tok, inp.sample)).backward()
    opt.step()
    trained = emb_weight(model).detach().clone()
    LIB.track(handle, opt)
    LIB.restore(handle)
    restored = emb_weight(model).detach()
    dropped = torch.ones(restored.shape[0], dtype=torch.bool)
    dropped[kept] = False
    ok_kept = torch.equal(restored[kept], trained)
    ok_drop = torch.equal(restored[dropped], original[dropped])
    changed = not torch.equal(trained, original[kept])
    return (
        ok_kept and ok_drop and changed,
        f"kept rows = trained rows: {ok_kept}; dropped rows untouched: {ok_drop}",
    )


def _saved_files_differ(tok: Any, inp: Inputs) -> list[str]:
    """Reduce and restore ``tok``; the files its save_pretrained writes differently after."""
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        tok.save_pretrained(a)
        plan = LIB.count(tok, inp.texts)
        LIB.restore(LIB.reduce(plan, tokenizer=tok))
        tok.save_pretrained(b)
        return [
            f
            for f in sorted(os.listdir(a))
            if not os.path.exists(os.path.join(b, f))
            or _load(os.path.join(a, f)) != _load(os.path.join(b, f))
        ]


def check_added_tokens(special: bool) -> Callable[[Inputs], tuple[bool, str]]:
    """Added tokens (one special, one not, both unused by the texts) intact after restore."""

    def run(inp: Inputs) -> tuple[bool, str]:
        tok = inp.tokenizer()
        if special:
            tok.add_special_tokens({"additional_special_tokens": ["<rel>"]})
        else:
            tok.add_tokens(["<ent>"])
        snapshot = {i: (t.content, t.special) for i, t in tok.added_tokens_decoder.items()}
        probe = [["Hello", "<ent>", "world", "<rel>"]]
        ids_before = full_ids(tok, probe + inp.sample)
        diff = _saved_files_differ(tok, inp)
        after = {i: (t.content, t.special) for i, t in tok.added_tokens_decoder.items()}
        same_ids = full_ids(tok, probe + inp.sample) == ids_before
        ok = after == snapshot and not diff and same_ids
        return ok, (
            f"added_tokens_decoder equal: {after == snapshot}; saved files that "
            f"differ: {diff or 'none'}; encodings equal: {same_ids}"
        )

    return run


def _train_step(model: Any, opt: Any, tok: Any, inp: Inputs) -> None:
    tc_loss(model, batch_of(tok, inp.sample)).backward()
    opt.step()
    opt.zero_grad()


def check_optimizer_after_restore(inp: Inputs) -> tuple[bool, str]:
    """Optimizer made before reduce (resuming): after restore it holds the model's params and
    can step."""
    import torch

    tok = inp.tokenizer()
    model = inp.model("tc")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    _train_step(model, opt, tok, inp)
    plan = LIB.count(tok, inp.texts)
    handle = LIB.reduce(plan, model=model, tokenizer=tok, optimizer=opt)
    in_opt = any(p is emb_weight(model) for g in opt.param_groups for p in g["params"])
    _train_step(model, opt, tok, inp)
    LIB.restore(handle)
    params = {id(p) for p in model.parameters()}
    held = [p for g in opt.param_groups for p in g["params"]]
    stale = sum(1 for p in held if id(p) not in params)
    missing = len(params - {id(p) for p in held})
    has_emb = any(p is emb_weight(model) for p in held)
    before = emb_weight(model).detach().clone()
    tc_loss(model, batch_of(tok, inp.sample)).backward()
    opt.step()
    moved = not torch.equal(before, emb_weight(model).detach())
    ok = in_opt and has_emb and stale == 0 and missing == 0 and moved
    return ok, (
        f"reduced embedding in optimizer while reduced: {in_opt}; after restore: "
        f"optimizer holds the restored embedding: {has_emb}, stale params {stale}, "
        f"model params missing {missing}, step updates the embedding: {moved}"
    )


def check_tokenizer_round_trip(inp: Inputs) -> tuple[bool, str]:
    """Tokenizer: reduced ids are the remapped full ids; full encodings back after restore."""
    tok = inp.tokenizer()
    full = full_ids(tok, inp.texts)
    plan = LIB.count(tok, inp.texts)
    table = {old: new for new, old in enumerate(LIB.kept(plan))}
    handle = LIB.reduce(plan, tokenizer=tok)
    reduced = full_ids(tok, inp.texts)
    remapped = reduced == [[table.get(i, -1) for i in s] for s in full]
    LIB.restore(handle)
    back = full_ids(tok, inp.texts) == full
    return remapped and back, (
        f"reduced encodings = remapped full encodings: {remapped}; "
        f"full encodings after restore: {back}"
    )


CHECKS: dict[str, Callable[[Inputs], tuple[bool, str]]] = {
    "tied_head_forward": check_tied_forward,
    "round_trip_bit_exact": check_round_trip,
    "trained_rows_restored": check_trained_rows,
    "added_special_token_intact": check_added_tokens(True),
    "added_token_intact": check_added_tokens(False),
    "optimizer_after_restore": check_optimizer_after_restore,
    "tokenizer_round_trip": check_tokenizer_round_trip,
}


def run_checks(job: dict[str, Any], tokenizer_dir: str, texts: list[list[str]]) -> dict[str, Any]:
    inp = Inputs(job, tokenizer_dir, texts)
    results: dict[str, Any] = {}
    for name, fn in CHECKS.items():
        check(results, name, lambda fn=fn: fn(inp))
    return results


def _load(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        return json.loads(text)
    except ValueError:
        return text


def _header(tokenizer: Any) -> dict[str, Any]:
    import torch

    versions = h.runtime_versions()
    return {
        "lib": LIB.name,
        "lib_version": LIB.version,
        **{k: versions[k] for k in ("python", "torch", "transformers")},
        "threads": torch.get_num_threads(),
        **({"tokenizers": versions["tokenizers"]} if "tokenizers" in versions else {}),
        "tokenizer_class": type(tokenizer).__name__,
        "vocab_size": len(tokenizer),
    }


def main() -> None:
    global LIB
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", choices=("vocabcore", "tstv"), required=True)
    ap.add_argument("job")
    args = ap.parse_args()
    job = h.read_json(args.job)
    import torch
    from transformers import AutoTokenizer

    torch.set_num_threads(job.get("threads", 1))
    LIB = _libraries.load(args.lib)
    texts = h.read_json(job["texts"])
    tokenizer = AutoTokenizer.from_pretrained(job["tokenizer_dir"])
    res = _header(tokenizer)
    count = bench_count(job, tokenizer, texts)
    plan = count.pop("plan")
    res["count"] = count
    print(
        f"[{LIB.name}] count: floor {count['floor_s']:.3f}s, count {count['count_s']:.3f}s, "
        f"kept {count['kept']}",
        file=sys.stderr,
    )
    res["apply_revert"] = bench_apply_revert(job, tokenizer, plan)
    gc.collect()
    if job.get("memory", True):
        res["memory"] = bench_memory(job, tokenizer, plan, texts)
    if job.get("checks", True):
        res["checks"] = run_checks(job, job["tokenizer_dir"], texts)
    res["rss_peak_gib"] = rss_gib()
    json.dump(res, sys.stdout)


if __name__ == "__main__":
    main()
