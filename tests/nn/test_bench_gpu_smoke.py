"""benchmarks/bench_gpu.py runs end to end without a GPU (Triton's interpreter on CPU tensors): the script that
measures the GPU figures is checked here, since no CI machine has a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_gpu.py"


def test_bench_gpu_runs_every_case_through_the_interpreter(tmp_path):
    out = tmp_path / "gpu.json"
    env = dict(os.environ, TRITON_INTERPRET="1")
    env.pop("KLDIV_KERNEL", None)
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--device", "cpu", "--repeats", "1",
                           "--json", str(out)], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "error:" not in done.stdout and "Traceback" not in done.stderr
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 14 and not any("error" in row for row in rows)
    assert all(row["kldiv"] > 0 for row in rows)
    bf16 = [row for row in rows if row["area"] == "bf16"]
    assert len(bf16) == 2 and all(row["kldiv"] <= 1e-2 for row in bf16)  # the bf16 gradient bound


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the script measures there")
def test_bench_gpu_without_a_gpu_says_how_to_smoke_test_it():
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode != 0 and "needs a CUDA device" in done.stderr and "--device cpu" in done.stderr
