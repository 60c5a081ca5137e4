"""When and how the PyTorch row-form kernels are compiled (used by :mod:`kldiv.nn` and :mod:`kldiv.compare`).

``torch.compile`` (Inductor: C++/OpenMP on CPU, Triton on CUDA) fuses a kernel's stages (row max, sum of
exponentials, the row form's sums and gradient) into loops that stay in cache. Compilation costs seconds, so it
is used only where the work is large enough to repay it (``Config.compile == "auto"``: at least
``Config.compile_min_elements`` per call, or ``Config.compile_after_elements`` over a kernel's calls), and the rows are a dynamic dimension, so a training loop pays it
once per (kernel, dtype, vocabulary, device) whatever its batch sizes and masks. A kernel whose compilation
fails is remembered (that kernel only) and runs eagerly: the same function, so the same numbers.

On CPU, Inductor can run every pass over a row inside one parallel loop over rows, keeping the row's
exponentials in a row-sized local buffer ("outer loop fusion"): the row is read from memory once. Three things
prevent that and are avoided by the callers: an output computed pointwise from row sums (such as ``0.5 * sum``
or ``where(bad, nan, value)``), which Inductor vectorises across rows in a separate loop, so kernels return
row reductions only and the row form's ``finish`` runs eagerly on (rows,) vectors; a row value holding a log
(or exp, log1p, tanh) broadcast over the row, which Inductor stores in such a loop of its own rather than
recompute it per entry (see :func:`kldiv._rows.log_ratio`); and a static row count below V / 300, where
Inductor parallelises each pass on its own (with dynamic rows it does not). Measured at
(4096, 32000) float32 on 2 cores: one loop 0.19-0.23 s for KL's forward and gradient, against 0.45 s for five
separate parallel passes.
"""

from __future__ import annotations

import threading
import types
import warnings
from collections.abc import Callable
from typing import Any

import torch

from . import _config

_cache: dict[Any, Callable] = {}
_broken: set[Any] = set()  # kernel keys whose compilation failed
_traced: set[Any] = set()  # kernel keys that have run compiled, their row count traced as dynamic
_eager_work: dict[Any, int] = {}  # logits each kernel key has evaluated eagerly under "auto" (see wanted)
_lock = threading.Lock()


def wanted(elements: int, device: torch.device, key: Any = None) -> bool:
    """Whether a call of ``elements`` logits on ``device`` should use a compiled kernel under the config.

    Under ``compile="auto"``: a call of at least ``compile_min_elements`` does; so does a call of kernel ``key``
    (of more than ``nn_small`` logits) once that kernel has evaluated ``compile_after_elements`` logits
    eagerly, summed over its calls: a training loop's steps repay the compilation together, while a few calls
    never pay for it. From 2^15 logits the compiled kernel takes 0.2-0.9x the eager one's time (2^15 to 2^18,
    measured); smaller calls stay eager (the dense ones take the small path). Never inside a caller's
    ``torch.compile``: the caller's graph takes the kernel in, so there is nothing to compile apart."""
    config = _config.get_config()
    if config.kernel == "eager" or device.type not in ("cpu", "cuda") or torch.compiler.is_compiling():
        return False
    if config.kernel == "compiled":
        return True
    if config.compile == "never":
        return False
    if config.compile == "always" or elements >= config.compile_min_elements:
        return True
    if key is None or elements <= config.nn_small:
        return False
    with _lock:
        done = _eager_work.get(key, 0)
        if done >= config.compile_after_elements:
            return True
        _eager_work[key] = done + elements
    return False


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
            fn = _cache[key] = torch.compile(_fresh(make()), dynamic=None, fullgraph=True)
        return fn


def call(key: Any, make: Callable[[], Callable], *args: Any) -> Any:
    """Run the compiled kernel ``key`` on row blocks ``args`` (tensors whose first dimension is the rows, or 0-d);
    if its compilation fails, warn once, remember it for this kernel, and run ``make()`` eagerly.

    The number of rows is a dynamic dimension, so one compilation serves every block size from 2 rows up
    (PyTorch always specialises a dimension of size 1: callers pad 1-row blocks to 2)."""
    if key in _broken:
        return make()(*args)
    if key not in _traced:  # once traced with dynamic rows, the guards accept any count (marking costs 7 us a tensor)
        for x in args:
            if isinstance(x, torch.Tensor) and x.ndim and x.shape[0] >= 2:
                torch._dynamo.mark_dynamic(x, 0)
    try:
        found = compiled(key, make)(*args)
        _traced.add(key)
        return found
    except Exception as error:  # noqa: BLE001 - any backend failure falls back to the same kernel, eagerly
        _broken.add(key)
        warnings.warn(
            f"kldiv: torch.compile failed for a {key[0]} kernel ({type(error).__name__}: {error}); that kernel runs "
            "eagerly (slower, same numbers). kldiv.set_config(compile='never') or KLDIV_COMPILE=never silences this.",
            RuntimeWarning,
            stacklevel=3,
        )
        return make()(*args)
