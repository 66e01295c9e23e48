"""Kuhn Poker as a rolekit game: prompts, information sets, rounds, scripted opponents."""

import random
from fractions import Fraction

import attrs
import pytest

from games_helpers import play
from rolekit.game import MoveInfo
from rolekit_games import kuhn_eval
from rolekit_games.kuhn import KuhnPoker, KuhnState


def test_information_sets_are_the_12_and_prompts_hide_the_other_card():
    game = KuhnPoker()
    sets = game.information_sets()
    assert sorted(sets) == sorted(kuhn_eval.INFOSETS)
    for key, (state, role) in sets.items():
        assert game.current_role(state) == role
        assert game.infoset_key(state) == key
        me = int(role[-1])
        prompts = set()
        for other in range(3):
            if other == kuhn_eval.CARDS.index(key[0]):
                continue
            deal = list(state.deals[0])
            deal[1 - me] = other
            prompts.add(game.prompt(attrs.evolve(state, deals=(tuple(deal),)), role))
        assert len(prompts) == 1, key
        assert f"Your card: {key[0]}" in prompts.pop()


def test_legal_actions_and_terse_and_reasoning_prompts():
    state = KuhnState(deals=((2, 0),))
    for mode, marker in (("terse", "nothing else"), ("reasoning", "\\boxed")):
        game = KuhnPoker(mode=mode)
        assert game.legal_actions(state) == ["check", "bet"]
        for role in ("player_0", "player_1"):
            prompt = game.prompt(state, role)
            assert "[check], [bet]" in prompt and marker in prompt and role in prompt
    assert KuhnPoker().legal_actions(KuhnState(deals=((2, 0),), history="pb")) == ["fold", "call"]


def test_rounds_alternate_first_player_and_sum_chips():
    game = KuhnPoker(rounds=3)
    state = KuhnState(deals=((2, 0), (2, 0), (0, 1)))
    assert game.current_role(state) == "player_0"
    state = game.apply(game.apply(state, "bet"), "call")  # round 1: K beats J, +2 to player_0
    assert state.round == 1 and state.chips == (2, -2)
    assert game.current_role(state) == "player_1"  # round 2: player_1 acts first
    state = game.apply(game.apply(state, "bet"), "fold")  # player_0 folds: +1 to player_1
    assert state.chips == (1, -1) and game.returns(state) is None
    state = game.apply(game.apply(state, "check"), "check")  # round 3: J vs Q showdown, pot 2
    assert game.returns(state) == {"player_0": 0.0, "player_1": 0.0}
    assert KuhnPoker(rounds=3, scoring="win").returns(state) == {"player_0": 0.0, "player_1": 0.0}
    assert "Round 2: opponent bet, you folded" in game.observe(state, "player_0")


def test_win_scoring():
    game = KuhnPoker(scoring="win")
    state = game.apply(game.apply(KuhnState(deals=((2, 0),)), "bet"), "call")
    assert game.returns(state) == {"player_0": 1.0, "player_1": -1.0}


@pytest.mark.parametrize("bad", [dict(rounds=0), dict(rounds="5"), dict(scoring="money"), dict(mode="loud")])
def test_bad_options(bad):
    with pytest.raises(ValueError):
        KuhnPoker(**bad)


def test_nash_opponent_plays_its_policy(kernel):
    nash = kernel.opponents.get("nash")
    game = KuhnPoker()
    for key, (state, role) in game.information_sets().items():
        move = MoveInfo(game, state, role, tuple(game.legal_actions(state)))
        probs = nash.action_probabilities(move)
        assert probs[game.legal_actions(state)[1]] == float(kuhn_eval.nash_policy(Fraction(1, 3))[key])
        rng = random.Random(0)
        picks = [nash(move, rng) for _ in range(300)]
        assert set(picks) <= set(game.legal_actions(state))
        if probs[picks[0]] == 1.0:
            assert len(set(picks)) == 1


def test_nash_beats_random_on_average(kernel):
    game = KuhnPoker()
    total = sum(play(kernel, game, seed, {"player_0": "nash", "player_1": "random"}).returns["player_0"]
                + play(kernel, game, seed, {"player_0": "random", "player_1": "nash"}).returns["player_1"]
                for seed in range(300))
    assert total / 600 > 0.1  # exact value against uniform is 0.125 per seat on average


def test_mirrored_deals_give_each_seat_the_same_cards(kernel):
    from rolekit.rollout import specs

    game = KuhnPoker(rounds=5)
    pair = list(specs(game, 2, seed=7, seats={"player_0": "policy", "player_1": "scripted:random"}, mirror=True))
    assert pair[0].seed == pair[1].seed
    assert pair[0].seats == {"player_0": "policy", "player_1": "scripted:random"}
    assert pair[1].seats == {"player_0": "scripted:random", "player_1": "policy"}
    assert game.reset(random.Random(pair[0].seed)) == game.reset(random.Random(pair[1].seed))
