"""checkpoint.keep_best: checkpoints/best is the best evaluation's checkpoint, never pruned,
kept across a resume; `rolekit eval --policy RUN` uses it and says so."""

import json

import pytest

from rolekit import checkpoint
from rolekit.config import from_dict
from rolekit.engine import Trainer

KUHN = {
    "seed": 0,
    "model": {"name": "tiny-random"},
    "lora": {"enabled": True, "r": 4, "alpha": 8},
    "rollout": {"samples_per_step": 16, "max_new_tokens": 4, "concurrency": 8},
    "algorithm": {"steps": 4, "lr": 3e-2},
    "snapshots": {"every": 1, "pool_size": 3},
    "eval": {"every": 1, "episodes": 4, "opponents": ["random"]},
    "checkpoint": {"every": 2, "keep": 1},
    # one seat plays the population: Elo ratings come from these games
    "curriculum": [{"game": "kuhn_poker", "options": {"choose": True}, "seats": {"player_1": "snapshot"}}],
}


def exploitabilities(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {m["step"]: m["eval"]["kuhn_poker"]["exploitability"]["exploitability"] for m in rows if "eval" in m}


def test_best_checkpoint_is_kept_and_survives_resume(tmp_path, capsys):
    run = tmp_path / "run"
    trainer = Trainer(from_dict(KUHN), run, quiet=True)
    trainer.run()
    seen = exploitabilities(run)
    last_line = capsys.readouterr().out.strip().splitlines()[-1]  # the run ends saying final and best
    assert last_line.startswith(f"rolekit: kuhn_poker/exploitability: final {seen[4]:.4f} (step 4); best "
                                f"{min(seen.values()):.4f} (step {min(seen, key=seen.get)}, checkpoints/best)")
    assert "average policy" in last_line
    assert len(set(round(v, 6) for v in seen.values())) > 1, "the policy never changed: nothing to pick from"
    best_step = min(seen, key=seen.get)
    best = run / "checkpoints" / "best"
    kept = checkpoint.info(best)
    assert kept["best"] == {"metric": "kuhn_poker/exploitability", "value": seen[best_step], "step": best_step}
    assert kept["step"] == best_step
    assert checkpoint.load_state(best)["step"] == best_step  # a whole checkpoint: it resumes like any
    assert [p.name for p in checkpoint.checkpoints(run / "checkpoints")] == ["step-4"]  # keep = 1 spares best
    assert checkpoint.latest(run).name == "step-4"  # --resume continues from the newest, not the best
    assert trainer.policy.population.games > 0  # the snapshot seat's games were rated

    # Resume for 4 more steps: the best so far is remembered, not replaced by a worse one.
    longer = {**KUHN, "algorithm": {**KUHN["algorithm"], "steps": 8}}
    resumed = Trainer(from_dict(longer), run, quiet=True, resume=run)
    assert resumed.best == kept["best"]
    assert resumed.policy.population.steps == trainer.policy.population.steps
    resumed.run()
    seen = exploitabilities(run)
    assert sorted(seen) == list(range(1, 9))
    best_step = min(seen, key=seen.get)
    assert checkpoint.info(best)["best"]["value"] == seen[best_step]
    assert checkpoint.info(best)["best"]["step"] == best_step
    assert checkpoint.for_eval(run)[0] == best


def test_a_metric_that_never_improves_keeps_the_first_and_maximised_metrics(tmp_path):
    evaluation = {"tictactoe": {"random": {"win": 0.5, "loss": 0.4}, "minimax": {"draw": 0.1}}}
    assert checkpoint.best_metric(evaluation, "auto") == "tictactoe/random/win"
    assert checkpoint.metric_value(evaluation, "tictactoe/minimax/draw") == 0.1
    assert checkpoint.metric_value(evaluation, "tictactoe/minimax/loss") is None
    assert checkpoint.improves("tictactoe/random/win", 0.6, 0.5)
    assert not checkpoint.improves("tictactoe/random/loss", 0.6, 0.5)
    kuhn = {"kuhn_poker": {"random": {"win": 0.5}, "exploitability": {"exploitability": 0.3},
                           "average": {"exploitability": 0.2}}}
    assert checkpoint.best_metric(kuhn, "auto") == "kuhn_poker/exploitability"
    assert checkpoint.metric_value(kuhn, "kuhn_poker/exploitability") == 0.3
    assert checkpoint.metric_value(kuhn, "kuhn_poker/average/exploitability") == 0.2
    assert checkpoint.improves("kuhn_poker/exploitability", 0.2, 0.3)
    assert checkpoint.best_metric({"g": {"error": "boom"}}, "auto") is None


def test_for_eval_falls_back_to_the_newest_and_names_a_missing_run(tmp_path):
    for step in (2, 4):
        d = tmp_path / "run" / "checkpoints" / f"step-{step}"
        d.mkdir(parents=True)
        (d / checkpoint.STATE_FILE).write_bytes(b"")
    found, line = checkpoint.for_eval(tmp_path / "run")
    assert found.name == "step-4" and "no best" in line
    with pytest.raises(FileNotFoundError, match="no checkpoint found"):
        checkpoint.for_eval(tmp_path / "empty")
