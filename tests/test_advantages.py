import pytest

from rolekit.advantages import GRPO, RAE, Raw, RoleNorm, turn_reward
from rolekit.types import Episode, Turn


def turn(i, role, ask=None, responder="policy", prompt=(1, 2)):
    return Turn(id=i, ask=i if ask is None else ask, role=role, game="g", text="", prompt="",
                prompt_ids=prompt, completion_ids=(3,), logprobs=(-0.5,), responder=responder)


def episode(returns, turns, rewards=None):
    return Episode(game="g", seed=0, turns=tuple(turns), rewards=rewards or {}, returns=returns, seats={})


def test_rae_reads_the_baseline_before_updating_it():
    rae = RAE(decay=0.95)
    eps = [episode({"p0": r, "p1": -r}, [turn(0, "p0"), turn(1, "p1"), turn(2, "p0")]) for r in (1.0, 1.0, -1.0)]
    advs = [[s.advantage for s in rae.samples([(e, "p0")])] for e in eps]
    # b0 = 0 -> A = 1, b = 0.05; A = 1 - 0.05 = 0.95, b = 0.0975; A = -1 - 0.0975
    assert advs[0] == [1.0, 1.0]  # both turns of p0 get the same advantage (gamma = 1)
    assert advs[1] == pytest.approx([0.95, 0.95])
    assert advs[2] == pytest.approx([-1.0975, -1.0975])
    assert rae.baselines == {"g/p0": pytest.approx(0.95 * 0.0975 - 0.05)}
    assert rae.samples([(eps[0], "p1")])[0].advantage == -1.0  # p1 keeps its own baseline


def test_rae_drops_zero_advantage_turns_and_scripted_turns():
    rae = RAE()
    ep = episode({"p0": 0.0, "p1": 0.0}, [turn(0, "p0"), turn(1, "p1", responder="scripted:random")])
    assert rae.samples([(ep, "p0"), (ep, "p1")]) == []
    ep = episode({"p0": 1.0, "p1": -1.0}, [turn(0, "p0"), turn(1, "p1", responder="scripted:random")])
    assert [s.role for s in rae.samples([(ep, "p0"), (ep, "p1")])] == ["p0"]
    assert set(rae.baselines) == {"g/p0", "g/p1"}


def test_rae_state_round_trip():
    rae = RAE()
    rae.samples([(episode({"p0": 1.0}, [turn(0, "p0")]), "p0")])
    other = RAE()
    other.load_state_dict(rae.state_dict())
    assert other.baselines == rae.baselines == {"g/p0": pytest.approx(0.05)}


def fanout():
    # one ask answered 4 times (ask id 10), rewards 1, 0, 0, 1 on the solver turns
    turns = [turn(10 + k, "solver", ask=10) for k in range(4)]
    rewards = {10: 1.0, 11: 0.0, 12: 0.0, 13: 1.0}
    return episode({"solver": 2.0}, turns, rewards)


def test_grpo_centres_within_one_ask():
    ep = fanout()
    assert [s.advantage for s in GRPO().samples([(ep, "solver")])] == [0.5, -0.5, -0.5, 0.5]
    scaled = [s.advantage for s in GRPO(scale="std", eps=0.0).samples([(ep, "solver")])]
    assert scaled == pytest.approx([1.0, -1.0, -1.0, 1.0])


def test_grpo_ignores_single_sample_asks():
    ep = episode({"p0": 1.0}, [turn(0, "p0"), turn(1, "p0")])
    assert GRPO().samples([(ep, "p0")]) == []


def test_role_norm_whitens_per_role():
    eps = [episode({"a": r, "b": 10 * r}, [turn(0, "a"), turn(1, "b")]) for r in (0.0, 1.0, 2.0)]
    samples = RoleNorm(eps=0.0).samples([(e, role) for e in eps for role in ("a", "b")])
    by_role = {role: [s.advantage for s in samples if s.role == role] for role in ("a", "b")}
    z = 1 / (2 / 3) ** 0.5
    assert by_role["a"] == pytest.approx([-z, z]) and by_role["b"] == pytest.approx([-z, z])


def test_raw_and_turn_reward_include_the_terminal_return():
    ep = episode({"p0": 1.5}, [turn(0, "p0"), turn(1, "p0")], rewards={0: -0.5})
    # turn rewards sum to -0.5; the terminal part is 2.0, given to every turn
    assert turn_reward(ep, ep.turns[0]) == 1.5 and turn_reward(ep, ep.turns[1]) == 2.0
    assert [s.advantage for s in Raw().samples([(ep, "p0")])] == [1.5, 2.0]


def test_rae_prompt_key_keeps_one_baseline_per_prompt_read_before_update():
    rae = RAE(decay=0.5, key="prompt")
    a, b = turn(0, "p0", prompt=(1, 2)), turn(0, "p0", prompt=(3,))
    # First episode: both prompts start from the role baseline 0.
    assert [s.advantage for s in rae.samples([(episode({"p0": 2.0}, [a]), "p0")])] == [2.0]
    # b(role) = 1.0, b(prompt a) = 1.0. Prompt b is new: it starts from the role baseline 1.0.
    assert [s.advantage for s in rae.samples([(episode({"p0": -1.0}, [b]), "p0")])] == [-2.0]
    # Prompt a again: its own baseline 1.0 (not the role's, now 0.0).
    assert [s.advantage for s in rae.samples([(episode({"p0": 3.0}, [a]), "p0")])] == [2.0]
    role_b = [v for k, v in rae.baselines.items() if k == "g/p0"]
    assert role_b == [pytest.approx(1.5)]  # 0 -> 1.0 -> 0.0 -> 1.5
    assert len(rae.baselines) == 3


def test_rae_rejects_an_unknown_key():
    with pytest.raises(ValueError, match="rae key"):
        RAE(key="infoset")
