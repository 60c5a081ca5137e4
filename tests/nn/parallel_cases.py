"""Cases run inside the processes of a gloo group (see test_vocab_parallel.py): each rank holds one contiguous slice
of the vocabulary, and every result must equal the single-device result over the whole vocabulary, computed in
the same process (the single-device losses are themselves tested against independent oracles elsewhere)."""

from __future__ import annotations

import datetime
import json
import math
import os
import traceback

import torch
import torch.distributed as dist

from kldiv.nn import DistillationLoss, FusedLinearDistillationLoss, TopK, count_items
from kldiv.nn.functional import distillation_loss

DIVERGENCES = ("kl", "reverse_kl", "js", "generalized_jsd", "skew_kl", "skew_reverse_kl", "tvd")
TOL = {torch.float32: dict(rtol=1e-6, atol=1e-7), torch.float64: dict(rtol=1e-12, atol=1e-14)}


def tolerance(dtype: torch.dtype, scale: float = 1.0) -> dict:
    tol = TOL[dtype]
    return dict(rtol=tol["rtol"], atol=tol["atol"] * scale)


def slice_of(widths: list[int], rank: int) -> slice:
    start = sum(widths[:rank])
    return slice(start, start + widths[rank])


def logits(generator: torch.Generator, shape: tuple[int, ...], dtype: torch.dtype, spread: float) -> torch.Tensor:
    x = torch.randn(shape, generator=generator, dtype=torch.float64) * spread
    x[..., 3] = -math.inf  # an impossible token: exact zeros on one rank's slice
    return x.to(dtype)


def topk_teacher(teacher: torch.Tensor, k: int, tail: str) -> TopK:
    lp = torch.log_softmax(teacher.double(), dim=-1)
    values, indices = torch.topk(lp, k, dim=-1)
    return TopK(indices, values.to(teacher.dtype), tail)


def dense_cases(rank: int, widths: list[int]) -> None:
    group = dist.group.WORLD
    here = slice_of(widths, rank)
    v = sum(widths)
    case = 0
    for divergence in DIVERGENCES:
        for teacher_kind in ("dense", "bucket", "renormalize"):
            for dtype in (torch.float32, torch.float64):
                case += 1
                g = torch.Generator().manual_seed(case)
                student = logits(g, (3, 4, v), dtype, 3.0)
                teacher_full = logits(g, (3, 4, v), dtype, 3.0)
                labels = torch.randint(0, v, (3, 4), generator=g)
                labels[0, 1] = labels[2, 3] = -100
                options = dict(
                    divergence=divergence, beta=0.3, alpha=0.2,
                    temperature=(1.0, 2.0, 0.7)[case % 3], scale_by_temperature_squared=case % 2 == 0,
                    reduction=("mean", "sum", "none")[case % 3],
                )
                if case % 3 == 0:
                    options["reduction"] = "mean"
                    options["num_items_in_batch"] = 17
                if teacher_kind == "dense":
                    teacher, teacher_here = teacher_full, teacher_full[..., here]
                else:
                    teacher = teacher_here = topk_teacher(teacher_full, 5, teacher_kind)
                upstream = torch.rand((3, 4), generator=g, dtype=dtype) if options["reduction"] == "none" else None

                whole = student.clone().requires_grad_()
                ref = distillation_loss(whole, teacher, labels, **options)
                ref.backward(upstream)
                part = student[..., here].clone().requires_grad_()
                got = distillation_loss(part, teacher_here, labels, process_group=group, **options)
                got.backward(upstream)
                what = f"{divergence}/{teacher_kind}/{dtype}/{options}"
                torch.testing.assert_close(got, ref, **tolerance(dtype), msg=lambda m, w=what: f"loss {w}: {m}")
                torch.testing.assert_close(part.grad, whole.grad[..., here], **tolerance(dtype),
                                           msg=lambda m, w=what: f"gradient {w}: {m}")
    # the module form, and vocab_size cutting the vocabulary's padding at its end (the last rank's slice)
    g = torch.Generator().manual_seed(99)
    student = logits(g, (6, v), torch.float32, 2.0)
    teacher = logits(g, (6, v), torch.float32, 2.0)
    size = v - 2
    whole = student.clone().requires_grad_()
    DistillationLoss("js", vocab_size=size)(whole, teacher).backward()
    part = student[:, here].clone().requires_grad_()
    got = DistillationLoss("js", vocab_size=size, process_group=group)(part, teacher[:, here])
    got.backward()
    ref = DistillationLoss("js", vocab_size=size)(student, teacher)
    torch.testing.assert_close(got, ref, **tolerance(torch.float32))
    torch.testing.assert_close(part.grad, whole.grad[:, here], **tolerance(torch.float32))
    # NaN in one rank's slice: every rank raises the same clear error (no rank hangs)
    bad = student.clone()
    bad[2, v - 1] = math.nan
    try:
        distillation_loss(bad[:, here], teacher[:, here], process_group=group)
    except ValueError as error:
        assert "NaN at position (2,)" in str(error), str(error)
    else:
        raise AssertionError("NaN logits did not raise")


def fused_cases(rank: int, widths: list[int]) -> None:
    group = dist.group.WORLD
    here = slice_of(widths, rank)
    v, h, n = sum(widths), 8, 10
    case = 0
    for divergence in ("kl", "reverse_kl", "js", "tvd"):
        for teacher_kind in ("head", "logits", "bucket", "renormalize"):
            case += 1
            g = torch.Generator().manual_seed(100 + case)
            dtype = torch.float64 if case % 2 else torch.float32
            hidden = torch.randn(n, h, generator=g, dtype=dtype)
            weight = torch.randn(v, h, generator=g, dtype=dtype)
            bias = torch.randn(v, generator=g, dtype=dtype)
            t_hidden = torch.randn(n, 6, generator=g, dtype=dtype)
            t_weight = torch.randn(v, 6, generator=g, dtype=dtype)
            labels = torch.randint(0, v, (n,), generator=g)
            labels[3] = -100
            t_logits = t_hidden @ t_weight.t()
            options = dict(divergence=divergence, temperature=1.5, hard_label_weight=0.5,
                           reduction="mean" if case % 3 else "sum")

            teacher = dict(head=(t_hidden, t_weight), logits=t_logits).get(teacher_kind)
            ref = fused_run(options, teacher_kind, hidden, weight, bias, teacher, t_logits, labels)
            teacher_here = (t_hidden, t_weight[here]) if teacher_kind == "head" else t_logits[:, here]
            got = fused_run(options, teacher_kind, hidden, weight[here], bias[here], teacher_here, t_logits, labels,
                            group)
            what = f"fused {divergence}/{teacher_kind}/{dtype}"
            for name, a, b in zip(("loss", "hidden", "weight", "bias"), got,
                                  (ref[0], ref[1], ref[2][here], ref[3][here]), strict=True):
                torch.testing.assert_close(a, b, **tolerance(dtype, 10.0), msg=lambda m, x=f"{name} {what}": f"{x}: {m}")


def fused_run(options, kind, hidden, weight, bias, teacher, t_logits, labels, process_group=None):
    """The fused loss and the gradients of hidden, weight and bias, for a teacher head, logits or a TopK."""
    hidden, weight, bias = (x.clone().requires_grad_() for x in (hidden, weight, bias))
    loss_fn = FusedLinearDistillationLoss(**options, process_group=process_group)
    if kind == "head":
        loss = loss_fn(hidden, weight, *teacher, labels, student_bias=bias)
    elif kind == "logits":
        loss = loss_fn(hidden, weight, labels=labels, student_bias=bias, teacher_logits=teacher)
    else:
        loss = loss_fn(hidden, weight, labels=labels, student_bias=bias, teacher_logits=topk_teacher(t_logits, 4, kind))
    loss.backward()
    return loss, hidden.grad, weight.grad, bias.grad


def dtensor_cases(rank: int, widths: list[int]) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    v = sum(widths)
    g = torch.Generator().manual_seed(7)
    student = torch.randn(5, v, generator=g, dtype=torch.float64)
    teacher = torch.randn(5, v, generator=g, dtype=torch.float64)
    whole = student.clone().requires_grad_()
    ref = distillation_loss(whole, teacher, divergence="reverse_kl", temperature=2.0)
    ref.backward()
    shard = distribute_tensor(student, mesh, [Shard(1)]).requires_grad_()
    got = distillation_loss(shard, distribute_tensor(teacher, mesh, [Shard(1)]), divergence="reverse_kl",
                            temperature=2.0)
    got.backward()
    torch.testing.assert_close(got, ref, **tolerance(torch.float64))
    torch.testing.assert_close(shard.grad.full_tensor(), whole.grad, **tolerance(torch.float64))


def data_parallel_cases(rank: int, widths: list[int]) -> None:
    """DDP (gradients averaged over W ranks) with 2 accumulation steps and uneven masking: the loss given
    num_items_in_batch = count_items(the step's labels on every rank) and multiplied by W gives exactly the
    gradient of the one-big-batch mean."""
    world = dist.get_world_size()
    g = torch.Generator().manual_seed(11)
    h, v, rows, steps = 6, 9, 4, 2
    inputs = torch.randn(world, steps, rows, h, generator=g, dtype=torch.float64)
    teacher = torch.randn(world, steps, rows, v, generator=g, dtype=torch.float64)
    labels = torch.randint(0, v, (world, steps, rows), generator=g)
    labels[labels % 3 == 0] = -100  # a different number of kept items on every rank and step
    torch.manual_seed(0)
    model = torch.nn.Linear(h, v).double()
    single = torch.nn.Linear(h, v).double()
    single.load_state_dict(model.state_dict())
    loss_fn = DistillationLoss("kl")
    loss_fn(single(inputs.reshape(-1, h)), teacher.reshape(-1, v), labels.reshape(-1)).backward()

    ddp = torch.nn.parallel.DistributedDataParallel(model)
    items = count_items(list(labels[rank]), process_group=dist.group.WORLD)
    assert items == int((labels != -100).sum()), items
    for step in range(steps):
        context = ddp.no_sync() if step < steps - 1 else torch.enable_grad()
        with context:
            loss = loss_fn(ddp(inputs[rank, step]), teacher[rank, step], labels[rank, step], num_items_in_batch=items)
            (loss * world).backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, dict(single.named_parameters())[name].grad, rtol=1e-12, atol=1e-14,
                                   msg=lambda m, x=name: f"DDP gradient of {x}: {m}")


SUITES = {"dense": dense_cases, "fused": fused_cases, "dtensor": dtensor_cases, "data_parallel": data_parallel_cases}


def worker(rank: int, world: int, port: int, widths: list[int], suites: list[str], out: str) -> None:
    """One rank: run the suites, write the failures (none: an empty list) to ``out``/rank.json."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=120))
    failures = []
    try:
        for name in suites:
            try:
                SUITES[name](rank, widths)
            except Exception:  # reported by the test, with the rank's traceback
                failures.append(f"{name}: {traceback.format_exc()}")
                break  # the other ranks may now wait in a collective; stop rather than mismatch them
    finally:
        with open(os.path.join(out, f"{rank}.json"), "w") as f:
            json.dump(failures, f)
        if not failures:
            dist.barrier()  # every rank done before any tears its connections down
        dist.destroy_process_group()
