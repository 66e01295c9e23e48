"""Weights & Biases logging on a real wandb, offline (WANDB_MODE=offline: no network).

The offline run's records are read back from the ``.wandb`` file W&B writes (its LevelDB
log format, parsed into W&B's own protobuf ``Record``): the run's config and tags, one
history row per step with exactly the TensorBoard scalars, the report artifact and the
transcripts table."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest

import rolekit_games
from rolekit.config import from_dict
from rolekit.engine import Trainer
from rolekit.plugins import Kernel
from rolekit.report import scalars
from rolekit.wandb_logger import RUN_ID_FILE, TRANSCRIPT_COLUMNS

# the wandb extra: make setup installs it, and CI must fail rather than skip without it
import wandb  # noqa: E402,F401


def _records(path: Path):
    """The records of a .wandb file: a 7-byte header (":W&B", 0xBEE1, version), then LevelDB
    log blocks of 32 KiB holding chunks (checksum, length, type: full/first/middle/last)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    ident, magic, _ = struct.unpack("<4sHB", data[:7])
    assert ident == b":W&B" and magic == 0xBEE1
    pos, parts = 7, []
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7]) if left >= 7 else (0, 0, 0)
        if kind == 0:  # block padding
            pos += left
            continue
        parts.append(data[pos + 7:pos + 7 + length])
        pos += 7 + length
        if kind in (1, 4):  # full, last
            record = pb.Record()
            record.ParseFromString(b"".join(parts))
            parts = []
            yield record
        elif kind == 2:  # first
            parts = parts[-1:]


def _config(steps: int, **logging):
    return from_dict({
        "seed": 0, "model": {"name": "tiny-random"},
        "rollout": {"samples_per_step": 8, "concurrency": 8, "max_new_tokens": 8},
        "algorithm": {"steps": steps, "lr": 1e-2}, "eval": {"every": 1, "episodes": 4},
        "checkpoint": {"every": 1}, "logging": {"wandb": True, **logging},
        "curriculum": [{"game": "kuhn_poker", "options": {"choose": True}}]})


def _train(out: Path, steps: int, resume: Path | None = None, **logging) -> list[dict]:
    kernel = Kernel([rolekit_games], load_entrypoints=False)
    return Trainer(_config(steps, **logging), out, kernel=kernel, quiet=True, resume=resume).run()


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


def test_offline_run_has_the_config_the_tensorboard_scalars_the_report_and_transcripts(tmp_path):
    out = tmp_path / "kuhn"
    history = _train(out, 2, wandb_project="rk-test", wandb_name="first", wandb_tags=["ci", "kuhn"])
    [run_file] = (out / "wandb").glob("offline-run-*/run-*.wandb")
    records = list(_records(run_file))
    [run] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert (run.project, run.display_name, list(run.tags)) == ("rk-test", "first", ["ci", "kuhn"])
    assert run.run_id == (out / RUN_ID_FILE).read_text() and run_file.name == f"run-{run.run_id}.wandb"
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["curriculum"][0]["game"] == "kuhn_poker"
    assert config["curriculum"][0]["advantage"] == {"player_0": "rae", "player_1": "rae"}  # resolved
    assert config["logging"]["wandb_tags"] == ["ci", "kuhn"] and config["algorithm"]["steps"] == 2

    rows = [r.history for r in records if r.WhichOneof("record_type") == "history"]
    assert [row.step.num for row in rows] == [1, 2]
    for row, metrics in zip(rows, history):
        logged = {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in row.item}
        expected = scalars(metrics)
        assert expected and {k for k in logged if not k.startswith(("_", "transcripts/"))} == expected.keys()
        assert all(math.isclose(logged[k], v, rel_tol=1e-6, abs_tol=1e-9) for k, v in expected.items())
    assert logged["transcripts/_type"] == "table-file"  # logged with the last step
    tags = set().union(*(scalars(m) for m in history))
    assert {"kuhn_poker/player_0/mean_return", "eval/kuhn_poker/random/win", "train/loss"} <= tags

    artifacts = {r.artifact.type: r.artifact for r in records if r.WhichOneof("record_type") == "artifact"}
    assert [m.path for m in artifacts["report"].manifest.contents] == ["report.html"]
    assert [m.path for m in artifacts["run_table"].manifest.contents] == ["transcripts.table.json"]
    [table] = (run_file.parent / "files" / "media" / "table").glob("transcripts_*.table.json")
    table = json.loads(table.read_text())
    episodes = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert table["columns"] == list(TRANSCRIPT_COLUMNS)
    assert len(table["data"]) == len(episodes)  # few enough to keep all
    assert {(row[0], row[1], row[2]) for row in table["data"]} == {(e["step"], e["game"], e["seed"]) for e in episodes}
    assert all("## player_" in row[5] for row in table["data"])


def test_a_resumed_run_continues_the_same_wandb_run(tmp_path):
    out = tmp_path / "kuhn"
    _train(out, 1)
    first = (out / RUN_ID_FILE).read_text()
    _train(out, 2, resume=out)
    assert (out / RUN_ID_FILE).read_text() == first
    files = sorted((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert [f.name for f in files] == [f"run-{first}.wandb"] * 2
    steps = [r.history.step.num for r in _records(files[1]) if r.WhichOneof("record_type") == "history"]
    assert steps == [2]


def test_without_the_key_nothing_goes_to_wandb(tmp_path):
    config = _config(1, wandb=False)
    Trainer(config, tmp_path, kernel=Kernel([rolekit_games], load_entrypoints=False), quiet=True).run()
    assert not (tmp_path / "wandb").exists() and not (tmp_path / RUN_ID_FILE).exists()
