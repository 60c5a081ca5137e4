"""The topic example (examples/topics/lda_stdlib.py) at a small size: its all-pairs JS and Hellinger against SciPy."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")


def load_example():
    path = Path(__file__).parents[2] / "examples" / "topics" / "lda_stdlib.py"
    spec = importlib.util.spec_from_file_location("lda_stdlib", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_topic_example_matches_scipy_and_finds_the_nearest_documents():
    from scipy.spatial.distance import jensenshannon

    result = load_example().run(docs=200, topics=4, loop_docs=30, neighbours=2, verbose=False)
    assert result["documents"] == 200 and len(result["labels"]) == 4
    assert result["loop_difference"] < 1e-12  # kldiv.pairwise.js equals SciPy's distance squared
    theta = result["doc_topic"]
    np.testing.assert_allclose(theta.sum(axis=1), 1, rtol=1e-12)
    i, j = 3, 17
    assert result["doc_js"][i, j] == pytest.approx(jensenshannon(theta[i], theta[j]) ** 2, rel=1e-9)
    hellinger = np.sqrt(0.5 * np.sum((np.sqrt(theta[i]) - np.sqrt(theta[j])) ** 2))
    assert result["doc_hellinger"][i, j] == pytest.approx(hellinger, rel=1e-9)
    for query, found in result["neighbours"].items():
        q = result["names"].index(query)
        brute = np.argsort([jensenshannon(theta[q], t) if k != q else np.inf for k, t in enumerate(theta)])[:2]
        assert found == [result["names"][k] for k in brute]
    assert np.all(np.isfinite(result["topic_js"][~np.eye(4, dtype=bool)]))
    assert np.all(result["topic_js"][~np.eye(4, dtype=bool)] <= 1)  # bits
