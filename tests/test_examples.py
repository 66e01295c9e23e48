"""Every example config loads, names installed games and opponents, and runs a step on tiny-random."""

from pathlib import Path

import pytest

from rolekit.config import load
from rolekit.engine import Trainer
from rolekit.plugins import Kernel

EXAMPLES = sorted(Path(__file__).parents[1].joinpath("examples").glob("*.toml"))


def test_the_examples_exist():
    assert {p.stem for p in EXAMPLES} >= {"kuhn_poker", "tictactoe", "negotiation", "multi_game"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs_one_step_on_tiny_random(path, tmp_path):
    import rolekit_games

    config = load(path, ["model.name=tiny-random", "algorithm.steps=1", "rollout.samples_per_step=4",
                         "eval.every=0", "checkpoint.every=0"])
    trainer = Trainer(config, tmp_path, kernel=Kernel([rolekit_games], load_entrypoints=False), quiet=True)
    [metrics] = trainer.run()
    assert metrics["samples"] == 4
    assert {key.split("/")[0] for key in metrics["roles"]} <= {g.game for g in config.curriculum}
