from hypothesis import given, strategies as st

from rolekit.answers import extract_answer


def test_last_of_boxed_or_brackets_wins():
    assert extract_answer("I think [check] but finally \\boxed{bet}") == "bet"
    assert extract_answer("\\boxed{bet} hmm, no: [check]") == "check"
    assert extract_answer("[Offer: 3 Wood, 1 Sheep -> 2 Brick]") == "Offer: 3 Wood, 1 Sheep -> 2 Brick"


def test_wrappers_are_peeled():
    assert extract_answer("\\boxed{\\text{fold}}") == "fold"
    assert extract_answer("\\boxed{[4]}") == "4"
    assert extract_answer("[ 'call' ]") == "call"


def test_nested_braces_in_boxed():
    assert extract_answer("so \\boxed{\\frac{1}{2}}.") == "\\frac{1}{2}"


def test_adversarial_strings():
    assert extract_answer("") is None
    assert extract_answer("no answer here") is None
    assert extract_answer("unclosed [bet") is None
    assert extract_answer("\\boxed{never closed") is None
    assert extract_answer("[[[[]]]]") == ""
    assert extract_answer("]][[ [a] ][") == "a"
    assert extract_answer("[" + "x" * 5000 + "]") is None  # prose in brackets is not a move
    assert extract_answer("[line\nbreak]") is None
    assert extract_answer("\\boxed{}") == ""
    assert extract_answer(None) is None
    assert extract_answer("emoji [🂡] ok") == "🂡"


@given(st.text())
def test_never_raises(text):
    out = extract_answer(text)
    assert out is None or isinstance(out, str)


@given(st.text(alphabet=st.characters(blacklist_characters="[]\n\\{}"), min_size=1, max_size=50), st.text(
    alphabet=st.characters(blacklist_characters="[]\\"), max_size=50))
def test_a_bracketed_answer_is_found_after_any_prose(answer, prose):
    got = extract_answer(f"{prose} [{answer}]")
    assert got == answer.strip().strip("\"'`").strip() or got == answer.strip().strip("\"'`").strip().strip("\"'`")
