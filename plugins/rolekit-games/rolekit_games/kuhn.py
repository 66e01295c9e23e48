"""Kuhn Poker with OpenSpiel's rules: bets go into the pot, showdown pays the pot.

Three cards J < Q < K; each player antes 1 chip and is dealt one card. The first
player checks or bets 1; facing a check the second player checks (showdown for the
2-chip pot) or bets; facing a bet a player folds (forfeiting the pot) or calls (showdown
for the 4-chip pot). Net result per round: +-1 (check-check showdown or a fold) or +-2
(a called bet).

``rounds`` (default 1; SPIRAL used 5) plays that many independent deals; who acts
first alternates (player_0 in odd-numbered rounds 1, 3, 5, ..., player_1 in even ones).
Returns are the chips won over all rounds (``scoring="chips"``, zero-sum) or +1 / -1 / 0
by the sign of that sum (``scoring="win"``, SPIRAL's reward).

The 12 information sets (card + public history of the current round) are explicit:
``infoset_key(state)`` names the one the player to act is in, ``information_sets()``
gives a state and role for each (round 1), and ``exploitability(probs)`` scores a
policy exactly (``kuhn_eval``).
"""

from __future__ import annotations

import random
from typing import Any, Mapping, Sequence

import attrs

from rolekit.game import TurnBasedGame
from rolekit.types import Role
from rolekit_games import kuhn_eval
from rolekit_games.kuhn_eval import CARDS

SCORING = ("chips", "win")
_PASSIVE, _AGGRESSIVE = "p", "b"


@attrs.frozen
class KuhnState:
    """Everything about a Kuhn match; seats see it only through ``observe``."""

    deals: tuple[tuple[int, int], ...]  # per round: (card of player_0, card of player_1)
    round: int = 0  # index of the round being played (== len(deals) once over)
    history: str = ""  # moves of the current round: "p" (check/fold), "b" (bet/call)
    chips: tuple[int, int] = (0, 0)  # net chips won in finished rounds, per player
    log: tuple[tuple[str, int, str], ...] = ()  # finished rounds: (history, first actor, result)

    @property
    def over(self) -> bool:
        return self.round >= len(self.deals)

    @property
    def first(self) -> int:
        """The player (0 or 1) who acts first in the current round."""
        return self.round % 2

    @property
    def to_act(self) -> int:
        return (self.first + len(self.history)) % 2


def _describe(history: str) -> list[str]:
    """Each move of a round's history as a verb: checked, bet, folded, called."""
    verbs = []
    for i, move in enumerate(history):
        facing = kuhn_eval.facing_bet(history[:i])
        verbs.append(("called" if facing else "bet") if move == _AGGRESSIVE else ("folded" if facing else "checked"))
    return verbs


class KuhnPoker(TurnBasedGame):
    """Kuhn Poker (OpenSpiel rules), optionally several rounds.

    ``recap`` (terse mode, default on): the answer starts with the player's card, e.g.
    ``K: [call]`` -- the game writes ``K: [`` and the model the move. SmolLM2-135M cannot
    learn card-dependent play when the card is only stated in the prompt (its choice at
    the answer position barely depends on it, even under supervised targets); with the
    card restated at the answer it can (BENCHMARKS.md, "Why the card is restated").
    """

    name = "kuhn_poker"
    description = "Kuhn Poker, OpenSpiel rules (bets go into the pot): check, bet, fold, call; rounds option."
    roles = (Role("player_0", "acts first in round 1"), Role("player_1", "acts second in round 1"))

    def __init__(self, *, rounds: int = 1, scoring: str = "chips", recap: bool = True, **options: Any):
        super().__init__(**options)
        self.recap = recap
        if not isinstance(rounds, int) or rounds < 1:
            raise ValueError(f"rounds must be a positive integer, got {rounds!r}")
        if scoring not in SCORING:
            raise ValueError(f"scoring must be one of {SCORING}, got {scoring!r}")
        self.rounds, self.scoring = rounds, scoring

    # --- rules ----------------------------------------------------------------------

    def reset(self, rng: random.Random) -> KuhnState:
        return KuhnState(deals=tuple(tuple(rng.sample(range(3), 2)) for _ in range(self.rounds)))

    def current_role(self, state: KuhnState) -> str:
        return f"player_{state.to_act}"

    def legal_actions(self, state: KuhnState) -> list[str]:
        if state.over:
            return []
        return ["fold", "call"] if kuhn_eval.facing_bet(state.history) else ["check", "bet"]

    def apply(self, state: KuhnState, action: str) -> KuhnState:
        legal = self.legal_actions(state)
        if action not in legal:
            raise ValueError(f"illegal Kuhn action {action!r} (legal: {legal})")
        history = state.history + (_AGGRESSIVE if action in ("bet", "call") else _PASSIVE)
        if not kuhn_eval.is_terminal(history):
            return attrs.evolve(state, history=history)
        first = state.first
        deal = state.deals[state.round]
        won = kuhn_eval.payoff((deal[first], deal[1 - first]), history)  # by the first actor
        chips = list(state.chips)
        chips[first] += won
        chips[1 - first] -= won
        showdown = history in ("pp", "bb", "pbb")
        winner = first if won > 0 else 1 - first
        result = (f"showdown: player_0 had {CARDS[deal[0]]}, player_1 had {CARDS[deal[1]]}; "
                  if showdown else "no showdown; ") + f"player_{winner} won {abs(won)} chip(s)"
        return KuhnState(deals=state.deals, round=state.round + 1, history="", chips=tuple(chips),
                         log=state.log + ((history, first, result),))

    def returns(self, state: KuhnState) -> dict[str, float] | None:
        if not state.over:
            return None
        c0, c1 = state.chips
        if self.scoring == "win":
            sign = (c0 > c1) - (c0 < c1)
            return {"player_0": float(sign), "player_1": float(-sign)}
        return {"player_0": float(c0), "player_1": float(c1)}

    def outcome(self, state: KuhnState) -> dict[str, Any]:
        rounds = []
        for history, first, result in state.log:
            moves = ", ".join(f"player_{(first + k) % 2} {verb}" for k, verb in enumerate(_describe(history)))
            rounds.append(f"{moves}; {result}")
        return {"chips": {"player_0": state.chips[0], "player_1": state.chips[1]},
                "cards": [CARDS[a] + CARDS[b] for a, b in state.deals], "rounds": rounds}

    # --- what a seat sees ---------------------------------------------------------------

    def rules(self, role: str) -> str:
        rounds = "one round" if self.rounds == 1 else f"{self.rounds} rounds (a new deal each round)"
        if self.mode == "terse":  # short prompts: a small model reads them better, and cheaper
            return (f"You are {role} in Kuhn Poker ({rounds}). Cards J < Q < K, one hidden card each. "
                    "Bet or call adds 1 chip to the pot; fold gives up the pot; at showdown the higher card wins.")
        return (
                f"You are {role} in Kuhn Poker, {rounds}. Cards J < Q < K; each player antes 1 chip and holds "
                "one hidden card. "
                "[bet] or [call] adds 1 chip to the pot; [fold] gives up the pot; "
                "at showdown the higher card wins the pot. Win as many chips as you can."
            )
        return (
            f"You are {role} in Kuhn Poker, a two-player card game of {rounds}.\n"
            "The deck has three cards, J < Q < K. Each round both players ante 1 chip into the pot and "
            "each gets one card that the other cannot see.\n"
            "Moves: if nobody has bet yet, [check] or [bet] (put 1 more chip in the pot); "
            "facing a bet, [fold] (give up the pot) or [call] (match the bet).\n"
            "Check-check or bet-call ends in a showdown: the higher card wins the pot. "
            "A fold gives the pot to the other player.\n"
            "Your goal is to win as many chips as possible."
        )

    def observe(self, state: KuhnState, role: str) -> str:
        me = int(role.rsplit("_", 1)[1])
        lines = []
        for i, (history, first, result) in enumerate(state.log):
            moves = ", ".join(f"{'you' if (first + k) % 2 == me else 'opponent'} {verb}"
                              for k, verb in enumerate(_describe(history)))
            lines.append(f"Round {i + 1}: {moves}; {result}.")
        if state.log:
            lines.append(f"Chips won so far: you {state.chips[me]:+d}, opponent {state.chips[1 - me]:+d}.")
        if state.over:
            return "\n".join(lines + ["The game is over."])
        card = CARDS[state.deals[state.round][me]]
        if self.mode == "terse" and self.rounds == 1:  # the short form of the same facts
            verbs = _describe(state.history)
            seen = ", ".join(f"{'you' if (state.first + k) % 2 == me else 'opponent'} {v}" for k, v in enumerate(verbs))
            return f"Your card: {card}. {seen.capitalize() if seen else 'You act first'}. Pot: {2 + state.history.count(_AGGRESSIVE)}."
        who = "You act first" if state.first == me else "Your opponent acts first"
        lines.append(f"Round {state.round + 1} of {self.rounds}. Your card: {card}. {who} this round.")
        pot = 2 + state.history.count(_AGGRESSIVE)
        verbs = _describe(state.history)
        if verbs:
            moves = ", ".join(f"{'you' if (state.first + k) % 2 == me else 'your opponent'} {v}"
                              for k, v in enumerate(verbs))
            lines.append(f"So far this round: {moves}. Pot: {pot} chips.")
        else:
            lines.append(f"No moves yet this round. Pot: {pot} chips.")
        return "\n".join(lines)

    def answer_lead(self, state: KuhnState, role: str) -> str:
        if not self.recap or state.over:
            return ""
        return f"{CARDS[state.deals[state.round][int(role.rsplit('_', 1)[1])]]}: "

    # --- exact evaluation ---------------------------------------------------------------

    def infoset_key(self, state: KuhnState) -> str:
        """The information set of the player to act: its card + this round's history."""
        return kuhn_eval.infoset(state.deals[state.round][state.to_act], state.history)

    def information_sets(self) -> dict[str, tuple[KuhnState, str]]:
        """The 12 information sets of round 1: key -> (a state in it, the role to act).

        The other player's card in each state is arbitrary; it never shows in the prompt.
        """
        out = {}
        for key in kuhn_eval.INFOSETS:
            card, history = CARDS.index(key[0]), key[1:]
            player = kuhn_eval.player_to_act(history)
            other = next(c for c in range(3) if c != card)
            deal = (card, other) if player == 0 else (other, card)
            deals = (deal,) + ((0, 1),) * (self.rounds - 1)
            out[key] = (KuhnState(deals=deals, history=history), f"player_{player}")
        return out

    def exploitability(self, probs: Mapping[str, Mapping[str, float]]) -> float:
        """Exploitability (OpenSpiel convention) of infoset -> {action: probability}."""
        return float(kuhn_eval.exploitability(kuhn_eval.aggressive_probabilities(probs)))

    def average_strategy(self, tables: Sequence[Mapping[str, Mapping[str, float]]],
                         weights: Sequence[float]) -> dict[str, dict[str, float]]:
        """The average policy of a population as one strategy table: the mixture that draws
        table k with probability ``weights[k]`` per game, reach-weighted at each
        information set (``kuhn_eval.average_policy``)."""
        mixed = kuhn_eval.average_policy([kuhn_eval.aggressive_probabilities(t) for t in tables], list(weights))
        out = {}
        for key, (state, _) in self.information_sets().items():
            passive, aggressive = self.legal_actions(state)
            out[key] = {passive: float(1 - mixed[key]), aggressive: float(mixed[key])}
        return out
