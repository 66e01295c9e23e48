"""The hook contract: every hookspec is documented and has a test here (checked by the meta-test)."""

import inspect
import re
from pathlib import Path

import pytest

from rolekit import Game, Role, hookspecs
from rolekit.hookspecs import hookimpl
from rolekit.plugins import Kernel
from rolekit.table import EpisodeSpec, Scheduler
from rolekit.types import Verdict


def hook_names():
    return sorted(n for n, f in vars(hookspecs).items() if n.startswith("rolekit_") and inspect.isfunction(f))


def test_every_hook_has_a_docstring_and_a_test():
    source = Path(__file__).read_text()
    assert len(hook_names()) == 8
    for name in hook_names():
        doc = getattr(hookspecs, name).__doc__ or ""
        assert len(doc.split()) >= 15, f"{name} needs a real docstring"
        assert re.search(rf"^def test_{name}\b", source, re.M), f"no test_{name} in {__file__}"


class Solo(Game):
    name = "solo"
    roles = (Role("only"),)

    async def play(self, table):
        table.set_return("only", 1.0)


def _plugin(**impls):
    return type("P", (), {k: staticmethod(hookimpl(v)) for k, v in impls.items()})()


def test_rolekit_register_games():
    kernel = Kernel([_plugin(rolekit_register_games=lambda registry: registry.add(Solo))], load_entrypoints=False)
    entry = kernel.games.entry("solo")
    assert entry.obj is Solo and entry.plugin == "P"


def test_rolekit_register_roles():
    kernel = Kernel([_plugin(rolekit_register_roles=lambda registry: registry.add(Role("critic")))],
                    load_entrypoints=False)
    assert kernel.roles.get("critic") == Role("critic")


def test_rolekit_register_verifiers():
    kernel = Kernel([_plugin(rolekit_register_verifiers=lambda registry: registry.add(
        "always", lambda answer, **kw: Verdict(1.0)))], load_entrypoints=False)
    assert kernel.verifiers.get("always")("x").score == 1.0
    assert kernel.verifiers.get("exact")("so [B]", "b").score == 1.0  # built-ins still there


def test_rolekit_register_rewards():
    kernel = Kernel([_plugin(rolekit_register_rewards=lambda registry: registry.add(
        "double", lambda *, x, **kw: 2 * x))], load_entrypoints=False)
    assert kernel.rewards.get("double")(x=3, extra="ignored") == 6


def test_rolekit_register_advantages():
    class Const:
        def __init__(self, value=1.0):
            self.value = value

    kernel = Kernel([_plugin(rolekit_register_advantages=lambda registry: registry.add("const", Const))],
                    load_entrypoints=False)
    assert kernel.advantages.get("const")(value=2.0).value == 2.0


def test_rolekit_register_opponents():
    kernel = Kernel([_plugin(rolekit_register_opponents=lambda registry: registry.add(
        "last", lambda move, rng: move.legal_actions[-1], games=("nim",)))], load_entrypoints=False)
    entry = kernel.opponents.entry("last")
    assert entry.meta["games"] == ("nim",) and entry.plugin == "P"


def test_rolekit_episode_end():
    seen = []

    def observe(episode):
        seen.append(episode.seed)
        return episode.seed != 2  # drop seed 2

    kernel = Kernel([_plugin(rolekit_register_games=lambda registry: registry.add(Solo),
                             rolekit_episode_end=observe)], load_entrypoints=False)
    episodes = list(Scheduler({}, kernel=kernel).run(EpisodeSpec(Solo(), s) for s in range(4)))
    assert sorted(seen) == [0, 1, 2, 3]
    assert {e.seed for e in episodes if e.info.get("dropped")} == {2}


def test_rolekit_step_end():
    def add(step, metrics):
        metrics["seen_step"] = step

    kernel = Kernel([_plugin(rolekit_step_end=add)], load_entrypoints=False)
    metrics = {"loss": 0.5}
    kernel.step_end(7, metrics)
    assert metrics == {"loss": 0.5, "seen_step": 7}


def test_misspelt_hook_is_caught_at_startup(capsys):
    kernel = Kernel([_plugin(rolekit_register_game=lambda registry: registry.add(Solo))], load_entrypoints=False)
    assert "plugin 'P' has an unknown hook 'rolekit_register_game' (did you mean 'rolekit_register_games'?)" \
        in capsys.readouterr().err
    assert "solo" not in kernel.games and kernel.pm.get_plugin("P") is None and "nim" in kernel.games


def test_games_may_name_registered_roles():
    class Judged(Solo):
        name = "judged"
        roles = ("only", "judge")

    kernel = Kernel([_plugin(rolekit_register_roles=lambda registry: registry.add(Role("only", "the player")),
                             rolekit_register_games=lambda registry: registry.add(Judged))], load_entrypoints=False)
    assert Judged.roles == (Role("only", "the player"), kernel.roles.get("judge"))
