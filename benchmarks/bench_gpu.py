"""GPU figures of the logits-level and fused linear losses, each beside its anchors in one process.

    python benchmarks/bench_gpu.py                       # the issue's shapes on one CUDA device (under 5 minutes on an H100)
    python benchmarks/bench_gpu.py --quick --json g.json # small shapes, a smoke test
    TRITON_INTERPRET=1 python benchmarks/bench_gpu.py --quick --device cpu --repeats 1
                                                         # the smoke test without a GPU: Triton's interpreter

Needs a CUDA device, Triton, and for the Liger-Kernel anchors ``pip install liger-kernel --no-deps``. Prints one
Markdown table per area, ``| case | kldiv | anchor | ratio | floor |`` (ratio = kldiv / anchor: below 1 kldiv is
faster or smaller), and writes every figure to ``--json``.

Time: CUDA events around forward+backward (the student's gradient cleared each run), best of ``--repeats`` after
two warm-ups (compilation included there). Memory: ``torch.cuda.max_memory_allocated`` during one run minus the
allocated bytes before it (inputs excluded). Floors: bytes that must move (read both logit sets, write one
gradient) over the copy bandwidth measured here (``y.copy_(x)`` of the same size: read + write), and for the fused
loss the matmuls it must do (student and teacher logits, the hidden-state and weight gradients) timed bare.

Anchors: ``torch.compile`` of the naive loss (log-softmax both sides, the divergence's direct formula, mean over
rows), and Liger-Kernel's Triton losses on log-probabilities computed by PyTorch (``LigerKLDIVLoss``,
``LigerJSD``, ``LigerTVDLoss``) and its ``LigerFusedLinearJSD`` (beta 0.5 for JS; beta 0 is its forward KL).
bf16 precision: the relative error (Frobenius) of the student's gradient against float64.

``--device cpu`` (with ``--quick``, under ``TRITON_INTERPRET=1``) runs every case at tiny shapes on CPU tensors
with kldiv's Triton kernels in the interpreter, wall-clock times and no Liger anchors (its kernels do not run in
the interpreter): it checks that the script works, its figures mean nothing (the test suite runs it so).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
import traceback
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

DIVERGENCES = ("kl", "reverse_kl", "js", "tvd")


DEVICE = "cuda"  # --device


def cuda_time(fn: Callable[[], Any], repeats: int) -> tuple[float, int]:
    """(best seconds, peak extra bytes) of ``fn`` after two warm-ups (on CPU: wall clock, memory not measured)."""
    fn()
    fn()
    if DEVICE == "cpu":
        best = math.inf
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - start)
        return best, 0
    torch.cuda.synchronize()
    best = math.inf
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        best = min(best, start.elapsed_time(end) / 1e3)
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return best, torch.cuda.max_memory_allocated() - before


def empty_cache() -> None:
    if DEVICE == "cuda":
        torch.cuda.empty_cache()


def copy_bandwidth(nbytes: int) -> float:
    x = torch.empty(nbytes // 4, dtype=torch.float32, device=DEVICE)
    y = torch.empty_like(x)
    seconds, _ = cuda_time(lambda: y.copy_(x), 5)
    return 2 * nbytes / seconds


def naive(s: torch.Tensor, t: torch.Tensor, divergence: str) -> torch.Tensor:
    ls, lt = F.log_softmax(s.float(), -1), F.log_softmax(t.float(), -1)
    if divergence == "kl":
        return F.kl_div(ls, lt, log_target=True, reduction="batchmean")
    if divergence == "reverse_kl":
        return F.kl_div(lt, ls, log_target=True, reduction="batchmean")
    if divergence == "tvd":
        return 0.5 * (ls.exp() - lt.exp()).abs().sum(-1).mean()
    lm = torch.logsumexp(torch.stack([ls, lt]), 0) - math.log(2)
    return 0.5 * (F.kl_div(lm, lt, log_target=True, reduction="batchmean")
                  + F.kl_div(lm, ls, log_target=True, reduction="batchmean"))


def liger_loss(divergence: str) -> Callable | None:
    if DEVICE == "cpu":  # Liger's Triton kernels do not run in Triton's interpreter
        return None
    try:
        from liger_kernel.transformers import LigerJSD, LigerKLDIVLoss, LigerTVDLoss
    except ImportError:
        return None
    if divergence in ("kl", "reverse_kl"):
        kl = LigerKLDIVLoss(reduction="batchmean", log_target=True)
        if divergence == "kl":
            return lambda s, t: kl(F.log_softmax(s.float(), -1), F.log_softmax(t.float(), -1))
        return lambda s, t: kl(F.log_softmax(t.float(), -1), F.log_softmax(s.float(), -1))
    if divergence == "js":
        jsd = LigerJSD(beta=0.5)
        return lambda s, t: jsd(F.log_softmax(s.float(), -1), F.log_softmax(t.float(), -1))
    tvd = LigerTVDLoss(reduction="batchmean")
    return lambda s, t: tvd(F.softmax(s.float(), -1), F.softmax(t.float(), -1))


def step(loss_fn: Callable, s: torch.Tensor, *others: Any) -> Callable[[], None]:
    def run() -> None:
        s.grad = None
        loss_fn(s, *others).backward()
    return run


def logits_area(args, rows: list[dict]) -> None:
    from kldiv.nn import DistillationLoss

    shapes = [(16, 1024)] if DEVICE == "cpu" else [(256, 4096)] if args.quick else [(8192, 128256), (16384, 131072)]
    for n, v in shapes:
        for dtype in (torch.bfloat16, torch.float32):
            g = torch.Generator(device=DEVICE).manual_seed(0)
            s = (3 * torch.randn(n, v, device=DEVICE, generator=g)).to(dtype).requires_grad_(True)
            t = (3 * torch.randn(n, v, device=DEVICE, generator=g)).to(dtype)
            moved = 3 * n * v * s.element_size()
            floor = moved / copy_bandwidth(n * v * s.element_size())
            for divergence in DIVERGENCES:
                case = f"{divergence} fwd+bwd ({n}, {v}) {str(dtype).removeprefix('torch.')}"
                row: dict[str, Any] = {"area": "logits", "case": case, "floor": floor}
                try:
                    ours = DistillationLoss(divergence)
                    row["kldiv"], row["kldiv_memory"] = cuda_time(step(ours, s, t), args.repeats)
                    compiled = torch.compile(lambda a, b, d=divergence: naive(a, b, d))
                    row["compile"], row["compile_memory"] = cuda_time(step(compiled, s, t), args.repeats)
                    liger = liger_loss(divergence)
                    if liger is not None:
                        row["liger"], row["liger_memory"] = cuda_time(step(liger, s, t), args.repeats)
                except Exception as error:  # one case's failure is reported in its row
                    row["error"] = f"{type(error).__name__}: {error}"
                    traceback.print_exc()
                rows.append(row)
                empty_cache()
            del s, t
            empty_cache()


def bf16_area(args, rows: list[dict]) -> None:
    from kldiv.nn import DistillationLoss

    n, v = (16, 1024) if DEVICE == "cpu" else (64, 4096) if args.quick else (512, 128256)
    g = torch.Generator(device=DEVICE).manual_seed(1)
    s64 = 3 * torch.randn(n, v, device=DEVICE, generator=g, dtype=torch.float64)
    t64 = s64 + torch.randn(n, v, device=DEVICE, generator=g, dtype=torch.float64)
    s16, t16 = s64.to(torch.bfloat16), t64.to(torch.bfloat16)
    for divergence in ("kl", "js"):
        x = s16.double().requires_grad_(True)
        naive(x, t16.double(), divergence).backward()
        want = x.grad
        row: dict[str, Any] = {"area": "bf16", "case": f"{divergence} ({n}, {v}) bf16 gradient error vs float64"}
        for name, fn in (("kldiv", DistillationLoss(divergence)), ("liger", liger_loss(divergence))):
            if fn is None:
                continue
            y = s16.clone().requires_grad_(True)
            fn(y, t16).backward()
            row[name] = float((y.grad.double() - want).norm() / want.norm())
        rows.append(row)


def fused_area(args, rows: list[dict]) -> None:
    h, v = (64, 1024) if DEVICE == "cpu" else (256, 4096) if args.quick else (4096, 128256)
    for bt in ((1, 32) if DEVICE == "cpu" else (64, 512) if args.quick else (1024, 8192)):
        fused_cases(args, rows, bt, h, v)
        empty_cache()


def fused_cases(args, rows: list[dict], bt: int, h: int, v: int) -> None:
    from kldiv.nn import FusedLinearDistillationLoss

    g = torch.Generator(device=DEVICE).manual_seed(2)
    hidden = (torch.randn(bt, h, device=DEVICE, generator=g) / math.sqrt(h)).bfloat16().requires_grad_(True)
    teacher_hidden = (torch.randn(bt, h, device=DEVICE, generator=g) / math.sqrt(h)).bfloat16()
    weight = torch.randn(v, h, device=DEVICE, generator=g).bfloat16().requires_grad_(True)
    teacher_weight = torch.randn(v, h, device=DEVICE, generator=g).bfloat16()

    def matmuls():
        with torch.no_grad():
            z = hidden @ weight.t()
            _ = teacher_hidden @ teacher_weight.t()
            return z @ weight, z.t() @ hidden  # the two gradient matmuls, with z standing in for dL/dz

    bare, _ = cuda_time(matmuls, args.repeats)
    for divergence, beta in (("js", 0.5), ("kl", 0.0)):
        row: dict[str, Any] = {"area": "fused", "case": f"fused linear {divergence} B*T={bt} H={h} V={v} bf16",
                               "floor": bare}
        ours = FusedLinearDistillationLoss(divergence)

        def run(loss_fn, *extra):
            def once():
                hidden.grad = weight.grad = None
                loss_fn(hidden, weight, teacher_hidden, teacher_weight, *extra).backward()
            return once

        try:
            row["kldiv"], row["kldiv_memory"] = cuda_time(run(ours), args.repeats)
            if DEVICE == "cpu":  # Liger's Triton kernels do not run in Triton's interpreter
                rows.append(row)
                continue
            from liger_kernel.transformers import LigerFusedLinearJSD

            row["liger"], row["liger_memory"] = cuda_time(run(LigerFusedLinearJSD(jsd_beta=beta), None), args.repeats)
        except Exception as error:  # one case's failure is reported in its row
            row["error"] = f"{type(error).__name__}: {error}"
            traceback.print_exc()
        rows.append(row)


def fmt(x: Any) -> str:
    if x is None:
        return "—"
    if isinstance(x, float) and x < 1:
        return f"{x * 1e3:.2f} ms" if x > 1e-6 else f"{x:.2e}"
    return f"{x:.3f} s" if isinstance(x, float) else str(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes (a smoke test)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="write every figure to this file")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cpu: a smoke test of the script through Triton's interpreter (with --quick)")
    args = parser.parse_args()
    global DEVICE
    DEVICE = args.device
    if DEVICE == "cpu":
        if not args.quick or os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
            raise SystemExit("--device cpu is a smoke test: pass --quick and set TRITON_INTERPRET=1")
        os.environ.setdefault("KLDIV_KERNEL", "triton")
    elif not torch.cuda.is_available():
        raise SystemExit("bench_gpu.py needs a CUDA device (this machine has none); --device cpu --quick with "
                         "TRITON_INTERPRET=1 runs it as a smoke test")
    rows: list[dict] = []
    for area in (logits_area, bf16_area, fused_area):
        area(args, rows)
    device = torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu (Triton interpreter, smoke test)"
    print(f"device: {device}, torch {torch.__version__}\n")
    print("| case | kldiv | torch.compile(naive) | Liger | kldiv / Liger | floor | kldiv at floor x |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        k, lg = row.get("kldiv"), row.get("liger")
        ratio = f"{k / lg:.2f}" if k and lg and row["area"] != "bf16" else "—"
        at_floor = f"{k / row['floor']:.2f}" if k and row.get("floor") else "—"
        show = (lambda x: "—" if x is None else f"{x:.2e}") if row["area"] == "bf16" else fmt  # errors, not times
        print(f"| {row['case']} | {show(k)} | {fmt(row.get('compile'))} | {show(lg)} | {ratio} | {fmt(row.get('floor'))} "
              f"| {at_floor} |" + (f" error: {row['error']}" if "error" in row else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": device, "torch": torch.__version__, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
