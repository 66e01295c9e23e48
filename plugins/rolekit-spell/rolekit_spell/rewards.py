"""SPELL's parsing, rule checks and rewards as pure functions (arXiv 2509.23863; the code
read is ``Tongyi-Zhiwen/Qwen-Doc/SPELL``: ``verl/trainer/ppo/core_algos.py``, the trainer
``ray_spell_trainer.py``, ``verl/utils/dataset/spell_dataset.py`` and
``verl/utils/reward_score/{docqa,docmath,long}.py``).

Task types, SPELL's three: ``qa`` (doc_general_qa: a short text answer, checked by
``sub_em_strict``), ``math`` (docmath_qa: a non-zero number, 0.15 % relative tolerance)
and ``mc`` (doc_mc: four options A-D, the letter checked exactly).
"""

from __future__ import annotations

import json
import math
import re
import string
from collections import Counter
from typing import Any

TASKS = ("qa", "math", "mc")
LETTERS = ("A", "B", "C", "D")
SIGMA = 0.5 / 3  # the questioner's Gaussian: width 1/6 around s = 0.5 (core_algos.questioner_mapping_function)
TOLERANCE = 0.0015  # docmath.within_eps: |p - g| <= 0.15 % of |g|
MAX_ANSWER_TOKENS = 40  # _parse_doc_general_qa drops (without penalty) an answer longer than this
UNPARSABLE = -1.0  # a verifier vote that says neither YES nor NO


# --- the questioner's record ---------------------------------------------------------------------


def after_think(text: str) -> str:
    """The text after the last ``</think>`` (``extract_solution``)."""
    return text.split("</think>")[-1].strip()


def parse_record(text: str) -> dict | None:
    """The JSON object a questioner's reply ends with (``get_record``): the last ```json
    block that parses, else the whole reply after ``</think>``; None when neither is an
    object. Control characters are removed first, as SPELL does."""
    text = "".join(c for c in after_think(text) if ord(c) >= 32 or c in "\n\r\t")
    for block in reversed(re.findall(r"```json(.*?)```", text, re.S)):
        try:
            found = json.loads(block.strip())
        except (json.JSONDecodeError, RecursionError):
            continue
        return found if isinstance(found, dict) else None
    try:
        found = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return None
    return found if isinstance(found, dict) else None


_WORD_TOKEN = re.compile(r"[^\W_]+|[^\w\s]|_")


def word_tokens(text: str) -> int:
    """Runs of letters and digits plus other non-space characters: a stand-in for the
    tokenizer SPELL counts an answer's length with."""
    return len(_WORD_TOKEN.findall(text))


def check_record(task: str, record: dict | None) -> tuple[str, str, dict[str, str] | None, str]:
    """``(status, question, options, why)`` for a parsed record (SPELL's ``_parse_<task>``):
    status "ok" (question and answer usable), "format" (a missing or mistyped key: the
    questioner's -1 bad case) or "value" (well formed but unusable: dropped without
    penalty). On "ok" the second value is the question and ``why`` holds the gold answer."""
    if record is None:
        return "format", "", None, "no JSON object"
    question, answer = record.get("question"), record.get("answer")
    if not isinstance(question, str) or not question.strip():
        return "format", "", None, "no \"question\" string"
    if task == "math":
        if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
            return "format", "", None, "no \"answer\" value"
        value = to_number(str(answer))
        if value is None or value == 0 or not math.isfinite(value):
            return "value", "", None, "the answer is not a non-zero number"
        return "ok", question.strip(), None, str(answer).strip()
    if not isinstance(answer, str) or not answer.strip():
        return "format", "", None, "no \"answer\" string"
    if task == "mc":
        options = record.get("options")
        if not isinstance(options, dict) or not all(isinstance(options.get(k), str) for k in LETTERS):
            return "format", "", None, "no options A-D"
        letter = mc_letter(answer) or answer.strip()
        if letter not in LETTERS:
            return "format", "", None, "the answer is not one of A-D"
        return "ok", question.strip(), {k: options[k].strip() for k in LETTERS}, letter
    if word_tokens(answer) > MAX_ANSWER_TOKENS:
        return "value", "", None, f"the answer is longer than {MAX_ANSWER_TOKENS} tokens"
    return "ok", question.strip(), None, answer.strip()


# --- the responder's answer and the rule check ----------------------------------------------------


def last_boxed(text: str) -> str | None:
    """The content of the last balanced ``\\boxed{...}``, or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed")
    while i < len(text):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start + len("\\boxed{"): i]
        i += 1
    return None


_ANSWER_IS = re.compile(r"answer is", re.I)


def extract_answer(text: str) -> str | None:
    """A responder's answer: the last ``\\boxed{}``, else what follows the last "answer is"
    up to the end of its line, without a trailing full stop (docqa/docmath
    ``parse_model_answer``); None when there is neither, or only the template's
    "(insert answer here)"."""
    text = after_think(text).replace("*", "")
    boxed = last_boxed(text)
    if boxed is not None:
        answer = boxed.strip()
    else:
        found = list(_ANSWER_IS.finditer(text))
        if not found:
            return None
        answer = text[found[-1].end():].strip().split("\n")[0]
    answer = answer.strip().strip(".").strip()
    if not answer or "insert answer here" in answer:
        return None
    return answer


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation (docqa.normalize_answer): lower case, no punctuation, no
    articles, single spaces."""
    text = "".join(c for c in text.lower() if c not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def sub_em(prediction: str, gold: str) -> float:
    """``sub_em_strict``: 1 when the normalised gold is a substring of the normalised
    prediction (both non-empty), else 0."""
    p, g = normalize_answer(prediction), normalize_answer(gold)
    return float(bool(p) and bool(g) and g in p)


_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")  # the comma of "5,335"
_NOISE = ("£", "€", "¥", "$", "%", "°", "`", "million", "billion", "thousand", "USD", "RMB", "approximately")


def to_number(text: str) -> float | None:
    """The one number in ``text`` (thousands separators, currency, units and "≈"/"=" leads
    removed, as docmath.normalize does), or None when there is none or more than one. Never
    evaluates anything."""
    text = text.strip().rstrip(".")
    for sep in ("=", "≈"):
        text = text.split(sep)[-1]
    for noise in _NOISE:
        text = text.replace(noise, " ")
    text = _THOUSANDS.sub("", text)
    found = _NUMBER.findall(text)
    if len(found) != 1 or len(found[0]) > 40:
        return None
    value = float(found[0])
    return value if math.isfinite(value) else None


def same_number(p: float, g: float) -> bool:
    """docmath.compare_two_numbers: within 0.15 % of the gold, or the same at a scale of
    100/1000/1e6/1e9 (a percentage given as a fraction, thousands as units), or equal
    when both are rounded up to 3 decimals."""
    def within(x: float, gold: float) -> bool:
        return abs(x - gold) <= abs(gold) * TOLERANCE

    big, small = max(abs(g), abs(p)), min(abs(g), abs(p))
    for scale in (100, 1000, 1_000_000, 1_000_000_000):
        if small <= 2 * big / scale and within(small * scale, big):
            return True
    if math.ceil(big * 1000) / 1000 == math.ceil(small * 1000) / 1000:
        return True
    return within(p, g)


def mc_letter(text: str) -> str | None:
    """The option letter of an MC answer (long.parse_model_answer): ``\\boxed{X}``, "answer
    is (X)", "answer is X", or a bare letter; None otherwise."""
    text = text.replace("*", "").strip()
    for pattern in (r"\\boxed\{([A-D])\}", r"answer is \(([A-D])\)", r"answer is ([A-D])\b"):
        found = re.findall(pattern, text, re.I)
        if found:
            return found[-1] if found[-1] in LETTERS else None  # "answer is a ...": no letter
    bare = text.strip("() .")
    return bare if bare in LETTERS else None


def rule_score(task: str, answer: str | None, gold: str) -> float:
    """The rule reward of an extracted answer (None: none found, 0): ``sub_em`` for qa,
    ``same_number`` for math, the letter for mc."""
    if answer is None:
        return 0.0
    if task == "math":
        p, g = to_number(answer), to_number(gold)
        return float(p is not None and g is not None and same_number(p, g))
    if task == "mc":
        return float(mc_letter(answer) == gold)
    return sub_em(answer, gold)


def in_text(task: str, gold: str, text: str) -> bool:
    """Whether a questioner's gold answer occurs in ``text`` (what it was shown): qa, its
    normalised form as a substring of the normalised text; math, a number of the text equal
    to it ("5,335" is 5335; exactly: the rule check's 0.15 % would let 1962 stand for a
    year 1961); mc answers are letters, always True. The
    ``answer_in_text`` option's check: at 135M most answers that are not in the text are
    made up, and a made-up label gives the responders nothing right to learn from."""
    if task == "mc":
        return True
    if task == "math":
        g = to_number(gold)
        numbers = _NUMBER.findall(_THOUSANDS.sub("", text))
        return g is not None and any(float(n) == g for n in numbers if len(n) <= 40)
    g = normalize_answer(gold)
    return bool(g) and g in normalize_answer(text)


# --- the verifier -------------------------------------------------------------------------------------


def parse_vote(text: str) -> float:
    """A verifier's vote (``_self_verification``): 1 for YES, 0 for NO, -1 when it says
    neither or both -- "[[YES]]" without "[[NO]]", or "YES" without "NO"."""
    judge = after_think(text)
    if ("[[YES]]" in judge and "[[NO]]" not in judge) or ("YES" in judge and "NO" not in judge):
        return 1.0
    if ("[[NO]]" in judge and "[[YES]]" not in judge) or ("NO" in judge and "YES" not in judge):
        return 0.0
    return UNPARSABLE


def majority(votes: list[float]) -> float:
    """The most common vote, ties to the vote seen first (``Counter.most_common``); an
    unparsable vote counts as a vote, so the majority may be -1."""
    return Counter(votes).most_common(1)[0][0]


def responder_reward(rule: float, votes: list[float] | None) -> float:
    """r_res = max(r_rule, v_maj); the rule score alone when no verifier judged the answer
    or their majority is unparsable (SPELL keeps the rule score where llm_reward < 0)."""
    if not votes:
        return rule
    v = majority(votes)
    return rule if v < 0 else max(rule, v)


def vote_rewards(votes: list[float]) -> list[float]:
    """Each vote's reward: 1 when it equals the majority, 0 when not, -1 when unparsable;
    every vote of a group whose majority is unparsable earns -1."""
    v = majority(votes)
    if v == UNPARSABLE:
        return [UNPARSABLE] * len(votes)
    return [UNPARSABLE if x == UNPARSABLE else float(x == v) for x in votes]


def agreement(votes: list[float]) -> float | None:
    """The share of the parsable votes that agree with the majority (None when the
    majority is unparsable)."""
    v = majority(votes)
    if v == UNPARSABLE:
        return None
    valid = [x for x in votes if x != UNPARSABLE]
    yes = sum(valid) / len(valid)
    return yes if v == 1.0 else 1.0 - yes


def verifier_filter(votes: list[float], rule: float, low: float = 0.51, high: float = 0.99) -> str:
    """Why a group of votes on one answer is not trained, or "" when it is kept
    (``label_type = maj_cons``): its majority must be parsable, its agreement within
    [low, high], and its majority equal to the rule check."""
    share = agreement(votes)
    if share is None:
        return "verifier majority unparsable"
    if not low <= share <= high:
        return f"verifier agreement outside [{low:g}, {high:g}]"
    if majority(votes) != rule:
        return "verifier majority differs from the rule check"
    return ""


def groups_to_keep(share: float, responders: int, votes_per_answer: int, draw: float) -> int:
    """How many kept verifier groups of an episode train: SPELL trains ``update_ratio x
    |responder batch| / J`` groups of the step; per episode that is ``share x responders /
    J``, its fraction taken with probability equal to it (``draw`` uniform in [0, 1))."""
    expected = share * responders / votes_per_answer
    whole = math.floor(expected)
    return whole + int(draw < expected - whole)


# --- the questioner ----------------------------------------------------------------------------------


def questioner_reward(s: float, mapping: str = "gaussian") -> float:
    """f(s) of the responders' mean reward s (core_algos.questioner_mapping_function):
    s itself when s <= 0 (so 0 for an unsolved question), 0 when s = 1 (too easy), else
    "gaussian" exp(-(s - 0.5)^2 / (2 (1/6)^2)) (peak 1 at s = 0.5); the paper's
    ablations "reverse" 1 - s (AZR-like) and "rzero" 1 - 2 |s - 0.5| (R-Zero-like)."""
    if s <= 0.0:
        return s
    if s == 1.0:
        return 0.0
    if mapping == "gaussian":
        return math.exp(-((s - 0.5) ** 2) / (2 * SIGMA**2))
    if mapping == "reverse":
        return 1.0 - s
    if mapping == "rzero":
        return 1.0 - 2.0 * abs(s - 0.5)
    raise ValueError(f"unknown questioner mapping {mapping!r}; valid: gaussian, reverse, rzero")


def render_mc(question: str, options: dict[str, Any]) -> str:
    """An MC question as its responder sees it (LongBench-v2's format, as SPELL renders it)."""
    return (f"What is the correct answer to this question: {question}\nChoices:\n"
            + "".join(f"({k}) {options[k]}\n" for k in LETTERS))
