"""TicTacToe on a 3x3 board: moves ``[0]`` ... ``[8]``, player_0 is X and moves first."""

from __future__ import annotations

import functools
import random
from typing import Any

import attrs

from rolekit.game import TurnBasedGame
from rolekit.types import Role

EMPTY = "."
MARKS = ("X", "O")
LINES = ((0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6))


@attrs.frozen
class TicTacToeState:
    board: str = EMPTY * 9  # cells 0..8, row by row: "X", "O" or "."

    @property
    def to_move(self) -> int:
        """0 (X) or 1 (O): X moves when both have placed equally many marks."""
        return 0 if self.board.count("X") == self.board.count("O") else 1


def winner(board: str) -> int | None:
    """0 if X has a line, 1 if O has, else None."""
    for a, b, c in LINES:
        if board[a] != EMPTY and board[a] == board[b] == board[c]:
            return MARKS.index(board[a])
    return None


def render(board: str) -> str:
    """The board as text: marks where played, the cell's number where empty."""
    cells = [board[i] if board[i] != EMPTY else str(i) for i in range(9)]
    rows = [f" {cells[r]} | {cells[r + 1]} | {cells[r + 2]}" for r in (0, 3, 6)]
    return "\n---+---+---\n".join(rows)


@functools.lru_cache(maxsize=None)
def move_values(board: str) -> dict[int, int]:
    """Minimax value of every legal move for the player to move (higher is better):
    a win scores 1 + the empty cells left after it (win sooner), a loss the negative
    of that (lose later), a draw 0."""
    mover = MARKS[0 if board.count("X") == board.count("O") else 1]
    out = {}
    for cell in range(9):
        if board[cell] != EMPTY:
            continue
        child = board[:cell] + mover + board[cell + 1:]
        if winner(child) is not None:
            out[cell] = 1 + child.count(EMPTY)
        elif EMPTY not in child:
            out[cell] = 0
        else:
            out[cell] = -max(move_values(child).values())
    return out


def best_moves(board: str) -> list[int]:
    """Every move of maximal minimax value (perfect play)."""
    values = move_values(board)
    top = max(values.values())
    return [cell for cell, v in values.items() if v == top]


class TicTacToe(TurnBasedGame):
    """3x3 TicTacToe; a line of three wins (+1 / -1), a full board without one draws (0)."""

    name = "tictactoe"
    description = "TicTacToe: player_0 is X and moves first; moves [0]..[8]."
    roles = (Role("player_0", "X, moves first"), Role("player_1", "O, moves second"))

    def reset(self, rng: random.Random) -> TicTacToeState:
        return TicTacToeState()

    def current_role(self, state: TicTacToeState) -> str:
        return f"player_{state.to_move}"

    def legal_actions(self, state: TicTacToeState) -> list[str]:
        if winner(state.board) is not None:
            return []
        return [str(i) for i in range(9) if state.board[i] == EMPTY]

    def apply(self, state: TicTacToeState, action: str) -> TicTacToeState:
        if action not in self.legal_actions(state):
            raise ValueError(f"illegal TicTacToe move {action!r} (legal: {self.legal_actions(state)})")
        cell = int(action)
        return TicTacToeState(state.board[:cell] + MARKS[state.to_move] + state.board[cell + 1:])

    def returns(self, state: TicTacToeState) -> dict[str, float] | None:
        won = winner(state.board)
        if won is not None:
            return {f"player_{won}": 1.0, f"player_{1 - won}": -1.0}
        if EMPTY not in state.board:
            return {"player_0": 0.0, "player_1": 0.0}
        return None

    def outcome(self, state: TicTacToeState) -> dict[str, Any]:
        return {"board": render(state.board)}

    def rules(self, role: str) -> str:
        mark = MARKS[int(role[-1])]
        other = MARKS[1 - int(role[-1])]
        return (
            f"You are {role} in TicTacToe, playing {mark} (your opponent plays {other}; X moves first).\n"
            "Players take turns placing their mark in an empty cell of a 3x3 board. Three of your marks "
            "in a row, column or diagonal wins; a full board without a line is a draw.\n"
            "Cells are numbered 0 to 8, row by row; choose a cell by its number, e.g. [4] for the centre."
        )

    def observe(self, state: TicTacToeState, role: str) -> str:
        mark = MARKS[int(role[-1])]
        return f"Current board (you are {mark}; empty cells show their number):\n{render(state.board)}"
