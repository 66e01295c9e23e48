"""eva's prompts: the seeded pool, a fixed held-out set, the creator's rewriting rubrics, the judge's rubric.

The seed and held-out prompts are everyday instructions in the spirit of UltraFeedback's
(eva's starting prompts), written for this package; the two sets share no prompt. The
rubrics paraphrase distilabel's ``EvolInstruct`` (in-depth: add constraints, deepen,
concretise, increase reasoning steps; in-breadth: a new, rarer prompt of the same domain).
"""

from __future__ import annotations

from pathlib import Path

from rolekit.jsonl import read_records

SEEDS = (
    "Write a haiku about autumn leaves.",
    "Explain photosynthesis to a ten-year-old.",
    "Give three tips for a good night's sleep.",
    "What is the difference between weather and climate?",
    "Write a short thank-you note to a teacher.",
    "How do I boil an egg so the yolk stays soft?",
    "Summarise the story of Cinderella in two sentences.",
    "List five fruits that are high in vitamin C.",
    "Explain what a prime number is, with an example.",
    "Suggest a name for a small bakery.",
    "Why is the sky blue?",
    "Write a polite email asking to reschedule a meeting.",
    "What are the main causes of inflation?",
    "Give me a simple recipe for pancakes.",
    "Explain the rules of tic-tac-toe.",
    "Translate 'good morning, how are you?' into French.",
    "Describe a sunset over the sea in three sentences.",
    "How does a bicycle stay upright?",
    "What should I pack for a weekend hiking trip?",
    "Write a limerick about a cat.",
    "Explain what a budget is and why it helps.",
    "Give two arguments for and two against school uniforms.",
    "How do vaccines train the immune system?",
    "Write a product description for a reusable water bottle.",
)

HELD_OUT = (
    "Write a haiku about the first snow of winter.",
    "Explain how rainbows form, simply.",
    "Give three tips for staying focused while studying.",
    "What is the difference between a virus and a bacterium?",
    "Write a short birthday message for a grandmother.",
    "How do I keep cut flowers fresh for longer?",
    "Summarise the story of the tortoise and the hare.",
    "List four ways to save water at home.",
    "Explain what an even number is, with an example.",
    "Suggest a name for a bicycle repair shop.",
    "Why do leaves change colour in autumn?",
    "Write a polite message declining a party invitation.",
    "What does a central bank do?",
    "Give me a simple recipe for tomato soup.",
    "How does a refrigerator keep food cold?",
    "Write a limerick about a dog who loves the rain.",
)

# EvolInstruct's rewriting methods (distilabel ``EvolInstruct``: in-depth and in-breadth).
RUBRICS = (
    "Add one more constraint or requirement to it.",
    "If it can be solved with a few simple thinking steps, make it explicitly ask for multi-step reasoning.",
    "Replace general concepts with more specific ones.",
    "Make it deeper: ask about the topic in more depth and breadth.",
    "Write a brand-new prompt in the same domain instead, about a rarer topic, just as long and as hard.",
)

CREATOR = ("I want you to act as a Prompt Rewriter. Rewrite the given prompt into a more complex version that a "
           "capable assistant can still answer, reasonable and understandable by humans. {rubric} "
           "Write only the new prompt, at most 80 words.\n\n#Given Prompt#:\n{prompt}\n\n#Rewritten Prompt#:")

JUDGE = ("Rate the response to the request: is it helpful, correct, complete and well written? "
         "1 means useless or wrong, 10 means excellent.")


def creator_prompt(rubric: str, prompt: str) -> str:
    return CREATOR.format(rubric=rubric, prompt=prompt)


def load_prompts(path: str | Path) -> tuple[str, ...]:
    """A user's JSONL, one ``{"prompt": str}`` per line."""
    def prompt(record) -> str:
        text = record["prompt"]
        if not isinstance(text, str) or not text.strip():
            raise ValueError("the prompt must be a non-empty string")
        return text.strip()

    return read_records(path, "prompt", prompt, '{"prompt": str}')
