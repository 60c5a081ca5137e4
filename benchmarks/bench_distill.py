"""Distillation comparison: a small character GRU from scratch vs distilled with each divergence.

    python benchmarks/bench_distill.py [--teacher-steps 1000] [--student-steps 400] [--extra-seeds 1 2]
                                       [--out /tmp/kldiv-bench-distill] [--reuse-teacher]

One teacher (``kldiv train lm`` on the standard library source) is trained once; every student then gets the
same architecture, seed, batches (same data generator seed), learning rate and number of steps. Prints:

1. the comparison table: held-out perplexity, KL(teacher ‖ student) per character, top-1 agreement with the
   teacher, training time (seed 0);
2. each student measured with every divergence on the held-out text (float64, direct formulas), plus the
   student's mean entropy: a student trained on divergence D should be the best at D; this checks that each loss
   optimises what it says, independently of ``kldiv.nn``;
3. the held-out curves over steps (perplexity and agreement) for every student;
4. with ``--extra-seeds``: the from-scratch and forward-KL students again with other seeds (init and data order),
   to show how large the seed-to-seed spread is next to the differences in the table.

Everything is also written to ``<out>/results.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import statistics
import time
from pathlib import Path

import torch

from kldiv.apps import charlm, distill


@torch.no_grad()
def all_measures(student_folder: Path, teacher_logits: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Every divergence between the teacher and a saved student on the held-out windows, float64, direct formulas."""
    student, _, _ = charlm.load_trained(student_folder)
    s_logits = charlm.logits_in_chunks(student, inputs).double().reshape(-1, teacher_logits.shape[-1])
    log_s = torch.log_softmax(s_logits, -1)
    log_t = torch.log_softmax(teacher_logits.double().reshape(-1, teacher_logits.shape[-1]), -1)
    s, t = log_s.exp(), log_t.exp()

    def kl(p, log_p, log_q):
        return float((p * (log_p - log_q)).sum(-1).mean())

    def mix(a, b, weight):  # log(weight * exp(a) + (1 - weight) * exp(b))
        return torch.logaddexp(a + math.log(weight), b + math.log1p(-weight))

    log_m = mix(log_t, log_s, 0.5)
    return {
        "cross_entropy": float(-log_s.gather(-1, targets.reshape(-1, 1)).mean()),
        "kl": kl(t, log_t, log_s),
        "reverse_kl": kl(s, log_s, log_t),
        "js": 0.5 * kl(t, log_t, log_m) + 0.5 * kl(s, log_s, log_m),
        "skew_kl": kl(t, log_t, mix(log_t, log_s, 0.1)),
        "skew_reverse_kl": kl(s, log_s, mix(log_s, log_t, 0.1)),
        "tvd": float(0.5 * (t - s).abs().sum(-1).mean()),
        "student_entropy": float(-(s * log_s).sum(-1).mean()),
        "teacher_entropy": float(-(t * log_t).sum(-1).mean()),
        "teacher_mass_on_student_top1": float(t.gather(-1, s.argmax(-1, keepdim=True)).mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--teacher-steps", type=int, default=1000)
    parser.add_argument("--student-steps", type=int, default=400)
    parser.add_argument("--eval-every", type=int, default=50, help="held-out evaluation interval of the students")
    parser.add_argument("--max-chars", type=int, default=400_000)
    parser.add_argument("--extra-seeds", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--out", type=Path, default=Path("/tmp/kldiv-bench-distill"))
    parser.add_argument("--rows", type=int, nargs="*", default=None,
                        help="indices of the comparison rows to run (default: all); to split the bench over processes")
    parser.add_argument("--reuse-teacher", action="store_true",
                        help="keep <out>/teacher if it is a finished run with the same settings")
    args = parser.parse_args()
    teacher_config = charlm.LMConfig(max_chars=args.max_chars, embed=48, hidden=128, steps=args.teacher_steps,
                                     eval_every=100, eval_chars=10_000, seed=0)
    teacher_folder = args.out / "teacher"
    reuse = False
    if args.reuse_teacher and (teacher_folder / "report.json").is_file():
        import dataclasses

        saved = json.loads((teacher_folder / "config.json").read_text())
        reuse = saved == json.loads(json.dumps(dataclasses.asdict(teacher_config)))
    if not reuse:
        shutil.rmtree(args.out, ignore_errors=True)
        args.out.mkdir(parents=True)
    else:
        for old in args.out.glob("student*"):
            shutil.rmtree(old)
    started = time.perf_counter()
    if reuse:
        teacher = json.loads((teacher_folder / "report.json").read_text())
        teacher_seconds = float("nan")
    else:
        teacher = charlm.train(teacher_config, teacher_folder, progress=False)
        teacher_seconds = time.perf_counter() - started
    teacher_curve = json.loads((teacher_folder / "metrics.json").read_text())

    # held-out windows exactly as the distillation app builds them (10 000 characters)
    teacher_model, vocab, _ = charlm.load_trained(teacher_folder)
    ids = vocab.encode(charlm.load_corpus(None, args.max_chars, 64))
    held_in, held_out = charlm.heldout_windows(ids[int(len(ids) * 0.9):], 64, 10_000)
    teacher_logits = charlm.logits_in_chunks(teacher_model, held_in)

    common = dict(teacher=str(teacher_folder), embed=16, hidden=48, steps=args.student_steps,
                  eval_every=args.eval_every, eval_chars=10_000)
    rows = [("from scratch (cross-entropy only)", dict(hard_label_weight=1.0))]
    rows += [(f"distilled, {d}", dict(divergence=d)) for d in distill.DIVERGENCES]
    rows += [("distilled, kl, teacher top-5 only", dict(divergence="kl", top_k=5))]
    rows += [("distilled, kl + 0.5 hard labels", dict(divergence="kl", hard_label_weight=0.5))]
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"teacher: {teacher['parameters']:,} parameters, {args.teacher_steps} steps, held-out perplexity "
          f"{teacher['heldout_perplexity']:.3f}, {teacher_seconds:.0f} s; curve (step: perplexity) "
          + ", ".join(f"{r['step']}: {r['heldout_perplexity']:.2f}" for r in teacher_curve) + "\n")
    results: dict = {"teacher": {**{k: v for k, v in teacher.items() if k != "samples"}, "curve": teacher_curve,
                                 "seconds": teacher_seconds},
                     "students": [], "extra_seeds": []}

    def run(label: str, options: dict, seed: int, index: int) -> dict:
        config = distill.DistillConfig(**common, **options, seed=seed)
        folder = args.out / f"student{index}-seed{seed}"
        t0 = time.perf_counter()
        report = distill.distill(config, folder, progress=False)
        seconds = time.perf_counter() - t0
        curve = json.loads((folder / "metrics.json").read_text())
        return {"label": label, "seed": seed, "seconds": seconds,
                **{k: report[k] for k in ("heldout_perplexity", "kl_to_teacher", "agreement")},
                "measures": all_measures(folder, teacher_logits, held_in, held_out),
                "curve": [{k: r.get(k) for k in ("step", "train_loss", "distill_loss", "hard_loss", "heldout_perplexity",
                                                  "kl_to_teacher", "agreement")} for r in curve]}

    print(f"| student (same seed, {args.student_steps} steps) | held-out perplexity | KL(teacher‖student) nats/char | top-1 agreement | time (s) |")
    print("|---|---:|---:|---:|---:|")
    for i, (label, options) in enumerate(rows):
        if args.rows is not None and i not in args.rows:
            continue
        row = run(label, options, 0, i)
        results["students"].append(row)
        print(f"| {label} | {row['heldout_perplexity']:.3f} | {row['kl_to_teacher']:.4f} | "
              f"{100 * row['agreement']:.1f} % | {row['seconds']:.0f} |", flush=True)

    names = ["cross_entropy", "kl", "reverse_kl", "js", "skew_kl", "skew_reverse_kl", "tvd", "student_entropy",
             "teacher_mass_on_student_top1"]
    print("\nEvery student measured with every divergence on the held-out text (nats/char; lower is better; "
          f"teacher entropy {results['students'][0]['measures']['teacher_entropy'] if results['students'] else float('nan'):.3f}):\n")
    print("| student | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for row in results["students"]:
        print(f"| {row['label']} | " + " | ".join(f"{row['measures'][n]:.4f}" for n in names) + " |")

    print("\nHeld-out perplexity / top-1 agreement over steps:\n")
    steps = [r["step"] for r in results["students"][0]["curve"]] if results["students"] else []
    print("| student | " + " | ".join(str(s) for s in steps) + " |")
    print("|---|" + "---:|" * len(steps))
    for row in results["students"]:
        print(f"| {row['label']} | " + " | ".join(f"{r['heldout_perplexity']:.2f} / {100 * r['agreement']:.0f} %"
                                                  for r in row["curve"]) + " |", flush=True)

    if args.extra_seeds:
        print("\nSeed spread (seeds " + ", ".join(str(s) for s in [0, *args.extra_seeds]) + "; init and data order change "
              "together, identical across the two rows):\n")
        print("| student | perplexity per seed | mean | KL(teacher‖student) per seed | agreement per seed |")
        print("|---|---|---:|---|---|")
        for i, (label, options) in enumerate(rows[:2]):
            first = [r for r in results["students"] if r["label"] == label]
            extra = [run(label, options, seed, i) for seed in args.extra_seeds]
            results["extra_seeds"] += extra
            runs_ = first + extra
            ppl = [r["heldout_perplexity"] for r in runs_]
            print(f"| {label} | " + ", ".join(f"{p:.3f}" for p in ppl) + f" | {statistics.mean(ppl):.3f} | "
                  + ", ".join(f"{r['kl_to_teacher']:.4f}" for r in runs_) + " | "
                  + ", ".join(f"{100 * r['agreement']:.1f} %" for r in runs_) + " |", flush=True)

    results["total_seconds"] = time.perf_counter() - started
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"\ntotal {results['total_seconds']:.0f} s; results in {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
