"""The snapshot population: mixture weights (uniform, recency, Elo), the draws a snapshot
seat makes with them, Elo updates, and its state across a resume."""

import random
from collections import Counter

import pytest

from rolekit.config import ConfigError, from_dict
from rolekit.engine import Curriculum
from rolekit.plugins import Kernel
from rolekit.population import Population, expected_score, score_of


def filled(weighting, n=4, **kw):
    population = Population(weighting, capacity=10, **kw)
    for step in range(5, 5 * (n + 1), 5):
        population.add(step)
    return population


def assert_draws_follow(counts: Counter, weights, draws):
    """Each member's count within 4.5 standard errors of draws * weight (a fixed seed: the
    test is deterministic; the bound says how far off a correct sampler can be)."""
    for i, w in enumerate(weights):
        sd = (draws * w * (1 - w)) ** 0.5
        assert abs(counts[i] - draws * w) <= 4.5 * sd + 1, (i, counts[i], draws * w)


def test_weights_by_weighting():
    assert filled("uniform").weights() == pytest.approx([0.25] * 4)
    recency = filled("recency", recency_decay=0.5).weights()
    assert recency == pytest.approx([1 / 15, 2 / 15, 4 / 15, 8 / 15])  # newest weighs most
    elo = filled("elo")
    elo.ratings = [1000.0, 1400.0, 1000.0, 600.0]
    w = elo.weights()
    assert w[1] / w[0] == pytest.approx(10.0)  # 400 Elo points: ten times as likely
    assert w[0] == pytest.approx(w[2]) and w[3] / w[0] == pytest.approx(0.1)
    assert sum(w) == pytest.approx(1.0)


@pytest.mark.parametrize("weighting", ["uniform", "recency", "elo"])
def test_draws_follow_the_weights(weighting):
    population = filled(weighting, recency_decay=0.5)
    population.ratings = [900.0, 1100.0, 1000.0, 1300.0]
    rng = random.Random(0)
    draws = 20_000
    counts = Counter(population.draw(rng) for _ in range(draws))
    assert_draws_follow(counts, population.weights(), draws)


def test_a_snapshot_seat_draws_members_with_the_configured_weights():
    """Through the curriculum, as training draws them: the seat map's snapshot:i."""
    config = from_dict({
        "model": {"name": "tiny-random"}, "snapshots": {"weighting": "recency", "recency_decay": 0.5},
        "curriculum": [{"game": "kuhn_poker", "seats": {"player_1": "snapshot"}, "alternate": False}]})
    curriculum = Curriculum(Kernel(), config)
    population = filled("recency", recency_decay=0.5)
    draws = 8_000
    counts = Counter()
    for _ in range(draws):
        spec = curriculum.next_spec(0, len(population), population)
        assert spec.seats["player_0"] == "policy"
        counts[int(spec.seats["player_1"].split(":")[1])] += 1
    assert_draws_follow(counts, population.weights(), draws)
    assert counts[3] > counts[2] > counts[1] > counts[0]


def test_elo_moves_toward_the_results():
    population = filled("elo", n=2)
    for _ in range(20):
        population.record(0, 1.0)  # the policy keeps beating member 0
        population.record(1, 0.5)
    assert population.ratings[0] < 1000 < population.policy_rating
    assert population.games == 40
    w = population.weights()
    assert w[1] > w[0]  # the weaker member is drawn less
    assert expected_score(1400, 1000) == pytest.approx(1 / (1 + 10 ** -1))
    assert [score_of("a", "a"), score_of("b", "a"), score_of(None, "a")] == [1.0, 0.0, 0.5]
    with pytest.raises(IndexError, match="no population member 5"):
        population.record(5, 1.0)


def test_capacity_keeps_the_newest_and_state_round_trips():
    population = filled("elo", n=6)
    population.capacity = 3
    population.add(35)
    assert population.steps == [25, 30, 35]
    population.record(2, 0.0)
    copy = Population("elo", capacity=3)
    copy.load_state_dict(population.state_dict())
    assert copy.steps == population.steps and copy.ratings == population.ratings
    assert copy.policy_rating == population.policy_rating and copy.weights() == population.weights()


def test_bad_weighting_is_named():
    with pytest.raises(ValueError, match="uniform, recency, elo"):
        Population("softmax", capacity=3)
    with pytest.raises(ConfigError, match="weighting"):
        from_dict({"snapshots": {"weighting": "softmax"}, "curriculum": [{"game": "kuhn_poker"}]})
    with pytest.raises(ValueError, match="empty population"):
        Population("uniform", capacity=3).draw(random.Random(0))
