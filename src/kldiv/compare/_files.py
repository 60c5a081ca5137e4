"""Comparing two sets of stored logits (the library side of ``kldiv compare REF OTHER``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ._comparison import Comparison, ComparisonResult
from ._storage import LLAMA_FORMAT, LogitsSource

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
    workers: int = 1,
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
      workers: split the tokens over this many processes (``torch.distributed``, gloo on 127.0.0.1; needs
        PyTorch): each compares a contiguous 1/``workers`` of the tokens and the comparisons are merged with
        :meth:`Comparison.merge` (see :func:`merge_across_processes`). The report equals the one-process
        report: moments to rounding (1e-12 relative), percentiles within the sketch's bound (identical while
        exact).

    Returns:
      The :class:`ComparisonResult`, with ``reference_format`` and, when the files recorded it, the
      reference format's measured approximation error: ``reference_self_kld`` (mean KL(exact ‖ stored)) and
      ``reference_log_prob_error`` (mean over tokens of sum_i p_i |log p̂_i - log p_i|); see :func:`save_reference`.

    Raises:
      CorruptFileError: a damaged file (naming it and the byte offset), from whichever process read it.
      ValueError: the two sides do not hold the same tokens, or an argument is wrong.
      ChildProcessError: a worker process ended without finishing (killed, or out of memory).
    """
    if isinstance(workers, bool) or not isinstance(workers, int | np.integer) or workers < 1:
        raise ValueError(f"workers must be a positive integer (the number of processes), got {workers!r}")
    ref, oth = open_pair(reference, other, vocab_size)
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
    if workers > 1 and ref.n_rows > 1:
        from ._distributed import compare_in_processes

        compare_in_processes(reference, other, label_rows, comparison, int(workers), ref.n_rows, progress)
    else:
        compare_rows(ref, oth, label_rows, comparison, 0, ref.n_rows, progress)
    result = comparison.result()
    notes = result.notes
    if LLAMA_FORMAT in ref.formats:
        notes += (LLAMA_REVERSE_NOTE if reverse or comparison.reverse else LLAMA_NOTE,)
    return dataclasses.replace(result, reference_format="+".join(ref.formats), reference_self_kld=ref.self_kl_mean,
                               reference_log_prob_error=ref.log_prob_error_mean, notes=notes)


#: What a llama.cpp reference means in the report (its semantics), and with --reverse, which llama.cpp lacks.
LLAMA_NOTE = ("llama.cpp semantics: REF is read with llama.cpp's arithmetic: KLD = sum over stored log p > -16 of "
              "p (log p - log q), not renormalised (so, as in llama.cpp, a token's value can dip below 0), PPL and Δp "
              "from the stored log p(label); JS, TVD and top-k overlap use the kept entries renormalised")
LLAMA_REVERSE_NOTE = ("llama.cpp semantics: llama.cpp has no --reverse (KL(other || reference)); here REF's stored rows "
                      "are used whole, "
                      "entries below max - 16 at the file's floor value, renormalised (an approximation: the file "
                      "does not store them); PPL and Δp from the stored log p(label)")


def open_pair(reference: str | Path, other: str | Path, vocab_size: int | None) -> tuple[LogitsSource, LogitsSource]:
    """Both sides opened and checked to hold the same tokens (and vocabularies, unless ``vocab_size`` cuts them)."""
    ref, oth = LogitsSource(reference), LogitsSource(other)
    if ref.n_rows != oth.n_rows:
        raise ValueError(f"{ref.path} holds {ref.n_rows} tokens but {oth.path} holds {oth.n_rows}; both must hold "
                         "the logits of the same tokens")
    if ref.vocab != oth.vocab and vocab_size is None:
        raise ValueError(f"{ref.path} has a vocabulary of {ref.vocab} but {oth.path} has {oth.vocab}; pass "
                         f"--vocab-size {min(ref.vocab, oth.vocab)} (vocab_size=) to compare the first "
                         f"{min(ref.vocab, oth.vocab)} logits of both")
    return ref, oth


def compare_rows(ref: LogitsSource, oth: LogitsSource, label_rows: np.ndarray | None, comparison: Comparison,
                 start: int, stop: int, progress: Callable[[int, int], None] | None = None) -> None:
    """Feed tokens [start, stop) of both sources to ``comparison`` in blocks of about 64 MB (float64 rows).

    The labels are ``label_rows`` if given, else those stored with the reference or the other side; labels stored
    with both sides must agree (they score the same text). Rows of a llama.cpp reference follow llama.cpp's
    arithmetic (see :meth:`LogitsSource.read` and :meth:`Comparison._update_rows`); a llama.cpp file as the other
    side is read as stored, its floor entries included."""
    v = max(ref.vocab, oth.vocab)
    step = max(1, _BLOCK_BYTES // (8 * v))
    for lo in range(start, stop, step):
        hi = min(lo + step, stop)
        stored_ref, stored_other = ref.labels(lo, hi), oth.labels(lo, hi)
        if stored_ref is not None and stored_other is not None and not np.array_equal(stored_ref, stored_other):
            i = int(np.argmax(stored_ref != stored_other))
            raise ValueError(f"the labels stored with {ref.path} and {oth.path} disagree at token {lo + i} "
                             f"({int(stored_ref[i])} vs {int(stored_other[i])}): the two sides do not score the same "
                             "tokens")
        labels = label_rows[lo:hi] if label_rows is not None else stored_ref if stored_ref is not None else stored_other
        a = ref.read(lo, hi, labels, skip_floor=not comparison.reverse)
        b = oth.read(lo, hi, labels, skip_floor=False)  # llama.cpp's rule is the reference's: OTHER as stored
        x, y = comparison._pair(a.logits, b.logits)
        comparison._update_rows(x, y, labels, None, a.positions, (hi - lo,), llama=(a.log_mass, a.label_log_prob)
                                if a.log_mass is not None else None)
        if progress is not None:
            progress(hi - start, stop - start)
