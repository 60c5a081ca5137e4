"""Process-group plumbing of the vocabulary-parallel losses, and the global item count of data parallelism.

With a process group, each rank holds a contiguous slice of the vocabulary: rank r of the group holds token ids
[offset_r, offset_r + V_r), in rank order, and the slices may differ in size (0 included). The losses evaluate the
measures' row forms on the slices and combine the per-row partial reductions across the group
(:func:`kldiv._rows.shared_sides`, :func:`kldiv._rows.shared_sums`), so what travels is O(1) numbers per row,
never the logits.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from .. import _validate


@dataclass(frozen=True)
class Shards:
    """This rank's slice of a vocabulary split over ``group``: ``local`` ids from ``offset``, of ``width`` in all."""

    group: Any
    offset: int
    local: int
    width: int

    def max(self, a: torch.Tensor) -> torch.Tensor:
        """The elementwise max of ``a`` over the group, in place."""
        import torch.distributed as dist

        dist.all_reduce(a, op=dist.ReduceOp.MAX, group=self.group)
        return a

    def sum(self, a: torch.Tensor) -> torch.Tensor:
        """The elementwise sum of ``a`` over the group, in place."""
        import torch.distributed as dist

        dist.all_reduce(a, op=dist.ReduceOp.SUM, group=self.group)
        return a

    def localise(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Global token ids as positions in this slice: (positions, held), where ids held elsewhere get the
        position ``local`` (one past the slice: a spare column) and ``held`` is False."""
        at = indices - self.offset
        held = (at >= 0) & (at < self.local)
        return torch.where(held, at, self.local), held


def shards_of(process_group: Any, local_width: int, device: torch.device, vocab_size: Any = None) -> Shards:
    """The slices of every rank of ``process_group`` from their widths (one all-gather of one integer per rank);
    with ``vocab_size``, only the first ``vocab_size`` ids of the whole vocabulary are compared (padding at its
    end), so a slice past it is empty."""
    import torch.distributed as dist

    _validate.check_process_group(process_group)
    size = dist.get_world_size(process_group)
    mine = torch.tensor([local_width], dtype=torch.int64, device=device)
    widths = [torch.empty_like(mine) for _ in range(size)]
    dist.all_gather(widths, mine, group=process_group)
    widths = [int(w) for w in widths]
    rank = dist.get_rank(process_group)
    offset, total = sum(widths[:rank]), sum(widths)
    width = total if vocab_size is None else _validate.check_vocab_size(total, total, vocab_size)
    return Shards(process_group, offset, max(0, min(local_width, width - offset)), width)


def unshard(*tensors: Any, dim: int = -1) -> tuple[list[Any], Any]:
    """DTensors sharded on their vocabulary dimension ``dim`` (the last of logits, the first of an LM head's
    weight) over a 1-D mesh as their local slices, and the mesh's process group (None when no argument is a
    DTensor); other arguments pass through."""
    group, out = None, []
    for x in tensors:
        if type(x).__name__ != "DTensor":
            out.append(x)
            continue
        from torch.distributed.tensor import Shard

        placements, want = x.placements, dim % x.ndim
        if x.device_mesh.ndim != 1 or not (isinstance(placements[0], Shard) and placements[0].dim % x.ndim == want):
            raise ValueError(
                f"a DTensor input must be sharded on its vocabulary dimension ({want}) over a 1-D device mesh (the "
                f"vocabulary split over a tensor-parallel group); got placements {placements} on a "
                f"{x.device_mesh.ndim}-D mesh"
            )
        group = x.device_mesh.get_group()
        out.append(x.to_local())
    return out, group


def whole(x: Any) -> Any:
    """A DTensor (labels, replicated or not) as the whole tensor; anything else as it is."""
    return x.full_tensor() if type(x).__name__ == "DTensor" else x


def count_items(labels: torch.Tensor | Iterable[torch.Tensor], *, ignore_index: int = -100,
                process_group: Any = None) -> int:
    """The number of items (labels other than ``ignore_index``) in a global batch, for ``num_items_in_batch``.

    ``labels`` is one tensor, or the micro-batches of one optimiser step (gradient accumulation); with
    ``process_group`` (for example ``torch.distributed.group.WORLD``) the counts of every rank of the group are
    summed (one all-reduce of one integer), so each rank divides its summed loss by the same global count.

    With data parallelism (DDP averages gradients over its W ranks) and k accumulation steps, pass
    ``num_items_in_batch=count_items(all k micro-batches' labels, process_group=WORLD)`` to every micro-batch's
    loss and multiply the loss by W: the averaged gradient is then exactly the gradient of the one-big-batch mean
    (the sum over all W * k micro-batches divided by the global count). This is what Hugging Face Trainer does with
    ``average_tokens_across_devices=True``.
    """
    index = _validate.check_integer("ignore_index", ignore_index)
    parts = [labels] if isinstance(labels, torch.Tensor) else list(labels)
    if not parts:
        raise ValueError("count_items needs at least one labels tensor")
    for i, part in enumerate(parts):
        _validate.check_label_tensor(part, f"labels[{i}]" if len(parts) > 1 else "labels")
    count = torch.zeros((), dtype=torch.int64, device=parts[0].device)
    for part in parts:
        count += (part.to(count.device) != index).sum()
    if process_group is not None:
        import torch.distributed as dist

        _validate.check_process_group(process_group)
        count = count.reshape(1)
        dist.all_reduce(count, op=dist.ReduceOp.SUM, group=process_group)
    return int(count.sum())
