"""rolekit new-plugin writes a package that installs, is found, passes its own test and trains.

The package is installed with pip into a throwaway ``--target`` directory put on
PYTHONPATH (so its entry point is visible to rolekit and .venv is left as it was), and its
own generated test runs with pytest in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from rolekit.cli import main
from rolekit.plugins import kernel_range
from rolekit.scaffold import files, new_plugin


def _run(args: list[str], *, cwd: Path, site: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
@pytest.mark.parametrize("graph,name", [("turn-based", "race"), ("fan-out", "backwards")])
def test_generated_plugin_installs_passes_its_own_test_and_trains(graph, name, tmp_path, capsys):
    assert main(["new-plugin", name, "--graph", graph, "--dir", str(tmp_path)]) == 0
    root = tmp_path / f"rolekit-{name}"
    assert f"pip install -e {root}" in capsys.readouterr().out

    site = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                          "--target", str(site), str(root)], capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr

    games = {g["name"]: g for g in json.loads(_run(["-m", "rolekit.cli", "games", "--json"], cwd=tmp_path,
                                                   site=site).stdout)}
    assert games[name]["plugin"] == name
    assert games[name]["roles"] == (["player_0", "player_1"] if graph == "turn-based" else ["proposer", "solver"])

    own = _run(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=root, site=site)
    assert own.returncode == 0, own.stdout + own.stderr
    assert "2 passed" in own.stdout

    out = tmp_path / "run"
    train = _run(["-m", "rolekit.cli", "train", f"{name}.toml", "--out", str(out), "--quiet",
                  "--set", "model.name=tiny-random", "--set", "algorithm.steps=1", "--set",
                  "rollout.samples_per_step=4", "--set", "eval.at_start=false"], cwd=root, site=site)
    assert train.returncode == 0, train.stderr
    [metrics] = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert metrics["samples"] == 4 and {k.split("/")[0] for k in metrics["roles"]} == {name}
    assert "held_out" in metrics["eval"][name] if graph == "fan-out" else "random" in metrics["eval"][name]


def test_package_metadata_declares_entry_point_and_kernel_range(tmp_path):
    root = new_plugin("race", directory=tmp_path)
    project = tomllib.loads((root / "pyproject.toml").read_text())
    assert project["project"]["name"] == "rolekit-race"
    assert project["project"]["entry-points"]["rolekit"] == {"race": "rolekit_race"}
    assert project["project"]["dependencies"] == [f"rolekit{kernel_range()}"]
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == [
        "README.md", "pyproject.toml", "race.toml", "rolekit_race/__init__.py", "tests/test_race.py"]
    for text in files("race", "fan-out").values():
        assert "$" not in text  # every template field was filled


@pytest.mark.parametrize("name,message", [("Race", "not a plugin name"), ("my-game", "e.g. 'my_game'"),
                                          ("2x", "not a plugin name"), ("class", "Python keyword")])
def test_bad_names_are_one_line_errors(name, message, tmp_path, capsys):
    assert main(["new-plugin", name, "--dir", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_an_existing_directory_is_not_overwritten(tmp_path, capsys):
    (tmp_path / "rolekit-race").mkdir()
    assert main(["new-plugin", "race", "--dir", str(tmp_path)]) == 2
    assert "already exists" in capsys.readouterr().err
