"""rolekit: train one language model by self-play across many roles."""

from rolekit.types import Episode, Role, Sample, Turn, Verdict
from rolekit.game import Game, TurnBasedGame
from rolekit.table import Table

__version__ = "0.1.0"
__all__ = ["Episode", "Game", "Role", "Sample", "Table", "Turn", "TurnBasedGame", "Verdict"]
