"""SPELL (arXiv 2509.23863): one model as questioner, responder and verifier over documents.

Per episode (one question, SPELL's n = 1 per questioner prompt):

1. a document and a task type (``qa``, ``math``, ``mc``) are drawn; the questioner sees a
   cluster of its paragraphs -- ``cluster`` new random ones plus every paragraph behind
   the questions in the history memory for this (task, document) -- and those questions
   as "previous examples, ask a harder one" (``spell_dataset.__getitem__``);
2. the questioner's reply must end in a JSON object ``{"question", "answer"}`` (mc: also
   ``options`` A-D; the correct letter is drawn and fixed in the prompt, SPELL's label
   balancing). A missing or mistyped key: invalid, ``format_penalty`` (-1), kept for
   training as a bad case. A well-formed but unusable value (a math answer that is not a
   non-zero number, a qa answer over 40 tokens): the turn is dropped with the reason;
3. grounding check: one responder answers without the document (SPELL's "Empty"
   context); when its rule score is >= 0.1 the question is answerable without the
   document -- invalid, -0.5, no responder is asked. That answer never trains;
4. ``responders`` (G, default 8) answers see the whole document; the answer is what
   follows "answer is" (or the last ``\\boxed{}``) and the rule reward is ``sub_em_strict``
   (qa), 0.15 % relative tolerance (math) or the letter (mc);
5. ``verifiers`` (J, default 4) votes per extracted answer: does it mean the same as the
   questioner's answer, ``[[YES]]``/``[[NO]]``; unparsable is -1. A responder earns
   max(rule, verifier majority) -- the rule alone when the majority is unparsable;
6. rewards: questioner f(s) of the responders' mean s (``rewards.questioner_reward``:
   exp(-(s - 0.5)^2 / (2 (1/6)^2)), 0 when s is 0 or 1); verifier vote: 1 with the
   majority, 0 against, -1 unparsable. Responder answers that all earned the same are
   dropped (SPELL's dynamic sampling keeps groups with std > 0). Verifier groups train
   only when their agreement is in [0.51, 0.99] and their majority equals the rule check
   (``label_type = maj_cons``), and of those only ``verifier_share`` x trained responder
   answers / J groups per episode (SPELL: 0.125 x |responder batch| / J of the step's);
7. history memory: a question whose s is in [0.01, 1] joins the FIFO (``history_size``,
   3) of its (task, document), with its evidence paragraphs; a task pool, checkpointed.

Advantages (the game's ``estimators``): responder and verifier ``grpo`` within each ask
(the G answers of one question, the J votes on one answer); SPELL divides by the group's
std, which ``advantage_options = { grpo = { scale = "std" } }`` selects (the example
does). Questioner ``role_norm``, keyed by task type (``table.set_key``): normalised over
the step's questions of that task, SPELL's ``questioner.group = batch``.

Departures, each because an episode is the unit here: SPELL samples bad cases (format,
grounding, zero variance) into the questioner batch at ``questioner_bad_case_ratio`` (1:
as many bad as good per task); here every one trains. SPELL picks the verifier groups
from the whole step and skips the verifier update when too few qualify; here each
episode keeps its expected share (the fraction by a draw) of its own qualifying groups.
"""

from __future__ import annotations

import json
import math
import statistics
from typing import Any

from rolekit import Game, Role
from rolekit_spell import prompts as templates
from rolekit_spell.documents import MAX_PARAGRAPHS, Document, held_out, load_corpus, synthetic
from rolekit_spell.rewards import (LETTERS, TASKS, UNPARSABLE, check_record, extract_answer, groups_to_keep,
                                   in_text, majority, parse_record, parse_vote, questioner_reward, render_mc,
                                   responder_reward, rule_score, verifier_filter, vote_rewards)

HISTORY = "history"  # the task pool of the history memory: data[f"{task}/{document id}"] -> entries
GROUNDED = 0.1  # a grounding answer with a rule score >= this means "answerable without the document"
CACHE_LOW, CACHE_HIGH = 0.01, 1.0  # data.use_cache.cached_lower / cached_higher
AGREEMENT = (0.51, 0.99)  # self_verification.update_lower_bound / update_upper_bound
MAPPINGS = ("gaussian", "reverse", "rzero")
LEAD_STYLES = ("word", "fact")
SHOWN_CHARS = 4000  # the document as the episode browser shows it


def _error(option: str, value: Any, why: str) -> ValueError:
    return ValueError(f"game 'spell': option {option}={value!r}; {why}")


class Spell(Game):
    name = "spell"
    description = ("SPELL: the questioner writes a question and its answer from a document, G responders answer, "
                   "J verifiers vote on each answer; questioner exp(-(s-0.5)^2/(2/36)), responder max(rule, "
                   "majority), verifier agreement with the majority.")
    roles = (Role("questioner", "writes a question about a document and its answer, as JSON"),
             Role("responder", "answers the question from the document"),
             Role("verifier", "says whether an answer means the same as the questioner's"))
    estimators = {"questioner": "role_norm", "responder": "grpo", "verifier": "grpo"}  # why: the docstring
    format_penalty: float = -1.0  # a questioner reply with no usable JSON record
    ground_penalty: float = -0.5  # a question answerable without the document

    def __init__(self, *, responders: int = 8, verifiers: int = 4, tasks: Any = None, prompts: str = "terse",
                 corpus: str | None = None, documents: int = 64, paragraphs: int = 6, cluster: int = 3,
                 history_size: int = 3, grounding: bool = True, mapping: str = "gaussian",
                 verifier_share: float = 0.125, held_out: int = 64, seed: int = 0,
                 questioner_tokens: int | None = None, responder_tokens: int | None = None,
                 verifier_tokens: int | None = None, answer_in_text: bool = False, lead: str = "word"):
        """``responders`` (G), ``verifiers`` (J; 0: no self-verification, rule rewards
        only). ``tasks``: the task types drawn from (default: qa and math with terse
        prompts, all three with the paper's). ``prompts``: "terse" or "paper". ``corpus``:
        a folder of .txt/.md files or a .jsonl of documents; without one, ``documents``
        synthetic documents of ``paragraphs`` paragraphs (drawn with ``seed``; the length
        a curriculum can grow). ``cluster``: new paragraphs shown to the questioner (SPELL:
        5). ``history_size``: the memory per (task, document). ``grounding``: the check
        without the document. ``mapping``: the questioner's reward of s (gaussian, or the
        paper's ablations reverse and rzero). ``verifier_share``: verifier votes trained
        per trained responder answer (SPELL's update_ratio). ``held_out``: documents in
        the evaluation. ``*_tokens``: generation budgets (terse 48/12/4, paper
        1024/512/256). ``answer_in_text``: a qa/math record whose answer does not occur in
        the paragraphs the questioner was shown is a bad case (invalid, ``format_penalty``)
        and no responder is asked -- not SPELL's rule (off by default); for small models,
        whose off-text answers are mostly made up. ``lead``: how a terse question starts --
        "word", a drawn question word (the default); "fact", the first two thirds of a
        question the generator wrote about one of the paragraphs shown (synthetic
        documents, qa and math; a word where the paragraphs state no fact of the task's
        kind). Not SPELL's rule: a scaffold for small models, whose own questions are
        seldom about the text."""
        if prompts not in templates.STYLES:
            raise _error("prompts", prompts, f"valid: {', '.join(templates.STYLES)}")
        tasks = tuple(tasks) if tasks is not None else (("qa", "math") if prompts == "terse" else TASKS)
        if not tasks or any(t not in TASKS for t in tasks):
            raise _error("tasks", list(tasks), f"valid task types: {', '.join(TASKS)}")
        for option, value, least in (("responders", responders, 1), ("verifiers", verifiers, 0),
                                     ("cluster", cluster, 1), ("history_size", history_size, 1),
                                     ("held_out", held_out, 1), ("documents", documents, 1)):
            if value < least:
                raise _error(option, value, f"it must be >= {least}")
        if lead not in LEAD_STYLES:
            raise _error("lead", lead, f"valid: {', '.join(LEAD_STYLES)}")
        if lead == "fact" and (prompts != "terse" or corpus):
            raise _error("lead", lead, "a fact lead needs terse prompts and synthetic documents (no corpus)")
        if mapping not in MAPPINGS:
            raise _error("mapping", mapping, f"valid: {', '.join(MAPPINGS)}")
        if not 0.0 <= verifier_share:
            raise _error("verifier_share", verifier_share, "it must be >= 0")
        if not 1 <= paragraphs <= MAX_PARAGRAPHS:  # the held-out documents have this length too
            raise _error("paragraphs", paragraphs, f"a synthetic document has 1 to {MAX_PARAGRAPHS}")
        self.responders, self.verifiers, self.tasks, self.style = responders, verifiers, tasks, prompts
        self.cluster, self.history_size, self.grounding, self.mapping = cluster, history_size, grounding, mapping
        self.verifier_share, self.held_out, self.paragraphs = verifier_share, held_out, paragraphs
        self.answer_in_text, self.lead = answer_in_text, lead
        try:
            self.documents = load_corpus(corpus) if corpus else synthetic(documents, paragraphs, seed)
        except ValueError as exc:
            raise _error("corpus", corpus, str(exc)) from None
        terse = prompts == "terse"
        self.questioner_tokens = questioner_tokens or (48 if terse else 1024)
        self.responder_tokens = responder_tokens or (12 if terse else 512)
        self.verifier_tokens = verifier_tokens or (4 if terse else 256)

    # --- how each role is asked ---------------------------------------------------------------

    def _questioner_options(self, task: str) -> dict[str, Any]:
        # terse: the object ends at its first "}" -- except mc's, whose options close one first
        stop = "}" if self.style == "terse" and task != "mc" else ""
        tokens = self.questioner_tokens * (2 if self.style == "terse" and task == "mc" else 1)
        return {"max_new_tokens": tokens, **({"stop": stop} if stop else {})}

    def _answer_options(self) -> dict[str, Any]:
        return {"max_new_tokens": self.responder_tokens, **({"stop": "\n"} if self.style == "terse" else {})}

    def _vote_options(self) -> dict[str, Any]:
        return {"max_new_tokens": self.verifier_tokens, **({"stop": "]]"} if self.style == "terse" else {})}

    def record(self, text: str) -> dict | None:
        """The questioner's JSON record: SPELL's ``get_record`` for the paper's prompts; the
        first complete object for terse ones (the game opened it; what follows it is
        ignored)."""
        if self.style == "paper":
            return parse_record(text)
        try:
            found, _ = json.JSONDecoder().raw_decode(text.lstrip())
        except (json.JSONDecodeError, RecursionError):
            return None
        return found if isinstance(found, dict) else None

    def evidence(self, document: Document, history: list[dict[str, Any]], rng) -> list[int]:
        """The questioner's paragraphs: those behind the remembered questions, plus
        ``cluster`` new ones drawn from the rest, in document order."""
        kept = sorted({i for h in history for i in h["evidence"]})
        rest = [i for i in range(len(document.paragraphs)) if i not in set(kept)]
        return sorted(kept + rng.sample(rest, min(self.cluster, len(rest))))

    def question_start(self, document: Document, evidence: list[int], task: str, rng) -> str:
        """What a terse question is made to start with (the ``lead`` option)."""
        if self.lead == "fact":
            kind = templates.FACT_KIND.get(task)
            facts = [f for f in document.facts if f.paragraph in evidence and f.kind == kind]
            if facts:
                return templates.fact_lead(rng.choice(facts).question)
        return rng.choice(templates.LEADS[task])

    # --- the episode ---------------------------------------------------------------------------

    async def play(self, table):
        rng = table.rng
        document = self.documents[rng.randrange(len(self.documents))]
        task = rng.choice(self.tasks)
        letter = rng.choice(LETTERS)
        memory = table.pool(HISTORY)
        key = f"{task}/{document.id}"
        history = list(memory.data.get(key, []))
        evidence = self.evidence(document, history, rng)
        context = document.text(evidence)
        prompt, lead = templates.questioner(self.style, task, context, history, letter,
                                          self.question_start(document, evidence, task, rng))
        [q] = await table.ask("questioner", prompt, prefix=lead, **self._questioner_options(task))
        table.set_key(q, task)
        table.set_info(document=document.id, task=task, evidence=evidence, history=len(history),
                       text=document.text()[:SHOWN_CHARS])
        table.log("questioner/history", len(history))

        status, question, options, gold = check_record(task, self.record(q.text))
        table.log("questioner/valid_format", float(status != "format"))
        table.log("questioner/valid_question", float(status == "ok"))
        if status == "format":
            table.invalid(q, gold)
            table.reward(q, self.format_penalty)
            return
        if status == "value":
            table.drop(q, gold)
            return
        table.set_info(question=question, gold=gold, **({"options": options} if options else {}))
        if self.answer_in_text:
            found = in_text(task, gold, context)
            table.log("questioner/answer_in_text", float(found))
            if not found:
                table.invalid(q, "answer not in the text")
                table.reward(q, self.format_penalty)
                return

        if self.grounding and await self._grounded(table, q, task, question, options, gold):
            table.invalid(q, "answerable without the document")
            table.reward(q, self.ground_penalty)
            return

        content = document.text()
        prompt, lead = templates.responder(self.style, task, content, question, options)
        answers = await table.ask("responder", prompt, n=self.responders, parent=q, prefix=lead,
                                  **self._answer_options())
        extracted = [extract_answer(a.text) for a in answers]
        rules = [rule_score(task, e, gold) for e in extracted]
        for a, e in zip(answers, extracted):
            if e is None:
                table.invalid(a, "no answer after 'answer is'")
        shown = render_mc(question, options) if options else question
        judged = await self._votes(table, answers, extracted, shown, gold)  # answer index -> its vote turns
        votes = [[parse_vote(t.text) for t in judged[i]] if i in judged else None for i in range(len(answers))]

        scores = [responder_reward(r, v) for r, v in zip(rules, votes)]
        for a, x in zip(answers, scores):
            table.reward(a, x)
        s = statistics.fmean(scores)
        alike = statistics.pstdev(scores) == 0.0
        if alike:
            for a in answers:
                table.drop(a, "all answers scored alike")
        table.reward(q, questioner_reward(s, self.mapping))
        self._train_verifiers(table, judged, votes, rules, 0 if alike else len(answers))

        if CACHE_LOW <= s <= CACHE_HIGH:
            entry = {"evidence": evidence, "question": shown, "answer": gold}
            memory.data[key] = (history + [entry])[-self.history_size:]
        judged = [v for v in votes if v]
        parsable = [majority(v) for v in judged if majority(v) != UNPARSABLE]
        table.log("questioner/solve_rate", s)
        table.log("responder/accuracy", s)
        table.log("responder/rule_accuracy", statistics.fmean(rules))
        table.log("responder/extracted", statistics.fmean(e is not None for e in extracted))
        if parsable:
            table.log("responder/verifier_accuracy", statistics.fmean(parsable))
        if judged:
            table.log("verifier/parsable", statistics.fmean(x != UNPARSABLE for v in judged for x in v))
            table.log("verifier/agreement_with_rule",
                      statistics.fmean(majority(v) == r for v, r in zip(votes, rules) if v))
        table.set_info(answers=extracted, rule=rules, votes=[_shown_votes(v) for v in votes], solve_rate=s,
                       questioner_reward=questioner_reward(s, self.mapping))

    async def _grounded(self, table, q, task: str, question: str, options, gold: str) -> bool:
        """SPELL's grounding filter: one answer without the document; its rule score >= 0.1
        means the document is not needed. The answer itself never trains."""
        prompt, lead = templates.responder(self.style, task, "Empty", question, options)
        [g] = await table.ask("responder", prompt, parent=q, prefix=lead, **self._answer_options())
        table.drop(g, "grounding check")
        grounded = rule_score(task, extract_answer(g.text), gold) >= GROUNDED
        table.log("questioner/grounded", float(grounded))
        table.set_info(grounding_answer=extract_answer(g.text))
        return grounded

    async def _votes(self, table, answers, extracted, question: str, gold: str) -> dict[int, list]:
        """J votes on each extracted answer, all asked in one round: answer index -> its
        vote turns (answers with nothing to judge are left out). Each vote earns its reward."""
        judged = [i for i, e in enumerate(extracted) if e is not None] if self.verifiers else []
        asks = []
        for i in judged:
            prompt, lead = templates.verifier(self.style, question, extracted[i], gold)
            asks.append(table.ask("verifier", prompt, n=self.verifiers, parent=answers[i], prefix=lead,
                                  **self._vote_options()))
        groups = dict(zip(judged, await table.gather(*asks))) if asks else {}
        for turns in groups.values():
            votes = [parse_vote(t.text) for t in turns]
            for t, x, r in zip(turns, votes, vote_rewards(votes)):
                table.reward(t, r)
                if x == UNPARSABLE:
                    table.invalid(t, "no [[YES]] or [[NO]]")
        return groups

    def _train_verifiers(self, table, groups: dict[int, list], votes, rules, trained_answers: int) -> None:
        """Drop every verifier group the filter refuses (with its reason), then all but the
        episode's share of the rest (``rewards.groups_to_keep``)."""
        refused = {i: verifier_filter(votes[i], rules[i], *AGREEMENT) for i in groups}
        keep = [i for i in groups if not refused[i]]
        k = groups_to_keep(self.verifier_share, trained_answers, self.verifiers, table.rng.random()) if keep else 0
        chosen = set(table.rng.sample(keep, min(k, len(keep))))
        for i, turns in groups.items():
            why = refused[i] or ("" if i in chosen else "not sampled (verifier_share)")
            for t in turns:
                if why:
                    table.drop(t, why)
        if groups:
            table.log("verifier/groups_kept", len(chosen))

    # --- evaluation ------------------------------------------------------------------------------

    def evaluate(self, ev):
        """Greedy responder accuracy, with its standard error, on ``held_out`` fixed
        generated documents (their own seed), one generator-written question each, asked as
        any question is asked of a responder and scored by the same rule check."""
        items = held_out(self.held_out, self.paragraphs)
        asks = [templates.responder(self.style, _task(fact.kind), doc.text(), fact.question, None)
                for doc, fact in items]
        answers = ev.ask("responder", [p for p, _ in asks], each=[{"prefix": lead} for _, lead in asks],
                         temperature=0, **self._answer_options())
        correct = [rule_score(_task(fact.kind), extract_answer(t.text), fact.answer)
                   for t, (_, fact) in zip(answers, items)]
        accuracy = statistics.fmean(correct)
        return {"held_out": {"accuracy": accuracy, "tasks": len(correct),
                             "stderr": math.sqrt(accuracy * (1 - accuracy) / len(correct))}}


def _task(kind: str) -> str:
    """The task type whose rule checks a held-out fact of this kind."""
    return "math" if kind == "number" else "qa"


def _shown_votes(votes: list[float] | None) -> str:
    """Votes as the episode browser shows them: "YES YES NO ?" ("-": not judged)."""
    if not votes:
        return "-"
    return " ".join({1.0: "YES", 0.0: "NO"}.get(x, "?") for x in votes)
