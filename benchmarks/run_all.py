"""Run every benchmark; in full mode write docs/benchmarks.md and the charts in docs/img/.

    python benchmarks/run_all.py            # full: about 10-15 minutes on 2 CPU cores
    python benchmarks/run_all.py --quick    # CI smoke run, under 2 minutes; writes nothing in docs/

``--quick`` uses tiny model bodies and a 20,002-piece XLM-R-style tokenizer: it checks that the
pipeline works and asserts nothing about time. The predecessor
(transformer-smaller-training-vocab) runs only where its venv exists
(``.bench-envs/tstv``, see docs/benchmarks.md); otherwise its column is skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "src"))

import bench_core  # noqa: E402
import impact  # noqa: E402
import side_by_side  # noqa: E402
import steps  # noqa: E402

TSTV = "transformer-smaller-training-vocab"


def machine() -> dict[str, Any]:
    import torch
    import transformers

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.cuda.is_available(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        mem = Path("/proc/meminfo").read_text().split()
        info["ram_gib"] = round(int(mem[mem.index("MemTotal:") + 1]) / 2**20, 1)
    except (OSError, ValueError):
        pass
    with contextlib.suppress(OSError):
        info["git"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    return info


# -- formatting ---------------------------------------------------------------------------------


def ms(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s * 1e3:,.1f} ms" if s < 1 else f"{s:,.2f} s"


def mb(b: float) -> str:
    return f"{b / 2**20:,.0f} MiB"


def mparams(n: float) -> str:
    return f"{n / 1e6:,.1f} M"


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "-"
    return f"{a / b:,.2f}x" if a / b < 10 else f"{a / b:,.1f}x"


# -- charts -----------------------------------------------------------------------------------


def charts(results: dict[str, Any], img: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img.mkdir(parents=True, exist_ok=True)
    written = []

    rows = results["impact"]["rows"]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    xs = range(len(rows))
    full = [r["params_full"] / 1e6 for r in rows]
    red = [r["params_reduced"] / 1e6 for r in rows]
    ax.bar([x - 0.2 for x in xs], full, 0.4, label="full vocabulary", color="#9aa5b1")
    ax.bar([x + 0.2 for x in xs], red, 0.4, label="reduced (vocabcore)", color="#2f7ed8")
    for x, r in zip(xs, rows, strict=True):
        ax.text(
            x + 0.2,
            r["params_reduced"] / 1e6,
            f"-{r['params_removed_pct']:.0f}%",
            ha="center",
            va="bottom",
            fontsize=9,
        )
    ax.set_xticks(list(xs), [r["family"] for r in rows])
    ax.set_ylabel("parameters (millions)")
    ax.set_title(
        "Parameters while training, full vs reduced vocabulary\n"
        "(CoNLL-like training set, locally built tokenizers of the real sizes)"
    )
    ax.legend()
    fig.tight_layout()
    path = img / "params_full_vs_reduced.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path.name)

    srows = results["steps"]["rows"]
    tasks = list(dict.fromkeys(r["task"] for r in srows))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, task in enumerate(tasks):
        f = next(r for r in srows if r["task"] == task and r["mode"] == "full")
        rd = next(r for r in srows if r["task"] == task and r["mode"] == "reduced")
        ax.bar(
            i - 0.2, f["step_s"], 0.4, color="#9aa5b1", label="full vocabulary" if i == 0 else None
        )
        ax.bar(
            i + 0.2,
            rd["step_s"],
            0.4,
            color="#2f7ed8",
            label="reduced (vocabcore)" if i == 0 else None,
        )
        ax.text(
            i + 0.2,
            rd["step_s"],
            f"{f['step_s'] / rd['step_s']:.1f}x faster",
            ha="center",
            va="bottom",
            fontsize=9,
        )
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_ylabel("seconds per training step (CPU)")
    ax.set_title(
        f"XLM-R-base step time, batch {results['steps']['batch']} x ≤32 tokens, "
        f"{results['steps']['threads']} CPU thread(s)"
    )
    ax.legend()
    fig.tight_layout()
    path = img / "step_time_full_vs_reduced.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path.name)

    sbs = results["side_by_side"]
    vc, ts = sbs["vocabcore"], sbs["tstv"]
    if "apply_revert" in vc and "apply_revert" in ts:
        labels = ["model + tokenizer", "model", "tokenizer"]
        keys = ["model+tokenizer", "model", "tokenizer"]
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for i, k in enumerate(keys):
            ax.bar(
                i - 0.2,
                ts["apply_revert"][k]["total_s"],
                0.4,
                color="#d9822b",
                label=TSTV if i == 0 else None,
            )
            ax.bar(
                i + 0.2,
                vc["apply_revert"][k]["total_s"],
                0.4,
                color="#2f7ed8",
                label="vocabcore" if i == 0 else None,
            )
        ax.axhline(
            vc["apply_revert"]["floor_s"],
            color="k",
            ls="--",
            lw=1,
            label="floor: one index_select + index_copy_",
        )
        ax.set_yscale("log")
        ax.set_xticks(range(3), labels)
        ax.set_ylabel("apply + revert, seconds (log scale)")
        ax.set_title("Reduce + restore, XLM-R-base (250,002 x 768), 250k Unigram tokenizer")
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = img / "apply_revert_vs_predecessor.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path.name)
    return written


# -- the page ---------------------------------------------------------------------------------


def render(results: dict[str, Any], command: str, images: list[str]) -> str:
    m = results["machine"]
    sbs = results["side_by_side"]
    vc, ts = sbs["vocabcore"], sbs["tstv"]
    has_ts = "apply_revert" in ts
    out: list[str] = []
    add = out.append
    add("# Benchmarks\n")
    add(
        f"Generated {results['date']} by `{command}` ({results['elapsed_s'] / 60:.1f} min). "
        "Every table and chart on this page comes from that one run; rerun it to refresh them. "
        "Ratios are what matter; absolute times belong to this machine:\n"
    )
    for section, when in sorted((results.get("rerun") or {}).items()):
        env = ""
        if isinstance(when, dict):
            env = (
                f" with Python {when['python']}, torch {when['torch']}, transformers "
                f"{when['transformers']}, vocabcore at git `{when.get('git', '?')}`"
            )
            when = when["date"]
        add(
            f"Section `{section}` was measured again on {when}{env} "
            f"(`python benchmarks/run_all.py --rerun {section}`), after a change to the code it "
            "measures; the other sections are from the run above.\n"
        )
    add(
        f"- CPU: {m.get('cpu', m['machine'])}, {m['cpu_count']} cores visible, "
        f"{m.get('ram_gib', '?')} GiB RAM, no GPU (`torch.cuda.is_available()` = {m['cuda']}); "
        f"{m['platform']}"
    )
    add(
        f"- torch threads: {results['threads']} per process (the machine is shared; both "
        "libraries get the same)"
    )
    add(
        f"- vocabcore env: Python {m['python']}, torch {m['torch']}, transformers "
        f"{m['transformers']}, vocabcore at git `{m.get('git', '?')}` (plus uncommitted work)"
    )
    if has_ts:
        add(
            f"- predecessor env: {TSTV} {ts['lib_version']}, Python {ts['python']}, torch "
            f"{ts['torch']}, transformers {ts['transformers']}, tokenizers {ts.get('tokenizers')}"
        )
    add("- GPU: no GPU figures yet; the scripts use the CPU only.\n")

    add("## What was measured on\n")
    add(
        f"- **Training set**: {sbs['n_texts']:,} generated CoNLL-2003-like pre-split sentences, "
        f"{sbs['n_words']:,} words (`benchmarks/_corpus.py`, fixed seed): the lower-cased words "
        "of CPython's `pydoc_data.topics` help texts plus pronounceable pseudo-words for names "
        "and rare words, Zipf-weighted, with capitalised entity-like words, numbers and "
        "punctuation."
    )
    add(
        "- **Tokenizers** (`benchmarks/_tokenizers.py`): BERT is the real all-MiniLM-L6-v2 "
        "tokenizer (uncased WordPiece, 30,522). RoBERTa (50,265) and GPT-2 (50,257) are "
        "byte-level BPE trained with `tokenizers`' `BpeTrainer` to the real size on the "
        "pydoc topics + 120,000 generated sentences. XLM-R (250,002), DeBERTa-v3 (128,000 pieces "
        "+ `[MASK]`; the model has 128,100 rows) and T5 (32,000 pieces + 100 `<extra_id_*>`; the "
        "model has 32,128 rows) are Metaspace Unigram models whose first 32,000 pieces were "
        "learnt by `UnigramTrainer` on the same text; **the rest of the vocabulary was filled "
        "programmatically** with synthetic pieces (short strings in other scripts for XLM-R, "
        "accented Latin for DeBERTa) scored below every learnt piece, which an English-like "
        "corpus never produces — as with the other languages' pieces of the real XLM-R. The "
        "kept fractions are therefore **indicative**: real hub tokenizers on real CoNLL-03 "
        "give similar but not identical numbers (real XLM-R on CoNLL-03 keeps ~17k ids)."
    )
    add(
        "- **Models**: the real dimensions from locally written configs (12 layers, 768 "
        "hidden, real vocabulary rows), random weights, instantiated for real (no meta device) "
        "with the pretraining head of the family: masked LM for the encoders, causal LM for "
        "GPT-2, conditional generation (tied, v1.0-style) for T5.\n"
    )

    add("## Targets\n")
    rows = []
    floor = vc.get("apply_revert", {}).get("floor_s")
    if "apply_revert" in vc:
        ar = vc["apply_revert"]
        both, both_med = ar["model+tokenizer"]["best_total_s"], ar["model+tokenizer"]["total_s"]
        model_part, model_med = ar["model"]["best_total_s"], ar["model"]["total_s"]
        floor, floor_med = ar["floor_best_s"], ar["floor_s"]
        if has_ts:
            tar = ts["apply_revert"]
            ts_both = tar["model+tokenizer"]["best_total_s"]
            ts_med = tar["model+tokenizer"]["total_s"]
            speed = ts_both / both
            rows.append(
                [
                    "apply + revert of model and tokenizer >= 10x faster than the predecessor",
                    f"best {ms(both)} vs {ms(ts_both)}: **{speed:.1f}x** (medians "
                    f"{ms(both_med)} vs {ms(ts_med)}: {ts_med / both_med:.1f}x)",
                    "met" if speed >= 10 else "**missed**",
                ]
            )
        rows.append(
            [
                "model part within 1.5x of the floor (one `index_select` + one `index_copy_`)",
                f"best {ms(model_part)} vs floor {ms(floor)}: **{model_part / floor:.2f}x** "
                f"(medians {ms(model_med)} vs {ms(floor_med)}: {model_med / floor_med:.2f}x)",
                "met" if model_part <= 1.5 * floor else "**missed**",
            ]
        )
    if "memory" in vc:
        mem = vc["memory"]
        p_cut = 1 - mem["reduced"]["params"] / mem["full"]["params"]
        s_cut = 1 - mem["reduced"]["adam_state_bytes"] / mem["full"]["adam_state_bytes"]
        rows.append(
            [
                "Adam state shrinks by the same ratio as the parameters",
                f"parameters -{p_cut:.1%}, Adam state -{s_cut:.1%}",
                "met" if abs(p_cut - s_cut) < 0.005 else "**missed**",
            ]
        )
    if "checks" in vc:
        c = vc["checks"]["optimizer_after_restore"]
        rows.append(
            [
                "after revert the optimizer holds the restored parameter and can step",
                c["detail"],
                "met" if c["pass"] else "**missed**",
            ]
        )
    add(table(["target", "measured", "status"], rows) + "\n")

    core = results["core"]
    add("## Core: `vocabcore.VocabPlan` (pure Python)\n")
    add(
        f"Vocabulary {core['vocab_size']:,}, {core['kept']:,} kept ids, plan JSON "
        f"{core['json_bytes']:,} bytes; best and median of {core['repeats']} runs.\n"
    )
    add(
        table(
            ["operation", "best", "median"],
            [[r["op"], ms(r["best_s"]), ms(r["median_s"])] for r in core["rows"]],
        )
        + "\n"
    )

    imp = results["impact"]
    add("## Impact per model family\n")
    add(
        f"A plan built with `plan_from_texts` from the {imp['n_texts']:,}-sentence training set, "
        "applied with `apply_plan(plan, model=..., tokenizer=...)`, counted, reverted. "
        "*Used* is the number of distinct ids the texts produce; *kept* adds what the plan "
        "needs on top (special and added tokens, byte-level alphabet, BPE merge closure, the "
        "Unigram fallback piece). Adam keeps two fp32 tensors per trainable parameter, "
        "so its state shrinks exactly like the trainable parameters.\n"
    )
    add(
        table(
            [
                "family",
                "tokenizer",
                "embedding rows",
                "used",
                "kept",
                "kept %",
                "parameters",
                "while reduced",
                "removed",
                "Adam state",
                "while reduced",
                "removed",
            ],
            [
                [
                    r["label"],
                    f"{r['tokenizer_size']:,}",
                    f"{r['embedding_rows']:,}",
                    f"{r['used_by_texts']:,}",
                    f"{r['kept']:,}",
                    f"{r['kept_pct']:.1f}%",
                    mparams(r["params_full"]),
                    mparams(r["params_reduced"]),
                    f"**{r['params_removed_pct']:.1f}%**",
                    mb(r["adam_bytes_full"]),
                    mb(r["adam_bytes_reduced"]),
                    f"{r['adam_removed_pct']:.1f}%",
                ]
                for r in imp["rows"]
            ],
        )
    )
    add("")
    warned = [(r["family"], w) for r in imp["rows"] for w in r["warnings"]]
    if warned:
        add("Warnings raised by `apply_plan`: " + "; ".join(f"{f}: {w}" for f, w in warned) + "\n")
    if "params_full_vs_reduced.png" in images:
        add("![parameters full vs reduced](img/params_full_vs_reduced.png)\n")

    add(f"## Side by side with {TSTV}\n")
    add(
        "One run, this machine, one library after the other, each in its own process: the "
        "same 250,002-piece XLM-R-style Unigram tokenizer files (loaded with `AutoTokenizer`), "
        "the same texts, the same XLM-R-base config (token classification, 9 labels). "
        "Five timed rounds after one warm-up round; the best round is the headline (the "
        "machine is shared with other jobs, so medians carry their noise) and the median is "
        "shown beside it. For the predecessor, *apply* is "
        "`reduce_embedding` + `reduce_tokenizer` and *revert* is `recreate_embedding` + "
        "`recreate_tokenizer` — what `reduce_train_vocab` does around training, without the "
        "counting; vocabcore is `apply_plan` + `revert_plan`.\n"
    )
    if not has_ts:
        add(f"*{TSTV} was not run: {ts.get('skipped') or ts.get('error', '')[:300]}*\n")

    def cols(key: str, f: Any) -> list[str]:
        return [f(vc), f(ts) if has_ts else "-"]

    add("### Counting (texts → kept ids)\n")
    add(
        table(
            ["", "vocabcore", TSTV],
            [
                ["API", "`plan_from_texts(tok, texts)`", "`get_token_stats(tok, texts)`"],
                [
                    "floor: bare batched `tokenizer(texts, is_split_into_words=True)`",
                    *cols("", lambda r: ms(r["count"]["floor_s"])),
                ],
                ["counting", *cols("", lambda r: ms(r["count"]["count_s"]))],
                [
                    "counting / floor",
                    *cols("", lambda r: ratio(r["count"]["count_s"], r["count"]["floor_s"])),
                ],
                ["kept ids", *cols("", lambda r: f"{r['count']['kept']:,}")],
            ],
        )
        + "\n"
    )
    if has_ts:
        add(
            f"Kept sets: {sbs['kept_both']:,} ids in both; only vocabcore: "
            f"{sbs['kept_only_vocabcore'][:10]}; only the predecessor: "
            f"{sbs['kept_only_tstv'][:10]}. (vocabcore also keeps every added token and the "
            "Unigram fallback piece.)\n"
        )

    add("### Reduce + restore (apply + revert), no counting\n")
    ar_rows = []
    for k, label in (
        ("model+tokenizer", "model + tokenizer"),
        ("model", "model only"),
        ("tokenizer", "tokenizer only"),
    ):

        def cell(r: dict[str, Any], k: str = k) -> str:
            d = r["apply_revert"][k]
            return (
                f"{ms(d.get('best_total_s'))} / {ms(d['total_s'])} "
                f"({ms(d['apply_s'])} + {ms(d['revert_s'])})"
            )

        ar_rows.append(
            [
                label,
                *cols("", cell),
                ratio(
                    ts["apply_revert"][k].get("best_total_s"),
                    vc["apply_revert"][k].get("best_total_s"),
                )
                if has_ts
                else "-",
            ]
        )
    ar_rows.append(
        [
            "first round (imports, caches), model + tokenizer",
            *cols("", lambda r: ms(r["apply_revert"]["model+tokenizer"]["first_total_s"])),
            "",
        ]
    )
    ar_rows.append(
        [
            "floor: one `index_select` of the kept rows + one `index_copy_` back",
            *cols(
                "",
                lambda r: (
                    f"{ms(r['apply_revert'].get('floor_best_s'))} / "
                    f"{ms(r['apply_revert']['floor_s'])}"
                ),
            ),
            "",
        ]
    )
    ar_rows.append(
        [
            "model part / floor",
            *cols(
                "",
                lambda r: ratio(
                    r["apply_revert"]["model"].get("best_total_s"),
                    r["apply_revert"].get("floor_best_s"),
                ),
            ),
            "",
        ]
    )
    add(
        table(
            [
                "best / median of the rounds (median apply + median revert)",
                "vocabcore",
                TSTV,
                "vocabcore faster by (best)",
            ],
            ar_rows,
        )
        + "\n"
    )
    if "apply_revert_vs_predecessor.png" in images:
        add("![apply + revert vs predecessor](img/apply_revert_vs_predecessor.png)\n")

    add("### Parameters and Adam state during training\n")
    add(
        "Token-classification model, Adam created after reducing, one step taken; "
        "state bytes are the optimizer's per-parameter tensors.\n"
    )
    mem_rows = []
    for key, label in (
        ("params", "parameters"),
        ("trainable", "trainable parameters"),
        ("adam_state_bytes", "Adam state"),
        ("embedding_rows", "embedding rows"),
    ):
        fmt = mb if key == "adam_state_bytes" else (lambda n: f"{n:,}")
        mem_rows.append(
            [
                label,
                fmt(vc["memory"]["full"][key]),
                *cols("", lambda r, key=key, fmt=fmt: fmt(r["memory"]["reduced"][key])),
            ]
        )
    add(table(["", "full vocabulary", "reduced: vocabcore", f"reduced: {TSTV}"], mem_rows) + "\n")
    add(
        f"Peak RSS of the whole worker process (all measurements and checks): vocabcore "
        f"{vc['rss_peak_gib']:.1f} GiB"
        + (f", {TSTV} {ts['rss_peak_gib']:.1f} GiB." if has_ts else ".")
        + "\n"
    )

    add("### Correctness on the same inputs\n")
    names = {
        "tied_head_forward": "tied-head MLM: forward after reduce gives the kept ids' logits, "
        "head still tied",
        "round_trip_bit_exact": "round trip with no training: `state_dict` bit-exact, config "
        "and tie restored",
        "trained_rows_restored": "after a training step: trained rows written back, others "
        "untouched",
        "added_special_token_intact": "added special token (unused by the texts) intact after "
        "restore: `added_tokens_decoder`, saved files, encodings",
        "added_token_intact": "added non-special token (unused by the texts), same checks",
        "optimizer_after_restore": "optimizer made before reduce: after restore it holds the "
        "restored parameter and can step",
        "tokenizer_round_trip": "reduced tokenizer encodes to the remapped ids; full encodings "
        "after restore",
    }

    def verdict(r: dict[str, Any], k: str) -> str:
        c = r.get("checks", {}).get(k)
        if c is None:
            return "-"
        return ("pass" if c["pass"] else "**FAIL**") + f" <br><sub>{c['detail']}</sub>"

    add(
        table(
            ["check", "vocabcore", TSTV],
            [
                [label, verdict(vc, k), verdict(ts, k) if has_ts else "-"]
                for k, label in names.items()
            ],
        )
        + "\n"
    )

    floors = sorted(HERE.glob("results-floors-*.json"))
    if floors:
        import floors as floors_bench

        add(floors_bench.render([json.loads(p.read_text()) for p in floors]))
    else:
        add("## Floors and the predecessor, under both transformers majors\n")
        add(
            "Not measured yet. `python benchmarks/floors.py --out "
            "benchmarks/results-floors-MAJOR.json`, run once with transformers 5 and once with "
            "transformers 4.57, writes the figures this section shows: plan build against the "
            "backend's `encode_batch_fast`, apply + revert split into the tokenizer part (against "
            "one `to_str` + one `from_str`) and the model part (against one `index_select` + one "
            "`index_copy_`), and the step time of a reduced model against the same model reduced "
            "by hand, each beside the predecessor.\n"
        )

    st = results["steps"]
    add("## Training step time, full vs reduced (vocabcore)\n")
    add(
        f"XLM-R-base, {st['kept']:,} of {st['vocab_size']:,} ids kept, AdamW, batch "
        f"{st['batch']} sentences ≤ {st['max_length']} tokens, {st['threads']} CPU thread(s), "
        "median of the timed steps after one warm-up (forward + backward + step).\n"
    )
    srows = []
    for task in dict.fromkeys(r["task"] for r in st["rows"]):
        f = next(r for r in st["rows"] if r["task"] == task and r["mode"] == "full")
        rd = next(r for r in st["rows"] if r["task"] == task and r["mode"] == "reduced")
        srows.append(
            [
                task,
                ms(f["step_s"]),
                ms(rd["step_s"]),
                f"**{f['step_s'] / rd['step_s']:.2f}x**",
                mparams(f["params"]),
                mparams(rd["params"]),
                mb(f["adam_state_bytes"]),
                mb(rd["adam_state_bytes"]),
            ]
        )
    add(
        table(
            [
                "task",
                "full",
                "reduced",
                "speed-up",
                "params full",
                "params reduced",
                "AdamW state full",
                "reduced",
            ],
            srows,
        )
        + "\n"
    )
    if "step_time_full_vs_reduced.png" in images:
        add("![step time full vs reduced](img/step_time_full_vs_reduced.png)\n")

    add("## Reproduce\n")
    add(
        "```bash\n"
        "# the predecessor, in its own venv (torch first, pinned, so pip does not fetch CUDA)\n"
        "python3 -m venv .bench-envs/tstv\n"
        ".bench-envs/tstv/bin/pip install torch==2.13.0\n"
        ".bench-envs/tstv/bin/pip install 'transformer-smaller-training-vocab==0.4.*' \\\n"
        "    'transformers==4.57.*' sentencepiece protobuf\n"
        "# everything else runs in vocabcore's env (pip install -e '.[bench]')\n"
        f"{command}          # or: nox -s bench\n"
        "# floors and predecessor under one transformers major (run once per major)\n"
        "python benchmarks/floors.py --out benchmarks/results-floors-5.json\n"
        "python benchmarks/run_all.py --quick   # CI smoke run, < 2 min, writes nothing here\n"
        "```\n"
    )
    add(
        "Tokenizers are built once and cached in `~/.cache/vocabcore-bench` "
        "(`VOCABCORE_BENCH_CACHE` moves it). The raw numbers of this run are in "
        "[`benchmarks/results.json`](../benchmarks/results.json).\n"
    )
    notes_file = HERE / "notes.md"
    notes = notes_file.read_text() if notes_file.exists() else ""
    if notes:
        add("## Notes\n")
        add(notes)
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="CI smoke run (< 2 min)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument(
        "--out",
        type=Path,
        help="where results.json goes (default: benchmarks/ "
        "in full mode, a temporary directory with --quick)",
    )
    ap.add_argument("--docs", type=Path, default=ROOT / "docs")
    ap.add_argument(
        "--only-render",
        type=Path,
        metavar="RESULTS_JSON",
        help="re-render docs from a results.json without measuring",
    )
    ap.add_argument(
        "--rerun",
        choices=("core", "impact", "side_by_side", "steps"),
        help="measure one section again into the existing benchmarks/results.json and re-render",
    )
    args = ap.parse_args()
    command = "python benchmarks/run_all.py" + (
        f" --threads {args.threads}" if args.threads != 1 else ""
    )
    if args.only_render:
        results = json.loads(args.only_render.read_text())
    elif args.rerun:
        import tempfile

        results = json.loads((HERE / "results.json").read_text())
        work = Path(tempfile.mkdtemp(prefix="vocabcore-bench-"))
        measure = {
            "core": lambda: bench_core.run(False),
            "impact": lambda: impact.run(False, args.threads),
            "side_by_side": lambda: side_by_side.run(False, args.threads, work),
            "steps": lambda: steps.run(False, args.threads),
        }
        results[args.rerun] = measure[args.rerun]()
        now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        env = machine()
        results.setdefault("rerun", {})[args.rerun] = {
            "date": now,
            **{k: env.get(k) for k in ("python", "torch", "transformers", "git")},
        }
        (HERE / "results.json").write_text(json.dumps(results, indent=1))
    else:
        t0 = time.perf_counter()
        import tempfile

        work = Path(tempfile.mkdtemp(prefix="vocabcore-bench-"))
        results = {
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "quick": args.quick,
            "threads": args.threads,
            "machine": machine(),
        }
        print("== core", file=sys.stderr)
        results["core"] = bench_core.run(args.quick)
        print("== impact", file=sys.stderr)
        results["impact"] = impact.run(args.quick, args.threads)
        print("== side by side", file=sys.stderr)
        results["side_by_side"] = side_by_side.run(args.quick, args.threads, work)
        print("== step time", file=sys.stderr)
        results["steps"] = steps.run(args.quick, args.threads)
        results["elapsed_s"] = time.perf_counter() - t0
        out = args.out or (work if args.quick else HERE)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(results, indent=1))
        print(f"results: {out / 'results.json'}", file=sys.stderr)
    if results["quick"]:
        sbs = results["side_by_side"]
        failed = [
            f"{lib}: {sbs[lib].get('error')}"
            for lib in ("vocabcore", "tstv")
            if "error" in sbs[lib]
        ]
        print(
            json.dumps(
                {
                    "elapsed_s": round(results["elapsed_s"], 1),
                    "impact_kept_pct": {
                        r["family"]: round(r["kept_pct"], 1) for r in results["impact"]["rows"]
                    },
                    "checks": {
                        lib: {k: v["pass"] for k, v in sbs[lib].get("checks", {}).items()}
                        for lib in ("vocabcore", "tstv")
                    },
                },
                indent=1,
            )
        )
        if failed:
            sys.exit("a benchmark worker failed: " + "; ".join(failed))
        return
    images = charts(results, args.docs / "img")
    (args.docs / "benchmarks.md").write_text(render(results, command, images))
    print(f"wrote {args.docs / 'benchmarks.md'} and {images}", file=sys.stderr)


if __name__ == "__main__":
    main()
