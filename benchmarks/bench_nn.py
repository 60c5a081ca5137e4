"""kldiv.nn against the naive PyTorch formulations, side by side in one process.

    python benchmarks/bench_nn.py            # the issue's shapes: (4096, 32000) logits; N=4096, H=1024, V=32000
    python benchmarks/bench_nn.py --quick    # small shapes, a smoke test

Time: best of ``--repeats`` forward+backward runs (after a warm-up that also pays torch.compile once).
Peak memory: the process's peak resident set (VmHWM in /proc/self/status, reset through
/proc/self/clear_refs before each run) minus the resident set just before it, i.e. memory above the inputs.
tracemalloc cannot see torch's allocations and torch has no CPU allocator statistics; glibc returns the large
(> 32 MiB, mmap'd) buffers to the OS on free, so the resident set follows them.
Floors: bytes that must move (read both logit sets, write one gradient) / measured copy bandwidth, and the
exponentials that must be taken (one per logit and input; +1 log per logit for JS) / measured exp rate.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import time

import torch
import torch.nn.functional as F

import kldiv
import kldiv.nn as knn


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def measure(fn, repeats: int) -> tuple[float, float]:
    """(best seconds, peak bytes above the memory in use before the call)."""
    fn()  # warm-up (and compile)
    gc.collect()
    best, peak = math.inf, 0
    for _ in range(repeats):
        gc.collect()
        before = _status("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current resident set
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
        peak = max(peak, _status("VmHWM") - before)
    return best, peak


def floors() -> tuple[float, float]:
    """Measured copy bandwidth (bytes/s, read + write) and exp rate (exp/s) with all threads."""
    x = torch.randn(1 << 26)
    y = torch.empty_like(x)
    best_copy = best_exp = math.inf
    for _ in range(3):
        t = time.perf_counter()
        y.copy_(x)
        best_copy = min(best_copy, time.perf_counter() - t)
        t = time.perf_counter()
        torch.exp(x, out=y)
        best_exp = min(best_exp, time.perf_counter() - t)
    return 2 * x.numel() * 4 / best_copy, x.numel() / best_exp


def naive_loss(s, t, divergence, beta=0.5):
    ls, lt = F.log_softmax(s.float(), -1), F.log_softmax(t.float(), -1)
    if divergence == "kl":
        return F.kl_div(ls, lt, log_target=True, reduction="batchmean")
    if divergence == "reverse_kl":
        return F.kl_div(lt, ls, log_target=True, reduction="batchmean")
    # TRL's generalized JSD: mixture in log space with logsumexp
    lm = torch.logsumexp(torch.stack([ls + math.log(1 - beta), lt + math.log(beta)]), dim=0)
    kl_t = F.kl_div(lm, lt, reduction="none", log_target=True)
    kl_s = F.kl_div(lm, ls, reduction="none", log_target=True)
    return (beta * kl_t + (1 - beta) * kl_s).sum() / s.shape[0]


def logits_level(n, v, repeats, rows_out):
    bandwidth, exp_rate = floors()
    g = torch.Generator().manual_seed(0)
    s = (3 * torch.randn(n, v, generator=g)).requires_grad_(True)
    t = 3 * torch.randn(n, v, generator=g)
    grad_bytes = n * v * 4
    for div in ("kl", "reverse_kl", "js"):
        ours = knn.DistillationLoss(div)

        def run_ours(ours=ours):
            ours(s, t).backward()
            s.grad = None

        def run_naive(div=div):
            naive_loss(s, t, div).backward()
            s.grad = None

        start = time.perf_counter()
        run_ours()
        first = time.perf_counter() - start
        t_ours, m_ours = measure(run_ours, repeats)
        t_naive, m_naive = measure(run_naive, repeats)
        moved = 3 * n * v * 4
        exps = 2 * n * v + (n * v if div == "js" else 0)
        floor = max(moved / bandwidth, exps / exp_rate)
        rows_out.append(
            f"| logits {div} ({n}, {v}) f32 fwd+bwd | {t_naive:.3f} s | {t_ours:.3f} s | **{t_naive / t_ours:.1f}x** | "
            f"{floor:.3f} s ({moved / 1e9:.2f} GB / {bandwidth / 1e9:.1f} GB/s; {exps / 1e6:.0f} M exp / "
            f"{exp_rate / 1e9:.2f} G/s) | {m_naive / grad_bytes:.2f} | **{m_ours / grad_bytes:.2f}** | first call {first:.1f} s |"
        )
        print(rows_out[-1], flush=True)
    return bandwidth, exp_rate


def bf16_error(n, v, rows_out):
    g = torch.Generator().manual_seed(1)
    s64 = 4 * torch.randn(n, v, generator=g, dtype=torch.float64)
    t64 = 4 * torch.randn(n, v, generator=g, dtype=torch.float64)
    s16, t16 = s64.bfloat16(), t64.bfloat16()
    for div in ("kl", "js"):
        x = s16.double().requires_grad_(True)  # reference on the same rounded inputs
        ls, lt = F.log_softmax(x, -1), F.log_softmax(t16.double(), -1)
        if div == "kl":
            ref = F.kl_div(ls, lt, log_target=True, reduction="batchmean")
        else:
            lm = torch.logsumexp(torch.stack([ls + math.log(0.5), lt + math.log(0.5)]), 0)
            ref = (0.5 * F.kl_div(lm, lt, reduction="none", log_target=True)
                   + 0.5 * F.kl_div(lm, ls, reduction="none", log_target=True)).sum() / n
        ref.backward()
        want = x.grad

        def err(fn, want=want):
            y = s16.clone().requires_grad_(True)
            fn(y).backward()
            return float((y.grad.double() - want).norm() / want.norm())

        def naive16(y, div=div):  # the naive formula run entirely in bfloat16
            ls, lt = F.log_softmax(y, -1), F.log_softmax(t16, -1)
            if div == "kl":
                return F.kl_div(ls, lt, log_target=True, reduction="batchmean")
            lm = torch.logsumexp(torch.stack([ls + math.log(0.5), lt + math.log(0.5)]), 0)
            return (0.5 * F.kl_div(lm, lt, reduction="none", log_target=True)
                    + 0.5 * F.kl_div(lm, ls, reduction="none", log_target=True)).sum() / n

        e_ours = err(lambda y, div=div: knn.DistillationLoss(div)(y, t16))
        e_naive = err(naive16)
        rows_out.append(f"| bf16 {div} ({n}, {v}) gradient relative error vs float64 | naive bf16: {e_naive:.2e} | "
                        f"kldiv: **{e_ours:.2e}** (target <= 1e-2) |")
        print(rows_out[-1], flush=True)


def fused(n, h, v, repeats, rows_out):
    g = torch.Generator().manual_seed(2)
    hidden = (torch.randn(n, h, generator=g) / math.sqrt(h)).requires_grad_(True)
    weight = (torch.randn(v, h, generator=g)).requires_grad_(True)
    t_hidden = torch.randn(n, h, generator=g) / math.sqrt(h)
    t_weight = torch.randn(v, h, generator=g)
    ours = knn.FusedLinearDistillationLoss("kl")

    def clear():
        hidden.grad = weight.grad = None

    def run_ours():
        ours(hidden, weight, t_hidden, t_weight).backward()
        clear()

    def run_naive():
        with torch.no_grad():
            t_logits = t_hidden @ t_weight.T
        naive_loss(hidden @ weight.T, t_logits, "kl").backward()
        clear()

    t_ours, m_ours = measure(run_ours, repeats)
    t_naive, m_naive = measure(run_naive, repeats)
    flops = 4 * 2 * n * h * v  # student and teacher logits, d hidden, d weight
    start = time.perf_counter()
    a = torch.randn(2048, h)
    b = torch.randn(h, 8192)
    for _ in range(3):
        a @ b
    rate = 3 * 2 * 2048 * h * 8192 / (time.perf_counter() - start)
    rows_out.append(
        f"| fused linear kl N={n} H={h} V={v} f32 fwd+bwd | {t_naive:.2f} s | {t_ours:.2f} s | **{t_naive / t_ours:.2f}x** | "
        f"{flops / rate:.2f} s ({flops / 1e12:.2f} TFLOP / {rate / 1e9:.0f} GFLOP/s matmul) | "
        f"{m_naive / 2**20:.0f} MiB | **{m_ours / 2**20:.0f} MiB = {m_ours / max(m_naive, 1):.2f} of naive** | |"
    )
    print(rows_out[-1], flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes (smoke test)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--parts", default="logits,fused,bf16", help="comma-separated subset of logits,fused,bf16")
    args = parser.parse_args()
    kldiv.set_config(compile="auto")
    n, v, h = (512, 8000, 256) if args.quick else (4096, 32000, 1024)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; GPU: {'yes' if torch.cuda.is_available() else 'none'}")
    rows: list[str] = []
    print("| case | naive | kldiv | speed-up | physical floor | naive peak / grad | kldiv peak / grad | note |")
    print("|---|---|---|---|---|---|---|---|")
    parts = args.parts.split(",")
    if "logits" in parts:
        logits_level(n, v, args.repeats, rows)
    if "fused" in parts:
        fused(n, h, v, 1, rows)
    if "bf16" in parts:
        bf16_error(min(n, 512), v, rows)


if __name__ == "__main__":
    main()
