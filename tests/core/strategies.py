"""Hypothesis strategies for probability vectors (with exact zeros) and logits."""

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays


@st.composite
def distributions(draw, size=None, zeros=True, min_size=1, max_size=12):
    n = draw(st.integers(min_size, max_size)) if size is None else size
    weights = draw(
        arrays(np.float64, n, elements=st.floats(0.0 if zeros else 1e-3, 1.0, allow_subnormal=False))
    )
    if weights.sum() == 0:
        weights[draw(st.integers(0, n - 1))] = 1.0
    return weights / weights.sum()


@st.composite
def pairs(draw, zeros=True, **kw):
    p = draw(distributions(zeros=zeros, **kw))
    q = draw(distributions(size=p.size, zeros=zeros))
    return p, q


def logits(size):
    return arrays(np.float64, size, elements=st.floats(-30, 30, allow_subnormal=False))
