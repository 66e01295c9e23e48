"""A plugin author's mistakes: each is reported in one line naming the thing, and only that thing is skipped."""

import json
import types

import pytest

from rolekit import Game, Role, cli
from rolekit.builtins import Nim
from rolekit.game import TurnBasedGame
from rolekit.hookspecs import hookimpl
from rolekit.plugins import Kernel
from rolekit.rollout import make_game, specs
from rolekit.table import Ask, EpisodeSpec, ModelResponder, Scheduler
from rolekit.testing import CharChat, ScriptedBackend


def plugin(name, **impls):
    """A plugin module called ``name`` with the given hook implementations."""
    module = types.ModuleType(name)
    for hook, fn in impls.items():
        setattr(module, hook, hookimpl(fn))
    return module


def games_plugin(name, *classes):
    return plugin(name, rolekit_register_games=lambda registry: [registry.add(c) for c in classes])


def stderr_lines(capsys):
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def use_kernel(monkeypatch, *plugins):
    """Make the CLI load exactly these plugins (and the built-ins)."""
    kernel = Kernel(list(plugins), load_entrypoints=False)
    monkeypatch.setattr(cli, "_kernel", lambda args: kernel)
    return kernel


class Good(Game):
    name = "good"
    roles = (Role("a"),)

    async def play(self, table):
        table.set_return("a", 1.0)


# --- hooks the specs do not have (issue #11, item 11) ------------------------------------------


def test_misspelt_hook_is_reported_with_the_closest_name_and_the_plugin_skipped(capsys):
    myplug = plugin("myplug", rolekit_register_game=lambda registry: registry.add(Good),
                    rolekit_register_verifiers=lambda registry: registry.add("mine", lambda answer, **kw: None))
    kernel = Kernel([myplug], load_entrypoints=False)
    assert stderr_lines(capsys) == ["rolekit: plugin 'myplug' has an unknown hook 'rolekit_register_game' "
                                    "(did you mean 'rolekit_register_games'?) and was skipped"]
    assert "nim" in kernel.games and "exact" in kernel.verifiers  # the built-ins still work
    assert "mine" not in kernel.verifiers  # the whole plugin was skipped, not only the bad hook
    row = next(r for r in kernel.describe() if r["name"] == "myplug")
    assert "unknown hook 'rolekit_register_game'" in row["error"] and "verifiers" not in row


def test_hook_with_an_argument_its_spec_lacks_is_reported_and_the_plugin_skipped(capsys):
    kernel = Kernel([plugin("argplug", rolekit_register_games=lambda registry, seed: None)], load_entrypoints=False)
    [line] = stderr_lines(capsys)
    assert line == ("rolekit: plugin 'argplug' has a hook 'rolekit_register_games' with an argument the hook "
                    "does not pass: 'seed' (it passes: registry) and was skipped")
    assert "nim" in kernel.games and "argument" in kernel.info["argplug"].error
    assert kernel.pm.get_plugin("argplug") is None


def test_any_other_hook_pluggy_refuses_is_reported_in_one_line_and_the_plugin_skipped(capsys):
    wrapper = types.ModuleType("wrapplug")
    wrapper.rolekit_episode_end = hookimpl(wrapper=True)(lambda episode: None)  # a wrapper must be a generator
    kernel = Kernel([wrapper], load_entrypoints=False)
    [line] = stderr_lines(capsys)
    assert line.startswith("rolekit: plugin 'wrapplug' ") and line.endswith(" and was skipped")
    assert "not a generator function" in line and kernel.pm.get_plugin("wrapplug") is None and "nim" in kernel.games


def test_cli_plugins_lists_the_skipped_plugin(monkeypatch, capsys):
    use_kernel(monkeypatch, plugin("myplug", rolekit_register_game=lambda registry: None))
    capsys.readouterr()
    assert cli.main(["plugins", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert "did you mean 'rolekit_register_games'" in rows["myplug"]["error"] and "nim" in rows["builtins"]["games"]


# --- game options (item 12) --------------------------------------------------------------------


class ArithmeticLike(Game):
    name = "arithmetic-like game"
    roles = (Role("asker"), Role("solver"))

    def __init__(self, *, responders: int = 4, digits: int = 2):
        self.responders, self.digits = responders, digits

    async def play(self, table):
        pass


def test_unknown_option_suggests_the_closest_from_the_constructor():
    kernel = Kernel([games_plugin("arith", ArithmeticLike)], load_entrypoints=False)
    with pytest.raises(ValueError) as info:
        make_game(kernel, "arithmetic-like game", {"respondrs": 4})
    assert str(info.value) == ("game 'arithmetic-like game': unknown option 'respondrs'; did you mean "
                               "'responders'? (options: digits, responders)")


def test_unknown_option_of_a_turn_based_game_lists_the_base_class_options_too(kernel):
    with pytest.raises(ValueError, match=r"^game 'nim': unknown option 'stonse'; did you mean 'stones'\? "
                                         r"\(options: .*\bmode\b.*\bstones\b"):
        make_game(kernel, "nim", {"stonse": 3, "mode": "terse"})
    with pytest.raises(ValueError, match=r"unknown option 'mdoe'; did you mean 'mode'\?"):
        make_game(kernel, "nim", {"mdoe": "terse"})
    assert make_game(kernel, "nim", {"stones": 3, "choose": True}).stones == 3


def test_unknown_option_of_a_game_without_options():
    kernel = Kernel([games_plugin("p", Good)], load_entrypoints=False)
    with pytest.raises(ValueError, match=r"^game 'good': unknown option 'x' \(options: none\)$"):
        make_game(kernel, "good", {"x": 1})


# --- broken games are refused at registration (item 13) --------------------------------------


class NoRoles(Good):
    name = "no_roles"
    roles = ()


class NoName(Good):
    name = ""


class SyncPlay(Good):
    name = "sync_play"

    def play(self, table):
        table.set_return("a", 1.0)


class NoPlay(Game):
    name = "no_play"
    roles = (Role("a"),)


class TwiceTheSameRole(Good):
    name = "twice"
    roles = (Role("a"), Role("b"), "a")


class NotARole(Good):
    name = "not_a_role"
    roles = (Role("a"), 3)


class BadRoleName(Good):
    name = "bad_role_name"
    roles = ("two words",)


class NotAGame:
    name = "not_a_game"
    roles = (Role("a"),)

    async def play(self, table):
        pass


@pytest.mark.parametrize("cls, reason", [
    (NoRoles, "game 'no_roles' has no roles"),
    (NoName, "game class NoName has no name"),
    (SyncPlay, "game 'sync_play' has a play that is not 'async def'"),
    (NoPlay, "game 'no_play' does not define play"),
    (TwiceTheSameRole, "game 'twice' has the role 'a' twice"),
    (NotARole, "game 'not_a_role' has a role 3 that is neither a Role nor a role name"),
    (BadRoleName, "game 'bad_role_name' has a role 'two words' that is neither a Role nor a role name"),
    (NotAGame, "game 'not_a_game' is not a Game subclass"),
])
def test_broken_game_is_reported_by_name_and_skipped(capsys, cls, reason):
    kernel = Kernel([games_plugin("mygames", cls, Good)], load_entrypoints=False)
    assert stderr_lines(capsys) == [f"rolekit: plugin 'mygames': {reason} and was skipped"]
    assert kernel.games.names() == ["echo", "good", "nim"]  # the plugin's other game and the built-ins
    assert kernel.info["mygames"].error == reason
    row = next(r for r in kernel.describe() if r["name"] == "mygames")
    assert row["games"] == ["good"] and row["error"] == reason


def test_game_registered_under_another_name_is_refused(capsys):
    kernel = Kernel([plugin("alias", rolekit_register_games=lambda registry: registry.add("other", Good))],
                    load_entrypoints=False)
    assert stderr_lines(capsys) == ["rolekit: plugin 'alias': game 'other' is registered as 'other' but its name "
                                    "is 'good' and was skipped"]
    assert "other" not in kernel.games


def test_every_broken_game_of_a_plugin_is_recorded(capsys):
    kernel = Kernel([games_plugin("mygames", NoRoles, SyncPlay)], load_entrypoints=False)
    assert len(stderr_lines(capsys)) == 2
    assert kernel.info["mygames"].error == ("game 'no_roles' has no roles; "
                                            "game 'sync_play' has a play that is not 'async def'")


class ForgetsAwait(Game):
    name = "forgets_await"
    roles = (Role("a"),)

    async def play(self, table):
        [turn] = table.ask("a", "hello")  # missing `await`
        table.set_return("a", 1.0)


# Needs Ask.__iter__ in rolekit/table.py (another engineer's file; issue #11) saying the ask was not
# awaited: until it is there this test is expected to fail, and it runs as a normal test once it is.
@pytest.mark.xfail(not hasattr(Ask, "__iter__"), strict=True,
                   reason="rolekit/table.py: Ask does not yet say that table.ask(...) must be awaited")
def test_missing_await_says_so(kernel):
    _, responder = policy(lambda prompt: "[x]")
    [episode] = Scheduler({"policy": responder}, kernel=kernel).run([EpisodeSpec(ForgetsAwait(), 0)])
    last = episode.error.strip().splitlines()[-1]
    assert last.startswith("TypeError: table.ask(") and "await" in last and "[turn] = await table.ask(" in last


# --- the CLI (item 14) -------------------------------------------------------------------------


class Undocumented(Game):
    name = "undocumented"
    roles = (Role("a"),)

    async def play(self, table):
        table.set_return("a", 0.0)


def test_cli_games_lists_a_game_with_neither_description_nor_docstring(monkeypatch, capsys):
    use_kernel(monkeypatch, games_plugin("quiet", Undocumented))
    assert cli.main(["games", "--json"]) == 0
    games = {g["name"]: g for g in json.loads(capsys.readouterr().out)}
    assert games["undocumented"] == {"name": "undocumented", "plugin": "quiet", "roles": ["a"], "description": ""}
    assert cli.main(["games"]) == 0
    assert "undocumented" in capsys.readouterr().out


class Explodes(Game):
    """Every episode raises."""

    name = "explodes"
    roles = (Role("a"),)

    async def play(self, table):
        raise RuntimeError(f"boom in seed {table.seed}")


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_cli_rollout_exits_1_when_every_episode_is_quarantined(monkeypatch, capsys, json_flag):
    use_kernel(monkeypatch, games_plugin("bad", Explodes))
    code = cli.main(["rollout", "--game", "explodes", "--model", "tiny-random", "--episodes", "3", "--quiet",
                     *json_flag])
    err = capsys.readouterr().err
    assert code == 1
    assert "every episode of 'explodes' was quarantined" in err
    assert "Traceback (most recent call last)" in err and "RuntimeError: boom in seed 0" in err


# --- roles named by string (item 15) -------------------------------------------------------------


class QuestionVerify(Game):
    """A questioner asks, a verifier (a registered role) checks."""

    name = "question_verify"
    roles = ("questioner", "verifier")

    async def play(self, table):
        [question] = await table.ask("questioner", "Ask a question.")
        [verdict] = await table.ask("verifier", f"Check: {question.text}", parent=question)
        ok = verdict.text == "[yes]"
        table.set_return("questioner", float(ok))
        table.set_return("verifier", 1.0)
        table.set_info(winner="questioner" if ok else None)


def policy(reply, **kw):
    backend = ScriptedBackend(reply)
    return backend, ModelResponder("policy", backend, CharChat(), **kw)


def test_game_roles_may_name_registered_roles_and_new_ones():
    kernel = Kernel([games_plugin("qv", QuestionVerify)], load_entrypoints=False)
    cls = kernel.games.get("question_verify")
    assert cls.roles == (Role("questioner"), kernel.roles.get("verifier"))  # resolved at registration
    assert cls.role_names() == ("questioner", "verifier")
    game = make_game(kernel, "question_verify")
    _, responder = policy(lambda prompt: "[yes]" if prompt.startswith("Check") else "What is 2+2?")
    episodes = list(Scheduler({"policy": responder}, kernel=kernel).run(specs(game, 4, 0, {})))
    assert len(episodes) == 4 and all(e.ok for e in episodes)
    assert all(e.returns == {"questioner": 1.0, "verifier": 1.0} for e in episodes)
    assert [t.role for t in episodes[0].turns] == ["questioner", "verifier"]


def test_cli_games_shows_roles_named_by_string(monkeypatch, capsys):
    use_kernel(monkeypatch, games_plugin("qv", QuestionVerify))
    assert cli.main(["games", "--json"]) == 0
    games = {g["name"]: g for g in json.loads(capsys.readouterr().out)}
    assert games["question_verify"]["roles"] == ["questioner", "verifier"]


def test_role_names_of_an_unregistered_game_with_string_roles():
    class Loose(Game):
        name = "loose"
        roles = ("x", Role("y"))

    assert Loose.role_names() == ("x", "y")


def test_turn_based_subclass_options_pass_through():
    class Piles(Nim):
        name = "piles"

        def __init__(self, *, piles: int = 1, **options):
            super().__init__(**options)
            self.piles = piles

    kernel = Kernel([games_plugin("piles", Piles)], load_entrypoints=False)
    assert make_game(kernel, "piles", {"piles": 2, "stones": 4}).stones == 4
    with pytest.raises(ValueError, match=r"unknown option 'pile'; did you mean 'piles'\?"):
        make_game(kernel, "piles", {"pile": 2})
    assert isinstance(make_game(kernel, "piles"), TurnBasedGame)
