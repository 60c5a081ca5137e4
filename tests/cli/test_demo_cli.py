"""`kldiv demo` on the command line: the output folder rules, as one-line errors before anything runs."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from cli_runs import run  # noqa: E402


def test_demo_refuses_a_non_empty_folder_it_did_not_make_with_one_line_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "thesis.tex").write_text("years of work")
    code, out, err = run(["demo", "--out", str(tmp_path)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--force" in err and "Traceback" not in err
    assert out == "" and [p.name for p in tmp_path.iterdir()] == ["thesis.tex"]


def test_demo_with_force_still_refuses_a_run_folder_it_did_not_make(tmp_path, capsys):
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "model.safetensors").write_text("someone's model")
    code, _, err = run(["demo", "--out", str(tmp_path), "--force"], capsys)
    assert code == 2 and "vae" in err and "never overwrites" in err
    assert (tmp_path / "vae" / "model.safetensors").read_text() == "someone's model"


def test_demo_discrete_only_prints_the_worked_examples_and_writes_nothing(tmp_path, capsys):
    code, out, _ = run(["demo", "--discrete-only", "--out", str(tmp_path / "d")], capsys)
    assert code == 0 and "A fair die against a loaded one" in out and "KL(Q‖P) = ∞" in out
    assert not (tmp_path / "d").exists()
