"""A 30-line role graph: a proposer writes a sum, n solvers answer it, rewards flow back."""

import re
import statistics

from rolekit import Game, Role
from rolekit.hookspecs import hookimpl

SUM = re.compile(r"^\s*(\d{1,4})\s*([+\-*])\s*(\d{1,4})\s*$")


class Arithmetic(Game):
    name = "arithmetic"
    description = "Proposer writes [a + b]; 4 solvers answer; proposer earns 1 - pass rate (Absolute Zero)."
    roles = (Role("proposer"), Role("solver"))

    def __init__(self, *, solvers: int = 4):
        self.solvers = solvers

    async def play(self, table):
        seed = table.rng.randint(1, 50)
        [q] = await table.ask("proposer", f"Write a hard arithmetic problem using numbers near {seed}, "
                                          f"in square brackets, like [{seed} + 17].", max_new_tokens=24)
        task = SUM.match(q.text.strip().split("[")[-1].split("]")[0])
        if task is None:
            table.reward(q, -1.0)  # bad format
            return
        a, op, b = int(task[1]), task[2], int(task[3])
        answer = {"+": a + b, "-": a - b, "*": a * b}[op]
        solutions = await table.ask("solver", f"Compute {a} {op} {b}. Answer in square brackets.", n=self.solvers)
        scores = [table.verify("number", s.text, answer).score for s in solutions]
        for s, score in zip(solutions, scores):
            table.reward(s, score)
        table.reward(q, table.kernel.rewards.get("learnability")(success_rate=statistics.fmean(scores)))


@hookimpl
def rolekit_register_games(registry):
    registry.add(Arithmetic)
