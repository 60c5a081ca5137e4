"""Comparison.merge and state_dict: a comparison split any way and merged equals one comparison of all tokens."""

from __future__ import annotations

import numpy as np
import pytest
from compare_reference import oracle, random_logits, se  # noqa: E402,I001
from hypothesis import given, settings
from hypothesis import strategies as st

from kldiv.compare import KLD_PERCENTILES, Comparison

MOMENTS = ("kld_mean", "kld_se", "js_mean", "js_se", "tvd_mean", "tvd_se", "same_top_p", "same_top_p_se",
           "delta_p_mean", "delta_p_se", "rms_delta_p", "rms_delta_p_se", "ppl_reference", "ppl_reference_se",
           "ppl_other", "ppl_ratio", "ppl_ratio_se", "ppl_difference_se", "ln_ppl_correlation")


def pieces(a, b, y, cuts, **options):
    """One Comparison per piece of the rows between consecutive ``cuts``."""
    out = []
    for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
        c = Comparison(**options)
        c.update(a[lo:hi], b[lo:hi], y[lo:hi])
        out.append(c)
    return out


def whole(a, b, y, **options):
    c = Comparison(**options)
    c.update(a, b, y)
    return c


def assert_same_report(merged, single, rel=1e-12):
    for name in MOMENTS:
        assert getattr(merged, name) == pytest.approx(getattr(single, name), rel=rel, abs=1e-300), name
    assert merged.n_tokens == single.n_tokens and merged.n_labelled == single.n_labelled
    assert merged.top_k_overlap == pytest.approx(single.top_k_overlap, rel=rel)
    np.testing.assert_allclose(merged.kld_by_position, single.kld_by_position, rtol=rel)
    np.testing.assert_array_equal(merged.tokens_by_position, single.tokens_by_position)


def test_merged_pieces_equal_the_numpy_oracle_and_one_comparison():
    a, b, y = random_logits(n=500)
    a, b, y = a.reshape(5, 100, 64), b.reshape(5, 100, 64), y.reshape(5, 100)  # sequences: a per-position curve
    first, second, third = pieces(a, b, y, [0, 1, 2, 5])
    merged = first.merge(second).merge(third).result()
    single, o = whole(a, b, y).result(), oracle(a.reshape(-1, 64), b.reshape(-1, 64), y.reshape(-1))
    assert_same_report(merged, single)
    assert merged.kld_mean == pytest.approx(o["kld"].mean(), rel=1e-12)
    assert merged.kld_se == pytest.approx(se(o["kld"]), rel=1e-12)
    assert merged.ln_ppl_ratio_se == pytest.approx(se(o["nll_o"] - o["nll_r"]), rel=1e-12)
    assert merged.percentile_error == 0
    for q in KLD_PERCENTILES:  # exact: the same values, so the same percentiles
        assert merged.kld_percentiles[q] == single.kld_percentiles[q] == pytest.approx(np.percentile(o["kld"], q))
    assert merged.delta_p_percentiles == single.delta_p_percentiles


def test_merge_returns_the_comparison_it_merged_into_and_an_empty_side_changes_nothing():
    a, b, y = random_logits(n=50)
    c = whole(a, b, y)
    before = c.result()
    assert c.merge(Comparison()) is c
    assert_same_report(c.result(), before, rel=0)
    assert_same_report(Comparison().merge(c).result(), before, rel=0)
    with pytest.raises(ValueError, match="no tokens compared yet"):
        Comparison().merge(Comparison()).result()


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 400), min_size=2, max_size=2), st.integers(0, 1000), st.sampled_from([0, 50, 10_000]))
def test_merge_is_associative_and_commutative_and_equals_one_comparison(cuts, seed, limit):
    """Any grouping of three pieces, in and beyond the sketch: moments to 1e-12, percentiles identical (while
    sketched both build the same buckets) and within the sketch's bound of the exact order statistics."""
    lo, hi = sorted(cuts)
    a, b, y = random_logits(n=400, v=24, noise=0.8, seed=seed)
    options = dict(exact_limit=limit, relative_accuracy=0.01)
    p, q, r = pieces(a, b, y, [0, lo, hi, 400], **options)
    s, t, u = pieces(a, b, y, [0, lo, hi, 400], **options)
    left = p.merge(q).merge(r).result()  # (p + q) + r
    right = u.merge(s.merge(t)).result()  # r + (p + q), grouped the other way
    single = whole(a, b, y, **options).result()
    for merged in (left, right):
        assert_same_report(merged, single)
        assert merged.kld_percentiles == pytest.approx(single.kld_percentiles, rel=1e-12)
        assert merged.delta_p_percentiles == pytest.approx(single.delta_p_percentiles, rel=1e-12, abs=1e-300)
        assert merged.percentile_error == single.percentile_error == (0 if limit == 10_000 else 0.01)
    kld = np.sort(oracle(a, b)["kld"])
    for q_, value in left.kld_percentiles.items():
        rank = q_ / 100 * (len(kld) - 1)
        bound = left.percentile_error * max(kld[int(np.floor(rank))], kld[int(np.ceil(rank))]) * (1 + 1e-9) + 1e-30
        assert abs(value - np.percentile(kld, q_)) <= bound + 1e-15


def test_state_dict_is_plain_arrays_and_round_trips_through_npz_and_safetensors(tmp_path):
    a, b, y = random_logits(n=300, v=20)
    for limit in (1 << 16, 100):  # exact percentiles, then the sketch
        c = whole(a.reshape(3, 100, 20), b.reshape(3, 100, 20), y.reshape(3, 100), exact_limit=limit, reverse=True,
                  top_k=(2, 7))
        state = c.state_dict()
        assert all(isinstance(v, np.ndarray) and v.dtype in (np.float64, np.int64) for v in state.values())
        np.savez(tmp_path / "state.npz", **state)
        with np.load(tmp_path / "state.npz", allow_pickle=False) as loaded:
            back = Comparison.from_state_dict(dict(loaded))
        assert_same_report(back.result(), c.result(), rel=0)
        assert back.result().kld_percentiles == c.result().kld_percentiles and back.reverse and back.top_k == (2, 7)
        safetensors_numpy = pytest.importorskip("safetensors.numpy")
        safetensors_numpy.save_file(state, str(tmp_path / "state.safetensors"))
        other = Comparison(exact_limit=limit, reverse=True, top_k=(2, 7))
        other.load_state_dict(safetensors_numpy.load_file(str(tmp_path / "state.safetensors")))
        assert_same_report(other.result(), c.result(), rel=0)
        # a restored comparison keeps accumulating exactly like the original
        other.update(a[:30], b[:30], y[:30])
        c.update(a[:30], b[:30], y[:30])
        assert_same_report(other.result(), c.result(), rel=0)


def test_state_dict_accepts_tensors_and_the_state_is_a_copy():
    torch = pytest.importorskip("torch")
    a, b, y = random_logits(n=40)
    c = whole(a, b, y)
    state = c.state_dict()
    expected = c.result()
    c.update(a, b, y)  # changing c does not change its earlier state
    back = Comparison.from_state_dict({key: torch.from_numpy(value) for key, value in state.items()})
    assert_same_report(back.result(), expected, rel=0)


@pytest.mark.parametrize("make, message", [
    (lambda c, s: c.merge(Comparison(reverse=True)), "the other comparison has reverse=True but this Comparison"),
    (lambda c, s: c.merge(Comparison(exact_limit=3)), "has exact_limit=3 but this Comparison has exact_limit=65536"),
    (lambda c, s: c.merge(Comparison(top_k=(3,))), "has top_k=(3,) but this Comparison has top_k=(5, 10)"),
    (lambda c, s: c.merge(s), "merge takes another Comparison, got dict"),
    (lambda c, s: Comparison(reverse=True).load_state_dict(s), "the state has reverse=False but this Comparison has "
                                                               "reverse=True; create the Comparison with reverse=False"),
    (lambda c, s: c.load_state_dict({k: v for k, v in s.items() if k != "tokens.mean"}), "missing tokens.mean"),
    (lambda c, s: c.load_state_dict({**s, "extra": np.zeros(1)}), "unknown extra"),
    (lambda c, s: c.load_state_dict({**s, "tokens.count": np.zeros(2, np.int64)}), "tokens.count is a int64 array "
                                                                                    "of shape (2,)"),
    (lambda c, s: c.load_state_dict({**s, "tokens.count": s["tokens.count"] + 1}), "kld_sketch.count differs"),
    (lambda c, s: c.load_state_dict({**s, "version": np.array(7)}), "the state has version 7"),
    (lambda c, s: c.load_state_dict([1, 2]), "the dict from Comparison.state_dict(), got list"),
])
def test_mismatched_merges_and_bad_states_are_one_clear_error(make, message):
    a, b, y = random_logits(n=30)
    c = whole(a, b, y)
    with pytest.raises((ValueError, TypeError)) as error:
        make(c, c.state_dict())
    assert message in str(error.value)


def test_merging_different_vocabularies_is_refused():
    a, b, y = random_logits(n=30)
    c, d = whole(a, b, y), whole(a[:, :32], b[:, :32], y % 32)
    with pytest.raises(ValueError, match="the other comparison has a vocabulary of 32 but this one has 64"):
        c.merge(d)
