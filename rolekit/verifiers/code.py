"""The ``python`` verifier: run model-written code in ``rolekit.sandbox`` and score what it does.

``verify_python(answer, expected=None, tests=None)`` takes the code from the answer's last
```` ```python ```` (or ```` ```py ````) fenced block, else the whole answer; appends
``tests`` (e.g. ``assert`` statements) when given; runs it in the sandbox with ``stdin``.

* score 1.0: it exited cleanly and, when ``expected`` is given, its stripped stdout equals
  ``str(expected).strip()``; ``detail`` is the stdout;
* score 0.0, ``ok=True``: it ran cleanly but printed something else;
* score 0.0, ``ok=False``, ``detail`` one of ``rolekit.sandbox.REASONS``: it did not run
  cleanly (a failed test is ``nonzero_exit``, a hang ``timeout``); ``detail="no code"``
  when the answer holds none.

Never raises for what the answer contains. The sandbox starts on first use.
"""

from __future__ import annotations

import re

from rolekit.types import Verdict

FENCE = re.compile(r"```[ \t]*(?:python3?|py)[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)
MAX_DETAIL = 200  # characters of stdout kept in a verdict's detail


def python_code(answer: str) -> str:
    """The last ```python fenced block of ``answer``, else all of it."""
    blocks = FENCE.findall(answer)
    return blocks[-1] if blocks else answer


def verify_python(answer: str, expected=None, *, tests: str | None = None, stdin: str = "", timeout_s: float = 5,
                  memory_mb: int = 256, **kwargs) -> Verdict:
    """1 when the answer's code runs cleanly in the sandbox (and prints ``expected``, if given), else 0."""
    from rolekit import sandbox

    code = python_code(answer) if isinstance(answer, str) else ""
    if not code.strip():
        return Verdict(0.0, ok=False, detail="no code")
    if tests:
        code = f"{code}\n\n{tests}\n"
    result = sandbox.run(code, stdin=stdin, timeout_s=timeout_s, memory_mb=memory_mb)
    if not result.ok:
        return Verdict(0.0, ok=False, detail=result.reason)
    got = result.stdout.strip()
    score = 1.0 if expected is None or got == str(expected).strip() else 0.0
    return Verdict(score, detail=got[:MAX_DETAIL])
