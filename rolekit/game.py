"""Games are role graphs: ``Game`` (write ``play`` by hand) and ``TurnBasedGame``."""

from __future__ import annotations

import inspect
import random
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

import attrs

from rolekit.answers import extract_answer, normalize
from rolekit.types import Role

if TYPE_CHECKING:
    from rolekit.evaluate import Evaluator
    from rolekit.table import Table

MODES = ("terse", "reasoning")


class Game:
    """A role graph written as straight-line async code against a ``Table``.

    Subclasses set ``name``, ``roles`` and ``description`` and implement ``play``.
    Constructor keyword arguments are the game's options (from configs or the CLI).

    ``interchangeable``: the roles that are interchangeable seats (the players of a
    zero-sum game). Seat rotation and mirrored deals permute only these; the roles of an
    asymmetric graph (questioner, responder, verifier) never rotate. ``outcomes``: the
    game's episodes end in win/draw/loss (``table.set_info(winner=...)``), so metrics
    report those rates. ``estimators``: role -> the advantage estimator the graph was
    designed for (``{"questioner": "role_norm", "responder": "grpo"}``), used where the
    config names none for the role (a curriculum entry's ``advantage`` overrides it,
    ``algorithm.advantage`` fills roles neither names). ``evaluate``: the evaluations the
    game offers (see there).
    """

    name: ClassVar[str] = ""
    roles: ClassVar[tuple[Role, ...]] = ()
    description: ClassVar[str] = ""
    interchangeable: ClassVar[tuple[str, ...]] = ()
    outcomes: ClassVar[bool] = False
    estimators: ClassVar[dict[str, str]] = {}

    def __init__(self, **options: Any):
        if options:
            raise TypeError(f"game {self.name!r} takes no option {sorted(options)[0]!r}")

    @classmethod
    def role_names(cls) -> tuple[str, ...]:
        """The names of ``roles`` (an entry may be a role name, before registration resolves it)."""
        return tuple(r if isinstance(r, str) else r.name for r in cls.roles)

    @classmethod
    def rotating_roles(cls) -> tuple[str, ...]:
        """The roles seat rotation and mirroring permute, in role order."""
        return tuple(r for r in cls.role_names() if r in cls.interchangeable)

    async def play(self, table: "Table") -> None:
        raise NotImplementedError

    def evaluate(self, ev: "Evaluator") -> dict[str, Any]:
        """The evaluations this game offers, run by the engine every ``eval.every`` steps
        and by ``rolekit eval``: a held-out task set (``ev.ask``), scripted opponents
        (``ev.play_against``), an exact measure. Returns ``{name: {metric: value}}``;
        the default offers none. A raising evaluation is reported, never fatal."""
        return {}


# --- validation helpers (used when a game is registered and when it is made) -------------------


def resolve_roles(cls: type, registered: Mapping[str, Role] | None = None) -> tuple[Role, ...]:
    """Check a game class before it is registered; return its ``roles`` as ``Role`` values.

    A role may be given by name: a registered role (``registered``) of that name, else a
    new ``Role(name)``. Raises ValueError whose message completes "game 'x' ...": not a
    Game subclass, no name, no roles, a role that is neither a Role nor a role name, the
    same role twice, no ``play`` or a ``play`` that is not ``async def``.
    """
    if not (isinstance(cls, type) and issubclass(cls, Game)):
        raise ValueError("is not a Game subclass")
    if not isinstance(cls.name, str) or not cls.name:
        raise ValueError("has no name")
    if not cls.roles:
        raise ValueError("has no roles")
    roles = tuple(_role(entry, registered or {}) for entry in cls.roles)
    names = [r.name for r in roles]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"has the role {name!r} twice")
    if cls.play is Game.play:
        raise ValueError("does not define play")
    if not inspect.iscoroutinefunction(cls.play):
        raise ValueError("has a play that is not 'async def'")
    return roles


def _role(entry: Any, registered: Mapping[str, Role]) -> Role:
    if isinstance(entry, Role):
        return entry
    if isinstance(entry, str):
        if isinstance(registered.get(entry), Role):
            return registered[entry]
        try:
            return Role(entry)
        except ValueError:
            pass
    raise ValueError(f"has a role {entry!r} that is neither a Role nor a role name")


def option_names(cls: type) -> tuple[str, ...]:
    """The keyword options a game class's constructor takes, read from the signatures.

    Walks the MRO: a constructor with ``**options`` is taken to pass them up to the next
    one (``TurnBasedGame`` subclasses do), ``Game``'s takes none, and one without ``**``
    ends the list.
    """
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass in (Game, object):
            break
        init = vars(klass).get("__init__")
        if init is None:
            continue
        params = list(inspect.signature(init).parameters.values())[1:]  # without self
        names.update(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return tuple(sorted(names))


@attrs.frozen
class InvalidMoveRule:
    """What an invalid move costs (SPIRAL: game ends, offender -1.5, everyone else +0.5)."""

    ends_game: bool = True
    penalty: float = -1.5
    opponent_reward: float = 0.5


@attrs.frozen
class MoveInfo:
    """What a scripted opponent is given for one move of a turn-based game."""

    game: "TurnBasedGame"
    state: Any
    role: str
    legal_actions: tuple[str, ...]


class TurnBasedGame(Game):
    """Helper for alternating-move games: implement the rules, get prompts and ``play``.

    Subclasses implement ``reset``, ``current_role``, ``observe``, ``legal_actions``,
    ``apply`` and ``returns`` (None while the game is not over), and ``rules``.
    ``parse_action`` may be overridden for free-form actions (the default matches the
    extracted answer against ``legal_actions``, ignoring case and spacing).

    Options: ``mode`` "terse" (answer only) or "reasoning" (think, then answer);
    ``thread``: each seat continues one chat (its context extends the previous one)
    instead of a fresh prompt per move; ``max_new_tokens`` per move; ``invalid_*``: what
    an invalid move costs; ``answer_prefix``: text every answer starts with and
    ``answer_stop``: text that ends it (terse mode: "[" and "]", so even a small model
    answers in the move format from the first step and stops there; "" to write freely);
    ``choose``: the model picks among the legal answers by its own likelihood of each
    (constrained decoding: no invalid moves, no format to learn first).
    """

    max_turns: ClassVar[int] = 100  # safety bound on moves in one episode
    outcomes: ClassVar[bool] = True

    @classmethod
    def rotating_roles(cls) -> tuple[str, ...]:
        """Every player: the seats of an alternating game are interchangeable."""
        return cls.role_names()

    def __init__(
        self,
        *,
        mode: str = "terse",
        thread: bool = False,
        max_new_tokens: int | None = None,
        invalid_penalty: float = -1.5,
        invalid_opponent_reward: float = 0.5,
        invalid_ends_game: bool = True,
        answer_prefix: str | None = None,
        answer_stop: str | None = None,
        choose: bool = False,
        **options: Any,
    ):
        super().__init__(**options)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.thread = thread
        # None: the run's rollout.max_new_tokens (terse) -- a game option overrides it
        self.max_new_tokens = max_new_tokens or (None if mode == "terse" else 256)
        self.invalid_move = InvalidMoveRule(invalid_ends_game, invalid_penalty, invalid_opponent_reward)
        terse = mode == "terse"
        self.answer_prefix = answer_prefix if answer_prefix is not None else ("[" if terse else "")
        self.answer_stop = answer_stop if answer_stop is not None else ("]" if terse else "")
        self.choose = choose

    def answer_lead(self, state: Any, role: str) -> str:
        """Terse mode: text the game writes at the start of the answer, before
        ``answer_prefix`` -- a recap of what the decision hinges on, put where the model
        decides (default: none). A small model attends to the last tokens far more than to
        a fact forty tokens back: Kuhn Poker's "K: [" is what lets SmolLM2-135M learn play
        that depends on its card at all (BENCHMARKS.md)."""
        return ""

    def answer_start(self, state: Any, role: str) -> str:
        """Everything the answer starts with: ``answer_lead`` + ``answer_prefix``."""
        return (self.answer_lead(state, role) if self.mode == "terse" else "") + self.answer_prefix

    # --- rules: implemented by each game ------------------------------------------------

    def reset(self, rng: random.Random) -> Any:
        raise NotImplementedError

    def current_role(self, state: Any) -> str:
        raise NotImplementedError

    def observe(self, state: Any, role: str) -> str:
        """What ``role`` sees now, as text (its own private information only)."""
        raise NotImplementedError

    def legal_actions(self, state: Any) -> Sequence[str]:
        raise NotImplementedError

    def apply(self, state: Any, action: str) -> Any:
        raise NotImplementedError

    def returns(self, state: Any) -> dict[str, float] | None:
        raise NotImplementedError

    def rules(self, role: str) -> str:
        return f"You are playing {self.name} as {role}."

    def outcome(self, state: Any) -> dict[str, Any]:
        """Game-specific facts for ``episode.info`` once over (e.g. the winner)."""
        return {}

    def evaluate(self, ev: "Evaluator") -> dict[str, Any]:
        """Two-player games: win rates against each configured scripted opponent that plays
        this game, and the exact exploitability where the game defines it (terse mode)."""
        out: dict[str, Any] = {}
        if len(self.role_names()) == 2:
            for name in ev.opponents:
                if ev.plays(name):
                    out[name] = ev.play_against(name)
        if ev.exploitability and self.mode == "terse" and hasattr(self, "information_sets") \
                and hasattr(self, "exploitability"):
            out["exploitability"] = ev.strategy()
        return out

    # --- prompts and parsing ------------------------------------------------------------

    def format_action(self, action: str) -> str:
        return f"[{action}]"

    def instructions(self, state: Any) -> str:
        legal = ", ".join(self.format_action(a) for a in self.legal_actions(state))
        if self.mode == "terse":
            return f"Legal actions: {legal}. Reply with one, nothing else."
        return (
            f"Legal actions: {legal}\nThink step by step, then give your final action as "
            f"\\boxed{{action}}, e.g. \\boxed{{{self.legal_actions(state)[0]}}}."
        )

    def prompt(self, state: Any, role: str) -> str:
        return f"{self.rules(role)}\n\n{self.observe(state, role)}\n\n{self.instructions(state)}"

    def messages(self, state: Any, role: str) -> list[dict[str, str]]:
        """The first ask of a seat as chat messages: the rules as the system message (so
        the model's own default system prompt is replaced, not added to), then the view."""
        return [{"role": "system", "content": self.rules(role)},
                {"role": "user", "content": f"{self.observe(state, role)}\n\n{self.instructions(state)}"}]

    def follow_up(self, state: Any, role: str) -> str:
        """The next message in a threaded seat's chat (rules were in the first one)."""
        return f"{self.observe(state, role)}\n\n{self.instructions(state)}"

    def parse_action(self, state: Any, text: str) -> str | None:
        """The legal action ``text`` names, or None (an invalid move). Never raises."""
        answer = extract_answer(text)
        if answer is None:
            return None
        wanted = normalize(answer)
        for action in self.legal_actions(state):
            if normalize(action) == wanted:
                return action
        return None

    # --- the episode --------------------------------------------------------------------

    async def play(self, table: "Table") -> None:
        state = self.reset(table.rng)
        last_turn: dict[str, Any] = {}
        for _ in range(self.max_turns):
            result = self.returns(state)
            if result is not None:
                break
            role = self.current_role(state)
            move = MoveInfo(self, state, role, tuple(self.legal_actions(state)))
            previous = last_turn.get(role) if self.thread else None
            text = self.follow_up(state, role) if previous is not None else self.messages(state, role)
            choices = [self.format_action(a)[len(self.answer_prefix):] for a in move.legal_actions] \
                if self.choose else ()
            budget = {} if self.max_new_tokens is None else {"max_new_tokens": self.max_new_tokens}
            [turn] = await table.ask(role, text, after=previous, info=move, prefix=self.answer_start(state, role),
                                     stop=self.answer_stop, choices=choices, **budget)
            last_turn[role] = turn
            action = self.parse_action(state, turn.text)
            table.set_action(turn, action)
            if action is None:
                table.invalid(turn, "illegal move")
                table.set_info(invalid=role)
                if self.invalid_move.ends_game:
                    result = {
                        r.name: (self.invalid_move.penalty if r.name == role else self.invalid_move.opponent_reward)
                        for r in self.roles
                    }
                    break
                table.reward(turn, self.invalid_move.penalty)
                continue
            state = self.apply(state, action)
        else:
            raise RuntimeError(f"{self.name}: no result after {self.max_turns} moves")
        for role_name, value in result.items():
            table.set_return(role_name, value)
        if table.info.get("invalid") is None:
            table.set_info(**self.outcome(state))
        winners = [r for r, v in result.items() if v == max(result.values())]
        table.set_info(winner=winners[0] if len(winners) == 1 else None)
