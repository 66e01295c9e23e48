"""Answer extraction: the move is the last ``\\boxed{...}`` or ``[...]`` in a reply."""

from __future__ import annotations

import re

MAX_ANSWER_CHARS = 200  # longer bracketed spans are prose, not a move
_BRACKET = re.compile(r"\[([^\[\]\n]{0,%d})\]" % MAX_ANSWER_CHARS)
_TEXT_WRAPPER = re.compile(r"^\\(?:text|textbf|mathrm|texttt)\{(.*)\}$", re.S)


def _boxed_spans(text: str) -> list[tuple[int, str]]:
    """(end offset, content) of every balanced ``\\boxed{...}``."""
    spans = []
    start = text.find("\\boxed{")
    while start != -1:
        i = start + len("\\boxed{")
        depth = 1
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0 and i - start <= MAX_ANSWER_CHARS + 8:
            spans.append((i, text[start + len("\\boxed{") : i - 1]))
        start = text.find("\\boxed{", start + 1)
    return spans


def extract_answer(text: str) -> str | None:
    """The content of whichever of ``\\boxed{...}`` / ``[...]`` ends last, stripped; None if neither.

    Never raises: any string is acceptable input (malformed output is an invalid move,
    decided by the game, not a crash).
    """
    if not isinstance(text, str):
        return None
    candidates = _boxed_spans(text)
    candidates += [(m.end(), m.group(1)) for m in _BRACKET.finditer(text)]
    if not candidates:
        return None
    _, answer = max(candidates, key=lambda c: c[0])
    answer = answer.strip()
    while True:
        if (m := _TEXT_WRAPPER.match(answer)) is not None:
            answer = m.group(1).strip()
        elif len(answer) >= 2 and answer[0] == "[" and answer[-1] == "]":
            answer = answer[1:-1].strip()
        else:
            break
    return answer.strip().strip("\"'`").strip()


def normalize(action: str) -> str:
    """Case- and space-insensitive form used to match an answer against legal actions."""
    return " ".join(action.lower().split())
