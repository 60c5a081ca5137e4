"""The demo tour and ``kldiv train lm``: how long a newcomer waits.

    python benchmarks/bench_demo.py [--skip-tour] [--lm-steps 40]

1. The whole tour (``kldiv demo``'s training part at its real settings: VAE, teacher, two students, plots,
   report), wall and CPU seconds; the tour runs its small models on one torch thread.
2. The anchor for that choice, side by side in this process: 5 epochs of the demo's VAE with one thread and
   with torch's default thread count.
3. ``kldiv train lm`` at its defaults: seconds per optimiser step (after 5 warm-up steps, no evaluation) with
   torch's default thread count (what the command uses) and with one thread, and the implied time of the default
   1000 steps.

CPU seconds are ``time.process_time()`` of this process (all its threads); on a shared machine they are the
figure to read, wall seconds depend on what else runs.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from kldiv.apps import charlm, tour, vae


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def with_threads(threads: int, fn):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return timed(fn)
    finally:
        torch.set_num_threads(before)


def lm_seconds_per_step(steps: int) -> float:
    config = charlm.LMConfig()
    corpus = charlm.prepare_corpus(None, config.max_chars, config.seq_len)
    torch.manual_seed(0)
    model = charlm.build_model(vars(config), len(corpus.vocab))
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    generator = torch.Generator().manual_seed(0)

    def step():
        inputs, targets = charlm.batches(corpus.train, config.batch_size, config.seq_len, generator)
        logits, _ = model(inputs)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    for _ in range(5):
        step()
    wall, _ = timed(lambda: [step() for _ in range(steps)])
    return wall / steps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-tour", action="store_true")
    parser.add_argument("--lm-steps", type=int, default=40)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, default threads {torch.get_num_threads()}")
    if not args.skip_tour:
        from rich.console import Console

        folder = Path(tempfile.mkdtemp(prefix="kldiv-bench-demo-"))
        wall, cpu = timed(lambda: tour.run_tour(Console(quiet=True), folder / "demo"))
        print(f"| whole tour (kldiv demo's runs and report) | {wall:.0f} s wall | {cpu:.0f} s CPU |")
    default = torch.get_num_threads()
    for threads in (1, default):
        wall, cpu = with_threads(
            threads, lambda: vae.train(vae.VAEConfig(epochs=5), Path(tempfile.mkdtemp()), progress=False)
        )
        print(f"| demo VAE, 5 epochs, {threads} thread(s) | {wall:.1f} s wall | {cpu:.1f} s CPU |")
    for threads in (default, 1):
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            per_step = lm_seconds_per_step(args.lm_steps)
        finally:
            torch.set_num_threads(before)
        print(f"| train lm defaults, {threads} thread(s) | {per_step:.3f} s/step | 1000 steps ≈ {per_step * 1000 / 60:.1f} min |")


if __name__ == "__main__":
    main()
