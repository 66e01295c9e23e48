"""The training engine on a real (tiny) model: learning, resume, checkpoints, bad input."""

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import types

import attrs
import pytest
import torch

from rolekit import checkpoint
from rolekit.advantages import RAE
from rolekit.config import ConfigError, from_dict, load
from rolekit.engine import Trainer, TrainingAborted
from rolekit.hookspecs import hookimpl
from rolekit.plugins import Kernel

ECHO = {
    "seed": 0,
    "model": {"name": "tiny-random"},
    "lora": {"enabled": False},
    "rollout": {"samples_per_step": 32, "max_new_tokens": 4},
    "algorithm": {"steps": 12, "lr": 1e-2},
    "eval": {"every": 0},
    "checkpoint": {"every": 0},
    "curriculum": [{"game": "echo", "options": {"letters": "A"}}],
}


class Flipped(RAE):
    """RAE with the advantage sign flipped: must make the policy worse, not better."""

    def samples(self, items):
        return [attrs.evolve(s, advantage=-s.advantage) for s in super().samples(items)]


flipped_plugin = types.SimpleNamespace(
    rolekit_register_advantages=hookimpl(lambda registry: registry.add("flipped_rae", Flipped)))


def train(tmp_path, data, name="run", kernel=None, resume=None):
    kernel = kernel or Kernel([flipped_plugin], load_entrypoints=False)
    trainer = Trainer(from_dict(data), tmp_path / name, kernel=kernel, quiet=True, resume=resume)
    return trainer, trainer.run()


def mean_return(history, steps):
    return sum(m["roles"]["echo/speaker"]["mean_return"] for m in history[-steps:]) / steps


def test_reward_rises_from_chance_and_falls_with_the_sign_flipped(tmp_path):
    _, history = train(tmp_path, ECHO)
    first, last = history[0]["roles"]["echo/speaker"]["mean_return"], mean_return(history, 3)
    assert first < 0.3, f"the untrained tiny model should be near chance, got {first}"
    assert last > 0.8, f"mean reward did not rise: {[m['roles']['echo/speaker']['mean_return'] for m in history]}"

    flipped = {**ECHO, "algorithm": {**ECHO["algorithm"], "advantage": "flipped_rae"}}
    _, history = train(tmp_path, flipped, "flipped")
    assert mean_return(history, 3) < 0.3


def small_lora_run(steps):
    return {
        **ECHO,
        "lora": {"enabled": True, "r": 4, "alpha": 8},
        "rollout": {"samples_per_step": 12, "max_new_tokens": 4, "concurrency": 8},
        "algorithm": {"steps": steps, "lr": 5e-3, "ppo_epochs": 2},
        "checkpoint": {"every": 2, "keep": 5},
        "curriculum": [{"game": "echo", "options": {"letters": "AB"}}, {"game": "nim", "weight": 0.5}],
    }


def comparable(history):
    drop = {"seconds", "elapsed", "episodes_per_s", "tokens_per_s", "timing"}
    return [{k: v for k, v in m.items() if k not in drop} for m in history]


def test_resume_gives_the_same_metrics_and_weights(tmp_path):
    full, full_history = train(tmp_path, small_lora_run(4), "full")
    first, first_history = train(tmp_path, small_lora_run(2), "resumed")
    assert (tmp_path / "resumed" / "checkpoints" / "step-2" / "adapter_model.safetensors").exists()
    resumed, rest = train(tmp_path, small_lora_run(4), "resumed", resume=tmp_path / "resumed")
    assert comparable(first_history + rest) == comparable(full_history)
    for name, p in full.policy.params.items():
        assert torch.equal(p, resumed.policy.params[name]), name
    lines = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["step"] for l in lines] == [1, 2, 3, 4]


def test_lora_training_changes_only_the_adapter(tmp_path):
    trainer, _ = train(tmp_path, small_lora_run(1))
    base = trainer.policy.model.get_base_model()
    from rolekit.models import load_model

    fresh = load_model("tiny-random").model
    lora_moved = False
    for name, p in base.named_parameters():
        if "lora_" in name:
            lora_moved |= "lora_B" in name and p.abs().sum().item() > 0
        else:
            key = name.replace("base_layer.", "")
            assert torch.equal(p, fresh.get_parameter(key)), name
    assert lora_moved


def test_checkpoint_is_a_loadable_peft_directory(tmp_path):
    trainer, _ = train(tmp_path, small_lora_run(2))
    ckpt = checkpoint.latest(tmp_path / "run")
    assert ckpt.name == "step-2"
    from rolekit.models import load_model

    loaded = load_model(str(ckpt))
    for name, p in loaded.model.named_parameters():
        if "lora_B" in name:
            trained = trainer.policy.model.get_parameter(name.replace(".lora_B.default", ".lora_B.default"))
            assert torch.equal(p, trained)
            break
    else:
        pytest.fail("no LoRA weights in the loaded checkpoint")


def test_a_failed_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    trainer, _ = train(tmp_path, small_lora_run(2))
    root = tmp_path / "run" / "checkpoints"
    before = sorted(p.name for p in root.iterdir())

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", explode)
    trainer.step = 3
    with pytest.raises(OSError, match="disk full"):
        trainer.save()
    assert sorted(p.name for p in root.iterdir()) == before
    assert checkpoint.latest(tmp_path / "run").name == "step-2"


def test_a_kill_during_save_never_leaves_a_half_checkpoint(tmp_path):
    script = textwrap.dedent(f"""
        import os, time, torch
        from pathlib import Path
        from rolekit import checkpoint

        class Slow:
            def save_pretrained(self, path, **kw):
                (Path(path) / "model.safetensors").write_bytes(b"x" * 1000)
                print("writing", flush=True)
                time.sleep(30)

        class Tok:
            def save_pretrained(self, path):
                pass

        root = Path({str(tmp_path)!r}) / "checkpoints"
        checkpoint.save(root, 1, type("Fast", (), {{"save_pretrained": lambda self, p, **kw: None}})(), Tok(),
                        {{"step": 1}}, model_name="x")
        checkpoint.save(root, 2, Slow(), Tok(), {{"step": 2}}, model_name="x")
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    root = tmp_path / "checkpoints"
    assert [p.name for p in checkpoint.checkpoints(root)] == ["step-1"]
    assert checkpoint.load_state(checkpoint.latest(tmp_path)) == {"step": 1}


def test_non_finite_losses_skip_updates_then_abort(tmp_path, monkeypatch):
    data = {**small_lora_run(5), "checkpoint": {"every": 0}}
    data["algorithm"] = {**data["algorithm"], "max_nonfinite_steps": 2}
    from rolekit import learner

    real = learner.ppo_clip

    def poisoned(*args, **kwargs):
        loss, clipped = real(*args, **kwargs)
        return loss * float("nan"), clipped

    monkeypatch.setattr(learner, "ppo_clip", poisoned)
    trainer = Trainer(from_dict(data), tmp_path / "nan", kernel=Kernel(load_entrypoints=False), quiet=True)
    before = {n: p.detach().clone() for n, p in trainer.policy.params.items()}
    with pytest.raises(TrainingAborted, match="2 consecutive steps with a non-finite loss"):
        trainer.run()
    assert all(torch.equal(before[n], p) for n, p in trainer.policy.params.items())
    lines = [json.loads(l) for l in (tmp_path / "nan" / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["skipped_update"] is True


def test_bad_config_keys_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'algorithm.lrr'; did you mean 'algorithm.lr'"):
        from_dict({**ECHO, "algorithm": {"lrr": 1.0}})
    with pytest.raises(ConfigError, match=r"unknown config key 'curriculum\[0\].optoins'"):
        from_dict({**ECHO, "curriculum": [{"game": "echo", "optoins": {}}]})
    path = tmp_path / "c.toml"
    path.write_text('[[curriculum]]\ngame = "echo"\n')
    assert load(path, ["algorithm.steps=3", "rollout.temperature=0.5"]).algorithm.steps == 3
    with pytest.raises(ConfigError, match="algorithm.steps"):
        load(path, ["algorithm.steps=many"])


def test_unknown_game_or_opponent_fails_before_loading_the_model(tmp_path):
    bad = {**ECHO, "curriculum": [{"game": "nim", "seats": {"player_1": "scripted:minimax"}}]}
    with pytest.raises(Exception, match="unknown opponent 'minimax'"):
        Trainer(from_dict(bad), tmp_path / "x", kernel=Kernel(load_entrypoints=False), quiet=True)


def test_cli_train_writes_the_run_directory(tmp_path):
    config = tmp_path / "echo.toml"
    config.write_text(textwrap.dedent("""
        [model]
        name = "tiny-random"
        [rollout]
        samples_per_step = 8
        [algorithm]
        steps = 2
        [eval]
        every = 0
        [[curriculum]]
        game = "echo"
    """))
    out = subprocess.run([sys.executable, "-m", "rolekit.cli", "train", str(config), "--out", str(tmp_path / "r"),
                          "--quiet", "--set", "logging.episodes_per_step=2"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert "step    2" in out.stdout
    run = tmp_path / "r"
    assert (run / "config.toml").read_text().count("episodes_per_step = 2") == 1
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    episode = json.loads((run / "episodes.jsonl").read_text().splitlines()[0])
    assert episode["game"] == "echo" and episode["turns"][0]["role"] == "speaker"
    assert (run / "checkpoints" / "step-2" / "adapter_config.json").exists()
    bad = subprocess.run([sys.executable, "-m", "rolekit.cli", "train", str(config), "--set", "algoritm.steps=1"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "did you mean 'algorithm'" in bad.stderr
