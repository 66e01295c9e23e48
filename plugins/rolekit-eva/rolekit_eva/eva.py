"""eva (arXiv 2411.00062): a creator evolves the prompts a solver trains on.

Per episode:

1. the solver answers a prompt drawn from the pool (uniformly) ``n`` times;
2. a judge scores each answer (default: the frozen base, a 1-10 rubric rescaled to [0, 1],
   constrained: the expected score under its likelihoods of the labels); each answer's reward is its score, advantages ``grpo``
   over the n answers. An answer without a verdict is dropped ("no verdict"), never scored 0;
3. the prompt's informativeness -- max - min of its scores (options: ``variance``,
   ``mean_gap``) -- is stored on it in the pool;
4. with probability ``evolve`` (eva's 25 %) the creator evolves a prompt: one picked by
   eva's weights (informativeness min-max normalised, over the sum; the least informative
   never), rewritten into ``k`` new prompts, each under an EvolInstruct rubric drawn
   without replacement. Usable ones join the pool (empty, over-long, copies and prompts
   already there are invalid, with the reason); the pool's capacity ages the oldest out;
5. the creator is not trained by default (eva's offline recipe: its turns are dropped,
   "creator not trained"). With ``train_creator`` each new prompt is answered ``n`` times
   at once and judged, and the creator's reward is the informativeness it turns out to
   have (``role_norm`` over the step); those answers train the solver too.

Logged (``games.eva.*``): ``solver/judge_score`` (the mean score of the solver's answers),
``informativeness`` (of the drawn prompt), ``pool_size``, ``pool_mean_informativeness``,
``creator/new_prompts`` (usable new prompts per evolving episode), ``no_verdict`` (share of
answers without one). Evaluation: the mean judge score of the solver's greedy answers to
16 fixed held-out prompts (``rolekit_eva.prompts.HELD_OUT``).
"""

from __future__ import annotations

import statistics
from typing import Any

from rolekit import Game, Role
from rolekit_eva import prompts as text
from rolekit_eva.pool import METRICS, PromptPool, informativeness, parse_new_prompt

POOL = "prompts"


class Eva(Game):
    name = "eva"
    description = ("eva: the solver answers pool prompts n times, a judge scores them; the creator rewrites the "
                   "prompts whose best and worst answers differ most (max - min) into new ones, which join the "
                   "pool. Solver grpo on the judge's score; creator untrained by default.")
    roles = (Role("creator", "rewrites an informative prompt into a harder, more specific one"),
             Role("solver", "answers the pool's prompts"))
    estimators = {"creator": "role_norm", "solver": "grpo"}

    def __init__(self, *, prompts: str = "builtin", n: int = 4, k: int = 2, evolve: float = 0.25,
                 metric: str = "gap", pool_size: int = 256, judge: str = "judge:frozen", constrained: bool = True,
                 train_creator: bool = False, solver_tokens: int = 128, creator_tokens: int = 96,
                 judge_tokens: int = 8):
        """Options (config ``options = {...}``):

        ``prompts``: "builtin" (24 everyday instructions) or a JSONL path (``{"prompt": str}``).
        ``n``: solver answers per prompt. ``k``: new prompts per evolved prompt.
        ``evolve``: the share of episodes that evolve a prompt. ``metric``: informativeness,
        "gap" (max - min), "variance" or "mean_gap" (max - mean). ``pool_size``: the pool's
        capacity (oldest leave first). ``judge``: any ``table.judge`` spec; ``constrained``:
        a model judge's verdict is its expected 1-10 score under its own likelihoods. ``train_creator``: reward the
        creator with its new prompts' informativeness (eva trains it not). Token budgets:
        ``solver_tokens``, ``creator_tokens``, ``judge_tokens``.
        """
        if n < 2:
            raise ValueError(f"game 'eva': option n={n!r}; informativeness needs at least 2 answers per prompt")
        if not 1 <= k <= len(text.RUBRICS):
            raise ValueError(f"game 'eva': option k={k!r}; must be in 1..{len(text.RUBRICS)} (one rubric each)")
        if not 0.0 <= evolve <= 1.0:
            raise ValueError(f"game 'eva': option evolve={evolve!r}; must be a probability")
        if metric not in METRICS:
            raise ValueError(f"game 'eva': option metric={metric!r}; expected one of {', '.join(METRICS)}")
        if pool_size < 1:
            raise ValueError(f"game 'eva': option pool_size={pool_size!r}; must be >= 1")
        self.seeds = text.SEEDS if prompts == "builtin" else text.load_prompts(prompts)
        self.origin = "seed" if prompts == "builtin" else "user"
        self.n, self.k, self.evolve, self.metric, self.pool_size = n, k, evolve, metric, pool_size
        self.judge, self.constrained, self.train_creator = judge, constrained, train_creator
        self.solver_tokens, self.creator_tokens, self.judge_tokens = solver_tokens, creator_tokens, judge_tokens

    async def solve(self, table, prompt: str, parent=None) -> tuple[list[float], float | None]:
        """The solver's n answers to ``prompt``, judged and rewarded; (scores, informativeness or None)."""
        answers = await table.ask("solver", prompt, n=self.n, parent=parent, max_new_tokens=self.solver_tokens)
        verdicts = await table.judge(self.judge, [(prompt, a.text) for a in answers], rubric=text.JUDGE,
                                     scale="score", constrained=self.constrained, max_new_tokens=self.judge_tokens)
        scores = []
        for answer, verdict in zip(answers, verdicts):
            if verdict.ok:
                table.reward(answer, verdict.score)
                scores.append(verdict.score)
            else:
                table.drop(answer, "no verdict")
        table.log("no_verdict", 1 - len(scores) / len(answers))
        return scores, informativeness(scores, self.metric) if len(scores) >= 2 else None

    async def play(self, table) -> None:
        pool = PromptPool(table.pool(POOL, self.pool_size), self.seeds, self.origin)
        item = pool.draw(table.rng)
        scores, value = await self.solve(table, item["text"])
        if scores:
            table.log("solver/judge_score", statistics.fmean(scores))
        if value is not None:
            item["informativeness"] = value
            table.log("informativeness", value)
        table.set_info(prompt=item["text"], informativeness=value)
        if table.rng.random() < self.evolve:
            await self.create(table, pool)
        table.log("pool_size", len(pool))
        mean = pool.mean_informativeness()
        if mean is not None:
            table.log("pool_mean_informativeness", mean)

    async def create(self, table, pool: PromptPool) -> None:
        parent = pool.pick(table.rng)
        if parent is None:
            return
        rubrics = table.rng.sample(text.RUBRICS, self.k)
        turns = await table.gather(*(table.ask("creator", text.creator_prompt(r, parent["text"]),
                                               max_new_tokens=self.creator_tokens) for r in rubrics))
        added = []
        for [turn] in turns:
            new, why = parse_new_prompt(turn.text, parent["text"])
            item = pool.add(new, parent=parent["text"]) if new is not None else None
            if new is not None and item is None:
                why = "already in the pool"
            if item is None:
                table.invalid(turn, why)
                if not self.train_creator:
                    table.drop(turn, "creator not trained (train_creator = false)")
                continue
            added.append((turn, item))
            if not self.train_creator:
                table.drop(turn, "creator not trained (train_creator = false)")
        table.log("creator/new_prompts", len(added))
        if self.train_creator:
            for turn, item in added:  # each new prompt's informativeness, measured now, is its reward
                _, value = await self.solve(table, item["text"], parent=turn)
                if value is None:
                    table.drop(turn, "no verdict")
                else:
                    item["informativeness"] = value
                    table.reward(turn, value)

    def evaluate(self, ev) -> dict[str, Any]:
        """The mean judge score of the solver's greedy answers to the fixed held-out prompts,
        judged as in training (``judge:frozen``: the evaluated model with its adapter disabled)."""
        from rolekit.verifiers.judges import JudgeItem, JudgeRequest, Judges

        answers = ev.ask("solver", list(text.HELD_OUT), temperature=0, max_new_tokens=self.solver_tokens)
        judges = Judges.for_responder(ev.kernel, ev.policy.responder)
        items = tuple(JudgeItem(p, a.text) for p, a in zip(text.HELD_OUT, answers))
        [verdicts] = judges.get(self.judge).respond([JudgeRequest(self.name, self.judge, items, text.JUDGE, "score",
                                                                  self.constrained, self.judge_tokens)])
        scores = [v.score for v in verdicts if v.ok]
        return {"held_out": {"judge_score": statistics.fmean(scores) if scores else None,
                             "prompts": len(items), "no_verdict": len(items) - len(scores)}}
