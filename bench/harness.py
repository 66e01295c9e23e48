"""What every benchmark shares: its options, side-by-side timing, and the JSON line it ends with.

Timings on a shared machine drift by a factor of two within minutes, so no benchmark
reports a figure measured alone: each runs its contenders in the same process,
interleaved (A B, B A, A B, ...), repeats the pair, and reports the median of the
per-round ratios next to the median of each contender's rate.

The last line a benchmark prints is one JSON object::

    {"bench": NAME, "value": X, "goal": Y, "unit": U, "met": X >= Y, ...details}

and the same object is written to ``bench/out/NAME.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

OUT = Path(__file__).resolve().parent / "out"


def options(description: str) -> argparse.ArgumentParser:
    """The options every benchmark takes; each script adds its own."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="the small version (under 2 minutes on 2 CPU cores)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the HF backend runs there; bf16 on CUDA)")
    parser.add_argument("--model", default=None, help="model name or directory (default: per benchmark and mode)")
    parser.add_argument("--repeats", type=int, default=None, help="rounds of the side-by-side comparison")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", default="auto",
                        help="torch CPU threads: a number, or auto = the cores other processes leave idle "
                             "(two processes each running 2 threads on 2 cores run 4x slower than one)")
    return parser


def default_model(args: argparse.Namespace) -> str:
    """--model, else tiny-random in quick mode and the embedded default in full mode."""
    return args.model or ("tiny-random" if args.quick else "smollm2-135m-instruct")


def setup(args: argparse.Namespace) -> dict[str, Any]:
    """Apply --threads and --seed; return the machine description for the JSON line."""
    import torch

    cores = os.cpu_count() or 1
    if args.threads == "auto":
        busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        threads = max(1, min(torch.get_num_threads(), cores - round(busy)))
    else:
        threads = int(args.threads)
    torch.set_num_threads(threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device is available")
    return machine(args.device, threads)


def machine(device: str, threads: int) -> dict[str, Any]:
    import torch
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu, "cores": os.cpu_count(), "threads": threads,
        "load_before": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
        "device": device, "date": datetime.date.today().isoformat(),
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def sync(device: str) -> None:
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def side_by_side(contenders: dict[str, Callable[[], float]], repeats: int, *, device: str = "cpu",
                 log: Callable[[str], None] | None = None) -> dict[str, list[float]]:
    """Run every contender ``repeats`` times, interleaved, order reversed every round.

    A contender is ``fn() -> work`` (tokens, episodes, ...); it is timed here and its
    rate (work per second) recorded. Returns name -> rates, one per round, so that
    ``ratio(rates[a], rates[b])`` compares rounds run back to back.
    """
    names = list(contenders)
    rates: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            sync(device)
            start = time.perf_counter()
            work = contenders[name]()
            sync(device)
            seconds = time.perf_counter() - start
            rates[name].append(work / seconds)
            if log:
                log(f"round {r + 1}/{repeats} {name}: {work:g} in {seconds:.2f} s = {work / seconds:.2f}/s")
    return rates


def ratio(a: list[float], b: list[float]) -> float:
    """Median over rounds of a[i] / b[i]: each ratio compares runs made back to back."""
    return statistics.median(x / y for x, y in zip(a, b))


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def say(text: str) -> None:
    """Progress on stderr, so stdout ends with the JSON line alone."""
    print(text, file=sys.stderr, flush=True)


def emit(bench: str, value: float, goal: float, unit: str, **details: Any) -> dict[str, Any]:
    """Print the result line (last on stdout) and write it to bench/out/NAME.json."""
    record = {"bench": bench, "value": _round(value), "goal": goal, "unit": unit, "met": bool(value >= goal),
              **{k: _round(v) for k, v in details.items()}}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{bench}.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record), flush=True)
    return record


def _round(x: Any) -> Any:
    if isinstance(x, float):
        return float(f"{x:.4g}")
    if isinstance(x, dict):
        return {k: _round(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_round(v) for v in x]
    return x
