import pytest

from rolekit.plugins import Kernel


@pytest.fixture
def kernel():
    """Built-ins only: tests never auto-load whatever plugins happen to be installed."""
    return Kernel(load_entrypoints=False)


@pytest.fixture(scope="session")
def tiny():
    """The tiny random model (real transformers model, real tokenizer)."""
    from rolekit.models import load_model

    return load_model("tiny-random")
