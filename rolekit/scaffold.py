"""``rolekit new-plugin NAME [--graph turn-based|fan-out]``: a ready pip package to start from.

Writes ``rolekit-NAME/`` (into the current directory, or ``--dir``)::

    pyproject.toml          distribution rolekit-NAME, entry point rolekit: NAME = rolekit_NAME,
                            the rolekit versions it is built for
    README.md
    NAME.toml               a config that trains the game on the embedded default model
    rolekit_NAME/__init__.py  a one-page game and the hook that registers it
    tests/test_NAME.py      registers the plugin in a fixture, trains two steps on tiny-random

``turn-based`` is a two-player ``TurnBasedGame`` (rules only: Race to 10); ``fan-out`` is a
hand-written ``Game`` where one ask spawns n answers whose rewards flow back to the
asker (proposer -> solvers). The files are ``string.Template`` texts shipped as package
data in ``rolekit/templates/plugin/``. The package installs and trains as written.
"""

from __future__ import annotations

import importlib.resources
import keyword
import re
import string
from pathlib import Path

from rolekit.plugins import kernel_range

GRAPHS = ("turn-based", "fan-out")
TEMPLATES = "rolekit.templates"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def check_name(name: str) -> str:
    """``name`` if it makes a plugin name, a module suffix and a game name; else ValueError."""
    if not _NAME.match(name):
        hint = re.sub(r"[^a-z0-9_]", "_", name.lower()).strip("_")
        hint = f" (e.g. {hint!r})" if hint and _NAME.match(hint) else ""
        raise ValueError(f"new-plugin: {name!r} is not a plugin name: lowercase letters, digits and _, "
                         f"starting with a letter{hint}")
    if keyword.iskeyword(name):
        raise ValueError(f"new-plugin: {name!r} is a Python keyword")
    return name


def _template(name: str) -> string.Template:
    return string.Template(importlib.resources.files(TEMPLATES).joinpath("plugin", name).read_text(encoding="utf-8"))


def files(name: str, graph: str = "turn-based") -> dict[str, str]:
    """Relative path -> text of the package ``new_plugin`` writes."""
    check_name(name)
    if graph not in GRAPHS:
        raise ValueError(f"new-plugin: --graph must be one of {', '.join(GRAPHS)}, got {graph!r}")
    module = f"rolekit_{name}"
    title = name.replace("_", " ").title()
    values = {
        "name": name, "module": module, "game": name, "graph": graph, "title": title,
        "class_name": title.replace(" ", "") or "Game",
        "kernel_range": kernel_range(), "target": 10, "solvers": 4,
        "description": {"turn-based": f"{title}: a two-player turn-based game for rolekit.",
                        "fan-out": f"{title}: a proposer -> solvers role graph for rolekit."}[graph],
    }
    fill = lambda template: _template(template).substitute(values)  # noqa: E731 (a missing key raises)
    return {
        "pyproject.toml": fill("pyproject.toml.tmpl"),
        "README.md": fill("README.md.tmpl"),
        f"{name}.toml": fill("config.toml.tmpl"),
        f"{module}/__init__.py": fill(f"{graph}.py.tmpl"),
        f"tests/test_{name}.py": fill("test_game.py.tmpl"),
    }


def new_plugin(name: str, *, graph: str = "turn-based", directory: str | Path = ".") -> Path:
    """Write ``directory/rolekit-NAME/`` and return its path; refuses to overwrite one."""
    contents = files(name, graph)
    root = Path(directory) / f"rolekit-{name}"
    if root.exists():
        raise ValueError(f"new-plugin: {root} already exists")
    for relative, text in contents.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


# --- rolekit new-plugin ---------------------------------------------------------------------------


def cmd_new_plugin(args) -> int:
    root = new_plugin(args.name, graph=args.graph, directory=args.dir)
    print(f"rolekit: wrote {root} ({args.graph} game {args.name!r}); next:\n"
          f"  pip install -e {root}\n  python -m pytest {root / 'tests'}\n"
          f"  rolekit train {root / (args.name + '.toml')}")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("new-plugin", help="write a ready pip package for a new game (rolekit-NAME/)")
    p.add_argument("name", metavar="NAME", help="the plugin's and its game's name (lowercase, digits, _)")
    p.add_argument("--graph", choices=GRAPHS, default="turn-based",
                   help="turn-based: a two-player TurnBasedGame; fan-out: one ask spawns n answers whose "
                        "rewards flow back (default: turn-based)")
    p.add_argument("--dir", default=".", help="where to write rolekit-NAME/ (default: here)")
    p.set_defaults(func=cmd_new_plugin)
