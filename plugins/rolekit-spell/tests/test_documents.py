"""The document generator, its facts, the held-out set and a user's corpus."""

import re

import pytest

from rolekit_spell.documents import MAX_PARAGRAPHS, generate, held_out, load_corpus, synthetic
from rolekit_spell.rewards import rule_score, to_number


def test_generated_documents_are_seeded_and_of_the_asked_length():
    a, b = synthetic(5, paragraphs=6, seed=3), synthetic(5, paragraphs=6, seed=3)
    assert a == b and all(len(d.paragraphs) == 6 for d in a)
    assert synthetic(5, paragraphs=6, seed=4) != a and len({d.text() for d in a}) == 5
    assert len(generate(0, paragraphs=MAX_PARAGRAPHS).paragraphs) == MAX_PARAGRAPHS
    with pytest.raises(ValueError, match="at most"):
        generate(0, paragraphs=MAX_PARAGRAPHS + 1)
    with pytest.raises(ValueError, match="at least 1"):
        generate(0, paragraphs=0)
    assert generate(0, 4).text([2, 0]) == "\n".join([generate(0, 4).title, *generate(0, 4).paragraphs[::2]])


def test_every_fact_is_checkable_against_its_own_paragraph():
    for doc in synthetic(20, paragraphs=8):
        assert doc.facts
        for fact in doc.facts:
            paragraph = doc.paragraphs[fact.paragraph]
            assert rule_score("math" if fact.kind == "number" else "qa", fact.answer, fact.answer) == 1.0
            if fact.kind == "text":
                assert fact.answer.removeprefix("by ") in paragraph, (fact, paragraph)
            elif "left" in fact.question:  # n - sold
                n, sold = (int(x) for x in re.findall(r"with (\d+) .* sold (\d+)", paragraph)[0])
                assert to_number(fact.answer) == n - sold
            elif "together" in fact.question:  # the first and last year's units
                units = [int(u.replace(",", "")) for u in re.findall(r"\| \d{4} \| ([\d,]+) \|", paragraph)]
                assert to_number(fact.answer) == units[0] + units[-1]
            elif "passed" in fact.question:
                years = [int(y) for y in re.findall(r"in (\d{4})", paragraph)]
                assert to_number(fact.answer) == years[-1] - years[0]
            else:
                assert fact.answer in paragraph, (fact, paragraph)


def test_paragraphs_are_distractors_for_each_other():
    doc = generate(0, paragraphs=8)
    born = [f for f in doc.facts if f.question.startswith("Where was")]
    assert len(born) >= 2 and len({f.question for f in born}) == len(born)  # two people, asked apart


def test_the_held_out_set_is_fixed_and_not_the_training_set():
    a = held_out(16)
    assert a == held_out(16) and [f.kind for _, f in a[:4]] == ["text", "number", "text", "number"]
    training = {d.text() for d in synthetic(64)}
    assert not any(doc.text() in training for doc, _ in a)
    assert all(fact in doc.facts for doc, fact in a)


def test_a_folder_corpus_and_a_jsonl_corpus(tmp_path):
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("Title A\n\nFirst paragraph.\n\nSecond\nparagraph.")
    (folder / "sub" / "b.md").write_text("# B\n\nOnly one.")
    (folder / "c.txt").write_text("A title and nothing else")  # no paragraph: skipped
    (folder / "d.csv").write_text("x,y")
    docs = load_corpus(folder)
    assert [d.id for d in docs] == ["a.txt", "sub/b.md"]
    assert docs[0].title == "Title A" and docs[0].paragraphs == ("First paragraph.", "Second paragraph.")
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text('{"id": "x", "title": "T", "paragraphs": ["p1", "p2"]}\n\n{"text": "one\\n\\ntwo"}\n')
    docs = load_corpus(jsonl)
    assert [(d.id, d.paragraphs) for d in docs] == [("x", ("p1", "p2")), ("3", ("one", "two"))]


def test_corpus_mistakes_are_one_line_errors_naming_the_path(tmp_path):
    bad = tmp_path / "bad.jsonl"
    for text, message in (("{oops\n", "line 1: not JSON"), ("[1]\n", "line 1: a document is a JSON object"),
                          ('{"paragraphs": [1]}\n', 'line 1: needs "text" or a list of "paragraphs"')):
        bad.write_text(text)
        with pytest.raises(ValueError, match=message):
            load_corpus(bad)
    with pytest.raises(ValueError, match="neither a folder"):
        load_corpus(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no document"):
        load_corpus(tmp_path / "empty")
