"""The plugin template in examples/ installs as a real distribution, shows up, plays, and goes away."""

import json
import os
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).parents[1] / "examples" / "rolekit-arithmetic"


def rolekit(*args, path=None):
    env = {**os.environ, "PYTHONPATH": str(path)} if path else {k: v for k, v in os.environ.items()
                                                              if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-m", "rolekit.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_installed_example_plugin_appears_plays_and_disappears(tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(EXAMPLE)],
                   check=True, capture_output=True, timeout=300)
    games = {g["name"]: g for g in json.loads(rolekit("games", "--json", path=target).stdout)}
    assert games["arithmetic"]["plugin"] == "arithmetic"
    assert games["arithmetic"]["roles"] == ["proposer", "solver"]

    out = rolekit("rollout", "--game", "arithmetic", "--model", "tiny-random", "--episodes", "3", "--json", path=target)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["episodes"] == 3 and report["quarantined"] == 0
    # a random model never writes a well-formed sum: the proposer is penalised for the format
    assert report["roles"]["proposer"]["mean_return"] == -1.0

    without = {g["name"] for g in json.loads(rolekit("games", "--json").stdout)}
    assert "arithmetic" not in without
