"""`kldiv train gan`: a tiny run end to end, the non-empty-folder refusal, one-line errors."""

import json

import pytest

pytest.importorskip("torch")

from cli_runs import run  # noqa: E402

TINY = ["--steps", "20", "--eval-every", "10", "--no-fresh-critic", "--quiet"]




def test_train_gan_writes_plots_and_metrics_and_reports_the_js(tmp_path, capsys):
    out = tmp_path / "gan"
    code, stdout, err = run(["train", "gan", *TINY, "--out", str(out)], capsys)
    assert code == 0, err
    rows = json.loads((out / "metrics.json").read_text())
    assert [row["step"] for row in rows] == [0, 10, 20]
    assert f"true JS(data, generator) {rows[-1]['true_js']:.4f} nats" in stdout
    assert (out / "js.png").is_file() and (out / "samples.png").is_file()


def test_train_gan_refuses_a_non_empty_folder_and_keeps_its_files(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    code, _, err = run(["train", "gan", *TINY, "--out", str(tmp_path)], capsys)
    # a folder of the user's own files is refused and never offered --force (the run-folder rules)
    assert code == 2 and "is not empty" in err and "not a kldiv run folder" in err and "--force" not in err
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("option, message", [(["--steps", "0"], "--steps must be >= 1"),
                                             (["--spread", "-1"], "--spread must be a finite number > 0")])
def test_train_gan_bad_options_are_one_line_errors(tmp_path, capsys, option, message):
    code, _, err = run(["train", "gan", "--quiet", "--out", str(tmp_path / "g"), *option], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "g").exists()
