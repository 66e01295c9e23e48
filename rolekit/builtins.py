"""rolekit's own plugin: small games, basic verifiers, reward shapers, generic opponents.

Registered through the same hooks as any installed plugin (name ``builtins``), so it can
be blocked like one: ``ROLEKIT_DISABLE_PLUGINS=builtins``.
"""

from __future__ import annotations

import math
import random
import re
from typing import Any

from rolekit.answers import extract_answer, normalize
from rolekit.game import Game, MoveInfo, TurnBasedGame
from rolekit.hookspecs import hookimpl
from rolekit.types import Role, Verdict

# --- games -----------------------------------------------------------------------------


class Nim(TurnBasedGame):
    """Two players take 1 or 2 stones in turn from a pile; whoever takes the last stone wins."""

    name = "nim"
    description = "Take [1] or [2] stones in turn; taking the last stone wins. A tiny kernel-test game."
    roles = (Role("player_0"), Role("player_1"))

    def __init__(self, *, stones: int = 5, **options: Any):
        super().__init__(**options)
        if stones < 1:
            raise ValueError(f"stones must be >= 1, got {stones}")
        self.stones = stones

    def reset(self, rng: random.Random):
        return (self.stones, 0)  # (stones left, player to move)

    def current_role(self, state) -> str:
        return f"player_{state[1]}"

    def rules(self, role: str) -> str:
        return (f"You are {role} in Nim. Players alternately take 1 or 2 stones from one pile. "
                f"Whoever takes the last stone wins.")

    def observe(self, state, role: str) -> str:
        return f"Stones left: {state[0]}."

    def legal_actions(self, state) -> list[str]:
        return [str(k) for k in (1, 2) if k <= state[0]]

    def apply(self, state, action: str):
        return (state[0] - int(action), 1 - state[1])

    def returns(self, state):
        if state[0] > 0:
            return None
        winner = 1 - state[1]  # the player who just moved took the last stone
        return {f"player_{winner}": 1.0, f"player_{1 - winner}": -1.0}


class Echo(Game):
    """One role, one move: say the letter shown. Learnable from scratch; used by engine tests.

    Parsing is lenient: the answer is the bracketed/boxed content if there is one, else
    the first letter of the reply ("[B]", "B", "b.", "Bravo" all say B). Reward 1 or 0.
    """

    name = "echo"
    description = "Single-turn: the prompt shows a letter, the reply must say it ([B], B, ...). Reward 1 or 0."
    roles = (Role("speaker"),)

    def __init__(self, *, letters: str = "ABCD", max_new_tokens: int = 4):
        if not letters or not letters.isalpha():
            raise ValueError(f"letters must be a non-empty string of letters, got {letters!r}")
        self.letters = letters.upper()
        self.max_new_tokens = max_new_tokens

    @staticmethod
    def said(text: str) -> str | None:
        answer = extract_answer(text)
        if answer is None:
            answer = text.strip()
        return answer[0].upper() if answer and answer[0].isalpha() else None

    async def play(self, table) -> None:
        target = table.rng.choice(self.letters)
        prompt = f"Letter: {target}. Reply with the letter in square brackets, like [{target}]."
        [turn] = await table.ask("speaker", prompt, max_new_tokens=self.max_new_tokens)
        said = self.said(turn.text)
        table.set_action(turn, said)
        table.reward(turn, float(said == target))
        table.set_info(winner="speaker" if said == target else None)


@hookimpl
def rolekit_register_games(registry):
    registry.add(Nim)
    registry.add(Echo)


@hookimpl
def rolekit_register_roles(registry):
    registry.add(Role("judge", "scores another seat's answer"))
    registry.add(Role("verifier", "checks another seat's answer against its question"))


# --- verifiers ---------------------------------------------------------------------------


def verify_exact(answer: str, expected: str, **kwargs) -> Verdict:
    """1 when the extracted answer equals ``expected`` (case and spacing ignored), else 0."""
    got = extract_answer(answer)
    if got is None:
        return Verdict(0.0, ok=False, detail="no [answer] or \\boxed{answer} found")
    return Verdict(float(normalize(got) == normalize(str(expected))), detail=got)


_NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?(?:/\d+)?")


def _number(text: str) -> float | None:
    match = _NUMBER.fullmatch(text.strip().replace(" ", "").rstrip(".").lstrip("$"))
    if match is None:
        return None
    token = match.group(0).replace(",", "")
    if "/" in token:
        num, den = token.split("/")
        return float(num) / float(den) if float(den) else None
    return float(token)


def verify_number(answer: str, expected: float | str, *, tol: float = 1e-6, **kwargs) -> Verdict:
    """1 when the extracted answer is a number equal to ``expected`` within ``tol``."""
    got = extract_answer(answer)
    value = _number(got) if got is not None else None
    if value is None:
        return Verdict(0.0, ok=False, detail=f"not a number: {got!r}")
    target = _number(str(expected))
    return Verdict(float(target is not None and math.isclose(value, target, abs_tol=tol)), detail=str(value))


@hookimpl
def rolekit_register_verifiers(registry):
    registry.add("exact", verify_exact)
    registry.add("number", verify_number)
    from rolekit.verifiers.math import verify_math  # math-verify itself loads on first use
    registry.add("math", verify_math)
    from rolekit.verifiers.code import verify_python  # the sandbox starts on first use
    registry.add("python", verify_python)
    from rolekit.verifiers import judges  # judge:MODEL, reward_model:PATH, refusal, think_answer

    judges.register(registry)


# --- reward shapers ----------------------------------------------------------------------


def zero_sum(*, winner: str | None, roles, **kwargs) -> dict[str, float]:
    """+1 to the winner, -1 to everyone else, 0 to all on a draw (SPIRAL)."""
    return {r: 0.0 if winner is None else (1.0 if r == winner else -1.0) for r in roles}


def invalid_move(*, offender: str, roles, penalty: float = -1.5, opponent_reward: float = 0.5,
                 **kwargs) -> dict[str, float]:
    """SPIRAL's invalid-move outcome: offender ``penalty``, everyone else ``opponent_reward``."""
    return {r: penalty if r == offender else opponent_reward for r in roles}


def gaussian_difficulty(*, success_rate: float, sigma: float = 1 / 6, **kwargs) -> float:
    """SPELL's questioner reward: exp(-(s - 0.5)^2 / (2 sigma^2)), and 0 when s is 0 or 1."""
    if success_rate <= 0.0 or success_rate >= 1.0:
        return 0.0
    return math.exp(-((success_rate - 0.5) ** 2) / (2 * sigma**2))


def learnability(*, success_rate: float, **kwargs) -> float:
    """Absolute Zero's proposer reward: 1 - p when 0 < p < 1, else 0."""
    return 1.0 - success_rate if 0.0 < success_rate < 1.0 else 0.0


@hookimpl
def rolekit_register_rewards(registry):
    registry.add("zero_sum", zero_sum)
    registry.add("invalid_move", invalid_move)
    registry.add("gaussian_difficulty", gaussian_difficulty)
    registry.add("learnability", learnability)


# --- advantage estimators ---------------------------------------------------------------


@hookimpl
def rolekit_register_advantages(registry):
    from rolekit.advantages import GRPO, RAE, Raw, RoleNorm

    registry.add("rae", RAE)
    registry.add("grpo", GRPO)
    registry.add("role_norm", RoleNorm)
    registry.add("raw", Raw)


# --- opponents -----------------------------------------------------------------------------


def random_opponent(move: MoveInfo, rng: random.Random) -> str:
    """A uniformly random legal action (any turn-based game)."""
    return rng.choice(list(move.legal_actions))


def first_opponent(move: MoveInfo, rng: random.Random) -> str:
    """Always the first legal action: a deterministic baseline."""
    return move.legal_actions[0]


@hookimpl
def rolekit_register_opponents(registry):
    registry.add("random", random_opponent, games=None)
    registry.add("first", first_opponent, games=None)


