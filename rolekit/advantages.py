"""Advantage estimators: a step's episodes in, training samples out.

Each estimator is constructed per (name, options) the config asks for and handles the
(episode, role) pairs routed to it -- every finished episode of the step at once, in the
order they finished (deterministic for a seed). Credit is per turn: a turn's reward is
what the game gave it plus its role's terminal return (``Episode.turn_reward``), so in a
fan-out a right and a wrong answer of one ask are credited differently, while in a
turn-based game every turn of a player gets the outcome (SPIRAL). Statistics are kept
per (game, role[, the turn's baseline key]), never mixed across roles. Turns the game
dropped (``table.drop``) never train. Registered through ``rolekit_register_advantages``
by the built-in plugin.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Iterable

from rolekit.table import POLICY
from rolekit.types import Episode, Sample, Turn

RoleEpisode = tuple[Episode, str]  # one role's part of one episode


def turn_reward(episode: Episode, turn: Turn) -> float:
    """The turn's own reward plus its role's terminal return (the part not given to a turn)."""
    return episode.turn_reward(turn)


def policy_turns(episode: Episode, role: str) -> list[Turn]:
    """Turns of ``role`` answered by the trained policy and not dropped by the game (the
    only ones that train)."""
    return [t for t in episode.turns if t.role == role and t.responder == POLICY and t.completion_ids
            and t.id not in episode.dropped]


def stat_key(episode: Episode, turn: Turn) -> str:
    """``game/role``, or ``game/role/key`` for a turn the game gave a baseline key."""
    key = episode.keys.get(turn.id)
    return f"{episode.game}/{turn.role}" if key is None else f"{episode.game}/{turn.role}/{key}"


def _sample(episode: Episode, turn: Turn, advantage: float, reward: float) -> Sample:
    choice = bool(turn.choice_ids) and turn.choice_logprob is not None  # trained as the choice it was
    return Sample(game=episode.game, role=turn.role, prompt_ids=turn.prompt_ids, completion_ids=turn.completion_ids,
                  logprobs=(turn.choice_logprob,) if choice else turn.logprobs, advantage=advantage, reward=reward,
                  temperature=turn.temperature, turn=turn.id, choice_ids=turn.choice_ids if choice else (),
                  max_new_tokens=turn.max_new_tokens)


class _Stateless:
    """Estimators that keep no state between steps (nothing to checkpoint)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class RAE:
    """Role-conditioned advantage estimation (SPIRAL, Liu et al. 2025, Alg. 1).

    Per (game, role) an EMA baseline b, starting at 0. For each finished episode, in
    order: each policy turn t of p gets A_t = r_t - b (b read *before* the update), r_t
    its per-turn credit; then b <- decay * b + (1 - decay) * mean_t r_t. In a turn-based
    game r_t = R_p for every turn, which is SPIRAL's A = R_p - b exactly (gamma = 1).
    Zero-advantage turns are dropped. Turns with a baseline key (``table.set_key``) keep
    a baseline per (game, role, key).

    ``key="prompt"`` refines the baseline to one EMA per (game, role, exact prompt) -- a
    tabular state-value baseline, read before its update like the role one. A prompt seen
    for the first time starts from its role's baseline. In small games whose prompts repeat
    (Kuhn Poker has 12 information sets) it removes the luck of the deal from the advantage,
    leaving the part the action caused; where prompts never repeat it equals ``key="role"``.
    """

    KEYS = ("role", "prompt")

    def __init__(self, decay: float = 0.95, drop_zero: bool = True, key: str = "role"):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"rae decay must be in [0, 1), got {decay}")
        if key not in self.KEYS:
            raise ValueError(f"rae key must be one of {self.KEYS}, got {key!r}")
        self.decay, self.drop_zero, self.key = decay, drop_zero, key
        self.baselines: dict[str, float] = {}

    def _advantage(self, key: str, ret: float, default: float) -> float:
        """A = ret - b(key) with b read before its EMA update."""
        b = self.baselines.get(key, default)
        self.baselines[key] = self.decay * b + (1.0 - self.decay) * ret
        return ret - b

    def samples(self, items: Iterable[RoleEpisode]) -> list[Sample]:
        out = []
        for episode, role in items:
            groups: dict[str, list[Turn]] = defaultdict(list)
            for t in policy_turns(episode, role):
                groups[stat_key(episode, t)].append(t)
            if not groups:  # no turn to train (e.g. answered by a script): the return still updates b
                self._advantage(f"{episode.game}/{role}", episode.returns[role], 0.0)
            for role_key, turns in groups.items():
                rewards = [episode.turn_reward(t) for t in turns]
                role_b = self.baselines.get(role_key, 0.0)
                self._advantage(role_key, statistics.fmean(rewards), 0.0)
                for t, r in zip(turns, rewards):
                    advantage = r - role_b
                    if self.key == "prompt":
                        prompt_key = f"{role_key}/{hash(tuple(t.prompt_ids)):x}"
                        advantage = self._advantage(prompt_key, r, role_b)
                    if advantage != 0.0 or not self.drop_zero:
                        out.append(_sample(episode, t, advantage, r))
        return out

    def state_dict(self) -> dict:
        return {"baselines": dict(self.baselines)}

    def load_state_dict(self, state: dict) -> None:
        self.baselines = dict(state["baselines"])


class GRPO(_Stateless):
    """Group-relative advantages: normalise within the n samples of one ask (Shao et al. 2024).

    A_i = r_i - mean(r) (Dr. GRPO's unbiased form, the default), or (r_i - mean) / (std + eps)
    with ``scale="std"``. Groups of one sample carry no signal and are dropped.
    """

    def __init__(self, scale: str = "none", eps: float = 1e-6, drop_zero: bool = True):
        if scale not in ("none", "std"):
            raise ValueError(f"grpo scale must be 'none' or 'std', got {scale!r}")
        self.scale, self.eps, self.drop_zero = scale, eps, drop_zero

    def samples(self, items: Iterable[RoleEpisode]) -> list[Sample]:
        out = []
        for episode, role in items:
            groups: dict[int, list[Turn]] = defaultdict(list)
            for t in policy_turns(episode, role):
                groups[t.ask].append(t)
            for turns in groups.values():
                rewards = [episode.turn_reward(t) for t in turns]
                if len(rewards) < 2:
                    continue
                mean = statistics.fmean(rewards)
                std = statistics.pstdev(rewards)
                for t, r in zip(turns, rewards):
                    a = r - mean if self.scale == "none" else (r - mean) / (std + self.eps)
                    if a != 0.0 or not self.drop_zero:
                        out.append(_sample(episode, t, a, r))
        return out


class RoleNorm(_Stateless):
    """Whiten per-turn rewards over the whole step, separately per (game, role[, key]).

    The estimator for a role with one turn per episode (SPELL's questioner, AZR's
    proposer): its turns are compared with the same role's turns in the step's other
    episodes (REINFORCE++ / AZR's task-relative baseline with the key set). A group of
    one turn carries no signal (advantage 0, dropped)."""

    def __init__(self, eps: float = 1e-6, drop_zero: bool = True):
        self.eps, self.drop_zero = eps, drop_zero

    def samples(self, items: Iterable[RoleEpisode]) -> list[Sample]:
        by_key: dict[str, list[tuple[Episode, Turn, float]]] = defaultdict(list)
        for episode, role in items:
            for t in policy_turns(episode, role):
                by_key[stat_key(episode, t)].append((episode, t, episode.turn_reward(t)))
        out = []
        for rows in by_key.values():
            rewards = [r for _, _, r in rows]
            mean, std = statistics.fmean(rewards), statistics.pstdev(rewards)
            for episode, t, r in rows:
                a = (r - mean) / (std + self.eps)
                if a != 0.0 or not self.drop_zero:
                    out.append(_sample(episode, t, a, r))
        return out


class Raw(_Stateless):
    """The reward itself as the advantage (REINFORCE without a baseline)."""

    def __init__(self, drop_zero: bool = True):
        self.drop_zero = drop_zero

    def samples(self, items: Iterable[RoleEpisode]) -> list[Sample]:
        out = []
        for episode, role in items:
            for t in policy_turns(episode, role):
                r = episode.turn_reward(t)
                if r != 0.0 or not self.drop_zero:
                    out.append(_sample(episode, t, r, r))
        return out


