"""The episode runtime on a real model (tiny-random): real tokens, threads, a fan-out role graph."""

import statistics

import pytest

from rolekit import Game, Role
from rolekit.backends.hf import HFBackend
from rolekit.chat import ChatTokenizer
from rolekit.rollout import specs, summarize
from rolekit.table import EpisodeSpec, ModelResponder, Scheduler


@pytest.fixture
def policy(tiny):
    backend = HFBackend(tiny.model, tiny.tokenizer, max_batch_size=64)
    return backend, ModelResponder("policy", backend, ChatTokenizer(tiny.tokenizer), max_new_tokens=6)


class ProposeSolveJudge(Game):
    """questioner -> n responders -> one judge ask per answer; rewards flow back up (SPELL's shape)."""

    name = "propose_solve_judge"
    roles = (Role("proposer"), Role("solver"), Role("judge"))

    async def play(self, table):
        [question] = await table.ask("proposer", "Ask a short question.", max_new_tokens=8)
        answers = await table.ask("solver", f"Answer: {question.text}", n=3, parent=question)
        verdicts = await table.gather(*[
            table.ask("judge", f"Q: {question.text}\nA: {a.text}\nIs it correct? [yes] or [no]", parent=a)
            for a in answers])
        scores = []
        for answer, [verdict] in zip(answers, verdicts):
            score = float(len(verdict.text) % 2 == 0)  # any deterministic function of the judge's words
            table.reward(answer, score)
            table.reward(verdict, 1.0)
            scores.append(score)
        success = statistics.fmean(scores)
        table.reward(question, table.kernel.rewards.get("gaussian_difficulty")(success_rate=success))
        table.set_info(success=success)


def test_fan_out_graph_runs_through_the_real_scheduler(kernel, policy):
    backend, responder = policy
    episodes = list(Scheduler({"policy": responder}, kernel=kernel).run(
        EpisodeSpec(ProposeSolveJudge(), seed) for seed in range(4)))
    assert all(e.ok for e in episodes), [e.error for e in episodes]
    assert backend.calls == 3  # proposer round, solver round, judge round: all 4 episodes batched together
    gaussian = kernel.rewards.get("gaussian_difficulty")
    for e in episodes:
        by_role = {r: e.turns_of(r) for r in ("proposer", "solver", "judge")}
        assert [len(by_role[r]) for r in ("proposer", "solver", "judge")] == [1, 3, 3]
        [q] = by_role["proposer"]
        assert all(a.parent == q.id and a.ask == by_role["solver"][0].ask for a in by_role["solver"])
        assert [j.parent for j in by_role["judge"]] == [a.id for a in by_role["solver"]]
        assert e.rewards[q.id] == pytest.approx(gaussian(success_rate=e.info["success"]))
        assert e.returns["judge"] == 3.0
        for t in e.turns:
            assert t.completion_ids and len(t.logprobs) == len(t.completion_ids)
            assert all(lp <= 0.0 for lp in t.logprobs)
            assert q.text in t.prompt or t.role == "proposer"


class Chatty(Game):
    name = "chatty"
    roles = (Role("a"), Role("b"))

    async def play(self, table):
        last = {}
        for i in range(4):
            role = "ab"[i % 2]
            [last[role]] = await table.ask(role, f"Move {i}: say something.", after=last.get(role),
                                           max_new_tokens=5)


def test_multi_turn_contexts_extend_without_retokenising(kernel, policy, tiny):
    _, responder = policy
    [episode] = Scheduler({"policy": responder}, kernel=kernel).run([EpisodeSpec(Chatty(), 0)])
    chat = ChatTokenizer(tiny.tokenizer)
    for role in "ab":
        first, second = episode.turns_of(role)
        assert second.prompt_ids[: len(first.context_ids)] == first.context_ids
        assert second.parent == first.id
        # the follow-up message is in the new ids, and the completion is kept token for token
        tail = chat.decode(second.prompt_ids[len(first.context_ids):])
        assert "say something" in tail and first.completion_ids == second.prompt_ids[
            len(first.prompt_ids): len(first.context_ids)]


def test_rollout_against_a_scripted_opponent_on_a_real_model(kernel, policy):
    backend, responder = policy
    from rolekit.rollout import scripted_responders

    game = kernel.games.get("nim")(stones=3)
    seats = {"player_1": "scripted:random"}
    responders = {"policy": responder, **scripted_responders(kernel, game, seats)}
    episodes = list(Scheduler(responders, kernel=kernel).run(specs(game, 8, 0, seats, alternate=True)))
    assert len(episodes) == 8 and all(e.ok for e in episodes)
    # a random model mostly answers garbage: its moves are invalid, the scripted seat's never are
    summary = summarize(episodes)
    assert all(not t.completion_ids for e in episodes for t in e.turns if t.responder == "scripted:random")
    assert sum(s["invalid"] for s in summary.values()) > 0
    for e in episodes:
        assert e.info.get("invalid") in (None, *[r for r, w in e.seats.items() if w == "policy"])


def test_constrained_choices_never_produce_an_invalid_move(kernel, policy, tiny):
    backend, responder = policy
    game = kernel.games.get("nim")(stones=4, choose=True)
    episodes = list(Scheduler({"policy": responder}, kernel=kernel).run(specs(game, 6, 0, {})))
    assert all(e.ok and e.info.get("invalid") is None for e in episodes)
    chat = ChatTokenizer(tiny.tokenizer)
    for e in episodes:
        for t in e.turns:
            assert t.text in ("[1]", "[2]") and t.action == t.text[1]
            assert t.completion_ids == chat.text_ids(t.text[1:])
            # the turn carries the model's own per-token logprobs of the chosen answer
            [again] = backend.score([(t.prompt_ids, t.completion_ids)])
            assert again == pytest.approx(t.logprobs, abs=1e-4)


def test_constrained_choices_sample_by_the_models_likelihood(kernel, tiny):
    import torch

    backend = HFBackend(tiny.model, tiny.tokenizer, max_batch_size=64)
    responder = ModelResponder("policy", backend, ChatTokenizer(tiny.tokenizer))
    from rolekit.table import AskRequest

    ask = AskRequest("nim", "player_0", "Pick one.", 400, {}, prefix="[", choices=("1]", "2]"))
    scores = backend.score([(responder.prompt_ids(ask), responder.chat.text_ids(c)) for c in ask.choices])
    p1 = torch.softmax(torch.tensor([sum(s) for s in scores]), 0)[0].item()
    torch.manual_seed(0)
    [answers] = responder.respond([ask])
    share = sum(a.text == "[1]" for a in answers) / len(answers)
    assert abs(share - p1) < 0.08, (share, p1)


def test_constrained_choices_at_temperature_zero_take_the_likeliest(kernel, tiny):
    backend = HFBackend(tiny.model, tiny.tokenizer, max_batch_size=64)
    responder = ModelResponder("policy", backend, ChatTokenizer(tiny.tokenizer), temperature=0.0)
    from rolekit.table import AskRequest

    for prompt in ("Pick one.", "Choose a number.", "Which?"):
        ask = AskRequest("nim", "player_0", prompt, 400, {}, prefix="[", choices=("1]", "2]", "3]"))
        scores = backend.score([(responder.prompt_ids(ask), responder.chat.text_ids(c)) for c in ask.choices])
        best = max(range(3), key=lambda k: sum(scores[k]))
        [answers] = responder.respond([ask])
        assert {a.text for a in answers} == {"[" + ask.choices[best]}
