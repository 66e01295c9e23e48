"""rolekit-redteam: Self-RedTeam's attacker and defender, one model in both seats, under a
frozen judge.

A rolekit plugin (entry point ``redteam`` in group ``rolekit``). It registers the game
``redteam`` (``rolekit_redteam.redteam``): labelled seed behaviours and a user's JSONL
(``rolekit_redteam.seeds``), and Self-RedTeam's reward tables as pure functions
(``rolekit_redteam.rewards``).
"""

from __future__ import annotations

from rolekit.hookspecs import hookimpl
from rolekit_redteam.redteam import RedTeam

__all__ = ["RedTeam"]


@hookimpl
def rolekit_register_games(registry):
    registry.add(RedTeam)
