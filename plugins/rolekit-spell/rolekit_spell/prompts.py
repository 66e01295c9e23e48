"""SPELL's prompts, two styles.

``"paper"``: SPELL's own templates (``verl/utils/dataset/prompts.py``, Apache-2.0), kept
verbatim as package data in ``paper/``, filled the way SPELL fills them (``str.replace``
of ``{context}``, ``{examples}``, ``{content}``, ``{question}``, ``<correct_answer>``).

``"terse"`` (the default, sized for SmolLM2-135M): short instructions with a one-line
example, and the game writes the start of every reply: the questioner's JSON opens with
``{"question": "`` and a drawn question word and stops at the closing brace; answers start
with "The answer is " and stop at the end of the line; a vote starts with "Decision: [["
and stops at "]]". The examples name people and places that no generated document uses.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

from rolekit_spell.rewards import render_mc

STYLES = ("terse", "paper")


@cache
def paper(name: str) -> str:
    """One of SPELL's templates (``paper/NAME.txt``)."""
    return resources.files("rolekit_spell").joinpath("paper", f"{name}.txt").read_text(encoding="utf-8")


def examples_text(history: list[dict[str, Any]]) -> str:
    """The history memory as SPELL lists it: "### Example i:\\nQuestion: ...\\nAnswer: ...\\n"."""
    return "\n".join(f"### Example {i}:\nQuestion: {h['question']}\nAnswer: {h['answer']}\n"
                     for i, h in enumerate(history, 1))


# --- terse ---------------------------------------------------------------------------------------------

QUESTION_LEAD = '{"question": "'
ANSWER_LEAD = "The answer is "
VOTE_LEAD = "Decision: [["
TERSE_EXAMPLE = {
    "qa": '{"question": "Where was Zeno Quill born?", "answer": "Harrowgate"}',
    "math": '{"question": "How many boats did Zeno Quill buy in 1990?", "answer": "12"}',
    "mc": ('{"question": "Where was Zeno Quill born?", "options": {"A": "Harrowgate", "B": "Lowmoor", '
           '"C": "Eastwater", "D": "Fenwick"}, "answer": "A"}'),
}
TERSE_ASK = {
    "qa": "Write one question about the text below and its short answer, as JSON like:",
    "math": "Write one question about the text below whose answer is a number, and the number, as JSON like:",
    "mc": "Write one multiple-choice question about the text below, four options and the right letter, as JSON "
          "like:",
}
LEADS = {  # question words a terse question is drawn to start with
    "qa": ("Who", "Where", "What", "Which"),
    "math": ("How many", "In which year", "What was"),
    "mc": ("Who", "Where", "What", "Which"),
}
FACT_KIND = {"qa": "text", "math": "number"}  # the generator's fact kind a task's fact lead is drawn from


def fact_lead(question: str) -> str:
    """The start of a generator-written question that a fact lead keeps: its first two
    thirds of words (at least two), so the questioner still finishes the question -- which
    year, which entity -- and must find its answer in the text ("How many units did Kask
    Mills sell in 2012?" -> "How many units did Kask Mills")."""
    words = question.split()
    return " ".join(words[:max(2, len(words) * 2 // 3)])


def questioner(style: str, task: str, context: str, history: list[dict[str, Any]], letter: str,
               lead: str) -> tuple[str, str]:
    """(the questioner's prompt, its reply's start)."""
    if style == "paper":
        name = {"qa": "questioner_qa", "math": "questioner_math", "mc": "questioner_mc"}[task]
        template = paper(f"{name}_history" if history else name)
        text = template.replace("{context}", context).replace("{examples}", examples_text(history))
        return text.replace("<correct_answer>", letter), ""
    lines = [TERSE_ASK[task], TERSE_EXAMPLE[task]]
    if task == "mc":
        lines.append(f"The right answer must be {letter}.")
    if history:
        lines += ["", "Questions already asked about the text:"]
        lines += [f"{h['question']} Answer: {h['answer']}" for h in history]
        lines += ["Ask a different, harder one."]
    lines += ["", "Text:", context]  # last, where a small model attends most
    return "\n".join(lines), QUESTION_LEAD + lead


def responder(style: str, task: str, content: str, question: str, options: dict[str, str] | None) -> tuple[str, str]:
    """(the responder's prompt, its reply's start); ``content`` is the whole document, or
    "Empty" for the grounding check (SPELL's own placeholder)."""
    shown = render_mc(question, options) if options is not None else question
    if style == "paper":
        name = {"qa": "responder_qa", "math": "responder_math", "mc": "responder_mc"}[task]
        return paper(name).replace("{question}", shown).replace("{content}", content), ""
    ask = {"qa": "Answer in a few words.", "math": "Answer with a number.", "mc": "Answer with the letter."}[task]
    body = shown if options is not None else f"Question: {shown}"
    return f"{content}\n\n{body}\n{ask}", ANSWER_LEAD


def verifier(style: str, question: str, answer: str, gold: str) -> tuple[str, str]:
    """(the verifier's prompt, its reply's start): does ``answer`` mean the same as ``gold``?"""
    if style == "paper":
        text = paper("verifier").replace("{problem}", question)
        return text.replace("{answer_1}", answer).replace("{answer_2}", gold), ""
    return (f"Question: {question}\nAnswer 1: {answer}\nAnswer 2: {gold}\n"
            f"Do the two answers mean the same? Reply [[YES]] or [[NO]]."), VOTE_LEAD
