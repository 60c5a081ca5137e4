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
    assert f"90% interval: [{expected.ci[0]:.6g}, {expected.ci[1]:.6g}]" in out
    assert "adaptive k-NN" in out


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
