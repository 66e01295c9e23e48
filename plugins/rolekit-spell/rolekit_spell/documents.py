"""Documents for SPELL: a seeded generator of synthetic documents with checkable facts, and
a user's corpus (a folder of .txt/.md files or a JSONL of documents).

A synthetic document is a title and ``paragraphs`` paragraphs about one small invented
world: two or three people, two companies, a few towns. Paragraphs are of four kinds --
people and places, a table of numbers, a timeline, a short narrative -- and the same
entities recur across them, so every paragraph is a distractor for questions about the
others (two people born in different towns, two companies' tables with the same years).
The names are invented, so no question is answerable from what a model already knows.
Each paragraph also yields its facts: questions with rule-checkable answers, written by
the generator (never by the questioner), which the held-out evaluation asks.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import attrs

FIRST = ("Mara", "Tobin", "Elsa", "Ravi", "Noor", "Ivo", "Lena", "Oskar", "Priya", "Jonas", "Amara", "Felix",
         "Greta", "Hugo", "Ines", "Karl", "Dalia", "Emil", "Sanne", "Bruno")
SHE = frozenset(("Mara", "Elsa", "Noor", "Lena", "Priya", "Amara", "Greta", "Ines", "Dalia", "Sanne"))
LAST = ("Lind", "Varga", "Okafor", "Brenn", "Castel", "Duma", "Ferro", "Holt", "Ilves", "Kask", "Moreau", "Nolte",
        "Quist", "Rask", "Soler", "Tamm", "Veld", "Wren")
TOWN_START = ("Cor", "Bel", "Ash", "Dun", "Kel", "Mar", "Nor", "Ost", "Pel", "Rav", "Sel", "Tor", "Val", "Wen")
TOWN_END = ("vale", "ford", "mere", "wick", "holm", "stad", "ridge", "port", "by", "field")
TRADES = ("Mills", "Foods", "Motors", "Textiles", "Labs", "Shipping", "Mining", "Press")
JOBS = ("baker", "pilot", "engineer", "teacher", "nurse", "architect", "chemist", "librarian", "carpenter",
        "surveyor")
CARGO = ("crates of apples", "sacks of flour", "barrels of oil", "boxes of books", "bales of wool", "jars of honey")
VEHICLES = ("train", "boat", "bus", "horse cart", "bicycle", "truck")
# (what happened, the same event asked about)
EVENTS = (("the first bridge was built", "was the first bridge built"),
          ("a railway station opened", "did the railway station open"),
          ("a great fire destroyed the market", "did the great fire destroy the market"),
          ("the town hall was rebuilt", "was the town hall rebuilt"),
          ("a university was founded", "was the university founded"),
          ("the old mine closed", "did the old mine close"),
          ("a flood reached the main square", "did the flood reach the main square"),
          ("the harbour was deepened", "was the harbour deepened"))


@attrs.frozen
class Fact:
    """A generator-written question about a document and its answer: ``kind`` "text"
    (checked by normalised substring match) or "number" (0.15 % relative tolerance)."""

    question: str
    answer: str
    kind: str
    paragraph: int  # the paragraph that states it


@attrs.frozen
class Document:
    id: str
    title: str
    paragraphs: tuple[str, ...] = attrs.field(converter=tuple)
    facts: tuple[Fact, ...] = attrs.field(converter=tuple, default=())

    def text(self, indices=None) -> str:
        """The title and the paragraphs (``indices``: only those, in document order)."""
        chosen = range(len(self.paragraphs)) if indices is None else sorted(indices)
        return "\n".join([self.title, *(self.paragraphs[i] for i in chosen)])


# --- the generator --------------------------------------------------------------------------------


def _number(n: int) -> str:
    return f"{n:,}"


class _World:
    """The invented entities one document is about: enough that no two paragraphs of a
    kind describe the same entity (``size`` paragraphs of each kind at most)."""

    def __init__(self, rng: random.Random, size: int):
        towns = sorted({start + end for start in TOWN_START for end in TOWN_END})
        self.towns = rng.sample(towns, size + 2)
        firsts, lasts = rng.sample(FIRST, min(size + 1, len(FIRST))), rng.sample(LAST, min(size + 1, len(LAST)))
        self.people = [f"{f} {l}" for f, l in zip(firsts, lasts)]
        self.pronoun = {p: "She" if p.split()[0] in SHE else "He" for p in self.people}
        self.companies = [f"{rng.choice(LAST)} {trade}" for trade in rng.sample(TRADES, min(size, len(TRADES)))]


def _person(rng: random.Random, w: _World, k: int, i: int) -> tuple[str, list[Fact]]:
    who = w.people[k % len(w.people)]
    town, year, job, firm = rng.choice(w.towns), rng.randint(1950, 1999), rng.choice(JOBS), rng.choice(w.companies)
    article = "an" if job[0] in "aeiou" else "a"
    text = (f"{who} was born in {town} in {year}. {w.pronoun[who]} works as {article} {job} for {firm} and lives in "
            f"{rng.choice(w.towns)}.")
    return text, [Fact(f"Where was {who} born?", town, "text", i),
                  Fact(f"In which year was {who} born?", str(year), "number", i),
                  Fact(f"What is {who}'s job?", job, "text", i),
                  Fact(f"Which company does {who} work for?", firm, "text", i)]


def _table(rng: random.Random, w: _World, k: int, i: int) -> tuple[str, list[Fact]]:
    firm = w.companies[k % len(w.companies)]
    start = rng.randint(2008, 2019)
    years = list(range(start, start + 3))
    units = [rng.randint(8, 60) * 100 + rng.randint(0, 99) for _ in years]
    revenue = [rng.randint(150, 990) for _ in years]
    rows = "\n".join(f"| {y} | {_number(u)} | {r} |" for y, u, r in zip(years, units, revenue))
    text = f"{firm} reported these figures.\n| Year | Units sold | Revenue (thousand $) |\n{rows}"
    a, b = rng.sample(range(len(years)), 2)
    facts = [Fact(f"How many units did {firm} sell in {years[a]}?", _number(units[a]), "number", i),
             Fact(f"What was the revenue of {firm} in {years[b]}, in thousand dollars?", str(revenue[b]), "number", i),
             Fact(f"How many units did {firm} sell in {years[0]} and {years[-1]} together?",
                  _number(units[0] + units[-1]), "number", i)]
    return text, facts


def _timeline(rng: random.Random, w: _World, k: int, i: int) -> tuple[str, list[Fact]]:
    town = w.towns[k % len(w.towns)]
    events = rng.sample(EVENTS, 3)
    years = sorted(rng.sample(range(1820, 1990), 3))
    text = f"A short history of {town}: " + "; ".join(
        f"in {y} {said}" for y, (said, _) in zip(years, events)) + "."
    facts = [Fact(f"In which year {asked} in {town}?", str(y), "number", i) for y, (_, asked) in zip(years, events)]
    facts.append(Fact(f"How many years passed in {town} between the year {events[0][0]} and the year "
                      f"{events[2][0]}?", str(years[2] - years[0]), "number", i))
    return text, facts


def _journey(rng: random.Random, w: _World, k: int, i: int) -> tuple[str, list[Fact]]:
    who = w.people[(k + 1) % len(w.people)]
    origin, goal = rng.sample(w.towns, 2)
    cargo, vehicle = rng.choice(CARGO), rng.choice(VEHICLES)
    n = rng.randint(12, 90)
    sold = rng.randint(2, n - 2)
    pronoun = w.pronoun[who]
    text = (f"One spring {who} left {origin} with {n} {cargo} and went by {vehicle} to {goal}. On the way "
            f"{pronoun.lower()} sold {sold} of them at a market.")
    return text, [Fact(f"Which town did {who} travel to with the {cargo}?", goal, "text", i),
                  Fact(f"How did {who} travel to {goal}?", f"by {vehicle}", "text", i),
                  Fact(f"How many {cargo} did {who} have left when arriving in {goal}?", str(n - sold), "number", i)]


KINDS = (_person, _table, _timeline, _journey)
MAX_PARAGRAPHS = len(KINDS) * len(TRADES)  # one company per table paragraph


def generate(index: int, paragraphs: int = 6, seed: int = 0) -> Document:
    """Synthetic document ``index`` of the set drawn with ``seed``: ``paragraphs``
    paragraphs (every kind before any repeats, in a seeded order), their facts, a title."""
    if paragraphs < 1:
        raise ValueError(f"a document needs at least 1 paragraph, got {paragraphs}")
    if paragraphs > MAX_PARAGRAPHS:
        raise ValueError(f"a synthetic document has at most {MAX_PARAGRAPHS} paragraphs, got {paragraphs}")
    rng = random.Random(f"spell-document/{seed}/{index}")
    world = _World(rng, -(-paragraphs // len(KINDS)))
    kinds = []
    while len(kinds) < paragraphs:
        kinds += rng.sample(KINDS, len(KINDS))
    texts, facts, seen = [], [], {}
    for i, kind in enumerate(kinds[:paragraphs]):
        k = seen[kind] = seen.get(kind, -1) + 1  # the k-th paragraph of this kind: the next entity
        text, found = kind(rng, world, k, i)
        texts.append(text)
        facts += found
    return Document(f"synthetic-{seed}-{index}", f"Records of {world.towns[0]}", texts, facts)


def synthetic(count: int, paragraphs: int = 6, seed: int = 0) -> tuple[Document, ...]:
    return tuple(generate(i, paragraphs, seed) for i in range(count))


# --- a user's corpus --------------------------------------------------------------------------------


def _split(text: str) -> list[str]:
    return [" ".join(par.split()) for par in re.split(r"\n\s*\n", text) if par.strip()]


def load_corpus(path: Any, max_paragraph_chars: int = 2000) -> tuple[Document, ...]:
    """A folder of .txt/.md files (one document each; paragraphs split at blank lines; the
    first paragraph is the title), or a .jsonl file with one document per line: ``{"text":
    ...}`` or ``{"paragraphs": [...]}``, optionally ``"id"`` and ``"title"``. ValueError,
    naming the path, for anything else or an empty corpus."""
    where = Path(str(path)).expanduser()
    docs = []
    if where.is_dir():
        for file in sorted(p for p in where.rglob("*") if p.suffix.lower() in (".txt", ".md") and p.is_file()):
            pars = [p[:max_paragraph_chars] for p in _split(file.read_text(encoding="utf-8", errors="replace"))]
            if len(pars) >= 2:
                docs.append(Document(str(file.relative_to(where)), pars[0], pars[1:]))
    elif where.is_file() and where.suffix.lower() == ".jsonl":
        for n, line in enumerate(where.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"corpus {str(path)!r}, line {n}: not JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"corpus {str(path)!r}, line {n}: a document is a JSON object")
            pars = row.get("paragraphs")
            if pars is None and isinstance(row.get("text"), str):
                pars = _split(row["text"])
            if not isinstance(pars, list) or not pars or not all(isinstance(p, str) for p in pars):
                raise ValueError(f"corpus {str(path)!r}, line {n}: needs \"text\" or a list of \"paragraphs\"")
            docs.append(Document(str(row.get("id", n)), str(row.get("title", "")),
                                 [p[:max_paragraph_chars] for p in pars]))
    else:
        raise ValueError(f"corpus {str(path)!r} is neither a folder of .txt/.md files nor a .jsonl file")
    if not docs:
        raise ValueError(f"corpus {str(path)!r} holds no document (a file needs a title and a paragraph)")
    return tuple(docs)


# --- the held-out set --------------------------------------------------------------------------------

HELD_OUT_SEED = 20261214


def held_out(count: int, paragraphs: int = 6, seed: int = HELD_OUT_SEED) -> list[tuple[Document, Fact]]:
    """``count`` fixed (document, fact) pairs: generated documents of their own seed (never
    the training set's), one generator-written question each, the kinds taking turns."""
    out = []
    for i in range(count):
        doc = generate(i, paragraphs, seed)
        rng = random.Random(f"spell-held-out/{seed}/{i}")
        kind = ("text", "number")[i % 2]
        facts = [f for f in doc.facts if f.kind == kind] or list(doc.facts)
        out.append((doc, rng.choice(facts)))
    return out
