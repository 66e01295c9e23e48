"""The ``math`` verifier (math-verify): equivalence, the last box, refusals, threads, bounds."""

import threading
import time
from fractions import Fraction

import pytest
from hypothesis import given, settings, strategies as st

from rolekit.verifiers.math import last_boxed, verify_math


def score(answer, expected, **kwargs):
    verdict = verify_math(answer, expected, **kwargs)
    assert verdict.ok, verdict
    return verdict.score


@pytest.mark.parametrize("answer, expected", [
    ("2/4", "1/2"),
    ("0.5", "\\frac{1}{2}"),
    ("\\boxed{\\frac{1}{2}}", "0.5"),
    ("\\boxed{\\dfrac{2}{4}}", "1/2"),
    ("$1 + x^2$", "x^2+1"),
    ("\\boxed{4}", 4),
    ("\\boxed{0.5}", 0.5),
    ("\\boxed{3/4}", Fraction(3, 4)),
    ("\\boxed{-3}", "-3"),
    ("\\boxed{1,000}", "1000"),
    ("\\boxed{\\frac{1}{3}}", "0.333333"),
    ("\\boxed{2**3}", "8"),
    ("\\boxed{2^{10}}", "1024"),
])
def test_equivalent_values_score_one(answer, expected):
    assert score(answer, expected) == 1.0


@pytest.mark.parametrize("answer, expected", [
    ("\\boxed{5 \\text{ cm}}", "5"),
    ("It is 5 cm long.", "5"),
    ("\\boxed{5}", "5 cm"),
    ("$5\\,\\mathrm{cm}$", "5"),
])
def test_units_are_ignored(answer, expected):
    assert score(answer, expected) == 1.0


def test_boxed_with_nested_braces():
    assert last_boxed("so \\boxed{\\frac{\\sqrt{2}}{2}}.") == "\\frac{\\sqrt{2}}{2}"
    assert score("so \\boxed{\\frac{\\sqrt{2}}{2}}.", "\\frac{1}{\\sqrt{2}}") == 1.0


def test_the_last_box_wins():
    assert score("First \\boxed{3}, no wait: \\boxed{4}.", "4") == 1.0
    assert score("First \\boxed{4}, no wait: \\boxed{3}.", "4") == 0.0
    assert score("\\boxed{4}, and the 3 at the end is not boxed: 3", "4") == 1.0
    assert last_boxed("\\boxed{1} then \\boxed{2 cut off") == "1"  # an unclosed box is not an answer


@pytest.mark.parametrize("answer, expected", [("\\boxed{7}", "8"), ("0.5", "1/3"), ("$x^2 - 1$", "x^2+1"),
                                              ("\\boxed{0.3333}", "1/3")])
def test_wrong_answers_score_zero(answer, expected):
    assert score(answer, expected) == 0.0


@pytest.mark.parametrize("answer", ["I don't know", "", "\\boxed{}", "   ", None, 42, "\\boxed{@@}", "$#$"])
def test_nothing_readable_is_not_ok(answer):
    verdict = verify_math(answer, "5")
    assert verdict.score == 0.0 and not verdict.ok and verdict.detail


def test_an_unreadable_gold_is_not_ok():
    verdict = verify_math("\\boxed{5}", "")
    assert not verdict.ok and "expected" in verdict.detail


def test_gold_as_an_answer_text_with_its_own_box():
    proposer = "<answer>Half of 8 is 4, so \\boxed{4}.</answer>"
    assert score("I get \\boxed{4}", proposer, expected_boxed=True) == 1.0
    assert score("I get \\boxed{5}", proposer, expected_boxed=True) == 0.0
    missing = verify_math("\\boxed{4}", "<answer>4</answer>", expected_boxed=True)
    assert not missing.ok and "expected" in missing.detail


def test_require_boxed():
    verdict = verify_math("The answer is 4", "4", require_boxed=True)
    assert verdict.score == 0.0 and not verdict.ok and "boxed" in verdict.detail
    assert score("The answer is 4", "4") == 1.0


def test_works_from_a_non_main_thread():
    results = []
    worker = threading.Thread(target=lambda: results.extend([
        verify_math("\\boxed{\\frac{2}{4}}", "0.5"), verify_math("\\boxed{7}", "8"),
        verify_math("\\boxed{2^{999999999}}", "5"), verify_math("nothing", "5")]))
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive()
    assert [(v.score, v.ok) for v in results] == [(1.0, True), (0.0, True), (0.0, False), (0.0, False)]


@pytest.mark.parametrize("answer", [
    "\\boxed{2^{999999999}}", "\\boxed{9**9**9**9}", "$10^{10^{10}}$", "\\boxed{(10^{10})!}",
    "\\boxed{2^{2^{2^{100}}}}", "\\boxed{e^{10^{12}}}", "x" * 1_000_000 + " \\boxed{3}",
    "\\boxed{" + "{" * 5000 + "1" + "}" * 5000 + "}", "(" * 3000 + "1" + ")" * 3000,
])
@pytest.mark.parametrize("where", ["main", "thread"])
def test_pathological_input_returns_fast(answer, where):
    out = []
    start = time.monotonic()
    if where == "main":
        out.append(verify_math(answer, "5"))
    else:
        worker = threading.Thread(target=lambda: out.append(verify_math(answer, "5")))
        worker.start()
        worker.join(timeout=10)
    assert time.monotonic() - start < 3.0
    assert out and out[0].score == 0.0


def test_large_but_reasonable_values_are_still_compared():
    assert score("\\boxed{2^{1000}}", str(2**1000)) == 1.0
    assert score("\\boxed{20!}", "2432902008176640000") == 1.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(list("0123456789+-*/^()\\{}$., xabcdefrtq") + ["\\boxed{", "\\frac", "\\sqrt"]),
                max_size=40).map("".join))
def test_never_raises(text):
    verdict = verify_math(text, "1/2")
    assert verdict.score in (0.0, 1.0) and (verdict.ok or verdict.score == 0.0)


def test_registered_as_a_builtin_without_loading_math_verify(kernel):
    import subprocess
    import sys

    code = ("import sys; from rolekit.plugins import Kernel; k = Kernel(load_entrypoints=False); "
            "assert 'math' in k.verifiers.names(); print('sympy' in sys.modules, 'math_verify' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]  # importing the kernel stays light
    assert kernel.verifiers.get("math")("\\boxed{\\frac{6}{8}}", "0.75").score == 1.0
