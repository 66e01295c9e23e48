"""The ``math`` verifier: is an answer mathematically equal to the expected one? (math-verify)

``verify_math(answer, expected)`` scores 1.0 when the answer's final value equals the
expected value numerically or symbolically (``0.5`` = ``\\frac{1}{2}`` = ``2/4``,
``x^2+1`` = ``1+x^2``, ``5 cm`` = ``5``), else 0.0. The answer's value is the content of
its *last* ``\\boxed{...}`` (braces may nest), as PasoDoble and most math RL graders
take it; without a box, whatever math-verify finds last in the text (``$...$``, a plain
number), unless ``require_boxed``. Parsing and comparison are math-verify's (sympy).

Never raises (``Verdict(0, ok=False, detail=why)`` instead) and never hangs:

* only the last ``max_chars`` characters of the answer are read;
* a value whose size is out of reach (``2^{10^9}``, ``(10^{10})!``) is refused before
  sympy tries to evaluate it;
* math-verify's own timeouts use ``signal.alarm``, which works only in the main thread:
  there each parse and comparison gets ``timeout_s`` seconds; in any other thread its
  timeouts are off (``parsing_timeout=None``), and the two guards above are what bound
  the work.

The module imports math-verify (and sympy) on first use, so registering it is cheap.
"""

from __future__ import annotations

import math
import threading
from fractions import Fraction
from typing import Any

from rolekit.types import Verdict

MAX_CHARS = 2000  # an answer's last characters that are read (its final value is at the end)
MAX_DIGITS = 10_000  # refuse a value that may exceed 10**MAX_DIGITS (its size estimated before evaluating)
BOXED = "\\boxed{"


def last_boxed(text: str) -> str | None:
    """The content of the last balanced ``\\boxed{...}`` in ``text`` (nested braces kept), or None."""
    if not isinstance(text, str):
        return None
    start = text.rfind(BOXED)
    while start != -1:
        i, depth = start + len(BOXED), 1
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            return text[start + len(BOXED): i - 1]
        start = text.rfind(BOXED, 0, start)  # unclosed (cut off): the one before it
    return None


def verify_math(answer: str, expected: Any, *, expected_boxed: bool = False, require_boxed: bool = False,
                timeout_s: int = 3, max_chars: int = MAX_CHARS, **kwargs) -> Verdict:
    """1.0 when ``answer``'s final value equals ``expected``, else 0.0; ``ok=False`` (score 0)
    when no value can be read from the answer (detail says why).

    ``expected``: a value (``"1/2"``, ``"\\frac{1}{2}"``, ``"0.5"``, ``"x^2+1"``, ``0.5``,
    ``Fraction(1, 2)``); with ``expected_boxed`` an answer text whose last ``\\boxed{}``
    is the value (PasoDoble: the proposer's boxed answer against the solver's).
    ``require_boxed``: an answer without a ``\\boxed{}`` is not read at all (ok False).
    ``timeout_s``: math-verify's limit per parse and comparison (main thread only).
    """
    try:
        return _verify(answer, expected, expected_boxed, require_boxed, timeout_s, max_chars)
    except Exception as exc:  # math-verify and sympy swallow most errors; anything left is a verdict too
        return Verdict(0.0, ok=False, detail=f"math verifier failed: {type(exc).__name__}: {exc}"[:300])


def _verify(answer, expected, expected_boxed, require_boxed, timeout_s, max_chars) -> Verdict:
    from math_verify import verify

    seconds = timeout_s if threading.current_thread() is threading.main_thread() else None
    if expected_boxed:
        gold_text = last_boxed(str(expected)[-max_chars:])
        if gold_text is None:
            return Verdict(0.0, ok=False, detail="no \\boxed{} in the expected answer")
    else:
        gold_text = _gold_text(expected)[-max_chars:]
    gold, why = _parse_value(gold_text, seconds, wrap=True)
    if gold is None:
        return Verdict(0.0, ok=False, detail=f"expected answer {gold_text[:80]!r}: {why}")

    if not isinstance(answer, str):
        return Verdict(0.0, ok=False, detail=f"the answer is a {type(answer).__name__}, not text")
    tail = answer[-max_chars:]
    boxed = last_boxed(tail)
    if boxed is None and require_boxed:
        return Verdict(0.0, ok=False, detail="no \\boxed{} answer")
    got, why = _parse_value(boxed if boxed is not None else tail, seconds, wrap=boxed is not None)
    if got is None:
        return Verdict(0.0, ok=False, detail=f"answer {_shown(boxed, tail)!r}: {why}")

    same = verify(gold, got, timeout_seconds=seconds)
    return Verdict(float(bool(same)), detail=f"{_text(got)} {'=' if same else '!='} {_text(gold)}")


def _gold_text(expected: Any) -> str:
    """An expected value as text math-verify parses: a box's content, or the value itself."""
    if isinstance(expected, Fraction):
        return f"\\frac{{{expected.numerator}}}{{{expected.denominator}}}"
    if isinstance(expected, float) and expected.is_integer():
        return str(int(expected))
    text = str(expected).strip()
    boxed = last_boxed(text)
    return boxed if boxed is not None else text


def _parse_value(text: str, seconds: int | None, *, wrap: bool) -> tuple[list | None, str]:
    """math-verify's parse of ``text`` -- ``wrap``: a bare value (a box's content, a gold
    answer), read as LaTeX first, then as a plain expression -- or (None, why)."""
    from math_verify import parse

    text = text.strip()
    if not text:
        return None, "empty"
    if not wrap or "$" in text:
        attempts = [text]
    elif "**" in text:  # Python's power ("2**3"): LaTeX would read it as 2
        attempts = [text, f"${text}$"]
    else:
        attempts = [f"${text}$", text]
    for attempt in attempts:
        parsed = parse(attempt, parsing_timeout=seconds)
        if any(not isinstance(x, str) for x in parsed):  # a value, not only math-verify's raw-string fallback
            if any(_too_big(x) for x in parsed):
                return None, "refused: a value too large to compare"
            return parsed, ""
    return None, "nothing mathematical found"


def _shown(boxed: str | None, tail: str) -> str:
    return f"\\boxed{{{boxed}}}" if boxed is not None else tail[-60:]


def _text(parsed: list) -> str:
    """The extracted answer as math-verify read it (its string form)."""
    return str(parsed[-1])[:60]


# --- the size guard ------------------------------------------------------------------------


def _too_big(value: Any) -> bool:
    """Whether a parsed value (sympy, or a fallback string) may be astronomically large."""
    try:
        return _digits(value) > MAX_DIGITS
    except (RecursionError, OverflowError):
        return True


def _digits(e: Any) -> float:
    """An upper bound on log10|e| over its numeric parts, computed without evaluating e (a
    symbol counts as one digit): 2^{1000} gives 301, 2^{10^9} 3e8, 1000! 3000."""
    import sympy

    if isinstance(e, sympy.MatrixBase):
        return max((_digits(x) for x in e), default=0.0)
    if not isinstance(e, sympy.Basic):  # a fallback string
        return 0.0
    if e.is_Integer:
        return math.log10(abs(int(e))) if e else 0.0
    if e.is_Rational:
        return max(math.log10(abs(e.p)), math.log10(e.q))
    if e.is_Float:
        _, _, exponent, bits = e._mpf_
        return abs(exponent + bits) * math.log10(2)
    if e.is_Atom:
        return 1.0
    if isinstance(e, sympy.Pow):
        return _power(_digits(e.base), _digits(e.exp))
    if isinstance(e, sympy.exp):
        return _power(1.0, _digits(e.args[0]))
    if isinstance(e, (sympy.factorial, sympy.factorial2, sympy.subfactorial, sympy.gamma)):
        n = _digits(e.args[0])  # n! < n^n
        return math.inf if n > 300 else 10**n * max(n, 1.0)
    parts = [_digits(a) for a in e.args]
    if isinstance(e, sympy.Mul):
        return sum(parts)
    return max(parts, default=0.0) + math.log10(len(parts) + 1)  # a sum, a set, a function of its arguments


def _power(base_digits: float, exponent_digits: float) -> float:
    """Digits of b**x from those of b and x (|x| <= 10**exponent_digits)."""
    if exponent_digits > 300:
        return math.inf
    return base_digits * 10**exponent_digits
