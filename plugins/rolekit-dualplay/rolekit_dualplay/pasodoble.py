"""PasoDoble's dual play on math (arXiv 2511.11881), one model in both seats.

Per episode the proposer writes a math problem and its ground-truth answer in a
``\\boxed{}``; ``solvers`` solvers answer the problem. Rewards, as PasoDoble's
``proposergrpo_trainer._score_completions`` gives them:

* solver: 1 when the ``math`` verifier finds its last ``\\boxed{}`` equal to the
  proposer's boxed answer, else 0 (no box, or an unreadable one: invalid, with the reason);
* proposer: with p the solvers' pass rate and d the problem's diversity,
  ``0 if p <= min_pass (0.2); 0 if d <= min_diversity (0.3); else 1.1 - p + 0.2 d``.
  d is the share of the last 100 well-formed problems (the ``history`` pool, checkpointed
  with the run; a problem counts even when its answer then proves malformed) whose
  Jaccard similarity with this one is <= 0.8, over sets of *word tokens* (lower-cased
  runs of letters and digits, and every other non-space character, so "3 + 4" and "3 - 4"
  differ) of what the proposer wrote (terse prompts: without the lead the game drew for
  it, which would make any two problems look different). PasoDoble compares tokenizer-id
  sets; a game sees text, and on problem text the two rank pairs alike. With no history
  yet a problem counts as fully diverse (d = 1).
* a malformed proposal (no problem, or no readable ``\\boxed{}`` answer) is marked
  invalid with its reason and earns ``format_penalty`` (-1 by default), and no solver is
  asked. PasoDoble itself gives such a proposal 0 through p <= 0.2
  (``format_penalty = 0`` reproduces that); a 135M model writes the format rarely at
  first, and -1 ranks "malformed" below "well-formed but unsolved" (0), which is what
  teaches the format first.

The solvers' answers to a problem outside PasoDoble's validity window (p <= min_pass, or
p = 1) are dropped ("pass rate outside the window"): with 4 solvers those are the asks
whose answers all scored alike, which GRPO could not train anyway.

Estimators: solver ``grpo`` -- the n answers of one problem against each other,
PasoDoble's GRPO group. Proposer ``rae``: an EMA baseline per turn kind (problem,
answer; ``table.set_key``), A = r - b. PasoDoble normalises the proposer's rewards over
its group of generations of one prompt, (r - mean) / (std + 1e-4); an episode here asks one
proposal and the prompts differ only in what is drawn for them, so that group would be
the step's proposals -- ``role_norm``, which ``advantage = {proposer = "role_norm"}``
selects. It is not the default because a step in which every proposal earns the same has
no spread for it, and the engine then plays on looking for a sample: an untrained or
random model's proposals are all malformed. ``rae`` still trains those against its
baseline, and once proposals parse both compare a proposal with what proposals usually
earn (the plugin's README has a run of each on SmolLM2-135M).

Prompts, option ``prompts``:

* ``"terse"`` (default, sized for SmolLM2-135M, which never closes a ``</problem>`` tag
  on its own -- 0 of 16 proposals did): the proposal is asked in two turns of one thread,
  and the game writes the format. The problem turn starts with the drawn "Problem: Tom
  has 7 apples" and stops at its question mark; the answer turn starts with
  ``Answer: \\boxed{`` and stops at the closing brace. The solver's reply starts with the
  same ``Answer: \\boxed{``. (Asked for a box, SmolLM2-135M writes none; with the box
  opened it writes a number, right on 5 of the 64 held-out problems untrained.) Both proposer
  turns earn the proposal's reward; ``table.set_key`` keeps the proposer's baselines of
  problem turns and answer turns apart.
* ``"reasoning"``: PasoDoble's own prompts (paraphrased in ROLEGRAPHS.md section 5) for
  models that think step by step: one generation with ``<problem>...</problem>`` and
  ``<answer>...\\boxed{}...</answer>``; solvers reason freely and are graded on their
  last box.

``knowledge``: a folder of .txt/.md files; a paragraph drawn per episode is put in the
proposer's prompt as PasoDoble's "External knowledge: {passage} ...".

Evaluation (``evaluate``): greedy solver accuracy, with its standard error, on ``held_out``
fixed word problems with integer or fraction answers (``held_out_problems``), asked as any
problem is asked of a solver, and never shown to the proposer.
"""

from __future__ import annotations

import math
import random
import re
import statistics
from pathlib import Path
from typing import Any

from rolekit import Game, Role
from rolekit.verifiers.math import last_boxed

PROMPT_STYLES = ("terse", "reasoning")
HISTORY = "history"
HISTORY_SIZE = 100  # PasoDoble's DiversityRewardManager keeps deque(maxlen=100)
SIMILAR = 0.8  # a past problem with Jaccard similarity above this counts as a repeat
PASSAGE_CHARS = 1500  # a knowledge passage is cut to this many characters

# --- PasoDoble's reward, as pure functions -------------------------------------------------

_TOKEN = re.compile(r"[^\W_]+|[^\w\s]|_")


def tokens(problem: str) -> frozenset[str]:
    """A problem's word-token set: lower-cased runs of letters and digits, and every other
    non-space character."""
    return frozenset(_TOKEN.findall(problem.lower()))


def jaccard(a: frozenset[str] | set[str], b: frozenset[str] | set[str]) -> float:
    """|a & b| / |a | b| (1.0 for two empty sets)."""
    union = len(a | b)
    return len(a & b) / union if union else 1.0


def diversity(problem_tokens: frozenset[str], history: list) -> float:
    """PasoDoble's d: the share of past problems (token sets) whose Jaccard similarity with
    this one is <= 0.8; 1.0 with no history."""
    if not history:
        return 1.0
    return sum(jaccard(problem_tokens, frozenset(past)) <= SIMILAR for past in history) / len(history)


_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def stated(problem: str, answer: str | None) -> bool:
    """Whether a problem states its own answer: the answer (a box's content) is one of the
    numbers written in the problem, so a solver need only copy it."""
    if answer is None:
        return False
    value = answer.strip().replace(",", "")
    return _NUMBER.fullmatch(value) is not None and value in _NUMBER.findall(problem.replace(",", ""))


def proposer_reward(p: float, d: float, *, min_pass: float = 0.2, min_diversity: float = 0.3) -> float:
    """PasoDoble's proposer reward: 0 if p <= min_pass, 0 if d <= min_diversity, else 1.1 - p + 0.2 d."""
    if p <= min_pass or d <= min_diversity:
        return 0.0
    return 1.1 - p + 0.2 * d


# --- parsing ---------------------------------------------------------------------------------

_PROBLEM = re.compile(r"<problem>(.*?)</problem>", re.S)


def parse_proposal(text: str) -> tuple[str | None, str | None, str]:
    """A tagged proposal (reasoning prompts) as (problem, answer text, why): the problem is
    inside ``<problem>...</problem>``; the answer is what follows it, inside
    ``<answer>...</answer>`` when present (a ``</answer>`` cut off by the token budget is
    forgiven), and must hold a ``\\boxed{}``. ``why`` is "" when both are there; a
    missing part is None."""
    found = _PROBLEM.search(text)
    if found is None or not found[1].strip():
        return None, None, "no <problem>"
    answer = text[found.end():]
    if "<answer>" in answer:
        answer = answer.split("<answer>", 1)[1].split("</answer>", 1)[0]
    if last_boxed(answer) is None:
        return found[1].strip(), None, "no \\boxed answer"
    return found[1].strip(), answer.strip(), ""


def question(text: str, lead: str) -> str | None:
    """A terse problem turn's problem: its text after ``lead``, up to its first question
    mark; None when it has none (the token budget ran out first)."""
    body = text[len(lead):] if text.startswith(lead) else text
    end = body.find("?")
    return body[: end + 1].strip() if end != -1 else None


# --- prompts ------------------------------------------------------------------------------------

NAMES = ("Tom", "Ann", "Ben", "Sara", "Leo", "Mia", "Sam", "Ivy", "Max", "Zoe", "Omar", "Lina")
TOPICS = ("apples", "marbles", "coins", "books", "pencils", "cookies", "stickers", "cars", "birds", "flowers",
          "eggs", "cards", "boxes", "shells", "stamps", "balloons", "candies", "trees", "fish", "pages")
EXAMPLE = "Problem: Mia has 4 bags with 3 shells in each bag. How many shells does she have?"
ANSWER_LEAD = "Answer: \\boxed{"  # terse: the reply opens the box, the model writes the value

PROPOSER_SYSTEM = (  # PasoDoble's prompt.py, paraphrased (ROLEGRAPHS.md section 5)
    "You are the proposer in a proposer-solver game. Create a challenging, well-structured, diverse and "
    "unambiguous math problem with a verifiable answer. Put the problem in <problem></problem> tags. In "
    "<answer></answer> tags give a detailed step-by-step solution with a brief sanity check, and put the final "
    "ground-truth answer in \\boxed{} inside the <answer> tags.")
PROPOSER_TASK = "create a challenging, well-structured, diverse and unambiguous math problem with a verifiable answer"
SOLVER_SYSTEM = (
    "You are a solver in a proposer-solver game. Solve the math problem step by step and present your answer in "
    "<answer></answer> tags, with the final answer in \\boxed{}.")


def _passages(folder: Any) -> tuple[str, ...]:
    """The paragraphs of every .txt/.md file under ``folder`` (files in path order);
    ValueError naming the option when there are none."""
    path = Path(str(folder)).expanduser()
    if not path.is_dir():
        raise ValueError(f"game 'pasodoble_math': option knowledge={str(folder)!r} is not a folder")
    out = []
    for file in sorted(p for p in path.rglob("*") if p.suffix.lower() in (".txt", ".md") and p.is_file()):
        text = file.read_text(encoding="utf-8", errors="replace")
        out += [" ".join(par.split())[:PASSAGE_CHARS] for par in re.split(r"\n\s*\n", text) if par.strip()]
    if not out:
        raise ValueError(f"game 'pasodoble_math': option knowledge={str(folder)!r} holds no .txt or .md text")
    return tuple(out)


# --- the held-out set -----------------------------------------------------------------------------


def held_out_problems(count: int, seed: int = 20261211) -> list[tuple[str, str]]:
    """``count`` fixed word problems with their answers (a seeded draw, never shown to the
    proposer): one- and two-step integer problems and simple fractions. Word problems
    only: a symbolic checker grades a copied "7 + 5" as 12, so a bare expression would
    reward copying the question."""
    rng = random.Random(seed)
    out: list[tuple[str, Any]] = []
    for _ in range(count):
        name, thing = rng.choice(NAMES), rng.choice(TOPICS)
        a, b, c = rng.randint(2, 12), rng.randint(2, 9), rng.randint(1, 5)
        kind = rng.randrange(7)
        if kind == 0:
            out.append((f"{name} has {a} {thing} and gets {b} more. How many {thing} does {name} have now?", a + b))
        elif kind == 1:
            out.append((f"{name} had {a + b} {thing} and gave {b} away. How many {thing} are left?", a))
        elif kind == 2:
            out.append((f"{name} has {b} bags with {a} {thing} in each bag. How many {thing} are there in all?",
                        a * b))
        elif kind == 3:
            out.append((f"{name} shares {a * b} {thing} equally among {b} friends. How many {thing} does each "
                        f"friend get?", a))
        elif kind == 4:
            out.append((f"{name} has {a} {thing}, buys {b} more and then loses {c}. How many {thing} does {name} "
                        f"have?", a + b - c))
        elif kind == 5:
            out.append((f"{name} buys {b} packs of {a} {thing} and gives away {c}. How many {thing} are left?",
                        a * b - c))
        else:
            n = rng.choice((3, 4, 5, 6, 8, 10))
            k = rng.randint(1, n - 1)
            out.append((f"A cake is cut into {n} equal pieces and {name} eats {k} of them. What fraction of the "
                        f"cake did {name} eat?", f"\\frac{{{k}}}{{{n}}}"))
    return [(q, str(answer)) for q, answer in out]


# --- the game ----------------------------------------------------------------------------------------


class PasoDobleMath(Game):
    name = "pasodoble_math"
    description = ("PasoDoble: the proposer writes a math problem and its \\boxed answer, n solvers answer "
                   "(1/0 by math-verify); proposer 1.1 - p + 0.2 d when p > 0.2 and d > 0.3, else 0.")
    roles = (Role("proposer", "writes a math problem and its boxed answer"),
             Role("solver", "answers the problem, the final answer in \\boxed{}"))
    estimators = {"proposer": "rae", "solver": "grpo"}  # why: the module docstring
    history_size: int = HISTORY_SIZE  # problems the diversity term compares with

    def __init__(self, *, solvers: int = 4, min_pass: float = 0.2, min_diversity: float = 0.3,
                 format_penalty: float = -1.0, prompts: str = "terse", knowledge: str | None = None,
                 held_out: int = 64, proposer_tokens: int | None = None, solver_tokens: int | None = None,
                 trivial: float | None = None):
        """``solvers``: answers per problem (PasoDoble: 6). ``min_pass``, ``min_diversity``:
        the proposer's window. ``format_penalty``: a malformed proposal's reward.
        ``prompts``: "terse" or "reasoning". ``knowledge``: a folder of .txt/.md passages.
        ``held_out``: problems in the evaluation. ``proposer_tokens``, ``solver_tokens``:
        generation budgets (terse: 40 for the problem and 12 per answer; reasoning: 512).
        ``trivial``: when set, the reward of a proposal whose answer is a number its
        problem states ("Tom has 7 apples. How many?"), and no solver is asked; None (the
        default) asks the solvers as PasoDoble does. On SmolLM2-135M, 0 kept the solvers
        from learning to copy but left them almost nothing to train on (BENCHMARKS.md)."""
        if prompts not in PROMPT_STYLES:
            raise ValueError(f"game 'pasodoble_math': option prompts={prompts!r}; valid: {', '.join(PROMPT_STYLES)}")
        if solvers < 1:
            raise ValueError(f"game 'pasodoble_math': option solvers={solvers}; it must be >= 1")
        if held_out < 1:
            raise ValueError(f"game 'pasodoble_math': option held_out={held_out}; it must be >= 1")
        self.solvers, self.min_pass, self.min_diversity = solvers, min_pass, min_diversity
        self.format_penalty, self.prompts, self.held_out = format_penalty, prompts, held_out
        self.trivial = trivial
        self.passages = _passages(knowledge) if knowledge else ()
        terse = prompts == "terse"
        self.proposer_tokens = proposer_tokens or (40 if terse else 512)
        self.solver_tokens = solver_tokens or (12 if terse else 512)

    # --- prompts -----------------------------------------------------------------------

    def proposer_prompt(self, rng: random.Random) -> tuple[Any, str]:
        """(the proposer's first prompt, its reply's lead), drawn with the episode's rng."""
        passage = rng.choice(self.passages) if self.passages else None
        if self.prompts == "reasoning":
            if passage is None:
                user = f"Now {PROPOSER_TASK}, using your internal knowledge."
            else:
                user = (f"External knowledge: {passage}\n\nNow {PROPOSER_TASK}, using the provided external and "
                        f"internal knowledge as context.")
            return [{"role": "system", "content": PROPOSER_SYSTEM}, {"role": "user", "content": user}], ""
        name, topic, number = rng.choice(NAMES), rng.choice(TOPICS), rng.randint(2, 20)
        context = f"External knowledge: {passage}\n\n" if passage is not None else ""
        prompt = f"{context}Write a math word problem about {topic} that uses the number {number}, like:\n{EXAMPLE}"
        return prompt, f"Problem: {name} has {number} {topic}"

    def solver_prompt(self, problem: str) -> tuple[Any, str]:
        """(the solver's prompt, its reply's lead) -- also the held-out evaluation's."""
        if self.prompts == "reasoning":
            return [{"role": "system", "content": SOLVER_SYSTEM}, {"role": "user", "content": problem}], ""
        return f"Question: {problem}\nAnswer with a number.", ANSWER_LEAD

    def _answer_options(self) -> dict[str, Any]:
        """How a solver's answer is asked: terse answers stop at the box's closing brace."""
        return {"max_new_tokens": self.solver_tokens, **({"stop": "}"} if self.prompts == "terse" else {})}

    # --- the episode -----------------------------------------------------------------------

    async def play(self, table):
        propose = self._propose_terse if self.prompts == "terse" else self._propose_tagged
        proposal = await propose(table)
        if proposal is None:
            return
        turns, problem, answer, d = proposal
        boxed = last_boxed(answer)
        trivial = stated(problem, boxed)
        table.log("trivial", float(trivial))  # measured under either rule
        if trivial and self.trivial is not None:
            for t in turns:
                table.reward(t, self.trivial)
            table.set_info(answer=boxed, trivial=True)
            return

        prompt, lead = self.solver_prompt(problem)
        solutions = await table.ask("solver", prompt, n=self.solvers, parent=turns[0], prefix=lead,
                                    **self._answer_options())
        scores = []
        for s in solutions:
            verdict = table.verify("math", s.text, answer, expected_boxed=True, require_boxed=True)
            if not verdict.ok:
                table.invalid(s, "no \\boxed answer" if last_boxed(s.text) is None else "unreadable \\boxed answer")
            table.reward(s, verdict.score)
            scores.append(verdict.score)
        p = statistics.fmean(scores)
        if p <= self.min_pass or p >= 1.0:
            for s in solutions:
                table.drop(s, "pass rate outside the window")
        r = proposer_reward(p, d, min_pass=self.min_pass, min_diversity=self.min_diversity)
        for t in turns:
            table.reward(t, r)
        table.log("pass_rate", p)
        table.set_info(answer=boxed, pass_rate=p, proposer_reward=r)

    def problem_of(self, text: str) -> str | None:
        """A terse problem turn's problem (None: malformed): its text after "Problem: " up
        to the first question mark; the drawn lead ("Tom has 7 apples") is part of it."""
        return question(text, "Problem: ")

    def _diversity(self, table, problem: str, written: str) -> float:
        """d of a well-formed problem -- of ``written``, the part the proposer wrote --
        against the history, which then remembers it."""
        history = table.pool(HISTORY, self.history_size)
        seen = tokens(written)
        d = diversity(seen, history.items)
        history.add(sorted(seen))
        table.log("diversity", d)
        table.set_info(problem=problem, diversity=d)
        return d

    async def _propose_tagged(self, table):
        """PasoDoble's own proposal: one generation with <problem> and <answer> tags."""
        prompt, lead = self.proposer_prompt(table.rng)
        [q] = await table.ask("proposer", prompt, prefix=lead, max_new_tokens=self.proposer_tokens)
        problem, answer, why = parse_proposal(q.text)
        if problem is None:
            return self._malformed(table, [q], q, why)
        d = self._diversity(table, problem, problem)
        if answer is None:
            return self._malformed(table, [q], q, why)
        if not table.verify("math", answer, answer, expected_boxed=True).ok:
            return self._malformed(table, [q], q, "unreadable \\boxed answer")
        return [q], problem, answer, d

    async def _propose_terse(self, table):
        """The problem, then (the same thread) its answer; the game writes the format."""
        prompt, lead = self.proposer_prompt(table.rng)
        [q] = await table.ask("proposer", prompt, prefix=lead, stop="?", max_new_tokens=self.proposer_tokens)
        table.set_key(q, "problem")
        problem = self.problem_of(q.text)
        if problem is None:
            return self._malformed(table, [q], q, "no question")
        d = self._diversity(table, problem, problem.removeprefix(lead.removeprefix("Problem: ")))
        [a] = await table.ask("proposer", "Answer with a number.", after=q, prefix=ANSWER_LEAD,
                              **self._answer_options())
        table.set_key(a, "answer")
        if last_boxed(a.text) is None:
            return self._malformed(table, [q, a], a, "no \\boxed answer")
        if not table.verify("math", a.text, a.text, expected_boxed=True).ok:
            return self._malformed(table, [q, a], a, "unreadable \\boxed answer")
        return [q, a], problem, a.text, d

    def _malformed(self, table, turns, culprit, why: str) -> None:
        """A malformed proposal: the culprit turn is invalid (why), every turn of the
        proposal earns the format penalty, and no solver is asked."""
        table.invalid(culprit, why)
        for t in turns:
            table.reward(t, self.format_penalty)
        return None

    # --- evaluation --------------------------------------------------------------------------

    def evaluate(self, ev):
        """Greedy solver accuracy on the held-out word problems, with its standard error."""
        problems = held_out_problems(self.held_out)
        asks = [self.solver_prompt(q) for q, _ in problems]
        answers = ev.ask("solver", [prompt for prompt, _ in asks], each=[{"prefix": lead} for _, lead in asks],
                         temperature=0, **self._answer_options())
        check = ev.kernel.verifiers.get("math")
        correct = [check(t.text, gold, require_boxed=True).score for t, (_, gold) in zip(answers, problems)]
        accuracy = statistics.fmean(correct)
        return {"held_out": {"accuracy": accuracy, "tasks": len(correct),
                             "stderr": math.sqrt(accuracy * (1 - accuracy) / len(correct))}}
