"""TicTacToe rules and the perfect minimax opponent (exhaustive)."""

import random

import pytest

from games_helpers import play
from rolekit.game import MoveInfo
from rolekit_games import tictactoe
from rolekit_games.tictactoe import TicTacToe, TicTacToeState


def outcomes(game, state, minimax_seat, both_minimax=False):
    """Every outcome reachable when ``minimax_seat`` plays any of its optimal moves and
    the other seat plays any legal move (or also minimax)."""
    result = game.returns(state)
    if result is not None:
        return {result[f"player_{minimax_seat}"]}
    seat = state.to_move
    if seat == minimax_seat or both_minimax:
        moves = tictactoe.best_moves(state.board)
    else:
        moves = [int(a) for a in game.legal_actions(state)]
    found = set()
    for cell in moves:
        found |= outcomes(game, game.apply(state, str(cell)), minimax_seat, both_minimax)
    return found


@pytest.mark.parametrize("seat", [0, 1])
def test_minimax_never_loses_against_any_move_sequence(seat):
    assert -1.0 not in outcomes(TicTacToe(), TicTacToeState(), seat)


def test_minimax_against_minimax_always_draws():
    assert outcomes(TicTacToe(), TicTacToeState(), 0, both_minimax=True) == {0.0}


def test_minimax_takes_a_win_at_once():
    board = "XX.OO...."  # X to move: 2 wins now
    assert tictactoe.best_moves(board) == [2]


def test_minimax_opponent_picks_among_best_moves(kernel):
    fn = kernel.opponents.get("minimax")
    game = TicTacToe()
    state = TicTacToeState()
    move = MoveInfo(game, state, "player_0", tuple(game.legal_actions(state)))
    picks = {fn(move, random.Random(s)) for s in range(50)}
    assert picks <= {str(c) for c in tictactoe.best_moves(state.board)}
    assert kernel.opponents.entry("minimax").meta["games"] == ("tictactoe",)


def test_rules_render_and_returns():
    game = TicTacToe()
    state = TicTacToeState()
    for cell in "04152":  # X: 0 1 2 wins the top row
        state = game.apply(state, cell)
    assert game.returns(state) == {"player_0": 1.0, "player_1": -1.0}
    assert game.legal_actions(state) == []
    assert tictactoe.render(state.board).splitlines()[0] == " X | X | X"
    full = TicTacToeState("XOXXOOOXX")
    assert game.returns(full) == {"player_0": 0.0, "player_1": 0.0}
    with pytest.raises(ValueError):
        game.apply(TicTacToeState(), "9")


def test_prompts_show_board_and_legal_moves():
    game = TicTacToe(mode="reasoning")
    state = game.apply(TicTacToeState(), "4")
    prompt = game.prompt(state, "player_1")
    assert " 3 | X | 5" in prompt and "[0], [1], [2], [3], [5]" in prompt and "\\boxed" in prompt
    assert "playing O" in prompt


def test_random_never_beats_minimax(kernel):
    game = TicTacToe()
    for seed in range(40):
        for seats, random_seat in (({"player_0": "random", "player_1": "minimax"}, "player_0"),
                                   ({"player_0": "minimax", "player_1": "random"}, "player_1")):
            episode = play(kernel, game, seed, seats)
            assert episode.ok and episode.returns[random_seat] <= 0
