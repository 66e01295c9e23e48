"""Small Python programs as tasks: parsing what a model wrote, checking it, running it.

Everything a model writes is parsed with ``ast`` on the host (never executed there) and
run only in ``rolekit.sandbox``. Values travel as Python literals: a program's input is
the argument list of a call ``f(...)`` whose arguments are literals, its output the
``repr`` of what ``f`` returned, read back with ``ast.literal_eval``. The host evaluates
nothing but literals (``literal_eval`` on at most ``MAX_LITERAL`` characters).
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any, Sequence

from rolekit import sandbox

# Absolute Zero's banned words (azr_ppo_trainer.yaml) as modules and names, plus what a
# program needs to reach outside itself. Checked on the AST, so comments do not count.
BANNED_MODULES = frozenset({
    "logging", "random", "multiprocessing", "pebble", "subprocess", "threading", "datetime", "time", "hashlib",
    "hmac", "bcrypt", "calendar", "os", "sys", "socket", "shutil", "ctypes", "signal", "pathlib", "io",
    "importlib", "builtins", "secrets", "uuid", "asyncio", "concurrent", "pickle", "marshal", "gc", "inspect",
    "resource", "tempfile", "glob", "urllib", "http", "requests",
})
BANNED_NAMES = frozenset({
    "open", "input", "print", "exec", "eval", "compile", "__import__", "globals", "locals", "vars", "breakpoint",
    "exit", "quit", "help", "memoryview", "getattr", "setattr", "delattr", "id", "hash",
})
MAX_LITERAL = 400  # characters of a value read back on the host
TIMEOUT_S = 2.0  # wall-clock limit of one sandbox run of a task's program


def check_program(code: str) -> tuple[str | None, str]:
    """``(canonical program, "")`` or ``(None, reason)``.

    Keeps the top-level imports, function and class definitions (Absolute Zero drops
    what follows the snippet, e.g. a test call), requires a top-level ``def f`` with at
    least one parameter, and refuses banned modules and names (reason ``banned: NAME``).
    """
    tree = _parse_leading(code)
    if tree is None:
        return None, "syntax error"
    body = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef))]
    f = next((n for n in body if isinstance(n, ast.FunctionDef) and n.name == "f"), None)
    if f is None:
        return None, "no function f"
    if not (f.args.args or f.args.posonlyargs or f.args.vararg):
        return None, "f takes no input"
    for node in ast.walk(ast.Module(body=body, type_ignores=[])):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        elif isinstance(node, ast.Name):
            if node.id in BANNED_NAMES or node.id.startswith("__"):
                return None, f"banned: {node.id}"
            continue
        elif isinstance(node, ast.Attribute):
            if node.attr.startswith("__"):
                return None, f"banned: {node.attr}"
            continue
        else:
            continue
        for name in names:
            if name.split(".")[0] in BANNED_MODULES:
                return None, f"banned: {name}"
    return ast.unparse(ast.Module(body=body, type_ignores=[])), ""


def _parse_leading(code: str) -> ast.Module | None:
    """The module of ``code``, or of its longest run of leading lines that parses (prose a
    model wrote after its code is cut off, as Absolute Zero cuts what follows the snippet)."""
    lines = code.split("\n")
    for end in range(len(lines), 0, -1):
        try:
            tree = ast.parse("\n".join(lines[:end]))
        except (SyntaxError, ValueError, MemoryError, RecursionError):
            continue
        if tree.body:
            return tree
    return None


def literal(text: str) -> tuple[bool, Any]:
    """``(True, value)`` for a Python literal of at most ``MAX_LITERAL`` characters."""
    text = text.strip()
    if not text or len(text) > MAX_LITERAL:
        return False, None
    try:
        return True, ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False, None


def call_args(text: str) -> str | None:
    """The argument list of the first ``f(...)`` call in ``text`` whose arguments (positional or
    keyword) are all literals: ``"f(3, b='a') == 5"`` -> ``"3, b='a'"``; None when there is none."""
    start = text.find("f(")
    while start >= 0:
        if start == 0 or not (text[start - 1].isalnum() or text[start - 1] in "_."):
            for end in (i for i, c in enumerate(text[start:start + MAX_LITERAL + 2], start) if c == ")"):
                try:
                    call = ast.parse(text[start:end + 1], mode="eval").body
                except (SyntaxError, ValueError, MemoryError, RecursionError):
                    continue
                if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and (call.args or call.keywords):
                    values = [*call.args, *(k.value for k in call.keywords)]
                    if all(k.arg for k in call.keywords) and all(_is_literal(v) for v in values):
                        return text[start + 2:end].strip()
                break
        start = text.find("f(", start + 1)
    return None


def _is_literal(node: ast.AST) -> bool:
    try:
        ast.literal_eval(node)
        return True
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False


FENCE = re.compile(r"```(\w*)[ \t]*\n(.*?)```", re.S)


def fenced(text: str, tag: str) -> str | None:
    """The last ```tag fenced block of ``text``."""
    blocks = [body for t, body in FENCE.findall(text) if t == tag]
    return blocks[-1] if blocks else None


def split_proposal(text: str) -> tuple[str | None, str | None]:
    """A proposal's ``(program, input)``: fenced ```python and ```input blocks (Absolute
    Zero's format), or a program whose first top-level call line ``f(...)`` (inside its
    block or after it) is the input (the terse format). The call line is not part of the
    program (``check_program`` keeps only definitions)."""
    code = fenced(text, "python")
    given = fenced(text, "input")
    if code is None:  # an unclosed block: the code runs to the end of the text
        code = text.split("```python", 1)[-1] if "```python" in text else text
        code = code.split("```", 1)[0]
    if given is None:
        tail = text.split("```python", 1)[-1]
        calls = (call_args(line) for line in tail.split("\n") if re.match(r"(print\()?f\(", line))
        given = next((c for c in calls if c is not None), None)
    return (code if code.strip() else None), (given.strip() if given and given.strip() else None)


# --- running programs ------------------------------------------------------------------------


def _harness(program: str, calls: Sequence[str]) -> str:
    """The program, then one JSON line per call: ``{"ok": true, "out": repr}`` or the error's name."""
    lines = [program, "", "def _rolekit_calls():", "    import json as _j"]
    for args in calls:
        lines += ["    try:", f"        _r = {{'ok': True, 'out': repr(f({args}))}}",
                  "    except BaseException as _e:", "        _r = {'ok': False, 'out': type(_e).__name__}",
                  "    __builtins__.print(_j.dumps(_r))"]
    lines += ["_rolekit_calls()", ""]
    return "\n".join(lines)


def run_calls(jobs: Sequence[tuple[str, Sequence[str]]], *, timeout_s: float = TIMEOUT_S
              ) -> list[tuple[str | None, list[str | None]]]:
    """Run each ``(program, [args, ...])`` job in the sandbox, all jobs side by side.

    Returns per job ``(None, [repr of f(args) or None when that call raised])``, or
    ``(reason, [])`` when the run itself failed (a sandbox reason: timeout, memory, ...,
    or ``bad output`` when it did not print one line per call)."""
    results = sandbox.run_many([_harness(p, calls) for p, calls in jobs], timeout_s=timeout_s)
    out = []
    for (_, calls), res in zip(jobs, results):
        if not res.ok:
            out.append((res.reason or "error", []))
            continue
        rows = res.stdout.strip().split("\n")[-len(calls):] if calls else []
        try:
            parsed = [json.loads(r) for r in rows]
            values = [p["out"] if p["ok"] else None for p in parsed]
        except (ValueError, TypeError, KeyError):
            out.append(("bad output", []))
            continue
        out.append((None, values) if len(values) == len(calls) else ("bad output", []))
    return out


def run_twice(program: str, calls: Sequence[str]) -> tuple[str | None, list[str | None], list[str | None]]:
    """``program`` on ``calls`` in two separate sandbox runs (side by side), as Absolute Zero
    checks determinism: ``(reason the first failing run gave or None, first values, second values)``
    (values ``[None] * len(calls)`` for a run that failed)."""
    first, second = run_calls([(program, calls), (program, calls)])
    reason = first[0] or second[0]
    if reason:
        return reason, [None] * len(calls), [None] * len(calls)
    return None, first[1], second[1]


def induction_item(program: str, pairs: Sequence[tuple[str, str]], shown: int, message: str) -> dict:
    """An induction task from ``(input, output)`` pairs: the first ``shown`` (at least one, and
    never all) shown to the solver, the rest hidden to check its program."""
    k = max(1, min(shown, len(pairs) - 1))
    return {"program": program, "inputs": [a for a, _ in pairs[:k]], "outputs": [o for _, o in pairs[:k]],
            "hidden_inputs": [a for a, _ in pairs[k:]], "hidden_outputs": [o for _, o in pairs[k:]],
            "message": message}
