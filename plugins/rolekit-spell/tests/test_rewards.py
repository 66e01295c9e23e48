"""SPELL's parsing, rule checks and rewards against hand-computed cases."""

import math

import pytest

from rolekit_spell.rewards import (agreement, check_record, extract_answer, groups_to_keep, in_text, majority,
                                   mc_letter,
                                   parse_record, parse_vote, questioner_reward, responder_reward, rule_score,
                                   same_number, sub_em, to_number, verifier_filter, vote_rewards)

# --- the questioner ------------------------------------------------------------------------------------


def test_questioner_gaussian_by_hand():
    assert questioner_reward(0.5) == pytest.approx(1.0)  # the peak
    # exp(-(0.25)^2 / (2 (1/6)^2)) = exp(-0.0625 * 18) = exp(-1.125)
    assert questioner_reward(0.25) == pytest.approx(math.exp(-1.125)) == pytest.approx(0.32465, abs=1e-5)
    assert questioner_reward(0.75) == pytest.approx(questioner_reward(0.25))  # symmetric
    assert questioner_reward(0.125) == pytest.approx(math.exp(-(0.375**2) * 18))
    assert questioner_reward(0.0) == 0.0  # nobody solved it
    assert questioner_reward(1.0) == 0.0  # everybody did: too easy
    assert questioner_reward(-0.5) == -0.5  # s <= 0 passes through (core_algos)


def test_questioner_ablation_mappings():
    assert questioner_reward(0.25, "reverse") == pytest.approx(0.75)
    assert questioner_reward(0.25, "rzero") == pytest.approx(0.5)
    assert questioner_reward(0.5, "rzero") == pytest.approx(1.0)
    assert questioner_reward(1.0, "reverse") == 0.0
    with pytest.raises(ValueError, match="unknown questioner mapping 'flat'"):
        questioner_reward(0.5, "flat")


def test_records_parse_as_spell_reads_them():
    assert parse_record('<think>hmm {"x": 1}</think>\n```json\n{"question": "Q?", "answer": "A"}\n```') == {
        "question": "Q?", "answer": "A"}
    # the last json block that parses wins; a broken later block is skipped
    assert parse_record('```json\n{"question": "1"}\n```\n```json\n{"question": \n```') == {"question": "1"}
    assert parse_record('{"question": "Q?", "answer": "A"}') == {"question": "Q?", "answer": "A"}
    assert parse_record('{"question": "Q\x01?", "answer": "A"}') == {"question": "Q?", "answer": "A"}
    assert parse_record("[1, 2]") is None and parse_record("no json here") is None
    assert parse_record("[" * 100000) is None  # deeply nested: no RecursionError escapes


@pytest.mark.parametrize("task, record, expected", [
    ("qa", {"question": " Where? ", "answer": " Corvale "}, ("ok", "Where?", None, "Corvale")),
    ("qa", None, ("format", "", None, "no JSON object")),
    ("qa", {"answer": "x"}, ("format", "", None, "no \"question\" string")),
    ("qa", {"question": "Q", "answer": 3}, ("format", "", None, "no \"answer\" string")),
    ("qa", {"question": "Q", "answer": " ".join(["w"] * 41)},
     ("value", "", None, "the answer is longer than 40 tokens")),
    ("math", {"question": "How many?", "answer": 12}, ("ok", "How many?", None, "12")),
    ("math", {"question": "How many?", "answer": "$1,200"}, ("ok", "How many?", None, "$1,200")),
    ("math", {"question": "How many?", "answer": "0"}, ("value", "", None, "the answer is not a non-zero number")),
    ("math", {"question": "How many?", "answer": "a few"},
     ("value", "", None, "the answer is not a non-zero number")),
    ("math", {"question": "How many?", "answer": True}, ("format", "", None, "no \"answer\" value")),
    ("math", {"question": "How many?", "answer": [1]}, ("format", "", None, "no \"answer\" value")),
    ("mc", {"question": "Who?", "options": {"A": "x", "B": "y", "C": "z", "D": "w"}, "answer": "(C)"},
     ("ok", "Who?", {"A": "x", "B": "y", "C": "z", "D": "w"}, "C")),
    ("mc", {"question": "Who?", "options": {"A": "x", "B": "y", "C": "z"}, "answer": "C"},
     ("format", "", None, "no options A-D")),
    ("mc", {"question": "Who?", "options": {"A": "x", "B": "y", "C": "z", "D": "w"}, "answer": "E"},
     ("format", "", None, "the answer is not one of A-D")),
])
def test_check_record(task, record, expected):
    assert check_record(task, record) == expected


# --- the responder ----------------------------------------------------------------------------------


def test_answers_are_extracted_after_answer_is_or_from_the_last_box():
    assert extract_answer("The answer is Corvale.") == "Corvale"
    assert extract_answer("So the answer is **12**.\nMore text") == "12"
    assert extract_answer("the answer is 3. Actually the answer is 4") == "4"
    assert extract_answer("I think \\boxed{7} then \\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert extract_answer("<think>the answer is 1</think>The answer is 2") == "2"
    assert extract_answer("The answer is (insert answer here)") is None
    assert extract_answer("The answer is ") is None
    assert extract_answer("no answer at all") is None


def test_text_answers_match_by_normalised_substring():
    assert sub_em("It was in the town of Corvale!", "corvale") == 1.0
    assert sub_em("The Lind Mills", "Lind Mills") == 1.0
    assert sub_em("Lind", "Lind Mills") == 0.0  # the gold must be inside the prediction
    assert sub_em("", "x") == 0.0 and sub_em("the", "a") == 0.0  # articles only: empty after normalising
    assert rule_score("qa", "by train", "by train") == 1.0 and rule_score("qa", None, "x") == 0.0


def test_numbers_match_within_0_15_percent():
    assert to_number("$1,200") == 1200.0 and to_number("about 3.5 million") == 3.5
    assert to_number("x = 4") == 4.0 and to_number("3 or 4") is None and to_number("none") is None
    assert same_number(1001.5, 1000) and not same_number(1001.6, 1000)  # 0.15 % of 1000 is 1.5
    assert same_number(998.5, 1000) and not same_number(998.4, 1000)
    assert same_number(0.25, 25)  # a percentage given as a fraction
    assert same_number(1.2, 1200)  # thousands given as units
    assert rule_score("math", "12.0", "12") == 1.0 and rule_score("math", "13", "12") == 0.0
    assert rule_score("math", "1,234 units", "1234") == 1.0
    assert rule_score("math", "twelve", "12") == 0.0


def test_mc_letters():
    assert mc_letter("\\boxed{B}") == "B" and mc_letter("The answer is (C)") == "C"
    assert mc_letter("the answer is D.") == "D" and mc_letter("(A)") == "A"
    assert mc_letter("the answer is a dog") is None and mc_letter("E") is None
    assert rule_score("mc", "The answer is (C)", "C") == 1.0 and rule_score("mc", "B", "C") == 0.0


# --- the verifier -------------------------------------------------------------------------------------


def test_votes_parse():
    assert parse_vote("[[YES]]") == 1.0 and parse_vote("YES]]") == 1.0
    assert parse_vote("Decision: [[NO]]") == 0.0 and parse_vote("NO") == 0.0
    assert parse_vote("[[YES]] or [[NO]]") == -1.0 and parse_vote("maybe") == -1.0 and parse_vote("") == -1.0
    assert parse_vote("<think>YES</think>[[NO]]") == 0.0


def test_majority_and_vote_rewards():
    assert majority([1.0, 0.0, 1.0]) == 1.0
    assert majority([0.0, 1.0]) == 0.0  # a tie goes to the vote seen first
    assert vote_rewards([1.0, 1.0, 0.0, -1.0]) == [1.0, 1.0, 0.0, -1.0]
    assert vote_rewards([-1.0, -1.0, 1.0]) == [-1.0, -1.0, -1.0]  # unparsable majority: every vote -1
    assert agreement([1.0, 1.0, 1.0, 0.0]) == 0.75 and agreement([0.0, 0.0, 1.0]) == pytest.approx(2 / 3)
    assert agreement([1.0, 1.0, -1.0]) == 1.0  # over the parsable votes
    assert agreement([-1.0, -1.0, 1.0]) is None


def test_responder_reward_is_the_max_of_rule_and_majority():
    assert responder_reward(0.0, [1.0, 1.0, 0.0]) == 1.0  # the verifiers rescue a paraphrase
    assert responder_reward(1.0, [0.0, 0.0, 0.0]) == 1.0  # never below the rule
    assert responder_reward(0.0, [0.0, 1.0, 0.0]) == 0.0
    assert responder_reward(0.0, [-1.0, -1.0, 1.0]) == 0.0  # unparsable majority: the rule alone
    assert responder_reward(1.0, None) == 1.0 and responder_reward(0.0, []) == 0.0


def test_verifier_filter_window_and_rule_consistency():
    assert verifier_filter([1.0, 1.0, 1.0, 0.0], rule=1.0) == ""  # 0.75, majority YES = rule
    assert verifier_filter([1.0, 1.0, 1.0, 1.0], rule=1.0) == "verifier agreement outside [0.51, 0.99]"
    assert verifier_filter([1.0, 0.0], rule=1.0) == "verifier agreement outside [0.51, 0.99]"  # 0.5
    assert verifier_filter([0.0, 0.0, 0.0, 1.0], rule=1.0) == "verifier majority differs from the rule check"
    assert verifier_filter([0.0, 0.0, 0.0, 1.0], rule=0.0) == ""
    assert verifier_filter([-1.0, -1.0, 0.0], rule=0.0) == "verifier majority unparsable"
    assert verifier_filter([1.0, 1.0, 1.0, 0.0], rule=1.0, low=0.8) == "verifier agreement outside [0.8, 0.99]"


def test_verifier_groups_kept_per_episode():
    # SPELL: 0.125 x |responder batch| / J groups; per episode 0.125 x 8 / 4 = 0.25 expected
    assert groups_to_keep(0.125, 8, 4, draw=0.1) == 1
    assert groups_to_keep(0.125, 8, 4, draw=0.3) == 0
    assert groups_to_keep(1.0, 8, 4, draw=0.99) == 2 and groups_to_keep(1.0, 6, 4, draw=0.4) == 2  # 1.5
    assert groups_to_keep(1.0, 6, 4, draw=0.6) == 1
    assert groups_to_keep(0.125, 0, 4, draw=0.0) == 0  # no responder trained: no verifier either


def test_an_answer_in_the_text_is_found_by_the_rule_checks_normalisation():
    text = "Noor Kask was born in Valmere in 1961.\n| 2018 | 5,335 | 621 |"
    assert in_text("qa", "Valmere", text) and in_text("qa", "the valmere.", text)
    assert not in_text("qa", "Selford", text) and not in_text("qa", "...", text)
    assert in_text("math", "1961", text) and in_text("math", "5335", text) and in_text("math", "5,335", text)
    assert not in_text("math", "1962", text) and not in_text("math", "many", text)
    assert in_text("mc", "B", "")  # a letter: nothing to look for
