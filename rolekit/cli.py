"""The ``rolekit`` command line."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table as RichTable

from rolekit.plugins import Kernel, PluginError, UnknownNameError

err = Console(stderr=True, soft_wrap=True)


def _kernel(args) -> Kernel:
    return Kernel(disable=getattr(args, "disable", None) or ())


# --- rolekit plugins / games ---------------------------------------------------------------


def cmd_plugins(args) -> int:
    rows = _kernel(args).describe()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = RichTable("plugin", "version", "registers")
    for row in rows:
        what = escape("; ".join(f"{k}: {', '.join(v)}" for k, v in row.items() if isinstance(v, list)))
        if "error" in row:  # a skipped plugin, or a plugin some of whose registrations were skipped
            what = "\n".join(filter(None, [what, f"[red]{escape(row['error'])}"]))
        table.add_row(row["name"], row["version"] or "-", what)
    Console().print(table)
    return 0


def _summary(cls) -> str:
    """A game's ``description``, else the first line of its docstring, else ""."""
    lines = (cls.__doc__ or "").strip().splitlines()
    return cls.description or (lines[0] if lines else "")


def cmd_games(args) -> int:
    kernel = _kernel(args)
    rows = [{"name": e.name, "plugin": e.plugin, "roles": list(e.obj.role_names()), "description": _summary(e.obj)}
            for e in kernel.games]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = RichTable("game", "plugin", "roles", "description")
    for row in rows:
        table.add_row(row["name"], row["plugin"], ", ".join(row["roles"]), escape(row["description"]))
    Console().print(table)
    return 0


# --- rolekit rollout -------------------------------------------------------------------------


def cmd_rollout(args) -> int:
    from rolekit import rollout
    from rolekit.backends.hf import HFBackend
    from rolekit.chat import ChatTokenizer
    from rolekit.models import load_model
    from rolekit.table import ModelResponder, Scheduler

    import torch

    kernel = _kernel(args)
    game = rollout.make_game(kernel, args.game, rollout.parse_pairs(args.option, "--option"))
    seats = {k: str(v) for k, v in rollout.parse_pairs(args.seat, "--seat").items()}
    responders = rollout.scripted_responders(kernel, game, seats)
    torch.manual_seed(args.seed)
    err.print(f"loading {args.model} ...")
    loaded = load_model(args.model, device=args.device)
    backend = HFBackend(loaded.model, loaded.tokenizer, max_batch_size=args.batch_size)
    chat = ChatTokenizer(loaded.tokenizer)
    responders["policy"] = ModelResponder("policy", backend, chat, temperature=args.temperature,
                                          max_new_tokens=args.max_new_tokens)
    scheduler = Scheduler(responders, kernel=kernel, concurrency=args.concurrency)
    specs = rollout.specs(game, args.episodes, args.seed, seats, alternate=args.alternate)
    start = time.perf_counter()
    episodes = []
    with _progress(args, args.episodes, f"playing {args.game}") as advance:
        for episode in scheduler.run(specs):
            episodes.append(episode)
            advance()
    seconds = time.perf_counter() - start
    summary = rollout.summarize(episodes)
    policy_turns = sum(1 for ep in episodes for t in ep.turns if t.responder == "policy")
    report = {
        "game": args.game, "model": args.model, "episodes": len(episodes),
        "quarantined": sum(not ep.ok for ep in episodes), "seconds": round(seconds, 3),
        "backend_calls": backend.calls, "generated_tokens": backend.tokens_generated,
        "tokens_per_second": round(backend.tokens_generated / seconds, 1) if seconds else None,
        "policy_turns": policy_turns, "roles": summary,
    }
    sample = next((ep for ep in episodes if ep.ok), episodes[0] if episodes else None)
    failed = bool(episodes) and not any(ep.ok for ep in episodes)
    if args.json:
        report["sample_transcript"] = rollout.transcript(sample) if sample else None
        print(json.dumps(report, indent=2))
        return _all_quarantined(args.game, episodes) if failed else 0
    if failed:
        return _all_quarantined(args.game, episodes)
    table = RichTable("role", "episodes", "mean return", "win", "draw", "loss", "invalid",
                      title=f"{args.game} on {args.model}")
    for role, s in summary.items():
        table.add_row(role, str(s["episodes"]), f"{s['mean_return']:+.3f}", *(f"{s[k]:.2f}" for k in
                      ("win", "draw", "loss", "invalid")))
    console = Console()
    console.print(table)
    console.print(f"{len(episodes)} episodes in {seconds:.1f}s, {backend.calls} batched backend calls, "
                  f"{backend.tokens_generated} tokens ({report['tokens_per_second']} tok/s)")
    if sample:
        console.rule("sample transcript")
        console.print(rollout.transcript(sample), markup=False, highlight=False)
    return 0


def _all_quarantined(game: str, episodes) -> int:
    """Every episode raised: say so with the first one's traceback, and fail (exit 1)."""
    first = episodes[0]
    err.print(f"[red]rolekit: every episode of {game!r} was quarantined[/red] ({len(episodes)}); "
              f"the first (seed {first.seed}) raised:", highlight=False)
    err.print(first.error.rstrip(), markup=False, highlight=False)
    return 1


# --- rolekit train -------------------------------------------------------------------------------


def cmd_train(args) -> int:
    import attrs

    from rolekit import config as configuration
    from rolekit.engine import Trainer, TrainingAborted

    cfg = configuration.load(args.config, args.set)
    if args.ray_address:
        cfg = attrs.evolve(cfg, distributed=attrs.evolve(cfg.distributed, ray_address=args.ray_address))
    out = Path(args.out) if args.out else Path("runs") / f"{Path(args.config).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    if args.resume and not args.out:
        out = Path(args.resume)
    from rolekit.distributed.learner import DataParallel, follow

    data_parallel = DataParallel.from_env(cfg.model.device)  # launched by torchrun: this rank; else None
    if data_parallel is not None and data_parallel.rank > 0:  # only learns, on the batches rank 0 hands out
        cfg = attrs.evolve(cfg, distributed=attrs.evolve(cfg.distributed, ray_address=None))
        follow(Trainer(cfg, out, resume=Path(args.resume) if args.resume else None, kernel=_kernel(args), quiet=True))
        return 0
    err.print(f"rolekit: training {', '.join(g.game for g in cfg.curriculum)} on {cfg.model.name}; run dir {out}")
    trainer = Trainer(cfg, out, resume=Path(args.resume) if args.resume else None, kernel=_kernel(args),
                      quiet=args.quiet or None, tensorboard=args.tensorboard)
    try:
        trainer.run()
    except TrainingAborted as exc:
        err.print(f"[red]rolekit: training aborted:[/red] {exc}")
        return 1
    except KeyboardInterrupt:
        path = trainer.save()
        err.print(f"rolekit: interrupted; saved {path} (continue with --resume {out})")
        return 130
    finally:
        if data_parallel is not None:
            data_parallel.stop()  # the other ranks return
    err.print(f"rolekit: done; metrics in {out / 'metrics.jsonl'}, checkpoints in {out / 'checkpoints'}")
    return 0


class _progress:
    """A rich progress bar on stderr (nothing under --json/--quiet or when not a terminal)."""

    def __init__(self, args, total: int, label: str):
        self.enabled = not getattr(args, "json", False) and not getattr(args, "quiet", False)
        self.total, self.label = total, label

    def __enter__(self):
        if not self.enabled:
            return lambda: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        self.progress = Progress("{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 console=err, transient=True)
        self.progress.start()
        task = self.progress.add_task(self.label, total=self.total)
        return lambda: self.progress.advance(task)

    def __exit__(self, *exc):
        if self.enabled:
            self.progress.stop()


# --- entry point -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rolekit", description="Train one language model by self-play "
                                     "across many roles.")
    parser.add_argument("--disable", action="append", metavar="PLUGIN", help="block a plugin by name")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("plugins", help="list installed plugins and what they register")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("games", help="list the games (role graphs) plugins provide")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_games)

    p = sub.add_parser("rollout", help="play episodes with a model and print per-role returns")
    p.add_argument("--game", required=True)
    p.add_argument("--model", default="smollm2-135m-instruct",
                   help="smollm2-135m-instruct (embedded default), tiny-random, or a model directory")
    p.add_argument("--episodes", type=int, default=16)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=64, help="max sequences per generate call")
    p.add_argument("--seat", action="append", default=[], metavar="ROLE=WHO",
                   help="who plays a role: policy (default) or scripted:NAME")
    p.add_argument("--alternate", action="store_true", help="rotate seats every episode")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="game option")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="the policy's sampling temperature (0: greedy; default 1, as in training)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_rollout)
    p = sub.add_parser("train", help="train the policy by self-play from a TOML config")
    p.add_argument("config", help="a TOML config (see examples/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set algorithm.steps=10")
    p.add_argument("--out", help="run directory (default runs/<config>-<time>)")
    p.add_argument("--resume", metavar="DIR", help="continue a run (its directory or a checkpoint)")
    p.add_argument("--quiet", action="store_true", help="log lines only, no progress display")
    p.add_argument("--tensorboard", action="store_true",
                   help="also write TensorBoard event files to RUN_DIR/tensorboard (the tensorboard extra)")
    p.add_argument("--ray-address", metavar="ADDRESS",
                   help="generate on Ray rollout workers: 'auto' or HOST:PORT joins a running cluster, 'local' "
                        "starts one (sets distributed.ray_address; the distributed extra)")
    p.set_defaults(func=cmd_train)
    from rolekit import evaluate, export, play, report, scaffold  # noqa: E402 (subcommands defined in their own modules)
    evaluate.add_parser(sub), play.add_parser(sub), report.add_parser(sub)
    export.add_parser(sub), scaffold.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (PluginError, UnknownNameError, ValueError, FileNotFoundError) as exc:
        err.print(f"[red]rolekit: error:[/red] {exc}", markup=True, highlight=False)
        return 2
    except Exception as exc:
        from rolekit.models import ModelError

        if not isinstance(exc, ModelError):
            raise
        err.print(f"[red]rolekit: error:[/red] {exc}", markup=True, highlight=False)
        return 2
    except KeyboardInterrupt:
        err.print("rolekit: interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
