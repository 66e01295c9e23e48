"""Generation backends: turn batches of token-id requests into completions with logprobs.

A backend is anything with this shape; the engine never needs more. ``hf`` (the
default, CPU and CUDA) lives in :mod:`rolekit.backends.hf`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from rolekit.types import Generation, GenerationRequest


@runtime_checkable
class Backend(Protocol):
    """Generates completions for the policy being trained."""

    name: str

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """One :class:`Generation` per request, in the order of ``requests``.

        ``logprobs`` are the sampling policy's log-probabilities of the produced tokens
        (logits / temperature, before top-p/top-k truncation); the learner uses them as
        PPO's old logprobs.
        """
        ...

    def sync(self, model: Any) -> None:
        """Generate from ``model``'s current weights from now on (called after each
        optimizer step)."""
        ...


__all__ = ["Backend"]
