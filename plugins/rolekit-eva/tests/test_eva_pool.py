"""eva's informativeness, selection weights, parsing and pool ageing, by hand."""

import random
import statistics

import pytest

from rolekit.pools import Pool
from rolekit_eva.pool import PromptPool, informativeness, parse_new_prompt, selection_weights
from rolekit_eva.prompts import HELD_OUT, SEEDS, load_prompts


def test_informativeness_metrics_by_hand():
    scores = [0.2, 0.8, 0.5]
    assert informativeness(scores, "gap") == pytest.approx(0.6)
    assert informativeness(scores, "variance") == pytest.approx(((0.3 ** 2) + (0.3 ** 2) + 0) / 3)
    assert informativeness(scores, "mean_gap") == pytest.approx(0.3)
    assert informativeness([1.0, 1.0], "gap") == 0.0
    with pytest.raises(ValueError, match="at least two scores"):
        informativeness([0.5])
    with pytest.raises(ValueError, match="expected one of gap, variance, mean_gap"):
        informativeness(scores, "regret")


def test_selection_weights_are_min_max_normalised_over_their_sum():
    # (0.1, 0.5, 0.3) -> (0, 1, 0.5) / 1.5
    assert selection_weights([0.1, 0.5, 0.3]) == pytest.approx([0.0, 2 / 3, 1 / 3])
    assert selection_weights([0.4, 0.4]) == [0.5, 0.5]
    assert selection_weights([0.7]) == [1.0]


def test_the_creator_picks_by_those_weights_and_never_the_least_informative():
    pool = PromptPool(Pool(), ["a", "b", "c", "d"])
    for item, value in zip(pool.pool.items, [0.1, 0.5, 0.3, None]):
        item["informativeness"] = value
    rng = random.Random(0)
    picks = [pool.pick(rng)["text"] for _ in range(3000)]
    assert picks.count("a") == 0 and picks.count("d") == 0  # least informative; never scored
    assert picks.count("b") / len(picks) == pytest.approx(2 / 3, abs=0.03)
    assert PromptPool(Pool(), ["x"]).pick(rng) is None  # nothing scored yet


def test_the_pool_is_seeded_once_drops_duplicates_and_ages_the_oldest_out():
    raw = Pool(capacity=3)
    pool = PromptPool(raw, ["one", "two"])
    assert PromptPool(raw, ["never"]).pool.items == raw.items  # seeded once (e.g. after a resume)
    assert pool.add("Two ") is None  # already there (case and spacing ignored)
    pool.add("three", parent="one")
    pool.add("four", parent="two")
    assert [i["text"] for i in raw.items] == ["two", "three", "four"]  # "one" aged out
    assert raw.items[-1] == {"text": "four", "origin": "creator", "parent": "two", "born": 3, "informativeness": None}
    assert pool.add("one") is not None  # gone from the pool: it may come back


@pytest.mark.parametrize("reply, parent, expected", [
    ("Rewritten Prompt: Write a haiku about autumn leaves in Kyoto.", "Write a haiku.",
     ("Write a haiku about autumn leaves in Kyoto.", "")),
    ('#Rewritten Prompt#:\n"Explain X to a child, using one analogy."', "Explain X.",
     ("Explain X to a child, using one analogy.", "")),
    ("   ", "p", (None, "empty")),
    ("write a  HAIKU.", "Write a haiku.", (None, "copies its prompt")),
    ("x" * 601, "p", (None, "longer than 600 characters")),
])
def test_new_prompts_are_parsed_or_refused_with_a_reason(reply, parent, expected):
    assert parse_new_prompt(reply, parent) == expected


def test_seed_and_held_out_prompts_do_not_overlap():
    assert not set(SEEDS) & set(HELD_OUT) and len(HELD_OUT) == 16
    assert statistics.fmean(len(p) for p in SEEDS) < 80


def test_a_users_prompts(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": " Write a poem. "}\n\n{"prompt": "Name a colour."}\n')
    assert load_prompts(path) == ("Write a poem.", "Name a colour.")
    path.write_text('{"text": "x"}\n')
    with pytest.raises(ValueError, match=r"p.jsonl:1: expected"):
        load_prompts(path)
