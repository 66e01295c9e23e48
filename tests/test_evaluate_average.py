"""`rolekit eval` on a run: the best checkpoint by default (it says which), the run's average
policy (--average), and progress lines on stderr while it plays."""

import io
import json
import subprocess
import sys

import pytest
import torch

from rolekit import evaluate
from rolekit.config import from_dict
from rolekit.engine import Trainer
from rolekit.plugins import Kernel

pytest.importorskip("rolekit_games")

KUHN = {
    "seed": 0,
    "model": {"name": "tiny-random"},
    "lora": {"enabled": True, "r": 4, "alpha": 8},
    "rollout": {"samples_per_step": 16, "max_new_tokens": 4, "concurrency": 8},
    "algorithm": {"steps": 3, "lr": 3e-2},
    "snapshots": {"every": 1, "pool_size": 3, "weighting": "recency", "recency_decay": 0.5},
    "eval": {"every": 1, "episodes": 4, "opponents": ["random"]},
    "checkpoint": {"every": 3, "keep_best": "kuhn_poker/average/exploitability"},
    "curriculum": [{"game": "kuhn_poker", "options": {"choose": True}}],
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "run"
    Trainer(from_dict(KUHN), out, quiet=True).run()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return out, {m["step"]: m["eval"]["kuhn_poker"] for m in rows if "eval" in m}


def test_eval_of_a_run_uses_its_best_checkpoint_and_its_average_policy(run):
    out, evals = run
    averages = {step: ev["average"]["exploitability"] for step, ev in evals.items()}
    best = min(averages, key=averages.get)
    stderr = io.StringIO()
    sys_stderr, sys.stderr = sys.stderr, stderr
    try:
        report = evaluate.evaluate(Kernel(), game="kuhn_poker", policy=str(out), options={"choose": True},
                                   episodes=12, exploitability=True, average=True, progress=True)
    finally:
        sys.stderr = sys_stderr
    lines = stderr.getvalue()
    assert f"checkpoints/best (the best checkpoint: step {best}, kuhn_poker/average/exploitability" in lines
    assert report["checkpoint"].endswith("checkpoints/best")
    assert "12/12 episodes vs random" in lines  # progress, on stderr
    # The exact average at that checkpoint is the one training logged at its step.
    assert report["exploitability"] == pytest.approx(averages[best], abs=1e-6)
    assert report["average"]["weighting"] == "recency"
    assert sum(report["average"]["episodes_by_member"].values()) == 12
    assert [m["step"] for m in report["average"]["members"]] == [m["step"] for m in evals[best]["average"]["members"]]


def test_the_average_responder_plays_one_member_per_episode(run):
    out, _ = run
    game_policy = evaluate.load_policy(Kernel(), None, str(out / "checkpoints" / "step-3"))
    policy, pool, population = evaluate.average_policy(game_policy, out / "checkpoints" / "step-3")
    from rolekit.rollout import make_game

    game = make_game(Kernel(), "kuhn_poker", {"choose": True, "rounds": 3})
    played = evaluate.play_against(Kernel(), game, policy, "random", episodes=40, seed=1)
    assert sum(policy.responder.drawn.values()) == 40  # one draw per episode, not per ask
    assert len(pool) == 3 and len(policy.responder.drawn) > 1  # several members played
    # Replaying draws the same members.
    again, _, _ = evaluate.average_policy(game_policy, out / "checkpoints" / "step-3")
    evaluate.play_against(Kernel(), game, again, "random", episodes=40, seed=1)
    assert again.responder.drawn == policy.responder.drawn
    assert all(e.ok for e in played)


def test_cli_says_which_checkpoint_and_quiet_silences_progress(run):
    out, _ = run

    def rolekit(*args):
        return subprocess.run([sys.executable, "-m", "rolekit.cli", "eval", "--policy", str(out), "--game",
                               "kuhn_poker", "--option", "choose=true", "--episodes", "4", "--json", *args],
                              capture_output=True, text=True, timeout=300)

    loud = rolekit()
    assert loud.returncode == 0, loud.stderr
    assert "rolekit eval: evaluating" in loud.stderr and "checkpoints/best" in loud.stderr
    assert "4/4 episodes vs random" in loud.stderr
    assert json.loads(loud.stdout)["checkpoint"].endswith("checkpoints/best")  # stdout: the JSON alone
    quiet = rolekit("--quiet")
    assert quiet.returncode == 0, quiet.stderr
    assert "episodes vs random" not in quiet.stderr
    assert "checkpoints/best" in quiet.stderr  # which checkpoint is always said


def test_average_needs_a_run():
    with pytest.raises(ValueError, match="--average: --policy 'tiny-random' is not a run"):
        evaluate.evaluate(Kernel(), game="kuhn_poker", policy="tiny-random", episodes=1, average=True)


def test_progress_beats_while_no_episode_has_ended():
    """Concurrent episodes all end near the end: the heartbeat still prints, with the
    policy's batches so far, and never after the evaluation is over."""
    import time

    stream, counter = io.StringIO(), iter(range(1, 1000))
    progress = evaluate.Progress("episodes vs random", every_s=0.1, stream=stream, batches=lambda: next(counter))
    with progress.heartbeat(8):
        time.sleep(0.55)
    lines = stream.getvalue().splitlines()
    assert len(lines) >= 3 and all(line.startswith("rolekit eval: 0/8 episodes vs random, ") for line in lines)
    assert "policy batches" in lines[-1]
    time.sleep(0.3)
    assert stream.getvalue().splitlines() == lines  # stopped


def test_play_against_reports_progress_before_the_first_episode_ends():
    kernel = Kernel()
    game = evaluate.rollout.make_game(kernel, "tictactoe", {})
    policy = evaluate.load_policy(kernel, game, "tiny-random", batch_size=4)
    stream = io.StringIO()
    progress = evaluate.Progress("episodes vs random", every_s=0.0, stream=stream,
                                 batches=evaluate._backend_calls(policy))
    played = evaluate.play_against(kernel, game, policy, "random", episodes=4, concurrency=4, progress=progress)
    lines = stream.getvalue().splitlines()
    assert len(played) == 4 and lines[-1].startswith("rolekit eval: 4/4 episodes vs random")
    assert any(line.startswith("rolekit eval: 0/4 episodes vs random, ") for line in lines), lines
    assert int(lines[-1].split(", ")[1].split()[0]) > 0  # the backend's batches were counted


def test_eval_bf16_runs_the_policy_in_bf16():
    kernel = Kernel()
    game = evaluate.rollout.make_game(kernel, "kuhn_poker", {"choose": True})
    policy = evaluate.load_policy(kernel, game, "tiny-random", bf16=True)
    assert {p.dtype for p in policy.model.model.parameters()} == {torch.bfloat16}
    assert policy.backend.autocast_bf16 is True
    report = evaluate.evaluate(kernel, game="kuhn_poker", policy="tiny-random", episodes=4,
                               options={"choose": True}, exploitability=True, bf16=True)
    assert report["episodes"] == 4 and 0 <= report["exploitability"] <= 1
