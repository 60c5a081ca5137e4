"""Distillation comparison: a small character GRU from scratch vs distilled with each divergence.

    python benchmarks/bench_distill.py [--teacher-steps 600] [--student-steps 300] [--out /tmp/kldiv-bench-distill]

One teacher (``kldiv train lm`` on the standard library source) is trained once; every student then gets the
same architecture, seed, batches (same data generator seed) and number of steps. Prints a Markdown table:
held-out perplexity, KL(teacher ‖ student) per character, top-1 agreement with the teacher, training time.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import time
from pathlib import Path

import torch

from kldiv.apps import charlm, distill


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--teacher-steps", type=int, default=600)
    parser.add_argument("--student-steps", type=int, default=300)
    parser.add_argument("--max-chars", type=int, default=400_000)
    parser.add_argument("--out", type=Path, default=Path("/tmp/kldiv-bench-distill"))
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    started = time.perf_counter()
    teacher = charlm.train(
        charlm.LMConfig(max_chars=args.max_chars, embed=48, hidden=128, steps=args.teacher_steps,
                        eval_every=args.teacher_steps, eval_chars=10_000, seed=0),
        args.out / "teacher", progress=False,
    )
    teacher_seconds = time.perf_counter() - started
    common = dict(teacher=str(args.out / "teacher"), embed=16, hidden=48, steps=args.student_steps,
                  eval_every=args.student_steps, eval_chars=10_000, seed=0)
    rows = [("from scratch (cross-entropy only)", dict(hard_label_weight=1.0))]
    rows += [(f"distilled, {d}", dict(divergence=d)) for d in distill.DIVERGENCES]
    rows += [("distilled, kl, teacher top-5 only", dict(divergence="kl", top_k=5))]
    rows += [("distilled, kl + 0.5 hard labels", dict(divergence="kl", hard_label_weight=0.5))]
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"teacher: {teacher['parameters']:,} parameters, {args.teacher_steps} steps, held-out perplexity "
          f"{teacher['heldout_perplexity']:.3f}, {teacher_seconds:.0f} s\n")
    print(f"| student (same seed, {args.student_steps} steps) | held-out perplexity | KL(teacher‖student) nats/char | top-1 agreement | time (s) |")
    print("|---|---:|---:|---:|---:|")
    for i, (label, options) in enumerate(rows):
        config = distill.DistillConfig(**common, **options)
        t0 = time.perf_counter()
        report = distill.distill(config, args.out / f"student{i}", progress=False)
        seconds = time.perf_counter() - t0
        print(f"| {label} | {report['heldout_perplexity']:.3f} | {report['kl_to_teacher']:.4f} | "
              f"{100 * report['agreement']:.1f} % | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
