"""Any role graph trains as written (issue #12): per-turn credit, estimators over the whole
step, per-role estimator choice, drop/invalid reasons, declared symmetry, task pools."""

import json
import statistics
import types

import attrs
import pytest

from rolekit import Game, Role
from rolekit.advantages import GRPO, RAE, RoleNorm
from rolekit.config import from_dict
from rolekit.engine import Curriculum, Trainer
from rolekit.hookspecs import hookimpl
from rolekit.plugins import Kernel
from rolekit.table import POLICY, EpisodeSpec, ModelResponder, Scheduler
from rolekit.testing import CharChat, ScriptedBackend
from rolekit.types import Episode, Turn


def turn(i, role, ask=None, prompt=(1, 2)):
    return Turn(id=i, ask=i if ask is None else ask, role=role, game="g", text="", prompt="",
                prompt_ids=prompt, completion_ids=(3,), logprobs=(-0.5,))


def fanout(rewards=(1.0, 0.0, 0.0, 1.0), proposer_reward=0.5, dropped=None):
    """A proposer turn (id 0) and one ask answered by 4 solvers (ids 1-4)."""
    turns = [turn(0, "proposer")] + [turn(1 + k, "solver", ask=1) for k in range(len(rewards))]
    given = {0: proposer_reward, **{1 + k: r for k, r in enumerate(rewards)}}
    returns = {"proposer": proposer_reward, "solver": sum(rewards)}
    return Episode(game="g", seed=0, turns=tuple(turns), rewards=given, returns=returns, seats={},
                   dropped=dropped or {})


# --- per-turn credit ----------------------------------------------------------------------------


def test_rae_credits_each_answer_of_a_fan_out_with_its_own_reward():
    samples = RAE().samples([(fanout(), "solver")])
    advantages = {s.turn: s.advantage for s in samples}
    assert advantages == {1: 1.0, 4: 1.0}  # right answers +1; wrong ones 0 - b(=0): dropped as zero
    rae = RAE(drop_zero=False)
    rae.samples([(fanout(), "solver")])
    b = rae.baselines["g/solver"]
    assert b == pytest.approx(0.05 * 0.5)  # the EMA follows the mean reward per turn, not the sum (2)
    second = {s.turn: s.advantage for s in rae.samples([(fanout(), "solver")])}
    assert second[1] == pytest.approx(1.0 - b) and second[2] == pytest.approx(-b)


def test_rae_gives_every_turn_of_a_turn_based_player_the_outcome():
    ep = Episode(game="g", seed=0, turns=(turn(0, "p0"), turn(1, "p1"), turn(2, "p0")), rewards={},
                 returns={"p0": 1.0, "p1": -1.0}, seats={})
    assert [s.advantage for s in RAE().samples([(ep, "p0")])] == [1.0, 1.0]


def test_a_verifier_with_many_votes_is_credited_per_vote():
    votes = [turn(k, "verifier", ask=k // 3 * 3) for k in range(12)]
    rewards = {k: (1.0 if k % 3 else -1.0) for k in range(12)}
    ep = Episode(game="g", seed=0, turns=tuple(votes), rewards=rewards, returns={"verifier": sum(rewards.values())},
                 seats={})
    samples = RAE().samples([(ep, "verifier")])
    assert sorted({s.advantage for s in samples}) == [-1.0, 1.0]  # not the summed return, 4.0


def test_grpo_centres_each_ask_over_the_step():
    samples = GRPO().samples([(fanout(), "solver"), (fanout((1.0, 1.0, 1.0, 0.0)), "solver")])
    assert [s.advantage for s in samples] == [0.5, -0.5, -0.5, 0.5, 0.25, 0.25, 0.25, -0.75]


def test_role_norm_trains_a_one_turn_role_over_the_step():
    episodes = [fanout(proposer_reward=r) for r in (0.0, 0.5, 1.0, 0.25)]
    alone = [RoleNorm().samples([(e, "proposer")]) for e in episodes]
    assert all(s == [] for s in alone)  # one episode at a time: no signal, as the old engine did
    step = RoleNorm().samples([(e, "proposer") for e in episodes])
    assert len(step) == 4 and all(s.advantage != 0 for s in step)
    assert statistics.fmean(s.advantage for s in step) == pytest.approx(0.0, abs=1e-9)
    assert step[2].advantage > step[1].advantage > step[3].advantage > step[0].advantage


def test_baseline_keys_keep_task_types_apart():
    def ep(reward, key):
        e = fanout(proposer_reward=reward)
        return attrs.evolve(e, keys={0: key})

    samples = RoleNorm().samples([(ep(r, k), "proposer") for r, k in ((0.0, "a"), (1.0, "a"), (5.0, "b"), (7.0, "b"))])
    assert [s.advantage for s in samples] == pytest.approx([-1.0, 1.0, -1.0, 1.0], abs=1e-4)


def test_dropped_turns_never_train():
    ep = fanout(dropped={1: "answerable without the document", 4: "answerable without the document"})
    assert [s.turn for s in GRPO().samples([(ep, "solver")])] == []  # two wrong answers left: no signal
    assert [s.turn for s in RAE().samples([(ep, "solver")])] == []


# --- a fan-out game on a real (tiny) model ----------------------------------------------------


class Guess(Game):
    """A proposer names a letter's task; 4 solvers answer; only correct answers are rewarded."""

    name = "guess"
    roles = (Role("proposer"), Role("solver"))

    def __init__(self, *, solvers: int = 4, drop_every: int = 0):
        self.solvers, self.drop_every = solvers, drop_every

    async def play(self, table):
        [q] = await table.ask("proposer", "Pick a letter.", max_new_tokens=2)
        target = "A"
        answers = await table.ask("solver", f"Letter: {target}. Reply with the letter, like [{target}].",
                                  n=self.solvers, max_new_tokens=3)
        scores = [float(a.text.strip().lstrip("[").upper().startswith(target)) for a in answers]
        for a, s in zip(answers, scores):
            table.reward(a, s)
            if not s:
                table.invalid(a, "wrong letter")
        if self.drop_every and table.seed % self.drop_every == 0:
            table.drop(q, "every nth question")
        table.reward(q, statistics.fmean(scores))
        table.log("solve_rate", statistics.fmean(scores))
        if table.seed % 2:
            table.log("odd_seed", 1.0)
        history = table.pool("history", capacity=5)
        history.add(table.seed)
        history.data["episodes"] = history.data.get("episodes", 0) + 1


class FlippedGRPO(GRPO):
    def samples(self, items):
        return [attrs.evolve(s, advantage=-s.advantage) for s in super().samples(items)]


plugin = types.SimpleNamespace(
    rolekit_register_games=hookimpl(lambda registry: registry.add(Guess)),
    rolekit_register_advantages=hookimpl(lambda registry: registry.add("flipped_grpo", FlippedGRPO)),
)


def config(**changes):
    data = {
        "seed": 0,
        "model": {"name": "tiny-random"},
        "lora": {"enabled": False},
        "rollout": {"samples_per_step": 20, "max_new_tokens": 4, "concurrency": 8},
        "algorithm": {"steps": 2, "lr": 1e-2},
        "eval": {"every": 0},
        "checkpoint": {"every": 0},
        "curriculum": [{"game": "guess", "advantage": {"proposer": "role_norm", "solver": "grpo"}}],
    }
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            data[section] = {**data.get(section, {}), field: value}
        else:
            data[section] = value
    return from_dict(data)


def kernel():
    return Kernel([plugin], load_entrypoints=False)


def solver_reward(history):
    return [m["roles"]["guess/solver"]["reward_per_turn"] for m in history  # (a step that trained on
            if "reward_per_turn" in m["roles"].get("guess/solver", {})]     # leftovers alone played none)


@pytest.mark.slow
def test_a_fan_out_graph_learns_and_does_not_with_the_sign_flipped(tmp_path):
    steps = {"algorithm": {"steps": 10, "lr": 1e-2}}
    history = Trainer(config(**steps), tmp_path / "up", kernel=kernel(), quiet=True).run()
    rewards = solver_reward(history)
    assert rewards[0] < 0.35, rewards
    assert statistics.fmean(rewards[-3:]) > 0.7, rewards
    flipped = config(**steps, curriculum=[{"game": "guess", "advantage": {"proposer": "role_norm",
                                                                          "solver": "flipped_grpo"}}])
    rewards = solver_reward(Trainer(flipped, tmp_path / "down", kernel=kernel(), quiet=True).run())
    assert statistics.fmean(rewards[-3:]) < 0.35, rewards


def test_each_role_gets_its_estimator_with_options_and_the_resolved_choice_is_written(tmp_path):
    cfg = config(curriculum=[{"game": "guess", "advantage": {"proposer": "role_norm"},
                              "advantage_options": {"rae": {"decay": 0.5}}}],
                 algorithm={"steps": 1, "advantage": "rae"})
    trainer = Trainer(cfg, tmp_path / "run", kernel=kernel(), quiet=True)
    assert isinstance(trainer.estimators[trainer.route[(0, "proposer")]], RoleNorm)
    solver = trainer.estimators[trainer.route[(0, "solver")]]
    assert isinstance(solver, RAE) and solver.decay == 0.5
    [metrics] = trainer.run()
    assert metrics["roles"]["guess/proposer"]["estimator"] == "role_norm"
    assert metrics["roles"]["guess/solver"]["estimator"].startswith("rae")
    written = (tmp_path / "run" / "config.toml").read_text()
    assert 'advantage = {proposer = "role_norm", solver = "rae"}' in written
    assert "advantage_options = {rae = {decay = 0.5}}" in written


def test_estimator_config_mistakes_name_the_key(tmp_path):
    bad_role = config(curriculum=[{"game": "guess", "advantage": {"solvr": "grpo"}}])
    with pytest.raises(ValueError, match="role 'solvr'.*did you mean 'solver'"):
        Trainer(bad_role, tmp_path / "a", kernel=kernel(), quiet=True)
    bad_options = config(curriculum=[{"game": "guess", "advantage": "grpo", "advantage_options": {"rea": {}}}])
    with pytest.raises(ValueError, match="advantage_options for 'rea'"):
        Trainer(bad_options, tmp_path / "b", kernel=kernel(), quiet=True)


def test_drop_and_invalid_reasons_are_counted_per_role(tmp_path):
    cfg = config(curriculum=[{"game": "guess", "options": {"drop_every": 2},
                              "advantage": {"proposer": "role_norm", "solver": "grpo"}}], algorithm={"steps": 1})
    [m] = Trainer(cfg, tmp_path / "run", kernel=kernel(), quiet=True).run()
    proposer, solver = m["roles"]["guess/proposer"], m["roles"]["guess/solver"]
    assert proposer["dropped"]["every nth question"] > 0
    assert solver["invalid_reasons"]["wrong letter"] > 0
    assert 0 < solver["invalid_turns"] <= 1
    assert solver["turns"] == 4 * solver["policy_episodes"]
    assert "win" not in solver and "draw" not in solver  # a cooperative graph has no outcomes


def test_what_a_game_logs_reaches_the_steps_metrics(tmp_path):
    trainer = Trainer(config(algorithm={"steps": 1}), tmp_path / "run", kernel=kernel(), quiet=True)
    [m] = trainer.run()
    logged = m["games"]["guess"]
    solver = m["roles"]["guess/solver"]
    assert logged["solve_rate"] == pytest.approx(solver["reward_per_turn"])  # the mean over the episodes
    assert logged["solve_rate/n"] == m["episodes"]
    assert logged["odd_seed"] == 1.0 and 0 < logged["odd_seed/n"] < m["episodes"]  # only the episodes that logged
    [line] = [json.loads(x) for x in open(tmp_path / "run" / "metrics.jsonl")]
    assert line["games"] == {"guess": logged}


def test_a_task_pool_survives_resume_exactly(tmp_path):
    cfg = config(algorithm={"steps": 4, "lr": 1e-2}, checkpoint={"every": 2, "keep": 5})
    straight = Trainer(cfg, tmp_path / "a", kernel=kernel(), quiet=True)
    straight.run()
    Trainer(attrs.evolve(cfg, algorithm=attrs.evolve(cfg.algorithm, steps=2)), tmp_path / "b", kernel=kernel(),
            quiet=True).run()
    resumed = Trainer(cfg, tmp_path / "b", kernel=kernel(), quiet=True, resume=tmp_path / "b")
    assert resumed.curriculum.pools[0].get("history").data["episodes"] > 0
    resumed.run()
    a, b = (t.curriculum.pools[0].get("history") for t in (straight, resumed))
    assert a.state_dict() == b.state_dict() and len(a) == 5
    steps = [json.loads(line)["step"] for line in open(tmp_path / "b" / "metrics.jsonl")]
    assert steps == [1, 2, 3, 4]


# --- symmetry --------------------------------------------------------------------------------


class Asymmetric(Game):
    name = "asym"
    roles = (Role("asker"), Role("answerer"))

    async def play(self, table):
        [q] = await table.ask("asker", "Ask.")
        await table.ask("answerer", q.text, n=2)


def test_asymmetric_graphs_never_rotate_or_mirror():
    k = Kernel([types.SimpleNamespace(rolekit_register_games=hookimpl(lambda registry: registry.add(Asymmetric)))],
               load_entrypoints=False)
    cfg = from_dict({"curriculum": [{"game": "asym", "seats": {"answerer": "snapshot"}, "mirror": True}]})
    curriculum = Curriculum(k, cfg)
    specs = [curriculum.next_spec(0, pool_size=1) for _ in range(6)]
    assert all(s.seats == {"asker": POLICY, "answerer": "snapshot:0"} for s in specs)


def test_mirrored_pairs_replay_the_same_deal_from_the_other_seat():
    cfg = from_dict({"seed": 3, "curriculum": [
        {"game": "nim", "mirror": True, "seats": {"player_1": "scripted:random"}},
        {"game": "echo"}]})
    curriculum = Curriculum(Kernel(load_entrypoints=False), cfg)
    nim = [s for s in (curriculum.next_spec(0, 0) for _ in range(40)) if s.game.name == "nim"]
    assert len(nim) >= 8
    for first, second in zip(nim[0::2], nim[1::2]):
        assert first.seed == second.seed  # the same deal, even with echo episodes in between
        assert {v: k for k, v in first.seats.items()}[POLICY] != {v: k for k, v in second.seats.items()}[POLICY]
    assert len({s.seed for s in nim[0::2]}) == len(nim) // 2  # every pair a new deal


def test_turn_based_asks_use_the_runs_budget_and_samples_carry_it():
    backend = ScriptedBackend(lambda prompt: "1]")
    policy = ModelResponder(POLICY, backend, CharChat(), max_new_tokens=7)
    game = Kernel(load_entrypoints=False).games.get("nim")()
    [episode] = Scheduler({POLICY: policy}).run([EpisodeSpec(game, 0, {})])
    assert {t.max_new_tokens for t in episode.turns} == {7}
    samples = RAE().samples([(episode, "player_0")])
    assert samples and {s.max_new_tokens for s in samples} == {7}
