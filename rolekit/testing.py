"""Helpers for testing games and plugins fast: a character-level chat and a scripted backend.

These stand in for a real model only where a test is about the kernel (batching,
quarantine, flow of rewards); every such path is also tested with a real model.
"""

from __future__ import annotations

from typing import Callable, Sequence

from rolekit.types import Generation, GenerationRequest

EOS = 3  # end-of-turn id of the character-level chat


class CharChat:
    """A chat 'tokenizer' whose ids are character codes (+ an end-of-turn id)."""

    eos_ids = frozenset({EOS})
    pad_id = 0

    def encode(self, prompt) -> tuple[int, ...]:
        text = prompt if isinstance(prompt, str) else "\n".join(f"{m['role']}: {m['content']}" for m in prompt)
        return tuple(ord(c) for c in f"<user>{text}<assistant>")

    def continue_ids(self, context_ids, finish_reason, user_text) -> tuple[int, ...]:
        tail = () if finish_reason == "stop" else (EOS,)
        return tuple(context_ids) + tail + tuple(ord(c) for c in f"<user>{user_text}<assistant>")

    def ids_containing(self, text: str) -> frozenset[int]:
        return frozenset(ord(c) for c in text) if len(text) == 1 else frozenset()

    def text_ids(self, text: str) -> tuple[int, ...]:
        return tuple(ord(c) for c in text)

    def decode(self, ids) -> str:
        return "".join(chr(i) for i in ids if i != EOS)

    @staticmethod
    def prompt_text(ids) -> str:
        """The last user message in ``ids`` (what a scripted backend answers)."""
        text = "".join(chr(i) for i in ids if i != EOS)
        return text.rsplit("<user>", 1)[-1].removesuffix("<assistant>")


class ScriptedBackend:
    """A backend whose answer to each prompt is ``reply(prompt_text)``; counts its calls."""

    name = "scripted"

    def __init__(self, reply: Callable[[str], str]):
        self.reply = reply
        self.calls = 0
        self.batch_sizes: list[int] = []
        self.tokens_generated = 0

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        self.calls += 1
        self.batch_sizes.append(len(requests))
        out = []
        for req in requests:
            ids = tuple(ord(c) for c in self.reply(CharChat.prompt_text(req.prompt_ids)))[: req.max_new_tokens - 1]
            ids += (EOS,)
            self.tokens_generated += len(ids)
            out.append(Generation(ids, (-1.0,) * len(ids), "stop"))
        return out

    def sync(self, model) -> None:
        pass


def tiny_config(game: dict, *, steps: int = 3, evaluate: bool = True, samples: int = 12):
    """A short run on tiny-random for a plugin's engine tests: ``game`` is its curriculum
    entry; evaluation at the start and every 3 steps (``evaluate``), a checkpoint every step."""
    from rolekit.config import from_dict

    return from_dict({
        "seed": 0, "model": {"name": "tiny-random"},
        "rollout": {"samples_per_step": samples, "concurrency": 8},
        "algorithm": {"steps": steps, "lr": 1e-3},
        "eval": {"every": 3, "at_start": True} if evaluate else {"every": 0},
        "checkpoint": {"every": 1, "keep": 5},
        "curriculum": [game],
    })


def peaked_tiny_random():
    """tiny-random (a real transformers model and tokenizer) with its input embeddings
    scaled by 5, so that its next-token distributions are peaked: the unscaled model is
    nearly uniform, which makes comparisons of tokens or logprobs toothless."""
    import torch

    from rolekit.models import TINY, load_model

    lm = load_model(TINY)
    with torch.no_grad():
        lm.model.get_input_embeddings().weight.mul_(5.0)
    return lm
