"""Write docs/troubleshooting.md: every VocabError/PlanMismatchError message in src/, by module.

Run: python docs/tools/gen_troubleshooting.py  (tests/test_docs.py checks it is current)
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "troubleshooting.md"
ERRORS = {"VocabError", "PlanMismatchError"}

HEADER = """# Troubleshooting

Every error vocabcore raises is a `vocabcore.VocabError` (a `ValueError`); a plan that meets
a tokenizer or model of another vocabulary raises its subclass `PlanMismatchError`. Each
message names what is wrong and how to fix it, and nothing has been changed when it is raised:
apply and revert validate everything before they touch the model, tokenizer, config or
optimizer. The CLI prints the message on one line and exits with status 2 (`--debug` shows the
traceback).

Common cases:

| you see | why | fix |
|---|---|---|
| `PlanMismatchError: ... fingerprint ...` | the plan was built for another tokenizer (another vocabulary, or tokens added since) | build the plan from this tokenizer, or load the tokenizer the plan was built for |
| `PlanMismatchError: ... vocabulary of N tokens ...` | `len(tokenizer)` or the model's embedding rows differ from `plan.vocab_size` | same as above; embeddings with *more* rows than the tokenizer are fine |
| `... already has a plan applied` | `apply_plan` twice on the same objects | `revert_plan` first, or compose the plans with `plan.then(...)` |
| `... already reverted` | `revert_plan` twice | call it once per `apply_plan` |
| `... not closed under ... merges` | a hand-made plan for a BPE tokenizer lacks intermediate tokens | `fast_tokenizer.close_plan(plan, tok)` / `slow_tokenizer.close_plan(plan, tok)`, or build with `plan_from_texts` |
| `... drops ... special ...` / `... pad_token_id ...` | the plan drops a token the tokenizer or config needs | keep it: `plan_from_texts(..., keep=[...])` keeps special and added tokens for you |
| `... changed since ...` on revert | something else changed the object while reduced (tokens added, embeddings resized) | undo that change, then revert |

## Every message, by module

Generated from the source by `docs/tools/gen_troubleshooting.py`; `{...}` stands for a value
filled in at run time.
"""


def _text(node: ast.expr) -> str:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{...}" for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _text(node.left) + _text(node.right)
    return "{...}"


def messages(path: Path) -> list[tuple[str, str]]:
    """(error class, message) for every raise of a vocabcore error in ``path``."""
    found: list[tuple[str, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            func = node.exc.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if name in ERRORS and node.exc.args:
                found.append((name, " ".join(_text(node.exc.args[0]).split())))
    return found


def render() -> str:
    """The whole page."""
    parts = [HEADER]
    for path in sorted((ROOT / "src").rglob("*.py")):
        found = messages(path)
        if not found:
            continue
        module = ".".join(path.relative_to(ROOT / "src").with_suffix("").parts)
        parts.append(f"\n### `{module}`\n\n| error | message |\n|---|---|\n")
        seen: set[tuple[str, str]] = set()
        for name, text in found:
            if (name, text) in seen:
                continue
            seen.add((name, text))
            cell = text.replace("|", "\\|")
            parts.append(f"| `{name}` | {cell} |\n")
    return "".join(parts)


if __name__ == "__main__":
    OUT.write_text(render(), encoding="utf-8")
    sys.stdout.write(f"wrote {OUT.relative_to(ROOT)}\n")
