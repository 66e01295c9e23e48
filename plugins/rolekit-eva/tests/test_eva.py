"""The eva game through the real scheduler (a scripted model), then on tiny-random through the engine."""

import json

import pytest

from rolekit.engine import Trainer
from rolekit.evaluate import Evaluator, Policy
from rolekit.pools import Pools
from rolekit.table import POLICY, EpisodeSpec, ModelResponder, Scheduler
from rolekit.testing import CharChat, ScriptedBackend, tiny_config
from rolekit_eva import Eva
from rolekit_eva.pool import PromptPool

JUDGE_TAIL = "Answer with one number"


def scripted(scores=("3", "9", "5", "5"), creations=("Rewritten Prompt: {p} Use exactly three lines.",
                                                      "{p}", "New prompt: a rarer question about {p}")):
    """Solver answers 'answer-<i>' (i-th call per prompt); the judge scores answer-i with
    scores[i]; the creator writes creations[j] for its j-th rubric call."""
    count: dict[str, int] = {}

    def reply(prompt):
        if prompt.startswith("I want you to act as a Prompt Rewriter"):
            given = prompt.split("#Given Prompt#:\n", 1)[1].split("\n\n#Rewritten", 1)[0]
            j = count["creator"] = count.get("creator", 0) + 1
            return creations[(j - 1) % len(creations)].format(p=given.rstrip("."))
        if JUDGE_TAIL in prompt:
            answer = prompt.split("Response:\n", 1)[1].split("\n\n", 1)[0]
            return scores[int(answer.split("-")[1]) % len(scores)]
        i = count[prompt] = count.get(prompt, -1) + 1
        return f"answer-{i}"
    return reply


def play(kernel, reply, seeds=(0,), pools=None, **options):
    backend = ScriptedBackend(reply)
    scheduler = Scheduler({POLICY: ModelResponder(POLICY, backend, CharChat())}, kernel=kernel)
    game = Eva(judge="judge:policy", constrained=False, **{"solver_tokens": 16, "creator_tokens": 120, **options})
    pools = pools if pools is not None else Pools()
    episodes = sorted(scheduler.run(EpisodeSpec(game, s, pools=pools) for s in seeds), key=lambda e: e.seed)
    assert all(e.error is None for e in episodes), episodes[0].error
    return episodes, pools, backend


def roles(episode, role):
    return [t for t in episode.turns if t.role == role]


def test_the_solver_is_rewarded_with_the_judges_score_and_the_prompt_scored(kernel):
    [episode], pools, _ = play(kernel, scripted(), evolve=0.0)
    solver = roles(episode, "solver")
    assert [episode.rewards[t.id] for t in solver] == pytest.approx([2 / 9, 8 / 9, 4 / 9, 4 / 9])
    assert episode.logs["informativeness"] == pytest.approx(6 / 9)  # max - min
    assert episode.logs["solver/judge_score"] == pytest.approx(18 / 36)
    [item] = [i for i in pools.get("prompts").items if i["informativeness"] is not None]
    assert item["text"] == episode.info["prompt"] and item["informativeness"] == pytest.approx(6 / 9)
    assert episode.logs["pool_size"] == 24 and not roles(episode, "creator")


def test_an_answer_without_a_verdict_is_dropped_not_scored_zero(kernel):
    [episode], _, _ = play(kernel, scripted(scores=("7", "eleven", "11", "3")), evolve=0.0)
    solver = roles(episode, "solver")
    assert [episode.dropped.get(t.id) for t in solver] == [None, "no verdict", "no verdict", None]
    assert sorted(episode.rewards.values()) == pytest.approx([2 / 9, 6 / 9])
    assert episode.logs["no_verdict"] == 0.5 and episode.logs["informativeness"] == pytest.approx(4 / 9)


def test_the_creator_evolves_the_scored_prompt_and_new_prompts_join_the_pool(kernel):
    [episode], pools, _ = play(kernel, scripted(), evolve=1.0, k=3)
    parent = episode.info["prompt"]
    creator = roles(episode, "creator")
    assert len(creator) == 3 and all(parent in t.prompt for t in creator)
    assert all(episode.dropped[t.id] == "creator not trained (train_creator = false)" for t in creator)
    assert sorted(episode.invalid.values()) == ["copies its prompt"]
    new = [i for i in pools.get("prompts").items if i["origin"] == "creator"]
    assert [i["parent"] for i in new] == [parent, parent]
    assert {i["text"] for i in new} == {f"{parent.rstrip('.')} Use exactly three lines.",
                                        f"a rarer question about {parent.rstrip('.')}"}
    assert episode.logs["creator/new_prompts"] == 2 and episode.logs["pool_size"] == 26


def test_a_trained_creator_earns_its_new_prompts_informativeness(kernel):
    [episode], pools, _ = play(kernel, scripted(scores=("2", "8", "5", "5")), evolve=1.0, k=1, train_creator=True)
    [creator] = roles(episode, "creator")
    assert episode.rewards[creator.id] == pytest.approx(6 / 9)  # its prompt's answers score 2, 8, 5, 5
    assert len(roles(episode, "solver")) == 8  # the drawn prompt's 4 answers and the new prompt's 4
    [new] = [i for i in pools.get("prompts").items if i["origin"] == "creator"]
    assert new["informativeness"] == pytest.approx(6 / 9)


def test_the_judge_is_asked_once_for_all_answers_of_all_episodes(kernel):
    _, _, backend = play(kernel, scripted(), seeds=range(5), evolve=0.0)
    assert backend.batch_sizes == [20, 20]  # 5 prompts x 4 answers, then their 20 verdicts in one call


def test_options_are_checked_by_name():
    for options, message in (({"n": 1}, "n=1"), ({"k": 9}, "k=9"), ({"metric": "regret"}, "metric='regret'"),
                             ({"evolve": 2.0}, "evolve=2.0"), ({"pool_size": 0}, "pool_size=0")):
        with pytest.raises(ValueError, match=message):
            Eva(**options)


def test_a_users_prompts_seed_the_pool(kernel, tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "Name a colour."}\n{"prompt": "Name a bird."}\n')
    [episode], pools, _ = play(kernel, scripted(), prompts=str(path), evolve=0.0)
    assert [(i["text"], i["origin"]) for i in pools.get("prompts").items] == [("Name a colour.", "user"),
                                                                            ("Name a bird.", "user")]


def test_evaluate_is_the_mean_judge_score_on_the_held_out_prompts(kernel):
    responder = ModelResponder(POLICY, ScriptedBackend(scripted(scores=("10", "1"))), CharChat())
    out = Eva(judge="judge:policy", constrained=False).evaluate(Evaluator(kernel, Eva(), Policy("s", responder)))
    # every held-out prompt is answered once ("answer-0"), which the judge scores 10
    assert out == {"held_out": {"judge_score": 1.0, "prompts": 16, "no_verdict": 0}}


# --- the real engine on tiny-random ----------------------------------------------------------------


def config(steps=3, evaluate=True, samples=8, **options):
    return tiny_config({"game": "eva", "options": {"n": 2, "k": 1, "evolve": 1.0, "solver_tokens": 6,
                                                   "creator_tokens": 8, "judge_tokens": 2, **options}},
                       steps=steps, evaluate=evaluate, samples=samples)


def test_trains_on_tiny_random_under_the_frozen_judge(kernel, tmp_path):
    history = Trainer(config(), tmp_path / "run", kernel=kernel, quiet=True).run()
    assert [m["step"] for m in history] == [1, 2, 3]
    played = [m for m in history if m["episodes"]]
    for m in played:
        assert m["roles"]["eva/solver"]["estimator"] == "grpo" and m["judges"]["judge:frozen"]["items"] > 0
        assert m["games"]["eva"]["pool_size"] >= 24
    lines = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    for m in (lines[0], lines[-1]):
        held = m["eval"]["eva"]["held_out"]
        assert held["prompts"] == 16 and held["no_verdict"] == 0 and 0.0 <= held["judge_score"] <= 1.0


def test_the_prompt_pool_survives_a_resume_exactly(kernel, tmp_path):
    def trainer(steps, out, **kw):
        return Trainer(config(steps=steps, evaluate=False, samples=6, pool_size=30), out, kernel=kernel,
                       quiet=True, **kw)

    straight = trainer(3, tmp_path / "a")
    straight.run()
    trainer(1, tmp_path / "b").run()
    resumed = trainer(3, tmp_path / "b", resume=tmp_path / "b")
    at_resume = resumed.curriculum.pools[0].get("prompts").state_dict()
    assert any(i["informativeness"] is not None for i in at_resume["items"])
    resumed.run()
    a, b = (t.curriculum.pools[0].get("prompts") for t in (straight, resumed))
    assert a.state_dict() == b.state_dict() and b.state_dict() != at_resume
    assert any(i["origin"] == "creator" for i in a.items)
