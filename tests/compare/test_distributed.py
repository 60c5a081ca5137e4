"""compare_files(workers=N) / `kldiv compare --workers N`: N processes on torch.distributed (gloo, 127.0.0.1),
merged, give the one-process report (moments to 1e-12 relative, percentiles identical or within the sketch bound)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from compare_reference import oracle  # noqa: E402,I001

from kldiv.compare import Comparison, CorruptFileError, compare_files, save_reference

pytest.importorskip("torch.distributed")

MOMENTS = ("kld_mean", "kld_se", "js_mean", "js_se", "tvd_mean", "tvd_se", "same_top_p", "same_top_p_se",
           "delta_p_mean", "delta_p_se", "rms_delta_p", "ppl_reference", "ppl_other", "ppl_ratio", "ppl_ratio_se",
           "ln_ppl_correlation")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A reference of 3 chunks (sequences of 37 positions) and the other model as one .npy: 999 tokens."""
    folder = tmp_path_factory.mktemp("distributed")
    rng = np.random.default_rng(4)
    a = (2 * rng.normal(size=(27, 37, 48))).astype(np.float32)
    b = (a + 0.5 * rng.normal(size=a.shape)).astype(np.float32)
    y = rng.integers(0, 48, a.shape[:-1])
    for lo in range(0, 27, 9):
        save_reference(folder / "ref", a[lo:lo + 9], labels=y[lo:lo + 9])
    np.save(folder / "other.npy", b)
    return folder, a, b, y


def assert_same(merged, single, rel=1e-12):
    for name in MOMENTS:
        assert getattr(merged, name) == pytest.approx(getattr(single, name), rel=rel), name
    assert merged.n_tokens == single.n_tokens and merged.n_labelled == single.n_labelled
    np.testing.assert_allclose(merged.kld_by_position, single.kld_by_position, rtol=rel)
    np.testing.assert_array_equal(merged.tokens_by_position, single.tokens_by_position)
    assert merged.reference_format == single.reference_format


def test_two_workers_with_sketched_percentiles_equal_one_process(files):
    folder, a, b, _ = files
    make = lambda: Comparison(exact_limit=200, relative_accuracy=0.01)  # noqa: E731 - 999 tokens: the sketch
    single = compare_files(folder / "ref", folder / "other.npy", comparison=make())
    merged = compare_files(folder / "ref", folder / "other.npy", comparison=make(), workers=2)
    assert_same(merged, single)
    assert merged.percentile_error == single.percentile_error == 0.01
    assert merged.kld_percentiles == pytest.approx(single.kld_percentiles, rel=1e-12)  # the same buckets
    kld = np.sort(oracle(a.reshape(-1, 48), b.reshape(-1, 48))["kld"])
    for q, value in merged.kld_percentiles.items():
        rank = q / 100 * (kld.size - 1)
        bound = 0.01 * max(kld[int(np.floor(rank))], kld[int(np.ceil(rank))]) * (1 + 1e-6)
        assert abs(value - np.percentile(kld, q)) <= bound
    assert merged.kld_mean == pytest.approx(kld.mean(), rel=1e-6)  # float32 logits, float64 oracle


@pytest.mark.slow
def test_four_workers_with_given_labels_equal_one_process_and_report_progress(files):
    folder, _, _, y = files
    labels = np.roll(y.reshape(-1), 1)
    seen = []
    single = compare_files(folder / "ref", folder / "other.npy", labels=labels, reverse=True)
    merged = compare_files(folder / "ref", folder / "other.npy", labels=labels, reverse=True, workers=4,
                           progress=lambda done, total: seen.append((done, total)))
    assert_same(merged, single)
    assert merged.kld_percentiles == single.kld_percentiles and merged.percentile_error == 0  # exact: equal
    assert merged.delta_p_percentiles == single.delta_p_percentiles and merged.direction == "KL(other || reference)"
    assert seen[-1] == (999, 999) and all(done <= total == 999 for done, total in seen)


def test_a_damaged_file_in_one_workers_share_is_the_same_one_line_error(files, tmp_path):
    folder, _, b, _ = files
    broken = b.copy()
    broken[20, 30, 5] = np.nan  # token 770: in the last worker's share
    np.save(tmp_path / "broken.npy", broken)
    with pytest.raises(CorruptFileError, match=r"broken.npy: byte offset \d+: logit \[770, 5\] is NaN"):
        compare_files(folder / "ref", tmp_path / "broken.npy", workers=2)
    with pytest.raises(ValueError, match="workers must be a positive integer"):
        compare_files(folder / "ref", folder / "other.npy", workers=0)


@pytest.mark.slow
def test_cli_workers_flag_prints_the_one_process_report(files, capsys):
    from kldiv.cli import main

    folder = files[0]
    reports = []
    for extra in ([], ["--workers", "2"]):
        main(["compare", str(folder / "ref"), str(folder / "other.npy"), "--json", *extra])
        reports.append(json.loads(capsys.readouterr().out))
    single, merged = reports
    assert merged.keys() == single.keys()
    for key in ("kld_mean", "kld_se", "ppl_ratio", "same_top_p", "rms_delta_p"):
        assert merged[key] == pytest.approx(single[key], rel=1e-12)
    assert merged["kld_percentiles"] == single["kld_percentiles"]
