"""``rolekit train`` with ``rollout.backend = "vllm"``: short real runs on the CPU build.

LoRA with snapshot opponents (each a LoRA adapter on the same engine), constrained choices
and free text, an evaluation, a checkpoint and a resume; then full fine-tuning (weights
reloaded in place every step).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

CONFIG = """
seed = 0
[model]
name = "{model}"
[lora]
enabled = {lora}
r = 8
alpha = 16
[rollout]
backend = "vllm"
samples_per_step = 8
concurrency = 8
batch_size = 16
max_new_tokens = 6
[algorithm]
steps = {steps}
lr = 1e-3
advantage = "rae"
[snapshots]
every = 1
pool_size = 2
[eval]
every = 2
episodes = 4
opponents = ["random"]
[checkpoint]
every = 1
keep = 2
[logging]
quiet = true
episodes_per_step = 100
[[curriculum]]
game = "kuhn_poker"
options = {{ choose = true }}
seats = {{ player_1 = "snapshot" }}
[[curriculum]]
game = "kuhn_poker"
"""


def train(tmp_path: Path, model_dir: Path, *, lora: bool, steps: int, resume: bool = False) -> list[dict]:
    config = tmp_path / "run.toml"
    config.write_text(CONFIG.format(model=model_dir, lora=str(lora).lower(), steps=steps))
    out = tmp_path / "run"
    command = [sys.executable, "-m", "rolekit.cli", "train", str(config), "--out", str(out), "--quiet"]
    if resume:
        command += ["--resume", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert 'backend = "vllm"' in (out / "config.toml").read_text()
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def trained_steps(metrics: list[dict]) -> list[dict]:
    return [m for m in metrics if m.get("roles")]


@pytest.mark.slow
def test_lora_run_with_snapshot_opponents_and_resume(tmp_path, model_dir):
    metrics = trained_steps(train(tmp_path, model_dir, lora=True, steps=2))
    assert [m["step"] for m in metrics] == [1, 2]
    for m in metrics:
        assert m["samples"] >= 8 and math.isfinite(m["loss"])
    assert "eval" in metrics[-1]
    # step 2 played the snapshot taken after step 1 (a second adapter on the engine)
    episodes = [json.loads(line) for line in (tmp_path / "run" / "episodes.jsonl").read_text().splitlines()]
    played = [t for e in episodes if e["step"] == 2 for t in e["turns"] if t["responder"] == "snapshot:0"]
    assert played and all(t["text"] for t in played)
    resumed = trained_steps(train(tmp_path, model_dir, lora=True, steps=3, resume=True))
    assert [m["step"] for m in resumed] == [1, 2, 3]


@pytest.mark.slow
def test_full_finetuning_run(tmp_path, model_dir):
    metrics = trained_steps(train(tmp_path, model_dir, lora=False, steps=2))
    assert [m["step"] for m in metrics] == [1, 2]
    assert all(m["samples"] >= 8 and math.isfinite(m["loss"]) for m in metrics)
