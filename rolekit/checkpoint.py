"""Checkpoints: plain Hugging Face / peft directories plus ``trainer_state.pt``, written atomically.

A checkpoint is written into a temporary directory beside its final place, every file
is fsynced, and only then is the directory renamed to ``step-N``: a crash or a kill
during a save leaves the previous checkpoints intact and never a half-written one.

Beside the newest ``step-N`` directories a run keeps ``best`` (``checkpoint.keep_best``):
the checkpoint whose evaluation scored best on one metric, never pruned, rewritten only
when an evaluation beats it. ``rolekit eval --policy RUN`` evaluates it by default.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable

import torch

STATE_FILE = "trainer_state.pt"
INFO_FILE = "rolekit.json"
BEST = "best"
LOWER_IS_BETTER = ("exploitability", "loss", "invalid")  # metric names minimised by keep_best
_STEP_DIR = re.compile(r"^step-(\d+)$")


def _fsync_tree(path: Path) -> None:
    for root, _, files in os.walk(path):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                os.fsync(f.fileno())
        fd = os.open(root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_dir(final: Path, write: Callable[[Path], None]) -> Path:
    """Create directory ``final`` by calling ``write(tmp)`` and renaming tmp into place."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        write(tmp)
        _fsync_tree(tmp)
        if final.exists():
            old = final.parent / f".old-{final.name}-{os.getpid()}"
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old)
        else:
            os.rename(tmp, final)
        fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def save(root: Path, step: int, model: Any, tokenizer: Any, state: dict[str, Any], *, model_name: str,
         keep: int | None = None, name: str | None = None, info: dict[str, Any] | None = None) -> Path:
    """Write ``root/step-N`` (model or adapter, tokenizer, trainer state); prune to ``keep`` newest.

    ``name``: write ``root/NAME`` instead (``best``); ``info``: more to record in its
    ``rolekit.json`` (the best checkpoint's metric and value)."""

    def write(tmp: Path) -> None:
        if hasattr(model, "peft_config"):  # an adapter: don't let peft look the base up on a hub
            model.save_pretrained(tmp, safe_serialization=True, save_embedding_layers=False)
        else:
            model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        adapter_config = tmp / "adapter_config.json"
        if adapter_config.exists():  # point the adapter at a base that rolekit and peft can load
            data = json.loads(adapter_config.read_text())
            data["base_model_name_or_path"] = model_name
            adapter_config.write_text(json.dumps(data, indent=2))
        torch.save(state, tmp / STATE_FILE)
        (tmp / INFO_FILE).write_text(json.dumps({"step": step, "model": model_name, **(info or {})}, indent=2))

    for stale in root.glob(".tmp-*") if root.exists() else ():
        shutil.rmtree(stale, ignore_errors=True)  # left by a killed save
    path = atomic_dir(root / (name or f"step-{step}"), write)
    if keep is not None:
        for old in checkpoints(root)[:-keep]:
            shutil.rmtree(old)
    return path


def checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def latest(path: Path) -> Path | None:
    """The newest checkpoint of a run directory (or ``path`` itself if it is a checkpoint)."""
    path = Path(path)
    if (path / STATE_FILE).exists():
        return path
    found = checkpoints(path / "checkpoints") or checkpoints(path)
    return found[-1] if found else None


def load_state(checkpoint: Path) -> dict[str, Any]:
    return torch.load(Path(checkpoint) / STATE_FILE, weights_only=False)


def info(checkpoint: Path) -> dict[str, Any]:
    """A checkpoint's ``rolekit.json`` (step, model, and for ``best`` its metric); {} if absent."""
    path = Path(checkpoint) / INFO_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def for_eval(path: Path) -> tuple[Path, str]:
    """The checkpoint ``rolekit eval --policy PATH`` means, and a line saying which: a run
    directory's ``checkpoints/best`` when it has one, else its newest ``step-N``; a
    checkpoint directory itself. Raises FileNotFoundError for a run with no checkpoint."""
    path = Path(path)
    if (path / STATE_FILE).exists():
        return path, f"checkpoint {path}"
    root = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    best = root / BEST
    if (best / STATE_FILE).exists():
        kept = info(best).get("best", {})
        what = f", {kept['metric']} {kept['value']:.4f}" if "metric" in kept else ""
        return best, f"{best} (the best checkpoint: step {info(best).get('step', '?')}{what})"
    found = checkpoints(root)
    if not found:
        raise FileNotFoundError(f"{path}: no checkpoint found (expected checkpoints/best or checkpoints/step-N/)")
    return found[-1], f"{found[-1]} (the newest checkpoint; the run kept no best)"


# --- the best checkpoint's metric -------------------------------------------------------------


def metric_value(evaluation: dict[str, Any], metric: str) -> float | None:
    """The number at ``metric`` ("kuhn_poker/exploitability", "tictactoe/minimax/draw", ...)
    in one evaluation (``Trainer.evaluate``'s dict); None where it is missing. A path that
    ends at a dict holding its own last name reads that (``exploitability`` is a section
    with an ``exploitability`` figure)."""
    node: Any = evaluation
    parts = metric.split("/")
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    if isinstance(node, dict):
        node = node.get(parts[-1])
    return float(node) if isinstance(node, (int, float)) and not isinstance(node, bool) else None


def best_metric(evaluation: dict[str, Any], name: str) -> str | None:
    """The metric ``checkpoint.keep_best = name`` means for this evaluation: ``name`` itself,
    or for ``auto`` the first game's exploitability, else the first win rate it has (None
    when it has neither)."""
    if name != "auto":
        return name
    games = [(g, r) for g, r in evaluation.items() if isinstance(r, dict)]
    for game, result in games:
        if metric_value(result, "exploitability") is not None:
            return f"{game}/exploitability"
    for game, result in games:
        for key, value in result.items():
            if isinstance(value, dict) and isinstance(value.get("win"), (int, float)):
                return f"{game}/{key}/win"
    return None


def improves(metric: str, value: float, best: float) -> bool:
    """Whether ``value`` beats ``best``: lower for exploitability, loss and invalid rates, else higher."""
    lower = metric.rsplit("/", 1)[-1] in LOWER_IS_BETTER
    return value < best if lower else value > best
