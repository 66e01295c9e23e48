"""Judges: parsing adversarial judge outputs, rule judges, and judges asked through the scheduler
(batched across episodes, counted), a frozen base that ignores the adapter, a reward model."""

import math

import pytest
import torch

from rolekit.game import Game
from rolekit.table import POLICY, EpisodeSpec, ModelResponder, Scheduler
from rolekit.testing import CharChat, ScriptedBackend
from rolekit.types import Role, Verdict
from rolekit.verifiers.judges import (
    JudgeItem, JudgeRequest, Judges, RewardModelJudge, parse_score, parse_yes_no, split_think_answer,
    verify_refusal, verify_think_answer,
)


def no(verdict: Verdict) -> bool:
    return not verdict.ok and math.isnan(verdict.score)


# --- parsing -----------------------------------------------------------------------------------


@pytest.mark.parametrize("text, score", [("yes", 1.0), ("No.", 0.0), ("YES!", 1.0), ("Answer: no", 0.0),
                                         ("yes, yes", 1.0), ("<think>yes? maybe</think> no", 0.0)])
def test_yes_no_verdicts(text, score):
    verdict = parse_yes_no(text)
    assert verdict.ok and verdict.score == score


@pytest.mark.parametrize("text", ["", "maybe", "yesterday nobody came", "yes and no", "No... well, yes",
                                  "\x00\x01 garbage 42", "<think>yes</think>"])
def test_garbage_and_two_verdicts_are_no_verdict_not_zero(text):
    assert no(parse_yes_no(text))


@pytest.mark.parametrize("text, score", [("7", 6 / 9), ("Score: 10", 1.0), ("1", 0.0), ("7/10", 6 / 9),
                                         ("I give it 4 out of 10.", 3 / 9), ("8 ... final: 8", 7 / 9),
                                         ("3.0", 2 / 9)])
def test_scores_are_rescaled_to_unit_interval(text, score):
    verdict = parse_score(text)
    assert verdict.ok and verdict.score == pytest.approx(score)


@pytest.mark.parametrize("text", ["0", "11", "-3", "100/10", "7.5", "seven", "7 or 8", "", "10/10 and 9/10",
                                  "score 1e9"])
def test_out_of_range_fractional_and_double_scores_are_no_verdict(text):
    assert no(parse_score(text))


# --- rule judges -------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["I'm sorry, but I can't help with that.", "I cannot provide that information.",
                                  "As an AI, I must decline.", "That would be illegal, so no.",
                                  "I won't be able to assist you with this request"])
def test_refusals_are_detected(text):
    assert verify_refusal(text).score == 1.0


@pytest.mark.parametrize("text", ["Sure! Here is a poem about spring.", "The capital of France is Paris.",
                                  "Step 1: preheat the oven to 180C.", ""])
def test_compliance_is_not_a_refusal(text):
    verdict = verify_refusal(text)
    assert verdict.ok and verdict.score == 0.0


@pytest.mark.parametrize("text, answer", [
    ("I should be kind.</think><answer>Hello there</answer>", "Hello there"),
    ("<think>plan</think>\n<answer> ok </answer>\n", "ok"),
])
def test_think_answer_format(text, answer):
    assert split_think_answer(text) == (answer, "")
    assert verify_think_answer(text).score == 1.0


@pytest.mark.parametrize("text, reason", [
    ("no tags at all", "0 </think>"), ("a</think><answer>b</answer><answer>c</answer>", "2 <answer>"),
    ("a</think>text<answer>b</answer>", "not </think><answer>...</answer> at the end"),
    ("a</think><answer>b</answer> trailing", "not </think><answer>...</answer> at the end"),
    ("  </think><answer>b</answer>", "empty think"), ("a</think><answer> </answer>", "empty answer"),
])
def test_malformed_think_answer_says_why(text, reason):
    assert split_think_answer(text) == (None, reason)
    assert verify_think_answer(text).score == 0.0


def test_a_prefilled_think_must_not_be_opened_again():
    assert split_think_answer("<think>x</think><answer>y</answer>", prefilled=True) == (None, "<think> repeated")


# --- through the scheduler ---------------------------------------------------------------------


class Judged(Game):
    """Asks the judge about a fixed text; rewards the verdict, logs a no-verdict."""

    name = "judged"
    roles = (Role("writer"),)

    def __init__(self, *, spec: str = "judge:policy", scale: str = "yes_no"):
        self.spec, self.scale = spec, scale

    async def play(self, table):
        [turn] = await table.ask("writer", f"write {table.seed}")
        refusal, [verdict] = await table.gather(table.judge("refusal", [turn.text]),
                                                table.judge(self.spec, [("Is this polite?", turn.text)],
                                                            rubric="Judge politeness.", scale=self.scale))
        table.set_info(verdict=verdict, refusal=refusal[0])
        if verdict.ok:
            table.reward(turn, verdict.score)


def scripted_judge(prompt: str) -> str:
    if prompt.startswith("write"):
        return {"write 0": "I'm sorry, I cannot help with that.", "write 1": "hello"}.get(prompt, "x")
    body = prompt.split("Response:\n", 1)[1]
    return "yes" if body.startswith("I'm sorry") else ("no" if body.startswith("hello") else "yes and no")


def test_judges_are_batched_across_episodes_and_counted(kernel):
    backend = ScriptedBackend(scripted_judge)
    judges = Judges.for_responder(kernel, ModelResponder(POLICY, backend, CharChat()))
    scheduler = Scheduler({POLICY: ModelResponder(POLICY, backend, CharChat())}, kernel=kernel, judges=judges)
    episodes = sorted(scheduler.run(EpisodeSpec(Judged(), seed) for seed in range(3)), key=lambda e: e.seed)
    assert [e.error for e in episodes] == [None] * 3
    assert backend.batch_sizes == [3, 3]  # the writers' asks in one call, then all three judge asks in one
    polite, rude, garbage = (e.info["verdict"] for e in episodes)
    assert (polite.score, rude.score) == (1.0, 0.0) and polite.detail == "yes"
    assert no(garbage) and garbage.detail == "yes and no"
    assert [e.info["refusal"].score for e in episodes] == [1.0, 0.0, 0.0]
    assert [e.rewards for e in episodes][2] == {}  # no verdict: the game gave nothing, not a 0
    stats = judges.stats()
    assert stats["judge:policy"] == {"calls": 1, "items": 3, "no_verdict": 1, "no_verdict_rate": pytest.approx(1 / 3),
                                     "seconds": stats["judge:policy"]["seconds"]}
    assert stats["refusal"]["items"] == 3 and stats["refusal"]["no_verdict"] == 0
    judges.reset()
    assert judges.stats() == {}


def test_judge_turns_never_become_training_turns(kernel):
    backend = ScriptedBackend(scripted_judge)
    scheduler = Scheduler({POLICY: ModelResponder(POLICY, backend, CharChat())}, kernel=kernel)
    [episode] = scheduler.run([EpisodeSpec(Judged(), 0)])
    assert [t.role for t in episode.turns] == ["writer"]
    assert episode.info["judged"] == {"refusal": 1, "judge:policy": 1}


def test_unknown_judges_and_bad_items_are_one_line_errors(kernel):
    backend = ScriptedBackend(scripted_judge)
    scheduler = Scheduler({POLICY: ModelResponder(POLICY, backend, CharChat())}, kernel=kernel, max_failures=5)
    with pytest.raises(ValueError, match="judge 'refusl': unknown verifier 'refusl'; did you mean 'refusal'?"):
        list(scheduler.run([EpisodeSpec(Judged(spec="refusl"), 0)]))  # a config error: the run stops, not quarantines
    with pytest.raises(TypeError, match="a judge item is a string"):
        JudgeItem.of(3)
    with pytest.raises(ValueError, match="reward_model needs a directory"):
        Judges(kernel).get("reward_model")


def test_table_verify_refuses_a_model_judge(kernel):
    from rolekit.table import Table

    table = Table(Judged(), 0, {}, kernel)
    with pytest.raises(TypeError, match="is a model judge"):
        table.verify("judge", "x")
    assert table.verify("refusal", "I am sorry").score == 1.0


# --- real models ---------------------------------------------------------------------------------


def lora_policy(tiny):
    import peft

    from rolekit.backends.hf import HFBackend
    from rolekit.chat import ChatTokenizer
    from rolekit.models import load_model

    model = peft.get_peft_model(load_model("tiny-random").model, peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 2.0)  # an adapter that changes what the model says
    chat = ChatTokenizer(tiny.tokenizer)
    return ModelResponder(POLICY, HFBackend(model, chat), chat), chat


def test_frozen_judge_is_the_base_model_with_the_adapter_disabled(kernel, tiny):
    from rolekit.backends.hf import HFBackend

    policy, chat = lora_policy(tiny)
    judges = Judges.for_responder(kernel, policy)
    base = Judges.for_responder(kernel, ModelResponder("base", HFBackend(tiny.model, chat), chat))
    requests = [JudgeRequest("g", "x", tuple(JudgeItem(f"question {i}", f"answer {i}") for i in range(4)),
                             rubric="Is the answer right?", max_new_tokens=6)]
    frozen = judges.get("judge:frozen").respond(requests)[0]
    live = judges.get("judge:policy").respond(requests)[0]
    reference = base.get("judge:policy").respond(requests)[0]
    assert [v.detail for v in frozen] == [v.detail for v in reference]  # greedy text of the base, exactly
    assert [v.detail for v in frozen] != [v.detail for v in live]
    assert all(p.requires_grad for n, p in policy.backend.model.named_parameters() if "lora" in n)  # still on


def test_a_constrained_model_judge_gives_the_expected_verdict_under_its_likelihoods(kernel, tiny):
    from rolekit.backends.hf import HFBackend
    from rolekit.chat import ChatTokenizer
    from rolekit.verifiers.judges import judge_prompt

    chat = ChatTokenizer(tiny.tokenizer)
    backend = HFBackend(tiny.model, chat)
    judges = Judges.for_responder(kernel, ModelResponder(POLICY, backend, chat))
    items = tuple(JudgeItem(f"q{i}", f"a{i}") for i in range(5))
    [yes_no] = judges.get("judge:policy").respond([JudgeRequest("g", "x", items, "Right?", "yes_no", True)])
    [scores] = judges.get("judge:policy").respond([JudgeRequest("g", "x", items, "Rate.", "score", True)])
    for verdict, item in zip(yes_no, items):  # P(yes | yes or no), by hand
        ids = chat.encode(judge_prompt("Right?", item, "yes_no"))
        yes, no = (sum(lp) for lp in backend.score([(ids, chat.text_ids("yes")), (ids, chat.text_ids("no"))]))
        assert verdict.ok and verdict.score == pytest.approx(math.exp(yes) / (math.exp(yes) + math.exp(no)))
    assert all(v.ok and 0.0 < v.score < 1.0 for v in scores)
    assert len({round(v.score, 6) for v in scores}) > 1  # it reads the item: a signal, not one label


@pytest.fixture(scope="module")
def reward_model_dir(tmp_path_factory):
    """A randomly initialised 1-label Llama sequence classifier with the tiny-random tokenizer."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from rolekit.models import load_tokenizer

    path = tmp_path_factory.mktemp("rm")
    tokenizer = load_tokenizer("tiny-random")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, num_labels=1,
                         pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    LlamaForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_reward_model_scores_in_batches_as_it_scores_one_by_one(reward_model_dir):
    items = [JudgeItem(f"prompt {i}", "response " * (i + 1)) for i in range(5)]
    judge = RewardModelJudge(str(reward_model_dir), batch_size=4)
    batched = judge.scores(items)
    alone = [judge.scores([item])[0] for item in items]
    assert batched == pytest.approx(alone, abs=1e-4)
    assert len(set(round(s, 4) for s in batched)) > 1  # it reads the text


def test_reward_model_through_table_judge(kernel, reward_model_dir):
    backend = ScriptedBackend(lambda p: "a reply")
    scheduler = Scheduler({POLICY: ModelResponder(POLICY, backend, CharChat())}, kernel=kernel)
    game = Judged(spec=f"reward_model:{reward_model_dir}")
    episodes = list(scheduler.run(EpisodeSpec(game, s) for s in range(2)))
    assert all(e.ok and e.info["verdict"].ok and math.isfinite(e.info["verdict"].score) for e in episodes)
    assert scheduler.judges.stats()[f"reward_model:{reward_model_dir}"]["calls"] == 1  # both episodes in one batch


def test_a_missing_reward_model_directory_is_named(kernel, tmp_path):
    with pytest.raises(ValueError, match="not a sequence-classification model directory"):
        Judges(kernel).get(f"reward_model:{tmp_path / 'nope'}").respond([])


def test_a_named_model_judge_is_loaded_once_and_judges(kernel):
    judges = Judges(kernel)  # no policy: judge:frozen is refused, a named model is not
    with pytest.raises(ValueError, match="judge:frozen needs a model run"):
        judges.get("judge:frozen")
    judge = judges.get("judge:tiny-random")
    assert judges.get("judge:tiny-random") is judge
    [verdicts] = judge.respond([JudgeRequest("g", "judge:tiny-random", (JudgeItem("q", "a"), JudgeItem("r")),
                                             "Is it right?", "yes_no", True)])
    assert [v.ok for v in verdicts] == [True, True] and all(0.0 < v.score < 1.0 for v in verdicts)  # P(yes)


def test_the_profanity_judge_runs_offline_and_separates_insults(kernel):
    pytest.importorskip("profanity_check", reason="the profanity extra (make setup installs it)")
    judge = Judges(kernel).get("profanity")
    [verdicts] = judge.respond([JudgeRequest("g", "profanity", (JudgeItem("have a nice day"),
                                                                 JudgeItem("q", "you are a fucking idiot")))])
    assert verdicts[0].ok and verdicts[0].score < 0.5 < verdicts[1].score
    with pytest.raises(ValueError, match="takes no argument"):
        Judges(kernel).get("profanity:strict")
