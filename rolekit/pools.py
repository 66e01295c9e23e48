"""Task pools: state a game keeps across episodes and steps, checkpointed with the run.

Self-play methods keep memory between episodes: Absolute Zero's buffer of valid programs,
SPELL's per-document history of solved questions, eva's evolving prompt pool,
PasoDoble's history for its diversity bonus. A game gets one through
``table.pool(name)``; the engine keeps one ``Pools`` per curriculum entry, saves it in
``trainer_state.pt`` and restores it on ``--resume``, so a resumed run continues with the
same pools it had. Items must be picklable (plain data: strings, numbers, dicts, lists).

Episodes in flight interleave in the scheduler's (deterministic) order, so what one
episode adds is visible to episodes that ask later.
"""

from __future__ import annotations

import copy
import random
from typing import Any, Iterator


class Pool:
    """A bounded list of items (oldest leave first) plus a dict for keyed state."""

    def __init__(self, capacity: int | None = None):
        if capacity is not None and capacity < 1:
            raise ValueError(f"a pool's capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.items: list[Any] = []
        self.data: dict[str, Any] = {}  # keyed state, e.g. document id -> questions asked so far
        self.added = 0  # items ever added (evicted ones included)

    def add(self, item: Any) -> None:
        self.items.append(item)
        self.added += 1
        if self.capacity is not None and len(self.items) > self.capacity:
            del self.items[: len(self.items) - self.capacity]

    def sample(self, rng: random.Random, k: int = 1) -> list[Any]:
        """``k`` items drawn uniformly with replacement (``[]`` from an empty pool)."""
        return [rng.choice(self.items) for _ in range(k)] if self.items else []

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.items)

    def state_dict(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "items": copy.deepcopy(self.items), "data": copy.deepcopy(self.data),
                "added": self.added}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.capacity, self.added = state["capacity"], state["added"]
        self.items, self.data = copy.deepcopy(state["items"]), copy.deepcopy(state["data"])


class Pools:
    """One game's named pools."""

    def __init__(self):
        self._pools: dict[str, Pool] = {}

    def get(self, name: str, capacity: int | None = None) -> Pool:
        pool = self._pools.get(name)
        if pool is None:
            pool = self._pools[name] = Pool(capacity)
        return pool

    def sizes(self) -> dict[str, int]:
        return {name: len(pool) for name, pool in sorted(self._pools.items())}

    def state_dict(self) -> dict[str, Any]:
        return {name: pool.state_dict() for name, pool in self._pools.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._pools = {}
        for name, s in state.items():
            self._pools[name] = Pool()
            self._pools[name].load_state_dict(s)
