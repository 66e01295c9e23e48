import json
import subprocess
import sys
import types

import pytest

from rolekit import Game, Role
from rolekit.hookspecs import hookimpl
from rolekit.plugins import Kernel, PluginError, UnknownNameError


def make_plugin(name, game_name):
    cls = type(game_name.title(), (Game,), {"name": game_name, "roles": (Role("a"),)})
    module = types.ModuleType(name)
    module.rolekit_register_games = hookimpl(lambda registry: registry.add(cls))
    return module


def test_builtins_register_through_the_hooks(kernel):
    assert {"nim", "echo"} <= set(kernel.games.names())
    assert kernel.games.entry("nim").plugin == "builtins"
    assert {"exact", "number"} <= set(kernel.verifiers.names())
    assert "random" in kernel.opponents


def test_builtins_can_be_disabled_by_name():
    kernel = Kernel(load_entrypoints=False, disable=["builtins"])
    assert "nim" not in kernel.games and len(kernel.verifiers) == 0


def test_disable_through_environment(monkeypatch):
    monkeypatch.setenv("ROLEKIT_DISABLE_PLUGINS", "builtins")
    assert "nim" not in Kernel(load_entrypoints=False).games


def test_duplicate_names_are_refused_naming_both_plugins():
    with pytest.raises(PluginError, match=r"'nim' is registered by both plugin 'builtins' and plugin 'dup'"):
        Kernel([make_plugin("dup", "nim")], load_entrypoints=False)


def test_unknown_name_suggests_the_closest():
    kernel = Kernel(load_entrypoints=False)
    with pytest.raises(UnknownNameError, match=r"unknown game 'nmi'; did you mean 'nim'"):
        kernel.games.get("nmi")


def test_plugin_that_raises_while_registering_is_named():
    module = types.ModuleType("broken")
    module.rolekit_register_games = hookimpl(lambda registry: 1 / 0)
    with pytest.raises(PluginError, match=r"plugin 'broken' failed in rolekit_register_games: ZeroDivisionError"):
        Kernel([module], load_entrypoints=False)


def test_broken_entry_point_is_reported_by_name_and_skipped(monkeypatch, capsys):
    import importlib.metadata as md

    ep = md.EntryPoint(name="ghost", value="no_such_module_xyz", group="rolekit")
    monkeypatch.setattr(md, "entry_points", lambda group=None: [ep] if group == "rolekit" else [])
    kernel = Kernel()
    assert "nim" in kernel.games
    assert "plugin 'ghost'" in capsys.readouterr().err
    row = next(r for r in kernel.describe() if r["name"] == "ghost")
    assert "ModuleNotFoundError" in row["error"]


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "rolekit.cli", *args], capture_output=True, text=True, timeout=120)


def test_cli_plugins_and_games_json():
    plugins = json.loads(run_cli("plugins", "--json").stdout)
    builtins = next(p for p in plugins if p["name"] == "builtins")
    assert {"nim", "echo"} <= set(builtins["games"])
    games = {g["name"]: g for g in json.loads(run_cli("games", "--json").stdout)}
    assert games["nim"]["roles"] == ["player_0", "player_1"] and games["nim"]["plugin"] == "builtins"
    assert games["echo"]["description"]


def test_cli_unknown_game_is_one_line():
    out = run_cli("rollout", "--game", "nmi", "--model", "tiny-random")
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "did you mean 'nim'" in out.stderr
