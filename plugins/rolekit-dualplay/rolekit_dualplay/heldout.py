"""The held-out evaluation of ``azr_code``: a fixed, seeded set of small programs the
proposer never sees (its buffer starts from the identity program), with their inputs and
outputs. The programs are written here, not by a model, so their outputs are computed on
the host; the solver's answers to them are still run only in the sandbox."""

from __future__ import annotations

import math
import random

from rolekit_dualplay.programs import induction_item

# (source with {a}/{b} constants, input generator) -- one-line functions of ints, strings and lists
TEMPLATES = (
    ("def f(x):\n    return x + {a}", lambda r: repr(r.randint(0, 20))),
    ("def f(x):\n    return x * {a}", lambda r: repr(r.randint(0, 12))),
    ("def f(x):\n    return x * {a} - {b}", lambda r: repr(r.randint(1, 9))),
    ("def f(x):\n    return x % {a}", lambda r: repr(r.randint(10, 40))),
    ("def f(x):\n    return x // {a}", lambda r: repr(r.randint(10, 40))),
    ("def f(a, b):\n    return a + b * {a}", lambda r: f"{r.randint(0, 9)}, {r.randint(0, 9)}"),
    ("def f(a, b):\n    return max(a, b) - {a}", lambda r: f"{r.randint(0, 20)}, {r.randint(0, 20)}"),
    ("def f(s):\n    return s[::-1]", lambda r: repr(r.choice(["abc", "rolekit", "hello", "cat", "stone"]))),
    ("def f(s):\n    return s.upper()", lambda r: repr(r.choice(["abc", "dog", "hi", "kit", "sun"]))),
    ("def f(s):\n    return len(s) + {a}", lambda r: repr(r.choice(["abc", "tree", "hello", "a", "moon"]))),
    ("def f(s):\n    return s + s", lambda r: repr(r.choice(["ab", "x", "go", "no"]))),
    ("def f(s):\n    return s[{a} % len(s)]", lambda r: repr(r.choice(["python", "apple", "zebra"]))),
    ("def f(xs):\n    return sum(xs) + {a}", lambda r: repr([r.randint(0, 9) for _ in range(3)])),
    ("def f(xs):\n    return max(xs)", lambda r: repr([r.randint(0, 30) for _ in range(4)])),
    ("def f(xs):\n    return sorted(xs)", lambda r: repr([r.randint(0, 9) for _ in range(4)])),
    ("def f(xs):\n    return [v * {a} for v in xs]", lambda r: repr([r.randint(0, 5) for _ in range(3)])),
    ("def f(xs):\n    return xs[-1]", lambda r: repr([r.randint(0, 9) for _ in range(3)])),
    ("def f(xs):\n    return len(xs) * {a}", lambda r: repr([r.randint(0, 9) for _ in range(r.randint(1, 5))])),
)


def _output(program: str, args: str) -> str:
    scope: dict = {}
    exec(compile(program, "<held-out>", "exec"), scope)  # our own templates, never model-written
    return repr(eval(f"f({args})", scope))


def tasks(count: int, types: list[str], shown: int, seed: int = 20261202) -> list[tuple[str, dict]]:
    """``count`` tasks cycling through ``types``, each ``(type, item)`` shaped like a buffer item."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        source, inputs = TEMPLATES[rng.randrange(len(TEMPLATES))]
        program = source.format(a=rng.randint(2, 5), b=rng.randint(1, 4))
        task = types[i % len(types)]
        if task == "induction":
            calls = list(dict.fromkeys(inputs(rng) for _ in range(12)))[: shown + 2]
            if len(calls) < 2:
                calls = [inputs(rng), inputs(rng)]
            item = induction_item(program, [(c, _output(program, c)) for c in calls], shown, "a one-line function")
        else:
            given = inputs(rng)
            item = {"program": program, "input": given, "output": _output(program, given)}
        out.append((task, item))
    return out


def stderr(xs: list[float]) -> float:
    """Standard error of a mean of 0/1 scores."""
    if len(xs) < 2:
        return 0.0
    m = sum(xs) / len(xs)
    return math.sqrt(m * (1 - m) / len(xs))
