"""Comparing two sets of stored logits (the library side of ``kldiv compare REF OTHER``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ._comparison import Comparison, ComparisonResult
from ._storage import LogitsSource

_BLOCK_BYTES = 64 << 20


def compare_files(
    reference: str | Path,
    other: str | Path,
    *,
    labels: Any = None,
    reverse: bool = False,
    vocab_size: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    comparison: Comparison | None = None,
) -> ComparisonResult:
    """Compare two stored sets of logits of the same tokens, streaming both in blocks of about 64 MB.

    Each side is a file or a directory of files (see :class:`LogitsSource`: safetensors written by
    :func:`save_reference` or holding a ``logits`` tensor, ``.npy``, or llama.cpp ``--kl-divergence-base``
    files); the files of a directory are read in name order as one stream of tokens, so the two sides
    may be split into files differently.

    Args:
      reference, other: paths of the reference and the other model's logits.
      labels: optional integer array with one label per token (any shape of that size); by default the
        labels stored with the reference (or the other side) are used if there are any.
      reverse: report KL(other ‖ reference).
      vocab_size: compare only the first ``vocab_size`` logits of both (needed when the vocabularies differ).
      progress: called as ``progress(tokens_done, tokens_total)`` after each block.
      comparison: an accumulator to fill (default: a new ``Comparison(reverse=..., vocab_size=...)``),
        useful to read :meth:`Comparison.distribution` afterwards.

    Returns:
      The :class:`ComparisonResult`, with ``reference_format`` and, when the files recorded it, the
      reference format's measured approximation error ``reference_self_kld`` (mean KL(exact ‖ stored)).
    """
    ref, oth = LogitsSource(reference), LogitsSource(other)
    if ref.n_rows != oth.n_rows:
        raise ValueError(f"{ref.path} holds {ref.n_rows} tokens but {oth.path} holds {oth.n_rows}; both must hold "
                         "the logits of the same tokens")
    if ref.vocab != oth.vocab and vocab_size is None:
        raise ValueError(f"{ref.path} has a vocabulary of {ref.vocab} but {oth.path} has {oth.vocab}; pass "
                         f"--vocab-size {min(ref.vocab, oth.vocab)} (vocab_size=) to compare the first "
                         f"{min(ref.vocab, oth.vocab)} logits of both")
    label_rows = None
    if labels is not None:
        label_rows = np.asarray(labels)
        if label_rows.dtype.kind not in "iu":
            raise TypeError(f"labels must be integer token ids, got dtype {label_rows.dtype}")
        label_rows = label_rows.reshape(-1).astype(np.int64)
        if label_rows.size != ref.n_rows:
            raise ValueError(f"labels has {label_rows.size} entries but {ref.path} holds {ref.n_rows} tokens; give one "
                             "label per token")
    comparison = comparison or Comparison(reverse=reverse, vocab_size=vocab_size)
    v = max(ref.vocab, oth.vocab)
    step = max(1, _BLOCK_BYTES // (4 * v))
    n = ref.n_rows
    for lo in range(0, n, step):
        hi = min(lo + step, n)
        a, stored_ref, positions = ref.read(lo, hi)
        b, stored_other, _ = oth.read(lo, hi)
        block_labels = label_rows[lo:hi] if label_rows is not None else stored_ref if stored_ref is not None else stored_other
        a, b = comparison._pair(a, b)
        comparison._update_rows(a, b, block_labels, None, positions, (hi - lo,))
        if progress is not None:
            progress(hi, n)
    result = comparison.result()
    return dataclasses.replace(result, reference_format="+".join(ref.formats), reference_self_kld=ref.self_kl_mean)
