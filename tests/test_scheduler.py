"""The episode runtime: batching, seat maps, quarantine, threads, fan-out."""

import pytest

from rolekit import Game, Role
from rolekit.builtins import Nim
from rolekit.rollout import scripted_responders, specs, summarize
from rolekit.table import EpisodeSpec, ModelResponder, RolloutAborted, Scheduler, ScriptedResponder
from rolekit.testing import CharChat, ScriptedBackend


def policy(reply, **kw):
    backend = ScriptedBackend(reply)
    return backend, ModelResponder("policy", backend, CharChat(), **kw)


def test_many_episodes_few_backend_calls(kernel):
    backend, responder = policy(lambda prompt: "[1]")
    episodes = list(Scheduler({"policy": responder}, kernel=kernel, concurrency=64).run(
        EpisodeSpec(Nim(stones=5), seed) for seed in range(64)))
    assert len(episodes) == 64 and all(e.ok for e in episodes)
    # 5 stones, one at a time: every episode takes 5 moves, all 64 episodes move in lockstep
    assert backend.calls == 5
    assert backend.batch_sizes == [64] * 5
    assert all(e.info["winner"] == "player_0" for e in episodes)


def test_refill_keeps_concurrency_and_plays_everything(kernel):
    backend, responder = policy(lambda prompt: "[2]" if "Stones left: 7" in prompt else "[1]")
    games = [Nim(stones=k) for k in (1, 3, 7)]
    scheduler = Scheduler({"policy": responder}, kernel=kernel, concurrency=4)
    episodes = list(scheduler.run(EpisodeSpec(games[i % 3], i) for i in range(30)))
    assert sorted(e.seed for e in episodes) == list(range(30))
    assert max(backend.batch_sizes) == 4
    assert sum(backend.batch_sizes) == sum(len(e.turns) for e in episodes)


def test_scripted_seats_answer_without_the_model_and_without_extra_rounds(kernel):
    backend, responder = policy(lambda prompt: "[1]")
    game = Nim(stones=6)
    seats = {"player_1": "scripted:first"}
    responders = {"policy": responder, **scripted_responders(kernel, game, seats)}
    episodes = list(Scheduler(responders, kernel=kernel).run(specs(game, 10, 0, seats)))
    assert backend.calls == 3  # player_0 moves at 6, 4, 2 stones; the scripted answers don't cost a round
    for e in episodes:
        assert [t.responder for t in e.turns] == ["policy", "scripted:first"] * 3
        assert e.info["winner"] == "player_1"
    assert summarize(episodes)["player_0"]["loss"] == 1.0


def test_invalid_move_ends_game_with_spiral_penalty(kernel):
    _, responder = policy(lambda prompt: "I take three stones [3]")
    [episode] = Scheduler({"policy": responder}, kernel=kernel).run([EpisodeSpec(Nim(), 0)])
    assert episode.returns == {"player_0": -1.5, "player_1": 0.5}
    assert episode.info["invalid"] == "player_0" and episode.turns[0].action is None


class Raises(Game):
    name = "raises"
    roles = (Role("a"),)

    async def play(self, table):
        [turn] = await table.ask("a", "hello")
        if table.seed % 2:
            raise ValueError(f"boom {table.seed}")
        table.reward(turn, 1.0)


def test_a_raising_game_is_quarantined_and_the_rest_go_on(kernel, capsys):
    _, responder = policy(lambda prompt: "hi")
    episodes = list(Scheduler({"policy": responder}, kernel=kernel).run(EpisodeSpec(Raises(), s) for s in range(6)))
    bad = sorted(e.seed for e in episodes if not e.ok)
    assert bad == [1, 3, 5]
    assert all(e.returns == {"a": 1.0} for e in episodes if e.ok)
    quarantined = next(e for e in episodes if e.seed == 3)
    assert "ValueError: boom 3" in quarantined.error and "Traceback" in quarantined.error
    assert "seed 3" in capsys.readouterr().err


def test_failure_budget_aborts_with_the_traceback(kernel):
    _, responder = policy(lambda prompt: "hi")
    scheduler = Scheduler({"policy": responder}, kernel=kernel, max_failures=2)
    with pytest.raises(RolloutAborted, match="(?s)3 episodes raised.*ValueError: boom"):
        list(scheduler.run(EpisodeSpec(Raises(), s) for s in range(1, 20, 2)))


class Both(Game):
    """Asks two roles in one round with table.gather (one scripted, one policy)."""

    name = "both"
    roles = (Role("a"), Role("b"))

    async def play(self, table):
        from rolekit.game import MoveInfo

        move = MoveInfo(Nim(), (2, 0), "b", ("1", "2"))
        [a], [b] = await table.gather(table.ask("a", "say x"), table.ask("b", "pick", info=move))
        table.reward(a, float(a.text == "x"))
        table.reward(b, float(b.text == "[1]"))


def test_gather_mixes_scripted_and_model_seats(kernel):
    backend, responder = policy(lambda prompt: "x")
    responders = {"policy": responder, "scripted:first": ScriptedResponder("scripted:first",
                                                                          kernel.opponents.get("first"))}
    episodes = list(Scheduler(responders, kernel=kernel).run(
        EpisodeSpec(Both(), s, {"b": "scripted:first"}) for s in range(5)))
    assert backend.calls == 1
    assert all(e.returns == {"a": 1.0, "b": 1.0} for e in episodes)


class Chatty(Game):
    """Three asks in one thread of the same seat."""

    name = "chatty"
    roles = (Role("a"),)

    async def play(self, table):
        turn = None
        for i in range(3):
            [turn] = await table.ask("a", f"message {i}", after=turn, max_new_tokens=8)


def test_thread_contexts_extend_exactly_with_char_chat(kernel):
    _, responder = policy(lambda prompt: "ok")
    [episode] = Scheduler({"policy": responder}, kernel=kernel).run([EpisodeSpec(Chatty(), 0)])
    t0, t1, t2 = episode.turns
    assert t1.prompt_ids[: len(t0.context_ids)] == t0.context_ids
    assert t2.prompt_ids[: len(t1.context_ids)] == t1.context_ids
    assert (t1.parent, t2.parent) == (t0.id, t1.id)


def test_seeded_episodes_replay(kernel):
    _, responder = policy(lambda prompt: "[B]")
    game = kernel.games.get("echo")()

    def play():
        return [(e.seed, e.turns[0].prompt, e.returns["speaker"])
                for e in Scheduler({"policy": responder}, kernel=kernel).run(EpisodeSpec(game, s) for s in range(8))]

    first = play()
    assert sorted(first) == sorted(play())
    assert {r for _, _, r in first} == {0.0, 1.0}
