"""pasodoble_math: PasoDoble's rewards by hand, episodes through the real scheduler, the
held-out set, the history pool across a resume, and training on tiny-random."""

import itertools
import json
import random

import pytest

from rolekit.config import from_dict, to_toml
from rolekit.engine import Trainer
from rolekit.evaluate import Evaluator, Policy
from rolekit.pools import Pools
from rolekit.table import POLICY, EpisodeSpec, ModelResponder, Scheduler
from rolekit.testing import CharChat, ScriptedBackend, tiny_config
from rolekit.verifiers.math import verify_math
from rolekit_dualplay.pasodoble import (PasoDobleMath, diversity, held_out_problems, jaccard, parse_proposal,
                                        proposer_reward, stated, tokens)

# --- PasoDoble's reward by hand ------------------------------------------------------------------


def test_proposer_reward_window_and_value():
    assert proposer_reward(0.2, 1.0) == 0.0  # p <= 0.2: exactly at the threshold is out
    assert proposer_reward(0.0, 1.0) == 0.0
    assert proposer_reward(0.25, 0.3) == 0.0  # d <= 0.3: exactly at the threshold is out
    assert proposer_reward(0.25, 0.31) == pytest.approx(1.1 - 0.25 + 0.2 * 0.31)
    assert proposer_reward(0.5, 1.0) == pytest.approx(0.8)
    assert proposer_reward(0.75, 0.5) == pytest.approx(0.45)
    assert proposer_reward(1.0, 1.0) == pytest.approx(0.3)  # solved by all: still inside the window
    assert proposer_reward(0.5, 1.0, min_pass=0.5) == 0.0
    assert proposer_reward(0.5, 0.4, min_diversity=0.4) == 0.0


def test_tokens_are_lower_cased_words_and_symbols():
    assert tokens("Tom has 3 + 4 Apples?") == {"tom", "has", "3", "+", "4", "apples", "?"}
    assert tokens("3 + 4") != tokens("3 - 4")


def test_jaccard_boundary_at_0_8():
    a = frozenset("abcdefgh")  # 8 tokens
    four_fifths = a | {"i", "j"}  # 8 / 10 = 0.8: still counts as diverse (<= 0.8)
    above = a | {"i"}  # 8 / 9 > 0.8: a repeat
    assert jaccard(a, four_fifths) == pytest.approx(0.8)
    assert diversity(a, [sorted(four_fifths)]) == 1.0
    assert jaccard(a, above) > 0.8 and diversity(a, [sorted(above)]) == 0.0
    assert jaccard(frozenset(), frozenset()) == 1.0


def test_diversity_is_the_share_of_the_history_at_most_0_8_similar():
    a = frozenset("abcdefgh")
    same, different = sorted(a), sorted("xyz")
    assert diversity(a, []) == 1.0  # no history: fully diverse
    assert diversity(a, [same] * 7 + [different] * 3) == pytest.approx(0.3)  # -> proposer 0 (d <= 0.3)
    assert diversity(a, [same] * 6 + [different] * 4) == pytest.approx(0.4)
    assert proposer_reward(0.5, diversity(a, [same] * 7 + [different] * 3)) == 0.0


def test_tagged_proposals_parse():
    problem, answer, why = parse_proposal("<problem>What is 2+2?</problem>\n<answer>2+2=4, so \\boxed{4}</answer>")
    assert (problem, why) == ("What is 2+2?", "") and "\\boxed{4}" in answer
    assert parse_proposal("<problem>What is 2+2?</problem><answer>\\boxed{\\frac{1}{2}}")[2] == ""  # cut off
    assert parse_proposal("What is 2+2? \\boxed{4}") == (None, None, "no <problem>")
    assert parse_proposal("<problem> </problem><answer>\\boxed{4}</answer>")[2] == "no <problem>"
    assert parse_proposal("<problem>What is 2+2?</problem><answer>4</answer>") == ("What is 2+2?", None,
                                                                                  "no \\boxed answer")


# --- episodes through the real Table and Scheduler --------------------------------------------------


def run(game, reply, seeds=(0,), pools=None):
    """Episodes of ``game`` answered by ``reply(prompt_text)`` (a character-level scripted model)."""
    backend = ScriptedBackend(reply)
    policy = ModelResponder(POLICY, backend, CharChat())
    from rolekit.plugins import Kernel

    scheduler = Scheduler({POLICY: policy}, kernel=Kernel(load_entrypoints=False))
    done = list(scheduler.run([EpisodeSpec(game, seed, {}, pools=pools) for seed in seeds]))
    assert all(e.ok for e in done), [e.error for e in done]
    return sorted(done, key=lambda e: e.seed)


def terse_reply(solver_answers, proposer_answer="12}", problem=" and gets 5 more. How many are there?"):
    """A scripted terse player: the problem turn, the proposer's answer, then the solvers in turn."""
    answers = itertools.cycle(solver_answers)

    def reply(prompt):
        if "<assistant>Problem: " in prompt:
            return problem
        if prompt.startswith("Answer with a number."):
            return proposer_answer
        if prompt.startswith("Question:"):
            return next(answers)
        raise AssertionError(prompt)

    return reply


def roles(episode, role):
    return [t for t in episode.turns if t.role == role]


def written(game, episode):
    """The tokens of what the proposer wrote: its problem without the lead the game drew."""
    lead = game.proposer_prompt(random.Random(episode.seed))[1].removeprefix("Problem: ")
    return sorted(tokens(episode.info["problem"].removeprefix(lead)))


def test_a_terse_episode_rewards_both_roles_end_to_end():
    pools, game = Pools(), PasoDobleMath()
    [e] = run(game, terse_reply(["12}", "12}", "@@}", "oops"]), pools=pools)
    problem_turn, answer_turn = roles(e, "proposer")
    solvers = roles(e, "solver")
    assert problem_turn.text.startswith("Problem: ") and problem_turn.text.endswith("How many are there?")
    assert answer_turn.text == "Answer: \\boxed{12}"
    assert e.info["problem"] == problem_turn.text.removeprefix("Problem: ")
    assert [s.text for s in solvers][:2] == ["Answer: \\boxed{12}"] * 2
    assert [e.rewards[s.id] for s in solvers] == [1.0, 1.0, 0.0, 0.0]
    assert [e.invalid.get(s.id) for s in solvers] == [None, None, "unreadable \\boxed answer", "no \\boxed answer"]
    # p = 0.5, d = 1 (empty history): 1.1 - 0.5 + 0.2 = 0.8 on both proposer turns
    assert e.rewards[problem_turn.id] == e.rewards[answer_turn.id] == pytest.approx(0.8)
    assert (e.keys[problem_turn.id], e.keys[answer_turn.id]) == ("problem", "answer")
    assert e.info["pass_rate"] == 0.5 and e.info["diversity"] == 1.0 and not e.dropped
    assert pools.get("history").items == [written(game, e)] == [sorted(tokens("and gets 5 more. How many are there?"))]
    assert all(s.parent == problem_turn.id for s in solvers)


def test_a_repeated_problem_earns_nothing_and_a_window_miss_drops_the_solvers():
    game, pools = PasoDobleMath(), Pools()
    [first] = run(game, terse_reply(["12}", "12}", "3}", "3}"]), pools=pools)
    for _ in range(99):  # the history now holds 100 copies of the same problem
        pools.get("history").add(written(game, first))
    [again] = run(game, terse_reply(["12}", "12}", "3}", "3}"]), seeds=(7,), pools=pools)
    assert again.info["problem"] != first.info["problem"]  # another drawn lead, the same words after it
    assert again.info["diversity"] == 0.0 and len(pools.get("history")) == 100
    assert all(again.rewards[t.id] == 0.0 for t in roles(again, "proposer"))  # d <= 0.3
    [solved] = run(game, terse_reply(["12}"]), seeds=(1,))
    assert set(solved.dropped.values()) == {"pass rate outside the window"} and len(solved.dropped) == 4
    assert all(solved.rewards[t.id] == pytest.approx(0.3) for t in roles(solved, "proposer"))  # p = 1, d = 1
    [unsolved] = run(game, terse_reply(["7}"]), seeds=(2,))
    assert len(unsolved.dropped) == 4 and all(unsolved.rewards[t.id] == 0.0 for t in roles(unsolved, "proposer"))


def test_the_history_keeps_the_last_100_problems():
    pools = Pools()
    run(PasoDobleMath(), terse_reply(["12}", "3}"]), seeds=range(130), pools=pools)
    history = pools.get("history")
    assert history.added == 130 and len(history) == 100 == PasoDobleMath.history_size
    assert history.items == [sorted(tokens("and gets 5 more. How many are there?"))] * 100


def test_a_problem_stating_its_own_answer_earns_the_trivial_reward_and_asks_no_solver():
    assert stated("Tom has 7 apples. How many apples does Tom have?", "7")
    assert stated("Tom has 1,200 coins. How many?", "1200") and stated("It costs 2.5 dollars. How much?", " 2.5 ")
    assert not stated("Tom has 7 apples and gets 5 more. How many?", "12")
    assert not stated("Tom has 17 apples. How many?", "7") and not stated("Tom has 7 apples?", "\\frac{7}{2}")
    assert not stated("Tom has 7 apples?", None)
    lead_number = int(PasoDobleMath().proposer_prompt(random.Random(0))[1].split()[3])
    copy = terse_reply(["%d}" % lead_number], proposer_answer="%d}" % lead_number, problem=". How many are there?")
    [e] = run(PasoDobleMath(trivial=0.0), copy)
    assert e.info["trivial"] and not roles(e, "solver") and not e.invalid
    assert [e.rewards[t.id] for t in roles(e, "proposer")] == [0.0, 0.0]
    [e] = run(PasoDobleMath(trivial=-0.5), copy)
    assert [e.rewards[t.id] for t in roles(e, "proposer")] == [-0.5, -0.5]
    [e] = run(PasoDobleMath(), copy)  # the default, PasoDoble's own rule: the solvers are asked
    assert len(roles(e, "solver")) == 4 and "trivial" not in e.info


def test_malformed_proposals_are_penalised_by_reason_and_ask_no_solver():
    [no_question] = run(PasoDobleMath(), terse_reply(["12}"], problem=" and gets 5 more"))
    [turn] = roles(no_question, "proposer")
    assert no_question.invalid == {turn.id: "no question"} and no_question.rewards == {turn.id: -1.0}
    assert not roles(no_question, "solver")
    for answer, why in (("12", "no \\boxed answer"), ("@@}", "unreadable \\boxed answer"),
                        ("}", "unreadable \\boxed answer")):
        [e] = run(PasoDobleMath(format_penalty=0.0), terse_reply(["12}"], proposer_answer=answer))
        problem_turn, answer_turn = roles(e, "proposer")
        assert e.invalid == {answer_turn.id: why}, answer
        assert e.rewards == {problem_turn.id: 0.0, answer_turn.id: 0.0} and not roles(e, "solver")


def test_a_reasoning_episode_reads_the_tags_and_the_last_box():
    def reply(prompt):
        if prompt.startswith("system: You are the proposer"):
            return "<problem>What is half of 9?</problem><answer>9/2 = 4.5; 4.5 * 2 = 9. \\boxed{\\frac{9}{2}}</answer>"
        return "Half of 9 is \\boxed{4}. No: \\boxed{4.5}" if prompt.endswith("half of 9?") else "?"

    game = PasoDobleMath(prompts="reasoning", solvers=2)
    prompt, lead = game.proposer_prompt(random.Random(0))
    assert lead == "" and prompt[0]["role"] == "system" and "<problem>" in prompt[0]["content"]
    [e] = run(game, reply)
    [q] = roles(e, "proposer")
    assert [e.rewards[s.id] for s in roles(e, "solver")] == [1.0, 1.0] and e.info["answer"] == "\\frac{9}{2}"
    assert e.rewards[q.id] == pytest.approx(0.3)  # p = 1, d = 1
    [bad] = run(game, lambda prompt: "<problem>What is 2+2?</problem> it is 4")
    assert list(bad.invalid.values()) == ["no \\boxed answer"] and len(bad.turns) == 1


def test_knowledge_passages_are_drawn_into_the_prompt(tmp_path):
    (tmp_path / "a.txt").write_text("Passage one about triangles.\n\nPassage two about primes.")
    (tmp_path / "b.md").write_text("# Fractions\nA fraction is a part of a whole.")
    (tmp_path / "skip.csv").write_text("not knowledge")
    game = PasoDobleMath(knowledge=str(tmp_path))
    assert len(game.passages) == 3
    prompts = {game.proposer_prompt(random.Random(seed))[0].split("\n\n")[0] for seed in range(20)}
    assert prompts == {f"External knowledge: {p}" for p in game.passages}
    assert game.proposer_prompt(random.Random(3)) == game.proposer_prompt(random.Random(3))
    reasoning = PasoDobleMath(prompts="reasoning", knowledge=str(tmp_path)).proposer_prompt(random.Random(0))[0]
    assert reasoning[1]["content"].startswith("External knowledge: ")


def test_option_mistakes_are_one_line_errors_naming_the_option(tmp_path):
    with pytest.raises(ValueError, match="option knowledge=.*is not a folder"):
        PasoDobleMath(knowledge=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="option knowledge=.*no .txt or .md"):
        PasoDobleMath(knowledge=str(tmp_path))
    with pytest.raises(ValueError, match="option prompts='verbose'; valid: terse, reasoning"):
        PasoDobleMath(prompts="verbose")


# --- the held-out set -------------------------------------------------------------------------------


def test_the_held_out_set_is_fixed_and_its_answers_are_right():
    a = held_out_problems(64)
    assert a == held_out_problems(64) and len(a) == 64 and len({q for q, _ in a}) > 60
    for q, gold in a:
        assert verify_math(f"\\boxed{{{gold}}}", gold).score == 1.0, (q, gold)
    fractions = [(q, g) for q, g in a if "fraction" in q]
    assert fractions and all(g.startswith("\\frac") for _, g in fractions)
    # spot checks by hand
    for q, gold in a:
        if " and gets " in q:
            x, y = [int(w) for w in q.replace(".", " ").split() if w.isdigit()]
            assert int(gold) == x + y


def test_evaluate_scores_greedy_boxed_answers_with_a_standard_error(kernel):
    game = PasoDobleMath(held_out=8, solver_tokens=24)  # the scripted model does not stop at "}"
    problems = held_out_problems(8)
    right = {q: g for q, g in problems[:6]}

    def reply(prompt):
        q = prompt.removeprefix("Question: ").split("\nAnswer with a number.")[0]
        return f"{right[q]}}}" if q in right else "0}"

    responder = ModelResponder(POLICY, ScriptedBackend(reply), CharChat())
    ev = Evaluator(kernel, game, Policy("scripted-model", responder))
    out = game.evaluate(ev)["held_out"]
    assert out["tasks"] == 8 and out["accuracy"] == pytest.approx(0.75)
    assert out["stderr"] == pytest.approx((0.75 * 0.25 / 8) ** 0.5)


# --- the real engine on tiny-random ------------------------------------------------------------------


class EveryTextAProblem(PasoDobleMath):
    """Any problem turn is well formed, so a random model's proposals fill the history."""

    name = "pasodoble_every_text"
    history_size = 3

    def problem_of(self, text):
        return text.removeprefix("Problem: ") + "?"


def config(game="pasodoble_math", steps=3, evaluate=True, samples=12):
    return tiny_config({"game": game,
                        "options": {"held_out": 4, "solvers": 2, "proposer_tokens": 8, "solver_tokens": 4}},
                       steps=steps, evaluate=evaluate, samples=samples)


def test_trains_on_tiny_random_through_the_real_engine(kernel, tmp_path):
    trainer = Trainer(config(), tmp_path / "run", kernel=kernel, quiet=True)
    history = trainer.run()
    assert [m["step"] for m in history] == [1, 2, 3]
    proposer = history[0]["roles"]["pasodoble_math/proposer"]
    assert proposer["estimator"].startswith("rae") and proposer["invalid_turns"] > 0  # the game's own choice
    assert set(proposer["invalid_reasons"]) <= {"no question", "no \\boxed answer", "unreadable \\boxed answer"}
    assert history[-1]["roles"]["pasodoble_math/solver"]["estimator"] == "grpo"  # the game's own choice
    lines = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert [m["step"] for m in lines] == [0, 1, 2, 3]
    for m in (lines[0], lines[-1]):
        held_out = m["eval"]["pasodoble_math"]["held_out"]
        assert held_out["tasks"] == 4 and 0.0 <= held_out["accuracy"] <= 1.0 and held_out["stderr"] >= 0.0


def test_the_games_own_estimators(kernel, tmp_path):
    cfg = from_dict({"model": {"name": "tiny-random"}, "algorithm": {"steps": 1},
                     "curriculum": [{"game": "pasodoble_math"}]})
    trainer = Trainer(cfg, tmp_path / "run", kernel=kernel, quiet=True)
    assert 'advantage = {proposer = "rae", solver = "grpo"}' in to_toml(trainer.resolved_config())


def test_the_history_pool_survives_a_resume_exactly(tmp_path):
    import types

    from rolekit.hookspecs import hookimpl
    from rolekit.plugins import Kernel

    plugin = types.SimpleNamespace(rolekit_register_games=hookimpl(lambda registry: registry.add(EveryTextAProblem)))

    def kernel():
        return Kernel([plugin], load_entrypoints=False)

    def trainer(steps, out, **kw):
        return Trainer(config("pasodoble_every_text", steps=steps, evaluate=False, samples=4), out, kernel=kernel(),
                       quiet=True, **kw)

    straight = trainer(3, tmp_path / "a")
    straight.run()
    trainer(1, tmp_path / "b").run()
    resumed = trainer(3, tmp_path / "b", resume=tmp_path / "b")
    at_resume = resumed.curriculum.pools[0].get("history").added
    assert at_resume > 0
    resumed.run()
    a, b = (t.curriculum.pools[0].get("history") for t in (straight, resumed))
    assert a.added > 3 and len(a) == 3  # more problems than it keeps: the oldest left
    assert b.added > at_resume  # the resumed run played on with the restored history
    assert a.state_dict() == b.state_dict()
    steps = [json.loads(line)["step"] for line in open(tmp_path / "b" / "metrics.jsonl")]
    assert steps == [1, 2, 3]
