"""Every tunable of kldiv in one place: compile policy, thread pool, chunk sizes and thresholds.

One immutable :class:`Config` is in effect at a time, per thread and asyncio task (a ``contextvars`` variable):
read it with :func:`get_config`, change it for the process with :func:`set_config`, or for a block of code with
:func:`config_context`::

    with kldiv.config_context(compile="never"):
        loss = loss_fn(student, teacher)

The environment variables ``KLDIV_COMPILE`` (``auto``, ``always``, ``never``) and ``KLDIV_KERNEL`` (``auto``,
``triton``, ``compiled``, ``eager``) give the defaults of ``compile`` and ``kernel``; they are read when the
configuration is first needed, not at import.

The sizes were measured on the 2-core reference machine (see ``benchmarks/RESULTS.md``); they are elements
(numbers) per chunk of rows unless the name says otherwise.
"""

from __future__ import annotations

import contextvars
import dataclasses
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

COMPILE_MODES = ("auto", "always", "never")
KERNELS = ("auto", "triton", "compiled", "eager")


@dataclass(frozen=True)
class Config:
    """kldiv's settings.

    Attributes:
      compile: when the PyTorch kernels use ``torch.compile``: "auto" (calls with at least
        ``compile_min_elements`` logits, and kernels that have evaluated ``compile_after_elements``), "always"
        or "never". A compilation failure is remembered per kernel,
        which then runs eagerly (same numbers, slower) with one warning.
      compile_min_elements: the size from which compilation pays for its seconds of compile time.
      compile_after_elements: under "auto", a kernel called with fewer logits is compiled once it has evaluated
        this many eagerly over its calls (calls of more than ``nn_small`` logits; 2**27 logits is about as
        long eagerly as a compilation takes): a training loop's steps repay the compile, a few calls do not.
      kernel: which implementation the ``kldiv.nn`` losses run: "auto" (the Triton kernels for CUDA tensors where
        Triton is installed, else the compiled or eager kernels as ``compile`` says), "triton" (also for CPU
        tensors, which needs ``TRITON_INTERPRET=1``: how the test suite checks the GPU kernels), "compiled" or
        "eager". Default from the environment variable ``KLDIV_KERNEL``.
      threads: NumPy chunks run on a pool of this many threads (NumPy's ufuncs release the GIL).
      numpy_chunk: elements per input and chunk on the NumPy path; 2**18 float32 values (1 MiB) keep a chunk
        and its temporaries in cache while the Python work per chunk stays small beside the arithmetic (best of
        2**15..2**19 for KL at (4096, 32000): 2.4x faster than 2**15 validated, 1.8x without validation).
      array_chunk: elements per chunk for other array libraries (torch, JAX, CuPy) in the core API.
      numpy_small: plain NumPy inputs of at most this many values per input take the core API's short path
        (the same checks and formulas without the chunking machinery: 25 us instead of 74 us for two 3-vectors).
      nn_small: dense ``kldiv.nn`` losses on CPU tensors of at most this many logits per side take the small path
        (under kernel "auto" or "eager", compile not "always"; such calls are never compiled): the row form on
        both sides at once in float64 NumPy, where an operation costs a third of a tensor operation's overhead.
        Measured forward+backward: 0.5-0.75x the chunked kernel's time up to 2**14 logits, 2.6-3.6x at 2**15.
      eager_chunk: elements per chunk of the eager ``kldiv.nn`` kernels; 2**18 float32 (1 MiB) per temporary
        stays in L2 between the kernel's operations.
      compiled_chunk: elements per call of a compiled ``kldiv.nn`` kernel; its rows stay in cache whatever the
        chunk (one loop per row), and fewer, larger calls measured faster.
      fused_chunk: logits per chunk of the fused linear loss on CPU (2**23: 32 MiB in float32).
      fused_device_chunk: logits per chunk of the fused linear loss on CUDA (2**27: 512 MiB per float32 buffer),
        rounded down to whole 128-row tiles: large enough that the chunk's matmuls run at the tensor cores' rate.
      compare_cpu_block, compare_device_block: elements per row block of ``kldiv.compare``'s eager path.
      pairwise_block: elements per block of broadcast pairs in ``kldiv.pairwise``.
      huge_page_min_bytes: CPU gradient buffers from this size up are allocated in transparent huge pages.
      gradient_pool_bytes: how much of those buffers is kept for reuse once no tensor uses them (0: none), so a
        training loop's steps skip the page faults of a fresh gradient (see :mod:`kldiv.nn._memory`).
      knn_leaf_size: points per leaf of the KD-trees of ``kldiv.estimate.knn``; SciPy's default of 16 suits low
        dimensions, larger leaves make 10-D queries faster (see benchmarks/RESULTS.md, Estimators).
    """

    compile: str = "auto"
    compile_min_elements: int = 1 << 22
    compile_after_elements: int = 1 << 27
    kernel: str = "auto"
    threads: int = max(1, min(8, os.cpu_count() or 1))
    numpy_chunk: int = 1 << 18
    array_chunk: int = 1 << 22
    numpy_small: int = 4096
    eager_chunk: int = 1 << 18
    nn_small: int = 1 << 14
    compiled_chunk: int = 1 << 23
    fused_chunk: int = 1 << 23
    fused_device_chunk: int = 1 << 27
    compare_cpu_block: int = 1 << 18
    compare_device_block: int = 1 << 24
    pairwise_block: int = 1 << 20
    huge_page_min_bytes: int = 1 << 26
    gradient_pool_bytes: int = 1 << 30
    knn_leaf_size: int = 48

    def __post_init__(self) -> None:
        if self.compile not in COMPILE_MODES:
            raise ValueError(f"compile must be one of {', '.join(map(repr, COMPILE_MODES))}, got {self.compile!r}")
        if self.kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {', '.join(map(repr, KERNELS))}, got {self.kernel!r}")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            least = 0 if f.name == "gradient_pool_bytes" else 1
            if f.name not in ("compile", "kernel") and (isinstance(value, bool) or not isinstance(value, int) or
                                                        value < least):
                kind = "a non-negative" if least == 0 else "a positive"
                raise ValueError(f"{f.name} must be {kind} integer, got {value!r}")


_current: contextvars.ContextVar[Config | None] = contextvars.ContextVar("kldiv_config", default=None)
_process_default: Config | None = None
_lock = threading.Lock()


def _default() -> Config:
    global _process_default
    if _process_default is not None:  # set once, then only replaced whole: no lock needed to read it
        return _process_default
    with _lock:
        if _process_default is None:
            mode = os.environ.get("KLDIV_COMPILE", "auto")
            if mode not in COMPILE_MODES:
                raise ValueError(f"the environment variable KLDIV_COMPILE must be auto, always or never, got {mode!r}")
            kernel = os.environ.get("KLDIV_KERNEL", "auto")
            if kernel not in KERNELS:
                raise ValueError(
                    f"the environment variable KLDIV_KERNEL must be auto, triton, compiled or eager, got {kernel!r}"
                )
            _process_default = Config(compile=mode, kernel=kernel)
        return _process_default


def get_config() -> Config:
    """The configuration in effect here (the scoped one inside :func:`config_context`)."""
    return _current.get() or _default()


def set_config(**changes: Any) -> Config:
    """Change settings for the whole process (outside any :func:`config_context`); returns the previous
    configuration. Unknown names are a ``TypeError``, bad values a ``ValueError``."""
    global _process_default
    previous = _default()
    updated = dataclasses.replace(previous, **changes)
    with _lock:
        _process_default = updated
    return previous


@contextmanager
def config_context(**changes: Any) -> Iterator[Config]:
    """Change settings inside a ``with`` block only (this thread or task); yields the configuration in effect."""
    config = dataclasses.replace(get_config(), **changes)
    token = _current.set(config)
    try:
        yield config
    finally:
        _current.reset(token)


_pool: ThreadPoolExecutor | None = None
_pool_threads = 0


def thread_pool(threads: int) -> ThreadPoolExecutor:
    """A shared pool with at least ``threads`` workers (created on first use, grown when asked for more)."""
    global _pool, _pool_threads
    with _lock:
        if _pool is None or _pool_threads < threads:
            _pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kldiv")
            _pool_threads = threads
        return _pool


def run_parallel(spans: list[tuple[int, int]], work: Any, threads: int) -> list[Any]:
    """``work(lo, hi)`` for each span, on the pool when ``threads > 1``; results in order, and the first
    error in span order raised after all spans finished."""
    if threads <= 1 or len(spans) <= 1:
        return [work(lo, hi) for lo, hi in spans]
    futures = [thread_pool(threads).submit(work, lo, hi) for lo, hi in spans]
    errors = [f.exception() for f in futures]
    for error in errors:
        if error is not None:
            raise error
    return [f.result() for f in futures]
