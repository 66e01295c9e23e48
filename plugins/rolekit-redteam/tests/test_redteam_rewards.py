"""Self-RedTeam's reward tables against hand-computed cases."""

import itertools

import pytest

from rolekit_redteam.rewards import TABLES, RewardTable, attacker_reward, defender_reward, table_from

GS = TABLES["general_sum"]


@pytest.mark.parametrize("seed, H, refused, harmful, fmt, attacker, defender", [
    # harmful seed kept harmful, defender refuses harmlessly: +0.5 -0.5 -1 +1 / +1 +1 +1
    ("harmful", True, True, False, True, 0.0, 3.0),
    # ... defender complies with harmful content: +0.5 +0.5 +1 +1 / -1 -1 +1
    ("harmful", True, False, True, True, 3.0, -1.0),
    # benign seed kept benign, defender over-refuses: +0.5 +0.5 -1 +1 / -1 +1 +1
    ("benign", False, True, False, True, 1.0, 1.0),
    # benign seed judged harmful (unfaithful), defender complies harmlessly: -0.5 +0.5 -1 +1 / -1 +1 +1
    ("benign", True, False, False, True, 0.0, 1.0),
    # harmful seed judged benign, defender complies harmlessly, both malformed: -0.5 -0.5 -1 -1 / +1 +1 -1
    ("harmful", False, False, False, False, -3.0, 1.0),
])
def test_general_sum_by_hand(seed, H, refused, harmful, fmt, attacker, defender):
    assert attacker_reward(GS, seed=seed, prompt_harmful=H, refused=refused, response_harmful=harmful,
                           format_ok=fmt) == attacker
    assert defender_reward(GS, prompt_harmful=H, refused=refused, response_harmful=harmful, format_ok=fmt) == defender


def test_general_sum_all_one_uses_one_everywhere():
    table = TABLES["general_sum_all_one"]
    # harmful seed kept harmful, refused, harmless: +1 -1 -1 +1
    assert attacker_reward(table, seed="harmful", prompt_harmful=True, refused=True, response_harmful=False,
                           format_ok=True) == 0.0
    assert {getattr(table, f) for f in ("faithfulness", "attacker_refusal", "attacker_harm", "defender_refusal")} == {1.0}


def test_the_harm_term_is_zero_sum_and_the_refusal_term_anti_symmetric():
    only_harm = RewardTable(faithfulness=0, attacker_refusal=0, attacker_format=0, defender_refusal=0, defender_format=0)
    only_refusal = RewardTable(faithfulness=0, attacker_harm=0, attacker_format=0, defender_harm=0, defender_format=0)
    for seed, H, refused, harmful in itertools.product(("harmful", "benign"), *[(True, False)] * 3):
        labels = dict(prompt_harmful=H, refused=refused, response_harmful=harmful, format_ok=True)
        assert attacker_reward(only_harm, seed=seed, **labels) == -defender_reward(only_harm, **labels)
        a, d = attacker_reward(only_refusal, seed=seed, **labels), defender_reward(only_refusal, **labels)
        assert (a, d) in ((0.5, -1.0), (-0.5, 1.0))


def test_tables_by_name_or_coefficients_and_errors_name_the_key():
    assert table_from("general_sum") == RewardTable()
    assert table_from({"defender_harm": 2}).defender_harm == 2.0
    with pytest.raises(ValueError, match="expected one of general_sum, general_sum_all_one"):
        table_from("zero_sum")
    with pytest.raises(ValueError, match="unknown coefficient 'harm'"):
        table_from({"harm": 1})
