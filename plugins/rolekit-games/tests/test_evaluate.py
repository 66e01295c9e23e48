"""rolekit.evaluate on these games: exact and sampled strategy tables, exploitability, play scores."""

import math

import pytest
import torch

from rolekit import evaluate
from rolekit.table import ModelResponder
from rolekit.testing import CharChat, ScriptedBackend
from rolekit_games import KuhnPoker, TicTacToe, kuhn_eval


def naive_logprob(model, prompt, completion, stop_ids):
    """One unpadded forward pass per sequence: the reference for the batched scorer."""
    ids = torch.tensor([list(prompt) + list(completion)])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
    total = sum(logp[len(prompt) - 1 + i, t].item() for i, t in enumerate(completion))
    return total + torch.logsumexp(logp[len(prompt) + len(completion) - 1, list(stop_ids)], dim=-1).item()


def test_completion_logprobs_match_unbatched_passes(tiny, tiny_chat):
    game = KuhnPoker()
    sets = game.information_sets()
    pairs = []
    for key in ("J", "Kb", "Qpb"):
        state, role = sets[key]
        prompt = tiny_chat.encode(game.prompt(state, role))
        for action in game.legal_actions(state):
            pairs.append((prompt, evaluate.answer_ids(tiny_chat, game.format_action(action))))
    pairs.append((pairs[0][0][:7], (5, 6, 7, 8, 9, 10)))  # a much shorter prompt: lots of padding
    stop = sorted(tiny_chat.eos_ids)
    got = evaluate.completion_logprobs(tiny.model, pairs, stop_ids=stop, pad_id=tiny_chat.pad_id, batch_size=3)
    want = [naive_logprob(tiny.model, p, c, stop) for p, c in pairs]
    assert got == pytest.approx(want, abs=1e-4)


def test_exact_policy_table_normalises_answer_likelihoods(tiny, tiny_chat):
    game = KuhnPoker()
    table = evaluate.exact_policy_table(tiny.model, tiny_chat, game)
    assert sorted(table) == sorted(kuhn_eval.INFOSETS)
    for key, dist in table.items():
        state, role = game.information_sets()[key]
        assert list(dist) == game.legal_actions(state)
        assert sum(dist.values()) == pytest.approx(1.0)
    # One information set by hand: the prompt ends with the answer prefix "[", the answer is
    # the move's tokens, then any token starting with the stop text "]" ends it.
    state, role = game.information_sets()["Qb"]
    prompt = tiny_chat.encode(game.messages(state, role)) + tiny_chat.text_ids(game.answer_start(state, role))
    assert game.answer_start(state, role) == "Q: ["  # the card restated where the model decides
    vocab = tiny_chat.tokenizer.convert_ids_to_tokens(list(range(len(tiny_chat.tokenizer))))
    closing = sorted(i for i, t in enumerate(vocab) if tiny_chat.tokenizer.convert_tokens_to_string([t]).startswith("]"))
    assert closing and all("]" in tiny_chat.decode([i]) for i in closing)
    lp = {a: naive_logprob(tiny.model, prompt, evaluate.answer_ids(tiny_chat, a), closing) for a in ("fold", "call")}
    assert table["Qb"]["call"] == pytest.approx(1 / (1 + math.exp(lp["fold"] - lp["call"])), abs=1e-4)
    with pytest.raises(ValueError, match="terse"):
        evaluate.exact_policy_table(tiny.model, tiny_chat, KuhnPoker(mode="reasoning"))


def test_sampled_policy_table_counts_parsed_answers_and_invalid_ones():
    def reply(prompt):  # bets/calls with K, checks/folds with Q, says nonsense with J
        if "Your card: K" in prompt:
            return "I raise. \\boxed{call}" if "Pot: 3" in prompt else "\\boxed{bet}"
        if "Your card: Q" in prompt:
            return "[check]" if "Legal actions: [check]" in prompt else "[fold]"
        return "no idea"

    game = KuhnPoker(mode="reasoning")
    table, invalid = evaluate.sampled_policy_table(ScriptedBackend(reply), CharChat(), game, samples=3)
    assert table["K"] == {"check": 0.0, "bet": 1.0} and table["Kb"] == {"fold": 0.0, "call": 1.0}
    assert table["Qpb"] == {"fold": 1.0, "call": 0.0}
    assert table["J"] == {"check": 0.5, "bet": 0.5}  # nothing valid: uniform, and counted as invalid
    assert invalid["J"] == 1.0 and invalid["K"] == 0.0


def test_strategy_of_scripted_policies(kernel):
    game = KuhnPoker()
    nash = evaluate.load_policy(kernel, game, "scripted:nash")
    out = evaluate.strategy(game, nash)
    assert out["exploitability"] == pytest.approx(0.0, abs=1e-12) and out["extraction"] == "exact"
    assert out["infosets"]["K"] == {"check": 0.0, "bet": 1.0}
    rand = evaluate.strategy(game, evaluate.load_policy(kernel, game, "scripted:random"))
    assert rand["extraction"].startswith("sampled")
    assert rand["exploitability"] == pytest.approx(11 / 24, abs=0.02)


def test_strategy_of_a_model_in_both_modes(kernel, tiny, tiny_chat):
    from rolekit.backends.hf import HFBackend

    policy = evaluate.Policy("tiny-random", None, model=tiny, backend=HFBackend(tiny.model, tiny_chat), chat=tiny_chat)
    exact = evaluate.strategy(KuhnPoker(), policy)
    assert 0 <= exact["exploitability"] <= 3 and "exact" in exact["extraction"]
    table = {k: {a: p for a, p in d.items()} for k, d in exact["infosets"].items()}
    assert exact["exploitability"] == pytest.approx(KuhnPoker().exploitability(table), abs=1e-5)
    sampled = evaluate.strategy(KuhnPoker(mode="reasoning", max_new_tokens=4), policy, samples=2)
    assert "sampled" in sampled["extraction"] and set(sampled["invalid_by_infoset"]) == set(kuhn_eval.INFOSETS)


def test_play_against_alternates_seats_and_scores_from_the_policy_side(kernel):
    game = TicTacToe()
    policy = evaluate.load_policy(kernel, game, "scripted:minimax")
    episodes = evaluate.play_against(kernel, game, policy, "random", episodes=30, seed=5)
    result = evaluate.score(episodes)
    assert result["episodes"] == 30 and result["loss"] == 0.0 and result["win"] > 0.5
    assert {s: r["episodes"] for s, r in result["by_seat"].items()} == {"player_0": 15, "player_1": 15}
    assert result["win"] + result["draw"] + result["loss"] == pytest.approx(1.0)


def test_play_against_with_a_model_counts_invalid_moves(kernel):
    backend = ScriptedBackend(lambda prompt: "pass")  # never a legal move
    policy = evaluate.Policy("scripted-backend", ModelResponder("policy", backend, CharChat()))
    result = evaluate.score(evaluate.play_against(kernel, KuhnPoker(), policy, "nash", episodes=6))
    assert result["invalid"] == 1.0 and result["loss"] == 1.0 and result["mean_return"] == -1.5


def test_mirror_plays_each_deal_from_both_seats(kernel):
    game = KuhnPoker(rounds=2)
    policy = evaluate.load_policy(kernel, game, "scripted:nash")
    episodes = evaluate.play_against(kernel, game, policy, "random", episodes=8, seed=11, mirror=True)
    by_seed = {}
    for ep in episodes:
        by_seed.setdefault(ep.seed, set()).add(next(r for r, w in ep.seats.items() if w == "policy"))
    assert by_seed == {s: {"player_0", "player_1"} for s in range(11, 15)}


def test_evaluate_report_has_the_documented_keys(kernel):
    report = evaluate.evaluate(kernel, game="kuhn_poker", policy="scripted:nash", opponent="scripted:random",
                               episodes=10, exploitability=True)
    for key in ("game", "policy", "opponent", "episodes", "win", "draw", "loss", "invalid", "mean_return",
                "exploitability", "infosets"):
        assert key in report
    assert report["opponent"] == "random" and report["episodes"] == 10


@pytest.mark.parametrize("kwargs, match", [
    (dict(game="kuhn_poker", policy="scripted:minimax"), "plays only"),
    (dict(game="kuhn_poker", policy="scripted:nope"), "unknown opponent"),
    (dict(game="kuhn_poker", policy="/no/such/model"), "unknown model"),
    (dict(game="tictactoe", policy="scripted:random", exploitability=True), "information_sets"),
    (dict(game="kuhn_poker", policy="scripted:random", opponent="heuristic"), "plays only"),
])
def test_bad_names_are_one_line_errors(kernel, kwargs, match):
    with pytest.raises((ValueError, KeyError), match=match):
        evaluate.evaluate(kernel, episodes=2, **kwargs)


@pytest.mark.slow
def test_untrained_embedded_model_exploitability(kernel):
    """The untrained SmolLM2-135M-Instruct (terse, exact) plays without looking at its card.

    Its exploitability (recorded in BENCHMARKS.md) is far from Nash, and with the card
    stated only in the prompt (``recap=False``) its action probabilities barely differ
    between J, Q and K at the same history.
    """
    game = KuhnPoker(recap=False)
    policy = evaluate.load_policy(kernel, game, "smollm2-135m-instruct")
    out = evaluate.strategy(game, policy)
    assert 0.2 < out["exploitability"] < 1.0
    assert all(d["check"] > 0.9 for k, d in out["infosets"].items() if k[1:] == "")  # first to act it nearly always checks
    for history in ("", "p", "b", "pb"):
        aggressive = [max(out["infosets"][card + history].get(a, 0.0) for a in ("bet", "call")) for card in "JQK"]
        assert max(aggressive) - min(aggressive) < 0.1, (history, aggressive)
    assert all(0 < p < 1 for p in out["legal_answer_probability"].values())
