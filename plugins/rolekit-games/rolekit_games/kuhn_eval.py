"""Exact evaluation of a Kuhn Poker policy: expected values, best responses, exploitability.

Pure arithmetic, no model: a *policy* maps each of the 12 information sets to the
probability of the aggressive action there (bet when nobody has bet, call when facing
a bet). Probabilities may be ``fractions.Fraction`` (results are then exact) or floats.

Conventions follow OpenSpiel's ``kuhn_poker``:

* cards J < Q < K (0, 1, 2); each player antes 1; ``p`` = pass (check or fold),
  ``b`` = bet (bet or call); the public history is the string of moves so far;
* an information set is the acting player's card followed by the history:
  the first player acts at ``""`` and ``"pb"``, the second at ``"p"`` and ``"b"``
  (``"K"``, ``"Kpb"``, ``"Qp"``, ``"Jb"``, ...);
* ``exploitability(policy) = nash_conv(policy) / 2``, where ``nash_conv`` is the sum
  over both players of the best-response value against the policy's other half
  (the game is zero-sum, so the policy's own values cancel). The uniform policy's is
  11/24 = 0.4583; every Nash equilibrium's is 0. The game value for the first player
  is -1/18.
"""

from __future__ import annotations

import itertools
from fractions import Fraction
from typing import Callable, Mapping, Union

Number = Union[float, Fraction]
Policy = Mapping[str, Number]  # information set -> P(bet or call)

CARDS = ("J", "Q", "K")
HISTORIES = {0: ("", "pb"), 1: ("p", "b")}  # where each player acts
INFOSETS = tuple(card + h for player in (0, 1) for card in CARDS for h in HISTORIES[player])
TERMINALS = ("pp", "bp", "bb", "pbp", "pbb")
DEALS = tuple(itertools.permutations(range(3), 2))  # (first player's card, second's): 6 equally likely
GAME_VALUE = Fraction(-1, 18)  # for the first player, under any equilibrium


def player_to_act(history: str) -> int:
    return len(history) % 2


def is_terminal(history: str) -> bool:
    return history in TERMINALS


def facing_bet(history: str) -> bool:
    """Whether the player to act faces an outstanding bet (so p = fold, b = call)."""
    return history in ("b", "pb")


def infoset(card: int, history: str) -> str:
    return CARDS[card] + history


def payoff(cards: tuple[int, int], history: str) -> int:
    """Chips won by the first player at a terminal ``history``; ``cards`` = (first's, second's)."""
    if history == "bp":  # second player folds to a bet
        return 1
    if history == "pbp":  # first player folds to a bet
        return -1
    stake = 1 if history == "pp" else 2  # showdown: ante, or ante + bet
    if history not in TERMINALS:
        raise ValueError(f"{history!r} is not a terminal Kuhn history (terminals: {TERMINALS})")
    return stake if cards[0] > cards[1] else -stake


def check_policy(policy: Policy) -> None:
    """Raise ValueError unless ``policy`` gives a probability in [0, 1] at all 12 information sets."""
    for key in INFOSETS:
        if key not in policy:
            raise ValueError(f"policy has no probability for information set {key!r} (needs all of {INFOSETS})")
        if not 0 <= policy[key] <= 1:
            raise ValueError(f"policy[{key!r}] = {policy[key]!r} is not a probability")


def _value(cards: tuple[int, int], history: str, act: Callable[[int, str], Number]) -> Number:
    """First player's expected payoff below ``history``; ``act(player, infoset)`` = P(b)."""
    if history in TERMINALS:
        return payoff(cards, history)
    player = player_to_act(history)
    q = act(player, infoset(cards[player], history))
    return q * _value(cards, history + "b", act) + (1 - q) * _value(cards, history + "p", act)


def expected_value(first: Policy, second: Policy | None = None) -> Number:
    """The first player's expected payoff when it plays ``first`` and the second player
    plays ``second`` (default: the same policy in both seats)."""
    second = first if second is None else second
    check_policy(first)
    check_policy(second)
    act = lambda player, key: (first if player == 0 else second)[key]  # noqa: E731
    return sum(Fraction(1, 6) * _value(deal, "", act) for deal in DEALS)


def best_response(policy: Policy, player: int) -> tuple[Number, dict[str, int]]:
    """``player``'s best-response value against ``policy``'s other seat, and a pure best
    response (infoset -> 1 for bet/call, 0 for check/fold), by enumeration.

    ``player``'s choices at its two information sets with a given card do not affect
    what it gets with another card, so each card is solved on its own: 4 pure plans per
    card, each scored against both possible opposing cards.
    """
    check_policy(policy)
    sign = 1 if player == 0 else -1
    total: Number = 0
    plan: dict[str, int] = {}
    for card in range(3):
        keys = [infoset(card, h) for h in HISTORIES[player]]
        best = None
        for choice in itertools.product((0, 1), repeat=2):
            pure = dict(zip(keys, choice))
            act = lambda p, key: pure[key] if p == player else policy[key]  # noqa: E731
            value = sum(
                Fraction(1, 6) * sign * _value(deal, "", act) for deal in DEALS if deal[player] == card
            )
            if best is None or value > best[0]:
                best = (value, pure)
        total += best[0]
        plan.update(best[1])
    return total, plan


def nash_conv(policy: Policy) -> Number:
    """Sum over both players of the best-response value against ``policy`` (OpenSpiel's NashConv)."""
    return best_response(policy, 0)[0] + best_response(policy, 1)[0]


def exploitability(policy: Policy) -> Number:
    """OpenSpiel's exploitability: NashConv / 2. Uniform: 11/24; any Nash policy: 0."""
    return nash_conv(policy) / 2


def uniform_policy() -> dict[str, Fraction]:
    return {key: Fraction(1, 2) for key in INFOSETS}


def nash_policy(alpha: Number = Fraction(1, 3)) -> dict[str, Number]:
    """The equilibrium family (Kuhn 1950), ``alpha`` in [0, 1/3].

    First player: bets J with alpha, never Q, K with 3 alpha; after check-bet it folds J,
    calls Q with alpha + 1/3 and always calls K. Second player: after a check it bets J
    with 1/3, checks Q, bets K; facing a bet it folds J, calls Q with 1/3, calls K.
    """
    if not 0 <= alpha <= Fraction(1, 3):
        raise ValueError(f"alpha must be in [0, 1/3], got {alpha}")
    third = Fraction(1, 3)
    return {
        "J": alpha, "Jpb": 0, "Q": 0, "Qpb": alpha + third, "K": 3 * alpha, "Kpb": 1,
        "Jp": third, "Jb": 0, "Qp": 0, "Qb": third, "Kp": 1, "Kb": 1,
    }


def aggressive_probabilities(probs: Mapping[str, Mapping[str, Number]]) -> dict[str, Number]:
    """Turn infoset -> {action name: probability} (e.g. {"check": .7, "bet": .3}) into a
    ``Policy``: the probability of bet/call, normalised over the two actions (0.5 when
    both are 0)."""
    out = {}
    for key in INFOSETS:
        dist = {a.lower(): p for a, p in probs[key].items()}
        aggressive = dist.get("bet", 0) + dist.get("call", 0)
        passive = dist.get("check", 0) + dist.get("fold", 0)
        out[key] = aggressive / (aggressive + passive) if aggressive + passive > 0 else 0.5
    return out


def own_reach(policy: Policy, key: str) -> Number:
    """The probability that the player acting at information set ``key`` plays its own way
    there under ``policy`` (the product of its own earlier action probabilities on the
    path): 1 at ``""``, ``"p"`` and ``"b"``; P(check first) at ``"pb"``."""
    card, history = key[0], key[1:]
    if history == "pb":
        return 1 - policy[card]
    return 1


def average_policy(policies: list[Policy], weights: list[Number]) -> dict[str, Number]:
    """The behaviour strategy of the mixture that draws policy k with probability
    ``weights[k]`` (normalised) once per game and then plays it.

    Mixing per game is not averaging per information set: at each information set, each
    policy's probability counts in proportion to its weight times its own reach of that
    set (Kuhn's theorem; OpenSpiel's ``PolicyAggregator``). An information set no policy
    reaches gets the plain weighted mean (it is never played, so its value cannot matter).
    """
    if len(policies) != len(weights) or not policies:
        raise ValueError(f"average_policy needs one weight per policy, got {len(policies)} policies and "
                         f"{len(weights)} weights")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"average_policy weights must be >= 0 with a positive sum, got {list(weights)}")
    for policy in policies:
        check_policy(policy)
    out: dict[str, Number] = {}
    for key in INFOSETS:
        reach = [w * own_reach(p, key) for p, w in zip(policies, weights)]
        if sum(reach) > 0:
            out[key] = sum(r * p[key] for r, p in zip(reach, policies)) / sum(reach)
        else:
            out[key] = sum(w * p[key] for w, p in zip(weights, policies)) / sum(weights)
    return out


def to_openspiel(policy: Policy, game):
    """``policy`` (infoset -> P(bet/call)) as an OpenSpiel ``TabularPolicy`` of ``game``
    (``pyspiel.load_game("kuhn_poker")``), whose information-set strings name the card by
    its index; for checking this module against OpenSpiel (needs ``open_spiel``)."""
    from open_spiel.python import policy as os_policy

    table = os_policy.TabularPolicy(game)
    for key, q in policy.items():
        row = table.state_lookup[str(CARDS.index(key[0])) + key[1:]]
        table.action_probability_array[row] = [1 - float(q), float(q)]
    return table
