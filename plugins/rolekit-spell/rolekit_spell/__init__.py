"""rolekit-spell: SPELL's questioner, responder and verifier over documents, one model in
all three seats.

A rolekit plugin (entry point ``spell`` in group ``rolekit``). It registers the game
``spell`` (``rolekit_spell.spell``): documents from a seeded generator or a user's corpus
(``rolekit_spell.documents``), SPELL's parsing and rewards as pure functions
(``rolekit_spell.rewards``), terse prompts for small models and SPELL's own
(``rolekit_spell.prompts``).
"""

from __future__ import annotations

from rolekit.hookspecs import hookimpl
from rolekit_spell.spell import Spell

__all__ = ["Spell"]


@hookimpl
def rolekit_register_games(registry):
    registry.add(Spell)
