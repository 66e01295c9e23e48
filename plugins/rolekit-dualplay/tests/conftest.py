import pytest

import rolekit_dualplay
from rolekit.plugins import Kernel


@pytest.fixture(scope="session")
def kernel() -> Kernel:
    """rolekit's built-ins plus this plugin only (installed plugins are not auto-loaded)."""
    return Kernel(plugins=[rolekit_dualplay], load_entrypoints=False)


@pytest.fixture(scope="session")
def tiny():
    """The tiny random model (a real transformers model with the real tokenizer)."""
    from rolekit.models import load_model

    return load_model("tiny-random")


@pytest.fixture(scope="session")
def tiny_chat(tiny):
    from rolekit.chat import ChatTokenizer

    return ChatTokenizer(tiny.tokenizer)
