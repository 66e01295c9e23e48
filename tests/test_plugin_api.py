"""Plugin-API compatibility: a plugin declares the kernels it is built for as its dependency
on rolekit; a plugin built for another kernel is reported by name and never imported.

The plugins here are real distributions (a .dist-info with METADATA and entry_points.txt on
sys.path), found through importlib.metadata like any pip-installed plugin."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rolekit.plugins import Kernel, incompatible, kernel_range, kernel_version

MODULE = '''
from rolekit import Game, Role
from rolekit.hookspecs import hookimpl
IMPORTED = True

class {cls}(Game):
    name = "{game}"
    roles = (Role("solo"),)
    async def play(self, table):
        await table.ask("solo", "hi")

@hookimpl
def rolekit_register_games(registry):
    registry.add({cls})
'''


def _distribution(site: Path, name: str, requires: str | None) -> None:
    """Install plugin ``name`` (module rolekit_NAME, game NAME) as a distribution into ``site``."""
    module = f"rolekit_{name}"
    (site / f"{module}.py").write_text(MODULE.format(cls=name.title(), game=name))
    info = site / f"rolekit_{name}-1.0.dist-info"
    info.mkdir(parents=True)
    metadata = f"Metadata-Version: 2.1\nName: rolekit-{name}\nVersion: 1.0\n"
    if requires:
        metadata += f"Requires-Dist: {requires}\n"
    (info / "METADATA").write_text(metadata)
    (info / "entry_points.txt").write_text(f"[rolekit]\n{name} = {module}\n")


def test_the_kernel_range_is_this_minor_series_while_0x():
    assert kernel_range("0.1.0") == ">=0.1,<0.2"
    assert kernel_range("0.3.7") == ">=0.3,<0.4"
    assert kernel_range("1.2.0") == ">=1.2,<2"
    assert kernel_version() == importlib.metadata.version("rolekit")


def test_shipped_plugins_declare_a_range_that_contains_this_kernel():
    for dist in ("rolekit-games", "rolekit-dualplay", "rolekit-spell", "rolekit-eva", "rolekit-redteam"):
        pyproject = Path(__file__).parents[1] / "plugins" / dist / "pyproject.toml"
        assert f'"rolekit{kernel_range()}"' in pyproject.read_text(), dist
        assert incompatible(importlib.metadata.distribution(dist)) is None


def test_a_plugin_built_for_another_kernel_is_reported_by_name_and_not_imported(tmp_path, monkeypatch, capsys):
    _distribution(tmp_path, "future", "rolekit>=0.2,<0.3")
    _distribution(tmp_path, "current", f"rolekit{kernel_range()}")
    _distribution(tmp_path, "ageless", None)  # declares nothing: loaded
    _distribution(tmp_path, "extraonly", 'rolekit>=9; extra == "dev"')  # only for an extra: not a kernel range
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()

    kernel = Kernel()
    assert "future" not in kernel.games
    assert {"current", "ageless", "extraonly"} <= set(kernel.games.names())
    assert "rolekit_future" not in sys.modules  # never imported
    err = capsys.readouterr().err
    assert (f"rolekit: plugin 'future' (rolekit_future) is built for rolekit<0.3,>=0.2 but this is rolekit "
            f"{kernel_version()}") in err
    row = {r["name"]: r for r in kernel.describe()}["future"]
    assert "is built for rolekit<0.3,>=0.2" in row["error"] and "games" not in row


def test_rolekit_plugins_lists_the_incompatible_plugin_with_its_reason(tmp_path):
    _distribution(tmp_path, "future", "rolekit>=0.2,<0.3")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "rolekit.cli", "plugins", "--json"], capture_output=True,
                         text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert rows["future"]["version"] == "1.0"
    assert "install a rolekit-future release built for rolekit>=0.1,<0.2" in rows["future"]["error"]


@pytest.mark.parametrize("version,expected", [("0.1.5", None), ("0.2.0", "is built for"), ("0.0.9", "is built for")])
def test_incompatible_reads_the_rolekit_requirement(tmp_path, version, expected):
    _distribution(tmp_path, "x", "rolekit>=0.1,<0.2")
    [dist] = importlib.metadata.distributions(path=[str(tmp_path)])
    problem = incompatible(dist, version)
    assert problem is None if expected is None else expected in problem
