"""kldiv: KL divergence and its relatives, exact, stable and fast, on NumPy, PyTorch, JAX and TensorFlow.

    >>> import kldiv
    >>> float(kldiv.kl([0.1, 0.9], [0.9, 0.1]))  # KL(P || Q) in nats
    1.7577796618689758
"""

from __future__ import annotations

import importlib
from typing import Any

from . import grad, pairwise
from ._config import Config, config_context, get_config, set_config
from .measures import cross_entropy, entropy, hellinger, js, kl, normalize, renyi, skew_kl, tvd

__version__ = "0.1.0"

__all__ = [
    "entropy",
    "cross_entropy",
    "kl",
    "js",
    "skew_kl",
    "tvd",
    "hellinger",
    "renyi",
    "normalize",
    "grad",
    "pairwise",
    "Config",
    "get_config",
    "set_config",
    "config_context",
]

# Heavier subpackages load on first use, so `import kldiv` never imports torch or matplotlib.
_LAZY = {"nn", "distributions", "estimate", "vae", "compare", "apps", "keras"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'kldiv' has no attribute {name!r}")
