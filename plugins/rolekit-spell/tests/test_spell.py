"""spell: episodes through the real scheduler with hand-computed rewards, filters and drops,
the history memory (and across a resume), garbage in every seat, the held-out evaluation,
the paper's prompts, and training on tiny-random through the real engine."""

import itertools
import json
import random
import string

import pytest

from rolekit.config import from_dict, to_toml
from rolekit.engine import Trainer
from rolekit.evaluate import Evaluator, Policy
from rolekit.plugins import Kernel
from rolekit.pools import Pools
from rolekit.table import POLICY, EpisodeSpec, ModelResponder, Scheduler
from rolekit.testing import CharChat, ScriptedBackend, tiny_config
from rolekit_spell import prompts
from rolekit_spell.documents import held_out
from rolekit_spell.spell import Spell

BIG = {"questioner_tokens": 400, "responder_tokens": 60, "verifier_tokens": 30}  # scripted replies are chars


def run(game, reply, seeds=(0,), pools=None):
    """Episodes of ``game`` answered by ``reply(prompt_text)`` (a character-level scripted model)."""
    policy = ModelResponder(POLICY, ScriptedBackend(reply), CharChat())
    scheduler = Scheduler({POLICY: policy}, kernel=Kernel(load_entrypoints=False))
    done = list(scheduler.run([EpisodeSpec(game, seed, {}, pools=pools if pools is not None else Pools())
                               for seed in seeds]))
    assert all(e.ok for e in done), [e.error for e in done]
    return sorted(done, key=lambda e: e.seed)


def seat(prompt: str) -> str:
    """Which seat a terse prompt asks (the game writes each reply's start)."""
    if prompt.split("<assistant>")[-1].startswith(prompts.QUESTION_LEAD):
        return "questioner"
    if prompt.endswith("<assistant>" + prompts.VOTE_LEAD):
        return "verifier"
    if prompt.endswith("<assistant>" + prompts.ANSWER_LEAD):
        return "grounding" if prompt.startswith("Empty\n") else "responder"
    raise AssertionError(prompt)


def scripted(question=' boats did Zeno buy?", "answer": "12"}', grounding="7", answers=("12",),
             votes=None):
    """A terse player: the questioner's reply, the grounding answer, the responders' answers in
    turn, and per judged answer (what follows "Answer 1: ") its verifiers' votes in turn."""
    answers = itertools.cycle(answers)
    votes = {k: itertools.cycle(v) for k, v in (votes or {}).items()}

    def reply(prompt):
        kind = seat(prompt)
        if kind == "questioner":
            return question
        if kind == "grounding":
            return grounding + "\n"
        if kind == "responder":
            return next(answers) + "\n"
        judged = prompt.split("Answer 1: ")[1].split("\n")[0]
        return next(votes[judged]) if judged in votes else "YES]]"

    return reply


def roles(episode, role):
    return [t for t in episode.turns if t.role == role]


def test_an_episode_rewards_all_three_roles_by_hand():
    game = Spell(tasks=["math"], responders=4, verifiers=4, verifier_share=2.0, **BIG)
    reply = scripted(answers=("12", "12.5", "9", ""),
                     votes={"12": ["YES]]", "YES]]", "YES]]", "NO]]"],      # 3:1 YES, = rule (1): kept
                            "12.5": ["NO]]", "NO]]", "NO]]", "YES]]"],     # 3:1 NO, = rule (0): kept
                            "9": ["YES]]", "YES]]", "YES]]", "maybe]]"]})  # all parsable agree: 1 > 0.99
    [e] = run(game, reply)
    [q] = roles(e, "questioner")
    grounding, *answers = roles(e, "responder")
    votes = roles(e, "verifier")
    assert q.text.startswith('{"question": "') and e.info["question"].endswith("boats did Zeno buy?")
    assert e.info["gold"] == "12" and e.info["task"] == "math"
    assert e.dropped[grounding.id] == "grounding check" and e.info["grounding_answer"] == "7"
    # rule: 1, 0 (12.5 is 4 % off), 0, none; the verifiers' YES majority lifts "9" to 1
    assert e.info["rule"] == [1.0, 0.0, 0.0, 0.0] and e.info["answers"] == ["12", "12.5", "9", None]
    assert [e.rewards[a.id] for a in answers] == [1.0, 0.0, 1.0, 0.0]
    assert e.invalid[answers[3].id] == "no answer after 'answer is'"
    assert e.rewards[q.id] == pytest.approx(1.0)  # s = 0.5: the Gaussian's peak
    assert e.keys[q.id] == "math"
    assert len(votes) == 12 and all(v.parent in {a.id for a in answers[:3]} for v in votes)
    by_answer = {a.id: [v for v in votes if v.parent == a.id] for a in answers[:3]}
    assert [e.rewards[v.id] for v in by_answer[answers[0].id]] == [1.0, 1.0, 1.0, 0.0]
    assert [e.rewards[v.id] for v in by_answer[answers[1].id]] == [1.0, 1.0, 1.0, 0.0]
    assert [e.rewards[v.id] for v in by_answer[answers[2].id]] == [1.0, 1.0, 1.0, -1.0]
    assert e.invalid[by_answer[answers[2].id][3].id] == "no [[YES]] or [[NO]]"
    # 2.0 x 4 trained answers / 4 votes = 2 groups to keep: both qualifying ones
    assert {e.dropped.get(v.id) for v in by_answer[answers[0].id] + by_answer[answers[1].id]} == {None}
    assert {e.dropped[v.id] for v in by_answer[answers[2].id]} == {"verifier agreement outside [0.51, 0.99]"}
    assert not any(a.id in e.dropped for a in answers)
    assert e.info["votes"] == ["YES YES YES NO", "NO NO NO YES", "YES YES YES ?", "-"]


def test_the_verifier_share_subsamples_qualifying_groups():
    votes = {str(n): ["YES]]", "YES]]", "YES]]", "NO]]"] for n in range(8)}
    reply = scripted(answers=("0", "1", "2", "3", "4", "5", "6", "7"), votes=votes,
                     question=' boats did Zeno buy?", "answer": "3"}')
    kept = []
    for seed in range(40):  # SPELL's default share: 0.125 x 8 / 4 = 0.25 groups per episode
        [e] = run(Spell(tasks=["math"], responders=8, verifiers=4, **BIG), reply, seeds=(seed,))
        # every answer gets a YES majority (reward 1): all alike, so nothing trains at all
        assert set(e.dropped.values()) <= {"all answers scored alike", "grounding check",
                                           "verifier majority differs from the rule check",
                                           "not sampled (verifier_share)"}
        assert all(t.id in e.dropped for t in roles(e, "verifier"))
        kept.append(sum(t.id not in e.dropped for t in roles(e, "verifier")))
    assert kept == [0] * 40
    game = Spell(tasks=["math"], responders=8, verifiers=4, verifier_share=0.5, **BIG)
    mixed = scripted(answers=("3", "3", "3", "3", "1", "1", "1", "1"),
                     votes={"3": ["YES]]", "YES]]", "YES]]", "NO]]"], "1": ["NO]]", "NO]]", "NO]]", "YES]]"]},
                     question=' boats did Zeno buy?", "answer": "3"}')
    for seed in range(5):  # 0.5 x 8 / 4 = 1 group of the 8 qualifying ones
        [e] = run(game, mixed, seeds=(seed,))
        trained = [t for t in roles(e, "verifier") if t.id not in e.dropped]
        assert len(trained) == 4 and len({t.parent for t in trained}) == 1
        assert list(e.dropped.values()).count("not sampled (verifier_share)") == 28


def test_malformed_records_are_bad_cases_and_unusable_values_are_dropped():
    game = Spell(tasks=["math"], **BIG)
    [e] = run(game, scripted(question="oops no json"))
    [q] = roles(e, "questioner")
    assert e.invalid == {q.id: "no JSON object"} and e.rewards == {q.id: -1.0} and not e.dropped
    assert len(e.turns) == 1  # no responder asked
    [e] = run(game, scripted(question=' boats?", "answer": "0"}'))
    [q] = roles(e, "questioner")
    assert e.dropped == {q.id: "the answer is not a non-zero number"} and len(e.turns) == 1
    [e] = run(Spell(tasks=["qa"], **BIG), scripted(question=' is it?", "answer": ""}'))
    assert list(e.invalid.values()) == ["no \"answer\" string"]


def test_with_answer_in_text_an_answer_the_questioner_was_not_shown_is_a_bad_case():
    game = Spell(tasks=["math"], responders=2, verifiers=0, documents=1, answer_in_text=True, **BIG)
    [e] = run(game, scripted(question=' boats?", "answer": "987654"}'))  # no such number in the text
    [q] = roles(e, "questioner")
    assert e.invalid == {q.id: "answer not in the text"} and e.rewards == {q.id: -1.0}
    assert len(e.turns) == 1 and e.logs["questioner/answer_in_text"] == 0.0
    shown = q.prompt.split("Text:\n")[1]  # the paragraphs the questioner saw (CharChat shows prompts whole)
    number = next(w for w in shown.replace(",", "").split() if w.isdigit() and w != "0")
    [e] = run(game, scripted(question=f' boats?", "answer": "{number}"}}', grounding="no"))
    assert "answer not in the text" not in e.invalid.values() and len(roles(e, "responder")) == 3
    assert e.logs["questioner/answer_in_text"] == 1.0


def test_a_fact_lead_starts_the_question_from_a_fact_of_the_paragraphs_shown():
    for task, kind in (("qa", "text"), ("math", "number")):
        game = Spell(tasks=[task], responders=2, verifiers=0, documents=4, lead="fact", **BIG)
        for e in run(game, scripted(question=' x?", "answer": "1"}'), seeds=range(6)):
            [q] = roles(e, "questioner")
            started = q.text[len(prompts.QUESTION_LEAD):].split(' x?"')[0]  # the game's start, then the reply
            document = next(d for d in game.documents if d.id == e.info["document"])
            from_facts = [f for f in document.facts if prompts.fact_lead(f.question) == started]
            assert from_facts and all(f.kind == kind for f in from_facts), started
            shown = [f.paragraph for f in from_facts if f.paragraph in e.info["evidence"]]
            assert shown and document.paragraphs[shown[0]] in q.prompt.split("Text:\n")[1]
            assert e.info["question"] == f"{started} x?"
    assert prompts.fact_lead("How many units did Kask Mills sell in 2012?") == "How many units did Kask Mills"
    assert prompts.fact_lead("Where was Mara Lind born?") == "Where was Mara"
    assert prompts.fact_lead("Why?") == "Why?"


def test_a_question_answerable_without_the_document_earns_minus_half():
    [e] = run(Spell(tasks=["math"], **BIG), scripted(grounding="12"))
    [q] = roles(e, "questioner")
    [g] = roles(e, "responder")
    assert e.invalid == {q.id: "answerable without the document"} and e.rewards[q.id] == -0.5
    assert e.dropped == {g.id: "grounding check"} and g.prompt.startswith("Empty")
    [e] = run(Spell(tasks=["math"], grounding=False, responders=2, **BIG), scripted(grounding="12"))
    assert len(roles(e, "responder")) == 2  # no check: straight to the responders


def test_answers_that_all_score_alike_are_dropped_and_the_questioner_earns_zero():
    game = Spell(tasks=["math"], responders=4, verifiers=2, **BIG)
    [e] = run(game, scripted(answers=("12",)))
    [q] = roles(e, "questioner")
    answers = roles(e, "responder")[1:]
    assert e.rewards[q.id] == 0.0  # s = 1: too easy
    assert {e.dropped[a.id] for a in answers} == {"all answers scored alike"}
    assert all(t.id in e.dropped for t in roles(e, "verifier"))
    [e] = run(game, scripted(answers=("3",), votes={"3": ["NO]]"]}))
    assert e.rewards[roles(e, "questioner")[0].id] == 0.0  # s = 0: unsolved


def test_the_history_memory_feeds_solved_questions_back_and_keeps_three():
    game = Spell(tasks=["math"], responders=2, verifiers=0, documents=1, **BIG)
    pools = Pools()
    solved = scripted(answers=("12", "5"))  # s = 0.5
    [first] = run(game, solved, pools=pools)
    memory = pools.get("history").data
    key = f"math/{first.info['document']}"
    assert memory == {key: [{"evidence": first.info["evidence"], "question": first.info["question"],
                             "answer": "12"}]}
    [second] = run(game, solved, seeds=(1,), pools=pools)
    prompt = roles(second, "questioner")[0].prompt
    assert second.info["history"] == 1
    assert "Questions already asked about the text:" in prompt and f"{first.info['question']} Answer: 12" in prompt
    assert set(first.info["evidence"]) <= set(second.info["evidence"])  # the remembered paragraphs stay shown
    run(game, solved, seeds=range(2, 6), pools=pools)
    assert len(memory[key]) == 3 and pools.get("history").data[key][-1]["answer"] == "12"
    [unsolved] = run(game, scripted(answers=("5",)), seeds=(9,), pools=pools)  # s = 0: not remembered
    assert unsolved.info["solve_rate"] == 0.0 and len(memory[key]) == 3


GARBAGE = string.ascii_letters + string.digits + ' {}[]":,.?\\\n' + "éß→"
WORDS = ('{"question": "', '", "answer": "', '"}', "[[YES]]", "[[NO]]", "YES", "NO", "The answer is ", "\\boxed{",
         "}", "```json", "</think>", "options", '{"A": "')


@pytest.mark.parametrize("style", ["terse", "paper"])
def test_garbage_in_every_seat_never_crashes_and_every_drop_has_a_reason(style):
    rng = random.Random(style)

    def reply(prompt):
        parts = [rng.choice(WORDS) if rng.random() < 0.4 else "".join(rng.choices(GARBAGE, k=rng.randint(0, 12)))
                 for _ in range(rng.randint(0, 8))]
        return "".join(parts)

    game = Spell(prompts=style, tasks=["qa", "math", "mc"], responders=3, verifiers=2, verifier_share=1.0, **BIG)
    pools = Pools()
    episodes = run(game, reply, seeds=range(60), pools=pools)
    reasons = [r for e in episodes for r in (*e.dropped.values(), *e.invalid.values())]
    assert reasons and all(isinstance(r, str) and r.strip() for r in reasons)
    for e in episodes:
        assert all(isinstance(e.rewards[t.id], float) or t.id in e.dropped for t in e.turns)
        assert all(-1.0 <= x <= 1.0 for x in e.rewards.values())
    assert {e.info["task"] for e in episodes} == {"qa", "math", "mc"}


def test_mc_questions_fix_the_drawn_letter_and_render_the_options():
    rec = ' is Zeno?", "options": {"A": "a", "B": "b", "C": "c", "D": "d"}, "answer": "%s"}'
    letters = {}
    for seed in range(12):
        game = Spell(tasks=["mc"], responders=2, verifiers=0, grounding=False, **BIG)
        prompt, _ = prompts.questioner("terse", "mc", "Text", [], "B", "Who")
        assert "The right answer must be B." in prompt
        [e] = run(game, lambda p: (rec % "B") if seat(p) == "questioner" else "(B)\n" if "(B) b" in p else "x\n",
                  seeds=(seed,))
        letters[seed] = e.info["gold"]
        responder = roles(e, "responder")[0]
        assert "Choices:\n(A) a\n(B) b\n(C) c\n(D) d" in responder.prompt
        assert e.info["rule"] == [1.0, 1.0]
    assert set(letters.values()) == {"B"}


def test_the_paper_prompts_are_spells_templates_filled():
    for name in ("questioner_qa", "questioner_math", "questioner_mc"):
        assert "{context}" in prompts.paper(name) and "{examples}" in prompts.paper(f"{name}_history")
    history = [{"question": "Q1?", "answer": "A1"}]
    text, lead = prompts.questioner("paper", "mc", "THE CONTEXT", history, "C", "Who")
    assert lead == "" and "THE CONTEXT" in text and "### Example 1:\nQuestion: Q1?\nAnswer: A1" in text
    assert "{context}" not in text and "{examples}" not in text and "<correct_answer>" not in text
    text, _ = prompts.responder("paper", "math", "DOC", "How many?", None)
    assert "DOC" in text and "How many?" in text and "{content}" not in text and "{question}" not in text
    text, _ = prompts.verifier("paper", "How many?", "12", "twelve")
    assert "How many?" in text and "12" in text and "twelve" in text and "{answer_1}" not in text


def test_options_are_checked_by_name(tmp_path):
    for kwargs, message in (({"prompts": "long"}, "option prompts='long'; valid: terse, paper"),
                            ({"tasks": ["essay"]}, "option tasks=\\['essay'\\]; valid task types: qa, math, mc"),
                            ({"responders": 0}, "option responders=0; it must be >= 1"),
                            ({"mapping": "flat"}, "option mapping='flat'"),
                            ({"paragraphs": 99}, "option paragraphs=99"),
                            ({"lead": "noun"}, "option lead='noun'; valid: word, fact"),
                            ({"lead": "fact", "prompts": "paper"}, "option lead='fact'; a fact lead needs terse"),
                            ({"corpus": str(tmp_path / "none")}, "option corpus=")):
        with pytest.raises(ValueError, match=f"game 'spell': {message}"):
            Spell(**kwargs)
    assert Spell().tasks == ("qa", "math") and Spell(prompts="paper").tasks == ("qa", "math", "mc")


def test_a_users_corpus_is_played(tmp_path):
    (tmp_path / "a.txt").write_text("Harbour notes\n\nThe ferry Orla leaves at 9.\n\nIt carries 40 cars.")
    game = Spell(corpus=str(tmp_path), tasks=["math"], responders=2, verifiers=0, grounding=False, **BIG)
    [e] = run(game, scripted(question=' cars does the ferry carry?", "answer": "40"}', answers=("40", "4")))
    prompt = roles(e, "questioner")[0].prompt
    assert e.info["document"] == "a.txt" and "The ferry Orla leaves at 9." in prompt
    assert e.info["solve_rate"] == 0.5


# --- the held-out evaluation ---------------------------------------------------------------------------


def test_evaluate_is_greedy_responder_accuracy_with_a_standard_error(kernel):
    game = Spell(held_out=8, responder_tokens=60)
    items = held_out(8, game.paragraphs)
    right = {fact.question: fact.answer for _, fact in items[:5]}

    def reply(prompt):
        q = prompt.split("\n\nQuestion: ")[-1].split("\n")[0]
        return f"{right[q]}\n" if q in right else "nothing\n"

    ev = Evaluator(kernel, game, Policy("scripted-model", ModelResponder(POLICY, ScriptedBackend(reply), CharChat())))
    out = game.evaluate(ev)["held_out"]
    assert out["tasks"] == 8 and out["accuracy"] == pytest.approx(5 / 8)
    assert out["stderr"] == pytest.approx((5 / 8 * 3 / 8 / 8) ** 0.5)


# --- the real engine on tiny-random ----------------------------------------------------------------------


def config(game="spell", steps=3, evaluate=True, samples=12, **options):
    return tiny_config({"game": game, "advantage": {"questioner": "rae"},
                        "options": {"held_out": 4, "responders": 2, "verifiers": 2, "documents": 4,
                                    "paragraphs": 2, "questioner_tokens": 8, "responder_tokens": 4,
                                    "verifier_tokens": 3, **options}},
                       steps=steps, evaluate=evaluate, samples=samples)


def test_trains_on_tiny_random_through_the_real_engine(kernel, tmp_path):
    history = Trainer(config(), tmp_path / "run", kernel=kernel, quiet=True).run()
    assert [m["step"] for m in history] == [1, 2, 3]
    questioner = history[0]["roles"]["spell/questioner"]
    assert questioner["estimator"].startswith("rae") and questioner["invalid_turns"] > 0
    lines = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert [m["step"] for m in lines] == [0, 1, 2, 3]
    for m in (lines[0], lines[-1]):
        out = m["eval"]["spell"]["held_out"]
        assert out["tasks"] == 4 and 0.0 <= out["accuracy"] <= 1.0
    logged = lines[1]["games"]["spell"]
    assert logged["questioner/valid_format"] == 0.0 and logged["questioner/valid_format/n"] == 12


def test_the_games_own_estimators(kernel, tmp_path):
    cfg = from_dict({"model": {"name": "tiny-random"}, "algorithm": {"steps": 1}, "curriculum": [{"game": "spell"}]})
    resolved = to_toml(Trainer(cfg, tmp_path / "run", kernel=kernel, quiet=True).resolved_config())
    assert 'advantage = {questioner = "role_norm", responder = "grpo", verifier = "grpo"}' in resolved


class EveryReplyAQuestion(Spell):
    """Every questioner reply reads as a qa question (its own text) whose answer is "b",
    which about half of a random model's answers contain: the history memory fills on
    tiny-random, with questions that differ."""

    name = "spell_every_reply"

    def record(self, text):
        return {"question": text[-16:], "answer": "b"}


def test_the_history_memory_survives_a_resume_exactly(tmp_path):
    import types

    from rolekit.hookspecs import hookimpl

    plugin = types.SimpleNamespace(rolekit_register_games=hookimpl(lambda registry: registry.add(EveryReplyAQuestion)))

    def trainer(steps, out, **kw):
        cfg = config("spell_every_reply", steps=steps, evaluate=False, samples=6, tasks=["qa"], grounding=False,
                     responder_tokens=12, history_size=2)
        return Trainer(cfg, out, kernel=Kernel([plugin], load_entrypoints=False), quiet=True, **kw)

    straight = trainer(3, tmp_path / "a")
    straight.run()
    trainer(1, tmp_path / "b").run()
    resumed = trainer(3, tmp_path / "b", resume=tmp_path / "b")
    at_resume = resumed.curriculum.pools[0].get("history").state_dict()
    assert at_resume["data"], "the memory should hold solved questions after one step"
    resumed.run()
    a, b = (t.curriculum.pools[0].get("history") for t in (straight, resumed))
    assert a.data and all(len(v) <= 2 for v in a.data.values())
    assert a.state_dict() == b.state_dict() and b.state_dict() != at_resume
