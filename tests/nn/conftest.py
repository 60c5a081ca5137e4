import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _eager_kernels():
    """Tests use small shapes; compilation is exercised only where a test asks for it."""
    from kldiv.nn.kernels import _compile

    previous = _compile.set_compile("never")
    yield
    _compile.set_compile(previous)
