"""A comparison split over processes: each rank compares its share of the tokens and the ranks merge.

What the ranks exchange is :meth:`Comparison.state_dict`, O(1) in the tokens: counts, means and co-moment
matrices, the position curve, and the two percentile sketches (their exact values while they fit
``exact_limit``, then the fixed bucket histograms). Every array is packed into one float64 and one int64
buffer per rank; three ``all_gather`` calls (the shapes, then the two buffers) give every rank every state,
which each merges in rank order, so all ranks hold the same merged comparison.

PyTorch is imported here only, when a distributed comparison is asked for.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ._comparison import STATE_KEYS, Comparison
from ._storage import CorruptFileError, read_arrays

_KEYS = tuple(STATE_KEYS)
# errors a worker reports to the parent as the same class (anything else becomes a RuntimeError naming the rank)
_ERRORS: dict[str, type[Exception]] = {cls.__name__: cls for cls in (CorruptFileError, ValueError, TypeError,
                                                                      FileNotFoundError, PermissionError, OSError)}


def _torch() -> Any:
    try:
        import torch
        import torch.distributed as dist
    except ImportError:
        raise ImportError("a comparison over several processes needs PyTorch; install it with: pip install "
                          "'kldiv[torch]'") from None
    if not dist.is_available():
        raise ImportError("this PyTorch build has no torch.distributed; use workers=1 (--workers 1)")
    return torch, dist


def _pack(state: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(shapes, floats, ints): every dimension of every array in key order, and the flattened values."""
    shapes = np.array([d for key in _KEYS for d in state[key].shape], dtype=np.int64)
    floats = [state[key].ravel() for key in _KEYS if STATE_KEYS[key][1] == "f"]
    ints = [state[key].ravel() for key in _KEYS if STATE_KEYS[key][1] == "i"]
    return shapes, np.concatenate(floats).astype(np.float64), np.concatenate(ints).astype(np.int64)


def _unpack(shapes: np.ndarray, floats: np.ndarray, ints: np.ndarray) -> dict[str, np.ndarray]:
    state, d, at = {}, 0, {"f": 0, "i": 0}
    buffers = {"f": floats, "i": ints}
    for key in _KEYS:
        rank, kind = STATE_KEYS[key]
        shape = tuple(int(s) for s in shapes[d:d + rank])
        d += rank
        size = int(np.prod(shape, dtype=np.int64))
        state[key] = buffers[kind][at[kind]:at[kind] + size].reshape(shape)
        at[kind] += size
    return state


def merge_across_processes(comparison: Comparison, process_group: Any = None) -> Comparison:
    """Merge the comparisons of every rank of a ``torch.distributed`` process group, in place, on every rank.

    Each rank passes the comparison of its own tokens (the same settings on every rank); afterwards every rank's
    ``comparison`` holds all ranks' tokens, merged in rank order with :meth:`Comparison.merge` (so the result is
    identical on every rank and equals one comparison of all the tokens: moments to rounding, percentiles within
    the sketch's bound). Communication: three ``all_gather`` calls of each rank's :meth:`Comparison.state_dict`
    (a few KB while percentiles are exact up to ``exact_limit`` tokens per rank, about 2.3 MB of sketch buckets
    beyond), independent of the number of tokens. Works on any backend with ``all_gather`` of CPU tensors (gloo).

    Args:
      comparison: this rank's comparison (returned, merged).
      process_group: the group to merge over; default the default group (``torch.distributed.init_process_group``).

    Returns:
      ``comparison``, now holding every rank's tokens.
    """
    torch, dist = _torch()
    if not dist.is_initialized():
        raise RuntimeError("merge_across_processes needs torch.distributed initialised: call "
                           "torch.distributed.init_process_group first (or run under torchrun)")
    world = dist.get_world_size(process_group)
    shapes, floats, ints = _pack(comparison.state_dict())
    gathered_shapes = [torch.zeros(shapes.size, dtype=torch.int64) for _ in range(world)]
    dist.all_gather(gathered_shapes, torch.from_numpy(shapes), group=process_group)
    unpacked = [s.numpy() for s in gathered_shapes]
    sizes = []
    for s in unpacked:  # the buffer lengths of each rank, from its shapes
        d, lengths = 0, {"f": 0, "i": 0}
        for key in _KEYS:
            rank, kind = STATE_KEYS[key]
            lengths[kind] += int(np.prod(s[d:d + rank], dtype=np.int64))
            d += rank
        sizes.append(lengths)
    buffers = {}
    for kind, local, dtype in (("f", floats, torch.float64), ("i", ints, torch.int64)):
        longest = max(size[kind] for size in sizes)
        padded = torch.zeros(longest, dtype=dtype)
        padded[:local.size] = torch.from_numpy(local)
        out = [torch.zeros(longest, dtype=dtype) for _ in range(world)]
        dist.all_gather(out, padded, group=process_group)
        buffers[kind] = [o.numpy()[:size[kind]] for o, size in zip(out, sizes, strict=True)]
    states = [_unpack(unpacked[r], buffers["f"][r], buffers["i"][r]) for r in range(world)]
    merged = Comparison.from_state_dict(states[0])
    for state in states[1:]:
        merged.merge(Comparison.from_state_dict(state))
    comparison.load_state_dict(merged.state_dict())
    return comparison


def _loopback_interface() -> str:
    return "lo0" if sys.platform == "darwin" else "lo"


def compare_in_processes(reference: Any, other: Any, labels: np.ndarray | None, comparison: Comparison, workers: int,
                         n_rows: int, progress: Callable[[int, int], None] | None) -> None:
    """Compare on ``workers`` fresh Python processes (``python -m kldiv.compare._worker``: no re-import of the
    caller's main module, so it works from any script, notebook or shell) and load the merged state."""
    _torch()  # a clear error here, not in every worker, when PyTorch is missing
    if comparison.n_tokens:
        raise ValueError("a comparison over several processes starts from an empty Comparison; merge earlier "
                         "tokens afterwards with Comparison.merge")
    import kldiv

    with tempfile.TemporaryDirectory(prefix="kldiv-compare-") as name:
        folder = Path(name)
        settings = comparison._settings()
        (folder / "job.json").write_text(json.dumps({
            "workers": workers, "reference": str(Path(reference).resolve()), "other": str(Path(other).resolve()),
            "labels": labels is not None, "settings": {**settings, "top_k": list(settings["top_k"])}}))
        if labels is not None:
            np.save(folder / "labels.npy", labels, allow_pickle=False)
        environment = dict(os.environ, GLOO_SOCKET_IFNAME=_loopback_interface())
        package_root = str(Path(kldiv.__file__).resolve().parents[1])
        environment["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
        logs = [open(folder / f"stderr-{rank}", "wb") for rank in range(workers)]  # noqa: SIM115
        processes = [subprocess.Popen([sys.executable, "-m", "kldiv.compare._worker", str(folder), str(rank)],
                                      env=environment, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=log) for rank, log in enumerate(logs)]
        try:
            while True:
                codes = [p.poll() for p in processes]
                if any(code not in (None, 0) for code in codes) or all(code == 0 for code in codes):
                    break
                if progress is not None:
                    progress(sum(_read_progress(folder, rank) for rank in range(workers)), n_rows)
                time.sleep(0.2)
        finally:
            for p in processes:
                if p.poll() is None:
                    p.terminate()
            for p in processes:
                p.wait()
            for log in logs:
                log.close()
        for rank in range(workers):
            report = folder / f"error-{rank}.json"
            if report.exists():
                error = json.loads(report.read_text())
                cls = _ERRORS.get(error["type"])
                raise cls(error["message"]) if cls else ChildProcessError(
                    f"compare worker {rank}: {error['type']}: {error['message']}")
        for rank, code in enumerate(codes):
            if code not in (None, 0):
                lines = (folder / f"stderr-{rank}").read_text(errors="replace").strip().splitlines()
                raise ChildProcessError(f"compare worker {rank} ended with exit status {code}"
                                   f"{': ' + lines[-1] if lines else ''}; if it ran out of memory, use fewer workers")
        comparison.load_state_dict(read_arrays(folder / "state.safetensors"))
    if progress is not None:
        progress(n_rows, n_rows)


def _read_progress(folder: Path, rank: int) -> int:
    try:
        return int((folder / f"progress-{rank}").read_text())
    except (OSError, ValueError):
        return 0
