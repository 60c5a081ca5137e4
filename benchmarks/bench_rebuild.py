"""The rebuild's targets: each kldiv figure beside its anchor and its floor, measured side by side in one process.

    python benchmarks/bench_rebuild.py                          # every area at the issue's shapes (many minutes)
    python benchmarks/bench_rebuild.py --quick                  # tiny shapes, a smoke test (under a minute)
    python benchmarks/bench_rebuild.py --only nn_small,fused --json /tmp/rebuild.json

Areas (``--only``): overhead, nn_small, nn_large, numpy, fused, precision. One Markdown table per area,
``| case | kldiv | anchor | ratio | target | floor |``, where ratio = kldiv / anchor (time, memory or error: below
1 kldiv is faster, smaller or more exact) and the target is the issue's bound on it ("faster by 2x" is ratio
<= 0.50). A case that fails prints its error in its row; the others still run.

Time: best (min) of ``--repeats`` runs after one warm-up (time.perf_counter), forward+backward with the
student's gradient cleared each run; per-call overheads: best of 5 timeit batches of many loops. kldiv runs
under its default configuration (compile "auto") unless a case names another.
Peak memory: the process's peak resident set (VmHWM, reset by writing 5 to /proc/self/clear_refs before each
run) minus the resident set just before it, as in bench_nn.py.
Floors: bytes that must move / measured copy bandwidth, the copy being ``torch.empty_like(x).copy_(x)`` of a
(rows, vocab) float32 tensor (read + write, fresh pages included, as a new gradient has); distillation must
read both logit sets and write one gradient (3 x rows x vocab x 4 bytes), NumPy KL must read both inputs.
Fused: the four matmuls no fused loss avoids (student and teacher logits, h-gradient G @ W, W-gradient G.T @ h)
timed bare with a random G. Precision: float32 output rounding (2**-24) is the only error left to an exact
evaluation of the float32 inputs.

Anchors: SciPy rel_entr; the naive eager PyTorch losses below (and torch.compile of the naive KL); NumPy's
direct formula; Liger-Kernel's chunked ``LigerFusedLinearJSDLoss`` (``pip install liger-kernel --no-deps``; its
chunked losses are plain PyTorch and import without triton), beta=0.5 for JS and beta=0 (its forward-KL
endpoint, KL(T || S)) for KL, weight_hard_loss=0, run both with its default compiled=True and with
compiled=False, the faster of the two being the anchor; float32 F.kl_div for precision.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import time
import timeit
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

AREAS = ("overhead", "nn_small", "nn_large", "numpy", "fused", "precision")
DIVERGENCES = ("kl", "reverse_kl", "js", "tvd")


@dataclass
class Row:
    """One case: kldiv's figure, its anchor's, and the bound on their ratio (check <= limit)."""

    area: str
    case: str
    unit: str = "s"
    kldiv: float | None = None
    anchor: float | None = None
    limit: float | None = None  # bound on kldiv / anchor, or on kldiv itself when absolute
    absolute: bool = False
    target: str = ""
    floor: float | None = None
    floor_text: str = ""
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def ratio(self) -> float | None:
        if self.kldiv is None or self.anchor is None or self.anchor == 0:
            return None
        return self.kldiv / self.anchor

    @property
    def met(self) -> bool | None:
        value = self.kldiv if self.absolute else self.ratio
        if value is None or self.limit is None:
            return None
        return value <= self.limit


# ---------------------------------------------------------------- measuring


def _status(name: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{name} not in /proc/self/status")


def best_of(fn: Callable[[], Any], repeats: int, memory: bool = False) -> tuple[float, float, int]:
    """(first call seconds, best seconds of `repeats` after it, peak bytes above the resident set before a run)."""
    start = time.perf_counter()
    fn()  # warm-up, and any compilation
    first = time.perf_counter() - start
    best, peak = math.inf, 0
    for _ in range(repeats):
        gc.collect()
        if memory:
            before = _status("VmRSS")
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # VmHWM := current resident set
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
        if memory:
            peak = max(peak, _status("VmHWM") - before)
    return first, best, peak


def per_call(fn: Callable[[], Any], batches: int = 5) -> float:
    """Seconds per call: best of `batches` timeit batches, each long enough for the clock (autorange)."""
    timer = timeit.Timer(fn)
    loops, _ = timer.autorange()
    return min(timer.repeat(batches, loops)) / loops


_BANDWIDTH: dict[tuple[int, int], tuple[float, float]] = {}


def copy_bandwidth(rows: int, vocab: int) -> tuple[float, float]:
    """(bytes/s of torch.empty_like(x).copy_(x), bytes/s of a copy into an allocated buffer), read + write."""
    if (rows, vocab) not in _BANDWIDTH:
        x = torch.randn(rows, vocab)
        y = torch.empty_like(x)
        fresh = prealloc = math.inf
        for _ in range(5):
            start = time.perf_counter()
            torch.empty_like(x).copy_(x)
            fresh = min(fresh, time.perf_counter() - start)
            start = time.perf_counter()
            y.copy_(x)
            prealloc = min(prealloc, time.perf_counter() - start)
        nbytes = 2 * x.numel() * 4
        _BANDWIDTH[rows, vocab] = nbytes / fresh, nbytes / prealloc
        del x, y
    return _BANDWIDTH[rows, vocab]


def bandwidth_floor(nbytes: float, rows: int, vocab: int) -> tuple[float, str]:
    """(seconds, how): `nbytes` at the copy bandwidth of a (rows, vocab) float32 tensor into memory the process
    already holds (kldiv's gradient buffers are pooled, so a step's gradient does not fault in fresh pages)."""
    fresh, prealloc = copy_bandwidth(rows, vocab)
    size = f"{nbytes / 1e9:.2f} GB" if nbytes >= 1e9 else f"{nbytes / 1e6:.1f} MB"
    return nbytes / prealloc, (f"{size} / {prealloc / 1e9:.1f} GB/s copy into held memory; "
                               f"{fresh / 1e9:.1f} GB/s into fresh pages")


def exp_floor(rows: int, vocab: int) -> float:
    """Seconds of the arithmetic no exact loss avoids: one exponential per logit of both sides, with the row sums,
    compiled (one vectorised pass, nothing stored)."""
    x = torch.randn(rows, vocab)
    row_exp_sums = torch.compile(lambda a: torch.exp(a).sum(-1))
    _, best, _ = best_of(lambda: row_exp_sums(x), 3)
    return 2 * best


# ---------------------------------------------------------------- anchors


def naive_loss(s: torch.Tensor, t: torch.Tensor, divergence: str) -> torch.Tensor:
    """The naive eager PyTorch distillation losses, mean over rows; JS with beta = 0.5."""
    ls, lt = F.log_softmax(s, -1), F.log_softmax(t, -1)
    if divergence == "kl":
        return F.kl_div(ls, lt, log_target=True, reduction="batchmean")
    if divergence == "reverse_kl":
        return F.kl_div(lt, ls, log_target=True, reduction="batchmean")
    if divergence == "js":  # log M = log(0.5 S + 0.5 T), by logsumexp of the log-softmaxes
        lm = torch.logsumexp(torch.stack([ls, lt]), dim=0) - math.log(2.0)
        return 0.5 * (F.kl_div(lm, lt, log_target=True, reduction="batchmean")
                      + F.kl_div(lm, ls, log_target=True, reduction="batchmean"))
    if divergence == "tvd":
        return 0.5 * (ls.exp() - lt.exp()).abs().sum(-1).mean()
    raise ValueError(divergence)


def naive_kl(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return naive_loss(s, t, "kl")


def logits(rows: int, vocab: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (3 * torch.randn(rows, vocab, generator=g)).requires_grad_(True), 3 * torch.randn(rows, vocab, generator=g)


def train_step(loss_fn: Callable[..., torch.Tensor], s: torch.Tensor, *others: Any) -> Callable[[], None]:
    def step():
        loss_fn(s, *others).backward()
        s.grad = None
    return step


def agree(ours: torch.Tensor | float, theirs: torch.Tensor | float, tolerance: float = 1e-4) -> str | None:
    """A note when the two losses of a timing case differ (the case would compare different quantities)."""
    a, b = (float(x.detach()) if isinstance(x, torch.Tensor) else float(x) for x in (ours, theirs))
    if abs(a - b) <= tolerance * max(abs(b), 1e-12):
        return None
    return f"losses differ: kldiv {a:.6g}, anchor {b:.6g}"


# ---------------------------------------------------------------- areas


def area_overhead(args, run):
    import scipy.special

    import kldiv

    p, q = np.array([0.3, 0.7]), np.array([0.6, 0.4])

    def kl_vectors(row):
        row.kldiv = per_call(lambda: kldiv.kl(p, q))
        row.anchor = per_call(lambda: scipy.special.rel_entr(p, q).sum())
        row.notes.append(agree(kldiv.kl(p, q), scipy.special.rel_entr(p, q).sum(), 1e-12))

    run(Row("overhead", "kl(p, q), NumPy 2-vectors, validation on, vs rel_entr(p, q).sum()", limit=5.0,
            target="<= 5 (at most 5x slower)"), kl_vectors)

    # the small path's sizes: a tiny call, and a classifier's (CIFAR-100 classes, batch 128)
    for n, v in [(8, 16), (128, 100)]:
        def distill_small(row, n=n, v=v):
            import kldiv.nn

            s, t = logits(n, v, 0)
            loss = kldiv.nn.DistillationLoss("kl")
            row.kldiv = per_call(train_step(loss, s, t))
            row.anchor = per_call(train_step(naive_kl, s, t))
            row.notes.append(agree(loss(s, t), naive_kl(s, t)))

        run(Row("overhead", f"DistillationLoss('kl') fwd+bwd ({n}, {v}) f32 vs naive F.kl_div", limit=1.0,
                target="<= 1 (no slower than naive)"), distill_small)


def area_nn_small(args, run):
    shapes = [(8, 2048), (64, 1000), (256, 512)] if args.quick else [(8, 128256), (64, 32000), (512, 4096),
                                                                      (4096, 32000)]
    for n, v in shapes:
        repeats = 3 if n * v >= 4096 * 32000 else args.repeats
        for divergence in DIVERGENCES:
            def case(row, n=n, v=v, divergence=divergence, repeats=repeats):
                import kldiv.nn

                s, t = logits(n, v, 1)
                loss = kldiv.nn.DistillationLoss(divergence)
                row.notes.append(agree(loss(s, t), naive_loss(s, t, divergence)))
                with kldiv.config_context(compile="never"):
                    _, row.extra["kldiv_eager_s"], _ = best_of(train_step(loss, s, t), repeats)
                # a training loop's steady state: the steps a kernel below compile_min_elements runs eagerly
                # before "auto" compiles it (compile_after_elements), then the timed runs
                step, config = train_step(loss, s, t), kldiv.get_config()
                start = time.perf_counter()
                for _ in range(math.ceil(config.compile_after_elements / (n * v)) if n * v >= config.eager_chunk
                               else 0):
                    step()
                row.extra["kldiv_steps_before_compiled_s"] = time.perf_counter() - start
                first, row.kldiv, _ = best_of(step, repeats)
                _, row.anchor, _ = best_of(train_step(naive_loss, s, t, divergence), repeats)
                row.extra["kldiv_first_call_s"] = first
                eager = row.extra["kldiv_eager_s"]
                row.notes.append(f"eager kernel (compile='never') {eager * 1e3:.3g} ms, {eager / row.anchor:.2f}x naive")
                row.floor, row.floor_text = bandwidth_floor(3 * n * v * 4, n, v)

            run(Row("nn_small", f"DistillationLoss('{divergence}') fwd+bwd ({n}, {v}) f32 vs naive eager",
                    limit=1.0, target="<= 1 (>= 1.0x)"), case)


def area_nn_large(args, run):
    n, v = (512, 4000) if args.quick else (4096, 32000)
    state: dict[str, Any] = {}

    def versus_compile(row):
        import kldiv.nn

        s, t = logits(n, v, 2)
        loss = kldiv.nn.DistillationLoss("kl")
        compiled = torch.compile(naive_kl)
        row.notes.append(agree(loss(s, t), naive_kl(s, t)))
        first, row.kldiv, _ = best_of(train_step(loss, s, t), 3)
        first_naive, row.anchor, _ = best_of(train_step(compiled, s, t), 3)
        row.extra.update(kldiv_first_call_s=first, compiled_naive_first_call_s=first_naive)
        moved, how = bandwidth_floor(3 * n * v * 4, n, v)
        exps = exp_floor(n, v)
        row.floor = max(moved, exps)
        row.floor_text = f"{how}; both softmaxes' exponentials {exps * 1e3:.0f} ms"
        state.update(kldiv=row.kldiv, first=first, first_naive=first_naive, floor=row.floor,
                     floor_text=row.floor_text)

    run(Row("nn_large", f"DistillationLoss('kl') fwd+bwd ({n}, {v}) f32 vs torch.compile(naive)", limit=0.5,
            target="<= 0.50 (>= 2x)"), versus_compile)

    def versus_floor(row):
        if "floor" not in state:
            raise RuntimeError("the case above failed")
        row.kldiv, row.anchor = state["kldiv"], state["floor"]
        row.floor, row.floor_text = state["floor"], state["floor_text"]

    run(Row("nn_large", f"DistillationLoss('kl') fwd+bwd ({n}, {v}) f32 vs its floor (3 x {n * v * 4 / 1e6:.0f} MB"
            " moved, or the exponentials)", limit=1.3, target="<= 1.3"), versus_floor)

    def first_calls(row):
        if "first" not in state:
            raise RuntimeError("the case above failed")
        row.kldiv, row.anchor = state["first"], state["first_naive"]

    run(Row("nn_large", "first call, compilation included (kldiv vs torch.compile(naive))", target="(reported)"),
        first_calls)


def area_numpy(args, run):
    import kldiv

    n, v = (256, 4000) if args.quick else (4096, 32000)
    rng = np.random.default_rng(3)

    def softmax(x):
        e = np.exp(x - x.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    p = softmax(3 * rng.standard_normal((n, v), dtype=np.float32))
    q = softmax(3 * rng.standard_normal((n, v), dtype=np.float32))

    def direct():
        return (p * np.log(p / q)).sum(-1)

    floor, floor_text = bandwidth_floor(2 * n * v * 4, n, v)
    for validate, limit, target in ((True, 1.0, "<= 1 (>= 1.0x)"), (False, 1 / 1.5, "<= 0.67 (>= 1.5x)")):
        def case(row, validate=validate):
            row.notes.append(agree(np.mean(kldiv.kl(p, q, validate=validate)), np.mean(direct())))
            _, row.kldiv, _ = best_of(lambda: kldiv.kl(p, q, validate=validate), args.repeats)
            _, row.anchor, _ = best_of(direct, args.repeats)
            row.floor, row.floor_text = floor, "inputs read once: " + floor_text

        run(Row("numpy", f"kl(p, q) NumPy ({n}, {v}) f32 probabilities, validate={validate}, vs (p*log(p/q)).sum(-1)",
                limit=limit, target=target), case)


def area_fused(args, run):
    n, h, v = (256, 128, 4000) if args.quick else (2048, 1024, 32000)
    g = torch.Generator().manual_seed(4)
    hidden = (torch.randn(n, h, generator=g) / math.sqrt(h)).requires_grad_(True)
    weight = torch.randn(v, h, generator=g).requires_grad_(True)
    teacher_hidden = torch.randn(n, h, generator=g) / math.sqrt(h)
    teacher_weight = torch.randn(v, h, generator=g)
    labels = torch.zeros(n, dtype=torch.long)  # Liger needs labels; all kept, no hard loss
    repeats = 2 if args.quick else 3

    def step(loss_fn, *extra):
        def run_once():
            loss_fn(hidden, weight, teacher_hidden, teacher_weight, *extra).backward()
            hidden.grad = weight.grad = None
        return run_once

    matmuls: dict[str, float] = {}

    def bare_matmuls():
        if not matmuls:
            grad_logits = torch.randn(n, v, generator=g)

            def four():
                with torch.no_grad():
                    hidden @ weight.T
                    teacher_hidden @ teacher_weight.T
                    grad_logits @ weight
                    grad_logits.T @ hidden

            _, matmuls["s"], _ = best_of(four, repeats)
        return matmuls["s"]

    for divergence, beta in (("js", 0.5), ("kl", 0.0)):
        figures: dict[str, Any] = {}

        def versus_liger(row, divergence=divergence, beta=beta, figures=figures):
            from liger_kernel.chunked_loss import LigerFusedLinearJSDLoss

            import kldiv.nn

            ours = kldiv.nn.FusedLinearDistillationLoss(divergence)
            first, row.kldiv, peak = best_of(step(ours), repeats, memory=True)
            figures.update(kldiv=row.kldiv, kldiv_peak=peak)
            row.extra.update(kldiv_first_call_s=first, kldiv_peak_bytes=peak)
            liger = {}
            for compiled in (True, False):
                theirs = LigerFusedLinearJSDLoss(weight_hard_loss=0.0, weight_soft_loss=1.0, beta=beta,
                                                 compiled=compiled)
                try:
                    first, best, peak = best_of(step(theirs, labels), repeats, memory=True)
                except Exception as error:  # noqa: BLE001 - Liger's compiled path may not build on this machine
                    row.notes.append(f"Liger compiled={compiled} failed: {type(error).__name__}: {error}"[:200])
                    continue
                liger[compiled] = (best, peak, theirs)
                row.extra[f"liger_compiled_{compiled}"] = {"first_call_s": first, "best_s": best, "peak_bytes": peak}
            if not liger:
                raise RuntimeError("no Liger configuration ran")
            compiled = min(liger, key=lambda c: liger[c][0])
            row.anchor, figures["liger_peak"], theirs = liger[compiled]
            figures["liger_compiled"] = compiled
            row.notes.append(f"Liger compiled={compiled} (" + ", ".join(
                f"compiled={c}: {fmt(liger[c][0], 's')}" for c in liger) + ")")
            with torch.no_grad():
                row.notes.append(agree(ours(hidden, weight, teacher_hidden, teacher_weight),
                                       theirs(hidden, weight, teacher_hidden, teacher_weight, labels)))
            row.floor, row.floor_text = bare_matmuls(), "four bare matmuls"

        run(Row("fused", f"FusedLinearDistillationLoss('{divergence}') fwd+bwd N={n} H={h} V={v} f32 vs Liger "
                f"(beta={beta})", limit=1.0, target="<= 1 (faster than Liger)"), versus_liger)

        def versus_matmuls(row, figures=figures):
            if "kldiv" not in figures:
                raise RuntimeError("the case above failed")
            row.kldiv, row.anchor = figures["kldiv"], bare_matmuls()
            row.floor, row.floor_text = row.anchor, "four bare matmuls"

        run(Row("fused", f"FusedLinearDistillationLoss('{divergence}') vs its four bare matmuls", limit=1.15,
                target="<= 1.15"), versus_matmuls)

        def memory(row, figures=figures):
            if "liger_peak" not in figures:
                raise RuntimeError("the case above failed")
            row.kldiv, row.anchor = figures["kldiv_peak"], figures["liger_peak"]
            row.notes.append(f"Liger compiled={figures['liger_compiled']}")

        run(Row("fused", f"FusedLinearDistillationLoss('{divergence}') peak memory above baseline vs Liger",
                unit="B", limit=1.0, target="<= 1 (no more than Liger)"), memory)


def area_precision(args, run):
    import kldiv

    n, v = 64, 32000
    g = torch.Generator().manual_seed(5)
    a = 3 * torch.randn(n, v, generator=g) + 50
    d = 0.02 * torch.randn(n, v, generator=g)
    b = a + d  # float32, rounded once
    la, lb = F.log_softmax(a.double(), -1), F.log_softmax(b.double(), -1)
    oracle = (la.exp() * (la - lb)).sum(-1).numpy()  # KL(A || B) of the float32 inputs, in float64

    def error(values) -> float:
        values = np.asarray(values.detach() if isinstance(values, torch.Tensor) else values, dtype=np.float64)
        return float(np.median(np.abs(values.reshape(-1) - oracle) / oracle))

    naive = F.kl_div(F.log_softmax(b, -1), F.log_softmax(a, -1), log_target=True, reduction="none").sum(-1)
    naive_error = error(naive)
    floor, floor_text = 2.0**-24, "float32 output rounding"

    def path(name, fn):
        def case(row):
            row.kldiv, row.anchor = error(fn()), naive_error
            row.floor, row.floor_text = floor, floor_text
        run(Row("precision", f"{name}: median abs(KL - oracle) / oracle, (64, 32000) near-identical", unit="rel",
                limit=2e-5, absolute=True, target="kldiv <= 2e-5"), case)

    def compiled(policy):
        def fn():
            import kldiv.nn

            with kldiv.config_context(compile=policy):
                return kldiv.nn.DistillationLoss("kl", reduction="none")(b, a)  # KL(T || S) = KL(a || b)
        return fn

    def fused_rows():
        import kldiv.nn

        # Logits exactly a and fl(a + d) = b through the LM head: row n's hidden state is one-hot at column 2n
        # (teacher) or at 2n and 2n + 1 (student), the head's columns 2n and 2n + 1 are a[n] and d[n]; every
        # other product is an exact zero, so the matmul rounds once, as b = a + d did.
        weight = torch.zeros(v, 2 * n)
        weight[:, 0::2], weight[:, 1::2] = a.T, d.T
        teacher_hidden = torch.zeros(n, 2 * n)
        teacher_hidden[torch.arange(n), 2 * torch.arange(n)] = 1
        student_hidden = teacher_hidden.clone()
        student_hidden[torch.arange(n), 2 * torch.arange(n) + 1] = 1
        if not (torch.equal(student_hidden @ weight.T, b) and torch.equal(teacher_hidden @ weight.T, a)):
            raise RuntimeError("the one-hot construction did not reproduce the logits exactly")
        loss = kldiv.nn.FusedLinearDistillationLoss("kl", reduction="sum")
        with torch.no_grad():
            return torch.stack([loss(student_hidden[i:i + 1], weight, teacher_hidden[i:i + 1], weight)
                                for i in range(n)])

    def comparison(reference, other):
        def fn():
            from kldiv.compare import Comparison

            accumulator = Comparison()  # KL(reference || other); one (N, V) chunk is one sequence of N positions
            accumulator.update(reference[None], other[None])  # (1, N, V): one sequence of N positions
            return accumulator.result().kld_by_position
        return fn

    path("kl(a, b, from_logits=True) NumPy", lambda: kldiv.kl(a.numpy(), b.numpy(), from_logits=True))
    path("kl(a, b, from_logits=True) torch", lambda: kldiv.kl(a, b, from_logits=True))
    path("DistillationLoss('kl', reduction='none')(b, a), compile='never'", compiled("never"))
    path("DistillationLoss('kl', reduction='none')(b, a), compile='always'", compiled("always"))
    path("FusedLinearDistillationLoss('kl', reduction='sum'), one row at a time, exact one-hot head", fused_rows)
    path("compare.Comparison kld_by_position, NumPy chunk", comparison(a.numpy(), b.numpy()))
    path("compare.Comparison kld_by_position, torch chunk", comparison(a, b))


# ---------------------------------------------------------------- output


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "s":
        for scale, suffix in ((1, "s"), (1e-3, "ms"), (1e-6, "µs")):
            if value >= scale:
                return f"{value / scale:.3g} {suffix}"
        return f"{value * 1e9:.3g} ns"
    if unit == "B":
        return f"{value / 2**20:.0f} MiB"
    return f"{value:.2e}"


def markdown(row: Row) -> str:
    case = (row.case + "".join(f"; {note}" for note in row.notes if note)).replace("|", "\\|")
    if row.error:
        return f"| {case} | error: {row.error.replace('|', '/')} | | | {row.target} | |"
    met = {True: " met", False: " **missed**", None: ""}[row.met]
    ratio = "—" if row.ratio is None else f"{row.ratio:.3g}"
    floor = "—"
    if row.floor is not None:
        floor = f"{fmt(row.floor, row.unit)} ({row.floor_text})"
        if row.kldiv is not None and row.floor and row.unit == "s":
            floor += f"; kldiv at {row.kldiv / row.floor:.2f}x"
    return f"| {case} | {fmt(row.kldiv, row.unit)} | {fmt(row.anchor, row.unit)} | {ratio} | {row.target}{met} | {floor} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny shapes, a smoke test")
    parser.add_argument("--only", default=",".join(AREAS), help="comma-separated subset of " + ",".join(AREAS))
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per figure (3 at (4096, 32000))")
    parser.add_argument("--json", metavar="PATH", help="write every raw figure here")
    args = parser.parse_args()
    if args.quick:
        args.repeats = min(args.repeats, 2)
    areas = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(areas) - set(AREAS))
    if unknown:
        parser.error(f"--only: unknown area(s) {', '.join(unknown)}; choose from {', '.join(AREAS)}")

    header = {"machine": platform.machine(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
              "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
              "quick": args.quick}
    try:
        import kldiv

        header["kldiv_config"] = repr(kldiv.get_config())
    except Exception as error:  # noqa: BLE001 - the library is edited concurrently; report and go on
        header["kldiv_config"] = f"error: {type(error).__name__}: {error}"
    print(" ".join(f"{key}={value}" for key, value in header.items()), flush=True)

    rows: list[Row] = []

    def run(row: Row, fn: Callable[[Row], None]) -> None:
        try:
            fn(row)
        except Exception as error:  # noqa: BLE001 - one failing case must not stop the others
            row.error = f"{type(error).__name__}: {error}".replace("\n", " ")[:300]
            row.extra["traceback"] = traceback.format_exc()
        rows.append(row)
        print(markdown(row), flush=True)

    started = time.perf_counter()
    for name in areas:
        print(f"\n### {name}\n\n| case | kldiv | anchor | ratio | target | floor |\n|---|---|---|---|---|---|",
              flush=True)
        area_start = time.perf_counter()
        try:
            globals()[f"area_{name}"](args, run)
        except Exception as error:  # noqa: BLE001 - e.g. an import failing inside the library
            row = Row(name, f"{name} (setup)", error=f"{type(error).__name__}: {error}".replace("\n", " ")[:300])
            rows.append(row)
            print(markdown(row), flush=True)
        print(f"\n({name}: {time.perf_counter() - area_start:.1f} s)", flush=True)
    print(f"\ntotal {time.perf_counter() - started:.1f} s", flush=True)

    if args.json:
        out = {"header": header, "rows": [dict(asdict(row), ratio=row.ratio, met=row.met) for row in rows]}
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=str)


if __name__ == "__main__":
    main()
