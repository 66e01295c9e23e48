"""Scripted opponents: perfect ``minimax`` (TicTacToe), ``nash`` (Kuhn), greedy ``heuristic`` (negotiation).

Each is ``fn(move: MoveInfo, rng) -> action``. The generic ``random`` opponent comes
from rolekit's built-ins and works on every game here. Kuhn opponents also carry
``action_probabilities(move) -> {action: probability}`` so that their exploitability can
be computed exactly.
"""

from __future__ import annotations

import random
from fractions import Fraction
from typing import Callable

from rolekit.game import MoveInfo
from rolekit_games import kuhn_eval, tictactoe
from rolekit_games.negotiation import RESOURCES, format_offer, worth


def minimax(move: MoveInfo, rng: random.Random) -> str:
    """Perfect TicTacToe: a uniformly random move among those of best minimax value
    (quickest win, slowest loss)."""
    return str(rng.choice(tictactoe.best_moves(move.state.board)))


class KuhnPolicyOpponent:
    """Plays a fixed Kuhn policy (infoset -> P(bet or call)) in every round."""

    def __init__(self, policy: kuhn_eval.Policy, doc: str):
        kuhn_eval.check_policy(policy)
        self.policy = dict(policy)
        self.__doc__ = doc

    def action_probabilities(self, move: MoveInfo) -> dict[str, float]:
        passive, aggressive = move.game.legal_actions(move.state)
        q = float(self.policy[move.game.infoset_key(move.state)])
        return {passive: 1.0 - q, aggressive: q}

    def __call__(self, move: MoveInfo, rng: random.Random) -> str:
        probs = self.action_probabilities(move)
        (passive, _), (aggressive, q) = probs.items()
        return aggressive if rng.random() < q else passive


def nash(alpha: Fraction = Fraction(1, 3)) -> Callable[[MoveInfo, random.Random], str]:
    return KuhnPolicyOpponent(kuhn_eval.nash_policy(alpha),
                              f"A Kuhn Poker Nash equilibrium policy (alpha = {alpha}).")


def heuristic(move: MoveInfo, rng: random.Random) -> str:
    """Greedy negotiator: accepts an offer worth more to it than it costs; otherwise
    (nothing pending, or a bad offer) it counter-offers its least valuable resource (as
    many units as keep the trade in its favour, up to 3) for one unit of its most
    valuable one."""
    game, state = move.game, move.state
    me = state.to_move
    values, mine = state.values[me], state.inventory[me]
    offer = state.pending
    if offer is not None and offer.by != me:
        if game.can_accept(state) and worth(offer.give, values) > worth(offer.get, values):
            return "Accept"
    owned = [i for i in range(len(RESOURCES)) if mine[i] > 0]
    low = min(values[i] for i in owned)
    give_i = rng.choice([i for i in owned if values[i] == low])
    others = [i for i in range(len(RESOURCES)) if i != give_i]
    high = max(values[i] for i in others)
    get_i = rng.choice([i for i in others if values[i] == high])
    units = max([k for k in (1, 2, 3) if k <= mine[give_i] and k * values[give_i] < values[get_i]], default=1)
    give = tuple(units if i == give_i else 0 for i in range(len(RESOURCES)))
    get = tuple(1 if i == get_i else 0 for i in range(len(RESOURCES)))
    return format_offer(give, get)  # type: ignore[arg-type]
