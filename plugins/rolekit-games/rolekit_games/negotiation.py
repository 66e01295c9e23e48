"""Simple Negotiation (SPIRAL / TextArena): trade five resources valued privately.

Each player is dealt a random inventory of Wheat, Wood, Sheep, Brick and Ore (5-25 of
each) and a private value per unit of each resource (5-40). Players move in turn, for
``turn_limit`` moves in all (default 10). A move is one action in brackets, optionally
with free text around it (only the action is passed on; the opponent never sees the
text):

* ``[Offer: 3 Wood, 1 Sheep -> 2 Brick]`` -- give 3 Wood and 1 Sheep for 2 Brick. Any
  offer that the grammar accepts is a legal move if the offerer owns what it gives, both
  sides are non-empty and no resource is on both sides. It replaces any offer pending.
* ``[Accept]`` -- take the offer pending to you (legal only if you own what it asks).
* ``[Deny]`` -- reject it (legal only while one is pending).

When the moves run out, each player's gain is the value of its inventory minus the
value of its starting inventory, at its own values. Whoever gained more wins (+1, the
other -1); equal gains draw (0, 0).
"""

from __future__ import annotations

import random
import re
from typing import Any

import attrs

from rolekit.answers import extract_answer, normalize
from rolekit.game import TurnBasedGame
from rolekit.types import Role

RESOURCES = ("Wheat", "Wood", "Sheep", "Brick", "Ore")
QUANTITIES = (5, 25)  # dealt units of each resource, inclusive
VALUES = (5, 40)  # value of one unit to its owner, inclusive
MAX_UNITS = 9999  # larger quantities are not part of the grammar

_OFFER = re.compile(r"^offer\s*:?\s*(?P<give>.*?)\s*->\s*(?P<get>.*?)$", re.IGNORECASE | re.DOTALL)
_ITEM = re.compile(r"^(\d{1,4})\s+([a-z]+)$", re.IGNORECASE)
_SEPARATOR = re.compile(r"\s*(?:,|\+|\band\b)\s*", re.IGNORECASE)
_NAMES = {r.lower(): i for i, r in enumerate(RESOURCES)}

Bundle = tuple[int, int, int, int, int]  # units of each resource, in RESOURCES order


@attrs.frozen
class Offer:
    by: int  # the offering player
    give: Bundle  # what the offerer gives
    get: Bundle  # what the offerer wants in return


@attrs.frozen
class NegotiationState:
    start: tuple[Bundle, Bundle]  # starting inventories of player_0, player_1
    inventory: tuple[Bundle, Bundle]
    values: tuple[Bundle, Bundle]  # private: each unit's value to its owner
    turn: int = 0  # moves made so far
    pending: Offer | None = None
    log: tuple[str, ...] = ()  # public record of moves

    @property
    def to_move(self) -> int:
        return self.turn % 2


def _resource(word: str) -> int | None:
    word = word.lower()
    if word in _NAMES:
        return _NAMES[word]
    if word.endswith("s") and word[:-1] in _NAMES:  # "Bricks", "Ores"
        return _NAMES[word[:-1]]
    return None


def _bundle(text: str) -> Bundle | None:
    units = [0] * len(RESOURCES)
    parts = [p for p in _SEPARATOR.split(text.strip())]
    for part in parts:
        match = _ITEM.match(part)
        if match is None:
            return None
        count, index = int(match.group(1)), _resource(match.group(2))
        if index is None or count < 1:
            return None
        units[index] += count
    if not any(units) or max(units) > MAX_UNITS:
        return None
    return tuple(units)  # type: ignore[return-value]


def parse_offer(text: str) -> tuple[Bundle, Bundle] | None:
    """(give, get) of ``Offer: <items> -> <items>``, or None if it is not grammatical.

    Items are ``<count> <resource>`` joined by commas, ``+`` or ``and``; resource names
    ignore case and a plural ``s``; repeated resources add up. A resource on both
    sides is not an offer.
    """
    match = _OFFER.match(text.strip())
    if match is None:
        return None
    give, get = _bundle(match.group("give")), _bundle(match.group("get"))
    if give is None or get is None or any(g and w for g, w in zip(give, get)):
        return None
    return give, get


def format_bundle(units: Bundle) -> str:
    return ", ".join(f"{n} {RESOURCES[i]}" for i, n in enumerate(units) if n)


def format_offer(give: Bundle, get: Bundle) -> str:
    return f"Offer: {format_bundle(give)} -> {format_bundle(get)}"


def worth(units: Bundle, values: Bundle) -> int:
    return sum(n * v for n, v in zip(units, values))


def affords(inventory: Bundle, units: Bundle) -> bool:
    return all(have >= need for have, need in zip(inventory, units))


class Negotiation(TurnBasedGame):
    """Simple Negotiation: trade resources with private values; the bigger gain in value wins."""

    name = "negotiation"
    description = "Simple Negotiation: [Offer: 3 Wood, 1 Sheep -> 2 Brick], [Accept], [Deny]; bigger value gain wins."
    roles = (Role("player_0", "moves first"), Role("player_1", "moves second"))

    def __init__(self, *, turn_limit: int = 10, **options: Any):
        super().__init__(**options)
        if not isinstance(turn_limit, int) or not 1 <= turn_limit < self.max_turns:
            raise ValueError(f"turn_limit must be an integer in [1, {self.max_turns - 1}], got {turn_limit!r}")
        self.turn_limit = turn_limit

    # --- rules ----------------------------------------------------------------------

    def reset(self, rng: random.Random) -> NegotiationState:
        inventories = tuple(tuple(rng.randint(*QUANTITIES) for _ in RESOURCES) for _ in range(2))
        values = tuple(tuple(rng.randint(*VALUES) for _ in RESOURCES) for _ in range(2))
        return NegotiationState(start=inventories, inventory=inventories, values=values)  # type: ignore[arg-type]

    def current_role(self, state: NegotiationState) -> str:
        return f"player_{state.to_move}"

    def can_accept(self, state: NegotiationState) -> bool:
        offer = state.pending
        return offer is not None and offer.by != state.to_move and affords(state.inventory[state.to_move], offer.get)

    def valid_offer(self, state: NegotiationState, give: Bundle, get: Bundle) -> bool:
        return affords(state.inventory[state.to_move], give)

    def legal_actions(self, state: NegotiationState) -> list[str]:
        """A representative list of legal moves (every legal offer would be too many):
        Accept/Deny when an offer is pending, and every affordable one-for-one offer.
        ``parse_action`` accepts any legal offer."""
        if state.turn >= self.turn_limit:
            return []
        out = []
        if self.can_accept(state):
            out.append("Accept")
        if state.pending is not None:
            out.append("Deny")
        mine = state.inventory[state.to_move]
        for i in range(len(RESOURCES)):
            if mine[i] < 1:
                continue
            for j in range(len(RESOURCES)):
                if j != i:
                    give = tuple(int(k == i) for k in range(len(RESOURCES)))
                    get = tuple(int(k == j) for k in range(len(RESOURCES)))
                    out.append(format_offer(give, get))  # type: ignore[arg-type]
        return out

    def parse_action(self, state: NegotiationState, text: str) -> str | None:
        """The canonical form of the move in ``text`` if it is legal, else None. Never raises."""
        answer = extract_answer(text)
        if answer is None or state.turn >= self.turn_limit:
            return None
        word = normalize(answer)
        if word == "accept":
            return "Accept" if self.can_accept(state) else None
        if word == "deny":
            return "Deny" if state.pending is not None else None
        offer = parse_offer(answer)
        if offer is None or not self.valid_offer(state, *offer):
            return None
        return format_offer(*offer)

    def apply(self, state: NegotiationState, action: str) -> NegotiationState:
        me = state.to_move
        who = f"player_{me}"
        if action == "Accept" and self.can_accept(state):
            offer = state.pending
            inventory = list(state.inventory)
            giver, taker = offer.by, me
            inventory[giver] = tuple(h - g + w for h, g, w in zip(inventory[giver], offer.give, offer.get))
            inventory[taker] = tuple(h + g - w for h, g, w in zip(inventory[taker], offer.give, offer.get))
            return attrs.evolve(state, inventory=tuple(inventory), turn=state.turn + 1, pending=None,
                                log=state.log + (f"{who} accepted the offer.",))
        if action == "Deny" and state.pending is not None:
            return attrs.evolve(state, turn=state.turn + 1, pending=None, log=state.log + (f"{who} denied the offer.",))
        offer = parse_offer(action)
        if offer is None or not self.valid_offer(state, *offer) or state.turn >= self.turn_limit:
            raise ValueError(f"illegal negotiation move {action!r}")
        return attrs.evolve(state, turn=state.turn + 1, pending=Offer(me, *offer),
                            log=state.log + (f"{who}: [{format_offer(*offer)}]",))

    def gains(self, state: NegotiationState) -> tuple[int, int]:
        return tuple(worth(state.inventory[p], state.values[p]) - worth(state.start[p], state.values[p])
                     for p in (0, 1))  # type: ignore[return-value]

    def returns(self, state: NegotiationState) -> dict[str, float] | None:
        if state.turn < self.turn_limit:
            return None
        g0, g1 = self.gains(state)
        sign = (g0 > g1) - (g0 < g1)
        return {"player_0": float(sign), "player_1": float(-sign)}

    def outcome(self, state: NegotiationState) -> dict[str, Any]:
        g0, g1 = self.gains(state)
        return {"gains": {"player_0": g0, "player_1": g1},
                "trades": sum(line.endswith("accepted the offer.") for line in state.log)}

    # --- what a seat sees ---------------------------------------------------------------

    def rules(self, role: str) -> str:
        return (
            f"You are {role} in a negotiation game with {self.turn_limit} moves in all (players alternate; "
            "player_0 moves first).\n"
            f"Resources: {', '.join(RESOURCES)}. Each player has its own inventory and its own private value "
            "for each resource; you see only yours.\n"
            "Each move is one action in square brackets:\n"
            "  [Offer: 3 Wood, 1 Sheep -> 2 Brick] offers to give 3 Wood and 1 Sheep in exchange for 2 Brick "
            "(you must own what you give; it replaces any pending offer);\n"
            "  [Accept] accepts the offer made to you (you must own what it asks for);\n"
            "  [Deny] rejects it.\n"
            "At the end, whoever increased the total value of their inventory (at their own values) more wins."
        )

    def observe(self, state: NegotiationState, role: str) -> str:
        me = int(role.rsplit("_", 1)[1])
        mine, values = state.inventory[me], state.values[me]
        lines = [f"Move {min(state.turn + 1, self.turn_limit)} of {self.turn_limit}.",
                 "Your inventory (units, and the value of one unit to you):"]
        lines += [f"  {r}: {mine[i]} (value {values[i]} each)" for i, r in enumerate(RESOURCES)]
        now, start = worth(mine, values), worth(state.start[me], values)
        lines.append(f"Total value now: {now} (at the start: {start}, change {now - start:+d}).")
        if state.log:
            lines.append("Moves so far:")
            lines += [f"  {line.replace(role, 'you (' + role + ')')}" for line in state.log]
        offer = state.pending
        if offer is not None and offer.by != me:
            lines.append(f"Offer pending to you: your opponent gives {format_bundle(offer.give)} "
                         f"and wants {format_bundle(offer.get)}.")
        elif offer is not None:
            lines.append("Your offer is pending.")
        return "\n".join(lines)

    def instructions(self, state: NegotiationState) -> str:
        legal = self.legal_actions(state)
        forms = []
        if "Accept" in legal:
            forms.append("[Accept]")
        if state.pending is not None and state.pending.by != state.to_move:
            forms.append("[Deny]")
        offers = [a for a in legal if a.startswith("Offer")]
        example = offers[0] if offers else "Offer: 1 Wood -> 1 Brick"
        forms.append(f"[Offer: <what you give> -> <what you want>], e.g. [{example}]")
        actions = "Legal actions: " + ", or ".join(forms)
        if self.mode == "terse":
            return f"{actions}\nReply with exactly one action in square brackets, nothing else."
        return (f"{actions}\nThink step by step, then give your final action as \\boxed{{action}}, "
                f"e.g. \\boxed{{{example}}}.")
