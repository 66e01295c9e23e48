"""Learning curves: Kuhn Poker exploitability and TicTacToe win rate vs random, by step and time.

Trains with ``rolekit.engine.Trainer`` (evaluation on) twice -- a Kuhn Poker config and
a TicTacToe config -- and reads the curves from each run's ``metrics.jsonl`` (the
``eval`` key). The untrained model is scored too, as step 0. Time is the trainer's
``elapsed``: the seconds spent in training steps (rollout + learning), evaluation and
checkpoints excluded.

Writes ``bench/out/learning/learning.png`` and ``learning.json`` (and the two run
directories beside them).

    python bench/learning.py --quick                      # tiny-random, 2 steps each
    python bench/learning.py --steps 3                    # a short real run
    python bench/learning.py --minutes 60                 # what BENCHMARKS.md records
    python bench/learning.py --config examples/kuhn_poker.toml --set algorithm.lr=3e-5
    python bench/learning.py --from-runs runs/kuhn,runs/ttt --untrained 0.366,0.53   # plot finished runs

``--from-runs`` reads the curves of finished ``rolekit train`` runs instead of training;
their untrained values (step 0) are then given by ``--untrained`` (from ``rolekit eval``).

``--config`` defaults to examples/kuhn_poker.toml where it exists (else a built-in
config), ``--tictactoe-config`` to examples/tictactoe.toml likewise. ``--steps`` and
``--minutes`` cap each run; training stops at the first evaluation past ``--minutes``.

value = exploitability of the untrained model - exploitability after training (goal:
above 0, the policy got less exploitable).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
from pathlib import Path

from harness import OUT, emit, options, say, setup

ROOT = Path(__file__).resolve().parent.parent
UNIFORM_EXPLOITABILITY = 0.4583  # the uniform random policy's (OpenSpiel convention)

BASE = {
    "seed": 0,
    "model": {"name": "smollm2-135m-instruct"},
    "rollout": {"samples_per_step": 64, "concurrency": 64, "batch_size": 64},
    "algorithm": {"steps": 200, "lr": 1e-4},
    "checkpoint": {"every": 0, "keep": 1},
    "logging": {"quiet": True},
}
BUILTIN = {
    "kuhn": {**BASE, "eval": {"every": 5, "opponents": [], "exploitability": True},
             "curriculum": [{"game": "kuhn_poker"}]},
    "tictactoe": {**BASE, "eval": {"every": 5, "episodes": 64, "opponents": ["random"], "exploitability": False},
                  "curriculum": [{"game": "tictactoe"}]},
}
QUICK = ['model.name="tiny-random"', "rollout.samples_per_step=8", "rollout.concurrency=8", "eval.every=1",
         "eval.episodes=8", "checkpoint.every=0"]


def load_config(path: str | None, builtin: dict, overrides: list[str]):
    from rolekit.config import from_dict, load, set_key

    if path and Path(path).is_file():
        return load(path, overrides), path
    if path:
        raise SystemExit(f"config not found: {path}")
    data = json.loads(json.dumps(builtin))
    for item in overrides:
        key, _, value = item.partition("=")
        set_key(data, key.strip(), value.strip())
    return from_dict(data), "built-in"


def train(config, out: Path, steps: int, minutes: float | None, device: str | None) -> list[dict]:
    """Run the Trainer to ``steps`` (or past ``minutes`` of training), one evaluation
    interval at a time; return the metrics lines, with the untrained model's eval first."""
    import attrs

    from rolekit.engine import Trainer

    if out.exists():
        shutil.rmtree(out)
    if device:
        config = attrs.evolve(config, model=attrs.evolve(config.model, device=device))
    trainer = Trainer(config, out, quiet=True)
    before = {"step": 0, "elapsed": 0.0, "eval": trainer.evaluate()}
    say(f"{out.name}: step 0 {summary(before)}")
    every = config.eval.every or steps
    while trainer.step < steps and (minutes is None or trainer.elapsed < minutes * 60):
        stop = min(steps, (trainer.step // every + 1) * every)
        trainer.config = attrs.evolve(trainer.config, algorithm=attrs.evolve(trainer.config.algorithm, steps=stop))
        with contextlib.redirect_stdout(sys.stderr):  # the trainer's log lines; stdout ends with the JSON
            history = trainer.run()
        for m in history:
            if "eval" in m:
                say(f"{out.name}: step {m['step']} ({m['elapsed']:.0f} s) {summary(m)}")
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [before] + lines


def summary(m: dict) -> str:
    parts = []
    for game, res in (m.get("eval") or {}).items():
        for k, v in res.items():
            if k == "exploitability":
                parts.append(f"{game} exploitability {v['exploitability']:.4f}")
            elif isinstance(v, dict) and "win" in v:
                parts.append(f"{game} vs {k}: win {v['win']:.2f} invalid {v.get('invalid', 0):.2f}")
    return ", ".join(parts)


def training_win(lines: list[dict], window: int = 20) -> dict[str, list]:
    """The policy's win rate in its own training games over the last ``window`` steps (all
    seats), by step: a curve between evaluations, sampled as in training."""
    per_step = []  # (step, games, wins)
    for m in lines:
        rows = [r for r in m.get("roles", {}).values() if r.get("policy_episodes")]
        games = sum(r["policy_episodes"] for r in rows)
        per_step.append((m["step"], games, sum(r["policy_episodes"] * r.get("win", 0.0) for r in rows)))
    out: dict[str, list] = {"train_step": [], "train_win": []}
    for k, (step, _, _) in enumerate(per_step):
        recent = per_step[max(0, k + 1 - window):k + 1]
        games = sum(g for _, g, _ in recent)
        if k + 1 >= window and games:
            out["train_step"].append(step)
            out["train_win"].append(sum(w for _, _, w in recent) / games)
    return out


def curves(lines: list[dict]) -> dict[str, list]:
    out: dict[str, list] = {"step": [], "elapsed": [], "exploitability": [], "win_vs_random": [], "invalid": [],
                            **training_win(lines)}
    for m in lines:
        if "eval" not in m:
            continue
        out["step"].append(m["step"])
        out["elapsed"].append(m["elapsed"])
        expl = win = invalid = None
        for res in m["eval"].values():
            if "exploitability" in res:
                expl = res["exploitability"]["exploitability"]
            if "random" in res:
                win, invalid = res["random"]["win"], res["random"].get("invalid")
        out["exploitability"].append(expl)
        out["win_vs_random"].append(win)
        out["invalid"].append(invalid)
    return out


def plot(kuhn: dict, ttt: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, x, label in ((axes[0], "step", "step"), (axes[1], "elapsed", "training time (minutes)")):
        xs = [v / 60 if x == "elapsed" else v for v in kuhn[x]]
        ax.plot(xs, kuhn["exploitability"], marker="o", label="policy")
        ax.axhline(UNIFORM_EXPLOITABILITY, color="grey", linestyle="--", label="uniform random (0.458)")
        ax.axhline(0.0, color="green", linestyle=":", label="Nash equilibrium (0)")
        ax.set_xlabel(label)
        ax.set_ylabel("Kuhn Poker exploitability")
        ax.legend()
    ax = axes[2]
    ax.plot(ttt["step"], ttt["win_vs_random"], marker="o", linestyle="none", label="win vs random (evaluation)")
    if ttt.get("train_step"):
        ax.plot(ttt["train_step"], ttt["train_win"], label="win in training games vs random (20-step window)")
    if any(v is not None for v in ttt["invalid"]):
        ax.plot(ttt["step"], ttt["invalid"], marker="x", label="invalid moves")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("step")
    ax.set_ylabel("TicTacToe rate")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = options(__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="Kuhn Poker config (default examples/kuhn_poker.toml)")
    parser.add_argument("--tictactoe-config", default=None, help="default examples/tictactoe.toml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, both configs")
    parser.add_argument("--steps", type=int, default=None, help="cap on steps (default: the config's)")
    parser.add_argument("--minutes", type=float, default=None, help="cap on training minutes per run")
    parser.add_argument("--skip-tictactoe", action="store_true")
    parser.add_argument("--from-runs", default=None, metavar="KUHN_DIR[,TTT_DIR]",
                        help="plot finished rolekit train runs instead of training")
    parser.add_argument("--untrained", default=None, metavar="EXPLOITABILITY[,WIN]",
                        help="with --from-runs: the untrained model's Kuhn exploitability and TicTacToe win rate")
    args = parser.parse_args()
    info = setup(args)
    overrides = (QUICK if args.quick else []) + (
        [f'model.name="{args.model}"'] if args.model else []) + args.set
    kuhn_path = args.config or next((str(p) for p in [ROOT / "examples/kuhn_poker.toml"] if p.is_file()), None)
    ttt_path = args.tictactoe_config or next(
        (str(p) for p in [ROOT / "examples/tictactoe.toml"] if p.is_file()), None)
    out = OUT / "learning"
    out.mkdir(parents=True, exist_ok=True)
    device = args.device if args.device != "cpu" else None

    results = {}
    if args.from_runs:
        dirs = args.from_runs.split(",")
        untrained = [float(v) for v in args.untrained.split(",")] if args.untrained else []
        for i, (name, d) in enumerate(zip(("kuhn", "tictactoe"), dirs)):
            lines = [json.loads(line) for line in (Path(d) / "metrics.jsonl").read_text().splitlines()]
            if i < len(untrained):
                key = "exploitability" if name == "kuhn" else "random"
                value = {"exploitability": untrained[i]} if name == "kuhn" else {"win": untrained[i]}
                lines.insert(0, {"step": 0, "elapsed": 0.0, "eval": {name: {key: value}}})
            results[name] = {"config": str(Path(d) / "config.toml"), "model": "from run", **curves(lines)}
    runs = [] if args.from_runs else [("kuhn", kuhn_path, BUILTIN["kuhn"])] + ([] if args.skip_tictactoe else [
        ("tictactoe", ttt_path, BUILTIN["tictactoe"])])
    for name, path, builtin in runs:
        config, source = load_config(path, builtin, overrides)
        steps = args.steps or (2 if args.quick else config.algorithm.steps)
        say(f"{name}: config {source}, model {config.model.name}, up to {steps} steps"
            + (f" or {args.minutes} minutes" if args.minutes else ""))
        lines = train(config, out / name, steps, args.minutes, device)
        results[name] = {"config": source, "model": config.model.name, **curves(lines)}
    empty = {"step": [], "elapsed": [], "exploitability": [], "win_vs_random": [], "invalid": []}
    plot(results["kuhn"], results.get("tictactoe", empty), out / "learning.png")
    (out / "learning.json").write_text(json.dumps(results, indent=2) + "\n")
    expl = [e for e in results["kuhn"]["exploitability"] if e is not None]
    ttt = results.get("tictactoe", empty)
    emit("learning", expl[0] - expl[-1], 0.0, "Kuhn exploitability drop (untrained - trained)",
         exploitability_untrained=expl[0], exploitability_final=expl[-1], exploitability_best=min(expl),
         kuhn_steps=results["kuhn"]["step"][-1], kuhn_minutes=results["kuhn"]["elapsed"][-1] / 60,
         tictactoe_win_vs_random=ttt["win_vs_random"][-1] if ttt["win_vs_random"] else None,
         tictactoe_win_untrained=ttt["win_vs_random"][0] if ttt["win_vs_random"] else None,
         tictactoe_steps=ttt["step"][-1] if ttt["step"] else None,
         plot=str((out / "learning.png").relative_to(ROOT)), json=str((out / "learning.json").relative_to(ROOT)),
         quick=args.quick, machine=info)


if __name__ == "__main__":
    main()
