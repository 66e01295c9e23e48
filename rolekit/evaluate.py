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
                batch_size: int = 64) -> Policy:
    """``scripted:NAME`` (a registered opponent), or a model: ``smollm2-135m-instruct``,
    ``tiny-random``, a model directory or a run checkpoint (peft adapter) directory.
    Raises ValueError for a name that is none of these."""
    if name.startswith(rollout.SCRIPTED):
        [(_, responder)] = rollout.scripted_responders(kernel, game, {game.role_names()[0]: name}).items()
        return Policy(name, ScriptedResponder(POLICY, responder.fn), scripted=responder.fn)
    from rolekit.backends.hf import HFBackend
    from rolekit.chat import ChatTokenizer
    from rolekit.models import ModelError, load_model

    try:
        loaded = load_model(name, device=device)
    except ModelError as exc:
        raise ValueError(f"{exc} (or scripted:NAME for a scripted policy)") from None
    chat = ChatTokenizer(loaded.tokenizer)
    backend = HFBackend(loaded.model, chat, max_batch_size=batch_size)
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
                 mirror: bool = False, concurrency: int = 64) -> list[Episode]:
    """``episodes`` episodes of ``policy`` against the scripted ``opponent`` (a registered
    name, with or without ``scripted:``), the policy's seat alternating every episode.
    ``mirror``: deals come in pairs, the policy playing each deal from both seats."""
    if len(game.role_names()) != 2:
        raise ValueError(f"game {game.name!r} has {len(game.role_names())} roles; eval plays two-player games")
    who = opponent if opponent.startswith(rollout.SCRIPTED) else rollout.SCRIPTED + opponent
    first, second = game.role_names()
    seats = {first: POLICY, second: who}
    responders = rollout.scripted_responders(kernel, game, seats)
    responders[POLICY] = policy.responder
    plan = rollout.specs(game, episodes, seed, seats, mirror=mirror, alternate=not mirror)
    return list(Scheduler(responders, kernel=kernel, concurrency=concurrency).run(plan))


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


# --- rolekit eval ---------------------------------------------------------------------------


def evaluate(kernel: Kernel, *, game: str, policy: str, opponent: str = "random", episodes: int = 100,
             seed: int = 0, options: Mapping[str, Any] | None = None, exploitability: bool = False,
             samples: int = 32, temperature: float = 1.0, mirror: bool = False, device: str = "cpu",
             concurrency: int = 64, batch_size: int = 64) -> dict[str, Any]:
    """What ``rolekit eval`` prints as JSON."""
    if episodes < 0:
        raise ValueError(f"--episodes must be >= 0, got {episodes}")
    the_game = rollout.make_game(kernel, game, dict(options or {}))
    if exploitability and not hasattr(the_game, "information_sets"):
        raise ValueError(f"--exploitability: game {game!r} has no exact evaluation "
                         f"(it needs a game with information_sets(), such as kuhn_poker)")
    start = time.perf_counter()
    if not policy.startswith(rollout.SCRIPTED):
        import torch

        torch.manual_seed(seed)
    the_policy = load_policy(kernel, the_game, policy, device=device, temperature=temperature,
                             batch_size=batch_size)
    opponent_name = opponent.removeprefix(rollout.SCRIPTED)
    played = play_against(kernel, the_game, the_policy, opponent_name, episodes=episodes, seed=seed,
                          mirror=mirror, concurrency=concurrency)
    result = score(played)
    report: dict[str, Any] = {"game": game, "policy": policy, "opponent": opponent_name,
                              "episodes": result.pop("episodes", 0), "seed": seed}
    for key in ("win", "draw", "loss", "invalid", "mean_return"):
        report[key] = result.pop(key, None)
    report.update(result)
    if options:
        report["options"] = dict(options)
    if exploitability:
        report.update(strategy(the_game, the_policy, samples=samples, temperature=temperature, seed=seed))
    report["seconds"] = round(time.perf_counter() - start, 3)
    return report


def offered(kernel: Kernel, *, game: str, policy: str, options: Mapping[str, Any] | None = None, seed: int = 0,
            temperature: float = 1.0, device: str = "cpu", batch_size: int = 64, **eval_section) -> dict[str, Any]:
    """The evaluations ``game`` offers (``Game.evaluate``), for ``policy``: what training runs
    every ``eval.every`` steps (``rolekit eval --offered``)."""
    the_game = rollout.make_game(kernel, game, dict(options or {}))
    start = time.perf_counter()
    import torch

    torch.manual_seed(seed)
    the_policy = load_policy(kernel, the_game, policy, device=device, temperature=temperature, batch_size=batch_size)
    ev = Evaluator(kernel, the_game, the_policy, seed=seed, temperature=temperature, **eval_section)
    result = run_evaluations(ev)
    return {"game": game, "policy": policy, "seed": seed, "options": dict(options or {}), "offered": result,
            "seconds": round(time.perf_counter() - start, 3)}


def cmd_eval(args) -> int:
    kernel = Kernel(disable=getattr(args, "disable", None) or ())
    if args.offered:
        report = offered(kernel, game=args.game, policy=args.policy, options=_options(args), seed=args.seed,
                         temperature=args.temperature, device=args.device, batch_size=args.batch_size,
                         opponents=(args.opponent,), episodes=args.episodes, exploitability=args.exploitability)
        print(json.dumps(report, indent=2))
        return 1 if "error" in report["offered"] else 0
    report = evaluate(
        kernel, game=args.game, policy=args.policy, opponent=args.opponent, episodes=args.episodes,
        seed=args.seed, options=_options(args), exploitability=args.exploitability, samples=args.samples,
        temperature=args.temperature, mirror=args.mirror, device=args.device, concurrency=args.concurrency,
        batch_size=args.batch_size,
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
                   help="smollm2-135m-instruct, tiny-random, a model or run checkpoint directory, or scripted:NAME")
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
    p.add_argument("--offered", action="store_true",
                   help="run the evaluations the game itself offers (what training runs: a held-out task set, "
                        "win rates, exploitability) and print them as JSON")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="the policy's sampling temperature (0: greedy; default 1, as in training)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="per move (default: the game's)")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)
