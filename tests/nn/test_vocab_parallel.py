"""Vocabulary-parallel losses on gloo process groups of 2 and 4 CPU processes, uneven (and empty) slices, against
the single-device losses; DTensor inputs; DDP with gradient accumulation and count_items. The cases themselves
are in parallel_cases.py (the spawned processes import them from there)."""

from __future__ import annotations

import json
import socket

import pytest
import torch

import kldiv.nn as knn

pytest.importorskip("torch.distributed")
if not torch.distributed.is_available():
    pytest.skip("torch.distributed is not available in this build", allow_module_level=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_group(widths: list[int], suites: list[str], tmp_path) -> None:
    import parallel_cases
    import torch.multiprocessing as mp

    world = len(widths)
    mp.spawn(parallel_cases.worker, args=(world, free_port(), widths, suites, str(tmp_path)), nprocs=world)
    failures = [f for rank in range(world) for f in json.loads((tmp_path / f"{rank}.json").read_text())]
    assert not failures, "\n".join(failures)


@pytest.mark.slow
def test_two_ranks_uneven_slices_equal_the_single_device_losses_and_gradients(tmp_path):
    run_group([23, 14], ["dense", "fused", "dtensor", "data_parallel"], tmp_path)


@pytest.mark.slow
def test_four_ranks_with_an_empty_slice_equal_the_single_device_losses_and_gradients(tmp_path):
    run_group([10, 0, 16, 11], ["dense", "fused", "data_parallel"], tmp_path)


def test_count_items_counts_every_micro_batch_without_a_group():
    labels = [torch.tensor([[1, -100, 3]]), torch.tensor([-100, -100, 5, 6])]
    assert knn.count_items(labels) == 4
    assert knn.count_items(labels[1], ignore_index=5) == 3


def test_count_items_and_process_group_errors_are_one_line():
    with pytest.raises(TypeError, match="integer tensor"):
        knn.count_items(torch.zeros(3))
    with pytest.raises(ValueError, match="at least one"):
        knn.count_items([])
    with pytest.raises(RuntimeError, match="not initialised"):
        knn.count_items(torch.tensor([1]), process_group=object())
    with pytest.raises(RuntimeError, match="not initialised"):
        knn.DistillationLoss(process_group=object())(torch.zeros(2, 4), torch.zeros(2, 4))
