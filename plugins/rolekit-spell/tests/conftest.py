import pytest

import rolekit_spell
from rolekit.plugins import Kernel


@pytest.fixture(scope="session")
def kernel() -> Kernel:
    """rolekit's built-ins plus this plugin only (installed plugins are not auto-loaded)."""
    return Kernel(plugins=[rolekit_spell], load_entrypoints=False)
