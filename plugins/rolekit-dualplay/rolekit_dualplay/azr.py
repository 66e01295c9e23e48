"""Absolute Zero Reasoner's code tasks (Zhao et al. 2025, arXiv 2505.03335) as one role graph.

One model proposes small deterministic Python programs and solves them, in three task
types (one per episode, drawn by the table's seeded rng):

* **deduction** -- propose a program ``f`` and an input; solvers predict the output.
* **abduction** -- propose a program and an input; solvers see the output and give
  an input that produces it (checked by running it).
* **induction** -- given a program from the buffer, propose inputs and a hint;
  solvers see half of the input/output pairs and the hint and write ``f``, checked on
  the other half.

A proposal is validated in ``rolekit.sandbox``: it parses, ``f`` exists, no banned
module or name (AST check), it runs, and two separate runs agree (deterministic). Valid
proposals join a buffer per task type (seeded with Absolute Zero's identity program on
``'Hello World'``) whose entries are the proposer's reference examples, so the
curriculum grows with the run; the buffers are task pools, checkpointed with the run.

Absolute Zero trains its solver on tasks drawn from the buffers; here an episode whose
proposal is invalid has its solvers answer a task drawn from that buffer instead, so every
episode trains the solver and a run that starts with no valid proposals still learns.

Rewards as Absolute Zero's code (``reward_managers.py``): solver 1 if right, -0.5 if
well formed but wrong, -1 if malformed; proposer, over the n solver answers' pass rate
r: 1 - r when 0 < r < 1, -0.5 when r is 0 or 1, -1 when the proposal is malformed or
invalid. Advantages: Task-Relative REINFORCE++ -- rewards whitened over the step per
(task type x role), i.e. ``role_norm`` with the task type as the turns' baseline key.
"""

from __future__ import annotations

import functools
import statistics
from typing import Any

from rolekit import Game, Role
from rolekit_dualplay import heldout
from rolekit_dualplay.programs import (call_args, check_program, fenced, induction_item, literal, run_calls,
                                       run_twice, split_proposal)

TASKS = ("deduction", "abduction", "induction")
SEED = {"program": "def f(a):\n    return a", "input": "'Hello World'", "output": "'Hello World'"}
SEEDS = ("identity", "library")

# ``seed = "library"``: one-line programs, each with one input, that start the deduction and
# abduction buffers in place of the identity alone. Absolute Zero seeds its buffers with
# programs the base model writes before training (``_init_seed_dataset``, 4 x a step's
# batch of valid proposals, or a ``seed_dataset`` file); a 135M model's proposals from the
# identity are variants of the identity, so this hand-written set stands in. It is
# written apart from the held-out templates (heldout.py) and shares none of their programs.
LIBRARY = (
    ("def f(x):\n    return x - 3", "8"), ("def f(x):\n    return x * x", "4"),
    ("def f(x):\n    return 2 * x + 1", "5"), ("def f(x):\n    return abs(x - 10)", "4"),
    ("def f(x):\n    return min(x, 7)", "12"), ("def f(x):\n    return x if x > 5 else -x", "3"),
    ("def f(a, b):\n    return a * b", "3, 4"), ("def f(a, b):\n    return a - b", "9, 2"),
    ("def f(s):\n    return s.lower()", "'Apple'"), ("def f(s):\n    return s[0]", "'moon'"),
    ("def f(s):\n    return s[1:]", "'green'"), ("def f(s):\n    return s + '!'", "'yes'"),
    ("def f(s):\n    return s.count('a')", "'banana'"), ("def f(s):\n    return len(s)", "'river'"),
    ("def f(s):\n    return s.replace('a', 'o')", "'cat'"), ("def f(xs):\n    return xs[0]", "[5, 2, 8]"),
    ("def f(xs):\n    return min(xs)", "[6, 3, 9]"), ("def f(xs):\n    return len(xs)", "[1, 2, 3, 4]"),
    ("def f(xs):\n    return xs[::-1]", "[1, 2, 3]"), ("def f(xs):\n    return [v + 1 for v in xs]", "[0, 4, 7]"),
)

# --- prompts ---------------------------------------------------------------------------------
# terse: sized for the 135M embedded default (short, with the answer's first characters
# given as a prefix); reasoning: Absolute Zero's instructions, paraphrased, for bigger models.


def _example(item: dict, style: str) -> str:
    if style == "terse":  # the input as a call after the code: what a small model imitates
        return f"```python\n{item['program']}\n\nf({item['input']})\n```"
    return f"```python\n{item['program']}\n```\n```input\n{item['input']}\n```"


def propose_prompt(task: str, refs: list[dict], style: str) -> str:
    shown = "\n\n".join(_example(r, style) for r in refs)
    if style == "terse":
        return (f"Examples:\n\n{shown}\n\nWrite a new, different Python function f and one call of it, in the "
                f"same format.")
    goal = ("deduce the output from the input" if task == "deduction" else
            "deduce one possible input from the output")
    return (f"## Task: create a new Python code snippet with one matching input\n\nUsing the reference snippets "
            f"below as examples, design a new and unique snippet that demands deep algorithmic reasoning to {goal}. "
            f"Name the entry function `f`, give it at least one parameter, make it return a value and be "
            f"deterministic; no randomness, date/time, I/O, printing or external state; imports and classes at "
            f"the top. Provide exactly one input (arguments separated by commas, strings quoted).\n\nFormat your "
            f"code as ```python\\ndef f(...):\\n    ...\\n``` and your input as ```input\\narg1, arg2\\n```.\n\n"
            f"First plan how your snippet will be challenging and distinct from the references, then write it."
            f"\n\n### Reference snippets:\n\n{shown}")


def induction_prompt(program: str, example: dict, count: int, style: str) -> str:
    """Ask for ``count`` calls of ``program`` and a hint; ``example`` (an induction buffer item)
    shows the format on another function."""
    calls = "\n".join(f"f({i})" for i in example["inputs"] + example["hidden_inputs"])
    if style == "terse":
        return (f"```python\n{program}\n```\nWrite {count} different calls of this f, one per line, then one line "
                f"starting with # that says what f does. Example for another function:\n{calls}\n# {example['message']}")
    return (f"## Task: given the Python function below, write {count} diverse inputs that together reveal what it "
            f"does, and a message that helps a test subject write the function from input/output pairs.\n\n"
            f"```python\n{program}\n```\n\nWrite each input as a call `f(...)` on its own line, then the message "
            f"on one line starting with `#`. For example, for another function:\n{calls}\n# {example['message']}")


INPUT_ASK = "Now write one call of f with a concrete input."


def solve_prompt(task: str, item: dict, style: str) -> str:
    if task == "deduction":
        q = f"```python\n{item['program']}\n```\nWhat does f({item['input']}) return? Reply with the value only."
    elif task == "abduction":
        q = f"```python\n{item['program']}\n```\nGive an input for which f returns {item['output']}."
    else:
        pairs = "\n".join(f"f({i}) == {o}" for i, o in zip(item["inputs"], item["outputs"]))
        hint = f"\nHint: {item['message']}" if item["message"] else ""
        q = f"Write a Python function f with:\n{pairs}{hint}"
    if style == "terse":
        return q
    return (f"{q}\n\nThink step by step, then give your final answer "
            + {"deduction": "as the value alone on the last line.", "abduction": "as a call f(...) on the last line.",
               "induction": "as a ```python block defining f."}[task])


def solve_lead(task: str, item: dict, style: str) -> str:
    """The first characters of a terse answer (none in reasoning style)."""
    if style != "terse":
        return ""
    return f"f({item['input']}) = " if task == "deduction" else ("f(" if task == "abduction" else "def f(")


# --- the solver's answers ----------------------------------------------------------------------


def read_value(text: str, style: str) -> tuple[bool, Any]:
    """A deduction answer's value. Terse: what the first line's chain of equalities ends
    with -- the first literal that follows an " = " and runs to the end of the line, so
    ``f(4, 6) = 4 + 6 * 5 = 34`` reads 34 (a small model often works the sum out on the
    line) and ``f(s) = 'a = b'`` reads ``'a = b'``. Reasoning: the last line."""
    lines = [line for line in text.strip().split("\n") if line.strip()]
    if not lines:
        return False, None
    if style != "terse":
        return literal(lines[-1])
    parts = lines[0].split(" = ")
    for i in range(1, len(parts)):
        found = literal(" = ".join(parts[i:]))
        if found[0]:
            return found
    return False, None


def read_program(text: str) -> str | None:
    """An induction answer's program: a ```python block, or the text up to a closing fence."""
    code = fenced(text, "python") or text.split("```")[0]
    program, _ = check_program(code)
    return program


def score_solutions(task: str, item: dict, texts: list[str], style: str) -> list[tuple[float, str]]:
    """Each answer's ``(accuracy in {0, 1}, "" | why it is malformed)``."""
    if task == "deduction":
        _, gold = literal(item["output"])
        out = []
        for text in texts:
            ok, value = read_value(text, style)
            out.append((float(value == gold), "") if ok else (0.0, "not a value"))
        return out
    if task == "abduction":
        _, gold = literal(item["output"])
        args = [call_args(text if text.lstrip().startswith("f(") else "f(" + text.split("f(")[-1]) for text in texts]
        wanted = [a for a in args if a is not None]
        [(reason, values)] = run_calls([(item["program"], wanted)]) if wanted else [(None, [])]
        got = iter(values if reason is None else [None] * len(wanted))
        out = []
        for a in args:
            if a is None:
                out.append((0.0, "no input"))
                continue
            v = next(got)
            out.append((float(v is not None and literal(v) == (True, gold)), ""))
        return out
    programs = [read_program(t) for t in texts]
    jobs = [(p, item["hidden_inputs"]) for p in programs if p is not None]
    runs = iter(run_calls(jobs))
    out = []
    for p in programs:
        if p is None:
            out.append((0.0, "no program"))
            continue
        reason, values = next(runs)
        right = reason is None and [literal(v) if v is not None else (False, None) for v in values] == \
            [literal(o) for o in item["hidden_outputs"]]
        out.append((float(right), ""))
    return out


def solver_reward(accuracy: float, malformed: str) -> float:
    """Absolute Zero's solver reward: 1 right, -0.5 well formed but wrong, -1 malformed."""
    return -1.0 if malformed else (1.0 if accuracy > 0 else -0.5)


def proposer_reward(pass_rate: float) -> float:
    """Absolute Zero's proposer reward for a valid proposal: 1 - r when 0 < r < 1, else -0.5."""
    return 1.0 - pass_rate if 0.0 < pass_rate < 1.0 else -0.5


# --- validating proposals --------------------------------------------------------------------------


def validate_program(text: str) -> tuple[dict | None, str]:
    """A deduction/abduction proposal as a buffer item ``{program, input, output}``, or ``(None, reason)``:
    format, syntax error, no function f, banned: NAME, a sandbox reason, raises, nondeterministic,
    output not a literal."""
    code, given = split_proposal(text)
    if code is None or given is None:
        return None, "format"
    program, why = check_program(code)
    if program is None:
        return None, why
    if call_args(f"f({given})") != given:
        return None, "input not a literal"
    reason, [out], [again] = run_twice(program, [given])
    if reason:
        return None, reason
    if out is None:
        return None, "raises"
    if not literal(out)[0]:
        return None, "output not a literal"
    if out != again:
        return None, "nondeterministic"
    return {"program": program, "input": given, "output": out}, ""


def validate_inputs(program: str, text: str, shown: int) -> tuple[dict | None, str]:
    """An induction proposal (calls + a ``#`` hint) as ``{program, inputs, outputs, hidden_inputs,
    hidden_outputs, message}`` or ``(None, reason)``: at least two distinct valid inputs."""
    lines = text.split("\n")
    calls = [a for a in (call_args(line) for line in lines if "f(" in line) if a is not None]
    message = next((line.strip().lstrip("#").strip() for line in lines if line.strip().startswith("#")), "")
    calls = list(dict.fromkeys(calls))
    if len(calls) < 2:  # the hint is optional (Absolute Zero asks for one; a small model rarely writes it)
        return None, "format"
    reason, outputs, again = run_twice(program, calls)
    if reason:
        return None, reason
    pairs = [(a, o) for a, o, o2 in zip(calls, outputs, again) if o is not None and o == o2 and literal(o)[0]]
    if len(pairs) < 2:
        return None, "too few valid inputs"
    return induction_item(program, pairs, shown, message), ""


def library() -> list[dict]:
    """LIBRARY as buffer items (fresh dicts), each validated (and its output computed) in
    the sandbox as a proposal is, once per process; a program that fails validation is a
    bug here, so it raises."""
    return [dict(item) for item in _library()]


@functools.cache
def _library() -> tuple[dict, ...]:
    items = []
    for program, given in LIBRARY:
        item, why = validate_program(f"```python\n{program}\n```\nf({given})")
        if item is None:
            raise RuntimeError(f"azr_code seed library: {program!r} on {given}: {why}")
        items.append(item)
    return tuple(items)


class AzrCode(Game):
    name = "azr_code"
    description = ("Absolute Zero: propose Python programs (deduction / abduction / induction), "
                   "solve them; programs run in rolekit.sandbox.")
    roles = (Role("proposer", "writes programs and inputs"), Role("solver", "predicts outputs, inputs, programs"))
    # Task-Relative REINFORCE++: each (task type x role) whitened over the step (keys set per turn)
    estimators = {"proposer": "role_norm", "solver": "role_norm"}

    def __init__(self, *, tasks: tuple[str, ...] | list[str] = TASKS, solvers: int = 4, references: int = 2,
                 buffer: int = 512, induction_inputs: int = 4, prompts: str = "terse", held_out: int = 60,
                 propose_tokens: int | None = None, solve_tokens: int | None = None, seed: str = "identity"):
        unknown = [t for t in tasks if t not in TASKS]
        if unknown or not tasks:
            raise ValueError(f"tasks must be a non-empty subset of {TASKS}, got {list(tasks)}")
        if prompts not in ("terse", "reasoning"):
            raise ValueError(f"prompts must be 'terse' or 'reasoning', got {prompts!r}")
        if seed not in SEEDS:
            raise ValueError(f"seed must be one of {', '.join(SEEDS)}, got {seed!r}")
        if solvers < 1 or references < 1 or induction_inputs < 2:
            raise ValueError("solvers and references must be >= 1 and induction_inputs >= 2")
        self.tasks, self.solvers, self.references, self.buffer = tuple(tasks), solvers, references, buffer
        self.induction_inputs, self.prompts, self.held_out = induction_inputs, prompts, held_out
        self.seed = seed
        terse = prompts == "terse"
        self.propose_tokens = propose_tokens or (48 if terse else 1024)
        self.solve_tokens = solve_tokens or (0 if terse else 1024)  # 0: per task, below

    def solve_budget(self, task: str) -> int:
        """Tokens a solver answer may take: terse values and inputs are short, programs longer."""
        return self.solve_tokens or (40 if task == "induction" else 16)

    def buffer_of(self, table, task: str):
        """The task type's pool of valid proposals, seeded with the identity program (and,
        with ``seed = "library"``, the deduction and abduction pools with LIBRARY too)."""
        pool = table.pool(task, self.buffer)
        if not pool.items:
            pool.add(SEED if task != "induction" else
                     {**SEED, "inputs": ["'Hello World'"], "outputs": ["'Hello World'"],
                      "hidden_inputs": ["'abc'"], "hidden_outputs": ["'abc'"], "message": "returns its input"})
            if self.seed == "library" and task != "induction":
                for item in library():
                    pool.add(item)
        return pool

    async def play(self, table):
        task = table.rng.choice(self.tasks)
        pool = self.buffer_of(table, task)
        terse = self.prompts == "terse"
        if task == "induction":
            source = table.rng.choice(self.buffer_of(table, table.rng.choice(("deduction", "abduction"))).items)
            example = table.rng.choice(pool.items)
            [q] = await table.ask("proposer", induction_prompt(source["program"], example, self.induction_inputs,
                                                               self.prompts),
                                  prefix="f(" if terse else "", max_new_tokens=self.propose_tokens)
            turns = [q]
            item, why = validate_inputs(source["program"], q.text, self.induction_inputs // 2)
        else:
            refs = pool.sample(table.rng, self.references)
            prompt = propose_prompt(task, refs, self.prompts)
            if terse:  # two short turns: the program, then (in the same thread) its input
                [q] = await table.ask("proposer", prompt, prefix="```python\ndef f(", stop="```",
                                      max_new_tokens=self.propose_tokens)
                [q2] = await table.ask("proposer", INPUT_ASK, after=q, prefix="f(", stop="\n", max_new_tokens=24)
                turns, text = [q, q2], f"{q.text}\n{q2.text}"
            else:
                [q] = await table.ask("proposer", prompt, max_new_tokens=self.propose_tokens)
                turns, text = [q], q.text
            item, why = validate_program(text)
        for t in turns:
            table.set_key(t, task)
        table.log(f"{task}/valid", float(item is not None))
        if item is None:
            for t in turns:
                table.invalid(t, why)
                table.reward(t, -1.0)
            item = table.rng.choice(pool.items)  # the solvers still train: on a task from the buffer
        else:
            pool.add(item)
        answers = await table.ask("solver", solve_prompt(task, item, self.prompts), n=self.solvers,
                                  prefix=solve_lead(task, item, self.prompts), max_new_tokens=self.solve_budget(task),
                                  **({"stop": "\n"} if self.prompts == "terse" and task != "induction" else {}))
        scores = score_solutions(task, item, [a.text for a in answers], self.prompts)
        for a, (accuracy, malformed) in zip(answers, scores):
            table.set_key(a, task)
            if malformed:
                table.invalid(a, malformed)
            table.reward(a, solver_reward(accuracy, malformed))
        pass_rate = statistics.fmean(acc for acc, _ in scores)
        if why:
            table.set_info(task=task, valid=False, reason=why)
            return
        for t in turns:
            table.reward(t, proposer_reward(pass_rate))
        table.log(f"{task}/pass_rate", pass_rate)
        table.set_info(task=task, valid=True, pass_rate=pass_rate)

    def evaluate(self, ev):
        tasks = heldout.tasks(self.held_out, [t for t in TASKS if t in self.tasks], self.induction_inputs // 2)
        answers = ev.ask("solver", [solve_prompt(t, item, self.prompts) for t, item in tasks],
                         each=[{"prefix": solve_lead(t, item, self.prompts), "max_new_tokens": self.solve_budget(t),
                                **({"stop": "\n"} if self.prompts == "terse" and t != "induction" else {})}
                               for t, item in tasks], temperature=0)
        right: dict[str, list[float]] = {t: [] for t in TASKS}
        for (t, item), a in zip(tasks, answers):
            [(accuracy, _)] = score_solutions(t, item, [a.text], self.prompts)
            right[t].append(accuracy)
        every = [x for xs in right.values() for x in xs]
        out: dict[str, Any] = {"accuracy": statistics.fmean(every), "tasks": len(every),
                               "stderr": heldout.stderr(every)}
        for t, xs in right.items():
            if xs:
                out[f"{t}_accuracy"] = statistics.fmean(xs)
        return {"held_out": out}

