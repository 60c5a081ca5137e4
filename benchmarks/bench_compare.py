"""Streaming KL report benchmark: N tokens x V vocabulary, generated chunk by chunk, never all in memory.

Compares ``kldiv.compare.Comparison`` (KLD, JS, TVD, top-1/top-k agreement, moments, sketch percentiles) with
the straightforward script: ``F.log_softmax`` + ``F.kl_div`` per chunk, per-token values kept in a list,
``torch.quantile`` at the end. Both see the same chunks; generation time is excluded from both and reported.

    python benchmarks/bench_compare.py --tokens 1000000 --vocab 32000

``--files`` measures ``kldiv compare`` on stored files instead: a ``quantized`` reference folder (chunks of
``--chunk`` tokens, checksummed) against the other model's float32 ``.npy``, with 1 and ``--workers`` processes,
beside the in-memory ``Comparison`` of the same arrays (the anchor) and the floors (reading both files, and
hashing the reference, which verification adds):

    python benchmarks/bench_compare.py --files --tokens 8192 --vocab 32000 --workers 2
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch
import torch.nn.functional as F

from kldiv.compare import KLD_PERCENTILES, Comparison


def chunks(tokens: int, vocab: int, chunk: int, seed: int):
    """Logit pairs from a 256-row random bank: permuted rows, per-token temperatures, and a perturbation."""
    generator = torch.Generator().manual_seed(seed)
    bank = torch.randn(256, vocab, generator=generator)
    for lo in range(0, tokens, chunk):
        n = min(chunk, tokens - lo)
        rows = torch.randint(0, 256, (n,), generator=generator)
        noise_rows = torch.randint(0, 256, (n,), generator=generator)
        scale = 1 + 3 * torch.rand(n, 1, generator=generator)
        noise = 0.05 + 0.5 * torch.rand(n, 1, generator=generator)
        reference = bank[rows] * scale
        other = reference + noise * bank[noise_rows]
        yield reference, other


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=1_000_000)
    parser.add_argument("--vocab", type=int, default=32_000)
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--method", choices=("both", "kldiv", "baseline"), default="both")
    parser.add_argument("--exact-limit", type=int, default=1 << 16)
    parser.add_argument("--json", help="write this run's figures (tokens/s, peak RSS, percentiles) to this file")
    parser.add_argument("--agreement", nargs=2, metavar=("KLDIV_JSON", "BASELINE_JSON"),
                        help="only compare the percentiles of two --json files of separate runs, then exit")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for both methods (default: torch's)")
    parser.add_argument("--files", action="store_true", help="measure kldiv compare on stored files (see above)")
    parser.add_argument("--workers", type=int, default=2, help="with --files: processes of the parallel run")
    args = parser.parse_args()
    if args.files:
        return files(args)
    if args.agreement:
        return agreement(*args.agreement)
    if args.threads:
        torch.set_num_threads(args.threads)
    comparison = Comparison(exact_limit=args.exact_limit)
    # Per-token values go into one tensor allocated up front. The first version appended each chunk's (256,)
    # result to a list: glibc then served each chunk's 32 MB temporaries from the heap (below its 32 MiB mmap
    # threshold) and the small tensors kept between them pinned it, so RSS grew ~128 KB per token (22.9 GB at
    # ~200,000 tokens, killed). Preallocating is the straightforward fix a user would make.
    baseline_values = torch.empty(args.tokens)
    done = 0
    timing = {"generate": 0.0, "kldiv": 0.0, "baseline": 0.0}
    clock = time.perf_counter()
    for reference, other in chunks(args.tokens, args.vocab, args.chunk, seed=0):
        now = time.perf_counter()
        timing["generate"] += now - clock
        if args.method in ("both", "kldiv"):
            comparison.update(reference, other)
            timing["kldiv"] += time.perf_counter() - now
            timing.setdefault("kldiv first chunk (compilation)", timing["kldiv"])
            now = time.perf_counter()
        if args.method in ("both", "baseline"):
            lp, lq = F.log_softmax(reference, -1), F.log_softmax(other, -1)
            baseline_values[done:done + len(reference)] = F.kl_div(lq, lp, log_target=True, reduction="none").sum(-1)
            timing["baseline"] += time.perf_counter() - now
        done += len(reference)
        clock = time.perf_counter()
    now = time.perf_counter()
    if args.method in ("both", "baseline"):
        values = baseline_values.double()
        baseline_q = torch.quantile(values, torch.tensor(KLD_PERCENTILES, dtype=torch.float64) / 100).numpy()
        baseline_mean = float(values.mean())
        timing["baseline"] += time.perf_counter() - now
    now = time.perf_counter()
    if args.method in ("both", "kldiv"):
        result = comparison.result()
        timing["kldiv"] += time.perf_counter() - now
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"tokens {args.tokens} vocab {args.vocab} chunk {args.chunk} threads {torch.get_num_threads()}")
    print(f"generation: {timing['generate']:.1f} s (excluded below)")
    if "kldiv first chunk (compilation)" in timing:
        print(f"kldiv first chunk (compilation, included below): {timing['kldiv first chunk (compilation)']:.1f} s")
    for name in ("kldiv", "baseline"):
        if timing[name]:
            print(f"{name:9s}: {timing[name]:.1f} s, {args.tokens / timing[name]:,.0f} tokens/s")
    print(f"peak RSS (whole process): {peak_mb:.0f} MB")
    if args.json:
        record = {"method": args.method, "tokens": args.tokens, "vocab": args.vocab, "chunk": args.chunk,
                  "threads": torch.get_num_threads(), "peak_rss_mb": peak_mb, "generation_s": timing["generate"]}
        for name in ("kldiv", "baseline"):
            if timing[name]:
                record[name] = {"seconds": timing[name], "tokens_per_s": args.tokens / timing[name]}
        if args.method in ("both", "kldiv"):
            record["kldiv"].update(mean=result.kld_mean, percentiles=[result.kld_percentiles[q] for q in KLD_PERCENTILES],
                                   percentile_error=result.percentile_error,
                                   first_chunk_s=timing["kldiv first chunk (compilation)"])
        if args.method in ("both", "baseline"):
            record["baseline"].update(mean=baseline_mean, percentiles=[float(v) for v in baseline_q])
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1)
    if args.method == "both":
        print(f"mean KLD kldiv {result.kld_mean:.6g} baseline {baseline_mean:.6g}; percentile error bound "
              f"{result.percentile_error:g} (relative)")
        worst = 0.0
        for q, b in zip(KLD_PERCENTILES, baseline_q, strict=True):
            a = result.kld_percentiles[q]
            worst = max(worst, abs(a - b) / abs(b))
            print(f"  {q:5.1f}%  kldiv {a:.6g}  torch.quantile {b:.6g}  rel.diff {abs(a - b) / abs(b):.2e}")
        print(f"worst relative percentile difference {worst:.2e} (float32 per-token values in the baseline)")


def files(args: argparse.Namespace) -> None:
    """kldiv compare on files: stored reference (quantized, checksummed) vs .npy, 1 and N processes."""
    import hashlib
    import tempfile
    from pathlib import Path

    import numpy as np

    from kldiv.compare import compare_files, save_reference

    with tempfile.TemporaryDirectory(prefix="bench-compare-") as name:
        folder = Path(name)
        other = np.lib.format.open_memmap(folder / "other.npy", mode="w+", dtype=np.float32,
                                          shape=(args.tokens, args.vocab))
        references = []
        clock = time.perf_counter()
        done = 0
        for reference, second in chunks(args.tokens, args.vocab, args.chunk, seed=0):
            save_reference(folder / "ref", reference, format="quantized")
            other[done:done + len(second)] = second.numpy()
            references.append(reference)
            done += len(second)
        other.flush()
        del other
        print(f"wrote the files in {time.perf_counter() - clock:.1f} s")
        timing = {}
        clock = time.perf_counter()
        memory = Comparison()
        done = 0
        second = np.load(folder / "other.npy", mmap_mode="r")
        for reference in references:
            memory.update(reference.numpy(), np.asarray(second[done:done + len(reference)]))
            done += len(reference)
        timing["in-memory Comparison (anchor)"] = time.perf_counter() - clock
        for workers in (1, args.workers):
            clock = time.perf_counter()
            result = compare_files(folder / "ref", folder / "other.npy", workers=workers)
            timing[f"compare_files, workers={workers}"] = time.perf_counter() - clock
        clock = time.perf_counter()
        for path in sorted((folder / "ref").glob("chunk-*.safetensors")) + [folder / "other.npy"]:
            with open(path, "rb") as f:
                while f.read(16 << 20):
                    pass
        timing["floor: read both files"] = time.perf_counter() - clock
        clock = time.perf_counter()
        for path in sorted((folder / "ref").glob("chunk-*.safetensors")):
            hashlib.sha256(path.read_bytes()).hexdigest()
        timing["verification: SHA-256 of the reference"] = time.perf_counter() - clock
        size = sum(p.stat().st_size for p in (folder / "ref").iterdir()) + (folder / "other.npy").stat().st_size
    print(f"{args.tokens} tokens x {args.vocab}, {size / 1e9:.2f} GB on disk; mean KLD {result.kld_mean:.7f} "
          f"(in memory {memory.result().kld_mean:.7f})")
    for what, seconds in timing.items():
        print(f"| {what} | {seconds:.2f} | {args.tokens / seconds:,.0f} |")


def agreement(kldiv_json: str, baseline_json: str) -> None:
    with open(kldiv_json) as f:
        ours = json.load(f)["kldiv"]
    with open(baseline_json) as f:
        theirs = json.load(f)["baseline"]
    print(f"mean KLD kldiv {ours['mean']:.6g} baseline {theirs['mean']:.6g}; percentile error bound "
          f"{ours['percentile_error']:g} (relative)")
    worst = 0.0
    for q, a, b in zip(KLD_PERCENTILES, ours["percentiles"], theirs["percentiles"], strict=True):
        worst = max(worst, abs(a - b) / abs(b))
        print(f"  {q:5.1f}%  kldiv {a:.6g}  torch.quantile {b:.6g}  rel.diff {abs(a - b) / abs(b):.2e}")
    print(f"worst relative percentile difference {worst:.2e}")


if __name__ == "__main__":
    main()
