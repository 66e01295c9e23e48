"""The population: past snapshots of the policy, and the mixture a seat plays from them.

Self-play's last iterate cycles in a zero-sum game; the *average* of the iterates is what
converges (fictitious play, NFSP). rolekit keeps the snapshot pool as a population: a
seat played by ``snapshot`` draws one member per episode and plays it throughout, and
the *average policy* is exactly that mixture (draw a snapshot per episode, then play
it). Who is drawn how often is the mixture's weighting:

* ``uniform``: every snapshot alike (fictitious play's average, over the pool);
* ``recency``: the newest weighs 1, each older one ``recency_decay`` times the next;
* ``elo``: by strength, ``10 ** (rating / 400)``, where each snapshot's Elo rating comes
  from the games it played against the trained policy (both ratings move after each).

``Population`` only keeps this bookkeeping (when each member was taken, its rating);
the weights themselves live with the policy (``engine.Policy.pool``), index for index.
"""

from __future__ import annotations

import random
from typing import Any, Sequence

WEIGHTINGS = ("uniform", "recency", "elo")
START_RATING = 1000.0


def expected_score(rating: float, other: float) -> float:
    """Elo: the expected score of a player rated ``rating`` against one rated ``other``."""
    return 1.0 / (1.0 + 10.0 ** ((other - rating) / 400.0))


class Population:
    """Bookkeeping of a snapshot pool: each member's step and Elo rating, and the mixture
    weights a ``snapshot`` seat draws with (see the module docstring)."""

    def __init__(self, weighting: str = "uniform", *, capacity: int, recency_decay: float = 0.8,
                 elo_k: float = 32.0):
        if weighting not in WEIGHTINGS:
            raise ValueError(f"snapshot weighting must be one of {', '.join(WEIGHTINGS)}, got {weighting!r}")
        self.weighting, self.capacity = weighting, capacity
        self.recency_decay, self.elo_k = recency_decay, elo_k
        self.steps: list[int] = []  # the training step each member was taken at, oldest first
        self.ratings: list[float] = []
        self.policy_rating = START_RATING  # the trained policy's rating, against the members
        self.games = 0  # rated games so far

    def __len__(self) -> int:
        return len(self.steps)

    def add(self, step: int) -> None:
        """A snapshot of the policy taken at ``step`` joins (the oldest leaves past capacity);
        it starts at the policy's current rating, which is what it is."""
        self.steps.append(step)
        self.ratings.append(self.policy_rating)
        del self.steps[:-self.capacity], self.ratings[:-self.capacity]

    def weights(self) -> list[float]:
        """The mixture's probabilities, one per member (oldest first); ``[]`` when empty."""
        n = len(self.steps)
        if n == 0:
            return []
        if self.weighting == "uniform":
            raw = [1.0] * n
        elif self.weighting == "recency":
            raw = [self.recency_decay ** (n - 1 - i) for i in range(n)]
        else:
            top = max(self.ratings)  # shifted: 10 ** (r / 400) overflows for no reason otherwise
            raw = [10.0 ** ((r - top) / 400.0) for r in self.ratings]
        total = sum(raw)
        return [w / total for w in raw]

    def draw(self, rng: random.Random) -> int:
        """The index of the member a seat plays this episode."""
        if not self.steps:
            raise ValueError("cannot draw from an empty population")
        if self.weighting == "uniform":  # one draw, as the pool always drew
            return rng.randrange(len(self.steps))
        return rng.choices(range(len(self.steps)), weights=self.weights())[0]

    def record(self, index: int, policy_score: float) -> None:
        """One game of the trained policy against member ``index``: ``policy_score`` is 1 for a
        win, 0.5 for a draw, 0 for a loss. Both ratings move by ``elo_k`` times the surprise."""
        if not 0 <= index < len(self.steps):
            raise IndexError(f"no population member {index} (it has {len(self.steps)})")
        surprise = policy_score - expected_score(self.policy_rating, self.ratings[index])
        self.policy_rating += self.elo_k * surprise
        self.ratings[index] -= self.elo_k * surprise
        self.games += 1

    def describe(self) -> list[dict[str, Any]]:
        """Each member's step, rating and mixture weight (for metrics and ``rolekit eval``)."""
        return [{"step": s, "rating": round(r, 1), "weight": round(w, 6)}
                for s, r, w in zip(self.steps, self.ratings, self.weights())]

    def state_dict(self) -> dict[str, Any]:
        return {"steps": list(self.steps), "ratings": list(self.ratings), "policy_rating": self.policy_rating,
                "games": self.games, "weighting": self.weighting, "recency_decay": self.recency_decay,
                "elo_k": self.elo_k}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The members and ratings of a saved population (its weighting stays this one's:
        a resumed run may change ``snapshots.weighting``)."""
        self.steps, self.ratings = list(state["steps"]), list(state["ratings"])
        self.policy_rating, self.games = state["policy_rating"], state["games"]


def score_of(winner: str | None, role: str) -> float:
    """A game's score for ``role``: 1 if it won, 0 if another won, 0.5 for a draw (no winner)."""
    return 0.5 if winner is None else 1.0 if winner == role else 0.0

