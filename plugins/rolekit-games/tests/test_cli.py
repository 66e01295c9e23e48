"""``rolekit eval`` and ``rolekit play`` as a user runs them (subprocesses; stdin fed by the test)."""

import json
import subprocess
import sys

import pytest


def rolekit(*args, stdin=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "rolekit.cli", *args], input=stdin, capture_output=True,
                          text=True, timeout=timeout)


def test_eval_random_never_beats_minimax():
    out = rolekit("eval", "--policy", "scripted:random", "--game", "tictactoe", "--opponent", "minimax",
                  "--episodes", "200", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["game"] == "tictactoe" and report["policy"] == "scripted:random"
    assert report["opponent"] == "minimax" and report["episodes"] == 200
    assert report["win"] == 0.0 and report["loss"] > 0.5 and report["invalid"] == 0.0
    assert report["win"] + report["draw"] + report["loss"] == pytest.approx(1.0)
    assert report["by_seat"]["player_0"]["episodes"] == report["by_seat"]["player_1"]["episodes"] == 100


def test_eval_kuhn_exploitability_of_a_scripted_policy():
    out = rolekit("eval", "--policy", "scripted:nash_alpha0", "--game", "kuhn_poker", "--opponent", "nash",
                  "--episodes", "20", "--exploitability", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["exploitability"] == pytest.approx(0.0, abs=1e-12)
    assert len(report["infosets"]) == 12 and report["infosets"]["Jb"] == {"fold": 1.0, "call": 0.0}


def test_eval_table_output():
    out = rolekit("eval", "--policy", "scripted:heuristic", "--game", "negotiation", "--episodes", "6")
    assert out.returncode == 0, out.stderr
    assert "scripted:heuristic vs random on negotiation" in out.stdout


@pytest.mark.parametrize("args, message", [
    (["--policy", "scripted:minimax", "--game", "kuhn_poker"], "plays only tictactoe"),
    (["--policy", "scripted:random", "--game", "kuhn_pokr"], "did you mean 'kuhn_poker'"),
    (["--policy", "no-such-model", "--game", "tictactoe"], "unknown model"),
])
def test_eval_bad_names_exit_2(args, message):
    out = rolekit("eval", *args, "--episodes", "1")
    assert out.returncode == 2
    assert message in " ".join(out.stderr.split()) and "Traceback" not in out.stderr


def test_play_tictactoe_rejects_illegal_input_and_finishes():
    # Cells in order: taken ones are rejected and the next is tried, so the game always ends.
    moves = "9\nfoo\n" + "\n".join(str(c) for c in range(9)) + "\n"
    out = rolekit("play", "--game", "tictactoe", "--policy", "scripted:random", "--seed", "3", stdin=moves)
    assert out.returncode == 0, out.stderr
    assert "you are player_0" in out.stdout and " 0 | 1 | 2" in out.stdout
    assert "illegal move '9'; legal moves: [0], [1], [2], [3], [4], [5], [6], [7], [8]" in out.stdout
    assert "illegal move 'foo'" in out.stdout
    assert "=== game over ===" in out.stdout
    assert any(line.startswith(("You won", "You lost", "It is a draw")) for line in out.stdout.splitlines())


def test_play_kuhn_as_second_player_shows_card_and_result():
    out = rolekit("play", "--game", "kuhn_poker", "--policy", "scripted:nash", "--seed", "1", "--seat", "player_1",
                  stdin="raise\n[check]\ncall\ncall\n")
    assert out.returncode == 0, out.stderr
    assert "Your card: K" in out.stdout
    assert "illegal move 'raise'; legal moves: [check], [bet]" in out.stdout
    assert "showdown: player_0 had J, player_1 had K" in out.stdout and "You won" in out.stdout


def test_play_negotiation_takes_offers_with_free_text():
    moves = "let's trade\n" + "Here is my offer: [Offer: 1 Wood -> 1 Sheep]\n" * 6
    out = rolekit("play", "--game", "negotiation", "--policy", "scripted:heuristic", "--seed", "1",
                  "--option", "turn_limit=4", stdin=moves)
    assert out.returncode == 0, out.stderr
    assert "illegal move \"let's trade\"" in out.stdout and "gains:" in out.stdout


def test_play_stops_cleanly_when_input_runs_out():
    out = rolekit("play", "--game", "tictactoe", "--policy", "scripted:random", "--seed", "0", stdin="9\n")
    assert out.returncode == 1
    assert "no more input" in out.stderr and "Traceback" not in out.stderr
