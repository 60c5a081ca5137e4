"""Accuracy and speed of kldiv.estimate.knn against closed-form truth and against universal-divergence 0.2.0.

Run:  python benchmarks/bench_estimate.py [--repeats 30] [--ud-repeats 10] [--ud-adaptive-repeats 2]

Both libraries run in this one process, side by side, single-threaded (``workers=1`` for kldiv; universal-divergence
with its default ``n_jobs=1``), so the time ratios are comparable. universal-divergence is optional: install it
with ``pip install universal-divergence`` for the comparison (it is not a kldiv dependency); without it its
columns read "not installed". Prints Markdown tables for benchmarks/RESULTS.md. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time
import warnings

import numpy as np

from kldiv.estimate import knn

try:
    from universal_divergence import estimate as ud_estimate
except ImportError:  # pragma: no cover - optional comparison
    ud_estimate = None


def _shift10(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    shift = np.full(10, 1 / math.sqrt(10))  # |shift|² = 1, so KL = 0.5
    return rng.normal(size=(n, 10)), rng.normal(size=(n, 10)) + shift


CASES = {
    "1-D N(0,1)‖N(1,1)": (0.5, lambda rng, n: (rng.normal(size=(n, 1)), rng.normal(1, 1, size=(n, 1)))),
    "10-D shift": (0.5, _shift10),
    "10-D N(0,I)‖N(0,2I)": (
        5 * (0.5 - 1 + math.log(2)),
        lambda rng, n: (rng.normal(size=(n, 10)), rng.normal(size=(n, 10)) * math.sqrt(2)),
    ),
    "1-D N(0,1)‖N(3,1)": (4.5, lambda rng, n: (rng.normal(size=(n, 1)), rng.normal(3, 1, size=(n, 1)))),
    "Exp(1)‖Exp(2)": (
        math.log(0.5) + 1,
        lambda rng, n: (rng.exponential(1.0, size=(n, 1)), rng.exponential(0.5, size=(n, 1))),
    ),
}


def _kldiv(k: int | None):
    def run(x: np.ndarray, y: np.ndarray) -> float:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return knn(x, y, k=k or 1, adaptive=k is None, workers=1).value

    return run


def _ud(k: int | None):
    def run(x: np.ndarray, y: np.ndarray) -> float:
        return float(ud_estimate(x, y, k=k))

    return run


def measure(method, truth_case, n: int, repeats: int, seed: int) -> tuple[float, float, float]:
    """(mean, sd, seconds per call) over ``repeats`` independent samples."""
    _, sampler = truth_case
    rng = np.random.default_rng(seed)
    values, seconds = [], []
    for _ in range(repeats):
        x, y = sampler(rng, n)
        start = time.perf_counter()
        values.append(method(x, y))
        seconds.append(time.perf_counter() - start)
    return float(np.mean(values)), float(np.std(values, ddof=1)) if repeats > 1 else math.nan, float(np.mean(seconds))


def _cell(result: tuple[float, float, float] | None) -> str:
    if result is None:
        return "—"
    mean, sd, _ = result
    return f"{mean:.3f} ± {sd:.3f}" if math.isfinite(sd) else f"{mean:.3f}"


def _time(result: tuple[float, float, float] | None) -> str:
    return "—" if result is None else f"{result[2]:.3g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--ud-repeats", type=int, default=10, help="universal-divergence fixed k repeats")
    parser.add_argument("--ud-adaptive-repeats", type=int, default=2, help="its adaptive mode is quadratic")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000])
    args = parser.parse_args()

    print(f"machine: {platform.platform()}, {os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.1f} at start; "
          f"numpy {np.__version__}; universal-divergence {'0.2.0' if ud_estimate else 'not installed'}")
    print(f"command: python benchmarks/bench_estimate.py --repeats {args.repeats} --ud-repeats {args.ud_repeats} "
          f"--ud-adaptive-repeats {args.ud_adaptive_repeats} --sizes {' '.join(map(str, args.sizes))}\n")
    methods = [("kldiv k=1", _kldiv(1)), ("kldiv k=5", _kldiv(5)), ("kldiv adaptive", _kldiv(None))]
    ud_methods = [("u-d k=1", _ud(1)), ("u-d k=5", _ud(5)), ("u-d adaptive", _ud(None))]
    header = "| case (truth) | n | " + " | ".join(name for name, _ in methods + ud_methods) + " |"
    print("Accuracy, mean ± sd over repeats (nats):\n")
    print(header)
    print("|" + "---|" * (2 + len(methods) + len(ud_methods)))
    timings: dict[tuple[str, int, str], tuple[float, float, float] | None] = {}
    for seed, (case, spec) in enumerate(CASES.items()):
        for n in args.sizes:
            row = []
            for name, method in methods:
                result = measure(method, spec, n, args.repeats, seed)
                timings[case, n, name] = result
                row.append(_cell(result))
            for name, method in ud_methods:
                result = None
                if ud_estimate is not None:
                    if name == "u-d adaptive":
                        if n <= 1000:
                            result = measure(method, spec, n, args.ud_adaptive_repeats, seed)
                    else:
                        result = measure(method, spec, n, args.ud_repeats if n <= 1000 else 3, seed)
                timings[case, n, name] = result
                row.append(_cell(result))
            print(f"| {case} ({spec[0]:.3f}) | {n} | " + " | ".join(row) + " |", flush=True)
    print("\nSeconds per call (single thread) and speed-up of kldiv over universal-divergence:\n")
    print("| case | n | kldiv k=1 | u-d k=1 | × | kldiv k=5 | u-d k=5 | × | kldiv adaptive | u-d adaptive | × |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for case in CASES:
        for n in args.sizes:
            cells = []
            for ours, theirs in (("kldiv k=1", "u-d k=1"), ("kldiv k=5", "u-d k=5"), ("kldiv adaptive", "u-d adaptive")):
                a, b = timings[case, n, ours], timings[case, n, theirs]
                ratio = f"{b[2] / a[2]:.0f}" if a and b else "—"
                cells += [_time(a), _time(b), ratio]
            print(f"| {case} | {n} | " + " | ".join(cells) + " |")
    rng = np.random.default_rng(99)
    x, y = rng.normal(size=(100_000, 10)), rng.normal(size=(100_000, 10)) + 0.1
    start, cpu = time.perf_counter(), time.process_time()
    knn(x, y, k=1, workers=-1)
    print(f"\nkldiv knn, n = m = 100 000 in 10-D, k=1, all cores: {time.perf_counter() - start:.1f} s wall, "
          f"{time.process_time() - cpu:.1f} s CPU (all threads)")
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
