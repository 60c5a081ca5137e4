"""The examples in examples/keras at a tiny size, on the Keras backend of this process (see test_keras.py): each
runs, prints what it shows, and its figures agree with their oracles."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

EXAMPLES = Path(__file__).parent.parent.parent / "examples" / "keras"
BACKEND = keras.backend.backend()


def run(name, *argv):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(["--tiny", *argv])


def test_gradient_tape_example_agrees_with_kldiv_grad(capsys):
    if BACKEND != "tensorflow":
        pytest.skip("the GradientTape example is TensorFlow's")
    report = run("gradient_tape")
    assert "GradientTape" in capsys.readouterr().out
    np.testing.assert_allclose(report["kl"], report["kl_float64_direct_sum"], rtol=1e-12)
    np.testing.assert_allclose(report["kl_in_tf_function"], report["kl"], rtol=1e-12)
    assert report["max_grad_error_vs_kldiv_grad"] < 1e-12 and report["max_grad_error_vs_closed_form"] < 1e-12
    assert report["max_grad_error_tf_function"] < 1e-12


def test_dense_autoencoder_example_penalty_is_the_closed_form(capsys):
    report = run("dense_autoencoder")
    assert "sparse" in capsys.readouterr().out
    for key in ("plain", "sparse"):
        np.testing.assert_allclose(report[f"{key}_penalty_kldiv"], report[f"{key}_penalty_closed_form"], rtol=1e-9)
        assert np.isfinite(report[f"{key}_test_bce"])


def test_vae_example_writes_its_pngs_and_reports_the_elbo(tmp_path, capsys):
    report = run("vae_digits", "--out", str(tmp_path))
    assert "ELBO" in capsys.readouterr().out
    for png in report["pngs"]:
        assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    np.testing.assert_allclose(report["test_kl_nats"], sum(report["kl_per_dimension"]), atol=0.01)
    assert report["test_negative_elbo_nats"] > report["test_reconstruction_nats"] > 0


def test_char_gru_example_distils_and_generates(capsys):
    report = run("char_gru_distillation")
    assert "distilled" in capsys.readouterr().out
    assert report["student_distilled_kl_from_teacher_bits"] >= 0 and report["teacher_bits_per_char"] > 0
    assert report["teacher_sample"].startswith("def ") and len(report["student_sample"]) == 44
