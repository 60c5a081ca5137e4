"""Private kernels for :mod:`kldiv.nn`: row-chunk loops over the measures of :mod:`kldiv.measures`.

Nothing here handles user-facing arguments (see :mod:`kldiv.nn.functional`); every kernel evaluates the one
definition of a divergence (``Measure.value`` / ``Measure.vjp``) on a chunk of rows, either eagerly or
through ``torch.compile`` (the same Python code traced, so the same formula).
"""

from ._dense import Divergence, dense_rows, run_dense
from ._fused import run_fused
from ._topk import run_topk

__all__ = ["Divergence", "dense_rows", "run_dense", "run_fused", "run_topk"]
