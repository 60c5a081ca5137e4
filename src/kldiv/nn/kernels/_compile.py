"""When and how chunk kernels are compiled.

``torch.compile`` (Inductor: C++/OpenMP on CPU, Triton on CUDA) fuses a chunk kernel's log-softmaxes, the
measure's value and vjp into a few loops per row that stay in cache. Compilation costs seconds, so it is used
only where the work is large enough to repay it (``auto``), and the kernel is compiled at a fixed chunk shape
(the last chunk is padded) so a training loop pays it once per (divergence, dtype, vocabulary, device).
If compilation fails (no C++ compiler, no Triton) the eager kernel, the reference, runs instead.
"""

from __future__ import annotations

import os
import threading
import types
import warnings
from collections.abc import Callable
from typing import Any

import torch

# "auto": compile when a call has at least COMPILE_MIN_ELEMENTS; "always"; "never".
_mode = os.environ.get("KLDIV_COMPILE", "auto")
COMPILE_MIN_ELEMENTS = 1 << 22
_cache: dict[Any, Callable] = {}
_broken: set[str] = set()
_lock = threading.Lock()


def set_compile(mode: str) -> str:
    """Set the compile policy ("auto", "always" or "never"); returns the previous one (for tests, benchmarks)."""
    global _mode
    if mode not in ("auto", "always", "never"):
        raise ValueError(f"compile mode must be 'auto', 'always' or 'never', got {mode!r}")
    previous, _mode = _mode, mode
    return previous


def wanted(elements: int, device: torch.device) -> bool:
    if _mode == "never" or device.type in _broken or device.type not in ("cpu", "cuda"):
        return False
    return _mode == "always" or elements >= COMPILE_MIN_ELEMENTS


def _fresh(fn: Callable) -> Callable:
    """A copy of ``fn`` with its own code object: Dynamo keeps its cache (and recompile limit) per code object,
    so each key gets its own entries and never evicts another key's."""
    code = fn.__code__.replace(co_name=f"{fn.__code__.co_name}_{len(_cache)}")
    return types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__, fn.__closure__)


def compiled(key: Any, make: Callable[[], Callable]) -> Callable:
    """The compiled version of ``make()``, one per ``key``."""
    with _lock:
        fn = _cache.get(key)
        if fn is None:
            fn = _cache[key] = torch.compile(_fresh(make()), dynamic=False, fullgraph=True)
        return fn


def call(key: Any, make: Callable[[], Callable], device: torch.device, *args: Any) -> Any:
    """Run the compiled kernel; on a compilation failure warn once, remember it, and run ``make()`` eagerly."""
    try:
        return compiled(key, make)(*args)
    except Exception as error:  # noqa: BLE001 - any backend failure falls back to the reference kernel
        _broken.add(device.type)
        warnings.warn(
            f"kldiv.nn: torch.compile failed on {device.type} ({type(error).__name__}: {error}); "
            "using the eager kernels (slower, same numbers). Set KLDIV_COMPILE=never to silence this.",
            RuntimeWarning,
            stacklevel=3,
        )
        return make()(*args)
