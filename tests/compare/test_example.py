"""The end-to-end example: a small LM against its exact, int8 and pruned copies ranks as users expect."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("torch")


def test_exact_copy_is_zero_int8_is_small_and_pruning_is_larger():
    path = Path(__file__).parents[2] / "examples" / "compare_quantized.py"
    spec = importlib.util.spec_from_file_location("compare_quantized", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = module.run(train_steps=150, n_characters=12_000)
    exact, int8, pruned = results["exact copy"], results["int8"], results["pruned 60%"]
    assert abs(exact.kld_mean) < 1e-9 and exact.same_top_p == 1
    assert 0 < int8.kld_mean < 0.01 < pruned.kld_mean
    assert int8.kld_mean < pruned.kld_mean / 10
    assert int8.same_top_p > pruned.same_top_p
    # the file round trip (quantized reference) agrees with the in-memory comparison within its stated error
    assert abs(results["int8 (from files)"].kld_mean - int8.kld_mean) < 1e-4
