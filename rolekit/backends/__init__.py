"""Generation backends: turn batches of token-id requests into completions with logprobs.

A backend is anything with this shape; the engine never needs more. ``hf`` (the
default, CPU and CUDA) lives in :mod:`rolekit.backends.hf`; ``vllm`` (extra
``rolekit[vllm]``) in :mod:`rolekit.backends.vllm`. ``rollout.backend`` picks one
(:func:`make_backend`).
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


BACKENDS = ("hf", "vllm")


def make_backend(name: str, model: Any, tokenizer: Any, *, max_batch_size: int = 32, adapters: int = 4,
                 seed: int = 0, autocast_bf16: bool | None = None) -> Backend:
    """The backend ``name`` generating from ``model`` (the learner's, trained in this process).

    ``adapters``: LoRA slots a vLLM engine keeps (the policy and the snapshot opponents in
    use); ``seed``: the vLLM engine's seed. The HF backend needs neither.
    ``autocast_bf16``: the HF backend's forward passes under bf16 autocast (None: on CUDA).
    """
    if name == "hf":
        from rolekit.backends.hf import HFBackend

        return HFBackend(model, tokenizer, max_batch_size=max_batch_size, autocast_bf16=autocast_bf16)
    if name == "vllm":
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            raise ImportError("rollout.backend = \"vllm\" needs vLLM: pip install 'rolekit[vllm]' (the CPU build; "
                              "make setup-vllm builds .venv-vllm with it)")
        from rolekit.backends.vllm import VLLMBackend

        device = next(model.parameters()).device
        return VLLMBackend(model, tokenizer, max_batch_size=max_batch_size, adapters=adapters, device=device,
                           seed=seed)
    raise ValueError(f"unknown backend {name!r}; valid: {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "Backend", "make_backend"]
