"""eva's prompt pool, informativeness and selection, as pure functions over plain data.

The pool is a rolekit task pool (``table.pool``), so the engine checkpoints it and a resumed
run continues with exactly the pool it had. Each item is a dict: ``text``, ``origin``
("seed", "user" or "creator"), ``parent`` (the prompt it was evolved from), ``born`` (how
many prompts the pool had taken in before it) and ``informativeness`` (None until the
solver's answers to it have been judged; then the latest value). The pool's capacity ages
prompts out, oldest first.
"""

from __future__ import annotations

import random
import re
import statistics
from typing import Any, Sequence

from rolekit.pools import Pool

METRICS = ("gap", "variance", "mean_gap")
MAX_PROMPT_CHARS = 600
_LABEL = re.compile(r"^\s*(?:#+\s*)?(?:rewritten|new)\s+prompt\s*#*\s*:?\s*", re.IGNORECASE)


def informativeness(scores: Sequence[float], metric: str = "gap") -> float:
    """How much the solver's answers to one prompt differ (eva's ``reward_gap``, ``reward_var``,
    ``reward_maxmean``): max - min, the population variance, or max - mean."""
    if len(scores) < 2:
        raise ValueError(f"informativeness needs at least two scores, got {len(scores)}")
    if metric == "gap":
        return max(scores) - min(scores)
    if metric == "variance":
        return statistics.pvariance(scores)
    if metric == "mean_gap":
        return max(scores) - statistics.fmean(scores)
    raise ValueError(f"informativeness metric {metric!r}: expected one of {', '.join(METRICS)}")


def selection_weights(values: Sequence[float]) -> list[float]:
    """eva's sampling weights: the values min-max normalised, divided by their sum.

    The least informative prompt gets weight 0; when all are equal (or there is one), every
    prompt is equally likely."""
    low, high = min(values), max(values)
    if high == low:
        return [1.0 / len(values)] * len(values)
    scaled = [(v - low) / (high - low) for v in values]
    total = sum(scaled)
    return [s / total for s in scaled]


def normalised(text: str) -> str:
    return " ".join(text.lower().split())


def parse_new_prompt(text: str, parent: str) -> tuple[str | None, str]:
    """The creator's new prompt (its reply without a "Rewritten Prompt:" label or quotes), or
    None and why it is unusable: empty, too long, a copy of its parent."""
    body = _LABEL.sub("", text.strip(), count=1).strip().strip('"').strip()
    if not body:
        return None, "empty"
    if len(body) > MAX_PROMPT_CHARS:
        return None, f"longer than {MAX_PROMPT_CHARS} characters"
    if normalised(body) == normalised(parent):
        return None, "copies its prompt"
    return body, ""


class PromptPool:
    """The game's view of its ``table.pool``: filled with the seed prompts on first use."""

    def __init__(self, pool: Pool, seeds: Sequence[str], origin: str = "seed"):
        self.pool = pool
        if not pool.data.get("seeded"):
            for text in seeds:
                self.add(text, origin=origin)
            pool.data["seeded"] = True

    def __len__(self) -> int:
        return len(self.pool)

    def add(self, text: str, *, origin: str = "creator", parent: str | None = None) -> dict[str, Any] | None:
        """Add a prompt; None (and nothing added) if the pool already holds it."""
        key = normalised(text)
        if any(normalised(item["text"]) == key for item in self.pool.items):
            return None
        item = {"text": text, "origin": origin, "parent": parent, "born": self.pool.added, "informativeness": None}
        self.pool.add(item)
        return item

    def draw(self, rng: random.Random) -> dict[str, Any]:
        """A prompt for the solver, uniformly (eva answers every prompt of its set)."""
        return rng.choice(self.pool.items)

    def pick(self, rng: random.Random) -> dict[str, Any] | None:
        """A prompt for the creator to evolve, by :func:`selection_weights` of the scored
        prompts' informativeness; None while no prompt is scored."""
        scored = [item for item in self.pool.items if item["informativeness"] is not None]
        if not scored:
            return None
        return rng.choices(scored, weights=selection_weights([i["informativeness"] for i in scored]))[0]

    def mean_informativeness(self) -> float | None:
        values = [i["informativeness"] for i in self.pool.items if i["informativeness"] is not None]
        return statistics.fmean(values) if values else None
