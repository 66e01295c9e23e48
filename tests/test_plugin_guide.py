"""docs/plugins.md's code is checked against the code: every ```python block runs, in order,
in one namespace that becomes the module ``rolekit_cards`` (the guide's example plugin);
each game it defines trains a step on tiny-random with its evaluations, and its example
config trains through the real config loader."""

from __future__ import annotations

import inspect
import re
import sys
import tomllib
import types
from pathlib import Path

import pytest

from rolekit.config import from_dict
from rolekit.engine import Trainer
from rolekit.hookspecs import hookimpl
from rolekit.plugins import Kernel

GUIDE = Path(__file__).parents[1] / "docs" / "plugins.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.M | re.S)


def blocks(lang: str) -> list[str]:
    return [code for kind, code in BLOCK.findall(GUIDE.read_text()) if kind == lang]


@pytest.fixture(scope="module")
def guide():
    """The guide's Python blocks as one plugin module. A block that defines a hook a former
    block defined too (each example registers its own game) adds to it: the module's hook
    calls every block's version."""
    module = types.ModuleType("rolekit_cards")
    hooks: dict[str, list] = {}
    sys.modules["rolekit_cards"] = module
    namespace = module.__dict__
    namespace["__name__"] = "rolekit_cards"
    try:
        for code in blocks("python"):
            if "import rolekit_cards" in code:  # the testing block: run by test_the_testing_block
                continue
            before = {k: v for k, v in namespace.items() if k.startswith("rolekit_")}
            exec(compile(code, str(GUIDE), "exec"), namespace)
            for name, fn in list(namespace.items()):
                if name.startswith("rolekit_") and callable(fn) and before.get(name) is not fn:
                    hooks.setdefault(name, []).append(fn)
        for name, fns in hooks.items():  # def hook(ARGS): every block's hook(ARGS), in order
            args = ", ".join(inspect.signature(fns[0]).parameters)
            scope = {"_fns": fns}
            exec(f"def {name}({args}):\n    for fn in _fns:\n        fn({args})\n", scope)
            setattr(module, name, hookimpl(scope[name]))
        yield module, hooks
    finally:
        sys.modules.pop("rolekit_cards", None)


def test_the_guide_registers_its_games_verifier_and_opponent(guide):
    module, hooks = guide
    assert len(hooks["rolekit_register_games"]) == 4
    kernel = Kernel([module], load_entrypoints=False)
    assert {"high_card", "count_letters", "debate", "high_card_eval"} <= set(kernel.games.names())
    assert "palindrome" in kernel.verifiers and "honest" in kernel.opponents
    assert kernel.verifiers.get("palindrome")("[Level]").score == 1.0
    assert kernel.verifiers.get("palindrome")("[]").ok is False


@pytest.mark.parametrize("game,options", [("high_card", {"choose": True}), ("count_letters", {}), ("debate", {}),
                                          ("high_card_eval", {})])
def test_each_game_of_the_guide_trains_and_evaluates_on_tiny_random(guide, game, options, tmp_path):
    module, _ = guide
    config = from_dict({
        "seed": 0, "model": {"name": "tiny-random"},
        "rollout": {"samples_per_step": 8, "concurrency": 8, "max_new_tokens": 8},
        "algorithm": {"steps": 1}, "eval": {"every": 1, "episodes": 4, "opponents": ["random", "honest"]},
        "checkpoint": {"every": 0}, "curriculum": [{"game": game, "options": options}]})
    [metrics] = Trainer(config, tmp_path, kernel=Kernel([module], load_entrypoints=False), quiet=True).run()
    assert metrics["samples"] == 8 and metrics["quarantined"] == 0
    if game == "debate":  # a Game offers no evaluation unless it defines evaluate
        assert game not in metrics.get("eval", {})
        assert metrics["roles"]["debate/pro"]["mean_return"] == -metrics["roles"]["debate/con"]["mean_return"]
        return
    evaluation = metrics["eval"][game]
    assert "error" not in evaluation, evaluation
    if game.startswith("high_card"):
        assert "honest" in evaluation and "random" in evaluation
    if game == "count_letters":  # a random proposer never writes a word: the invalid path
        assert evaluation["held_out"]["tasks"] == 4
        assert metrics["roles"]["count_letters/proposer"]["invalid_reasons"] == {"not a word": 8}


def test_count_letters_credits_each_answer_keeps_a_pool_and_drops_repeats(guide):
    """The fan-out path with a scripted model (a random one never writes a word)."""
    from rolekit.pools import Pools
    from rolekit.table import POLICY, EpisodeSpec, ModelResponder, Scheduler
    from rolekit.testing import CharChat, ScriptedBackend

    module, _ = guide
    kernel = Kernel([module], load_entrypoints=False)
    counts = iter(["5]", "5]", "4]", "x]"] * 2)
    backend = ScriptedBackend(lambda prompt: "apple]" if prompt.startswith("Write one") else next(counts))
    scheduler = Scheduler({POLICY: ModelResponder(POLICY, backend, CharChat())}, kernel=kernel, concurrency=1)
    pools = Pools()
    game = kernel.games.get("count_letters")()
    first, second = scheduler.run(EpisodeSpec(game, seed, pools=pools) for seed in (0, 1))
    assert first.error is None and second.error is None, first.error or second.error
    q, *answers = first.turns
    assert [first.rewards[a.id] for a in answers] == [1.0, 1.0, 0.0, 0.0]
    assert first.rewards[q.id] == 1.0  # gaussian_difficulty at a solve rate of 0.5
    assert first.logs == {"solve_rate": 0.5} and first.info["word"] == "apple" and first.keys[q.id] == "short"
    assert pools.get("solved").data == {"apple": 0.5}
    assert second.dropped == {second.turns[0].id: "seen before"}
    metrics = {"games": {"count_letters": {"solve_rate": 0.5}}}
    kernel.step_end(1, metrics)
    assert metrics["count_letters_solved"] == 0.5  # the guide's step_end observer


def test_the_example_config_trains(guide, tmp_path):
    module, _ = guide
    [config_text] = [b for b in blocks("toml") if "[[curriculum]]" in b]
    data = tomllib.loads(config_text)
    data["model"]["name"] = "tiny-random"
    data["algorithm"]["steps"] = 1
    data["rollout"]["samples_per_step"] = 4
    data["eval"].update(every=1, at_start=False, episodes=2)
    [metrics] = Trainer(from_dict(data), tmp_path, kernel=Kernel([module], load_entrypoints=False),
                        quiet=True).run()
    assert metrics["samples"] == 4
    assert {key.split("/")[0] for key in metrics["roles"]} == {"high_card"}  # count_letters starts at step 5
    assert {"random", "honest"} <= set(metrics["eval"]["high_card"])  # [eval] opponents


def test_the_testing_block(guide):
    [code] = [b for b in blocks("python") if "import rolekit_cards" in b]
    exec(compile(code, str(GUIDE), "exec"), {"__name__": "guide_test"})


def test_the_packaging_block_is_a_valid_pyproject():
    [pyproject] = [b for b in blocks("toml") if "[project]" in b]
    project = tomllib.loads(pyproject)["project"]
    assert project["entry-points"]["rolekit"] == {"cards": "rolekit_cards"}
