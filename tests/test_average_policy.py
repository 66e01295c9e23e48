"""The average policy of a population: exact for Kuhn Poker, checked against OpenSpiel, and
evaluated in training next to the current policy."""

import random
from fractions import Fraction

import pytest

from rolekit import evaluate
from rolekit.config import from_dict
from rolekit.engine import Trainer

kuhn_eval = pytest.importorskip("rolekit_games.kuhn_eval")
from rolekit_games.kuhn import KuhnPoker  # noqa: E402

pyspiel = pytest.importorskip("pyspiel")  # test dependency of rolekit-games: pip install open_spiel
from open_spiel.python.algorithms import exploitability as os_exploitability  # noqa: E402
from open_spiel.python.algorithms.policy_aggregator import PolicyAggregator  # noqa: E402

OS_GAME = pyspiel.load_game("kuhn_poker")



def random_policy(rng, pure_share=0.3):
    """Random probabilities, some of them pure (0 or 1), so that some information sets are
    unreachable by some members: where reach-weighting and plain averaging differ most."""
    return {key: float(rng.random() < 0.5) if rng.random() < pure_share else rng.random()
            for key in kuhn_eval.INFOSETS}


@pytest.mark.parametrize("seed", range(6))
def test_average_policy_exploitability_equals_openspiels_policy_aggregator(seed):
    rng = random.Random(seed)
    members = [random_policy(rng) for _ in range(rng.randint(2, 5))]
    weights = [rng.random() + 0.05 for _ in members]
    ours = kuhn_eval.exploitability(kuhn_eval.average_policy(members, weights))

    total = sum(weights)
    tables = [kuhn_eval.to_openspiel(p, OS_GAME) for p in members]
    aggregated = PolicyAggregator(OS_GAME).aggregate(
        [0, 1], [tables, tables], [[w / total for w in weights]] * 2)
    theirs = os_exploitability.exploitability(OS_GAME, aggregated)
    assert float(ours) == pytest.approx(theirs, abs=1e-9)


def test_game_average_strategy_takes_action_tables_and_matches_openspiel():
    game = KuhnPoker()
    rng = random.Random(7)
    members = [random_policy(rng) for _ in range(3)]
    weights = [0.5, 0.3, 0.2]
    tables = []
    for p in members:
        table = {}
        for key, (state, _) in game.information_sets().items():
            passive, aggressive = game.legal_actions(state)
            table[key] = {passive: 1 - p[key], aggressive: p[key]}
        tables.append(table)
    result = evaluate.average_strategy(game, tables, weights, weighting="uniform", steps=[5, 10, 15])
    theirs = [kuhn_eval.to_openspiel(p, OS_GAME) for p in members]
    aggregated = PolicyAggregator(OS_GAME).aggregate([0, 1], [theirs] * 2, [weights] * 2)
    assert result["exploitability"] == pytest.approx(os_exploitability.exploitability(OS_GAME, aggregated),
                                                     abs=1e-9)
    assert [m["step"] for m in result["members"]] == [5, 10, 15]


def test_reach_weighting_by_hand():
    """Two first-player plans mixed half and half: with J, A always bets first, B always
    checks first and calls a bet with probability 1 (A: 0). After check-bet only B can be
    playing, so the average calls with B's probability, not the plain mean 1/2."""
    a = {**kuhn_eval.uniform_policy(), "J": Fraction(1), "Jpb": Fraction(0)}
    b = {**kuhn_eval.uniform_policy(), "J": Fraction(0), "Jpb": Fraction(1)}
    avg = kuhn_eval.average_policy([a, b], [Fraction(1, 2), Fraction(1, 2)])
    assert avg["J"] == Fraction(1, 2)
    assert avg["Jpb"] == 1  # reach: A 0, B 1
    # The same at Q with unequal reach: A checks Q with 1/4 and calls 1; B checks 3/4 and calls 0.
    a.update(Q=Fraction(3, 4), Qpb=Fraction(1))
    b.update(Q=Fraction(1, 4), Qpb=Fraction(0))
    avg = kuhn_eval.average_policy([a, b], [Fraction(1, 2), Fraction(1, 2)])
    assert avg["Qpb"] == Fraction(1, 4)  # (1/4 * 1 + 3/4 * 0) / (1/4 + 3/4)
    # Per-information-set averaging would be another policy, with another exploitability.
    plain = {k: (a[k] + b[k]) / 2 for k in kuhn_eval.INFOSETS}
    assert kuhn_eval.exploitability(plain) != kuhn_eval.exploitability(avg)


def test_average_of_one_policy_is_that_policy():
    policy = kuhn_eval.nash_policy(Fraction(1, 6))
    assert kuhn_eval.average_policy([policy], [3]) == policy


def test_average_policy_rejects_bad_weights():
    with pytest.raises(ValueError, match="one weight per policy"):
        kuhn_eval.average_policy([kuhn_eval.uniform_policy()], [1, 2])
    with pytest.raises(ValueError, match="positive sum"):
        kuhn_eval.average_policy([kuhn_eval.uniform_policy()], [0])


KUHN = {
    "seed": 0,
    "model": {"name": "tiny-random"},
    "lora": {"enabled": True, "r": 4, "alpha": 8},
    "rollout": {"samples_per_step": 16, "max_new_tokens": 4, "concurrency": 8},
    "algorithm": {"steps": 4, "lr": 1e-2},
    "eval": {"every": 2, "episodes": 4, "opponents": ["random"]},
    "checkpoint": {"every": 0},
    "curriculum": [{"game": "kuhn_poker", "options": {"choose": True}}],
}


def test_training_evaluates_the_average_policy_next_to_the_current_one(tmp_path):
    """Snapshots every 2 steps, evaluations every 2: a pool of one holds exactly the policy
    being evaluated, so its average is the current policy; a pool of 2 averages two
    different policies, reach-weighted from their own exact tables."""
    one = {**KUHN, "snapshots": {"every": 2, "pool_size": 1}}
    trainer = Trainer(from_dict(one), tmp_path / "one", quiet=True)
    history = [m["eval"]["kuhn_poker"] for m in trainer.run() if "eval" in m]
    assert len(history) == 2
    for ev in history:
        assert ev["average"]["snapshots"] == 1
        assert ev["average"]["exploitability"] == pytest.approx(ev["exploitability"]["exploitability"], abs=1e-6)

    two = {**KUHN, "snapshots": {"every": 2, "pool_size": 2}}
    trainer = Trainer(from_dict(two), tmp_path / "two", quiet=True)
    last = [m["eval"]["kuhn_poker"] for m in trainer.run() if "eval" in m][-1]
    game = KuhnPoker(choose=True)
    tables = [ev["exploitability"]["infosets"] for ev in history]  # the same seed: the same two policies
    expected = evaluate.average_strategy(game, tables, [0.5, 0.5])["exploitability"]
    assert last["average"]["members"] == [{"step": 2, "weight": 0.5}, {"step": 4, "weight": 0.5}]
    assert last["average"]["exploitability"] == pytest.approx(expected, abs=1e-4)
    assert abs(history[0]["exploitability"]["exploitability"] - history[1]["exploitability"]["exploitability"]) > 1e-3
