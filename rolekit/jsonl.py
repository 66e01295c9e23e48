"""Reading a user's JSONL file of records (a plugin's prompts, seeds, ...), with errors that
name the file and the line."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def read_records(path: str | Path, what: str, parse: Callable[[Any], T], expected: str) -> tuple[T, ...]:
    """Each non-blank line of ``path`` as JSON, turned into a value by ``parse``.

    ``what`` names one record in errors ("prompt": "prompts file ... holds no prompt");
    ``expected`` shows a line's shape (``{"prompt": str}``). A line that is not JSON, or
    that ``parse`` refuses with a KeyError, TypeError or ValueError, is one ValueError
    naming the file, the line number, ``expected`` and why. A missing file or one with no
    record is an error too."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what}s file {path} does not exist")
    out = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(parse(json.loads(line)))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}:{number}: expected {expected} ({type(exc).__name__}: {exc})") from None
    if not out:
        raise ValueError(f"{what}s file {path} holds no {what}")
    return tuple(out)
