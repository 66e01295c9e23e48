"""Every example config loads, names installed games and opponents, and runs a step on tiny-random."""

from pathlib import Path

import pytest

from rolekit.config import load
from rolekit.engine import Trainer
from rolekit.plugins import Kernel

EXAMPLES = sorted(Path(__file__).parents[1].joinpath("examples").glob("*.toml"))
# a random model's proposals and answers are all malformed (-1): role_norm sees no spread, rae
# (baseline 0 at first) trains on them; short budgets, since it never writes an end of turn
TINY = {"azr_code": ["curriculum.0.advantage=rae", "curriculum.0.options.propose_tokens=8",
                     "curriculum.0.options.solve_tokens=4"],
        "pasodoble_math": ["curriculum.0.advantage=rae", "curriculum.0.options.proposer_tokens=8",
                           "curriculum.0.options.solver_tokens=4"],
        "spell": ["curriculum.0.advantage.questioner=rae", "curriculum.0.options.questioner_tokens=8",
                  "curriculum.0.options.responder_tokens=4", "curriculum.0.options.verifier_tokens=3",
                  "curriculum.0.options.held_out=2"],
        # a random model never closes </think>: without the format both seats' rewards have a spread
        "redteam": ["curriculum.0.options.think=false", "curriculum.0.options.attacker_tokens=6",
                    "curriculum.0.options.defender_tokens=6", "curriculum.0.options.judge_tokens=2"],
        "eva": ["curriculum.0.options.n=2", "curriculum.0.options.solver_tokens=6",
                "curriculum.0.options.creator_tokens=6", "curriculum.0.options.judge_tokens=2"]}


def test_the_examples_exist():
    assert {p.stem for p in EXAMPLES} >= {"kuhn_poker", "tictactoe", "negotiation", "multi_game", "azr_code",
                                          "pasodoble_math", "spell", "redteam", "eva"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs_one_step_on_tiny_random(path, tmp_path):
    import rolekit_dualplay
    import rolekit_eva
    import rolekit_games
    import rolekit_redteam
    import rolekit_spell

    config = load(path, ["model.name=tiny-random", "algorithm.steps=1", "rollout.samples_per_step=4",
                         "eval.every=0", "eval.at_start=false", "checkpoint.every=0", *TINY.get(path.stem, [])])
    kernel = Kernel([rolekit_games, rolekit_dualplay, rolekit_spell, rolekit_redteam, rolekit_eva],
                    load_entrypoints=False)
    trainer = Trainer(config, tmp_path, kernel=kernel, quiet=True)
    [metrics] = trainer.run()
    assert metrics["samples"] == 4
    assert {key.split("/")[0] for key in metrics["roles"]} <= {g.game for g in config.curriculum}
