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
import platform
import resource
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


# -- the two libraries behind one interface -------------------------------------------------------


class Library:
    name = ""

    def count(self, tokenizer: Any, texts: list[list[str]]) -> Any:
        """Plan (or kept-id list) from texts."""
        raise NotImplementedError

    def kept(self, plan: Any) -> list[int]:
        raise NotImplementedError

    def reduce(
        self, plan: Any, model: Any = None, tokenizer: Any = None, optimizer: Any = None
    ) -> Any:
        raise NotImplementedError

    def restore(self, handle: Any) -> None:
        raise NotImplementedError

    def track(self, handle: Any, optimizer: Any) -> None:
        """Tell the library about an optimizer created while reduced (if it has a way)."""


class Vocabcore(Library):
    name = "vocabcore"

    def __init__(self) -> None:
        import vocab_adapters
        import vocabcore

        self.va = vocab_adapters
        self.version = vocabcore.__version__

    def count(self, tokenizer: Any, texts: list[list[str]]) -> Any:
        return self.va.plan_from_texts(tokenizer, texts)

    def kept(self, plan: Any) -> list[int]:
        return list(plan.kept)

    def reduce(
        self, plan: Any, model: Any = None, tokenizer: Any = None, optimizer: Any = None
    ) -> Any:
        return self.va.apply_plan(plan, model=model, tokenizer=tokenizer, optimizer=optimizer)

    def restore(self, handle: Any) -> None:
        self.va.revert_plan(handle)

    def track(self, handle: Any, optimizer: Any) -> None:
        handle.track(optimizer)


class Tstv(Library):
    name = "transformer-smaller-training-vocab"

    def __init__(self) -> None:
        from importlib.metadata import version

        from transformer_smaller_training_vocab import modify_model, modify_tokenizer, token_stats

        self.mm, self.mt, self.ts = modify_model, modify_tokenizer, token_stats
        self.version = version("transformer-smaller-training-vocab")

    def count(self, tokenizer: Any, texts: list[list[str]]) -> Any:
        return self.ts.get_token_stats(tokenizer, texts)

    def kept(self, plan: Any) -> list[int]:
        return list(plan)

    def reduce(
        self, plan: Any, model: Any = None, tokenizer: Any = None, optimizer: Any = None
    ) -> Any:
        # What reduce_train_vocab_and_context does after counting, part by part.
        saved_emb = saved_vocab = None
        if model is not None:
            saved_emb = self.mm.reduce_embedding(
                model, plan, empty_cuda_cache=False, optimizer=optimizer
            )
        if tokenizer is not None:
            saved_vocab = self.mt.reduce_tokenizer(tokenizer, plan)
        return (plan, model, tokenizer, saved_emb, saved_vocab)

    def restore(self, handle: Any) -> None:
        plan, model, tokenizer, saved_emb, saved_vocab = handle
        if model is not None:
            self.mm.recreate_embedding(model, saved_emb, plan, empty_cuda_cache=False)
        if tokenizer is not None:
            self.mt.recreate_tokenizer(tokenizer, saved_vocab)


# -- helpers ------------------------------------------------------------------------------------


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def make_model(kind: str, cfg: dict[str, Any], model_type: str, seed: int = 0) -> Any:
    import torch
    import transformers

    config = transformers.AutoConfig.for_model(model_type, **cfg)
    cls = {
        "tc": transformers.AutoModelForTokenClassification,
        "mlm": transformers.AutoModelForMaskedLM,
    }[kind]
    torch.manual_seed(seed)
    model = cls.from_config(config)
    model.train()
    return model


def emb_weight(model: Any) -> Any:
    return model.get_input_embeddings().weight


def batch_of(tokenizer: Any, texts: list[list[str]], n: int = 4, max_len: int = 32) -> Any:
    return tokenizer(
        texts[:n],
        is_split_into_words=True,
        truncation=True,
        max_length=max_len,
        padding=True,
        return_tensors="pt",
    )


def tc_loss(model: Any, enc: Any) -> Any:
    import torch

    labels = torch.where(enc["attention_mask"].bool(), enc["input_ids"] % 9, -100)
    return model(
        input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], labels=labels
    ).loss


def rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def state_bytes(optimizer: Any) -> int:
    import torch

    return sum(
        v.numel() * v.element_size()
        for st in optimizer.state.values()
        for v in st.values()
        if isinstance(v, torch.Tensor) and v.dim() > 0
    )


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
        dt, _ = timed(
            lambda: [
                tokenizer(texts[i : i + 1000], is_split_into_words=True)["input_ids"]
                for i in range(0, len(texts), 1000)
            ]
        )
        floor.append(dt)
    times, plan = [], None
    for _ in range(reps):
        dt, plan = timed(lambda: LIB.count(tokenizer, texts))
        times.append(dt)
    kept = LIB.kept(plan)
    return {
        "floor_s": median(floor),
        "floor_best_s": min(floor),
        "count_s": median(times),
        "count_best_s": min(times),
        "count_first_s": times[0],
        "kept": len(kept),
        "kept_ids": kept,
        "plan": plan,
    }


def bench_apply_revert(job: dict[str, Any], tokenizer: Any, plan: Any) -> dict[str, Any]:
    import torch

    model = make_model("tc", job["model_config"], job["model_type"])
    weight = emb_weight(model)
    idx = torch.tensor(LIB.kept(plan), dtype=torch.long, device=weight.device)
    floor = []
    for _ in range(max(7, job["repeats"])):
        with torch.no_grad():
            t0 = time.perf_counter()
            small = weight.index_select(0, idx)
            weight.index_copy_(0, idx, small)
            floor.append(time.perf_counter() - t0)
        del small
    out: dict[str, Any] = {
        "floor_s": median(floor),
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
        applies, reverts = [], []
        for _ in range(job["repeats"] + 1):  # the first round (imports, caches) is reported apart
            ta, handle = timed(lambda kw=kwargs: LIB.reduce(plan, **kw))
            tr, _ = timed(lambda h=handle: LIB.restore(h))
            applies.append(ta)
            reverts.append(tr)
            gc.collect()
        out[part] = {
            "apply_s": median(applies[1:]),
            "revert_s": median(reverts[1:]),
            "total_s": median([a + r for a, r in zip(applies[1:], reverts[1:], strict=True)]),
            "first_total_s": applies[0] + reverts[0],
            "best_total_s": min(a + r for a, r in zip(applies[1:], reverts[1:], strict=True)),
        }
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
            "adam_state_bytes": state_bytes(opt),
            "embedding_rows": emb_weight(model).shape[0],
        }
        if handle is not None:
            LIB.track(handle, opt)
            LIB.restore(handle)
        del model, opt, handle
        gc.collect()
    out["rss_peak_gib"] = rss_gib()
    return out


def run_checks(job: dict[str, Any], tokenizer_dir: str, texts: list[list[str]]) -> dict[str, Any]:
    import torch
    from transformers import AutoTokenizer

    results: dict[str, Any] = {}
    cfg, mt = job["model_config"], job["model_type"]
    sample = texts[:8]

    def fresh_tok() -> Any:
        return AutoTokenizer.from_pretrained(tokenizer_dir)

    def full_ids(tok: Any, xs: list[list[str]]) -> list[list[int]]:
        return tok(xs, is_split_into_words=True)["input_ids"]

    # 1. tied head: forward after reduce gives the kept ids' logits, head still tied.
    def tied_forward() -> tuple[bool, str]:
        tok = fresh_tok()
        model = make_model("mlm", cfg, mt)
        model.eval()  # no dropout: the two forwards must be comparable
        enc = batch_of(tok, sample)
        with torch.no_grad():
            ref = model(**enc).logits
        plan = LIB.count(tok, texts)
        kept = torch.tensor(LIB.kept(plan))
        handle = LIB.reduce(plan, model=model, tokenizer=tok)
        enc_r = batch_of(tok, sample)
        with torch.no_grad():
            logits = model(**enc_r).logits
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

    # 2. round trip with no training: state_dict bit-exact, config and tie restored.
    def round_trip() -> tuple[bool, str]:
        tok = fresh_tok()
        model = make_model("mlm", cfg, mt)
        before = {k: v.detach().clone() for k, v in model.state_dict().items()}
        vocab_size = model.config.vocab_size
        plan = LIB.count(tok, texts)
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

    # 3. trained rows carried back (token classification, optimizer made while reduced).
    def trained_rows() -> tuple[bool, str]:
        tok = fresh_tok()
        model = make_model("tc", cfg, mt)
        original = emb_weight(model).detach().clone()
        plan = LIB.count(tok, texts)
        kept = torch.tensor(LIB.kept(plan))
        handle = LIB.reduce(plan, model=model, tokenizer=tok)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        tc_loss(model, batch_of(tok, sample)).backward()
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

    # 4. added tokens (one special, one not, both unused by the texts) intact after restore.
    def added_tokens(special: bool) -> Callable[[], tuple[bool, str]]:
        def run() -> tuple[bool, str]:
            import tempfile

            tok = fresh_tok()
            if special:
                tok.add_special_tokens({"additional_special_tokens": ["<rel>"]})
            else:
                tok.add_tokens(["<ent>"])
            snapshot = {i: (t.content, t.special) for i, t in tok.added_tokens_decoder.items()}
            probe = [["Hello", "<ent>", "world", "<rel>"]]
            ids_before = full_ids(tok, probe + sample)
            with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
                tok.save_pretrained(a)
                plan = LIB.count(tok, texts)
                LIB.restore(LIB.reduce(plan, tokenizer=tok))
                tok.save_pretrained(b)
                files = sorted(os.listdir(a))
                diff = [
                    f
                    for f in files
                    if not os.path.exists(os.path.join(b, f))
                    or _load(os.path.join(a, f)) != _load(os.path.join(b, f))
                ]
            after = {i: (t.content, t.special) for i, t in tok.added_tokens_decoder.items()}
            same_ids = full_ids(tok, probe + sample) == ids_before
            ok = after == snapshot and not diff and same_ids
            return ok, (
                f"added_tokens_decoder equal: {after == snapshot}; saved files that "
                f"differ: {diff or 'none'}; encodings equal: {same_ids}"
            )

        return run

    # 5. optimizer made before reduce (resuming): after restore it holds the model's params and
    #    can step.
    def optimizer_after_restore() -> tuple[bool, str]:
        tok = fresh_tok()
        model = make_model("tc", cfg, mt)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        enc = batch_of(tok, sample)
        tc_loss(model, enc).backward()
        opt.step()
        opt.zero_grad()
        plan = LIB.count(tok, texts)
        handle = LIB.reduce(plan, model=model, tokenizer=tok, optimizer=opt)
        in_opt = any(p is emb_weight(model) for g in opt.param_groups for p in g["params"])
        tc_loss(model, batch_of(tok, sample)).backward()
        opt.step()
        opt.zero_grad()
        LIB.restore(handle)
        params = {id(p) for p in model.parameters()}
        held = [p for g in opt.param_groups for p in g["params"]]
        stale = sum(1 for p in held if id(p) not in params)
        missing = len(params - {id(p) for p in held})
        has_emb = any(p is emb_weight(model) for p in held)
        before = emb_weight(model).detach().clone()
        tc_loss(model, batch_of(tok, sample)).backward()
        opt.step()
        moved = not torch.equal(before, emb_weight(model).detach())
        ok = in_opt and has_emb and stale == 0 and missing == 0 and moved
        return ok, (
            f"reduced embedding in optimizer while reduced: {in_opt}; after restore: "
            f"optimizer holds the restored embedding: {has_emb}, stale params {stale}, "
            f"model params missing {missing}, step updates the embedding: {moved}"
        )

    # 6. tokenizer: reduced ids are the remapped full ids; full encodings back after restore.
    def tokenizer_round_trip() -> tuple[bool, str]:
        tok = fresh_tok()
        full = full_ids(tok, texts)
        plan = LIB.count(tok, texts)
        table = {old: new for new, old in enumerate(LIB.kept(plan))}
        handle = LIB.reduce(plan, tokenizer=tok)
        reduced = full_ids(tok, texts)
        remapped = reduced == [[table.get(i, -1) for i in s] for s in full]
        LIB.restore(handle)
        back = full_ids(tok, texts) == full
        return remapped and back, (
            f"reduced encodings = remapped full encodings: {remapped}; "
            f"full encodings after restore: {back}"
        )

    check(results, "tied_head_forward", tied_forward)
    check(results, "round_trip_bit_exact", round_trip)
    check(results, "trained_rows_restored", trained_rows)
    check(results, "added_special_token_intact", added_tokens(True))
    check(results, "added_token_intact", added_tokens(False))
    check(results, "optimizer_after_restore", optimizer_after_restore)
    check(results, "tokenizer_round_trip", tokenizer_round_trip)
    return results


def _load(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        return json.loads(text)
    except ValueError:
        return text


LIB: Library


def main() -> None:
    global LIB
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", choices=("vocabcore", "tstv"), required=True)
    ap.add_argument("job")
    args = ap.parse_args()
    with open(args.job, encoding="utf-8") as f:
        job = json.load(f)
    import torch
    import transformers
    from transformers import AutoTokenizer

    torch.set_num_threads(job.get("threads", 1))
    LIB = Vocabcore() if args.lib == "vocabcore" else Tstv()
    with open(job["texts"], encoding="utf-8") as f:
        texts = json.load(f)
    res: dict[str, Any] = {
        "lib": LIB.name,
        "lib_version": LIB.version,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
    }
    try:
        import tokenizers

        res["tokenizers"] = tokenizers.__version__
    except ImportError:
        pass
    tokenizer = AutoTokenizer.from_pretrained(job["tokenizer_dir"])
    res["tokenizer_class"] = type(tokenizer).__name__
    res["vocab_size"] = len(tokenizer)
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
