"""rolekit-games: SPIRAL's zero-sum games (Kuhn Poker, TicTacToe, Simple Negotiation).

A rolekit plugin (entry point ``games`` in group ``rolekit``). It registers the games
``kuhn_poker``, ``tictactoe`` and ``negotiation`` and the scripted opponents
``minimax`` (TicTacToe), ``nash`` / ``nash_alpha0`` (Kuhn) and ``heuristic``
(negotiation); rolekit's built-in ``random`` plays all three.
"""

from __future__ import annotations

from fractions import Fraction

from rolekit.hookspecs import hookimpl
from rolekit_games import opponents
from rolekit_games.kuhn import KuhnPoker
from rolekit_games.negotiation import Negotiation
from rolekit_games.tictactoe import TicTacToe

__all__ = ["KuhnPoker", "Negotiation", "TicTacToe"]


@hookimpl
def rolekit_register_games(registry):
    registry.add(KuhnPoker)
    registry.add(TicTacToe)
    registry.add(Negotiation)


@hookimpl
def rolekit_register_opponents(registry):
    registry.add("minimax", opponents.minimax, games=("tictactoe",))
    registry.add("nash", opponents.nash(Fraction(1, 3)), games=("kuhn_poker",))
    registry.add("nash_alpha0", opponents.nash(Fraction(0)), games=("kuhn_poker",))
    registry.add("heuristic", opponents.heuristic, games=("negotiation",))
