"""How far is one model from another, token by token: llama.cpp's KL-divergence report for any logits.

    >>> from kldiv.compare import Comparison
    >>> comparison = Comparison()
    >>> for reference_logits, other_logits, labels in chunks:   # doctest: +SKIP
    ...     comparison.update(reference_logits, other_logits, labels)
    >>> print(comparison.result().kld_mean)                    # doctest: +SKIP

:class:`Comparison` streams chunks in O(1) memory; :func:`save_reference` stores a reference model's
logits (exactly, as top-k plus a tail bucket, or as llama.cpp's 16-bit log-probs) for a later run;
:func:`compare_files` compares two stored sets, llama.cpp ``--kl-divergence-base`` files included, in one
process or several (``workers=``). :meth:`Comparison.merge` and :meth:`Comparison.state_dict` split a comparison
over processes or machines; :func:`merge_across_processes` merges over a ``torch.distributed`` group.
"""

from ._comparison import DELTA_P_PERCENTILES, IGNORE_INDEX, KLD_PERCENTILES, Comparison, ComparisonResult
from ._distributed import merge_across_processes
from ._files import compare_files
from ._sketch import QuantileSketch
from ._storage import (
    FORMATS,
    CorruptFileError,
    LogitsSource,
    dequantize_log_probs,
    quantize_log_probs,
    save_reference,
)

__all__ = [
    "Comparison",
    "ComparisonResult",
    "QuantileSketch",
    "save_reference",
    "compare_files",
    "merge_across_processes",
    "LogitsSource",
    "CorruptFileError",
    "FORMATS",
    "quantize_log_probs",
    "dequantize_log_probs",
    "KLD_PERCENTILES",
    "DELTA_P_PERCENTILES",
    "IGNORE_INDEX",
]
