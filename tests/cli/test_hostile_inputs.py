"""The command line under hostile input: every case ends in exit status 2 and one line in the command line's own
words, never a traceback or a hang; help that tells the truth."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.stats

from kldiv.cli import main


def run(capsys, *args):
    try:
        main(list(args))
        code = 0
    except SystemExit as done:
        code = done.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def refused(capsys, *args):
    code, out, err = run(capsys, *args)
    assert code == 2, (out, err)
    assert err.startswith("kldiv: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and "Error(" not in err
    return err


def kl_json(capsys, *args):
    code, out, err = run(capsys, "compute", *args, "-m", "kl", "--json")
    assert code == 0, err
    return json.loads(out)["measures"]["kl"]["P||Q"]


def npy_bytes(array):
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


# --- files that are not what their name says ---------------------------------------------------------------------


def test_an_npz_renamed_npy_is_named_as_an_archive(tmp_path, capsys):
    np.savez(tmp_path / "x.npz", a=np.ones(2) / 2)
    os.rename(tmp_path / "x.npz", tmp_path / "x.npy")
    err = refused(capsys, "compute", str(tmp_path / "x.npy"), "0.5,0.5")
    assert "is an .npz archive" in err and "kldiv reads a .npy" in err


@pytest.mark.parametrize("kind", ["npz", "pt"])
def test_npz_and_torch_files_get_the_list_of_formats_read(tmp_path, capsys, kind):
    path = tmp_path / f"x.{kind}"
    if kind == "npz":
        np.savez(path, a=np.ones(2) / 2)
    else:
        torch = pytest.importorskip("torch")
        torch.save(torch.tensor([0.5, 0.5]), path)
    err = refused(capsys, "compute", str(path), "0.5,0.5")
    assert ".npy" in err and ".csv" in err and ".json" in err
    assert "header length" not in err and "runs past" not in err
    assert ("torch.save" in err) if kind == "pt" else ("numpy.savez" in err)


@pytest.mark.parametrize("damage", ["garbage", "unclosed", "truncated", "length"])
def test_a_damaged_npy_header_is_one_line(tmp_path, capsys, damage):
    data = bytearray(npy_bytes(np.array([0.5, 0.5])))
    start = data.index(b"{")
    if damage == "garbage":
        data[start + 3 : start + 9] = b"((((()"
    elif damage == "unclosed":  # NumPy's header parser raises tokenize.TokenError on this one
        data[start] = ord("(")
        data[data.index(b"}")] = ord(" ")
    elif damage == "truncated":
        data = data[: start + 20]
    else:
        data[8:10] = (60000).to_bytes(2, "little")  # a header length past the end of the file
    (tmp_path / "x.npy").write_bytes(bytes(data))
    err = refused(capsys, "compute", str(tmp_path / "x.npy"), "0.5,0.5")
    assert "x.npy" in err and "damaged .npy" in err


def test_a_text_file_named_npy_is_not_called_pickled(tmp_path, capsys):
    (tmp_path / "p.npy").write_text("0.5,0.5\n")
    err = refused(capsys, "compute", str(tmp_path / "p.npy"), "0.5,0.5")
    assert "pickle" not in err and "holds text" in err and ".csv" in err


def test_an_object_array_is_refused_without_unpickling(tmp_path, capsys):
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    err = refused(capsys, "compute", str(tmp_path / "o.npy"), "0.5,0.5")
    assert "never loads pickles" in err


@pytest.mark.parametrize("content", [b"", npy_bytes(np.zeros(0))], ids=["zero-bytes", "empty-array"])
def test_an_empty_npy_is_exit_2_not_interrupted(tmp_path, capsys, content):
    (tmp_path / "e.npy").write_bytes(content)
    err = refused(capsys, "compute", str(tmp_path / "e.npy"), "0.5,0.5")
    assert "interrupted" not in err and ("empty" in err or "no numbers" in err)


def test_deeply_nested_json_is_one_line(tmp_path, capsys):
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    err = refused(capsys, "compute", str(tmp_path / "deep.json"), "0.5,0.5")
    assert "nested too deeply" in err
    (tmp_path / "ragged.json").write_text("[[0.5, 0.5], [1]]")
    assert "not a rectangular array" in refused(capsys, "compute", str(tmp_path / "ragged.json"), "0.5,0.5")


def test_a_missing_file_of_any_suffix_is_a_missing_file(capsys):
    for name in ("p.parquet", "data/p", "p.pt"):
        err = refused(capsys, "compute", name, "0.5,0.5")
        assert f"file {name!r} does not exist" in err and "not a number" not in err


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_is_refused_without_hanging(tmp_path):
    fifo = tmp_path / "p.npy"
    os.mkfifo(fifo)
    done = subprocess.run([sys.executable, "-m", "kldiv", "compute", str(fifo), "0.5,0.5"], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 2 and "not a regular file" in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_estimate_refuses_hostile_files_in_one_line_too(tmp_path, capsys):
    np.savez(tmp_path / "x.npz", a=np.ones((5, 2)))
    os.rename(tmp_path / "x.npz", tmp_path / "x.npy")
    (tmp_path / "deep.json").write_text("[" * 50_000 + "]" * 50_000)
    assert "archive" in refused(capsys, "estimate", str(tmp_path / "x.npy"), str(tmp_path / "x.npy"))
    assert "nested too deeply" in refused(capsys, "estimate", str(tmp_path / "deep.json"), str(tmp_path / "deep.json"))


# --- inputs that are fine and must be read -----------------------------------------------------------------------------


def test_a_csv_with_a_header_row_is_read(tmp_path, capsys):
    (tmp_path / "p.csv").write_text("a,b,c\n0.2,0.3,0.5\n")
    (tmp_path / "q.tsv").write_text("x\ty\tz\n0.1\t0.1\t0.8\n")
    assert kl_json(capsys, str(tmp_path / "p.csv"), str(tmp_path / "q.tsv")) == pytest.approx(
        scipy.stats.entropy([0.2, 0.3, 0.5], [0.1, 0.1, 0.8]), rel=1e-12)


def test_inline_lists_longer_than_a_file_name_are_read(capsys):
    rng = np.random.default_rng(0)
    p, q = rng.dirichlet(np.ones(300)), rng.dirichlet(np.ones(300))
    p_text, q_text = ",".join(repr(float(v)) for v in p), ",".join(repr(float(v)) for v in q)
    assert len(p_text) > 4096
    assert kl_json(capsys, p_text, q_text) == pytest.approx(scipy.stats.entropy(p, q), rel=1e-10)


def test_normalize_divides_weights_by_their_sum(capsys):
    assert kl_json(capsys, "1,2,7", "3,3,4", "--normalize") == pytest.approx(
        scipy.stats.entropy([1, 2, 7], [3, 3, 4]), rel=1e-12)
    assert "--normalize" in refused(capsys, "compute", "1,2", "1,1", "--normalize", "--from-logits")


# --- messages in the command line's words ------------------------------------------------------------------------


def test_an_unnormalised_input_is_told_about_normalize_and_from_logits(capsys):
    err = refused(capsys, "compute", "1,2", "0.5,0.5")
    assert "P does not sum to 1" in err and "--normalize" in err and "--from-logits" in err
    assert "from_logits=True" not in err and "kldiv.normalize" not in err


def test_a_negative_probability_points_at_from_logits(capsys):
    err = refused(capsys, "compute", "0.5,0.5", "-0.5,1.5")
    assert "Q[0] = -0.5 is negative" in err and "--from-logits" in err


def test_messages_name_the_real_axis(capsys):
    assert "along axis 1" in refused(capsys, "compute", "0.5,0.2;0.5,0.9", "0.5,0.5;0.5,0.5")
    assert "along axis 0" in refused(capsys, "compute", "0.5,0.2;0.5,0.9", "0.5,0.5;0.5,0.5", "--axis", "0")
    assert "--axis 3 is out of range" in refused(capsys, "compute", "0.5,0.5", "0.5,0.5", "--axis", "3")
    assert "--base must be" in refused(capsys, "compute", "0.5,0.5", "0.5,0.5", "--base", "-3")


# --- help that tells the truth --------------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [(), ("train",)])
def test_bare_kldiv_and_kldiv_train_print_help_without_an_error_line(capsys, args):
    code, out, err = run(capsys, *args)
    assert code == 0 and "error" not in err
    assert "Usage: kldiv" in out and "Commands:" in out


def test_version_and_short_help(capsys):
    from kldiv import __version__

    assert run(capsys, "--version")[:2] == (0, f"kldiv {__version__}\n")
    code, out, _ = run(capsys, "compute", "-h")
    assert code == 0 and "Usage: kldiv compute" in out


def test_help_shows_defaults_and_boolean_flags_as_flags(capsys):
    _, out, _ = run(capsys, "train", "vae", "--help")
    flat = " ".join(out.split())
    assert "[default: 30]" in flat and "[default: 256]" in flat and "[default: runs/vae]" in flat
    resume = next(line for line in out.splitlines() if line.strip().startswith("--resume"))
    assert "bool" not in resume.lower() and "--no-resume" not in out
    _, out, _ = run(capsys, "compute", "--help")
    assert "[default: -1]" in " ".join(out.split())
    logits = next(line for line in out.splitlines() if line.strip().startswith("--from-logits"))
    assert "bool" not in logits.lower()


def test_every_command_has_help_without_markup_residue(capsys):
    for args in (("compute",), ("estimate",), ("train", "vae"), ("train", "lm"), ("distill",), ("compare",),
                 ("demo",)):
        code, out, err = run(capsys, *args, "--help")
        assert code == 0, err
        assert "[/" not in out and "[bold" not in out


def test_progress_lines_are_whole_when_piped(tmp_path, capsys):
    pytest.importorskip("torch")
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 60)
    code, out, err = run(capsys, "train", "lm", "--text", str(text), "--steps", "6", "--eval-every", "2", "--embed", "8",
                         "--hidden", "16", "--seq-len", "16", "--batch-size", "4", "--eval-chars", "300",
                         "--out", str(tmp_path / "run"))
    assert code == 0, err
    lines = [line for line in out.splitlines() if line.startswith("char GRU steps:")]
    assert [line.split()[3] for line in lines] == ["2/6", "4/6", "6/6"]
    for line in lines:
        assert "heldout_perplexity" in line and "ETA" in line and "…" not in line
        perplexity = float(line.split("heldout_perplexity")[1].split()[0])
        assert math.isfinite(perplexity) and perplexity > 1
