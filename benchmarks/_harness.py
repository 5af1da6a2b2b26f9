"""What the benchmark scripts share: paths, environment, timing, formatting, JSON, workers, plots.

Only the standard library is imported here (the predecessor's venv imports this module too);
torch, transformers and matplotlib are imported inside the functions that need them.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TSTV = "transformer-smaller-training-vocab"
TSTV_PYTHON = ROOT / ".bench-envs" / "tstv" / "bin" / "python"
GIB = 1024**3


def setup(*, src: bool = True, quiet: bool = False, tokenizer_threads: bool = False) -> None:
    """Offline hub; ``benchmarks/`` (and ``src/``) importable.

    Tokenizers run on one thread unless ``tokenizer_threads``; ``quiet`` silences
    transformers' warnings.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not tokenizer_threads:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if quiet:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    for path in (HERE, ROOT / "src") if src else (HERE,):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))


# -- machine and environment --------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """Platform, CPU, RAM, library versions and the git revision of this run."""
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


def runtime_versions() -> dict[str, str]:
    """Python, torch and transformers versions of this process, tokenizers' where importable."""
    import torch
    import transformers

    out = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    try:
        import tokenizers

        out["tokenizers"] = tokenizers.__version__
    except ImportError:
        pass
    return out


# -- timing -------------------------------------------------------------------------------------


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds one call of ``fn`` took, and what it returned."""
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def median(xs: Sequence[float]) -> float:
    """The median, NaN for no values."""
    return statistics.median(xs) if xs else float("nan")


def best_and_median(fn: Callable[[], Any], repeats: int) -> tuple[float, float, Any]:
    """Best and median seconds of ``repeats`` calls, and the last call's result."""
    times, out = [], None
    for _ in range(repeats):
        seconds, out = timed(fn)
        times.append(seconds)
    return min(times), statistics.median(times), out


def best_pair(a: Callable[[], Any], b: Callable[[], Any], rounds: int) -> tuple[float, float]:
    """Best seconds of ``a`` and of ``b`` over alternating rounds (one warm-up each)."""
    a()
    b()
    ta, tb = [], []
    for _ in range(rounds):
        ta.append(timed(a)[0])
        tb.append(timed(b)[0])
    return min(ta), min(tb)


# -- formatting ---------------------------------------------------------------------------------


def ms(s: float | None) -> str:
    """Seconds as ``12.3 ms`` below one second, ``1.23 s`` above; ``-`` for none."""
    if s is None:
        return "-"
    return f"{s * 1e3:,.1f} ms" if s < 1 else f"{s:,.2f} s"


def mb(b: float) -> str:
    """Bytes as whole MiB."""
    return f"{b / 2**20:,.0f} MiB"


def gib(n: float) -> str:
    """Bytes as GiB with two decimals, no unit."""
    return f"{n / GIB:.2f}"


def mparams(n: float) -> str:
    """A parameter count in millions."""
    return f"{n / 1e6:,.1f} M"


def ratio(a: float | None, b: float | None) -> str:
    """``a / b`` as ``1.23x`` (one decimal from 10x); ``-`` when either is missing or zero."""
    if not a or not b:
        return "-"
    return f"{a / b:,.2f}x" if a / b < 10 else f"{a / b:,.1f}x"


def times(a: float | None, b: float | None) -> str:
    """``a / b`` as ``1.23x`` (always two decimals); ``-`` when either is missing or zero."""
    return "-" if not a or not b else f"{a / b:,.2f}x"


def table(header: list[str], rows: list[list[Any]]) -> str:
    """A markdown table (no trailing newline)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def met(ok: bool) -> str:
    """A target's status cell."""
    return "met" if ok else "**missed**"


# -- JSON results -------------------------------------------------------------------------------


def read_json(path: str | Path) -> Any:
    """The JSON document in ``path``."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_json(
    path: str | Path,
    data: Any,
    indent: int | None = 1,
    newline: bool = False,
    ascii_only: bool = True,
) -> None:
    """Write ``data`` as indented JSON (``newline``: end the file with one)."""
    text = json.dumps(data, indent=indent, ensure_ascii=ascii_only)
    Path(path).write_text(text + ("\n" if newline else ""), encoding="utf-8")


def last_json_line(text: str) -> Any:
    """The JSON document on the last line of a worker's stdout."""
    return json.loads(text.strip().splitlines()[-1])


# -- workers: one measurement per process, possibly in another venv ----------------------------


def worker_env(*paths: Path, **extra: str) -> dict[str, str]:
    """This environment, offline, one tokenizer thread; ``paths`` first on PYTHONPATH."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", **extra)
    if paths:
        env["PYTHONPATH"] = os.pathsep.join([*map(str, paths), env.get("PYTHONPATH", "")])
    return env


def run_python(
    args: Sequence[str | Path],
    python: str | Path = sys.executable,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``python ARGS``, capturing its output as text; never raises on its exit status."""
    return subprocess.run(
        [str(python), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def worker_json(
    args: Sequence[str | Path],
    python: str | Path = sys.executable,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
    echo: int = 4000,
) -> dict[str, Any]:
    """A worker's JSON result, ``{"error": ...}`` if it failed; echoes its stderr's tail."""
    proc = run_python(args, python, env if env is not None else worker_env(), timeout)
    sys.stderr.write(proc.stderr[-echo:])
    if proc.returncode != 0:
        return {"error": f"worker exited {proc.returncode}: {proc.stderr[-1500:]}"}
    result: dict[str, Any] = last_json_line(proc.stdout)
    return result


def child_json(
    args: Sequence[str | Path], env: dict[str, str] | None = None, what: str = ""
) -> Any:
    """A child process's JSON result (its stdout's last line); raises if it failed."""
    proc = run_python(args, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{what or list(map(str, args))} failed:\n{proc.stderr[-4000:]}")
    return last_json_line(proc.stdout)


# -- torch helpers ------------------------------------------------------------------------------


def state_bytes(optimizer: Any) -> int:
    """Bytes of an optimizer's per-parameter tensors (step counters excluded)."""
    import torch

    return sum(
        v.numel() * v.element_size()
        for st in optimizer.state.values()
        for v in st.values()
        if isinstance(v, torch.Tensor) and v.dim() > 0
    )


def model_from_config(model_type: str, cfg: dict[str, Any], head: str, seed: int = 0) -> Any:
    """A randomly initialised model (seed ``seed``); ``head``: tc, mlm, causal or seq2seq."""
    import torch
    import transformers

    config = transformers.AutoConfig.for_model(model_type, **cfg)
    cls = {
        "tc": transformers.AutoModelForTokenClassification,
        "mlm": transformers.AutoModelForMaskedLM,
        "causal": transformers.AutoModelForCausalLM,
        "seq2seq": transformers.AutoModelForSeq2SeqLM,
    }[head]
    torch.manual_seed(seed)
    return cls.from_config(config)


def encode_words(tok: Any, words: list[list[str]], max_length: int) -> Any:
    """A padded, truncated tensor batch of pre-split sentences."""
    return tok(
        words,
        is_split_into_words=True,
        truncation=True,
        max_length=max_length,
        padding=True,
        return_tensors="pt",
    )


def tc_labels(enc: Any) -> Any:
    """Token-classification labels for a batch: ``id % 9`` at real tokens, -100 at padding."""
    import torch

    return torch.where(enc["attention_mask"].bool(), enc["input_ids"] % 9, -100)


# -- plots --------------------------------------------------------------------------------------


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path, dpi: int = 110) -> str:
    """Lay out, write (creating the folder) and close a figure; returns the file's name."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path.name
