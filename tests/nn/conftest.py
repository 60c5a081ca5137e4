import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _eager_kernels():
    """Tests use small shapes; compilation is exercised only where a test asks for it."""
    import kldiv

    previous = kldiv.set_config(compile="never")
    yield
    kldiv.set_config(compile=previous.compile)
