"""The ``python`` verifier: code from the answer, run in the real sandbox, scored by what it does."""

from __future__ import annotations

import subprocess
import sys

from rolekit.verifiers.code import python_code, verify_python


def test_the_last_python_block_is_the_code():
    answer = "First try:\n```python\nprint(1)\n```\nBetter:\n```py\nprint(2)\n```\nand prose ```text\nx\n```"
    assert python_code(answer) == "print(2)\n"
    assert python_code("print(3)") == "print(3)"  # no fence: the whole answer


def test_prints_the_expected_output():
    answer = "Here you go:\n```python\nprint(sum(range(10)))\n```"
    assert verify_python(answer, 45).score == 1.0
    assert verify_python(answer, " 45\n").score == 1.0  # compared stripped
    wrong = verify_python(answer, 44)
    assert (wrong.score, wrong.ok, wrong.detail) == (0.0, True, "45")


def test_tests_are_appended_and_a_failed_one_scores_zero():
    answer = "```python\ndef add(a, b):\n    return a + b\n```"
    assert verify_python(answer, tests="assert add(2, 3) == 5").score == 1.0
    verdict = verify_python(answer, tests="assert add(2, 3) == 6")
    assert (verdict.score, verdict.ok, verdict.detail) == (0.0, False, "nonzero_exit")


def test_stdin_reaches_the_program():
    assert verify_python("print(int(input()) * 2)", "84", stdin="42\n").score == 1.0


def test_code_that_cannot_run_is_not_ok_with_the_sandbox_reason():
    assert verify_python("while True: pass", timeout_s=1) == verify_python("import time; time.sleep(9)", timeout_s=1)
    verdict = verify_python("while True: pass", timeout_s=1)
    assert (verdict.score, verdict.ok, verdict.detail) == (0.0, False, "timeout")
    assert verify_python("def f(:", 1).detail == "nonzero_exit"
    assert verify_python("x = bytearray(1 << 33)", memory_mb=128).detail == "memory"


def test_no_code_is_not_ok():
    for answer in ("", "   \n", "```python\n```", None):
        verdict = verify_python(answer, 1)
        assert (verdict.score, verdict.ok, verdict.detail) == (0.0, False, "no code")


def test_registered_as_a_builtin_without_starting_the_sandbox(kernel):
    code = ("import sys; from rolekit.plugins import Kernel; k = Kernel(load_entrypoints=False); "
            "assert 'python' in k.verifiers.names(); print('rolekit.sandbox' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False"]  # importing the kernel stays light
    assert kernel.verifiers.get("python")("```python\nprint('hi')\n```", "hi").score == 1.0
