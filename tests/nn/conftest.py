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


@pytest.fixture(params=["small", "chunked"])
def cpu_path(request):
    """A dense loss's two CPU paths: the small path (calls of at most ``Config.nn_small`` logits, the row form in
    float64 NumPy) and the chunked tensor kernel (``nn_small=1``: every call is larger)."""
    import kldiv

    with kldiv.config_context(nn_small=1 << 14 if request.param == "small" else 1):
        yield request.param
