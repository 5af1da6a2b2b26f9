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
import datetime as dt
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _harness as h

h.setup()

import bench_core  # noqa: E402
import impact  # noqa: E402
import side_by_side  # noqa: E402
import steps  # noqa: E402

HERE, ROOT, TSTV = h.HERE, h.ROOT, h.TSTV
ms, mb, mparams, ratio, table = h.ms, h.mb, h.mparams, h.ratio, h.table
FULL_COLOR, REDUCED_COLOR, TSTV_COLOR = "#9aa5b1", "#2f7ed8", "#d9822b"


# -- charts -----------------------------------------------------------------------------------


def chart_names(results: dict[str, Any]) -> list[str]:
    """The charts a results.json gives: the predecessor's only where it ran."""
    names = ["params_full_vs_reduced.png", "step_time_full_vs_reduced.png"]
    sbs = results["side_by_side"]
    if "apply_revert" in sbs["vocabcore"] and "apply_revert" in sbs["tstv"]:
        names.append("apply_revert_vs_predecessor.png")
    return names


def charts(results: dict[str, Any], img: Path) -> list[str]:
    """Draw the page's charts into ``img``; returns the names of the files written."""
    draw = {
        "params_full_vs_reduced.png": lambda: _params_chart(results["impact"], img),
        "step_time_full_vs_reduced.png": lambda: _steps_chart(results["steps"], img),
        "apply_revert_vs_predecessor.png": lambda: _apply_revert_chart(
            results["side_by_side"], img
        ),
    }
    return [draw[name]() for name in chart_names(results)]


def _full_and_reduced(rows: list[dict[str, Any]], task: str) -> tuple[dict, dict]:
    """The full-vocabulary and the reduced row of one task of the step-time table."""
    full = next(r for r in rows if r["task"] == task and r["mode"] == "full")
    reduced = next(r for r in rows if r["task"] == task and r["mode"] == "reduced")
    return full, reduced


def _params_chart(imp: dict[str, Any], img: Path) -> str:
    plt = h.pyplot()
    rows = imp["rows"]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    xs = range(len(rows))
    full = [r["params_full"] / 1e6 for r in rows]
    red = [r["params_reduced"] / 1e6 for r in rows]
    ax.bar([x - 0.2 for x in xs], full, 0.4, label="full vocabulary", color=FULL_COLOR)
    ax.bar([x + 0.2 for x in xs], red, 0.4, label="reduced (vocabcore)", color=REDUCED_COLOR)
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
    return h.save_figure(fig, img / "params_full_vs_reduced.png")


def _steps_chart(st: dict[str, Any], img: Path) -> str:
    plt = h.pyplot()
    tasks = list(dict.fromkeys(r["task"] for r in st["rows"]))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, task in enumerate(tasks):
        f, rd = _full_and_reduced(st["rows"], task)
        first = i == 0
        ax.bar(
            i - 0.2, f["step_s"], 0.4, color=FULL_COLOR, label="full vocabulary" if first else None
        )
        ax.bar(
            i + 0.2,
            rd["step_s"],
            0.4,
            color=REDUCED_COLOR,
            label="reduced (vocabcore)" if first else None,
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
        f"XLM-R-base step time, batch {st['batch']} x ≤32 tokens, {st['threads']} CPU thread(s)"
    )
    ax.legend()
    return h.save_figure(fig, img / "step_time_full_vs_reduced.png")


def _apply_revert_chart(sbs: dict[str, Any], img: Path) -> str:
    plt = h.pyplot()
    vc, ts = sbs["vocabcore"]["apply_revert"], sbs["tstv"]["apply_revert"]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, k in enumerate(["model+tokenizer", "model", "tokenizer"]):
        first = i == 0
        ax.bar(i - 0.2, ts[k]["total_s"], 0.4, color=TSTV_COLOR, label=TSTV if first else None)
        ax.bar(
            i + 0.2,
            vc[k]["total_s"],
            0.4,
            color=REDUCED_COLOR,
            label="vocabcore" if first else None,
        )
    ax.axhline(
        vc["floor_s"], color="k", ls="--", lw=1, label="floor: one index_select + index_copy_"
    )
    ax.set_yscale("log")
    ax.set_xticks(range(3), ["model + tokenizer", "model", "tokenizer"])
    ax.set_ylabel("apply + revert, seconds (log scale)")
    ax.set_title("Reduce + restore, XLM-R-base (250,002 x 768), 250k Unigram tokenizer")
    ax.legend(fontsize=8)
    return h.save_figure(fig, img / "apply_revert_vs_predecessor.png")


# -- the page ---------------------------------------------------------------------------------


def render(results: dict[str, Any], command: str, images: list[str]) -> str:
    """docs/benchmarks.md from a results.json (and the floors results beside it)."""
    sbs = results["side_by_side"]
    out = [
        *_intro(results, command),
        *_measured_on(sbs),
        *_targets(sbs),
        *_core(results["core"]),
        *_impact(results["impact"], images),
        *_side_by_side(sbs),
        *_counting(sbs),
        *_apply_revert(sbs, images),
        *_memory(sbs),
        *_correctness(sbs),
        _floors(),
        *_steps(results["steps"], images),
        *_reproduce(command),
        *_notes(),
    ]
    return "\n".join(out) + "\n"


def _has_tstv(sbs: dict[str, Any]) -> bool:
    return "apply_revert" in sbs["tstv"]


def _both(sbs: dict[str, Any], cell: Callable[[dict[str, Any]], str]) -> list[str]:
    """One cell per library: vocabcore's, then the predecessor's (``-`` when it did not run)."""
    return [cell(sbs["vocabcore"]), cell(sbs["tstv"]) if _has_tstv(sbs) else "-"]


def _intro(results: dict[str, Any], command: str) -> list[str]:
    out = [
        "# Benchmarks\n",
        f"Generated {results['date']} by `{command}` ({results['elapsed_s'] / 60:.1f} min). "
        "Every table and chart on this page comes from that one run; rerun it to refresh them. "
        "Ratios are what matter; absolute times belong to this machine:\n",
    ]
    for section, when in sorted((results.get("rerun") or {}).items()):
        env = ""
        if isinstance(when, dict):
            env = (
                f" with Python {when['python']}, torch {when['torch']}, transformers "
                f"{when['transformers']}, vocabcore at git `{when.get('git', '?')}`"
            )
            when = when["date"]
        out.append(
            f"Section `{section}` was measured again on {when}{env} "
            f"(`python benchmarks/run_all.py --rerun {section}`), after a change to the code it "
            "measures; the other sections are from the run above.\n"
        )
    return out + _environment(results)


def _environment(results: dict[str, Any]) -> list[str]:
    m, ts = results["machine"], results["side_by_side"]["tstv"]
    out = [
        f"- CPU: {m.get('cpu', m['machine'])}, {m['cpu_count']} cores visible, "
        f"{m.get('ram_gib', '?')} GiB RAM, no GPU (`torch.cuda.is_available()` = {m['cuda']}); "
        f"{m['platform']}",
        f"- torch threads: {results['threads']} per process (the machine is shared; both "
        "libraries get the same)",
        f"- vocabcore env: Python {m['python']}, torch {m['torch']}, transformers "
        f"{m['transformers']}, vocabcore at git `{m.get('git', '?')}` (plus uncommitted work)",
    ]
    if _has_tstv(results["side_by_side"]):
        out.append(
            f"- predecessor env: {TSTV} {ts['lib_version']}, Python {ts['python']}, torch "
            f"{ts['torch']}, transformers {ts['transformers']}, tokenizers {ts.get('tokenizers')}"
        )
    return [*out, "- GPU: no GPU figures yet; the scripts use the CPU only.\n"]


def _measured_on(sbs: dict[str, Any]) -> list[str]:
    return [
        "## What was measured on\n",
        f"- **Training set**: {sbs['n_texts']:,} generated CoNLL-2003-like pre-split sentences, "
        f"{sbs['n_words']:,} words (`benchmarks/_corpus.py`, fixed seed): the lower-cased words "
        "of CPython's `pydoc_data.topics` help texts plus pronounceable pseudo-words for names "
        "and rare words, Zipf-weighted, with capitalised entity-like words, numbers and "
        "punctuation.",
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
        "give similar but not identical numbers (real XLM-R on CoNLL-03 keeps ~17k ids).",
        "- **Models**: the real dimensions from locally written configs (12 layers, 768 "
        "hidden, real vocabulary rows), random weights, instantiated for real (no meta device) "
        "with the pretraining head of the family: masked LM for the encoders, causal LM for "
        "GPT-2, conditional generation (tied, v1.0-style) for T5.\n",
    ]


def _targets(sbs: dict[str, Any]) -> list[str]:
    vc = sbs["vocabcore"]
    rows = _apply_revert_targets(sbs) if "apply_revert" in vc else []
    if "memory" in vc:
        mem = vc["memory"]
        p_cut = 1 - mem["reduced"]["params"] / mem["full"]["params"]
        s_cut = 1 - mem["reduced"]["adam_state_bytes"] / mem["full"]["adam_state_bytes"]
        rows.append(
            [
                "Adam state shrinks by the same ratio as the parameters",
                f"parameters -{p_cut:.1%}, Adam state -{s_cut:.1%}",
                h.met(abs(p_cut - s_cut) < 0.005),
            ]
        )
    if "checks" in vc:
        c = vc["checks"]["optimizer_after_restore"]
        rows.append(
            [
                "after revert the optimizer holds the restored parameter and can step",
                c["detail"],
                h.met(c["pass"]),
            ]
        )
    return ["## Targets\n", table(["target", "measured", "status"], rows) + "\n"]


def _apply_revert_targets(sbs: dict[str, Any]) -> list[list[str]]:
    ar = sbs["vocabcore"]["apply_revert"]
    both, both_med = ar["model+tokenizer"]["best_total_s"], ar["model+tokenizer"]["total_s"]
    model_part, model_med = ar["model"]["best_total_s"], ar["model"]["total_s"]
    floor, floor_med = ar["floor_best_s"], ar["floor_s"]
    rows = []
    if _has_tstv(sbs):
        tar = sbs["tstv"]["apply_revert"]
        ts_both = tar["model+tokenizer"]["best_total_s"]
        ts_med = tar["model+tokenizer"]["total_s"]
        speed = ts_both / both
        rows.append(
            [
                "apply + revert of model and tokenizer >= 10x faster than the predecessor",
                f"best {ms(both)} vs {ms(ts_both)}: **{speed:.1f}x** (medians "
                f"{ms(both_med)} vs {ms(ts_med)}: {ts_med / both_med:.1f}x)",
                h.met(speed >= 10),
            ]
        )
    rows.append(
        [
            "model part within 1.5x of the floor (one `index_select` + one `index_copy_`)",
            f"best {ms(model_part)} vs floor {ms(floor)}: **{model_part / floor:.2f}x** "
            f"(medians {ms(model_med)} vs {ms(floor_med)}: {model_med / floor_med:.2f}x)",
            h.met(model_part <= 1.5 * floor),
        ]
    )
    return rows


def _core(core: dict[str, Any]) -> list[str]:
    return [
        "## Core: `vocabcore.VocabPlan` (pure Python)\n",
        f"Vocabulary {core['vocab_size']:,}, {core['kept']:,} kept ids, plan JSON "
        f"{core['json_bytes']:,} bytes; best and median of {core['repeats']} runs.\n",
        table(
            ["operation", "best", "median"],
            [[r["op"], ms(r["best_s"]), ms(r["median_s"])] for r in core["rows"]],
        )
        + "\n",
    ]


IMPACT_HEADER = [
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
]


def _impact_row(r: dict[str, Any]) -> list[str]:
    return [
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


def _impact(imp: dict[str, Any], images: list[str]) -> list[str]:
    out = [
        "## Impact per model family\n",
        f"A plan built with `plan_from_texts` from the {imp['n_texts']:,}-sentence training set, "
        "applied with `apply_plan(plan, model=..., tokenizer=...)`, counted, reverted. "
        "*Used* is the number of distinct ids the texts produce; *kept* adds what the plan "
        "needs on top (special and added tokens, byte-level alphabet, BPE merge closure, the "
        "Unigram fallback piece). Adam keeps two fp32 tensors per trainable parameter, "
        "so its state shrinks exactly like the trainable parameters.\n",
        table(IMPACT_HEADER, [_impact_row(r) for r in imp["rows"]]),
        "",
    ]
    warned = [(r["family"], w) for r in imp["rows"] for w in r["warnings"]]
    if warned:
        out.append(
            "Warnings raised by `apply_plan`: " + "; ".join(f"{f}: {w}" for f, w in warned) + "\n"
        )
    if "params_full_vs_reduced.png" in images:
        out.append("![parameters full vs reduced](img/params_full_vs_reduced.png)\n")
    return out


def _side_by_side(sbs: dict[str, Any]) -> list[str]:
    out = [
        f"## Side by side with {TSTV}\n",
        "One run, this machine, one library after the other, each in its own process: the "
        "same 250,002-piece XLM-R-style Unigram tokenizer files (loaded with `AutoTokenizer`), "
        "the same texts, the same XLM-R-base config (token classification, 9 labels). "
        "Five timed rounds after one warm-up round; the best round is the headline (the "
        "machine is shared with other jobs, so medians carry their noise) and the median is "
        "shown beside it. For the predecessor, *apply* is "
        "`reduce_embedding` + `reduce_tokenizer` and *revert* is `recreate_embedding` + "
        "`recreate_tokenizer` — what `reduce_train_vocab` does around training, without the "
        "counting; vocabcore is `apply_plan` + `revert_plan`.\n",
    ]
    if not _has_tstv(sbs):
        ts = sbs["tstv"]
        out.append(f"*{TSTV} was not run: {ts.get('skipped') or ts.get('error', '')[:300]}*\n")
    return out


def _counting(sbs: dict[str, Any]) -> list[str]:
    rows = [
        ["API", "`plan_from_texts(tok, texts)`", "`get_token_stats(tok, texts)`"],
        [
            "floor: bare batched `tokenizer(texts, is_split_into_words=True)`",
            *_both(sbs, lambda r: ms(r["count"]["floor_s"])),
        ],
        ["counting", *_both(sbs, lambda r: ms(r["count"]["count_s"]))],
        [
            "counting / floor",
            *_both(sbs, lambda r: ratio(r["count"]["count_s"], r["count"]["floor_s"])),
        ],
        ["kept ids", *_both(sbs, lambda r: f"{r['count']['kept']:,}")],
    ]
    out = ["### Counting (texts → kept ids)\n", table(["", "vocabcore", TSTV], rows) + "\n"]
    if _has_tstv(sbs):
        out.append(
            f"Kept sets: {sbs['kept_both']:,} ids in both; only vocabcore: "
            f"{sbs['kept_only_vocabcore'][:10]}; only the predecessor: "
            f"{sbs['kept_only_tstv'][:10]}. (vocabcore also keeps every added token and the "
            "Unigram fallback piece.)\n"
        )
    return out


APPLY_REVERT_PARTS = (
    ("model+tokenizer", "model + tokenizer"),
    ("model", "model only"),
    ("tokenizer", "tokenizer only"),
)


def _apply_revert_rows(sbs: dict[str, Any]) -> list[list[str]]:
    rows = []
    for k, label in APPLY_REVERT_PARTS:

        def cell(r: dict[str, Any], k: str = k) -> str:
            d = r["apply_revert"][k]
            return (
                f"{ms(d.get('best_total_s'))} / {ms(d['total_s'])} "
                f"({ms(d['apply_s'])} + {ms(d['revert_s'])})"
            )

        faster = "-"
        if _has_tstv(sbs):
            faster = ratio(
                sbs["tstv"]["apply_revert"][k].get("best_total_s"),
                sbs["vocabcore"]["apply_revert"][k].get("best_total_s"),
            )
        rows.append([label, *_both(sbs, cell), faster])
    return rows


def _apply_revert(sbs: dict[str, Any], images: list[str]) -> list[str]:
    rows = _apply_revert_rows(sbs)
    rows.append(
        [
            "first round (imports, caches), model + tokenizer",
            *_both(sbs, lambda r: ms(r["apply_revert"]["model+tokenizer"]["first_total_s"])),
            "",
        ]
    )
    rows.append(
        [
            "floor: one `index_select` of the kept rows + one `index_copy_` back",
            *_both(
                sbs,
                lambda r: (
                    f"{ms(r['apply_revert'].get('floor_best_s'))} / "
                    f"{ms(r['apply_revert']['floor_s'])}"
                ),
            ),
            "",
        ]
    )
    rows.append(
        [
            "model part / floor",
            *_both(
                sbs,
                lambda r: ratio(
                    r["apply_revert"]["model"].get("best_total_s"),
                    r["apply_revert"].get("floor_best_s"),
                ),
            ),
            "",
        ]
    )
    header = [
        "best / median of the rounds (median apply + median revert)",
        "vocabcore",
        TSTV,
        "vocabcore faster by (best)",
    ]
    out = ["### Reduce + restore (apply + revert), no counting\n", table(header, rows) + "\n"]
    if "apply_revert_vs_predecessor.png" in images:
        out.append("![apply + revert vs predecessor](img/apply_revert_vs_predecessor.png)\n")
    return out


MEMORY_ROWS = (
    ("params", "parameters"),
    ("trainable", "trainable parameters"),
    ("adam_state_bytes", "Adam state"),
    ("embedding_rows", "embedding rows"),
)


def _memory(sbs: dict[str, Any]) -> list[str]:
    vc, ts = sbs["vocabcore"], sbs["tstv"]
    rows = []
    for key, label in MEMORY_ROWS:
        fmt = mb if key == "adam_state_bytes" else (lambda n: f"{n:,}")
        rows.append(
            [
                label,
                fmt(vc["memory"]["full"][key]),
                *_both(sbs, lambda r, key=key, fmt=fmt: fmt(r["memory"]["reduced"][key])),
            ]
        )
    header = ["", "full vocabulary", "reduced: vocabcore", f"reduced: {TSTV}"]
    return [
        "### Parameters and Adam state during training\n",
        "Token-classification model, Adam created after reducing, one step taken; "
        "state bytes are the optimizer's per-parameter tensors.\n",
        table(header, rows) + "\n",
        f"Peak RSS of the whole worker process (all measurements and checks): vocabcore "
        f"{vc['rss_peak_gib']:.1f} GiB"
        + (f", {TSTV} {ts['rss_peak_gib']:.1f} GiB." if _has_tstv(sbs) else ".")
        + "\n",
    ]


CHECK_NAMES = {
    "tied_head_forward": "tied-head MLM: forward after reduce gives the kept ids' logits, "
    "head still tied",
    "round_trip_bit_exact": "round trip with no training: `state_dict` bit-exact, config "
    "and tie restored",
    "trained_rows_restored": "after a training step: trained rows written back, others untouched",
    "added_special_token_intact": "added special token (unused by the texts) intact after "
    "restore: `added_tokens_decoder`, saved files, encodings",
    "added_token_intact": "added non-special token (unused by the texts), same checks",
    "optimizer_after_restore": "optimizer made before reduce: after restore it holds the "
    "restored parameter and can step",
    "tokenizer_round_trip": "reduced tokenizer encodes to the remapped ids; full encodings "
    "after restore",
}


def _verdict(r: dict[str, Any], k: str) -> str:
    c = r.get("checks", {}).get(k)
    if c is None:
        return "-"
    return ("pass" if c["pass"] else "**FAIL**") + f" <br><sub>{c['detail']}</sub>"


def _correctness(sbs: dict[str, Any]) -> list[str]:
    rows = [[label, *_both(sbs, lambda r, k=k: _verdict(r, k))] for k, label in CHECK_NAMES.items()]
    return [
        "### Correctness on the same inputs\n",
        table(["check", "vocabcore", TSTV], rows) + "\n",
    ]


def _floors() -> str:
    paths = sorted(HERE.glob("results-floors-*.json"))
    if paths:
        import floors

        return floors.render([h.read_json(p) for p in paths])
    return (
        "## Floors and the predecessor, under both transformers majors\n"
        "\n"
        "Not measured yet. `python benchmarks/floors.py --out "
        "benchmarks/results-floors-MAJOR.json`, run once with transformers 5 and once with "
        "transformers 4.57, writes the figures this section shows: plan build against the "
        "backend's `encode_batch_fast`, apply + revert split into the tokenizer part (against "
        "one `to_str` + one `from_str`) and the model part (against one `index_select` + one "
        "`index_copy_`), and the step time of a reduced model against the same model reduced "
        "by hand, each beside the predecessor.\n"
    )


STEPS_HEADER = [
    "task",
    "full",
    "reduced",
    "speed-up",
    "params full",
    "params reduced",
    "AdamW state full",
    "reduced",
]


def _steps(st: dict[str, Any], images: list[str]) -> list[str]:
    rows = []
    for task in dict.fromkeys(r["task"] for r in st["rows"]):
        f, rd = _full_and_reduced(st["rows"], task)
        rows.append(
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
    out = [
        "## Training step time, full vs reduced (vocabcore)\n",
        f"XLM-R-base, {st['kept']:,} of {st['vocab_size']:,} ids kept, AdamW, batch "
        f"{st['batch']} sentences ≤ {st['max_length']} tokens, {st['threads']} CPU thread(s), "
        "median of the timed steps after one warm-up (forward + backward + step).\n",
        table(STEPS_HEADER, rows) + "\n",
    ]
    if "step_time_full_vs_reduced.png" in images:
        out.append("![step time full vs reduced](img/step_time_full_vs_reduced.png)\n")
    return out


def _reproduce(command: str) -> list[str]:
    return [
        "## Reproduce\n",
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
        "```\n",
        "Tokenizers are built once and cached in `~/.cache/vocabcore-bench` "
        "(`VOCABCORE_BENCH_CACHE` moves it). The raw numbers of this run are in "
        "[`benchmarks/results.json`](../benchmarks/results.json).\n",
    ]


def _notes() -> list[str]:
    notes_file = HERE / "notes.md"
    notes = notes_file.read_text() if notes_file.exists() else ""
    return ["## Notes\n", notes] if notes else []


# -- running ----------------------------------------------------------------------------------


SECTIONS = ("core", "impact", "side_by_side", "steps")


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _measure(section: str, quick: bool, threads: int, work: Path) -> dict[str, Any]:
    """One section's measurements."""
    if section == "core":
        return bench_core.run(quick)
    if section == "impact":
        return impact.run(quick, threads)
    if section == "side_by_side":
        return side_by_side.run(quick, threads, work)
    return steps.run(quick, threads)


def _rerun(section: str, threads: int) -> dict[str, Any]:
    """Measure one section again into benchmarks/results.json; the whole results."""
    results: dict[str, Any] = h.read_json(HERE / "results.json")
    work = Path(tempfile.mkdtemp(prefix="vocabcore-bench-"))
    results[section] = _measure(section, False, threads, work)
    env = h.machine()
    results.setdefault("rerun", {})[section] = {
        "date": _now(),
        **{k: env.get(k) for k in ("python", "torch", "transformers", "git")},
    }
    h.write_json(HERE / "results.json", results)
    return results


def _measure_all(quick: bool, threads: int, out: Path | None) -> dict[str, Any]:
    """Every section, one after the other; writes results.json to ``out``."""
    t0 = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="vocabcore-bench-"))
    results = {"date": _now(), "quick": quick, "threads": threads, "machine": h.machine()}
    for section, title in zip(
        SECTIONS, ("core", "impact", "side by side", "step time"), strict=True
    ):
        print(f"== {title}", file=sys.stderr)
        results[section] = _measure(section, quick, threads, work)
    results["elapsed_s"] = time.perf_counter() - t0
    out = out or (work if quick else HERE)
    out.mkdir(parents=True, exist_ok=True)
    h.write_json(out / "results.json", results)
    print(f"results: {out / 'results.json'}", file=sys.stderr)
    return results


def _quick_summary(results: dict[str, Any]) -> None:
    """Print what a smoke run shows; exit non-zero if a worker failed."""
    sbs = results["side_by_side"]
    libs = ("vocabcore", "tstv")
    failed = [f"{lib}: {sbs[lib].get('error')}" for lib in libs if "error" in sbs[lib]]
    summary = {
        "elapsed_s": round(results["elapsed_s"], 1),
        "impact_kept_pct": {
            r["family"]: round(r["kept_pct"], 1) for r in results["impact"]["rows"]
        },
        "checks": {
            lib: {k: v["pass"] for k, v in sbs[lib].get("checks", {}).items()} for lib in libs
        },
    }
    print(json.dumps(summary, indent=1))
    if failed:
        sys.exit("a benchmark worker failed: " + "; ".join(failed))


def _arguments() -> argparse.Namespace:
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
        choices=SECTIONS,
        help="measure one section again into the existing benchmarks/results.json and re-render",
    )
    return ap.parse_args()


def command_line(threads: int) -> str:
    """The command the page says it was generated by."""
    return "python benchmarks/run_all.py" + (f" --threads {threads}" if threads != 1 else "")


def main() -> None:
    args = _arguments()
    if args.only_render:
        results = h.read_json(args.only_render)
    elif args.rerun:
        results = _rerun(args.rerun, args.threads)
    else:
        results = _measure_all(args.quick, args.threads, args.out)
    if results["quick"]:
        _quick_summary(results)
        return
    images = charts(results, args.docs / "img")
    (args.docs / "benchmarks.md").write_text(render(results, command_line(args.threads), images))
    print(f"wrote {args.docs / 'benchmarks.md'} and {images}", file=sys.stderr)


if __name__ == "__main__":
    main()
