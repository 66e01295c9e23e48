"""Kuhn Poker rules and exact evaluation, cross-checked against OpenSpiel (to 1e-9)."""

import itertools
import random
from fractions import Fraction

import pytest

from rolekit_games import kuhn_eval
from rolekit_games.kuhn import KuhnPoker, KuhnState

pyspiel = pytest.importorskip("pyspiel")  # test dependency: pip install open_spiel
from open_spiel.python import policy as os_policy  # noqa: E402
from open_spiel.python.algorithms import exploitability as os_exploitability  # noqa: E402

OS_GAME = pyspiel.load_game("kuhn_poker")
PASS, BET = 0, 1


def action_sequences():
    """Every terminal action sequence of one round, as strings of p/b."""
    return [h for n in (2, 3) for h in map("".join, itertools.product("pb", repeat=n)) if kuhn_eval.is_terminal(h)
            and all(not kuhn_eval.is_terminal(h[:k]) for k in range(1, len(h)))]


def openspiel_returns(deal, history):
    state = OS_GAME.new_initial_state()
    for card in deal:
        state.apply_action(card)
    for move in history:
        state.apply_action(BET if move == "b" else PASS)
    assert state.is_terminal()
    return state.returns()



def test_terminal_sequences_are_the_five_of_kuhn():
    assert sorted(action_sequences()) == sorted(kuhn_eval.TERMINALS)


@pytest.mark.parametrize("deal", kuhn_eval.DEALS)
@pytest.mark.parametrize("history", kuhn_eval.TERMINALS)
def test_payoffs_match_openspiel_for_every_deal_and_sequence(deal, history):
    expected = openspiel_returns(deal, history)
    assert kuhn_eval.payoff(deal, history) == expected[0]
    # The game itself, played move by move with its action names.
    game = KuhnPoker()
    state = KuhnState(deals=(deal,))
    for move in history:
        passive, aggressive = game.legal_actions(state)
        state = game.apply(state, aggressive if move == "b" else passive)
    assert game.returns(state) == {"player_0": expected[0], "player_1": expected[1]}


def test_information_sets_match_openspiel():
    table = os_policy.TabularPolicy(OS_GAME)
    ours = {str(kuhn_eval.CARDS.index(k[0])) + k[1:] for k in kuhn_eval.INFOSETS}
    assert ours == set(table.state_lookup)
    assert len(kuhn_eval.INFOSETS) == 12


def test_uniform_exploitability():
    ours = kuhn_eval.exploitability(kuhn_eval.uniform_policy())
    assert ours == Fraction(11, 24)
    theirs = os_exploitability.exploitability(OS_GAME, os_policy.UniformRandomPolicy(OS_GAME))
    assert float(ours) == pytest.approx(theirs, abs=1e-9)
    assert float(ours) == pytest.approx(0.4583, abs=1e-4)


@pytest.mark.parametrize("alpha", [Fraction(0), Fraction(1, 12), Fraction(1, 6), Fraction(1, 4), Fraction(1, 3)])
def test_nash_family_is_unexploitable(alpha):
    policy = kuhn_eval.nash_policy(alpha)
    assert kuhn_eval.exploitability(policy) == 0
    assert kuhn_eval.expected_value(policy) == kuhn_eval.GAME_VALUE == Fraction(-1, 18)
    theirs = os_exploitability.exploitability(OS_GAME, kuhn_eval.to_openspiel(policy, OS_GAME))
    assert theirs == pytest.approx(0.0, abs=1e-9)


def test_nash_alpha_outside_family_is_rejected():
    with pytest.raises(ValueError):
        kuhn_eval.nash_policy(Fraction(1, 2))


@pytest.mark.parametrize("seed", range(8))
def test_random_policies_match_openspiel(seed):
    rng = random.Random(seed)
    policy = {key: rng.random() for key in kuhn_eval.INFOSETS}
    if seed % 2:  # some deterministic choices too
        policy.update({key: float(rng.random() < 0.5) for key in rng.sample(kuhn_eval.INFOSETS, 4)})
    theirs = os_exploitability.exploitability(OS_GAME, kuhn_eval.to_openspiel(policy, OS_GAME))
    assert float(kuhn_eval.exploitability(policy)) == pytest.approx(theirs, abs=1e-9)
    assert float(kuhn_eval.nash_conv(policy)) == pytest.approx(
        os_exploitability.nash_conv(OS_GAME, kuhn_eval.to_openspiel(policy, OS_GAME)), abs=1e-9)


def test_best_response_is_exact_with_fractions():
    value, plan = kuhn_eval.best_response(kuhn_eval.uniform_policy(), 1)
    assert isinstance(value, Fraction)
    assert set(plan) == {k for k in kuhn_eval.INFOSETS if kuhn_eval.player_to_act(k[1:]) == 1}
    # Against a best response, the policy does no better than its BR value says.
    assert kuhn_eval.expected_value(kuhn_eval.uniform_policy(), {**kuhn_eval.uniform_policy(), **plan}) == -value


def test_policy_must_cover_every_infoset():
    policy = kuhn_eval.uniform_policy()
    del policy["Kpb"]
    with pytest.raises(ValueError, match="Kpb"):
        kuhn_eval.exploitability(policy)


def test_game_exploitability_takes_action_distributions():
    game = KuhnPoker()
    uniform = {key: {a: 0.5 for a in game.legal_actions(state)} for key, (state, _) in game.information_sets().items()}
    assert game.exploitability(uniform) == pytest.approx(11 / 24, abs=1e-12)


@pytest.mark.parametrize("seed", range(20))
def test_multi_round_returns_sum_openspiel_rounds_with_alternating_first_player(seed):
    rng = random.Random(seed)
    game = KuhnPoker(rounds=5)
    state = game.reset(rng)
    expected = [0.0, 0.0]
    for r, deal in enumerate(state.deals):
        first = r % 2  # player_0 acts first in rounds 1, 3, 5
        history = ""
        while not kuhn_eval.is_terminal(history):
            assert game.current_role(state) == f"player_{(first + len(history)) % 2}"
            action = rng.choice(game.legal_actions(state))
            history += "b" if action in ("bet", "call") else "p"
            state = game.apply(state, action)
        by_position = openspiel_returns((deal[first], deal[1 - first]), history)
        expected[first] += by_position[0]
        expected[1 - first] += by_position[1]
    assert game.returns(state) == {"player_0": expected[0], "player_1": expected[1]}
