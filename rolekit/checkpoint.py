"""Checkpoints: plain Hugging Face / peft directories plus ``trainer_state.pt``, written atomically.

A checkpoint is written into a temporary directory beside its final place, every file
is fsynced, and only then is the directory renamed to ``step-N``: a crash or a kill
during a save leaves the previous checkpoints intact and never a half-written one.
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
         keep: int | None = None) -> Path:
    """Write ``root/step-N`` (model or adapter, tokenizer, trainer state); prune to ``keep`` newest."""

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
        (tmp / "rolekit.json").write_text(json.dumps({"step": step, "model": model_name}, indent=2))

    for stale in root.glob(".tmp-step-*") if root.exists() else ():
        shutil.rmtree(stale, ignore_errors=True)  # left by a killed save
    path = atomic_dir(root / f"step-{step}", write)
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
