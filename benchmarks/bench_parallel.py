"""Vocabulary-parallel distillation: per-rank time, peak memory and bytes communicated at 1, 2 and 4 ranks.

Each rank holds a contiguous slice of a V-token vocabulary (gloo on 127.0.0.1, CPU processes). Two workloads:

- ``logits``: (N, V) student and teacher logits, forward KL, value and gradient;
- ``fused``: hidden states (N, H) replicated, LM heads (V, H) sharded by rows, forward KL plus the hard-label
  cross-entropy (hard_label_weight=0.5), value and the gradients of hidden states, weight and bias.

kldiv (``process_group=``) exchanges O(1) numbers per row. The anchor is what a user writes without it: gather
the logit slices with ``torch.distributed.nn.all_gather`` (differentiable), then the loss on the whole
vocabulary (``log_softmax`` + ``F.kl_div``). Bytes are counted from the tensors each rank hands to the
collectives (received bytes of an all-gather: (W - 1) / W of the gathered tensor). The communication floor of a
row-split loss is the row statistics themselves; the floor of the anchor is the logits.

    python benchmarks/bench_parallel.py --rows 4096 --vocab 32000 --hidden 1024 --ranks 1 2 4
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import tempfile
import time
import warnings

import torch
import torch.distributed as dist
import torch.nn.functional as F

warnings.filterwarnings("ignore", message="torch.distributed.nn.functional.all_gather is deprecated")

COUNTED = {"bytes": 0}


def count_collectives() -> None:
    """Wrap the collectives so that every byte handed to them is counted."""
    reduce, gather = dist.all_reduce, dist.all_gather

    def all_reduce(tensor, *args, **kwargs):
        COUNTED["bytes"] += tensor.numel() * tensor.element_size()
        return reduce(tensor, *args, **kwargs)

    def all_gather(tensors, tensor, *args, **kwargs):
        COUNTED["bytes"] += tensor.numel() * tensor.element_size() * (len(tensors) - 1)
        return gather(tensors, tensor, *args, **kwargs)

    dist.all_reduce, dist.all_gather = all_reduce, all_gather


def naive_logits_loss(student: torch.Tensor, teacher: torch.Tensor, group) -> torch.Tensor:
    import torch.distributed.nn as dnn

    s = torch.cat(dnn.all_gather(student, group=group), dim=-1)
    with torch.no_grad():
        parts = [torch.empty_like(teacher) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, teacher, group=group)
        t = torch.cat(parts, dim=-1)
    return F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), log_target=True, reduction="batchmean")


def workload(kind: str, method: str, data: dict, group):
    from kldiv.nn import FusedLinearDistillationLoss
    from kldiv.nn.functional import distillation_loss

    if kind == "logits":
        student = data["student"].clone().requires_grad_()
        if method == "kldiv":
            loss = distillation_loss(student, data["teacher"], process_group=group)
        else:
            loss = naive_logits_loss(student, data["teacher"], group)
        loss.backward()
        return loss
    hidden, weight, bias = (data[k].clone().requires_grad_() for k in ("hidden", "weight", "bias"))
    if method == "kldiv":
        loss_fn = FusedLinearDistillationLoss(hard_label_weight=0.5, process_group=group)
        loss = loss_fn(hidden, weight, labels=data["labels"], student_bias=bias, teacher_logits=data["teacher"])
    else:
        z = torch.addmm(bias, hidden, weight.t())
        import torch.distributed.nn as dnn

        s = torch.cat(dnn.all_gather(z, group=group), dim=-1)
        parts = [torch.empty_like(data["teacher"]) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, data["teacher"], group=group)
        t = torch.cat(parts, dim=-1)
        log_s = F.log_softmax(s, -1)
        loss = F.kl_div(log_s, F.log_softmax(t, -1), log_target=True, reduction="batchmean")
        loss = loss + 0.5 * F.nll_loss(log_s, data["labels"])
    loss.backward()
    return loss


def memory_kb(field: str) -> int:
    """A field of /proc/self/status in kB (VmRSS: resident now; VmHWM: its peak since the last reset)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def reset_peak() -> int:
    """Reset the process's peak resident size to the current one (Linux: clear_refs 5); return it in kB."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return memory_kb("VmRSS")


def worker(rank: int, world: int, port: int, args: dict, out: str) -> None:
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=600))
    count_collectives()
    n, v, h = args["rows"], args["vocab"], args["hidden"]
    widths = [v // world + (1 if r < v % world else 0) for r in range(world)]
    lo = sum(widths[:rank])
    here = slice(lo, lo + widths[rank])
    g = torch.Generator().manual_seed(0)
    results = {}
    for kind in args["kinds"]:
        if kind == "logits":
            full_s = torch.randn(n, v, generator=g)
            data = {"student": full_s[:, here].clone(), "teacher": (full_s + 0.3 * torch.randn(n, v, generator=g))[:, here].clone()}
            del full_s
        else:
            hidden = torch.randn(n, h, generator=g) / h**0.5
            weight = torch.randn(v, h, generator=g)
            teacher = (hidden @ (weight + 0.3 * torch.randn(v, h, generator=g)).t())[:, here].clone()
            data = {"hidden": hidden, "weight": weight[here].clone(), "bias": torch.zeros(widths[rank]),
                    "teacher": teacher, "labels": torch.randint(0, v, (n,), generator=g)}
            del weight
        for method in ("kldiv", "all_gather"):
            times, loss = [], None
            base = reset_peak()
            for _ in range(args["repeat"]):
                COUNTED["bytes"] = 0
                dist.barrier()
                start = time.perf_counter()
                loss = workload(kind, method, data, dist.group.WORLD)
                times.append(time.perf_counter() - start)
            peak = memory_kb("VmHWM") - base
            results[f"{kind}/{method}"] = dict(time=sorted(times)[len(times) // 2], bytes=COUNTED["bytes"],
                                               peak_mb=peak / 1024, loss=float(loss.detach()))
        del data
    with open(os.path.join(out, f"{world}-{rank}.json"), "w") as f:
        json.dump(results, f)
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    import torch.multiprocessing as mp

    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--kinds", nargs="+", default=["logits", "fused"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    table = {}
    with tempfile.TemporaryDirectory() as out:
        for world in args.ranks:
            mp.spawn(worker, args=(world, free_port(), vars(args), out), nprocs=world)
            ranks = [json.load(open(os.path.join(out, f"{world}-{r}.json"))) for r in range(world)]
            for key in ranks[0]:
                table[(world, key)] = dict(
                    time=max(r[key]["time"] for r in ranks), bytes=max(r[key]["bytes"] for r in ranks),
                    peak_mb=max(r[key]["peak_mb"] for r in ranks), loss=ranks[0][key]["loss"],
                )
    n, v = args.rows, args.vocab
    print(f"N={n} V={v} H={args.hidden}, {os.cpu_count()} cores shared by the ranks; slowest rank's median of "
          f"{args.repeat}; bytes handed to collectives per rank per call; peak = resident memory's peak above the inputs")
    print(f"{'ranks':>5} {'workload':<18} {'time s':>8} {'MB sent':>10} {'peak MB':>9} {'loss':>12}")
    for (world, key), r in sorted(table.items()):
        print(f"{world:>5} {key:<18} {r['time']:>8.3f} {r['bytes'] / 1e6:>10.3f} {r['peak_mb']:>9.0f} {r['loss']:>12.6f}")
    # the floor of a row-split loss: per row and side, max / -min / NaN flag and z, then the sums (KL: 1; with
    # the cross-entropy: its own sides and sum), here for the logits workload in float32 + float64
    print(f"floor (logits, KL): {n * (3 * 2 * 4 + 2 * 8 + 8) / 1e6:.3f} MB per rank per call; "
          f"the anchor's floor is the logits: {(n * v * 4) * 2 / 1e6:.0f} MB x (W - 1) / W")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({f"{w}/{k}": r for (w, k), r in table.items()}, f, indent=1)


if __name__ == "__main__":
    main()
