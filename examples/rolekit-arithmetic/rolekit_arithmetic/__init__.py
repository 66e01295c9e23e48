"""A one-page role graph: a proposer writes a sum, n solvers answer it, rewards flow back.

Per-turn credit: each solver answer earns its own verified score, so a right and a
wrong answer to the same sum get different advantages (``grpo`` centres the n answers
of one ask); the proposer is trained on Absolute Zero's learnability reward against a
per-role baseline (``rae``). Evaluation: solver
accuracy on a fixed held-out set of sums, answered greedily.
"""

import random
import re
import statistics

from rolekit import Game, Role
from rolekit.hookspecs import hookimpl

SUM = re.compile(r"^\s*(\d{1,4})\s*([+\-*])\s*(\d{1,4})\s*(=.*)?$")  # "7 + 5", or "7 + 5 = 12" (its answer ignored)
OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


def solver_prompt(a: int, op: str, b: int) -> str:
    return f"Compute {a} {op} {b}."


def solver_lead(a: int, op: str, b: int) -> str:
    """The answer starts by restating the sum ("7 + 5 = "); the solver writes the result.
    (Asked for "[42]", SmolLM2-135M copies the 42; asked to answer in brackets it copies the sum.)"""
    return f"{a} {op} {b} = "


NUMBER = re.compile(r"\s*(-?\d+)")


def result(text: str) -> str:
    """What the solver wrote after the '=' of its lead, as a bracketed answer for the verifier."""
    found = NUMBER.match(text.rsplit("=", 1)[-1])
    return f"[{found[1]}]" if found else text


def held_out_sums(count: int, max_number: int, seed: int = 20261201) -> list[tuple[int, str, int]]:
    """A fixed set of sums the solver never trains on as such (a seeded draw)."""
    rng = random.Random(seed)
    return [(rng.randint(1, max_number), rng.choice("+-"), rng.randint(1, max_number)) for _ in range(count)]


class Arithmetic(Game):
    name = "arithmetic"
    description = "Proposer writes [a + b]; 4 solvers answer; proposer earns 1 - pass rate (Absolute Zero)."
    roles = (Role("proposer"), Role("solver"))
    # what the graph was designed for: the n answers of one sum against each other (grpo); the
    # proposer against its EMA baseline (rae), which still teaches the format in a step where every
    # proposal is malformed (role_norm would see no spread there); set advantage = {proposer =
    # "role_norm"} for AZR's batch-relative baseline once proposals parse
    estimators = {"proposer": "rae", "solver": "grpo"}

    def __init__(self, *, solvers: int = 4, max_number: int = 20, held_out: int = 64):
        self.solvers, self.max_number, self.held_out = solvers, max_number, held_out

    async def play(self, table):
        near = table.rng.randint(1, self.max_number)
        [q] = await table.ask("proposer", f"Write an arithmetic problem using numbers near {near}, in square "
                                          f"brackets, like [{near} + 17].", prefix="[", stop="]", max_new_tokens=12)
        task = SUM.match(q.text.strip().split("[")[-1].split("]")[0])
        if task is None:
            table.invalid(q, "bad format")
            table.reward(q, -1.0)
            return
        a, op, b = int(task[1]), task[2], int(task[3])
        solutions = await table.ask("solver", solver_prompt(a, op, b), n=self.solvers, prefix=solver_lead(a, op, b),
                                    stop="\n", max_new_tokens=6)
        scores = []
        for s in solutions:
            verdict = table.verify("number", result(s.text), OPS[op](a, b))
            if not verdict.ok:
                table.invalid(s, "not a number")
            table.reward(s, verdict.score)
            scores.append(verdict.score)
        table.reward(q, table.kernel.rewards.get("learnability")(success_rate=statistics.fmean(scores)))

    def evaluate(self, ev):
        sums = held_out_sums(self.held_out, self.max_number)
        answers = ev.ask("solver", [solver_prompt(*s) for s in sums], each=[{"prefix": solver_lead(*s)} for s in sums],
                         stop="\n", max_new_tokens=6, temperature=0)
        number = ev.kernel.verifiers.get("number")
        correct = [number(result(t.text), OPS[op](a, b)).score for t, (a, op, b) in zip(answers, sums)]
        return {"held_out": {"accuracy": statistics.fmean(correct), "tasks": len(sums)}}


@hookimpl
def rolekit_register_games(registry):
    registry.add(Arithmetic)
