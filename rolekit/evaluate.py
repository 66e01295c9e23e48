"""Evaluating a policy: play it against a scripted opponent, and read off its strategy.

Two kinds of evaluation:

* **Play** (``play_against`` + ``score``): episodes against a scripted opponent with the
  seats alternating, scored from the evaluated policy's point of view (win / draw /
  loss / invalid rates, mean return).
* **Strategy** (``policy_table``): the policy's probability of each legal action at each
  information set of a game that lists them (``game.information_sets()``, e.g. Kuhn
  Poker's 12). In terse mode the probabilities are *exact*: each legal action's whole
  answer (``[check]`` + end of turn) is scored by one teacher-forced forward pass and the
  likelihoods are normalised over the legal actions (``exact_policy_table``). In
  reasoning mode they are *estimated* by sampling answers and counting the parsed
  actions (``sampled_policy_table``), invalid answers counted separately. A game that
  also has ``exploitability(table)`` turns the table into one number.

``rolekit eval`` puts both on the command line; training reuses the functions.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import statistics
import sys
import time
from collections import Counter
from typing import Any, Callable, Mapping, Sequence

import attrs

from rolekit import rollout
from rolekit.game import MoveInfo
from rolekit.plugins import Kernel
from rolekit.table import POLICY, EpisodeSpec, ModelResponder, Responder, ScriptedResponder, Scheduler
from rolekit.types import Episode

PolicyTable = dict[str, dict[str, float]]  # information set -> {legal action: probability}


# --- who plays: a policy name -> a responder -----------------------------------------------


@attrs.frozen(eq=False)
class Policy:
    """An evaluated policy: its responder, and the model behind it (None when scripted)."""

    name: str
    responder: Responder
    model: Any = None  # a LoadedModel
    backend: Any = None
    chat: Any = None
    scripted: Callable[[MoveInfo, random.Random], str] | None = None


def load_policy(kernel: Kernel, game, name: str, *, device: str = "cpu", temperature: float = 1.0,
                batch_size: int = 64, bf16: bool = False) -> Policy:
    """``scripted:NAME`` (a registered opponent), or a model: ``smollm2-135m-instruct``,
    ``tiny-random``, a model directory or a run checkpoint (peft adapter) directory.
    ``bf16``: the weights in bf16 and forward passes under bf16 autocast (fast on a CPU
    with AMX; CUDA runs bf16 anyway). Raises ValueError for a name that is none of these."""
    if name.startswith(rollout.SCRIPTED):
        [(_, responder)] = rollout.scripted_responders(kernel, game, {game.role_names()[0]: name}).items()
        return Policy(name, ScriptedResponder(POLICY, responder.fn), scripted=responder.fn)
    import torch

    from rolekit.backends.hf import HFBackend
    from rolekit.chat import ChatTokenizer
    from rolekit.models import ModelError, load_model

    try:
        loaded = load_model(name, device=device, dtype=torch.bfloat16 if bf16 else None)
    except ModelError as exc:
        raise ValueError(f"{exc} (or scripted:NAME for a scripted policy)") from None
    chat = ChatTokenizer(loaded.tokenizer)
    backend = HFBackend(loaded.model, chat, max_batch_size=batch_size, autocast_bf16=True if bf16 else None)
    responder = ModelResponder(POLICY, backend, chat, temperature=temperature, max_new_tokens=16)
    return Policy(name, responder, model=loaded, backend=backend, chat=chat)


# --- what a game's evaluate() gets ------------------------------------------------------------


class Evaluator:
    """The evaluated policy and the ways a game's ``evaluate`` can use it.

    ``opponents``, ``episodes``, ``exploitability``: what the run's ``[eval]`` section
    asks for; ``seed``: this evaluation's seed (fixed per step, so a re-run matches).
    """

    def __init__(self, kernel: Kernel, game, policy: Policy, *, opponents: Sequence[str] = ("random",),
                 episodes: int = 64, seed: int = 0, torch_seed: int | None = None, exploitability: bool = True,
                 temperature: float = 1.0, concurrency: int = 64):
        self.kernel, self.game, self.policy = kernel, game, policy
        self.opponents, self.episodes, self.seed = tuple(opponents), episodes, seed
        self.torch_seed = seed if torch_seed is None else torch_seed
        self.exploitability, self.temperature, self.concurrency = exploitability, temperature, concurrency

    def plays(self, opponent: str) -> bool:
        """Whether the scripted ``opponent`` is registered and plays this game."""
        name = opponent.removeprefix(rollout.SCRIPTED)
        return name in self.kernel.opponents and rollout.opponent_plays(self.kernel.opponents.entry(name), self.game)

    def play_against(self, opponent: str, episodes: int | None = None, *, mirror: bool = False) -> dict[str, Any]:
        """Win/draw/loss/invalid rates and mean return against a scripted opponent, the
        policy's seat alternating (``score`` without the per-seat split)."""
        with _seeded(self.torch_seed):  # evaluation must not shift the training RNG stream
            played = play_against(self.kernel, self.game, self.policy, opponent, seed=self.seed, mirror=mirror,
                                  episodes=self.episodes if episodes is None else episodes,
                                  concurrency=self.concurrency)
        return {k: v for k, v in score(played).items() if k != "by_seat"}

    def strategy(self) -> dict[str, Any]:
        """Exact exploitability and the strategy table (games with information sets)."""
        table = strategy(self.game, self.policy, temperature=self.temperature)
        return {"exploitability": table["exploitability"], "infosets": table["infosets"]}

    def ask(self, role: str, prompts: Sequence[Any], *, each: Sequence[dict[str, Any]] | None = None,
            **options) -> list[Any]:
        """The policy's answer (a ``Turn``) to each prompt, asked as ``role`` in one batch:
        a held-out task set. ``options``: what ``table.ask`` takes (``temperature=0``
        for greedy answers, ``max_new_tokens``, ``choices``, ``prefix``, ...); ``each``:
        per-prompt options on top (e.g. each task's own ``prefix``)."""
        if each is not None and len(each) != len(prompts):
            raise ValueError(f"ev.ask: {len(each)} per-prompt options for {len(prompts)} prompts")
        from rolekit.game import Game
        from rolekit.types import Role

        class HeldOut(Game):
            name = f"{self.game.name}:eval"
            roles = (Role(role),)

            async def play(_, table):
                await table.ask(role, prompts[table.seed], **options, **(each[table.seed] if each else {}))

        specs = [EpisodeSpec(HeldOut(), i, {role: POLICY}) for i in range(len(prompts))]
        with _seeded(self.torch_seed):
            done = list(Scheduler({POLICY: self.policy.responder}, kernel=self.kernel,
                                  concurrency=self.concurrency).run(specs))
        failed = next((e for e in done if not e.ok), None)
        if failed is not None:
            raise RuntimeError(f"a held-out ask raised: {failed.error.strip().splitlines()[-1]}")
        return [e.turns[0] for e in sorted(done, key=lambda e: e.seed)]


@contextlib.contextmanager
def _seeded(seed: int):
    import torch

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        yield


def run_evaluations(ev: Evaluator) -> dict[str, Any]:
    """What ``ev.game`` offers (its ``evaluate``); a raising one becomes ``{"error": ...}``
    with a warning, never an exception: a failing evaluation must not cost a run its
    checkpoint."""
    try:
        return ev.game.evaluate(ev)
    except Exception as exc:  # reported, not fatal
        message = f"{type(exc).__name__}: {exc}"
        print(f"rolekit: evaluation of {ev.game.name!r} failed: {message}", file=sys.stderr)
        return {"error": message}


# --- play against an opponent ---------------------------------------------------------------


def play_against(kernel: Kernel, game, policy: Policy, opponent: str, *, episodes: int, seed: int = 0,
                 mirror: bool = False, concurrency: int = 64,
                 progress: Callable[[int, int], None] | None = None) -> list[Episode]:
    """``episodes`` episodes of ``policy`` against the scripted ``opponent`` (a registered
    name, with or without ``scripted:``), the policy's seat alternating every episode.
    ``mirror``: deals come in pairs, the policy playing each deal from both seats.
    ``progress(done, total)`` is called after each finished episode."""
    if len(game.role_names()) != 2:
        raise ValueError(f"game {game.name!r} has {len(game.role_names())} roles; eval plays two-player games")
    who = opponent if opponent.startswith(rollout.SCRIPTED) else rollout.SCRIPTED + opponent
    first, second = game.role_names()
    seats = {first: POLICY, second: who}
    responders = rollout.scripted_responders(kernel, game, seats)
    responders[POLICY] = policy.responder
    plan = rollout.specs(game, episodes, seed, seats, mirror=mirror, alternate=not mirror)
    played = []
    beating = progress.heartbeat(episodes) if isinstance(progress, Progress) else contextlib.nullcontext()
    with beating:
        for episode in Scheduler(responders, kernel=kernel, concurrency=concurrency).run(plan):
            played.append(episode)
            if progress is not None:
                progress(len(played), episodes)
    return played


class Progress:
    """``rolekit eval``'s progress on stderr: a line at most every ``every_s`` seconds (and
    at the end), so a long evaluation is never silent; stdout stays the result alone.

    Episodes played concurrently all end near the end, so inside :meth:`heartbeat` a
    thread also prints a line whenever ``every_s`` passes without one, with the policy's
    batches so far (``batches()``: its backend's generation and scoring calls)."""

    def __init__(self, what: str, *, every_s: float = 10.0, stream=None, batches: Callable[[], int] | None = None):
        self.what, self.every_s, self.batches = what, every_s, batches
        self.stream = sys.stderr if stream is None else stream
        self.start = self.last = time.perf_counter()
        self.done: int | None = None
        self.total: int | None = None

    def __call__(self, done: int, total: int) -> None:
        self.done, self.total = done, total
        now = time.perf_counter()
        if done == total or now - self.last >= self.every_s:
            self._line(now)

    def _line(self, now: float) -> None:
        self.last = now
        batches = f", {self.batches()} policy batches" if self.batches is not None else ""
        print(f"rolekit eval: {self.done or 0}/{self.total if self.total is not None else '?'} {self.what}{batches} "
              f"({now - self.start:.0f} s)", file=self.stream, flush=True)

    @contextlib.contextmanager
    def heartbeat(self, total: int):
        """While inside: a line at least every ``every_s`` seconds, even with no episode done."""
        import threading

        self.total = total
        stop = threading.Event()

        def beat():
            while not stop.wait(min(1.0, max(0.05, self.every_s))):
                now = time.perf_counter()
                if now - self.last >= self.every_s:
                    self._line(now)

        thread = threading.Thread(target=beat, name="rolekit-eval-progress", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join()

    def note(self, message: str) -> None:
        print(f"rolekit eval: {message}", file=self.stream, flush=True)


def _backend_calls(policy: Policy) -> Callable[[], int] | None:
    """The policy backend's generation and scoring batches so far, if it counts them."""
    backend = policy.backend
    return (lambda: backend.calls) if hasattr(backend, "calls") else None


def score(episodes: Sequence[Episode]) -> dict[str, Any]:
    """Rates from the policy's point of view, over the seats it played (quarantined
    episodes excluded): win, draw, loss, invalid (it moved illegally), mean_return,
    opponent_invalid, and the same per seat."""

    def rates(eps: list[tuple[Episode, str]]) -> dict[str, float]:
        n = len(eps)
        if n == 0:
            return {"episodes": 0}
        winners = [(ep.info.get("winner"), role) for ep, role in eps]
        return {
            "episodes": n,
            "win": sum(w == r for w, r in winners) / n,
            "draw": sum(w is None for w, _ in winners) / n,
            "loss": sum(w is not None and w != r for w, r in winners) / n,
            "invalid": sum(ep.info.get("invalid") == r for ep, r in eps) / n,
            "opponent_invalid": sum(ep.info.get("invalid") not in (None, r) for ep, r in eps) / n,
            "mean_return": statistics.fmean(ep.returns[r] for ep, r in eps),
        }

    played = [(ep, role) for ep in episodes if ep.ok for role, who in ep.seats.items() if who == POLICY]
    out = rates(played)
    out["quarantined"] = sum(not ep.ok for ep in episodes)
    seats = sorted({role for _, role in played})
    out["by_seat"] = {seat: rates([(ep, r) for ep, r in played if r == seat]) for seat in seats}
    return out


# --- strategy at information sets -----------------------------------------------------------


def _information_sets(game) -> Mapping[str, tuple[Any, str]]:
    sets = getattr(game, "information_sets", None)
    if sets is None:
        raise ValueError(f"game {game.name!r} does not list its information sets; no strategy table for it")
    return sets()


def _answer_start(game, state, role) -> str:
    """What the game's answers start with at this state (lead + prefix), as the sampler sees it."""
    if hasattr(game, "answer_start"):
        return game.answer_start(state, role)
    return getattr(game, "answer_prefix", "")


def answer_ids(chat, text: str) -> tuple[int, ...]:
    """The tokens of an assistant answer ``text`` (without the end-of-turn token)."""
    return tuple(chat.tokenizer(text, add_special_tokens=False)["input_ids"])


def completion_logprobs(model, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], *,
                        stop_ids: Sequence[int] = (), pad_id: int = 0, batch_size: int = 8,
                        temperature: float = 1.0) -> list[float]:
    """log p(completion | prompt) for each (prompt ids, completion ids), by teacher forcing.

    With ``stop_ids``, the answer must also end there: log p(any of ``stop_ids`` | prompt
    + completion) is added (the backend stops at any of them). Exact, at ``temperature``
    (the policy the sampler draws from: softmax(logits / T)).
    """
    from rolekit.backends.hf import teacher_forced

    return [sum(values) for values in teacher_forced(model, pairs, pad_id=pad_id, temperature=temperature,
                                                     batch_size=batch_size, stop_ids=stop_ids)]


def exact_action_logprobs(model, chat, game, *, batch_size: int = 8,
                          temperature: float = 1.0) -> dict[str, dict[str, float]]:
    """log p(answer) of every legal action's answer at every information set (terse mode).

    For each information set, the prompt is the one the game shows (``game.messages``,
    encoded by ``chat``); each legal action's answer ``game.format_action(a)`` followed
    by an end-of-turn token is scored by teacher forcing (``completion_logprobs``). With
    the game's ``answer_prefix`` (e.g. "[") the prefix is part of the prompt; with its
    ``answer_stop`` (e.g. "]") the answer is the move's text followed by any token that
    starts with the stop text (generation ends there).
    """
    if getattr(game, "mode", "terse") != "terse":
        raise ValueError("exact action probabilities need terse mode; in reasoning mode use sampled_policy_table")
    sets = _information_sets(game)
    pairs, owners = [], []
    prefix, stop = getattr(game, "answer_prefix", ""), getattr(game, "answer_stop", "")
    stop_ids = sorted(chat.eos_ids)
    if stop:
        vocab = chat.tokenizer.convert_ids_to_tokens(list(range(len(chat.tokenizer))))
        stop_ids = sorted(i for i, tok in enumerate(vocab)
                          if tok is not None and chat.tokenizer.convert_tokens_to_string([tok]).startswith(stop))
    choose = getattr(game, "choose", False)
    if choose:  # the sampler scores exactly the tokens of each legal answer (after the prefix)
        stop_ids = []
    for key, (state, role) in sets.items():
        start = _answer_start(game, state, role)
        prompt = chat.encode(game.messages(state, role)) + (answer_ids(chat, start) if start else ())
        for action in game.legal_actions(state):
            answer = game.format_action(action)
            if not (answer.startswith(prefix) and answer.endswith(stop)):
                raise ValueError(f"answer {answer!r} does not fit the game's answer prefix/stop {prefix!r}/{stop!r}")
            end = len(answer) if choose else len(answer) - len(stop)
            pairs.append((prompt, answer_ids(chat, answer[len(prefix):end])))
            owners.append((key, action))
    logps = completion_logprobs(model, pairs, stop_ids=stop_ids, pad_id=chat.pad_id, batch_size=batch_size,
                                temperature=temperature)
    grouped: dict[str, dict[str, float]] = {key: {} for key in sets}
    for (key, action), lp in zip(owners, logps):
        grouped[key][action] = lp
    return grouped


def exact_policy_table(model, chat, game, *, batch_size: int = 8, temperature: float = 1.0) -> PolicyTable:
    """Exact action probabilities of a model at every information set (terse mode): the
    likelihoods of the legal answers (``exact_action_logprobs``) normalised over them."""
    logps = exact_action_logprobs(model, chat, game, batch_size=batch_size, temperature=temperature)
    return {key: _softmax(lps) for key, lps in logps.items()}


def _softmax(logps: Mapping[str, float]) -> dict[str, float]:
    top = max(logps.values())
    weights = {a: math.exp(lp - top) for a, lp in logps.items()}
    total = sum(weights.values())
    return {a: w / total for a, w in weights.items()}


def sampled_policy_table(backend, chat, game, *, samples: int, temperature: float = 1.0
                         ) -> tuple[PolicyTable, dict[str, float]]:
    """Estimated action probabilities at every information set: ``samples`` answers per
    information set through ``backend`` (all in one call), parsed by the game.

    Returns (frequencies of each legal action among *valid* answers, uniform where none
    was valid; the fraction of invalid answers per information set).
    """
    from rolekit.types import GenerationRequest

    sets = _information_sets(game)
    requests, owners = [], []
    for key, (state, role) in sets.items():
        start = _answer_start(game, state, role)
        ids = chat.encode(game.messages(state, role)) + (answer_ids(chat, start) if start else ())
        for _ in range(samples):
            requests.append(GenerationRequest(prompt_ids=ids, max_new_tokens=game.max_new_tokens or 16,
                                              temperature=temperature))
            owners.append(key)
    counts: dict[str, Counter] = {key: Counter() for key in sets}
    for key, gen in zip(owners, backend.generate(requests)):
        state, role = sets[key]
        text = _answer_start(game, state, role) + chat.decode(gen.completion_ids)
        counts[key][game.parse_action(state, text)] += 1
    return _frequencies(game, sets, counts)


def scripted_policy_table(fn: Callable[[MoveInfo, random.Random], str], game, *, samples: int = 1000,
                          seed: int = 0) -> tuple[PolicyTable, bool]:
    """A scripted policy's action probabilities at every information set: exact when
    ``fn`` has ``action_probabilities(move)``, else estimated from ``samples`` draws.
    Returns (table, exact)."""
    sets = _information_sets(game)
    moves = {key: MoveInfo(game, state, role, tuple(game.legal_actions(state))) for key, (state, role) in sets.items()}
    exact = getattr(fn, "action_probabilities", None)
    if exact is not None:
        return {key: dict(exact(move)) for key, move in moves.items()}, True
    rng = random.Random(seed)
    counts = {key: Counter(fn(move, rng) for _ in range(samples)) for key, move in moves.items()}
    table, _ = _frequencies(game, sets, counts)
    return table, False


def _frequencies(game, sets, counts: Mapping[str, Counter]) -> tuple[PolicyTable, dict[str, float]]:
    table, invalid = {}, {}
    for key, (state, _) in sets.items():
        legal = list(game.legal_actions(state))
        n = sum(counts[key].values())
        valid = sum(counts[key][a] for a in legal)
        invalid[key] = (n - valid) / n if n else 0.0
        table[key] = {a: (counts[key][a] / valid if valid else 1 / len(legal)) for a in legal}
    return table, invalid


def strategy(game, policy: Policy, *, samples: int = 32, temperature: float = 1.0, seed: int = 0) -> dict[str, Any]:
    """The policy's strategy table (exact, or estimated and how) and, when the game
    defines it, its exploitability: a dict for ``rolekit eval --exploitability``."""
    out: dict[str, Any] = {}
    if policy.scripted is not None:
        table, exact = scripted_policy_table(policy.scripted, game, samples=max(samples, 10000), seed=seed)
        out["extraction"] = "exact" if exact else f"sampled ({max(samples, 10000)} draws per information set)"
    elif getattr(game, "mode", "terse") == "terse":
        logps = exact_action_logprobs(policy.model.model, policy.chat, game, temperature=temperature)
        table = {key: _softmax(lps) for key, lps in logps.items()}
        out["extraction"] = f"exact (teacher-forced likelihood of each legal answer, temperature {temperature})"
        # How likely a sampled answer is exactly one of the legal answers.
        out["legal_answer_probability"] = {key: round(sum(math.exp(lp) for lp in lps.values()), 6)
                                           for key, lps in logps.items()}
    else:
        table, invalid = sampled_policy_table(policy.backend, policy.chat, game, samples=samples,
                                              temperature=temperature)
        out["extraction"] = f"sampled ({samples} answers per information set, temperature {temperature})"
        out["invalid_by_infoset"] = {k: round(v, 6) for k, v in invalid.items()}
    exploitability = getattr(game, "exploitability", None)
    if exploitability is None:
        raise ValueError(f"game {game.name!r} defines no exploitability")
    out["exploitability"] = float(exploitability(table))
    out["infosets"] = {key: {a: round(p, 6) for a, p in dist.items()} for key, dist in table.items()}
    return out


def average_strategy(game, tables: Sequence[PolicyTable], weights: Sequence[float], *, weighting: str = "",
                     steps: Sequence[int] = ()) -> dict[str, Any]:
    """The average policy of a population (draw member k with probability ``weights[k]`` per
    game, then play it) as one strategy table, and its exact exploitability: each member's
    table reach-weighted at every information set (``game.average_strategy``)."""
    if not tables:
        raise ValueError("the average policy needs at least one snapshot")
    table = game.average_strategy(tables, weights)
    out: dict[str, Any] = {"exploitability": float(game.exploitability(table)), "snapshots": len(tables)}
    if weighting:
        out["weighting"] = weighting
    if steps:
        out["members"] = [{"step": s, "weight": round(w, 6)} for s, w in zip(steps, weights)]
    out["infosets"] = {key: {a: round(p, 6) for a, p in dist.items()} for key, dist in table.items()}
    return out


# --- the average policy of a run's population ----------------------------------------------


@contextlib.contextmanager
def using_weights(model, weights: Mapping[str, Any]):
    """Temporarily give ``model``'s parameters named in ``weights`` those values (a snapshot
    of the trained ones: LoRA or full weights, named as in training), then restore them."""
    import torch

    params = dict(model.named_parameters())
    missing = [n for n in weights if n not in params]
    if missing:
        raise ValueError(f"a snapshot names {len(missing)} parameters the model does not have (e.g. {missing[0]!r})")
    with torch.no_grad():
        saved = {n: params[n].detach().clone() for n in weights}
        for n, w in weights.items():
            params[n].copy_(w)
        try:
            yield
        finally:
            for n, w in saved.items():
                params[n].copy_(w)


class AverageResponder:
    """The average policy: one population member drawn per episode (by the population's
    weights), which then answers every ask of that episode.

    An episode is recognised by its responder RNG (one per episode); its member is drawn
    with a ``random.Random`` seeded by its first ask's sampling seed, so a re-run draws
    the same members. Asks are answered in one batch per member, that member's weights
    swapped into the model for it."""

    def __init__(self, base: Responder, model, pool: Sequence[Mapping[str, Any]], population):
        import weakref

        if not pool:
            raise ValueError("the average policy needs a population; the run has no snapshots")
        self.name, self.base, self.model, self.pool, self.population = base.name, base, model, pool, population
        self._member: "weakref.WeakKeyDictionary[random.Random, int]" = weakref.WeakKeyDictionary()
        self.drawn: Counter = Counter()  # member index -> episodes it played

    def member(self, ask) -> int:
        if ask.rng not in self._member:
            index = self.population.draw(random.Random(ask.seed))
            self._member[ask.rng] = index
            self.drawn[index] += 1
        return self._member[ask.rng]

    def respond(self, asks):
        answers: list[Any] = [None] * len(asks)
        groups: dict[int, list[int]] = {}
        for i, ask in enumerate(asks):
            groups.setdefault(self.member(ask), []).append(i)
        for index, members in sorted(groups.items()):
            with using_weights(self.model, self.pool[index]):
                for i, a in zip(members, self.base.respond([asks[i] for i in members])):
                    answers[i] = a
        return answers


def load_population(checkpoint_dir) -> tuple[list[dict[str, Any]], Any]:
    """A run checkpoint's snapshot pool (the weights) and its population (steps, ratings,
    weighting), as training left them."""
    from rolekit import checkpoint
    from rolekit.population import Population

    state = checkpoint.load_state(checkpoint_dir)
    pool = state.get("pool") or []
    saved = state.get("population")
    saved = saved or {}
    population = Population(saved.get("weighting", "uniform"), capacity=max(len(pool), 1),
                            recency_decay=saved.get("recency_decay", 0.8), elo_k=saved.get("elo_k", 32.0))
    if saved:
        population.load_state_dict(saved)
    else:
        for _ in pool:
            population.add(0)
    return pool, population


def average_policy(the_policy: Policy, checkpoint_dir) -> tuple[Policy, list[dict[str, Any]], Any]:
    """``the_policy`` (loaded from a run checkpoint) turned into its run's average policy."""
    pool, population = load_population(checkpoint_dir)
    responder = AverageResponder(the_policy.responder, the_policy.model.model, pool, population)
    return attrs.evolve(the_policy, responder=responder), pool, population


def average_policy_strategy(game, the_policy: Policy, pool, population, *, temperature: float) -> dict[str, Any]:
    """The exact exploitability of a run's average policy: each member's exact strategy
    table (terse mode), reach-weighted by ``average_strategy``."""
    tables = []
    for weights in pool:
        with using_weights(the_policy.model.model, weights):
            tables.append(exact_policy_table(the_policy.model.model, the_policy.chat, game, temperature=temperature))
    out = average_strategy(game, tables, population.weights(), weighting=population.weighting,
                           steps=population.steps)
    out["extraction"] = f"exact (average of {len(tables)} snapshots, each teacher-forced, temperature {temperature})"
    return out


# --- rolekit eval ---------------------------------------------------------------------------


def resolve_policy(policy: str, say: Callable[[str], None] | None = None) -> tuple[str, str | None]:
    """A run directory given as ``--policy`` means one of its checkpoints: ``checkpoints/best``
    when the run kept one, else the newest (``checkpoint.for_eval``); ``say`` is told which.
    Returns (what to load, the checkpoint directory or None for a model name)."""
    from pathlib import Path

    from rolekit import checkpoint

    path = Path(policy).expanduser()
    if policy.startswith(rollout.SCRIPTED) or not path.is_dir():
        return policy, None
    if (path / "checkpoints").is_dir() or (path / checkpoint.STATE_FILE).exists():
        found, line = checkpoint.for_eval(path)
        if say is not None:
            say(f"evaluating {line}")
        return str(found), str(found)
    return policy, None


def evaluate(kernel: Kernel, *, game: str, policy: str, opponent: str = "random", episodes: int = 100,
             seed: int = 0, options: Mapping[str, Any] | None = None, exploitability: bool = False,
             samples: int = 32, temperature: float = 1.0, mirror: bool = False, device: str = "cpu",
             concurrency: int = 64, batch_size: int = 64, average: bool = False,
             progress: bool = False, bf16: bool = False) -> dict[str, Any]:
    """What ``rolekit eval`` prints as JSON. ``average``: the run's average policy (one
    snapshot of its population drawn per episode) instead of the checkpoint's own;
    ``progress``: lines on stderr while it runs."""
    if episodes < 0:
        raise ValueError(f"--episodes must be >= 0, got {episodes}")
    the_game = rollout.make_game(kernel, game, dict(options or {}))
    if exploitability and not hasattr(the_game, "information_sets"):
        raise ValueError(f"--exploitability: game {game!r} has no exact evaluation "
                         f"(it needs a game with information_sets(), such as kuhn_poker)")
    start = time.perf_counter()
    note = Progress("").note
    loaded, checkpoint_dir = resolve_policy(policy, note)  # which checkpoint: said even without progress
    say = note if progress else None
    if average and checkpoint_dir is None:
        raise ValueError(f"--average: --policy {policy!r} is not a run directory or run checkpoint "
                         f"(the average policy is over a run's snapshots)")
    if not policy.startswith(rollout.SCRIPTED):
        import torch

        torch.manual_seed(seed)
    the_policy = load_policy(kernel, the_game, loaded, device=device, temperature=temperature,
                             batch_size=batch_size, bf16=bf16)
    plain = the_policy
    if average:
        the_policy, pool, population = average_policy(the_policy, checkpoint_dir)
        if say is not None:
            say(f"the average policy of {len(pool)} snapshots (steps {', '.join(map(str, population.steps))}; "
                f"{population.weighting} weights)")
    opponent_name = opponent.removeprefix(rollout.SCRIPTED)
    played = play_against(kernel, the_game, the_policy, opponent_name, episodes=episodes, seed=seed,
                          mirror=mirror, concurrency=concurrency,
                          progress=Progress(f"episodes vs {opponent_name}", batches=_backend_calls(the_policy))
                          if progress else None)
    result = score(played)
    report: dict[str, Any] = {"game": game, "policy": policy, "opponent": opponent_name,
                              "episodes": result.pop("episodes", 0), "seed": seed}
    if checkpoint_dir is not None:
        report["checkpoint"] = checkpoint_dir
    if average:
        report["average"] = {"snapshots": len(pool), "weighting": population.weighting,
                             "members": population.describe(),
                             "episodes_by_member": {population.steps[i]: n
                                                    for i, n in sorted(the_policy.responder.drawn.items())}}
    for key in ("win", "draw", "loss", "invalid", "mean_return"):
        report[key] = result.pop(key, None)
    report.update(result)
    if options:
        report["options"] = dict(options)
    if exploitability:
        if say is not None:
            say("computing the strategy at every information set")
        if average:
            if getattr(the_game, "mode", "terse") != "terse" or not hasattr(the_game, "average_strategy"):
                raise ValueError(f"--average --exploitability: game {game!r} has no exact average policy "
                                 f"(it needs terse mode and average_strategy(), as kuhn_poker has)")
            report.update(average_policy_strategy(the_game, plain, pool, population, temperature=temperature))
        else:
            report.update(strategy(the_game, the_policy, samples=samples, temperature=temperature, seed=seed))
    report["seconds"] = round(time.perf_counter() - start, 3)
    return report


def offered(kernel: Kernel, *, game: str, policy: str, options: Mapping[str, Any] | None = None, seed: int = 0,
            temperature: float = 1.0, device: str = "cpu", batch_size: int = 64, bf16: bool = False,
            **eval_section) -> dict[str, Any]:
    """The evaluations ``game`` offers (``Game.evaluate``), for ``policy``: what training runs
    every ``eval.every`` steps (``rolekit eval --offered``)."""
    the_game = rollout.make_game(kernel, game, dict(options or {}))
    start = time.perf_counter()
    import torch

    torch.manual_seed(seed)
    policy, _ = resolve_policy(policy, lambda line: print(f"rolekit eval: {line}", file=sys.stderr))
    the_policy = load_policy(kernel, the_game, policy, device=device, temperature=temperature, batch_size=batch_size,
                             bf16=bf16)
    ev = Evaluator(kernel, the_game, the_policy, seed=seed, temperature=temperature, **eval_section)
    result = run_evaluations(ev)
    return {"game": game, "policy": policy, "seed": seed, "options": dict(options or {}), "offered": result,
            "seconds": round(time.perf_counter() - start, 3)}


def cmd_eval(args) -> int:
    kernel = Kernel(disable=getattr(args, "disable", None) or ())
    if args.offered:
        report = offered(kernel, game=args.game, policy=args.policy, options=_options(args), seed=args.seed,
                         temperature=args.temperature, device=args.device, batch_size=args.batch_size, bf16=args.bf16,
                         opponents=(args.opponent,), episodes=args.episodes, exploitability=args.exploitability)
        print(json.dumps(report, indent=2))
        return 1 if "error" in report["offered"] else 0
    report = evaluate(
        kernel, game=args.game, policy=args.policy, opponent=args.opponent, episodes=args.episodes,
        seed=args.seed, options=_options(args), exploitability=args.exploitability, samples=args.samples,
        temperature=args.temperature, mirror=args.mirror, device=args.device, concurrency=args.concurrency,
        batch_size=args.batch_size, average=args.average, progress=not args.quiet, bf16=args.bf16,
    )
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table as RichTable

    console = Console()
    table = RichTable("seat", "episodes", "win", "draw", "loss", "invalid", "mean return",
                      title=f"{args.policy} vs {report['opponent']} on {args.game}")
    rows = [("all", report)] + list(report["by_seat"].items())
    for seat, r in rows:
        if r.get("episodes"):
            table.add_row(seat, str(r["episodes"]), *(f"{r[k]:.3f}" for k in ("win", "draw", "loss", "invalid")),
                          f"{r['mean_return']:+.3f}")
    console.print(table)
    if "checkpoint" in report:
        console.print(f"checkpoint: {report['checkpoint']}" + (" (average policy)" if "average" in report else ""),
                      markup=False)
    if "exploitability" in report:
        console.print(f"exploitability: {report['exploitability']:.4f}  ({report['extraction']})")
        for key, dist in report["infosets"].items():
            console.print(f"  {key:>4}: " + ", ".join(f"{a} {p:.3f}" for a, p in dist.items()), markup=False)
    return 0


def _options(args) -> dict[str, Any]:
    options = rollout.parse_pairs(args.option, "--option")
    if args.max_new_tokens is not None:
        options["max_new_tokens"] = args.max_new_tokens
    return options


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("eval", help="play a policy against a scripted opponent; Kuhn: exact exploitability")
    p.add_argument("--policy", default="smollm2-135m-instruct",
                   help="smollm2-135m-instruct, tiny-random, a model directory, a run directory (its "
                        "checkpoints/best, else its newest checkpoint; it says which), a run checkpoint, "
                        "or scripted:NAME")
    p.add_argument("--game", required=True)
    p.add_argument("--opponent", default="random", help="a scripted opponent (random, minimax, nash, heuristic, ...)")
    p.add_argument("--episodes", type=int, default=100, help="episodes to play; seats alternate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="game option, e.g. mode=reasoning or rounds=5")
    p.add_argument("--exploitability", action="store_true",
                   help="also the policy's action probabilities at every information set and its exploitability")
    p.add_argument("--samples", type=int, default=32,
                   help="answers sampled per information set in reasoning mode")
    p.add_argument("--mirror", action="store_true", help="play every deal from both seats")
    p.add_argument("--average", action="store_true",
                   help="a run's average policy: one of its snapshots drawn per episode (by the run's "
                        "snapshots.weighting), then played; with --exploitability, exact (Kuhn)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--offered", action="store_true",
                   help="run the evaluations the game itself offers (what training runs: a held-out task set, "
                        "win rates, exploitability) and print them as JSON")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="the policy's sampling temperature (0: greedy; default 1, as in training)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="per move (default: the game's)")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--bf16", action="store_true",
                   help="bf16 weights and autocast: ~2x faster on a CPU with AMX (grep amx_bf16 /proc/cpuinfo)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)
