"""The episode runtime: ``Table`` (what a game sees) and the ``Scheduler`` that batches asks.

A game's ``play`` is a coroutine. ``await table.ask(...)`` suspends it and hands the ask
to the scheduler, which drives many episodes at once: every round it collects all
pending asks, groups them by who answers them (the seat map), answers each group in one
backend call, and resumes the episodes. No event loop is involved, so a breakpoint in a
game works as in any Python code.
"""

from __future__ import annotations

import itertools
import math
import numbers
import random
import sys
import traceback
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Protocol, Sequence

import attrs

from rolekit.types import Episode, Turn, Verdict

if TYPE_CHECKING:
    from rolekit.game import Game
    from rolekit.plugins import Kernel
    from rolekit.pools import Pool, Pools

POLICY = "policy"
SAMPLING_KEYS = ("max_new_tokens", "temperature", "top_p", "top_k")


class RolloutAborted(RuntimeError):
    """Too many episodes raised; the message carries the first traceback."""


@attrs.frozen
class AskRequest:
    """One ``table.ask`` as a responder sees it."""

    game: str
    role: str
    prompt: Any  # str or chat messages
    n: int
    sampling: dict[str, Any]
    info: Any = None  # game-specific (e.g. MoveInfo) for scripted responders
    after: Turn | None = None  # continue this turn's thread
    prefix: str = ""  # the answer starts with this text (part of the prompt, not generated)
    stop: str = ""  # generation ends at the first token containing this text
    choices: tuple[str, ...] = ()  # if given, the answer is one of these (after the prefix)
    rng: random.Random | None = attrs.field(default=None, eq=False, repr=False)
    seed: int = 0  # this ask's sampling seed, from the episode's seed and the ask's number in it (ask_seed)


@attrs.frozen
class Answer:
    """What a responder returns for one sample of an ask."""

    text: str
    prompt_ids: tuple[int, ...] = ()
    completion_ids: tuple[int, ...] = ()
    logprobs: tuple[float, ...] = ()
    finish_reason: str = "stop"
    temperature: float = 1.0
    choice_ids: tuple[tuple[int, ...], ...] = ()  # constrained choice: every legal answer's ids
    choice_logprob: float | None = None  # ... and log pi(this one | one of them)
    max_new_tokens: int = 0  # the generation budget it was produced under (0: the run's default)


class Responder(Protocol):
    """Answers asks: the trained policy, a snapshot, another model, or a scripted player."""

    name: str

    def respond(self, asks: Sequence[AskRequest]) -> list[list[Answer]]: ...


class Ask:
    """``await table.ask(...)``: suspends the episode until its answers arrive."""

    def __init__(self, table: "Table", role: str, prompt: Any, n: int, after: Turn | None, info: Any, sampling,
                 parent: Turn | None = None, prefix: str = "", stop: str = "", choices: tuple[str, ...] = (),
                 seed: int = 0):
        self.table, self.role, self.prompt, self.n, self.prefix, self.stop = table, role, prompt, n, prefix, stop
        self.seed = seed
        self.choices = tuple(choices)
        self.after, self.info, self.sampling = after, info, sampling
        self.parent = parent if parent is not None else after
        self.answers: list[Answer] | None = None

    def request(self) -> AskRequest:
        return AskRequest(self.table.game_name, self.role, self.prompt, self.n, self.sampling,
                          self.info, self.after, self.prefix, self.stop, self.choices, self.table.responder_rng,
                          self.seed)

    def responder_name(self) -> str:
        """Who answers it: the seat map's entry for its role."""
        return self.table.seats.get(self.role, POLICY)

    def __await__(self):
        yield (self,)
        return self.table._record(self)

    def __iter__(self):  # `[turn] = table.ask(...)` without await lands here
        raise TypeError(f"table.ask({self.role!r}, ...) was not awaited: write `[turn] = await table.ask(...)`")


class JudgeAsk(Ask):
    """``await table.judge(...)``: suspends the episode until the judge's verdicts arrive.

    Batched by the scheduler with every other episode's asks of the same judge; the
    verdicts are values, not turns, so they never become training samples."""

    def __init__(self, table: "Table", spec: str, items: tuple, rubric: str, scale: str, constrained: bool,
                 max_new_tokens: int):
        from rolekit.verifiers.judges import JudgeRequest

        self.table, self.role, self.answers = table, f"judge:{spec}", None
        self.judge_request = JudgeRequest(table.game_name, spec, items, rubric, scale, constrained, max_new_tokens)

    def request(self):
        return self.judge_request

    def responder_name(self) -> str:
        return self.role

    def __await__(self):
        yield (self,)
        return self.table._record_verdicts(self)


class Gather:
    """``await table.gather(ask_a, ask_b, ...)``: several asks answered in the same round."""

    def __init__(self, asks: Sequence[Ask]):
        self.asks = tuple(asks)

    def __await__(self):
        yield self.asks
        return [a.table._record_verdicts(a) if isinstance(a, JudgeAsk) else a.table._record(a) for a in self.asks]


class Table:
    """What a game sees during one episode."""

    def __init__(self, game: "Game", seed: int, seats: dict[str, str], kernel: "Kernel | None" = None,
                 turn_ids: Iterator[int] | None = None, *, pools: "Pools | None" = None, entry: int = 0):
        self.game = game
        self.game_name = game.name
        self.seed = seed
        self.seats = dict(seats)
        self.rng = random.Random(seed)
        self.responder_rng = random.Random(seed * 1_000_003 + 17)
        self.kernel = kernel
        self.turns: list[Turn] = []
        self.rewards: dict[int, float] = {}
        self.terminal: dict[str, float] = {}
        self.logs: dict[str, float] = {}
        self.info: dict[str, Any] = {}
        self.dropped: dict[int, str] = {}
        self.invalids: dict[int, str] = {}
        self.keys: dict[int, str] = {}
        self.entry = entry
        self._pools = pools
        self._actions: dict[int, str | None] = {}
        self._ids = turn_ids if turn_ids is not None else itertools.count()
        self._asks = 0  # asks made so far: the next one's number, for its sampling seed

    # --- asking ---------------------------------------------------------------------

    def ask(self, role: str, prompt: Any, n: int = 1, *, after: Turn | None = None, parent: Turn | None = None,
            info: Any = None, prefix: str = "", stop: str = "", choices: Sequence[str] = (), **sampling) -> Ask:
        """Ask ``role`` for ``n`` answers to ``prompt`` (a string or chat messages).

        ``after``: a previous Turn of the same seat whose context (prompt + completion
        token ids) this ask extends, so multi-turn contexts are never re-tokenised.
        ``parent``: the turn this ask was spawned from (provenance only, e.g. the
        question a solver answers); defaults to ``after``.
        ``prefix``: text the answer is forced to start with (e.g. "[" so a small model
        answers in the move format); its tokens belong to the prompt, and the turn's
        text is prefix + generated text. ``stop``: generation ends at the first token
        containing this text (e.g. "]" after a terse move). ``choices``: a model answers
        with one of these texts (after the prefix), sampled from its own likelihoods of
        them renormalised over the choices (constrained decoding: never malformed).
        ``sampling``: max_new_tokens, temperature, top_p, top_k. Await the result: a
        list of ``n`` Turns.
        """
        if role not in self.game.role_names():
            raise ValueError(f"game {self.game_name!r} has no role {role!r} (roles: {self.game.role_names()})")
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        unknown = set(sampling) - set(SAMPLING_KEYS)
        if unknown:
            raise TypeError(f"unknown sampling option {sorted(unknown)[0]!r}; valid: {SAMPLING_KEYS}")
        self._asks += 1
        return Ask(self, role, prompt, n, after, info, sampling, parent, prefix, stop, choices,
                   ask_seed(self.seed, self._asks - 1))

    def gather(self, *asks: Ask) -> Gather:
        """Await several asks at once: ``a, b = await table.gather(table.ask(..), table.ask(..))``."""
        return Gather(asks)

    def judge(self, spec: str, items: Sequence[Any], *, rubric: str = "", scale: str = "yes_no",
              constrained: bool = False, max_new_tokens: int = 16) -> JudgeAsk:
        """Ask the judge ``spec`` for one ``Verdict`` per item; await the list.

        ``spec``: ``judge:frozen`` (the base model, adapter disabled), ``judge:PATH``,
        ``reward_model:PATH``, or a rule judge (``refusal``, ``think_answer``, any verifier);
        see ``rolekit.verifiers.judges``. ``items``: strings, (prompt, response) pairs or
        ``JudgeItem``s. A model judge is asked ``rubric`` about each item and answers on
        ``scale`` ("yes_no": 1/0, "score": 1-10 rescaled to [0, 1]); what it cannot parse
        is a verdict with ``ok=False`` and a nan score (never a silent 0).
        ``constrained``: a model judge's verdict is the expectation over the labels under its
        own likelihoods (P(yes); the expected score): always a verdict.
        Judges are batched across episodes and counted in the step's metrics (``judges``)."""
        from rolekit.verifiers.judges import SCALES, JudgeItem

        if scale not in SCALES:
            raise ValueError(f"table.judge scale {scale!r}: expected one of {SCALES}")
        parsed = tuple(JudgeItem.of(item) for item in items)
        if not parsed:
            raise ValueError(f"table.judge({spec!r}, ...) needs at least one item")
        return JudgeAsk(self, spec, parsed, rubric, scale, constrained, max_new_tokens)

    def _record_verdicts(self, ask: JudgeAsk) -> list[Verdict]:
        verdicts = list(ask.answers or ())
        calls = self.info.setdefault("judged", {})
        spec = ask.judge_request.spec
        calls[spec] = calls.get(spec, 0) + len(verdicts)
        return verdicts

    def _record(self, ask: Ask) -> list[Turn]:
        responder = self.seats.get(ask.role, POLICY)
        turns = []
        ask_id = None
        for answer in ask.answers or ():
            turn_id = next(self._ids)
            ask_id = turn_id if ask_id is None else ask_id
            turn = Turn(
                id=turn_id, ask=ask_id, role=ask.role, game=self.game_name, text=answer.text, prompt=ask.prompt,
                prompt_ids=answer.prompt_ids, completion_ids=answer.completion_ids, logprobs=answer.logprobs,
                responder=responder, parent=ask.parent.id if ask.parent is not None else None,
                finish_reason=answer.finish_reason, temperature=answer.temperature,
                choice_ids=answer.choice_ids, choice_logprob=answer.choice_logprob,
                max_new_tokens=answer.max_new_tokens,
            )
            self.turns.append(turn)
            turns.append(turn)
        return turns

    # --- outcomes -------------------------------------------------------------------

    def reward(self, turn: Turn, x: float) -> None:
        """Add ``x`` to ``turn``'s reward (and so to its role's episode return).

        A turn's credit is its own reward plus its role's terminal return (``set_return``):
        in a fan-out, each answer of one ask is credited with what it earned."""
        self.rewards[turn.id] = self.rewards.get(turn.id, 0.0) + self._number(x, turn.role)

    def set_return(self, role: str, x: float) -> None:
        """Set the terminal return of ``role`` (added to the credit of each of its turns)."""
        if role not in self.game.role_names():
            raise ValueError(f"game {self.game_name!r} has no role {role!r} (roles: {', '.join(self.game.role_names())})")
        self.terminal[role] = self._number(x, role)

    def _number(self, x: Any, role: str) -> float:
        """A reward as a finite float; anything else raises (and quarantines the episode)."""
        if isinstance(x, bool) or not isinstance(x, numbers.Real):
            raise TypeError(f"game {self.game_name!r}, role {role!r}, seed {self.seed}: a reward must be a number, "
                            f"got {type(x).__name__} {x!r}")
        if not math.isfinite(x):
            raise ValueError(f"game {self.game_name!r}, role {role!r}, seed {self.seed}: non-finite reward {x!r}")
        return float(x)

    def drop(self, turn: Turn, reason: str) -> None:
        """Exclude ``turn`` from training (it still counts in the episode); metrics count
        ``reason`` per (game, role). E.g. SPELL's questions answerable without the document."""
        self.dropped[turn.id] = str(reason)

    def invalid(self, turn: Turn, reason: str) -> None:
        """Mark ``turn`` invalid (a bad format, an illegal move); it still trains on its
        reward unless also dropped. Metrics count ``reason`` per (game, role)."""
        self.invalids[turn.id] = str(reason)

    def set_key(self, turn: Turn, key: str) -> None:
        """Give ``turn`` a baseline key (e.g. AZR's task type): ``role_norm`` and ``rae``
        keep their statistics per (game, role, key), so tasks of different difficulty
        are not normalised against each other."""
        self.keys[turn.id] = str(key)

    def pool(self, name: str, capacity: int | None = None) -> "Pool":
        """A named store the game keeps across episodes and steps (checkpointed, restored
        exactly on resume): AZR's valid programs, SPELL's per-document history, eva's
        prompts. ``capacity`` bounds its list (oldest items leave first)."""
        if self._pools is None:
            from rolekit.pools import Pools

            self._pools = Pools()
        return self._pools.get(name, capacity)

    def set_action(self, turn: Turn, action: str | None) -> None:
        """Record the move a game extracted from ``turn`` (None: invalid)."""
        self._actions[turn.id] = action

    def set_info(self, **facts: Any) -> None:
        self.info.update(facts)

    def log(self, key: str, x: float) -> None:
        """Record a figure of this episode (the last value per key); the step's metrics hold
        each key's mean over the episodes that logged it, under ``games.<game>``."""
        self.logs[key] = float(x)

    def verify(self, name: str, *args, **kwargs) -> Verdict:
        """Run a registered verifier; a verifier that raises yields ``Verdict(0, ok=False)``."""
        if self.kernel is None:
            raise RuntimeError("table.verify needs a Kernel (no plugins loaded)")
        entry = self.kernel.verifiers.entry(name)
        if entry.meta.get("judge"):
            raise TypeError(f"{name!r} is a model judge: ask it with `await table.judge({name + ':...'!r}, items)`")
        fn = entry.obj
        try:
            verdict = fn(*args, **kwargs)
        except Exception as exc:
            return Verdict(0.0, ok=False, detail=f"verifier {name!r} raised {type(exc).__name__}: {exc}")
        return verdict if isinstance(verdict, Verdict) else Verdict(float(verdict))

    def episode(self, error: str | None = None) -> Episode:
        turns = tuple(attrs.evolve(t, action=self._actions[t.id]) if t.id in self._actions else t
                      for t in self.turns)
        returns = {r: 0.0 for r in self.game.role_names()}
        for t in turns:
            returns[t.role] += self.rewards.get(t.id, 0.0)
        for role, x in self.terminal.items():
            returns[role] = returns.get(role, 0.0) + x
        return Episode(game=self.game_name, seed=self.seed, turns=turns, rewards=dict(self.rewards),
                       returns=returns, seats=dict(self.seats), logs=dict(self.logs), error=error,
                       info=dict(self.info), dropped=dict(self.dropped), invalid=dict(self.invalids),
                       keys=dict(self.keys), entry=self.entry)


def ask_seed(episode_seed: int, k: int) -> int:
    """The sampling seed of the ``k``-th ask of the episode seeded ``episode_seed`` (63 bits,
    splitmix64 of the pair): what a seeded responder samples that ask's answers from, so they
    depend on the episode alone, not on the batch or the process that answers them."""
    x = (episode_seed * 0x9E3779B97F4A7C15 + k + 1) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (x ^ (x >> 31)) >> 1


# --- responders ---------------------------------------------------------------------------


class ModelResponder:
    """Answers asks with a language model through a backend, all asks of a round in one call.

    ``seeded``: sample each ask's answers from its own seed (``AskRequest.seed``: free text
    through ``GenerationRequest.seed``, choices through a seeded generator) instead of the
    global torch RNG, so an episode plays the same however asks are batched or spread over
    processes (``rollout.seeded_sampling``; on by itself across Ray workers).
    """

    def __init__(self, name: str, backend, chat, *, max_new_tokens: int = 64, temperature: float = 1.0,
                 top_p: float = 1.0, top_k: int = 0, seeded: bool = False):
        from rolekit.types import GenerationRequest  # local: keeps table import light

        self._request = GenerationRequest
        self.name, self.backend, self.chat, self.seeded = name, backend, chat, seeded
        self.defaults = {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p,
                         "top_k": top_k}
        # Opening prompts repeat (a Kuhn deal has 6, an empty TicTacToe board 2): their ids are
        # kept, so the chat template and the tokenizer run once per distinct prompt.
        self._opening_ids: dict[tuple, tuple[int, ...]] = {}

    def prompt_ids(self, ask: AskRequest) -> tuple[int, ...]:
        if ask.after is None:
            return self._opening(ask.prompt, ask.prefix)
        if not isinstance(ask.prompt, str):
            raise TypeError("a follow-up ask (after=turn) takes the new user message as a string")
        ids = self.chat.continue_ids(ask.after.context_ids, ask.after.finish_reason, ask.prompt)
        return ids + self.chat.text_ids(ask.prefix) if ask.prefix else ids

    def _opening(self, prompt: Any, prefix: str) -> tuple[int, ...]:
        key = (_frozen(prompt), prefix)
        ids = self._opening_ids.get(key)
        if ids is None:
            ids = self.chat.encode(prompt) + (self.chat.text_ids(prefix) if prefix else ())
            if len(self._opening_ids) >= 4096:
                self._opening_ids.clear()
            self._opening_ids[key] = ids
        return ids

    def respond(self, asks: Sequence[AskRequest]) -> list[list[Answer]]:
        out: list[list[Answer]] = [[] for _ in asks]
        chosen = [i for i, ask in enumerate(asks) if ask.choices]
        if chosen:
            for i, answers in zip(chosen, self._choose([asks[i] for i in chosen])):
                out[i] = answers
        requests, owners = [], []
        for i, ask in enumerate(asks):
            if ask.choices:
                continue
            ids = self.prompt_ids(ask)
            params = {**self.defaults, **ask.sampling}
            stop_ids = self.chat.ids_containing(ask.stop) if ask.stop else frozenset()
            for j in range(ask.n):
                seed = {"seed": (ask.seed + j) % 2**63} if self.seeded else {}  # answer j of the ask
                requests.append(self._request(prompt_ids=ids, stop_ids=stop_ids, **params, **seed))
                owners.append(i)
        generations = self.backend.generate(requests) if requests else []
        for owner, req, gen in zip(owners, requests, generations):
            out[owner].append(Answer(
                text=asks[owner].prefix + self.chat.decode(gen.completion_ids), prompt_ids=req.prompt_ids,
                completion_ids=gen.completion_ids, logprobs=gen.logprobs, finish_reason=gen.finish_reason,
                temperature=req.temperature, max_new_tokens=req.max_new_tokens,
            ))
        return out

    def _choose(self, asks: Sequence[AskRequest]) -> list[list[Answer]]:
        """Constrained answers: score every legal answer of every ask by teacher forcing, one
        backend call per distinct temperature (each ask at its own), and sample n each from
        the model's likelihoods renormalised over the legal answers, cut by the ask's top_k
        and top_p (``backends.hf.truncated``). Temperature 0: the likeliest, n times, scored
        at temperature 1.

        ``choice_logprob`` is log pi_T(answer | the legal answers) *before* the top-k/top-p
        cut -- the convention of free-text logprobs (``backends.hf``): it is exactly what the
        learner recomputes (``learner.policy_logprobs``), so the PPO ratio starts at 1. With
        top_p = 1 and top_k = 0 (the defaults) it is the probability the answer was sampled
        with; with a cut, sampling favours the kept answers as free-text sampling does.
        """
        import torch

        from rolekit.backends.hf import truncated

        params = [{**self.defaults, **ask.sampling} for ask in asks]
        temperatures = [p["temperature"] if p["temperature"] > 0 else 1.0 for p in params]
        pairs, spans = [], []
        for ask in asks:
            ids = self.prompt_ids(ask)
            start = len(pairs)
            pairs += [(ids, self.chat.text_ids(c)) for c in ask.choices]
            spans.append((start, len(pairs), ids))
        scored: list = [None] * len(pairs)
        for temperature in dict.fromkeys(temperatures):  # one scoring pass per temperature
            rows = [k for (start, end, _), t in zip(spans, temperatures) if t == temperature for k in range(start, end)]
            for k, values in zip(rows, self.backend.score([pairs[k] for k in rows], temperature=temperature)):
                scored[k] = values
        out = []
        for ask, p, temperature, (start, end, ids) in zip(asks, params, temperatures, spans):
            totals = torch.tensor([sum(scored[k]) for k in range(start, end)], dtype=torch.float64)
            log_choose = torch.log_softmax(totals, dim=0)
            if p["temperature"] <= 0:  # greedy: the likeliest; its logprobs are recorded at temperature 1
                picks = [int(torch.argmax(totals))] * ask.n
            else:
                probs = truncated(log_choose.exp(), top_p=p["top_p"], top_k=p["top_k"])
                generator = torch.Generator().manual_seed(ask.seed) if self.seeded else None
                picks = torch.multinomial(probs, ask.n, replacement=True, generator=generator).tolist()
            choice_ids = tuple(pairs[k][1] for k in range(start, end))
            out.append([Answer(text=ask.prefix + ask.choices[j], prompt_ids=ids, completion_ids=pairs[start + j][1],
                               logprobs=scored[start + j], finish_reason="stop", temperature=temperature,
                               choice_ids=choice_ids, choice_logprob=log_choose[j].item())
                        for j in picks])
        return out


def _frozen(prompt: Any) -> Any:
    """A prompt (a string or role/content messages) as a dict key."""
    return prompt if isinstance(prompt, str) else tuple((m["role"], m["content"]) for m in prompt)


class ScriptedResponder:
    """A scripted opponent: ``fn(move_info, rng) -> action``, answered without a model."""

    def __init__(self, name: str, fn: Callable[[Any, random.Random], str]):
        self.name, self.fn = name, fn

    def respond(self, asks: Sequence[AskRequest]) -> list[list[Answer]]:
        out = []
        for ask in asks:
            if ask.info is None:
                raise TypeError(f"{self.name} can only play turn-based games (the ask carries no move info)")
            out.append([Answer(text=ask.info.game.format_action(self.fn(ask.info, ask.rng)))
                        for _ in range(ask.n)])
        return out


# --- the scheduler ------------------------------------------------------------------------


@attrs.frozen
class EpisodeSpec:
    """One episode to play: a game instance, its seed, and who sits in each seat."""

    game: Any  # a Game instance
    seed: int
    seats: dict[str, str] = attrs.Factory(dict)  # role -> responder name (default: "policy")
    entry: int = 0  # the curriculum entry it belongs to
    pools: Any = None  # the game's Pools (task pools kept across episodes), or None


class _Running:
    """An episode in flight: its table, its coroutine, and the asks it waits on."""

    def __init__(self, spec: EpisodeSpec, kernel, turn_ids):
        seats = {role: spec.seats.get(role, POLICY) for role in spec.game.role_names()}
        self.table = Table(spec.game, spec.seed, seats, kernel, turn_ids, pools=spec.pools, entry=spec.entry)
        self.coro = spec.game.play(self.table)
        self.waiting: tuple[Ask, ...] = ()

    def advance(self) -> Episode | None:
        """Run the game until it asks something (None) or ends (its Episode)."""
        try:
            yielded = self.coro.send(None)
        except StopIteration:
            return self.table.episode()
        except Exception:
            return self.table.episode(error=traceback.format_exc())
        if not (isinstance(yielded, tuple) and yielded and all(isinstance(a, Ask) for a in yielded)):
            self.coro.close()
            return self.table.episode(error=f"TypeError: a game may only await table.ask/table.gather, "
                                            f"got {yielded!r}")
        self.waiting = yielded
        return None


class Scheduler:
    """Keeps ``concurrency`` episodes alive and answers their asks in batches.

    ``responders`` maps responder names (seat map values) to responders. Each round,
    scripted responders answer first (repeatedly, so games against a scripted opponent
    do not wait a round for it); then every model responder answers all asks pending
    for it in one call.
    """

    def __init__(self, responders: dict[str, Responder], *, kernel: "Kernel | None" = None,
                 concurrency: int = 64, max_failures: int = 20, judges: Any = None):
        self.responders = dict(responders)
        self.kernel = kernel
        self.judges = judges  # rolekit.verifiers.judges.Judges; made on the first judge ask if None
        self.concurrency = concurrency
        self.max_failures = max_failures
        self.failures = 0
        self.rounds = 0
        self._turn_ids = itertools.count()

    def run(self, specs: Iterable[EpisodeSpec]) -> Iterator[Episode]:
        """Play every spec; yield episodes as they finish (not in input order)."""
        pending = iter(specs)
        running: list[_Running] = []
        exhausted = False
        while True:
            # --- refill: start episodes until `concurrency` are waiting on an ask --------
            while not exhausted and len(running) < self.concurrency:
                spec = next(pending, None)
                if spec is None:
                    exhausted = True
                    break
                for responder in set(spec.seats.values()) - set(self.responders) - {POLICY}:
                    raise KeyError(f"no responder {responder!r} for episode of {spec.game.name!r}")
                item = _Running(spec, self.kernel, self._turn_ids)
                done = item.advance()
                if done is not None:
                    yield self._finish(done)
                else:
                    running.append(item)
            if not running:
                return
            # --- answer: one batch per responder, scripted ones until only models remain -
            self.rounds += 1
            finished = yield from self._answer_round(running)
            running = [r for r in running if r not in finished]

    def _answer_round(self, running: list[_Running]):
        finished = set()
        while True:
            groups: dict[str, list[tuple[_Running, Ask]]] = defaultdict(list)
            for item in running:
                if item in finished:
                    continue
                for ask in item.waiting:
                    if ask.answers is not None:
                        continue
                    groups[ask.responder_name()].append((item, ask))
            scripted = {name: g for name, g in groups.items() if isinstance(self._responder(name), ScriptedResponder)
                        or getattr(self._responder(name), "immediate", False)}  # and rule judges
            batch = scripted or groups
            if not batch:
                return finished
            for name, group in batch.items():
                answers = self._responder(name).respond([ask.request() for _, ask in group])
                for (_, ask), got in zip(group, answers):
                    ask.answers = got
            resumed = {item for group in batch.values() for item, _ in group}
            for item in running:
                if item in resumed and item not in finished:
                    if any(a.answers is None for a in item.waiting):
                        continue  # part of a gather still waits for another responder
                    done = item.advance()
                    if done is not None:
                        finished.add(item)
                        yield self._finish(done)
            if not scripted:
                return finished

    def _responder(self, name: str) -> Responder:
        if name.startswith("judge:"):
            if self.judges is None:
                from rolekit.verifiers.judges import Judges

                self.judges = Judges.for_responder(self.kernel, self.responders.get(POLICY))
            return self.judges.get(name[len("judge:"):])
        try:
            return self.responders[name]
        except KeyError:
            raise KeyError(f"no responder named {name!r} (have: {sorted(self.responders)})") from None

    def _finish(self, episode: Episode) -> Episode:
        if episode.error is not None:
            self.failures += 1
            last = episode.error.strip().splitlines()[-1]
            print(f"rolekit: episode of {episode.game!r} (seed {episode.seed}) quarantined: {last}",
                  file=sys.stderr)
            if self.failures > self.max_failures:
                raise RolloutAborted(
                    f"{self.failures} episodes raised (max_failures={self.max_failures}); "
                    f"last one ({episode.game!r}, seed {episode.seed}):\n{episode.error}"
                )
        if self.kernel is not None and not self.kernel.episode_end(episode):
            episode = attrs.evolve(episode, info={**episode.info, "dropped": True})
        return episode
