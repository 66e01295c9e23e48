import pytest

import rolekit_eva
from rolekit.plugins import Kernel


@pytest.fixture(scope="session")
def kernel() -> Kernel:
    """rolekit's built-ins plus this plugin only (installed plugins are not auto-loaded)."""
    return Kernel(plugins=[rolekit_eva], load_entrypoints=False)
