"""Comparison statistics against exact NumPy computations on random logits."""

from __future__ import annotations

import numpy as np
import pytest
from compare_reference import oracle, random_logits, se  # noqa: E402,I001
from hypothesis import given, settings
from hypothesis import strategies as st

from kldiv.compare import Comparison, QuantileSketch


def test_means_standard_errors_and_exact_percentiles_match_numpy():
    a, b, y = random_logits()
    c = Comparison()
    for lo in range(0, 400, 97):
        c.update(a[lo:lo + 97], b[lo:lo + 97], y[lo:lo + 97])
    r, o = c.result(), oracle(a, b, y)
    assert r.n_tokens == 400 and r.direction == "KL(reference || other)"
    np.testing.assert_allclose([r.kld_mean, r.kld_se], [o["kld"].mean(), se(o["kld"])], rtol=1e-10)
    np.testing.assert_allclose([r.js_mean, r.tvd_mean], [o["js"].mean(), o["tvd"].mean()], rtol=1e-10)
    assert r.percentile_error == 0
    for q, value in r.kld_percentiles.items():
        assert value == pytest.approx(np.percentile(o["kld"], q), rel=1e-12)
    assert r.kld_max == pytest.approx(o["kld"].max(), rel=1e-12) and r.kld_min == pytest.approx(o["kld"].min(), rel=1e-12)


def test_same_top_and_top_k_overlap_match_numpy():
    a, b, y = random_logits(noise=1.0)
    c = Comparison()
    c.update(a, b)
    r, o = c.result(), oracle(a, b)
    assert r.same_top_p == pytest.approx(o["same"].mean())
    # llama.cpp: sqrt(p (1 - p) / (n - 1))
    assert r.same_top_p_se == pytest.approx(np.sqrt(r.same_top_p * (1 - r.same_top_p) / (len(a) - 1)))
    assert r.top_k_overlap[5] == pytest.approx(o["overlap5"].mean())
    assert r.top_k_overlap[10] == pytest.approx(o["overlap10"].mean())
    assert r.delta_p_mean is None and r.ppl_ratio is None


def test_delta_p_rms_and_perplexity_ratio_match_numpy():
    a, b, y = random_logits(seed=3)
    c = Comparison()
    c.update(a, b, y)
    r, o = c.result(), oracle(a, b, y)
    dp, diff = o["dp"], o["nll_o"] - o["nll_r"]
    assert r.delta_p_mean == pytest.approx(dp.mean(), rel=1e-9)
    assert r.delta_p_se == pytest.approx(se(dp), rel=1e-9)
    for q, value in r.delta_p_percentiles.items():
        assert value == pytest.approx(np.percentile(dp, q), rel=1e-9, abs=1e-15)
    rms = np.sqrt((dp**2).mean())
    assert r.rms_delta_p == pytest.approx(rms, rel=1e-9)
    assert r.rms_delta_p_se == pytest.approx(se(dp**2) / (2 * rms), rel=1e-9)
    assert r.ppl_reference == pytest.approx(np.exp(o["nll_r"].mean()), rel=1e-9)
    assert r.ppl_other == pytest.approx(np.exp(o["nll_o"].mean()), rel=1e-9)
    assert r.ppl_ratio == pytest.approx(np.exp(diff.mean()), rel=1e-9)
    # the ratio's uncertainty includes the correlation: sqrt(se_o^2 + se_r^2 - 2 cov / n) = se(diff)
    assert r.ln_ppl_ratio_se == pytest.approx(se(diff), rel=1e-9)
    assert r.ppl_ratio_se == pytest.approx(np.exp(diff.mean()) * se(diff), rel=1e-9)
    assert r.ln_ppl_correlation == pytest.approx(np.corrcoef(o["nll_o"], o["nll_r"])[0, 1], rel=1e-9)
    ppl_o, ppl_r = r.ppl_other, r.ppl_reference
    cov = np.cov(o["nll_o"], o["nll_r"])[0, 1] / len(y)
    expected = np.sqrt((ppl_o * se(o["nll_o"])) ** 2 + (ppl_r * se(o["nll_r"])) ** 2 - 2 * ppl_o * ppl_r * cov)
    assert r.ppl_difference_se == pytest.approx(expected, rel=1e-9)


def test_reverse_reports_kl_of_other_from_reference():
    a, b, _ = random_logits()
    c = Comparison(reverse=True)
    c.update(a, b)
    r = c.result()
    assert r.direction == "KL(other || reference)"
    assert r.kld_mean == pytest.approx(oracle(a, b)["kld_reverse"].mean(), rel=1e-10)


def test_percentiles_from_the_sketch_stay_within_the_stated_error():
    a, b, _ = random_logits(n=3000, v=32, noise=0.7, seed=5)
    c = Comparison(exact_limit=100, relative_accuracy=0.01)
    for lo in range(0, 3000, 500):
        c.update(a[lo:lo + 500], b[lo:lo + 500])
    r, kld = c.result(), np.sort(oracle(a, b)["kld"])
    assert r.percentile_error == 0.01
    for q, value in r.kld_percentiles.items():
        rank = q / 100 * (len(kld) - 1)
        bound = 0.01 * max(abs(kld[int(np.floor(rank))]), abs(kld[int(np.ceil(rank))])) * (1 + 1e-9) + 1e-30
        assert abs(value - np.percentile(kld, q)) <= bound


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=300),
       st.sampled_from([1e-3, 1e-2, 0.05]), st.integers(0, 50))
def test_sketch_percentiles_are_within_relative_error_of_order_statistics(values, accuracy, limit):
    x = np.array(values)
    sketch = QuantileSketch(accuracy, exact_limit=limit)
    for part in np.array_split(x, 3):
        sketch.update(part)
    s = np.sort(x)
    qs = np.array([0, 0.1, 1, 5, 10, 25, 50, 75, 90, 99, 99.9, 100])
    for q, value in zip(qs, sketch.percentiles(qs), strict=False):
        rank = q / 100 * (len(s) - 1)
        bound = accuracy * max(abs(s[int(np.floor(rank))]), abs(s[int(np.ceil(rank))])) * (1 + 1e-9) + 1e-30
        assert abs(value - np.percentile(s, q)) <= bound


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 60), min_size=1, max_size=5), st.integers(0, 1000))
def test_any_split_into_chunks_gives_the_same_statistics(sizes, seed):
    n = sum(sizes)
    a, b, y = random_logits(n=n, v=12, seed=seed)
    whole, parts = Comparison(), Comparison()
    whole.update(a, b, y)
    lo = 0
    for size in sizes:
        parts.update(a[lo:lo + size], b[lo:lo + size], y[lo:lo + size])
        lo += size
    r, s = whole.result(), parts.result()
    assert s.n_tokens == r.n_tokens == n
    for name in ("kld_mean", "kld_se", "js_mean", "tvd_mean", "same_top_p", "ppl_ratio", "delta_p_mean", "rms_delta_p"):
        assert getattr(s, name) == pytest.approx(getattr(r, name), rel=1e-9, abs=1e-15)


def test_kld_is_zero_for_identical_models_and_the_same_under_a_logit_shift():
    a, _, y = random_logits()
    c = Comparison()
    c.update(a, a + 3.0, y)
    r = c.result()
    assert abs(r.kld_mean) < 1e-12 and r.same_top_p == 1 and r.top_k_overlap[10] == 1
    assert r.ppl_ratio == pytest.approx(1.0) and r.rms_delta_p < 1e-12


def test_mask_drops_tokens_and_ignore_index_drops_only_label_statistics():
    a, b, y = random_logits(n=50)
    mask = np.arange(50) % 3 != 0
    labels = y.copy()
    labels[:10] = -100
    c = Comparison()
    c.update(a, b, labels, mask=mask)
    r, o = c.result(), oracle(a[mask], b[mask])
    assert r.n_tokens == mask.sum()
    assert r.kld_mean == pytest.approx(o["kld"].mean())
    assert r.n_labelled == (mask & (labels != -100)).sum()


def test_batch_sequence_chunks_give_the_per_position_curve():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(3, 7, 20))
    b = a + 0.5 * rng.normal(size=a.shape)
    c = Comparison()
    c.update(a, b)
    c.update(a[:, :4], b[:, :4])
    r = c.result()
    kld = oracle(a.reshape(-1, 20), b.reshape(-1, 20))["kld"].reshape(3, 7)
    expected = np.concatenate([(kld[:, :4].sum(0) * 2) / 6, kld[:, 4:].mean(0)])
    np.testing.assert_allclose(r.kld_by_position, expected, rtol=1e-10)
    np.testing.assert_array_equal(r.tokens_by_position, [6, 6, 6, 6, 3, 3, 3])


def test_torch_and_mixed_inputs_give_the_numpy_numbers():
    torch = pytest.importorskip("torch")
    a, b, y = random_logits(n=100)
    expected = Comparison()
    expected.update(a, b, y)
    for ref, oth, lab in ((torch.tensor(a), torch.tensor(b), torch.tensor(y)), (a, torch.tensor(b), y),
                          (torch.tensor(a, dtype=torch.bfloat16), torch.tensor(b, dtype=torch.bfloat16), y)):
        c = Comparison()
        c.update(ref, oth, lab)
        rel = 1e-9 if ref.dtype != torch.bfloat16 else 0.2
        assert c.result().kld_mean == pytest.approx(expected.result().kld_mean, rel=rel)


def test_vocab_size_truncates_both_sides():
    a, b, y = random_logits(v=40)
    c = Comparison(vocab_size=32)
    c.update(a[:, :32], np.concatenate([b[:, :32], np.zeros((400, 8))], -1), y % 32)
    assert c.result().kld_mean == pytest.approx(oracle(a[:, :32], b[:, :32])["kld"].mean())


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda a, b, y: Comparison().update(a, b[:, :60]), "vocabulary of 64 but other_logits has 60; pass vocab_size=60"),
        (lambda a, b, y: Comparison(vocab_size=100).update(a, b), "vocab_size=100 is larger than"),
        (lambda a, b, y: Comparison().update(a, b[:-1]), "other_logits has (399,); both must score the same tokens"),
        (lambda a, b, y: Comparison().update(a[0], b[0]), "pass (tokens, vocab) or (batch, sequence, vocab)"),
        (lambda a, b, y: Comparison().update(a, b, y + 64), "is not a token id of a vocabulary of 64"),
        (lambda a, b, y: Comparison().update(a, b, y[:-1]), "labels has shape (399,) but the logits hold tokens"),
        (lambda a, b, y: Comparison().update(a, b, mask=np.ones(5, bool)), "mask has shape (5,)"),
        (lambda a, b, y: Comparison().result(), "no tokens compared yet"),
        (lambda a, b, y: Comparison().update(np.where(np.eye(400, 64) > 0, np.nan, a), b), "reference_logits[0, 0] is NaN"),
    ],
)
def test_mistakes_raise_one_clear_message(make, message):
    a, b, y = random_logits()
    with pytest.raises(ValueError) as error:
        make(a, b, y)
    assert message in str(error.value)


@pytest.mark.parametrize(
    "settings, error, message",
    [
        (dict(reverse=1), TypeError, "reverse must be True or False, got 1"),
        (dict(vocab_size=True), TypeError, "vocab_size must be a positive integer or None, got True"),
        (dict(vocab_size=0), ValueError, "vocab_size must be a positive integer or None, got 0"),
        (dict(top_k=5), TypeError, "top_k must be a non-empty tuple of positive integers, got 5"),
        (dict(top_k=(5, 0)), ValueError, "top_k must be a non-empty tuple of positive integers, got 0"),
        (dict(relative_accuracy="x"), TypeError, "relative_accuracy must be a number in (0, 1), got 'x'"),
        (dict(relative_accuracy=1.0), ValueError, "relative_accuracy must lie in (0, 1), got 1.0"),
        (dict(exact_limit=2.5), TypeError, "exact_limit must be an int >= 0, got 2.5"),
        (dict(exact_limit=True), TypeError, "exact_limit must be an int >= 0, got True"),
    ],
)
def test_bad_settings_raise_one_clear_message(settings, error, message):
    with pytest.raises(error) as raised:
        Comparison(**settings)
    assert message in str(raised.value)


def test_changing_vocabulary_between_chunks_is_refused():
    a, b, _ = random_logits()
    c = Comparison()
    c.update(a, b)
    with pytest.raises(ValueError, match="earlier chunks had 64"):
        c.update(a[:, :32], b[:, :32])


def test_result_serialises_to_json_without_nan_objects():
    import json

    a, b, y = random_logits(n=20)
    c = Comparison()
    c.update(a, b, y)
    data = json.loads(json.dumps(c.result().to_dict()))
    assert data["n_tokens"] == 20 and data["kld_percentiles"]["50.0"] > 0


def test_ppl_ratio_is_zero_where_only_the_reference_gives_the_label_probability_zero():
    a, b, y = random_logits(n=30)
    a[3, y[3]] = -np.inf  # the reference rules the observed token out; the other model does not
    c = Comparison()
    c.update(a, b, y)
    r = c.result()
    assert r.ppl_reference == np.inf and r.ln_ppl_ratio == -np.inf and r.ppl_ratio == 0.0
    assert np.isfinite(r.ppl_other) and np.isfinite(r.kld_mean)  # P = 0 where Q > 0: KL(P ‖ Q) stays finite
    swapped = Comparison()
    swapped.update(b, a, y)
    s = swapped.result()
    assert s.ppl_ratio == np.inf and s.ln_ppl_ratio == np.inf and s.kld_mean == np.inf


def test_no_divergence_is_ever_negative_for_identical_or_shifted_models():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(300, 1000)).astype(np.float32)
    c = Comparison()
    c.update(a, a + np.float32(7.0))
    r = c.result()
    assert min(r.kld_percentiles.values()) >= 0 and r.kld_mean >= 0 and r.js_mean >= 0 and r.tvd_mean >= 0


@pytest.mark.parametrize("n, text", [(1, "need at least 2 tokens"), (7, "llama.cpp reports them as 0 for 10 tokens"),
                                     (50, "llama.cpp prints no summary below 100 tokens"), (200, None)])
def test_few_tokens_are_reported_with_a_note_on_how_llama_cpp_differs(n, text):
    a, b, y = random_logits(n=n)
    c = Comparison()
    c.update(a, b, y)
    r = c.result()
    notes = [note for note in r.notes if "token" in note and "position" not in note]
    assert (text in notes[0]) if text else not notes
    if n > 1:
        assert r.kld_se == pytest.approx(se(oracle(a, b)["kld"]), rel=1e-10)


def test_tokens_without_positions_stay_out_of_the_curve_and_say_so():
    a, b, y = random_logits(n=40)
    flat = Comparison()
    flat.update(a, b, y)
    r = flat.result()
    assert r.kld_by_position.size == 0 and any("(N, V) input has no positions" in note for note in r.notes)
    mixed = Comparison()
    mixed.update(a, b, y)
    mixed.update(a[:20].reshape(2, 10, 64), b[:20].reshape(2, 10, 64))
    m = mixed.result()
    np.testing.assert_array_equal(m.tokens_by_position, [2] * 10)
    kld = oracle(a[:20], b[:20])["kld"].reshape(2, 10)
    np.testing.assert_allclose(m.kld_by_position, kld.mean(0), rtol=1e-10)
    assert any("covers the 20 tokens of (B, T, V) chunks, not the 40" in note for note in m.notes)
