"""Fixtures for the vLLM backend's tests (run by ``make test-vllm`` in .venv-vllm, not by
the main suite): a small random Llama the CPU build can run, loaded both ways."""

from __future__ import annotations

import pytest

from rolekit.backends.vllm import tiny_model_dir
from rolekit.chat import ChatTokenizer
from rolekit.models import load_model


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """A 2-layer Llama with 64-dim heads (the CPU build needs >= 64) and tiny-random's tokenizer."""
    return tiny_model_dir(tmp_path_factory.mktemp("vllm-model") / "tiny-llama")


@pytest.fixture(scope="session")
def chat(model_dir) -> ChatTokenizer:
    return ChatTokenizer(load_model(str(model_dir)).tokenizer)


@pytest.fixture(scope="session")
def prompts(chat) -> list[tuple[int, ...]]:
    """Chat prompts of different lengths, as token ids."""
    texts = ["Hi", "What is the capital of France? Answer in one word.", "Count: 1 2 3",
             "You are playing Kuhn Poker. Your card is the King. Say bet or check."]
    return [chat.encode(t) for t in texts]
