"""The end-to-end example runs offline and its trainers agree (a smoke run)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_hf_distill_example_quick_run_prints_one_row_per_trainer_with_equal_kldiv_results(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"), TRL_EXPERIMENTAL_SILENCE="1")
    done = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "hf_distill.py"), "--quick",
                           "--out", str(tmp_path / "run")], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line.split("|") for line in done.stdout.splitlines() if line.startswith("| kldiv") or "GKD" in line]
    kldiv_rows = [r for r in rows if "kldiv" in r[1]]
    assert len(kldiv_rows) == 2
    assert kldiv_rows[0][4] == kldiv_rows[1][4]  # fused and unfused: the same held-out KL
