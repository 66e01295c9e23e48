"""Issue #11: defects that silently made training wrong, and first-day errors. Each test
fails on the code before its fix."""

import json
import sys
import types
from pathlib import Path

import pytest
import torch

from rolekit import Game, Role, checkpoint
from rolekit.config import from_dict
from rolekit.engine import Trainer
from rolekit.hookspecs import hookimpl
from rolekit.models import load_model
from rolekit.plugins import Kernel
from rolekit.table import POLICY, EpisodeSpec, ModelResponder, Scheduler
from rolekit.testing import CharChat, ScriptedBackend

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "rolekit-arithmetic"


def base(**sections):
    data = {"seed": 0, "model": {"name": "tiny-random"}, "lora": {"enabled": False},
            "rollout": {"samples_per_step": 8, "max_new_tokens": 4, "concurrency": 8},
            "algorithm": {"steps": 2, "lr": 1e-3}, "eval": {"every": 0}, "checkpoint": {"every": 0},
            "curriculum": [{"game": "echo"}]}
    data.update(sections)
    return from_dict(data)


def play(game, reply="[A]"):
    policy = ModelResponder(POLICY, ScriptedBackend(lambda prompt: reply), CharChat())
    return list(Scheduler({POLICY: policy}, max_failures=100).run([EpisodeSpec(game, seed, {}) for seed in range(3)]))


# --- 2: the KL reference is the initial model, also after --resume -------------------------------


def test_full_fine_tuning_keeps_the_initial_model_as_reference_across_resume(tmp_path):
    cfg = base(algorithm={"steps": 2, "lr": 1e-2, "kl_beta": 0.1}, checkpoint={"every": 1, "keep": 5})
    Trainer(cfg, tmp_path / "run", kernel=Kernel(load_entrypoints=False), quiet=True).run()
    resumed = Trainer(cfg, tmp_path / "run", kernel=Kernel(load_entrypoints=False), quiet=True,
                      resume=tmp_path / "run" / "checkpoints" / "step-1")
    initial = load_model("tiny-random").model.state_dict()
    with resumed.policy.reference() as reference:
        ref = reference.state_dict()
    trained = resumed.policy.model.state_dict()
    name = "model.layers.0.mlp.down_proj.weight"
    assert torch.equal(ref[name], initial[name])
    assert not torch.equal(trained[name], initial[name])  # the checkpoint was trained: it is not the reference


# --- 6: resuming from an older checkpoint rewrites the later steps once -------------------------


def test_resume_from_an_older_checkpoint_does_not_log_steps_twice(tmp_path):
    cfg = base(algorithm={"steps": 4, "lr": 1e-3}, checkpoint={"every": 2, "keep": 5})
    Trainer(cfg, tmp_path / "run", kernel=Kernel(load_entrypoints=False), quiet=True).run()
    Trainer(cfg, tmp_path / "run", kernel=Kernel(load_entrypoints=False), quiet=True,
            resume=tmp_path / "run" / "checkpoints" / "step-2").run()
    steps = [json.loads(line)["step"] for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert steps == [1, 2, 3, 4]
    episode_steps = [json.loads(line)["step"] for line in open(tmp_path / "run" / "episodes.jsonl")]
    assert episode_steps == sorted(episode_steps)


# --- 7: leftover samples age out ----------------------------------------------------------------


def test_leftover_samples_are_at_most_one_policy_old(tmp_path):
    # Nim episodes give several policy turns each: a step of 2 samples leaves many over
    cfg = base(rollout={"samples_per_step": 2, "max_new_tokens": 4, "concurrency": 4},
               algorithm={"steps": 4, "lr": 1e-3}, curriculum=[{"game": "nim", "options": {"stones": 9, "choose": True}}])
    trainer = Trainer(cfg, tmp_path / "run", kernel=Kernel(load_entrypoints=False), quiet=True)
    ages = []
    learn = trainer.learner.step

    def spy(batch, *args, **kwargs):
        ages.extend(trainer.step - s.version for s in batch)
        return learn(batch, *args, **kwargs)

    trainer.learner.step = spy
    history = trainer.run()
    assert ages and max(ages) <= 1
    assert sum(m["stale_dropped"] for m in history) > 0
    assert any(row.get("dropped", {}).get("stale") for m in history for row in m["roles"].values())


# --- 9: the default evaluation never crashes a run or costs its checkpoint ------------------------


def arithmetic_kernel():
    sys.path.insert(0, str(EXAMPLE))
    try:
        import rolekit_arithmetic
    finally:
        sys.path.remove(str(EXAMPLE))
    return Kernel([rolekit_arithmetic], load_entrypoints=False)


def test_the_arithmetic_example_with_a_minimal_config_finishes_and_saves(tmp_path):
    cfg = from_dict({"model": {"name": "tiny-random"}, "algorithm": {"steps": 3},
                     "curriculum": [{"game": "arithmetic"}]})
    history = Trainer(cfg, tmp_path / "run", kernel=arithmetic_kernel(), quiet=True).run()
    assert (tmp_path / "run" / "checkpoints" / "step-3" / "adapter_model.safetensors").is_file()
    held_out = history[-1]["eval"]["arithmetic"]["held_out"]
    assert 0.0 <= held_out["accuracy"] <= 1.0 and held_out["tasks"] > 0



def test_eval_at_start_logs_the_untrained_policy_as_step_0(tmp_path):
    cfg = from_dict({"model": {"name": "tiny-random"}, "algorithm": {"steps": 1}, "eval": {"at_start": True},
                     "curriculum": [{"game": "arithmetic", "options": {"held_out": 8}}]})
    Trainer(cfg, tmp_path / "run", kernel=arithmetic_kernel(), quiet=True).run()
    lines = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert [m["step"] for m in lines] == [0, 1]
    assert lines[0]["eval"]["arithmetic"]["held_out"]["tasks"] == 8


class ThreeRoles(Game):
    name = "three_roles"
    roles = (Role("questioner"), Role("responder"), Role("verifier"))

    async def play(self, table):
        [q] = await table.ask("questioner", "Ask something.", max_new_tokens=3)
        answers = await table.ask("responder", q.text, n=2, max_new_tokens=3)
        for a in answers:
            votes = await table.ask("verifier", a.text, n=2, max_new_tokens=2)
            for v in votes:
                table.reward(v, float(len(v.text) % 2))
            table.reward(a, float(len(a.text) % 2))
        table.reward(q, 0.5)


class BrokenEvaluation(ThreeRoles):
    name = "broken_eval"

    def evaluate(self, ev):
        raise RuntimeError("the held-out set is missing")


games_plugin = types.SimpleNamespace(rolekit_register_games=hookimpl(
    lambda registry: (registry.add(ThreeRoles), registry.add(BrokenEvaluation))))


@pytest.mark.parametrize("game", ["three_roles", "broken_eval"])
def test_evaluations_apply_only_where_they_can_and_a_failing_one_still_saves(tmp_path, game):
    cfg = base(algorithm={"steps": 2, "lr": 1e-3, "advantage": "role_norm"}, eval={"every": 1},
               curriculum=[{"game": game}])
    history = Trainer(cfg, tmp_path / "run", kernel=Kernel([games_plugin], load_entrypoints=False), quiet=True).run()
    assert checkpoint.latest(tmp_path / "run").name == "step-2"
    if game == "broken_eval":
        assert "held-out set is missing" in history[-1]["eval"]["broken_eval"]["error"]
    else:
        assert history[-1]["eval"] == {}  # nothing offered: nothing run (the default opponents need two players)


# --- 10, 14: rewards are finite numbers for declared roles ----------------------------------------


class BadRewards(Game):
    name = "bad_rewards"
    roles = (Role("speaker"),)

    def __init__(self, *, reward=float("nan"), role="speaker"):
        self.value, self.role = reward, role

    async def play(self, table):
        [t] = await table.ask("speaker", "Say something.")
        table.set_return(self.role, 0.0)
        table.reward(t, self.value)


@pytest.mark.parametrize("options, message", [
    ({}, "game 'bad_rewards', role 'speaker', seed 0: non-finite reward nan"),
    ({"reward": float("inf")}, "non-finite reward inf"),
    ({"reward": "1"}, "a reward must be a number, got str '1'"),
    ({"reward": 1.0, "role": "speakr"}, "game 'bad_rewards' has no role 'speakr'"),
])
def test_bad_rewards_quarantine_the_episode_with_a_message(options, message):
    episodes = play(BadRewards(**options))
    assert all(not e.ok for e in episodes)
    assert message in episodes[0].error


def test_a_nan_reward_does_not_crash_training(tmp_path):
    plugin = types.SimpleNamespace(rolekit_register_games=hookimpl(lambda registry: registry.add(BadRewards)))
    cfg = base(curriculum=[{"game": "echo", "advantage": "raw", "options": {"letters": "A"}},
                           {"game": "bad_rewards", "weight": 0.1}], algorithm={"steps": 2, "lr": 1e-3})
    history = Trainer(cfg, tmp_path / "run", kernel=Kernel([plugin], load_entrypoints=False), quiet=True).run()
    assert len(history) == 2 and sum(m["quarantined"] for m in history) > 0


# --- 5: the constant aggregation divides by each sample's own budget -----------------------------


def test_constant_aggregation_uses_each_samples_budget():
    from rolekit.learner import Learner
    from rolekit.types import Sample

    model = load_model("tiny-random").model
    cfg = base(algorithm={"steps": 1, "lr": 1e-3, "aggregation": "constant"}).algorithm

    def loss(budgets):
        samples = [Sample(game="g", role="r", prompt_ids=(1, 2, 3), completion_ids=(5, 6), logprobs=(-9.0, -9.0),
                          advantage=1.0, max_new_tokens=b) for b in budgets]
        learner = Learner(model, [p for p in model.parameters()], cfg, device=torch.device("cpu"))
        learner.optimizer.step = lambda: None  # measure the loss only
        return learner.step(samples, max_new_tokens=64)["loss"]

    short, long = loss([2, 2]), loss([64, 64])
    assert short == pytest.approx(32 * long, rel=1e-4)  # the run-wide 64 would make them equal
    assert loss([2, 0]) == pytest.approx((short + long) / 2, rel=1e-4)  # 0: the run's default


def test_rolekit_eval_runs_the_evaluations_a_game_offers(tmp_path, capsys, monkeypatch):
    from rolekit import evaluate

    monkeypatch.setattr(evaluate, "Kernel", lambda **kw: arithmetic_kernel())
    evaluate.cmd_eval(evaluate_args(["--policy", "tiny-random", "--game", "arithmetic", "--offered",
                                     "--option", "held_out=6"]))
    report = json.loads(capsys.readouterr().out)
    assert report["offered"]["held_out"]["tasks"] == 6


def evaluate_args(argv):
    from rolekit.cli import build_parser

    return build_parser().parse_args(["eval", *argv])
