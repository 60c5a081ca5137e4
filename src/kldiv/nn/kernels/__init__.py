"""Private kernels for :mod:`kldiv.nn`: row-chunk loops over the measures of :mod:`kldiv.measures`.

Nothing here handles user-facing arguments (see :mod:`kldiv.nn.functional`) and nothing here is a formula:
every kernel evaluates a measure's row form (:mod:`kldiv._rows`) on a chunk of rows, eagerly or through
``torch.compile`` (the same Python code traced, so the same formula).
"""

from ._dense import Divergence, Squash, run_dense, small, small_dense
from ._fused import run_fused
from ._topk import run_topk

__all__ = ["Divergence", "Squash", "run_dense", "run_fused", "run_topk", "small", "small_dense"]
