"""Playing episodes outside training: seat maps, responders, summaries (``rolekit rollout``)."""

from __future__ import annotations

import statistics
import tomllib
from collections import defaultdict
from typing import Any, Iterable

from rolekit.game import Game, option_names
from rolekit.plugins import Kernel, closest
from rolekit.table import POLICY, EpisodeSpec, Responder, ScriptedResponder
from rolekit.types import Episode

SCRIPTED = "scripted:"


def parse_value(text: str) -> Any:
    """A command-line value as TOML would read it (``3``, ``true``, ``"x"``), else the raw string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_pairs(pairs: Iterable[str], what: str) -> dict[str, Any]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{what} must look like key=value, got {pair!r}")
        out[key.strip()] = parse_value(value.strip())
    return out


def make_game(kernel: Kernel, name: str, options: dict[str, Any] | None = None) -> Game:
    """An instance of the registered game ``name``; ValueError naming a bad option (and the closest valid one)."""
    cls = kernel.games.get(name)
    options = dict(options or {})
    try:
        return cls(**options)
    except TypeError as exc:
        valid = option_names(cls)
        unknown = [key for key in options if key not in valid]
        if not unknown:
            raise ValueError(f"game {name!r}: bad option: {exc}") from None
        close = closest(unknown[0], valid)
        hint = f"; did you mean {close!r}?" if close else ""
        raise ValueError(f"game {name!r}: unknown option {unknown[0]!r}{hint} "
                         f"(options: {', '.join(valid) or 'none'})") from None


def scripted_responders(kernel: Kernel, game: Game, seats: dict[str, str]) -> dict[str, Responder]:
    """Responders for every ``scripted:NAME`` seat, checked against the game."""
    out: dict[str, Responder] = {}
    for role, who in seats.items():
        if role not in game.role_names():
            raise ValueError(f"game {game.name!r} has no role {role!r} (roles: {', '.join(game.role_names())})")
        if who == POLICY or who in out:
            continue
        if not who.startswith(SCRIPTED):
            raise ValueError(f"seat {role}={who!r}: expected 'policy' or 'scripted:NAME'")
        entry = kernel.opponents.entry(who[len(SCRIPTED):])
        if not opponent_plays(entry, game):
            raise ValueError(f"opponent {entry.name!r} plays only {', '.join(entry.meta['games'])}, "
                             f"not {game.name!r}")
        out[who] = ScriptedResponder(who, entry.obj)
    return out


def opponent_plays(entry, game: Game) -> bool:
    """Whether a registered opponent (its registry entry) plays ``game``: its ``games``
    limit (None: any turn-based game)."""
    games = entry.meta.get("games")
    return games is None or game.name in games


def specs(game: Game, episodes: int, seed: int, seats: dict[str, str], *, mirror: bool = False,
          alternate: bool = False) -> Iterable[EpisodeSpec]:
    """Episode specs with seeds seed, seed+1, ...

    ``alternate``: rotate the seat map by one role every episode (so a policy playing
    one seat against a scripted opponent plays every seat equally often).
    ``mirror``: each deal is played twice, the second time with the seat map rotated.
    """
    base = {r: seats.get(r, POLICY) for r in game.role_names()}
    for i in range(episodes):
        deal = seed + (i // 2 if mirror else i)
        shift = (i % 2 if mirror else 0) + (i if alternate else 0)
        yield EpisodeSpec(game, deal, rotate(game, base, shift))


def rotate(game: Game, seats: dict[str, str], shift: int) -> dict[str, str]:
    """The seat map with its interchangeable roles (``game.rotating_roles()``) rotated by
    ``shift``: whoever sat in the k-th of them moves to the (k + shift)-th. The other
    roles of an asymmetric graph keep their seat."""
    ring = list(game.rotating_roles())
    out = dict(seats)
    for k, role in enumerate(ring):
        out[ring[(k + shift) % len(ring)]] = seats[role]
    return out


def summarize(episodes: list[Episode]) -> dict[str, dict[str, float]]:
    """Per role: episodes, mean return, win/draw/loss/invalid rates (quarantined episodes excluded)."""
    by_role: dict[str, list[Episode]] = defaultdict(list)
    for ep in episodes:
        if ep.ok:
            for role in ep.returns:
                by_role[role].append(ep)
    out = {}
    for role, eps in sorted(by_role.items()):
        n = len(eps)
        winners = [ep.info.get("winner") for ep in eps]
        out[role] = {
            "episodes": n,
            "mean_return": statistics.fmean(ep.returns[role] for ep in eps),
            "win": sum(w == role for w in winners) / n,
            "draw": sum(w is None for w in winners) / n,
            "loss": sum(w is not None and w != role for w in winners) / n,
            "invalid": sum(ep.info.get("invalid") == role for ep in eps) / n,
        }
    return out


def transcript(episode: Episode, width: int = 400) -> str:
    """A readable transcript: each ask's prompt (once per seat), the answer, the action."""
    lines = [f"# {episode.game}  seed={episode.seed}  seats={episode.seats}  returns={episode.returns}"]
    for turn in episode.turns:
        prompt = turn.prompt if isinstance(turn.prompt, str) else str(turn.prompt)
        lines.append(f"--- {turn.role} ({turn.responder}) was asked:")
        lines.append(_clip(prompt, width))
        lines.append(f">>> {turn.role} answered: {_clip(turn.text, width)!r}   -> action {turn.action!r}")
    if episode.error:
        lines.append(f"!!! quarantined: {episode.error.strip().splitlines()[-1]}")
    if episode.info:
        lines.append(f"=== {episode.info}")
    return "\n".join(lines)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."
