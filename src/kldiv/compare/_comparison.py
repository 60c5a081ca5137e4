"""The streaming accumulator behind ``kldiv compare``: llama.cpp's KL-divergence report for any two models."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .. import _backend, _validate
from ._moments import NON_FINITE, Moments
from ._sketch import QuantileSketch
from ._tokens import token_values

#: The percentiles llama.cpp prints for KLD (100 is the maximum, 0 the minimum).
KLD_PERCENTILES = (100.0, 99.9, 99.0, 95.0, 90.0, 50.0, 10.0, 5.0, 1.0, 0.1, 0.0)
#: The percentiles llama.cpp prints for Δp.
DELTA_P_PERCENTILES = (100.0, 99.9, 99.0, 95.0, 90.0, 75.0, 50.0, 25.0, 10.0, 5.0, 1.0, 0.1, 0.0)
#: Labels equal to this are ignored (PyTorch's ``ignore_index`` convention).
IGNORE_INDEX = -100


@dataclass(frozen=True)
class ComparisonResult:
    """Every statistic of the report. Divergences are in nats; probabilities and fractions in [0, 1].

    ``kld_*`` is KL(reference ‖ other) (``direction`` says which). Standard errors are those of the mean,
    sqrt(s^2 / n) with the sample variance s^2, as llama.cpp computes them, for any n >= 2 (0 for one token).
    llama.cpp differs on few tokens: it reports 0 for n <= 10 and prints no summary below 100 tokens; here every
    statistic is reported and ``notes`` says when n is that small. Percentile dictionaries map
    the percentile (100 = maximum, 50 = median, 0 = minimum) to its value; ``percentile_error`` is 0 when
    they are exact, otherwise the sketch's relative error bound (see :class:`QuantileSketch`).

    The label statistics (``delta_p_*``, ``ppl_*``, ``ln_ppl_*``) are None when no labels were given.
    Δp = p_other(label) - p_reference(label). PPL = exp(mean NLL); the ratio PPL(other)/PPL(reference) =
    exp(mean(NLL_other - NLL_reference)), whose standard error uses the per-token differences and so
    includes the correlation of the two models' NLL (what llama.cpp's covariance term does).

    From stored files (:func:`compare_files`): ``reference_format``, and the error the reference's format adds,
    measured when it was saved: ``reference_self_kld`` = mean KL(exact ‖ stored) and ``reference_log_prob_error``
    = mean of sum_i p_i |log p̂_i - log p_i| (see :func:`save_reference`).

    ``kld_by_position[t]`` is the mean KLD of the tokens at position t of (B, T, V) chunks (and of stored
    references saved with a (B, T) batch shape, or llama.cpp files), with ``tokens_by_position[t]`` tokens; NaN
    where none. (N, V) chunks are tokens without positions: they enter every other statistic but not this curve,
    which is empty when no chunk had positions (``notes`` says so).
    """

    n_tokens: int
    direction: str
    kld_mean: float
    kld_se: float
    kld_percentiles: dict[float, float]
    same_top_p: float
    same_top_p_se: float
    js_mean: float
    js_se: float
    tvd_mean: float
    tvd_se: float
    top_k_overlap: dict[int, float]
    kld_by_position: np.ndarray
    tokens_by_position: np.ndarray
    percentile_error: float
    n_labelled: int = 0
    delta_p_mean: float | None = None
    delta_p_se: float | None = None
    delta_p_percentiles: dict[float, float] | None = None
    rms_delta_p: float | None = None
    rms_delta_p_se: float | None = None
    ppl_reference: float | None = None
    ppl_reference_se: float | None = None
    ppl_other: float | None = None
    ppl_other_se: float | None = None
    ln_ppl_ratio: float | None = None
    ln_ppl_ratio_se: float | None = None
    ppl_ratio: float | None = None
    ppl_ratio_se: float | None = None
    ppl_difference: float | None = None
    ppl_difference_se: float | None = None
    ln_ppl_correlation: float | None = None
    reference_format: str | None = None
    reference_self_kld: float | None = None
    reference_log_prob_error: float | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def kld_max(self) -> float:
        return self.kld_percentiles[100.0]

    @property
    def kld_median(self) -> float:
        return self.kld_percentiles[50.0]

    @property
    def kld_min(self) -> float:
        return self.kld_percentiles[0.0]

    # Names as llama.cpp's report spells them.
    mean_kld = property(lambda self: self.kld_mean)
    mean_js = property(lambda self: self.js_mean)
    mean_tvd = property(lambda self: self.tvd_mean)
    same_top = property(lambda self: self.same_top_p)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary (arrays as lists, non-finite numbers as strings "inf"/"nan")."""
        return {key: _jsonable(value) for key, value in asdict(self).items()}

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return [_jsonable(float(v)) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, float | np.floating) and not math.isfinite(value):
        return str(float(value))
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


class Comparison:
    """Streaming accumulator of llama.cpp's KL-divergence statistics between a reference and another model.

    Feed it chunks of logits of the same tokens from both models; memory stays O(1) in the number of
    tokens (O(sequence length) for the per-position curve). Per token t with reference distribution P_t,
    other distribution Q_t and label y_t:

        KLD_t = KL(P_t ‖ Q_t) = sum_i P_t,i log(P_t,i / Q_t,i)      (KL(Q_t ‖ P_t) with reverse=True)
        JS_t  = JS(P_t, Q_t) with weights 1/2,  TVD_t = 1/2 sum_i |P_t,i - Q_t,i|
        same top:  argmax P_t = argmax Q_t;   top-k overlap: |top_k(P_t) ∩ top_k(Q_t)| / k
        Δp_t = Q_t(y_t) - P_t(y_t),   NLL_t = -log Q_t(y_t)  and  -log P_t(y_t)

    Means and variances are exact running moments (Chan et al. 1979); percentiles are exact up to
    ``exact_limit`` tokens, then from a relative-error sketch (see :class:`QuantileSketch`). Comparisons of
    different tokens combine with :meth:`merge` (associative: split the tokens any way, over processes or
    machines), and :meth:`state_dict` / :meth:`from_state_dict` carry one between them as plain arrays.

    Args:
      reverse: report KL(other ‖ reference) instead of KL(reference ‖ other).
      vocab_size: compare only the first ``vocab_size`` logits of both sides (for vocabularies padded to
        different sizes); without it, different vocabulary sizes are an error.
      top_k: the k of the top-k overlap statistics.
      relative_accuracy: the sketch's relative error bound once percentiles are no longer exact.
      exact_limit: up to this many tokens percentiles are exact (8 bytes per token and statistic).

    References:
      llama.cpp ``tools/perplexity`` (``--kl-divergence``): the statistics and their uncertainties.
      Chan, Golub and LeVeque (1979), Updating formulae and a pairwise algorithm for computing sample
      variances. Masson, Rim and Lee (2019), DDSketch.
    """

    def __init__(
        self,
        *,
        reverse: bool = False,
        vocab_size: int | None = None,
        top_k: tuple[int, ...] = (5, 10),
        relative_accuracy: float = 1e-3,
        exact_limit: int = 1 << 16,
    ):
        self.reverse = _validate.check_flag("reverse", reverse)
        self.vocab_size = None if vocab_size is None else _validate.check_integer_at_least(
            "vocab_size", vocab_size, 1, "a positive integer or None")
        self.top_k = _validate.check_positive_integers("top_k", top_k)
        self.direction = "KL(other || reference)" if reverse else "KL(reference || other)"
        self._tokens = Moments(("kld", "js", "tvd", "same_top") + tuple(f"overlap{k}" for k in self.top_k))
        self._labelled = Moments(("nll_reference", "nll_other", "nll_difference", "delta_p", "delta_p_squared"))
        self._kld_quantiles = QuantileSketch(relative_accuracy, exact_limit)
        self._delta_p_quantiles = QuantileSketch(relative_accuracy, exact_limit)
        self._position_sum = np.zeros(0)
        self._position_count = np.zeros(0, dtype=np.int64)
        self._vocab: int | None = None

    # --- merging and state: a comparison split over processes or machines ---------------------------------

    def _settings(self) -> dict[str, Any]:
        return {"reverse": self.reverse, "vocab_size": self.vocab_size, "top_k": self.top_k,
                "relative_accuracy": self._kld_quantiles.relative_accuracy,
                "exact_limit": self._kld_quantiles.exact_limit}

    def _check_settings(self, settings: dict[str, Any], what: str) -> None:
        mine = self._settings()
        for key, value in settings.items():
            if value != mine[key]:
                raise ValueError(
                    f"{what} has {key}={value!r} but this Comparison has {key}={mine[key]!r}; create the "
                    f"Comparison with {key}={value!r} (or use Comparison.from_state_dict)"
                )

    def merge(self, other: Comparison) -> Comparison:
        """Add every token ``other`` has compared to this comparison, in place, and return it.

        The result is that of one comparison fed both sets of tokens: counts and position curves add, means and
        co-moments combine by Chan et al.'s pairwise update (exact up to rounding: any grouping agrees to
        about 1e-15 relative), and the percentile sketches merge bucket by bucket, so percentiles keep the error
        bound of :class:`QuantileSketch` (and stay exact while all the tokens together fit ``exact_limit``).
        Merging is associative and commutative. Both must have the same settings (``reverse``, ``vocab_size``,
        ``top_k``, ``relative_accuracy``, ``exact_limit``) and vocabulary.

        Raises:
          TypeError: if ``other`` is not a :class:`Comparison`.
          ValueError: if the settings or the vocabularies differ.
        """
        if not isinstance(other, Comparison):
            raise TypeError(f"merge takes another Comparison, got {type(other).__name__}")
        self._check_settings(other._settings(), "the other comparison")
        if self._vocab is not None and other._vocab is not None and self._vocab != other._vocab:
            raise ValueError(f"the other comparison has a vocabulary of {other._vocab} but this one has {self._vocab}; "
                             "only comparisons of the same vocabulary merge")
        self._vocab = self._vocab if self._vocab is not None else other._vocab
        self._tokens.merge(other._tokens)
        self._labelled.merge(other._labelled)
        self._kld_quantiles.merge(other._kld_quantiles)
        self._delta_p_quantiles.merge(other._delta_p_quantiles)
        size = max(self._position_sum.size, other._position_sum.size)
        self._position_sum = _padded(self._position_sum, size) + _padded(other._position_sum, size)
        self._position_count = _padded(self._position_count, size) + _padded(other._position_count, size)
        return self

    def state_dict(self) -> dict[str, np.ndarray]:
        """Everything this comparison has accumulated, and its settings, as a flat dictionary of NumPy arrays.

        Plain numbers and arrays only (float64 and int64; a 0-d array for a number), no pickle: save it with
        ``numpy.savez`` or ``safetensors.numpy.save_file``, send it between processes as tensors, and restore
        it with :meth:`load_state_dict` or :meth:`from_state_dict`. The keys, dtypes and ranks are the same
        for every comparison of the same ``top_k`` (only lengths differ), which is what
        :func:`merge_across_processes` relies on. Its size is O(1) in the tokens: at most ``exact_limit``
        values per percentile sketch, then a fixed histogram (about 1.1 MB each at ``relative_accuracy=1e-3``).
        """
        state: dict[str, np.ndarray] = {
            "version": np.array(STATE_VERSION, dtype=np.int64),
            "settings.reverse": np.array(int(self.reverse), dtype=np.int64),
            "settings.vocab_size": np.array(-1 if self.vocab_size is None else self.vocab_size, dtype=np.int64),
            "settings.top_k": np.array(self.top_k, dtype=np.int64),
            "vocab": np.array(-1 if self._vocab is None else self._vocab, dtype=np.int64),
            "positions.sum": self._position_sum.copy(),
            "positions.count": self._position_count.copy(),
        }
        for prefix, part in (("tokens", self._tokens), ("labelled", self._labelled),
                             ("kld_sketch", self._kld_quantiles), ("delta_p_sketch", self._delta_p_quantiles)):
            state.update({f"{prefix}.{key}": value for key, value in part.state().items()})
        return state

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Comparison:
        """A comparison with the settings and the accumulated tokens of ``state`` (see :meth:`state_dict`)."""
        state = _checked_state(state)
        sketch = state["kld_sketch.relative_accuracy"], state["kld_sketch.exact_limit"]
        vocab_size = int(state["settings.vocab_size"])
        comparison = cls(reverse=bool(state["settings.reverse"]), vocab_size=None if vocab_size < 0 else vocab_size,
                         top_k=tuple(int(k) for k in state["settings.top_k"]),
                         relative_accuracy=float(sketch[0]), exact_limit=int(sketch[1]))
        comparison.load_state_dict(state)
        return comparison

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace what this comparison has accumulated by ``state`` (from :meth:`state_dict`, maybe of another
        process); the settings must match this comparison's. Values may be NumPy arrays, tensors or numbers.

        Raises:
          ValueError: if ``state`` is not a comparison's state (a key missing, a wrong shape or dtype,
            inconsistent counts) or was made with other settings.
        """
        state = _checked_state(state)
        vocab_size = int(state["settings.vocab_size"])
        self._check_settings({
            "reverse": bool(state["settings.reverse"]),
            "vocab_size": None if vocab_size < 0 else vocab_size,
            "top_k": tuple(int(k) for k in state["settings.top_k"]),
            "relative_accuracy": float(state["kld_sketch.relative_accuracy"]),
            "exact_limit": int(state["kld_sketch.exact_limit"]),
        }, "the state")
        for prefix, part in (("tokens", self._tokens), ("labelled", self._labelled)):
            if state[f"{prefix}.mean"].shape != (len(part.names),):
                raise ValueError(f"the state's {prefix}.mean has shape {state[f'{prefix}.mean'].shape} but a "
                                 f"comparison with top_k={self.top_k} has {len(part.names)} statistics there")
            part.load_state({key: state[f"{prefix}.{key}"] for key in _MOMENT_KEYS})
        for prefix, sketch in (("kld_sketch", self._kld_quantiles), ("delta_p_sketch", self._delta_p_quantiles)):
            if not int(state[f"{prefix}.exact"]) and state[f"{prefix}.positive"].shape != (sketch._size,):
                raise ValueError(f"the state's {prefix}.positive has {state[f'{prefix}.positive'].size} buckets but "
                                 f"a sketch of relative_accuracy={sketch.relative_accuracy} has {sketch._size}")
            sketch.load_state({key[len(prefix) + 1:]: value for key, value in state.items() if key.startswith(prefix)})
        vocab = int(state["vocab"])
        self._vocab = None if vocab < 0 else vocab
        self._position_sum = np.array(state["positions.sum"], dtype=np.float64)
        self._position_count = np.array(state["positions.count"], dtype=np.int64)

    @property
    def n_tokens(self) -> int:
        """How many tokens have been compared so far."""
        return self._tokens.count

    def distribution(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(values, counts) of the per-token ``"kld"`` or ``"delta_p"`` values seen (exact or bucketed)."""
        sketches = {"kld": self._kld_quantiles, "delta_p": self._delta_p_quantiles}
        if name not in sketches:
            raise ValueError(f"distribution name must be 'kld' or 'delta_p', got {name!r}")
        return sketches[name].weighted_values()

    def update(self, reference_logits: Any, other_logits: Any, labels: Any = None, mask: Any = None) -> None:
        """Add a chunk of tokens scored by both models.

        Args:
          reference_logits: (N, V) or (B, T, V) logits (or log-probabilities) of the reference model,
            NumPy or PyTorch on any device. A (B, T, V) chunk is B sequences whose token t sits at
            position t (the per-position curve ``kld_by_position`` comes from these only); an (N, V) chunk is
            N tokens without positions.
          other_logits: the other model's logits for the same tokens, same shape (vocabulary sizes may
            differ only with ``vocab_size``). A NumPy side is moved to the other side's torch device.
          labels: optional integer array of the batch shape, the observed next tokens; enables Δp and
            perplexity statistics. Entries equal to -100 are ignored for those statistics.
          mask: optional boolean array of the batch shape; tokens where it is False are skipped entirely.
        """
        reference, other = self._pair(reference_logits, other_logits)
        batch = tuple(reference.shape[:-1])
        # (N, V) rows are tokens of unknown position (-1): kld_by_position is defined for (B, T, V) only
        positions = np.broadcast_to(np.arange(batch[-1]) if len(batch) == 2 else -1, batch).reshape(-1)
        keep = None
        if mask is not None:
            keep = _host_array(mask, "mask", batch, np.bool_).reshape(-1)
        label_rows = None
        if labels is not None:
            label_rows = _host_array(labels, "labels", batch, np.integer).reshape(-1).astype(np.int64)
        self._update_rows(reference.reshape(-1, reference.shape[-1]), other.reshape(-1, other.shape[-1]),
                          label_rows, keep, positions, batch)

    def _update_rows(self, reference: Any, other: Any, labels: np.ndarray | None, keep: np.ndarray | None,
                     positions: np.ndarray, batch: tuple[int, ...],
                     llama: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """Rows (n, V) already paired by :meth:`_pair`, with host-side labels, keep flags and positions (n,).

        ``llama`` = (log_mass, label_log_prob), per row, marks reference rows of a llama.cpp file (see
        :meth:`LogitsSource.read`): their reference rows hold the kept entries (the rest -inf), log_mass is the
        log of the kept probability Z, and label_log_prob the stored log p(label) (NaN for rows not of such a
        file). The statistics then follow llama.cpp's arithmetic (``log_softmax`` in ``tools/perplexity``):
        KLD_t = sum over kept i of p_i (log p_i - log q_i), unnormalised, which is Z (KL(P/Z ‖ Q) + log Z) (exact
        algebra; it can be slightly negative, as llama.cpp's); the reference NLL and Δp use the stored
        log p(label). JS, TVD and top-k use the kept entries renormalised."""
        if labels is not None:
            v = reference.shape[-1]
            bad = ((labels < 0) | (labels >= v)) & (labels != IGNORE_INDEX)
            if keep is not None:
                bad &= keep
            if bad.any():
                i = int(np.argmax(bad))
                where = tuple(int(j) for j in np.unravel_index(i, batch))
                raise ValueError(
                    f"labels{list(where)} = {int(labels[i])} is not a token id of a vocabulary of {v}; labels "
                    f"must lie in [0, {v}) or equal {IGNORE_INDEX} to be ignored"
                )
        self._add(reference, other, labels, keep, positions, batch, llama)

    def _pair(self, reference: Any, other: Any) -> tuple[Any, Any]:
        """Both chunks on one backend and device, checked for shape, with the vocabulary cut if asked."""
        if _backend.is_torch(reference) != _backend.is_torch(other):
            import torch  # one side is a tensor, so torch is imported already

            tensor, array = (reference, other) if _backend.is_torch(reference) else (other, reference)
            converted = torch.as_tensor(np.asarray(array), device=tensor.device)
            reference, other = (tensor, converted) if _backend.is_torch(reference) else (converted, tensor)
        elif _backend.is_torch(reference) and reference.device != other.device:
            reference = reference.to(other.device)
        xp = _backend.namespace(reference, other)
        reference = _backend.to_array(reference, "reference_logits", xp)
        other = _backend.to_array(other, "other_logits", xp, reference)
        for name, x in (("reference_logits", reference), ("other_logits", other)):
            if x.ndim not in (2, 3):
                raise ValueError(
                    f"{name} has shape {tuple(x.shape)}; pass (tokens, vocab) or (batch, sequence, vocab) logits"
                )
        if tuple(reference.shape[:-1]) != tuple(other.shape[:-1]):
            raise ValueError(
                f"reference_logits has tokens of shape {tuple(reference.shape[:-1])} but other_logits has "
                f"{tuple(other.shape[:-1])}; both must score the same tokens"
            )
        v_ref, v_other = reference.shape[-1], other.shape[-1]
        if self.vocab_size is None:
            if v_ref != v_other:
                raise ValueError(
                    f"reference_logits has a vocabulary of {v_ref} but other_logits has {v_other}; pass "
                    f"vocab_size={min(v_ref, v_other)} (--vocab-size) to compare the first "
                    f"{min(v_ref, v_other)} logits of both"
                )
        else:
            if self.vocab_size > min(v_ref, v_other):
                raise ValueError(
                    f"vocab_size={self.vocab_size} is larger than the vocabulary of "
                    f"{'reference_logits' if v_ref < v_other else 'other_logits'} ({min(v_ref, v_other)}); "
                    f"use at most {min(v_ref, v_other)}"
                )
            reference, other = reference[..., : self.vocab_size], other[..., : self.vocab_size]
        v = reference.shape[-1]
        if self._vocab is not None and v != self._vocab:
            raise ValueError(
                f"this chunk has a vocabulary of {v} but earlier chunks had {self._vocab}; "
                "every chunk of one comparison must have the same vocabulary"
            )
        self._vocab = v
        return reference, other

    def _add(self, reference: Any, other: Any, labels: np.ndarray | None, keep: np.ndarray | None,
             positions: np.ndarray, batch: tuple[int, ...], llama: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """Accumulate rows (n, V) with host-side labels, keep mask and positions (n,)."""
        if keep is not None and not keep.all():
            index = np.flatnonzero(keep)
            rows = index if isinstance(reference, np.ndarray) else _torch_index(index, reference)
            reference, other = reference[rows], other[rows]
            positions = positions[index]
            labels = labels[index] if labels is not None else None
            llama = (llama[0][index], llama[1][index]) if llama is not None else None
        n = reference.shape[0]
        if n == 0:
            return
        gather = None
        if labels is not None:
            gather = np.where(labels == IGNORE_INDEX, 0, labels)
        locators = (
            _validate.Locator("reference_logits", (n, reference.shape[-1]), 1, (n,)),
            _validate.Locator("other_logits", (n, other.shape[-1]), 1, (n,)),
        )
        values = token_values(reference, other, gather, reverse=self.reverse, top_k=self.top_k, locators=locators)
        if llama is not None:
            log_mass, label_log_prob = llama
            kld = values.kld if self.reverse else np.exp(log_mass) * (values.kld + log_mass)
            log_p_reference = values.log_p_reference
            if log_p_reference is not None:
                log_p_reference = np.where(np.isnan(label_log_prob), log_p_reference, label_log_prob)
            values = values._replace(kld=kld, log_p_reference=log_p_reference)
        columns = [values.kld, values.js, values.tvd, values.same_top] + [values.overlap[k] for k in self.top_k]
        self._tokens.update(np.stack(columns, axis=1))
        self._kld_quantiles.update(values.kld)
        self._add_positions(positions, values.kld)
        if labels is not None:
            labelled = labels != IGNORE_INDEX
            nll_reference = -values.log_p_reference[labelled]
            nll_other = -values.log_p_other[labelled]
            delta_p = np.exp(-nll_other) - np.exp(-nll_reference)
            self._labelled.update(
                np.stack([nll_reference, nll_other, nll_other - nll_reference, delta_p, delta_p**2], axis=1)
            )
            self._delta_p_quantiles.update(delta_p)

    def _add_positions(self, positions: np.ndarray, kld: np.ndarray) -> None:
        """Add to the per-position curve; position -1 marks a token of unknown position (left out)."""
        known = positions >= 0
        if not known.all():
            positions, kld = positions[known], kld[known]
        if positions.size == 0:
            return
        size = int(positions.max()) + 1
        if size > self._position_sum.size:
            self._position_sum = np.concatenate([self._position_sum, np.zeros(size - self._position_sum.size)])
            self._position_count = np.concatenate(
                [self._position_count, np.zeros(size - self._position_count.size, dtype=np.int64)]
            )
        self._position_sum[:size] += np.bincount(positions, weights=kld, minlength=size)
        self._position_count[:size] += np.bincount(positions, minlength=size)

    def result(self) -> ComparisonResult:
        """All statistics of the tokens seen so far (see :class:`ComparisonResult`).

        Raises:
          ValueError: if no token has been added yet.
        """
        t = self._tokens
        if t.count == 0:
            raise ValueError("no tokens compared yet: call update() with at least one token (or unmasked token)")
        kld_q = self._kld_quantiles.percentiles(KLD_PERCENTILES)
        same = t.mean_of("same_top")
        with np.errstate(invalid="ignore", divide="ignore"):
            by_position = self._position_sum / self._position_count
        notes = []
        if t.count < 2:
            notes.append("standard errors need at least 2 tokens; they are reported as 0")
        elif t.count <= 10:
            notes.append(f"standard errors from {t.count} tokens are themselves rough; llama.cpp reports them as 0 "
                         "for 10 tokens or fewer (and prints no summary below 100 tokens)")
        elif t.count < 100:
            notes.append(f"only {t.count} tokens: llama.cpp prints no summary below 100 tokens; kldiv reports every "
                         "statistic")
        placed = int(self._position_count.sum())
        if placed < t.count:
            notes.append("kld_by_position is empty: (N, V) input has no positions; pass (B, T, V) chunks for the curve"
                         if placed == 0 else f"kld_by_position covers the {placed} tokens of (B, T, V) chunks, not "
                         f"the {t.count - placed} of (N, V) chunks, which have no positions")
        fields: dict[str, Any] = dict(
            n_tokens=t.count,
            direction=self.direction,
            kld_mean=t.mean_of("kld"),
            kld_se=t.standard_error_of("kld"),
            kld_percentiles=dict(zip(KLD_PERCENTILES, (float(v) for v in kld_q), strict=True)),
            same_top_p=same,
            # llama.cpp: sqrt(p (1 - p) / (n - 1)), the same as the standard error of a 0/1 mean
            same_top_p_se=t.standard_error_of("same_top"),
            js_mean=t.mean_of("js"),
            js_se=t.standard_error_of("js"),
            tvd_mean=t.mean_of("tvd"),
            tvd_se=t.standard_error_of("tvd"),
            top_k_overlap={k: t.mean_of(f"overlap{k}") for k in self.top_k},
            kld_by_position=by_position,
            tokens_by_position=self._position_count.copy(),
            percentile_error=max(self._kld_quantiles.error, self._delta_p_quantiles.error),
        )
        if self._labelled.count:
            fields.update(self._label_statistics())
        return ComparisonResult(**fields, notes=tuple(notes))

    def _label_statistics(self) -> dict[str, Any]:
        m = self._labelled
        n = m.count
        ln_ref, ln_other = m.mean_of("nll_reference"), m.mean_of("nll_other")
        se_ref, se_other = m.standard_error_of("nll_reference"), m.standard_error_of("nll_other")
        ln_ratio, ln_ratio_se = m.mean_of("nll_difference"), m.standard_error_of("nll_difference")
        ppl_ref, ppl_other = _exp(ln_ref), _exp(ln_other)
        # Delta method: SE(exp(x)) = exp(x) SE(x); cov(PPL_o, PPL_r) = PPL_o PPL_r cov(mean NLL_o, mean NLL_r)
        covariance_of_means = m.covariance_of("nll_other", "nll_reference") / n
        difference_variance = (ppl_other * se_other) ** 2 + (ppl_ref * se_ref) ** 2 - 2 * ppl_other * ppl_ref * covariance_of_means
        sd_product = math.sqrt(m.variance_of("nll_other") * m.variance_of("nll_reference"))
        mean_square = m.mean_of("delta_p_squared")
        rms = math.sqrt(mean_square)
        delta_q = self._delta_p_quantiles.percentiles(DELTA_P_PERCENTILES)
        return dict(
            n_labelled=n,
            delta_p_mean=m.mean_of("delta_p"),
            delta_p_se=m.standard_error_of("delta_p"),
            delta_p_percentiles=dict(zip(DELTA_P_PERCENTILES, (float(v) for v in delta_q), strict=True)),
            rms_delta_p=rms,
            # Delta method on sqrt: SE(sqrt(x)) = SE(x) / (2 sqrt(x))
            rms_delta_p_se=m.standard_error_of("delta_p_squared") / (2 * rms) if rms > 0 else 0.0,
            ppl_reference=ppl_ref,
            ppl_reference_se=ppl_ref * se_ref,
            ppl_other=ppl_other,
            ppl_other_se=ppl_other * se_other,
            ln_ppl_ratio=ln_ratio,
            ln_ppl_ratio_se=ln_ratio_se,
            ppl_ratio=_exp(ln_ratio),
            ppl_ratio_se=_exp(ln_ratio) * ln_ratio_se,
            ppl_difference=ppl_other - ppl_ref,
            ppl_difference_se=math.sqrt(max(difference_variance, 0.0)) if math.isfinite(difference_variance) else math.inf,
            ln_ppl_correlation=(
                m.covariance_of("nll_other", "nll_reference") / sd_product if sd_product > 0 and math.isfinite(sd_product) else None
            ),
        )


#: Bumped when the layout of :meth:`Comparison.state_dict` changes.
STATE_VERSION = 1

_MOMENT_KEYS = {"count": (0, "i"), "mean": (1, "f"), "comoment": (2, "f"), "positive_infinite": (1, "i"),
                "negative_infinite": (1, "i"), "undefined": (1, "i")}
_SKETCH_KEYS = {"relative_accuracy": (0, "f"), "exact_limit": (0, "i"), "count": (0, "i"), "minimum": (0, "f"),
                "maximum": (0, "f"), "exact": (0, "i"), "values": (1, "f"), "positive": (1, "i"),
                "negative": (1, "i"), "zeros": (0, "i"), "over": (1, "i")}
#: Every key of a comparison's state, with its rank and dtype kind ("i" integer, "f" float).
STATE_KEYS: dict[str, tuple[int, str]] = {
    "version": (0, "i"), "settings.reverse": (0, "i"), "settings.vocab_size": (0, "i"), "settings.top_k": (1, "i"),
    "vocab": (0, "i"), "positions.sum": (1, "f"), "positions.count": (1, "i"),
    **{f"{prefix}.{key}": spec for prefix in ("tokens", "labelled") for key, spec in _MOMENT_KEYS.items()},
    **{f"{prefix}.{key}": spec for prefix in ("kld_sketch", "delta_p_sketch") for key, spec in _SKETCH_KEYS.items()},
}


def _checked_state(state: Any) -> dict[str, np.ndarray]:
    """``state`` as NumPy arrays, checked to be a comparison's state: every key, rank, dtype and count."""
    if not isinstance(state, dict):
        raise TypeError(f"a comparison's state is the dict from Comparison.state_dict(), got {type(state).__name__}")
    missing = [key for key in STATE_KEYS if key not in state]
    extra = [key for key in state if key not in STATE_KEYS]
    if missing or extra:
        raise ValueError(f"not a comparison's state: {'missing ' + ', '.join(missing) if missing else ''}"
                         f"{'; ' if missing and extra else ''}{'unknown ' + ', '.join(map(str, extra)) if extra else ''}"
                         "; pass the dict from Comparison.state_dict()")
    out = {}
    for key, (rank, kind) in STATE_KEYS.items():
        value = state[key]
        if _backend.is_torch(value):
            value = value.detach().to("cpu").numpy()
        value = np.asarray(value)
        if value.ndim != rank or value.dtype.kind not in ("iub" if kind == "i" else "fiu"):
            raise ValueError(f"the state's {key} is a {value.dtype} array of shape {value.shape}; a comparison's "
                             f"state has {'integer' if kind == 'i' else 'float'} {('numbers', 'vectors', 'matrices')[rank]} there")
        out[key] = value.astype(np.int64 if kind == "i" else np.float64)
    if int(out["version"]) != STATE_VERSION:
        raise ValueError(f"the state has version {int(out['version'])}; this kldiv reads version {STATE_VERSION}")
    for prefix, sketch in (("tokens", "kld_sketch"), ("labelled", "delta_p_sketch")):
        d = out[f"{prefix}.mean"].size
        count, values = int(out[f"{prefix}.count"]), out[f"{sketch}.values"]
        exact = int(out[f"{sketch}.exact"])
        problems = [
            out[f"{prefix}.comoment"].shape != (d, d) and f"{prefix}.comoment is not {d} x {d}",
            *(out[f"{prefix}.{key}"].shape != (d,) and f"{prefix}.{key} does not have {d} entries" for key in NON_FINITE),
            count < 0 and f"{prefix}.count is negative",
            int(out[f"{sketch}.count"]) != count and f"{sketch}.count differs from {prefix}.count",
            exact and values.size != count and f"{sketch} is exact but holds {values.size} values for {count} tokens",
            not exact and int(out[f"{sketch}.positive"].sum() + out[f"{sketch}.negative"].sum()
                              + out[f"{sketch}.zeros"] + out[f"{sketch}.over"].sum()) != count
            and f"{sketch}'s buckets do not add up to {count} tokens",
            out[f"{sketch}.over"].shape != (2,) and f"{sketch}.over does not have 2 entries",
        ]
        problem = next((p for p in problems if p), None)
        if problem:
            raise ValueError(f"the state is inconsistent: {problem}; pass the dict from Comparison.state_dict()")
    if out["positions.sum"].shape != out["positions.count"].shape or int(out["positions.count"].sum()) > int(out["tokens.count"]):
        raise ValueError("the state is inconsistent: positions.sum and positions.count do not describe tokens.count "
                         "tokens; pass the dict from Comparison.state_dict()")
    return out


def _padded(x: np.ndarray, size: int) -> np.ndarray:
    return np.concatenate([x, np.zeros(size - x.size, dtype=x.dtype)]) if x.size < size else x.copy()


def _exp(x: float) -> float:
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def _torch_index(index: np.ndarray, like: Any) -> Any:
    import torch  # ``like`` is a tensor, so torch is imported already

    return torch.as_tensor(index, device=like.device)


def _host_array(x: Any, name: str, batch: tuple[int, ...], kind: type) -> np.ndarray:
    """``labels`` or ``mask`` as a NumPy array of the batch shape, checked."""
    if _backend.is_torch(x):
        x = x.detach().to("cpu").numpy()
    array = np.asarray(x)
    if tuple(array.shape) != batch:
        raise ValueError(
            f"{name} has shape {tuple(array.shape)} but the logits hold tokens of shape {batch}; "
            f"give one {'label' if name == 'labels' else 'flag'} per token"
        )
    if kind is np.bool_:
        if array.dtype != np.bool_:
            raise TypeError(f"mask must be boolean (True = compare this token), got dtype {array.dtype}")
    elif array.dtype.kind not in "iu":
        raise TypeError(f"labels must be integer token ids, got dtype {array.dtype}")
    return array
