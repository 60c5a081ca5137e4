"""The kldiv command: compute and demo end to end, and one-line errors with exit status 2."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from kldiv.cli import main


def run(capsys, *args):
    with pytest.raises(SystemExit) as done:
        main(list(args))
    out = capsys.readouterr()
    return done.value.code, out.out, out.err


def run_ok(capsys, *args):
    try:
        main(list(args))
    except SystemExit as done:
        assert done.code in (0, None), capsys.readouterr()
    return capsys.readouterr().out


def test_compute_json_reports_both_directions_against_the_library(capsys):
    out = run_ok(capsys, "compute", "0.1,0.9", "0.9,0.1", "--json")
    payload = json.loads(out)
    assert payload["measures"]["kl"]["P||Q"] == pytest.approx(0.1 * math.log(1 / 9) + 0.9 * math.log(9))
    assert payload["measures"]["kl"]["Q||P"] == pytest.approx(payload["measures"]["kl"]["P||Q"])
    assert set(payload["measures"]) >= {"kl", "js", "tvd", "hellinger", "cross_entropy", "skew_kl", "renyi"}


def test_compute_explains_an_infinity(capsys):
    out = run_ok(capsys, "compute", "0.8,0.2,0", "0,0.5,0.5", "-m", "kl", "--base", "2")
    assert "Q gives 0 to index 0 where P gives 0.8, so KL(P‖Q) = ∞" in out
    assert "∞" in out


def test_compute_reads_files(tmp_path, capsys):
    np.save(tmp_path / "p.npy", np.array([[0.5, 0.5], [0.9, 0.1]]))
    (tmp_path / "q.csv").write_text("0.5,0.5\n0.5,0.5\n")
    (tmp_path / "q.json").write_text("[[0.5, 0.5], [0.5, 0.5]]")
    for q in ("q.csv", "q.json"):
        payload = json.loads(run_ok(capsys, "compute", str(tmp_path / "p.npy"), str(tmp_path / q), "--json", "-m", "kl"))
        assert payload["measures"]["kl"]["P||Q"] == pytest.approx([0.0, 0.9 * math.log(1.8) + 0.1 * math.log(0.2)])


def test_compute_from_logits(capsys):
    payload = json.loads(run_ok(capsys, "compute", "0,0", "0,-inf", "--from-logits", "--json", "-m", "kl"))
    assert payload["measures"]["kl"]["P||Q"] == "inf"
    assert payload["measures"]["kl"]["Q||P"] == pytest.approx(math.log(2))


@pytest.mark.parametrize(
    "args,message",
    [
        (("compute", "missing.npy", "0.5,0.5"), "P: file 'missing.npy' does not exist"),
        (("compute", "0.5,abc", "0.5,0.5"), "P: 'abc' is not a number"),
        (("compute", "0.5,0.5", "0.2,0.3,0.5"), "P has 2 and Q has 3"),
        (("compute", "-0.5,1.5", "0.5,0.5"), "P[0] = -0.5 is negative"),
        (("compute", "0.5,0.6", "0.5,0.5"), "P does not sum to 1"),
        (("compute", "0.5,0.5", "0.5,0.5", "-m", "nope"), "unknown measure 'nope'"),
        (("compute", "0.5,0.5"), "Missing argument"),
        (("compute", "0.5,0.5", "0.5,0.5", "--base", "1"), "base must be a positive finite number"),
    ],
)
def test_bad_input_prints_one_line_and_exits_2(capsys, args, message):
    code, out, err = run(capsys, *args)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_pickle_npy_is_refused(tmp_path, capsys):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    code, _, err = run(capsys, "compute", str(tmp_path / "obj.npy"), "0.5,0.5")
    assert code == 2 and "never loads pickles" in err


def test_demo_runs_the_tour_quickly():
    code = "from rich.console import Console; from kldiv.cli.demo import discrete_tour; discrete_tour(Console(width=100))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for text in ("fair die", "(0.1, 0.9)", "not symmetric", "H(P, Q) − H(P)", "∞", "pairwise"):
        assert text in done.stdout
