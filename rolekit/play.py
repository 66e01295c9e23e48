"""``rolekit play``: a person plays a turn-based game against a policy in the terminal."""

from __future__ import annotations

import random
import sys
from typing import Callable

from rolekit import rollout
from rolekit.evaluate import load_policy
from rolekit.game import MoveInfo
from rolekit.plugins import Kernel
from rolekit.table import POLICY, EpisodeSpec, ScriptedResponder, Scheduler
from rolekit.types import Episode

HUMAN = "human"
MAX_LISTED = 12  # legal moves listed after an illegal input


def legal_moves_text(game, legal) -> str:
    shown = [game.format_action(a) for a in legal[:MAX_LISTED]]
    more = f", ... ({len(legal)} listed in all)" if len(legal) > MAX_LISTED else ""
    return ", ".join(shown) + more


def human_player(read: Callable[[str], str] = input, write: Callable[[str], None] = print
                 ) -> Callable[[MoveInfo, random.Random], str]:
    """A scripted-opponent function that shows the seat's view and asks a person for a
    move until it is legal. Raises EOFError when input runs out."""

    def move(info: MoveInfo, rng: random.Random) -> str:
        game, state = info.game, info.state
        write("")
        write(f"=== your move ({info.role}) ===")
        write(game.observe(state, info.role))
        write(game.instructions(state).splitlines()[0])
        while True:
            text = read("your move> ").strip()
            # "4", "[4]" and "\boxed{4}" all name the same move.
            action = game.parse_action(state, text) or game.parse_action(state, game.format_action(text))
            if action is not None:
                return action
            write(f"illegal move {text!r}; legal moves: {legal_moves_text(game, list(info.legal_actions))}")

    return move


def report(episode: Episode, write: Callable[[str], None] = print) -> str:
    """Print how the game ended from the person's point of view; return win/draw/loss."""
    human = next(role for role, who in episode.seats.items() if who == HUMAN)
    write("")
    write("=== game over ===")
    if episode.error:
        write(f"the game failed: {episode.error.strip().splitlines()[-1]}")
        return "error"
    invalid = episode.info.get("invalid")
    if invalid is not None and invalid != human:
        last = next(t for t in reversed(episode.turns) if t.role == invalid)
        write(f"your opponent made an invalid move: {last.text!r}")
    for key, value in episode.info.items():
        if key in ("winner", "invalid", "dropped"):
            continue
        if isinstance(value, str) and "\n" in value:
            write(f"{key}:\n{value}")
        elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            write(f"{key}:\n" + "\n".join(f"  {v}" for v in value))
        else:
            write(f"{key}: {value}")
    winner = episode.info.get("winner")
    result = "draw" if winner is None else ("win" if winner == human else "loss")
    words = {"win": "You won", "draw": "It is a draw", "loss": "You lost"}[result]
    write(f"{words} (your return {episode.returns[human]:+g}, opponent {episode.returns[_other(episode, human)]:+g}).")
    return result


def _other(episode: Episode, role: str) -> str:
    return next(r for r in episode.returns if r != role)


def cmd_play(args) -> int:
    kernel = Kernel(disable=getattr(args, "disable", None) or ())
    game = rollout.make_game(kernel, args.game, rollout.parse_pairs(args.option, "--option"))
    roles = game.role_names()
    if len(roles) != 2 or not hasattr(game, "legal_actions"):
        raise ValueError(f"rolekit play needs a two-player turn-based game; {args.game!r} is not one")
    seat = args.seat or roles[0]
    if seat not in roles:
        raise ValueError(f"--seat {seat!r}: game {args.game!r} has roles {', '.join(roles)}")
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    if not args.policy.startswith(rollout.SCRIPTED):
        import torch

        torch.manual_seed(seed)
        print(f"loading {args.policy} ...", file=sys.stderr)
    policy = load_policy(kernel, game, args.policy, device=args.device, temperature=args.temperature)
    print(f"{args.game}: you are {seat}, playing against {args.policy} (seed {seed}).")
    responders = {HUMAN: ScriptedResponder(HUMAN, human_player()), POLICY: policy.responder}
    seats = {role: HUMAN if role == seat else POLICY for role in roles}
    try:
        [episode] = Scheduler(responders, kernel=kernel, concurrency=1).run([EpisodeSpec(game, seed, seats)])
    except EOFError:
        print("\nrolekit: no more input; game abandoned", file=sys.stderr)
        return 1
    report(episode)
    return 0 if episode.ok else 1


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("play", help="play a game against a policy in the terminal")
    p.add_argument("--game", required=True)
    p.add_argument("--policy", default="smollm2-135m-instruct",
                   help="smollm2-135m-instruct, tiny-random, a model or run checkpoint directory, or scripted:NAME")
    p.add_argument("--seat", help="the role you play (default: the first, e.g. player_0)")
    p.add_argument("--seed", type=int, default=None, help="the deal (default: random)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="game option")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_play)
