"""`kldiv compare REF OTHER`: the table, --json, --plot, --reverse, --vocab-size and one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_runs import run

from kldiv.compare import save_reference


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    a = (3 * rng.normal(size=(2, 16, 40))).astype(np.float32)
    b = (a + 0.3 * rng.normal(size=a.shape)).astype(np.float32)
    labels = rng.integers(0, 40, (2, 16))
    save_reference(tmp_path / "ref", a, labels=labels, format="quantized")
    np.save(tmp_path / "other.npy", b)
    np.save(tmp_path / "labels.npy", labels)
    np.save(tmp_path / "wide.npy", np.concatenate([b, b[..., :3]], -1))
    return tmp_path


def test_table_reads_like_llama_cpp_and_states_direction_and_format(files, capsys):
    code, out, err = run(["compare", str(files / "ref"), str(files / "other.npy")], capsys)
    assert code == 0, err
    for text in ("Mean PPL(other)/PPL(reference)", "Mean KLD", "99.9% KLD", "Median KLD", "Minimum KLD", "RMS Δp",
                 "Same top p", "Top-5 overlap", "Top-10 overlap", "Mean JS", "Mean TVD", "KL(reference || other)",
                 "quantized (measured error"):
        assert text in out


def test_json_output_matches_the_library_and_reverse_flips_direction(files, capsys):
    from kldiv.compare import compare_files

    code, out, _ = run(["compare", str(files / "ref"), str(files / "other.npy"), "--json", "--reverse",
                        "--labels", str(files / "labels.npy")], capsys)
    data = json.loads(out)
    expected = compare_files(files / "ref", files / "other.npy", reverse=True)
    assert code == 0 and data["direction"] == "KL(other || reference)"
    assert data["kld_mean"] == pytest.approx(expected.kld_mean) and data["n_labelled"] == 32


def test_plot_writes_a_png(files, capsys):
    code, _, err = run(["compare", str(files / "ref"), str(files / "other.npy"), "--plot", str(files / "p.png")], capsys)
    assert code == 0, err
    assert (files / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_vocabulary_mismatch_is_one_line_naming_the_flag_and_vocab_size_fixes_it(files, capsys):
    code, out, err = run(["compare", str(files / "ref"), str(files / "wide.npy")], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "vocabulary of 40 but" in err and "pass --vocab-size 40" in err
    code, out, _ = run(["compare", str(files / "ref"), str(files / "wide.npy"), "--vocab-size", "40"], capsys)
    assert code == 0 and "Mean KLD" in out


def test_truncated_file_is_one_line_naming_file_and_offset(files, capsys):
    data = (files / "other.npy").read_bytes()
    (files / "cut.npy").write_bytes(data[:2000])
    code, _, err = run(["compare", str(files / "ref"), str(files / "cut.npy")], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "cut.npy: byte offset 2000: the file ends at byte 2000" in err and "Traceback" not in err


@pytest.mark.parametrize("argv_tail, message", [
    (["missing.npy"], "missing.npy does not exist"),
    (["other.npy", "--labels", "nolabels.npy"], "--labels: file"),
])
def test_missing_files_are_one_line_errors(files, capsys, argv_tail, message):
    argv = ["compare", str(files / "ref")] + [str(files / a) if a.endswith(".npy") else a for a in argv_tail]
    code, _, err = run(argv, capsys)
    assert code == 2 and message in err and err.count("\n") == 1


def test_labels_of_the_wrong_size_are_refused(files, capsys):
    np.save(files / "few.npy", np.zeros(5, dtype=np.int64))
    code, _, err = run(["compare", str(files / "ref"), str(files / "other.npy"), "--labels", str(files / "few.npy")], capsys)
    assert code == 2 and "labels has 5 entries but" in err and "holds 32 tokens" in err


def test_a_damaged_reference_chunk_is_one_line_naming_the_file(files, capsys):
    chunk = files / "ref" / "chunk-000000.safetensors"
    data = bytearray(chunk.read_bytes())
    data[-7] ^= 0x40  # one bit of the last code
    chunk.write_bytes(bytes(data))
    code, out, err = run(["compare", str(files / "ref"), str(files / "other.npy")], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "chunk-000000.safetensors: its bytes do not match the SHA-256" in err


def test_tokens_without_positions_are_said_in_the_report_and_the_plot(files, capsys):
    rng = np.random.default_rng(1)
    a = rng.normal(size=(30, 40)).astype(np.float32)
    save_reference(files / "flat", a, labels=rng.integers(0, 40, 30))
    np.save(files / "flat.npy", a + np.float32(0.1) * rng.normal(size=a.shape).astype(np.float32))
    code, out, err = run(["compare", str(files / "flat"), str(files / "flat.npy"), "--plot", str(files / "f.png")],
                         capsys)
    assert code == 0, err
    assert "(N, V) input has no positions" in out and "llama.cpp prints no summary below 100" in out
    assert (files / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
