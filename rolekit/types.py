"""Frozen value types shared by the kernel, the engine and plugins."""

from __future__ import annotations

from typing import Any

import attrs


def _tuple_of_ints(value) -> tuple[int, ...]:
    return tuple(int(v) for v in value)


def _tuple_of_floats(value) -> tuple[float, ...]:
    return tuple(float(v) for v in value)


def _tuples_of_ints(value) -> tuple[tuple[int, ...], ...]:
    return tuple(_tuple_of_ints(v) for v in value)


def _optional_float(value) -> float | None:
    return None if value is None else float(value)


@attrs.frozen
class Role:
    """A seat in a role graph. The same model may play every role."""

    name: str = attrs.field(validator=attrs.validators.matches_re(r"^[A-Za-z_][A-Za-z0-9_\-]*$"))
    description: str = ""


@attrs.frozen
class GenerationRequest:
    """One completion asked of a backend, as token ids."""

    prompt_ids: tuple[int, ...] = attrs.field(converter=_tuple_of_ints)
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    stop_ids: frozenset[int] = attrs.field(default=frozenset(), converter=frozenset)  # extra tokens that end it
    # sampling noise drawn from this seed instead of the global torch RNG, so the request's
    # tokens do not depend on the batch it lands in or the worker that answers it (None: global RNG)
    seed: int | None = None

    @prompt_ids.validator
    def _nonempty(self, attribute, value):
        if not value:
            raise ValueError("a generation request needs at least one prompt token")


@attrs.frozen
class Generation:
    """What a backend produced for one request.

    ``logprobs[i]`` is log pi(completion_ids[i] | prompt, completion_ids[:i]) under the
    sampling temperature (logits / T, before top-p/top-k truncation): the learner scores
    tokens with the same temperature so the PPO ratio starts at exactly 1.
    """

    completion_ids: tuple[int, ...] = attrs.field(converter=_tuple_of_ints)
    logprobs: tuple[float, ...] = attrs.field(converter=_tuple_of_floats)
    finish_reason: str = "stop"  # "stop" (end-of-turn token produced) or "length"

    @logprobs.validator
    def _same_length(self, attribute, value):
        if len(value) != len(self.completion_ids):
            raise ValueError("one logprob per completion token is required")


@attrs.frozen
class Turn:
    """One answer given in an episode: the exact tokens the backend saw and produced.

    Scripted opponents produce turns with no token ids; only turns answered by the
    trained policy (``responder == "policy"``) become training samples.
    """

    id: int
    role: str
    game: str
    text: str
    prompt: Any = attrs.field(eq=False, repr=False)  # the string or chat messages asked
    prompt_ids: tuple[int, ...] = attrs.field(converter=_tuple_of_ints, default=(), repr=False)
    completion_ids: tuple[int, ...] = attrs.field(converter=_tuple_of_ints, default=(), repr=False)
    logprobs: tuple[float, ...] = attrs.field(converter=_tuple_of_floats, default=(), repr=False)
    responder: str = "policy"
    parent: int | None = None  # id of the turn this ask was conditioned on, if any
    ask: int = -1  # turns answering the same ask (its n samples) share this id
    finish_reason: str = "stop"
    temperature: float = 1.0
    action: str | None = None  # the move a game extracted from ``text``, if any
    max_new_tokens: int = 0  # the generation budget it was asked under (the ``constant`` loss denominator)
    # a constrained choice: the token ids of every legal answer offered, and log pi of the
    # chosen one among them (its share of their total probability), as sampled
    choice_ids: tuple[tuple[int, ...], ...] = attrs.field(converter=_tuples_of_ints, default=(), repr=False)
    choice_logprob: float | None = attrs.field(converter=_optional_float, default=None, repr=False)

    @property
    def context_ids(self) -> tuple[int, ...]:
        """prompt + completion: what a follow-up ask in the same thread extends."""
        return self.prompt_ids + self.completion_ids


@attrs.frozen
class Verdict:
    """A verifier's judgement of one answer."""

    score: float
    ok: bool = True
    detail: str = ""


@attrs.frozen
class Episode:
    """A finished (or quarantined) episode: every turn, reward and log line."""

    game: str
    seed: int
    turns: tuple[Turn, ...]
    rewards: dict[int, float]  # turn id -> reward
    returns: dict[str, float]  # role -> episode return (sum of its turns' rewards unless set)
    seats: dict[str, str]  # role -> responder name
    logs: dict[str, float] = attrs.Factory(dict)
    error: str | None = None  # traceback of a quarantined episode
    info: dict[str, Any] = attrs.Factory(dict)  # game-specific outcome (winner, invalid, ...)
    dropped: dict[int, str] = attrs.Factory(dict)  # turn id -> why the game excluded it from training
    invalid: dict[int, str] = attrs.Factory(dict)  # turn id -> why the game marked it invalid (still trains)
    keys: dict[int, str] = attrs.Factory(dict)  # turn id -> baseline key the game set (e.g. a task type)
    entry: int = 0  # which curriculum entry the episode was played for

    @property
    def ok(self) -> bool:
        return self.error is None

    def turns_of(self, role: str) -> tuple[Turn, ...]:
        return tuple(t for t in self.turns if t.role == role)

    def turn_reward(self, turn: Turn) -> float:
        """Per-turn credit: what the game gave ``turn`` plus its role's terminal return
        (the part of the role's return not given to any of its turns). In a turn-based
        game turns carry no reward of their own, so every turn gets the outcome (SPIRAL)."""
        own = sum(self.rewards.get(t.id, 0.0) for t in self.turns if t.role == turn.role)
        return self.rewards.get(turn.id, 0.0) + self.returns.get(turn.role, 0.0) - own


@attrs.frozen
class Sample:
    """One training sample: a policy turn with its advantage."""

    game: str
    role: str
    prompt_ids: tuple[int, ...] = attrs.field(converter=_tuple_of_ints, repr=False)
    completion_ids: tuple[int, ...] = attrs.field(converter=_tuple_of_ints, repr=False)
    logprobs: tuple[float, ...] = attrs.field(converter=_tuple_of_floats, repr=False)
    advantage: float
    reward: float = 0.0
    temperature: float = 1.0
    turn: int = -1  # id of the Turn it came from
    max_new_tokens: int = 0  # the generation budget of its ask: the ``constant`` aggregation's denominator
    version: int = 0  # the training step whose policy generated it (leftover samples age out)
    # a constrained choice: every legal answer's token ids. The learner then trains
    # log pi(answer | one of these) -- the policy that was sampled -- and ``logprobs`` is
    # that one value at sampling time.
    choice_ids: tuple[tuple[int, ...], ...] = attrs.field(converter=_tuples_of_ints, default=(), repr=False)

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.completion_ids)
