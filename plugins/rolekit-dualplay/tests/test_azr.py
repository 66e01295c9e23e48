"""azr_code: parsing and checking proposals, running them in the sandbox, Absolute Zero's
rewards, a whole episode through the real scheduler, the buffer across a resume, training."""

import json

import pytest

from rolekit.config import from_dict
from rolekit.engine import Trainer
from rolekit.pools import Pools
from rolekit.table import POLICY, EpisodeSpec, ModelResponder, Scheduler
from rolekit.testing import CharChat, ScriptedBackend
from rolekit_dualplay import heldout
from rolekit_dualplay.azr import (INPUT_ASK, LIBRARY, SEED, AzrCode, library, proposer_reward, read_value,
                                  score_solutions, solver_reward, validate_inputs, validate_program)
from rolekit_dualplay.programs import call_args, check_program, split_proposal

# --- parsing and checking (host side: nothing runs) ---------------------------------------------


def test_call_args_reads_literal_calls_only():
    assert call_args("f(3, b='a') == 5") == "3, b='a'"
    assert call_args("f(5) Defaults to 5.") == "5"
    assert call_args("f((1, 2), [3, (4)])") == "(1, 2), [3, (4)]"
    assert call_args('f(")")') == '")"'
    for text in ("f()", "f(g(1))", "f(x)", "xf(3)", "f(__import__('os'))", "no call"):
        assert call_args(text) is None, text


def test_check_program_keeps_definitions_and_refuses_banned_names():
    program, why = check_program("import math\ndef f(a):\n    return math.sqrt(a)\nprint(f(4))\nSo this prints 2.")
    assert why == "" and program == "import math\n\ndef f(a):\n    return math.sqrt(a)"
    assert check_program("def g(a):\n    return a") == (None, "no function f")
    assert check_program("def f():\n    return 1") == (None, "f takes no input")
    assert check_program("def f(a) return") == (None, "syntax error")
    for code, name in [("import os\ndef f(a):\n    return os.getcwd()", "os"),
                       ("from subprocess import run\ndef f(a):\n    return 1", "subprocess"),
                       ("def f(a):\n    return open('/etc/passwd').read()", "open"),
                       ("def f(a):\n    return a.__class__.__mro__", "__mro__"),
                       ("def f(a):\n    return eval(a)", "eval"),
                       ("import random\ndef f(a):\n    return random.random()", "random")]:
        assert check_program(code) == (None, f"banned: {name}"), code


def test_split_proposal_reads_both_formats():
    azr = "Plan...\n```python\ndef f(a, b):\n    return a * b\n```\n```input\n3, 4\n```"
    assert split_proposal(azr) == ("def f(a, b):\n    return a * b\n", "3, 4")
    terse = "```python\ndef f(x):\n    return x + 1\n\nf(2)\n```\nThis adds one."
    code, given = split_proposal(terse)
    assert given == "2" and check_program(code)[0] == "def f(x):\n    return x + 1"
    assert split_proposal("```python\ndef f(x):\n    return x\n```")[1] is None


# --- rewards (Absolute Zero's reward_managers.py) --------------------------------------------------


def test_absolute_zero_rewards_by_hand():
    assert [solver_reward(1.0, ""), solver_reward(0.0, ""), solver_reward(0.0, "not a value")] == [1.0, -0.5, -1.0]
    assert proposer_reward(0.25) == 0.75 and proposer_reward(0.75) == 0.25
    assert proposer_reward(0.0) == -0.5 and proposer_reward(1.0) == -0.5


# --- validation and solving, run in the sandbox --------------------------------------------------------


def test_a_proposal_is_validated_by_running_it_twice():
    item, why = validate_program("```python\ndef f(a):\n    return a * 2 + 1\n```\n```input\n3\n```")
    assert why == "" and item == {"program": "def f(a):\n    return a * 2 + 1", "input": "3", "output": "7"}
    cases = {
        "def f(a):\n    while True:\n        pass": "timeout",
        "def f(a):\n    return a / 0": "raises",
        "def f(a):\n    return f": "output not a literal",
        # an object's address differs between two processes: caught by running twice
        "def f(a):\n    return str(object())": "nondeterministic",
        "def f(a):\n    return a": "",
    }
    for code, reason in cases.items():
        assert validate_program(f"```python\n{code}\n\nf(3)\n```")[1] == reason, code
    assert validate_program("```python\ndef f(a):\n    return a\n```")[1] == "format"
    assert validate_program("```python\ndef f(a):\n    return a\n```\n```input\nx\n```")[1] == "input not a literal"


def test_induction_inputs_split_into_shown_and_hidden_pairs():
    program = "def f(a):\n    return a * 2 + 1"
    item, why = validate_inputs(program, "f(1)\nf(2)\nf(2)\nf(oops)\nf(3)\nf(4)\n# doubles, plus one", 2)
    assert why == ""
    assert (item["inputs"], item["outputs"]) == (["1", "2"], ["3", "5"])
    assert (item["hidden_inputs"], item["hidden_outputs"]) == (["3", "4"], ["7", "9"])
    assert item["message"] == "doubles, plus one"
    assert validate_inputs(program, "f(1)\nnothing else", 2) == (None, "format")
    assert validate_inputs("def f(a):\n    return 1 // (a - a)", "f(1)\nf(2)", 1) == (None, "too few valid inputs")


def test_solutions_are_scored_per_task_type():
    item = {"program": "def f(a):\n    return a * 2 + 1", "input": "3", "output": "7"}
    assert score_solutions("deduction", item, ["f(3) = 7", "f(3) = 8", "f(3) = seven"], "terse") == \
        [(1.0, ""), (0.0, ""), (0.0, "not a value")]
    # the value a chain of equalities ends with; a string value may itself hold " = "
    assert score_solutions("deduction", item, ["f(3) = 3 * 2 + 1 = 7", "f(3) = 3 * 2 = 6 + 1", "f(3) = 7 = 8"],
                           "terse") == [(1.0, ""), (0.0, "not a value"), (0.0, "")]
    assert read_value("f('a') = 'x = y'", "terse") == (True, "x = y")
    assert read_value("f(3) = \n7", "terse") == (False, None)
    assert score_solutions("abduction", item, ["f(3)", "f(4) == 9", "f(x)"], "terse") == \
        [(1.0, ""), (0.0, ""), (0.0, "no input")]
    induction = {"program": "", "inputs": ["1"], "outputs": ["3"], "hidden_inputs": ["2", "5"],
                 "hidden_outputs": ["5", "11"], "message": ""}
    answers = ["def f(a):\n    return 2 * a + 1", "def f(a):\n    return a + 3", "def f(a):\n    import os",
               "def f(a):\n    while True:\n        pass"]
    assert score_solutions("induction", induction, answers, "terse") == \
        [(1.0, ""), (0.0, ""), (0.0, "no program"), (0.0, "")]


def test_a_solver_program_that_exhausts_the_sandbox_scores_wrong():
    induction = {"program": "", "inputs": ["1"], "outputs": ["1"], "hidden_inputs": ["2"], "hidden_outputs": ["2"],
                 "message": ""}
    bombs = ["def f(a):\n    x = [0] * 10 ** 10\n    return a",  # memory
             "def f(a):\n    return len(str(10 ** 10 ** 8)) and a",  # CPU
             "def f(a):\n    return f(a)"]  # recursion
    assert score_solutions("induction", induction, bombs, "terse") == [(0.0, "")] * 3


# --- an episode through the real scheduler ------------------------------------------------------------


def scripted(reply):
    return Scheduler({POLICY: ModelResponder(POLICY, ScriptedBackend(reply), CharChat())})


def test_a_deduction_episode_credits_both_roles_and_grows_the_buffer():
    def reply(prompt):
        if prompt.startswith("Examples:"):
            return "x):\n    return x + 1\n```"
        if INPUT_ASK in prompt:
            return "2)"
        return "3" if "What does f(2)" in prompt else "?"

    game = AzrCode(tasks=("deduction",), solvers=2)
    pools = Pools()
    [episode] = scripted(reply).run([EpisodeSpec(game, 0, {}, pools=pools)])
    assert episode.ok, episode.error
    proposer = [t for t in episode.turns if t.role == "proposer"]
    solvers = [t for t in episode.turns if t.role == "solver"]
    assert len(proposer) == 2 and len(solvers) == 2
    assert all(episode.rewards[t.id] == 1.0 for t in solvers)  # both right: pass rate 1
    assert all(episode.rewards[t.id] == -0.5 for t in proposer)  # too easy: Absolute Zero's -0.5
    assert {episode.keys[t.id] for t in episode.turns} == {"deduction"}
    items = pools.get("deduction").items
    assert items[-1] == {"program": "def f(x):\n    return x + 1", "input": "2", "output": "3"} and len(items) == 2


def test_an_invalid_proposal_is_penalised_by_reason_and_the_solvers_train_on_the_buffer():
    def reply(prompt):
        if prompt.startswith("Examples:"):
            return "x):\n    import os\n    return x\n```"
        if INPUT_ASK in prompt:
            return "2)"
        return "'Hello World'"  # the seed task: the identity on 'Hello World'

    [episode] = scripted(reply).run([EpisodeSpec(AzrCode(tasks=("deduction",), solvers=2), 0, {})])
    proposer = [t for t in episode.turns if t.role == "proposer"]
    solvers = [t for t in episode.turns if t.role == "solver"]
    assert [episode.invalid[t.id] for t in proposer] == ["banned: os"] * 2
    assert [episode.rewards[t.id] for t in proposer] == [-1.0, -1.0]
    assert [episode.rewards[t.id] for t in solvers] == [1.0, 1.0]
    assert episode.info["valid"] is False and episode.info["reason"] == "banned: os"


def test_the_seed_library_starts_the_program_buffers_and_shares_nothing_with_the_held_out_set():
    items = library()
    assert len(items) == len(LIBRARY) and {"program": "def f(x):\n    return x * x", "input": "4",
                                            "output": "16"} in items
    held_out = {item["program"] for _, item in heldout.tasks(300, ["deduction"], 2)}
    assert not held_out & {item["program"] for item in items}

    def reply(prompt):
        return "x):\n    return x\n```" if prompt.startswith("Examples:") else "2)"

    pools = Pools()
    list(scripted(reply).run([EpisodeSpec(AzrCode(tasks=("deduction",), solvers=1, seed="library"), 0, {},
                                          pools=pools)]))
    assert pools.get("deduction").items[:len(items) + 1] == [SEED, *items]
    pools = Pools()
    list(scripted(reply).run([EpisodeSpec(AzrCode(tasks=("deduction",), solvers=1), 0, {}, pools=pools)]))
    assert pools.get("deduction").items[0] == SEED and len(pools.get("deduction").items) == 2
    with pytest.raises(ValueError, match="seed must be one of identity, library, got 'x'"):
        AzrCode(seed="x")


# --- held-out set, training, resume ------------------------------------------------------------------


def test_the_held_out_set_is_fixed_and_covers_each_task_type():
    a, b = heldout.tasks(30, ["deduction", "abduction", "induction"], 2), \
        heldout.tasks(30, ["deduction", "abduction", "induction"], 2)
    assert a == b and {t for t, _ in a} == {"deduction", "abduction", "induction"}
    seed = "def f(a):\n    return a"
    assert all(item["program"] != seed for _, item in a)
    # every held-out answer key is right: the gold answers score 1 through the solver's checks
    for task, item in a[:9]:
        gold = {"deduction": f"f({item.get('input')}) = {item.get('output')}",
                "abduction": f"f({item.get('input')})", "induction": item["program"]}[task]
        assert score_solutions(task, item, [gold], "terse") == [(1.0, "")], (task, item)


def config(tmp_path, **algorithm):
    return from_dict({
        "seed": 0, "model": {"name": "tiny-random"},
        "rollout": {"samples_per_step": 8, "concurrency": 8},
        "algorithm": {"steps": 2, "lr": 1e-3, **algorithm},
        "eval": {"every": 2}, "checkpoint": {"every": 1, "keep": 5},
        # rae: a random model's proposals and answers are all malformed (-1), and role_norm
        # would see no spread to learn from in the first steps
        "curriculum": [{"game": "azr_code", "options": {"held_out": 3, "solvers": 2, "propose_tokens": 12,
                                                       "solve_tokens": 8}, "advantage": "rae"}],
    })


@pytest.mark.slow
def test_trains_on_tiny_random_and_the_buffers_survive_resume_exactly(kernel, tmp_path):
    straight = Trainer(config(tmp_path), tmp_path / "a", kernel=kernel, quiet=True)
    history = straight.run()
    assert [m["step"] for m in history] == [1, 2]
    roles = [m["roles"] for m in history]  # (a step may train on leftovers alone and play nothing)
    assert sum(r.get("azr_code/proposer", {}).get("invalid_turns", 0) for r in roles) > 0
    assert sum(r.get("azr_code/solver", {}).get("turns", 0) for r in roles) > 0
    held_out = history[-1]["eval"]["azr_code"]["held_out"]
    assert held_out["tasks"] == 3 and 0.0 <= held_out["accuracy"] <= 1.0
    Trainer(config(tmp_path, steps=1), tmp_path / "b", kernel=kernel, quiet=True).run()
    resumed = Trainer(config(tmp_path), tmp_path / "b", kernel=kernel, quiet=True, resume=tmp_path / "b")
    assert set(resumed.curriculum.pools[0].sizes()) >= {"deduction"}
    resumed.run()
    assert straight.curriculum.pools[0].state_dict() == resumed.curriculum.pools[0].state_dict()
    steps = [json.loads(line)["step"] for line in open(tmp_path / "b" / "metrics.jsonl")]
    assert steps == [1, 2]
