"""rolekit-eva: eva's creator and solver, one model in both seats, under a judge.

A rolekit plugin (entry point ``eva`` in group ``rolekit``). It registers the game ``eva``
(``rolekit_eva.eva``): the prompt pool, informativeness and selection as pure functions
(``rolekit_eva.pool``), seed and held-out prompts and EvolInstruct-style rubrics
(``rolekit_eva.prompts``).
"""

from __future__ import annotations

from rolekit.hookspecs import hookimpl
from rolekit_eva.eva import Eva

__all__ = ["Eva"]


@hookimpl
def rolekit_register_games(registry):
    registry.add(Eva)
