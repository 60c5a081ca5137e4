"""Per-token statistics of one chunk of rows, on the chunk's own backend (NumPy or PyTorch, any device).

The divergences are the row forms of :mod:`kldiv.measures`' KL, JS and TVD (each defined once, evaluated over
the row-max-shifted logits once per row block); this module only gathers the values the report needs.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .. import _backend, _config, _rows, _validate
from ..measures import JS, KL, TVD


class TokenValues(NamedTuple):
    """Per-token values of a chunk, as float64 NumPy arrays (one entry per row)."""

    kld: np.ndarray
    js: np.ndarray
    tvd: np.ndarray
    same_top: np.ndarray  # 1.0 where the arg max agrees
    overlap: dict[int, np.ndarray]  # k -> |top_k(reference) ∩ top_k(other)| / k
    log_p_reference: np.ndarray | None  # log p_reference(label); None without labels
    log_p_other: np.ndarray | None


def _top_indices(xp: Any, x: Any, k: int) -> Any:
    """Indices of the k largest entries of each row, largest first."""
    if _backend.is_torch(x):
        import torch  # already imported: x is a tensor

        return torch.topk(x, k, dim=-1, sorted=True).indices
    if k == x.shape[-1]:
        candidates = np.broadcast_to(np.arange(k), x.shape).copy()
    else:
        candidates = np.argpartition(x, x.shape[-1] - k, axis=-1)[:, -k:]
    order = np.argsort(-np.take_along_axis(x, candidates, axis=-1), axis=-1, kind="stable")
    return np.take_along_axis(candidates, order, axis=-1)


def _gather(x: Any, index: Any) -> Any:
    if _backend.is_torch(x):
        return x.gather(-1, index[:, None])[:, 0]
    return np.take_along_axis(x, index[:, None], axis=-1)[:, 0]


def _host(x: Any) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x.astype(np.float64, copy=False)
    return x.detach().to("cpu").double().numpy()


def _as_numpy_if_cpu(x: Any) -> Any:
    """CPU tensors become zero-copy NumPy views: NumPy ufuncs release the GIL, so row blocks run in
    parallel on the engine's thread pool without torch's intra-op threading on small blocks."""
    if _backend.is_torch(x) and x.device.type == "cpu":
        import torch  # x is a tensor, so torch is imported already

        x = x.detach()
        return (x if x.dtype in (torch.float32, torch.float64) else x.float()).numpy()
    return x


def _block(xp: Any, a: Any, b: Any, labels: Any, reverse: bool, k_max: int, row0: int, locators: tuple) -> dict:
    """Per-token values of one row block, on its backend: the row forms of KL, JS and TVD."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for x, loc in zip((a, b), locators, strict=True):
            _validate.check_logit_rows(xp, x, xp.max(x, axis=-1, keepdims=True), row0, loc)
        P, Q = _rows.side(xp, a), _rows.side(xp, b)
        lz_p, lz_q = P.log_z[:, 0], Q.log_z[:, 0]
        kl_sides, kl_log_z = ((Q, P), (lz_q, lz_p)) if reverse else ((P, Q), (lz_p, lz_q))
        out = {
            "kld": KL.rows.finish(xp, KL.rows.sums(xp, *kl_sides), *kl_log_z),
            "js": JS.rows.finish(xp, JS.rows.sums(xp, P, Q, weight=0.5), lz_p, lz_q, weight=0.5),
            "tvd": TVD.rows.finish(xp, TVD.rows.sums(xp, P, Q), lz_p, lz_q),
            "ref_top": _top_indices(xp, a, k_max),
            "other_top": _top_indices(xp, b, k_max),
            # the arg max by the first maximum, as llama.cpp, numpy.argmax and torch.argmax break ties (a top-k
            # list may order tied entries either way)
            "ref_arg": xp.argmax(a, axis=-1),
            "other_arg": xp.argmax(b, axis=-1),
        }
        if labels is not None:
            out["lr"] = _gather(P.x, labels) - xp.astype(lz_p, P.x.dtype)
            out["lo"] = _gather(Q.x, labels) - xp.astype(lz_q, Q.x.dtype)
    return out


def token_values(
    reference: Any,
    other: Any,
    labels: Any,
    *,
    reverse: bool,
    top_k: tuple[int, ...],
    locators: tuple[_validate.Locator, _validate.Locator],
    row0: int = 0,
) -> TokenValues:
    """Divergences and agreement statistics of rows ``reference`` and ``other`` (n, V), given as logits.

    ``labels`` (n,) holds in-range integer labels (rows without one hold any valid index; the caller
    drops them). ``row0`` and ``locators`` only make error messages point at the user's array.
    """
    if _backend.is_torch(reference):
        from . import _fused  # torch is imported already: reference is a tensor

        if _fused.wanted(reference):
            k_max = min(max(top_k), reference.shape[-1])
            rows = _fused.token_rows(reference, other, labels, reverse=reverse, k=k_max, locators=locators, row0=row0)
            return _gathered(_backend.namespace(reference), rows, labels is not None, top_k, rows["kld"].dtype)
    reference, other = _as_numpy_if_cpu(reference), _as_numpy_if_cpu(other)
    if labels is not None and not isinstance(reference, np.ndarray):
        import torch  # reference is a device tensor

        labels = torch.as_tensor(labels, device=reference.device)
    xp = _backend.namespace(reference)
    n, v = reference.shape
    work = _backend.compute_dtype(xp, reference.dtype)
    reference, other = xp.astype(reference, work), xp.astype(other, work)
    on_cpu = isinstance(reference, np.ndarray)
    config = _config.get_config()
    step = max(1, (config.compare_cpu_block if on_cpu else config.compare_device_block) // v)
    k_max = min(max(top_k), v)
    spans = [(lo, min(lo + step, n)) for lo in range(0, n, step)]

    def run(lo: int, hi: int) -> dict:
        lab = labels[lo:hi] if labels is not None else None
        return _block(xp, reference[lo:hi], other[lo:hi], lab, reverse, k_max, row0 + lo, locators)

    blocks = _config.run_parallel(spans, run, config.threads if on_cpu else 1)
    cat = (lambda key: np.concatenate([blk[key] for blk in blocks])) if xp is np else (
        lambda key: xp.concat([blk[key] for blk in blocks]))
    keys = ("kld", "js", "tvd", "ref_top", "other_top", "ref_arg", "other_arg") + (("lr", "lo") if labels is not None else ())
    return _gathered(xp, {key: cat(key) for key in keys}, labels is not None, top_k, work)


def _gathered(xp: Any, rows: dict, has_labels: bool, top_k: tuple[int, ...], work: Any) -> TokenValues:
    """TokenValues from per-row arrays: the divergences, both top-k index lists and the label log-probs."""
    top_a, top_b = rows["ref_top"], rows["other_top"]
    v_max = top_a.shape[-1]
    overlap = {}
    for k in top_k:
        kk = min(k, v_max)  # = min(k, V): v_max is min(max(top_k), V)
        hits = xp.sum(xp.astype(top_a[:, :kk, None] == top_b[:, None, :kk], work), axis=(1, 2))
        overlap[k] = _host(hits) / kk
    return TokenValues(
        kld=_host(rows["kld"]),
        js=_host(rows["js"]),
        tvd=_host(rows["tvd"]),
        same_top=_host(xp.astype(rows["ref_arg"] == rows["other_arg"], work)),
        overlap=overlap,
        log_p_reference=_host(rows["lr"]) if has_labels else None,
        log_p_other=_host(rows["lo"]) if has_labels else None,
    )
