"""Exact float64 NumPy values of the per-token statistics, and a file helper, shared by the compare tests."""

from __future__ import annotations

import hashlib

import numpy as np
from scipy.special import log_softmax


def oracle(a: np.ndarray, b: np.ndarray, labels: np.ndarray | None = None) -> dict:
    """Per-token values computed directly in float64 NumPy."""
    lp, lq = log_softmax(a.astype(np.float64), -1), log_softmax(b.astype(np.float64), -1)
    p, q = np.exp(lp), np.exp(lq)
    m = (p + q) / 2
    out = {
        "kld": (p * (lp - lq)).sum(-1),
        "kld_reverse": (q * (lq - lp)).sum(-1),
        "js": 0.5 * (p * (lp - np.log(m))).sum(-1) + 0.5 * (q * (lq - np.log(m))).sum(-1),
        "tvd": 0.5 * np.abs(p - q).sum(-1),
        "same": (a.argmax(-1) == b.argmax(-1)).astype(float),
    }
    for k in (5, 10):
        ta, tb = np.argsort(-a, -1)[..., :k], np.argsort(-b, -1)[..., :k]
        out[f"overlap{k}"] = np.array([len(set(x) & set(y)) / k for x, y in zip(ta.reshape(-1, k), tb.reshape(-1, k), strict=False)])
    if labels is not None:
        i = np.arange(len(labels))
        out["nll_r"], out["nll_o"] = -lp[i, labels], -lq[i, labels]
        out["dp"] = q[i, labels] - p[i, labels]
    return out


def random_logits(n=400, v=64, noise=0.4, seed=0):
    rng = np.random.default_rng(seed)
    a = 2 * rng.normal(size=(n, v))
    b = a + noise * rng.normal(size=(n, v))
    return a, b, rng.integers(0, v, n)


def se(x):
    return x.std(ddof=1) / np.sqrt(len(x))


def rechecksum(path):
    """Give a kldiv file whose bytes were edited a valid checksum again (what a buggy writer would produce), so
    that the checks behind the checksum are what a test sees."""
    data = bytearray(path.read_bytes())
    at = data.index(b'"checksum":"') + len(b'"checksum":"')
    data[at:at + 64] = b"0" * 64
    data[at:at + 64] = hashlib.sha256(bytes(data)).hexdigest().encode()
    path.write_bytes(bytes(data))
