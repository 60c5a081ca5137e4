"""Core benchmarks: kldiv against SciPy, measured side by side in one process.

    python benchmarks/bench_core.py            # the three targets of the core issue
    python benchmarks/bench_core.py --rows 1024  # a smaller, quicker run

Prints each figure (best of --repeat runs), the ratio to its anchor, and the physical floor: bytes moved
divided by measured memory bandwidth, and transcendental calls divided by their measured in-cache rate.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import scipy.special
import scipy.stats

import kldiv


def best(f, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return min(times)


def bandwidth(nbytes=1 << 30):
    """Read bandwidth (bytes/s) of one core summing a 1 GiB array: the floor for streaming the inputs once."""
    x = np.ones(nbytes // 4, dtype=np.float32)
    t = best(x.sum, 3)
    return nbytes / t


def log_rate():
    """float32 logs per second on all cores, in cache (chunks of 32k values, like kldiv's chunks)."""
    chunk = np.random.default_rng(0).random(1 << 15, dtype=np.float32) + 0.5
    out = np.empty_like(chunk)
    n = 2000
    t = best(lambda: [np.log(chunk, out=out) for _ in range(n)], 3)
    return n * chunk.size / t * min(os.cpu_count() or 1, 8)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pairwise-anchor-rows", type=int, default=200,
                        help="rows of P the broadcast rel_entr anchor runs on (it is linear in rows; scaled up)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n, v = args.rows, args.vocab
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, NumPy {np.__version__}, SciPy {scipy.__version__}")

    p = rng.random((n, v), dtype=np.float32)
    p /= p.sum(-1, keepdims=True)
    q = rng.random((n, v), dtype=np.float32)
    q /= q.sum(-1, keepdims=True)
    bw, logs = bandwidth(), log_rate()
    print(f"measured: read bandwidth {bw / 1e9:.1f} GB/s (one core), float32 log rate {logs / 1e9:.2f} G/s (all cores)")

    ours = best(lambda: kldiv.kl(p, q), args.repeat)
    anchor = best(lambda: scipy.stats.entropy(p, q, axis=-1), max(1, args.repeat - 1))
    floor_bytes, floor_ops = p.nbytes * 2 / bw, 2 * p.size / logs
    print(f"kl(p, q) probabilities ({n}, {v}) float32: kldiv {ours:.3f} s, scipy.stats.entropy {anchor:.3f} s, "
          f"ratio {anchor / ours:.1f}x (target >= 5x); floor {floor_bytes:.3f} s bytes, {floor_ops:.3f} s logs")

    s = rng.normal(size=(n, v)).astype(np.float32) * 3
    t = rng.normal(size=(n, v)).astype(np.float32) * 3

    def anchor_logits():
        ls, lt = scipy.special.log_softmax(s, axis=-1), scipy.special.log_softmax(t, axis=-1)
        return scipy.special.rel_entr(np.exp(ls), np.exp(lt)).sum(-1)

    ours = best(lambda: kldiv.kl(s, t, from_logits=True), args.repeat)
    anchor = best(anchor_logits, max(1, args.repeat - 1))
    floor_ops = 2 * s.size / logs  # one exp per logit (exp and log cost about the same)
    print(f"kl(s, t, from_logits=True) ({n}, {v}) float32: kldiv {ours:.3f} s, log_softmax + rel_entr {anchor:.3f} s, "
          f"ratio {anchor / ours:.1f}x (target >= 3x); floor {floor_bytes:.3f} s bytes, {floor_ops:.3f} s exps")

    P = rng.dirichlet(np.ones(1000), size=2000)
    Q = rng.dirichlet(np.ones(1000), size=2000)
    ours = best(lambda: kldiv.pairwise.kl(P, Q), args.repeat)
    k = args.pairwise_anchor_rows
    anchor = best(lambda: scipy.special.rel_entr(P[:k, None, :], Q[None, :, :]).sum(-1), 1) * (len(P) / k)
    flops = 2 * 2000 * 2000 * 1000
    print(f"pairwise.kl (2000, 1000) x (2000, 1000) float64: kldiv {ours:.3f} s, broadcast rel_entr "
          f"{anchor:.1f} s (timed on {k} rows, scaled x{len(P) // k}), ratio {anchor / ours:.0f}x (target >= 20x); "
          f"one {flops / 1e9:.0f} GFLOP matrix product")


if __name__ == "__main__":
    main()
