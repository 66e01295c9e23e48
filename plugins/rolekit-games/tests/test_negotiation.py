"""Simple Negotiation: the offer grammar, affordability, trades, the heuristic opponent."""

import random

import pytest

from games_helpers import play
from rolekit.game import MoveInfo
from rolekit_games.negotiation import Negotiation, NegotiationState, parse_offer


def state_with(inv0, inv1, values0=(10,) * 5, values1=(10,) * 5, **kw):
    return NegotiationState(start=(inv0, inv1), inventory=(inv0, inv1), values=(values0, values1), **kw)


@pytest.mark.parametrize("text, expected", [
    ("Offer: 3 Wood, 1 Sheep -> 2 Brick", ((0, 3, 1, 0, 0), (0, 0, 0, 2, 0))),
    ("offer:1 wheat and 2 ores->1 bricks", ((1, 0, 0, 0, 2), (0, 0, 0, 1, 0))),
    ("Offer 1 Wood + 1 Wood -> 1 Sheep", ((0, 2, 0, 0, 0), (0, 0, 1, 0, 0))),
    ("Offer: 3 Wood -> 2 Wood", None),  # same resource on both sides
    ("Offer: -> 2 Brick", None),
    ("Offer: 3 Wood ->", None),
    ("Offer: 0 Wood -> 1 Brick", None),
    ("Offer: 3 Gold -> 1 Brick", None),
    ("Offer: three Wood -> 1 Brick", None),
    ("Offer: 3 Wood -> 1 Brick -> 1 Ore", None),
    ("Give: 3 Wood -> 1 Brick", None),
])
def test_offer_grammar(text, expected):
    assert parse_offer(text) == expected


def test_offers_must_be_affordable_and_accepts_too():
    game = Negotiation()
    state = state_with((1, 5, 5, 5, 5), (5, 5, 5, 0, 5))
    assert game.parse_action(state, "I propose [Offer: 2 Wheat -> 1 Brick]") is None  # owns 1 Wheat
    assert game.parse_action(state, "[Offer: 1 Wheat -> 1 Brick] Deal?") == "Offer: 1 Wheat -> 1 Brick"
    assert game.parse_action(state, "[Offer: 1 Wheat -> 1 Brick] or [maybe]") is None  # the last one counts
    action = game.parse_action(state, "Deal? [Offer: 1 Wheat, 1 Ore -> 1 Brick]")
    assert action == "Offer: 1 Wheat, 1 Ore -> 1 Brick"
    state = game.apply(state, action)
    # player_1 owns no Brick: it cannot accept, but may deny or counter.
    assert game.parse_action(state, "[Accept]") is None
    assert game.parse_action(state, "[deny]") == "Deny"
    assert "Accept" not in game.legal_actions(state) and "Deny" in game.legal_actions(state)


def test_accepted_trade_moves_resources_and_decides_winner():
    game = Negotiation(turn_limit=2)
    state = state_with((5, 5, 5, 5, 5), (5, 5, 5, 5, 5), values0=(1, 1, 1, 9, 1), values1=(9, 1, 1, 1, 1))
    state = game.apply(state, game.parse_action(state, "[Offer: 2 Wheat -> 1 Brick]"))
    assert "Offer pending to you: your opponent gives 2 Wheat and wants 1 Brick." in game.observe(state, "player_1")
    assert game.parse_action(state, "[ACCEPT]") == "Accept"
    state = game.apply(state, "Accept")
    assert state.inventory == ((3, 5, 5, 6, 5), (7, 5, 5, 4, 5))
    assert game.gains(state) == (-2 + 9, 18 - 1)
    assert game.returns(state) == {"player_0": -1.0, "player_1": 1.0}
    assert game.legal_actions(state) == [] and game.parse_action(state, "[Deny]") is None


def test_deny_only_with_an_offer_pending_and_no_action_is_invalid():
    game = Negotiation()
    state = game.reset(random.Random(0))
    assert game.parse_action(state, "[Deny]") is None
    assert game.parse_action(state, "[Accept]") is None
    assert game.parse_action(state, "Let us trade wood for brick.") is None
    assert all(a.startswith("Offer") for a in game.legal_actions(state))
    for action in game.legal_actions(state):
        assert game.parse_action(state, f"[{action}]") == action


def test_draw_without_trades():
    game = Negotiation(turn_limit=4)
    state = game.reset(random.Random(1))
    for _ in range(2):
        state = game.apply(state, game.legal_actions(state)[0])
        state = game.apply(state, "Deny")
    assert game.returns(state) == {"player_0": 0.0, "player_1": 0.0}


def test_heuristic_accepts_good_offers_and_makes_greedy_ones(kernel):
    fn = kernel.opponents.get("heuristic")
    game = Negotiation()
    state = state_with((5, 5, 5, 5, 5), (5, 5, 5, 5, 5), values0=(1, 2, 3, 4, 40), values1=(40, 5, 5, 5, 5))
    move = MoveInfo(game, state, "player_0", tuple(game.legal_actions(state)))
    offer = fn(move, random.Random(0))
    assert offer == "Offer: 3 Wheat -> 1 Ore"
    state = game.apply(state, offer)
    move = MoveInfo(game, state, "player_1", tuple(game.legal_actions(state)))
    assert fn(move, random.Random(0)) == "Accept"  # 3 Wheat at 40 for 1 Ore at 5
    state = game.apply(state_with((5,) * 5, (5,) * 5, values1=(1, 1, 1, 1, 1)), "Offer: 1 Wheat -> 5 Ore")
    move = MoveInfo(game, state, "player_1", tuple(game.legal_actions(state)))
    assert fn(move, random.Random(0)).startswith("Offer")  # a bad offer gets a counter-offer


def test_heuristic_beats_random(kernel):
    game = Negotiation()
    score = 0.0
    for seed in range(60):
        score += play(kernel, game, seed, {"player_0": "heuristic", "player_1": "random"}).returns["player_0"]
        score += play(kernel, game, seed, {"player_0": "random", "player_1": "heuristic"}).returns["player_1"]
    assert score / 120 > 0.2


def test_prompts_in_both_modes_show_the_grammar():
    state = Negotiation().reset(random.Random(3))
    for mode in ("terse", "reasoning"):
        game = Negotiation(mode=mode)
        for role in ("player_0", "player_1"):
            prompt = game.prompt(state, role)
            assert "[Offer: <what you give> -> <what you want>]" in prompt and role in prompt
    assert "value" in Negotiation().observe(state, "player_1")


@pytest.mark.parametrize("bad", [0, 100, "10"])
def test_bad_turn_limit(bad):
    with pytest.raises(ValueError):
        Negotiation(turn_limit=bad)
