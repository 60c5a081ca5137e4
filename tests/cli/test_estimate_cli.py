"""``kldiv estimate``: the library's k-NN estimate from files, and one-line errors with exit status 2."""

import json

import numpy as np
import pytest

from kldiv.cli import main
from kldiv.estimate import knn


def run(capsys, *args):
    code = 0
    try:
        main(list(args))
    except SystemExit as done:
        code = done.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def samples(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(400, 2)), rng.normal(size=(400, 2)) + 1
    np.save(tmp_path / "x.npy", x)
    np.savetxt(tmp_path / "y.csv", y, delimiter=",")
    return tmp_path, x, y


def test_estimate_json_equals_the_library_value(capsys, samples):
    path, x, y = samples
    code, out, _ = run(capsys, "estimate", str(path / "x.npy"), str(path / "y.csv"), "--k", "3", "--json", "--ci", "0")
    assert code == 0
    payload = json.loads(out)
    assert payload["kl"] == pytest.approx(knn(x, y, k=3).value)
    assert payload["ci"] is None and payload["n"] == 400 and payload["unit"] == "nats"


def test_estimate_prints_the_value_and_its_interval(capsys, samples):
    path, x, y = samples
    code, out, _ = run(capsys, "estimate", str(path / "x.npy"), str(path / "y.csv"), "--adaptive", "--ci", "0.9")
    assert code == 0
    expected = knn(x, y, adaptive=True, ci=0.9, seed=0)
    assert f"{expected.value:.6g}" in out
    assert f"90% interval for KL(P‖Q): [{expected.ci[0]:.6g}, {expected.ci[1]:.6g}]" in out
    assert f"estimated bias of that value: {expected.bias:+.2g}" in out
    assert "adaptive k-NN" in out


def test_estimate_standard_error_is_the_same_whatever_ci_says(capsys, samples):
    path, _, _ = samples
    errors = set()
    for level in ("0", "0.5", "0.95"):
        code, out, _ = run(capsys, "estimate", str(path / "x.npy"), str(path / "y.csv"), "--json", "--ci", level)
        assert code == 0
        errors.add(json.loads(out)["stderr"])
    assert len(errors) == 1


def test_estimate_discrete_is_the_plugin_estimator_on_category_counts(capsys, tmp_path):
    from kldiv.estimate import plugin

    rng = np.random.default_rng(1)
    x, y = rng.poisson(3, size=400), rng.poisson(4, size=500)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    code, out, _ = run(capsys, "estimate", str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), "--discrete", "--json")
    assert code == 0
    payload = json.loads(out)
    values = np.union1d(x, y)  # independent counting: one category per distinct value
    counts_p = np.array([(x == v).sum() for v in values], dtype=float)
    counts_q = np.array([(y == v).sum() for v in values], dtype=float)
    expected = plugin(counts_p, counts_q)
    assert payload["kl"] == pytest.approx(expected.value) and payload["stderr"] == pytest.approx(expected.stderr)
    assert payload["estimator"] == "plugin" and payload["categories"] == len(values) and payload["n"] == 400
    truth = 3 * np.log(3 / 4) + 4 - 3  # KL(Poisson(3) || Poisson(4))
    assert payload["ci"][0] < truth < payload["ci"][1]


def test_estimate_tied_samples_without_discrete_point_to_it(capsys, tmp_path):
    rng = np.random.default_rng(2)
    np.save(tmp_path / "x.npy", rng.poisson(3, size=300))
    np.save(tmp_path / "y.npy", rng.poisson(4, size=300))
    code, out, err = run(capsys, "estimate", str(tmp_path / "x.npy"), str(tmp_path / "y.npy"))
    assert code == 2 and out == ""
    assert "look discrete" in err and "--discrete" in err and len(err.strip().splitlines()) == 1


def test_estimate_discrete_unseen_category_suggests_a_pseudo_count(capsys, tmp_path):
    np.save(tmp_path / "x.npy", np.array([0, 1, 1, 2]))
    np.save(tmp_path / "y.npy", np.array([0, 0, 1, 1]))
    args = ("estimate", str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), "--discrete")
    code, _, err = run(capsys, *args)
    assert code == 2 and "--pseudo-count 0.5" in err
    code, out, _ = run(capsys, *args, "--pseudo-count", "0.5", "--json")
    assert code == 0 and json.loads(out)["correction"] == 0.5


def test_estimate_pseudo_count_needs_discrete(capsys, samples):
    path, _, _ = samples
    code, _, err = run(capsys, "estimate", str(path / "x.npy"), str(path / "y.csv"), "--pseudo-count", "1")
    assert code == 2 and "add --discrete" in err


def test_estimate_reports_duplicate_points_as_a_warning(capsys, tmp_path):
    np.save(tmp_path / "x.npy", np.array([0.0, 0.0, 1.0, 3.0, 4.0, 7.0]))
    np.save(tmp_path / "y.npy", np.array([0.5, 2.0, 5.0, 6.0]))
    code, _, err = run(capsys, "estimate", str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), "--ci", "0")
    assert code == 0 and "warning" in err and "tie group" in err


@pytest.mark.parametrize(
    "x, y, extra, message",
    [
        (np.zeros((5, 2)), np.zeros((5, 3)), [], "X has 2 dimension(s) per sample but Y has 3"),
        (np.array([[0.0, 1.0], [np.nan, 1.0], [2.0, 2.0]]), np.ones((3, 2)), [], "X row 1 contains NaN"),
        (np.arange(3.0), np.arange(10.0), ["--k", "3"], "X has 3 point(s) but k=3 needs at least k+1 = 4"),
        (np.arange(10.0), np.arange(10.0) + 0.5, ["--ci", "1.5"], "--ci must be a confidence level"),
        (np.arange(10.0), np.arange(10.0) + 0.5, ["--k", "0"], "k must be a positive integer"),
        (np.zeros(10), np.arange(10.0), [], "X has too few distinct points"),
    ],
)
def test_estimate_user_mistakes_are_one_line_errors_with_status_2(capsys, tmp_path, x, y, extra, message):
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    code, _, err = run(capsys, "estimate", str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), *extra)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 or "warning" in err
    assert "Traceback" not in err


def test_estimate_missing_file_is_a_one_line_error(capsys, tmp_path):
    code, _, err = run(capsys, "estimate", str(tmp_path / "nope.npy"), str(tmp_path / "y.npy"))
    assert code == 2 and "does not exist" in err
