"""Naive float64 PyTorch formulations of the distillation losses: the independent oracle of the tests.

Written the way a practitioner would (log_softmax, logsumexp mixtures as in TRL's GKD, plain autograd),
sharing no code with kldiv.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def divergence_rows(ls: torch.Tensor, lt: torch.Tensor, divergence: str, beta: float = 0.5, alpha: float = 0.1):
    """Per-row divergence from student and teacher log-probabilities (last axis)."""
    s, t = ls.exp(), lt.exp()

    def kl(la, lb):  # KL(A || B), 0 log 0 = 0
        return torch.where(la.exp() > 0, la.exp() * (la - lb), torch.zeros_like(la)).sum(-1)

    def mix(la, lb, w):  # log(w A + (1 - w) B) in log space
        parts = [x + math.log(c) for x, c in ((la, w), (lb, 1 - w)) if c > 0]
        return torch.logsumexp(torch.stack(parts), dim=0)

    if divergence == "kl":
        return kl(lt, ls)
    if divergence == "reverse_kl":
        return kl(ls, lt)
    if divergence == "js":
        if beta in (0.0, 1.0):
            return torch.zeros_like(ls[..., 0]) + 0 * ls.sum(-1)
        lm = mix(lt, ls, beta)
        return beta * kl(lt, lm) + (1 - beta) * kl(ls, lm)
    if divergence == "skew_kl":
        return kl(lt, mix(lt, ls, alpha))
    if divergence == "skew_reverse_kl":
        return kl(ls, mix(ls, lt, alpha))
    if divergence == "tvd":
        return 0.5 * (t - s).abs().sum(-1)
    raise AssertionError(divergence)


def loss(
    student, teacher, labels=None, *, divergence="kl", beta=0.5, alpha=0.1, temperature=1.0,
    scale_by_temperature_squared=False, ignore_index=-100, reduction="mean", num_items_in_batch=None,
    vocab_size=None,
):
    """The loss, computed only on kept rows (selected first, so garbage elsewhere cannot matter)."""
    batch = student.shape[:-1]
    if vocab_size is not None:
        student, teacher = student[..., :vocab_size], teacher[..., :vocab_size]
    keep = torch.ones(batch, dtype=torch.bool) if labels is None else labels != ignore_index
    s, t = student[keep] / temperature, teacher[keep] / temperature
    rows = divergence_rows(F.log_softmax(s, -1), F.log_softmax(t, -1), divergence, beta, alpha)
    if scale_by_temperature_squared:
        rows = rows * temperature**2
    return _reduce(rows, keep, reduction, num_items_in_batch)


def _reduce(rows, keep, reduction, num_items_in_batch):
    if num_items_in_batch is not None:
        return rows.sum() / num_items_in_batch
    if reduction == "mean":
        return rows.sum() / max(int(keep.sum()), 1)
    if reduction == "sum":
        return rows.sum()
    out = torch.zeros(keep.shape, dtype=rows.dtype)
    out = out.index_put((keep,), rows) if keep.ndim else rows.reshape(())
    return out


def topk_loss(
    student, indices, logprobs, labels=None, *, tail="bucket", divergence="kl", beta=0.5, alpha=0.1,
    temperature=1.0, ignore_index=-100, reduction="mean",
):
    """Top-k teacher: build both (k + 1)-outcome bucketed (or k-outcome renormalised) distributions explicitly."""
    batch = student.shape[:-1]
    keep = torch.ones(batch, dtype=torch.bool) if labels is None else labels != ignore_index
    s, idx, lp = student[keep], indices[keep], logprobs[keep]
    if tail == "bucket":
        ps = F.softmax(s, -1)
        ps_top = ps.gather(-1, idx)
        ps_tail = 1 - ps_top.sum(-1, keepdim=True)
        pt_top = lp.exp()
        pt_tail = 1 - pt_top.sum(-1, keepdim=True)
        zs = torch.cat([ps_top, ps_tail], -1).log()
        zt = torch.cat([pt_top, pt_tail.clamp_min(0)], -1).log()
    else:
        zs, zt = s.gather(-1, idx), lp
    rows = divergence_rows(F.log_softmax(zs / temperature, -1), F.log_softmax(zt / temperature, -1), divergence, beta, alpha)
    return _reduce(rows, keep, reduction, None)
