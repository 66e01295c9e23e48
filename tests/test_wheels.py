"""The core and every plugin build as wheels, install from the wheels into a fresh venv, and
``rolekit games`` there lists every plugin's games; the wheels carry the package data.

Only rolekit's own distributions are installed from the wheels (``--no-deps``); the heavy
third-party dependencies (torch, transformers, ...) come from the test's own environment
through a directory of links put on the venv's path by a ``.pth`` file, leaving out every
rolekit distribution there (the editable installs), so what runs in the venv is only what
the wheels hold."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PLUGINS = {"rolekit-games": ["kuhn_poker", "negotiation", "tictactoe"],
           "rolekit-dualplay": ["azr_code", "pasodoble_math"], "rolekit-spell": ["spell"],
           "rolekit-eva": ["eva"], "rolekit-redteam": ["redteam"]}
_SKIP = ("__pycache__", "build", "dist", "*.egg-info", ".pytest_cache", "tests")


def _build(source: Path, out: Path) -> Path:
    """A wheel of ``source`` built from a copy (the shared tree gets no build/ or egg-info)."""
    copy = out / "src" / source.name
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns(*_SKIP))
    done = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(copy)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    [wheel] = [w for w in out.glob("*.whl") if w.name.split("-")[0] == source.name.replace("-", "_")]
    return wheel


def _core_source(tmp: Path) -> Path:
    core = tmp / "core" / "rolekit"
    core.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, core / name)
    shutil.copytree(ROOT / "rolekit", core / "rolekit", ignore=shutil.ignore_patterns(*_SKIP))
    return core


def _venv(tmp: Path) -> Path:
    """A fresh venv whose only extra path is a directory linking this environment's
    third-party packages (no rolekit distribution among them)."""
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    deps = tmp / "deps"
    deps.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.lower().startswith(("rolekit", "__editable__", "_rolekit")) and entry.suffix != ".pth":
            (deps / entry.name).symlink_to(entry)
    [site] = (venv / "lib").glob("python*/site-packages")
    (site / "zz-deps.pth").write_text(f"{deps}\n")
    return venv


@pytest.mark.slow
def test_core_and_plugins_install_from_wheels_and_rolekit_lists_their_games(tmp_path):
    dist = tmp_path / "dist"
    wheels = [_build(_core_source(tmp_path), dist)] + [_build(ROOT / "plugins" / p, dist) for p in PLUGINS]

    with zipfile.ZipFile(wheels[0]) as whl:
        names = set(whl.namelist())
    for asset in ("page.html", "browser.html", "report.css", "report.js"):
        assert f"rolekit/report_assets/{asset}" in names
    assert "rolekit/templates/plugin/turn-based.py.tmpl" in names and "rolekit/templates/plugin/fan-out.py.tmpl" in names
    with zipfile.ZipFile(wheels[1]) as whl:  # a plugin declares its kernel range and its entry point
        meta = whl.read(next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))).decode()
        entry_points = whl.read(next(n for n in whl.namelist() if n.endswith("entry_points.txt"))).decode()
    assert "Requires-Dist: rolekit<0.2,>=0.1" in meta
    assert "[rolekit]\ngames = rolekit_games" in entry_points

    venv = _venv(tmp_path)
    python = venv / "bin" / "python"
    pip = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                          "--no-index", *map(str, wheels)], capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stderr
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["OMP_NUM_THREADS"] = "1"

    def run(*args: str) -> str:
        done = subprocess.run(list(args), capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout

    where = json.loads(run(str(python), "-c", "import json, rolekit, rolekit_games, rolekit_spell; "
                           "print(json.dumps([rolekit.__file__, rolekit_games.__file__, rolekit_spell.__file__]))"))
    assert all(Path(p).is_relative_to(venv) for p in where)  # the wheels, not the editable installs

    games = {g["name"]: g for g in json.loads(run(str(venv / "bin" / "rolekit"), "games", "--json"))}
    plugins = {p["name"]: p for p in json.loads(run(str(venv / "bin" / "rolekit"), "plugins", "--json"))}
    for dist, names in PLUGINS.items():
        plugin = dist.removeprefix("rolekit-")
        assert plugins[plugin]["version"] == "0.1.0" and "error" not in plugins[plugin], plugins[plugin]
        for name in names:
            assert games[name]["plugin"] == plugin

    # the package data works from the installed wheel: a report renders, a plugin scaffolds
    run(str(python), "-c", "from rolekit.report import asset; assert 'rolekitReady' in asset('report.js')")
    run(str(venv / "bin" / "rolekit"), "new-plugin", "fromwheel", "--dir", str(tmp_path))
    assert (tmp_path / "rolekit-fromwheel" / "rolekit_fromwheel" / "__init__.py").exists()
