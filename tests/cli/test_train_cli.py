"""`kldiv train vae` / `kldiv train lm` end to end with tiny settings: run folders, diagnostics, Ctrl-C, --resume, errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cli_runs import run  # noqa: E402

from kldiv.apps import runs  # noqa: E402
from kldiv.apps import vae as vae_app  # noqa: E402

TINY_VAE = ["--hidden", "16", "--batch-size", "256", "--quiet"]
TINY_LM = ["--embed", "8", "--hidden", "16", "--seq-len", "16", "--batch-size", "4", "--max-chars", "6000",
           "--eval-chars", "400", "--quiet"]




def ok(argv, capsys):
    code, out, err = run(argv, capsys)
    assert code in (0, None), err
    return out


def rows(folder):
    return json.loads((folder / "metrics.json").read_text())


def without_time(history):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


# --- VAE / AE ------------------------------------------------------------------------------------------


def test_train_vae_writes_metrics_plots_and_weights(tmp_path, capsys):
    out = ok(["train", "vae", "--epochs", "2", "--out", str(tmp_path), *TINY_VAE], capsys)
    assert "active units" in out and str(tmp_path) in out
    for name in ("metrics.csv", "metrics.json", "model.safetensors", "checkpoint.pt", "config.json", "loss.png",
                 "kl_per_dimension.png", "reconstructions.png", "samples.png", "latent_map.png"):
        assert (tmp_path / name).is_file(), name
    history = rows(tmp_path)
    assert [r["epoch"] for r in history] == [1, 2]
    assert all(math.isfinite(r["heldout_elbo"]) for r in history)
    assert (tmp_path / "metrics.csv").read_text().count("\n") == 3
    assert json.loads((tmp_path / "state.json").read_text())["status"] == "finished"


def test_run_folder_diagnostics_match_a_direct_numpy_computation_from_the_saved_weights(tmp_path, capsys):
    ok(["train", "vae", "--epochs", "2", "--latent", "3", "--out", str(tmp_path), *TINY_VAE], capsys)
    config = vae_app.VAEConfig(**json.loads((tmp_path / "config.json").read_text()))
    data = vae_app.load_data(config.data, config.likelihood, config.seed)
    model = vae_app.MLPVAE(64, 3, 16)
    model.load_state_dict(runs.load_weights(tmp_path / "model.safetensors"))
    with torch.no_grad():
        mean, log_var = (t.double().numpy() for t in model.encode(data.heldout))
    kl_dims = (0.5 * (mean**2 + np.exp(log_var) - log_var - 1)).mean(axis=0)
    last = rows(tmp_path)[-1]
    np.testing.assert_allclose(last["kl_per_dimension"], kl_dims, rtol=1e-5)
    assert last["heldout_kl"] == pytest.approx(kl_dims.sum(), rel=1e-5)
    assert last["active_units"] == int((mean.var(axis=0) > 0.01).sum())


def test_train_vae_with_the_same_seed_gives_the_same_numbers(tmp_path, capsys):
    args = ["train", "vae", "--epochs", "2", "--schedule", "cyclical", "--free-bits", "0.1", *TINY_VAE]
    ok([*args, "--out", str(tmp_path / "a")], capsys)
    ok([*args, "--out", str(tmp_path / "b")], capsys)
    assert without_time(rows(tmp_path / "a")) == without_time(rows(tmp_path / "b"))


def test_train_ae_has_no_kl_term(tmp_path, capsys):
    ok(["train", "vae", "--model", "ae", "--epochs", "1", "--out", str(tmp_path), *TINY_VAE], capsys)
    row = rows(tmp_path)[0]
    assert row["heldout_kl"] is None and row["heldout_recon"] > 0
    assert not (tmp_path / "kl_per_dimension.png").exists()


def test_train_vae_on_a_user_npy_with_gaussian_likelihood_and_capacity(tmp_path, capsys):
    data = np.random.default_rng(0).normal(size=(60, 5)).astype(np.float32)
    np.save(tmp_path / "x.npy", data)
    ok(["train", "vae", "--data", str(tmp_path / "x.npy"), "--likelihood", "gaussian", "--capacity", "2",
        "--beta", "5", "--epochs", "2", "--out", str(tmp_path / "run"), *TINY_VAE], capsys)
    history = rows(tmp_path / "run")
    assert history[-1]["capacity"] == pytest.approx(2.0 * (2 - 1) / 2)  # C rises linearly over the 2 steps
    assert (tmp_path / "run" / "latent_map.png").is_file() and not (tmp_path / "run" / "samples.png").exists()


def test_interrupt_mid_epoch_leaves_the_last_completed_epoch_and_resume_matches_an_uninterrupted_run(tmp_path, capsys):
    config = dict(hidden=16, batch_size=256, epochs=3, latent=2)
    straight = tmp_path / "straight"
    straight.mkdir()
    vae_app.train(vae_app.VAEConfig(**config), straight, progress=False)

    cut = tmp_path / "cut"
    cut.mkdir()

    def interrupt(step):
        if step == 9:  # 7 steps per epoch: the middle of epoch 2
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        vae_app.train(vae_app.VAEConfig(**config), cut, progress=False, on_step=interrupt)
    assert json.loads((cut / "state.json").read_text()) == {"status": "interrupted", "epoch": 1, "epochs": 3}
    assert [r["epoch"] for r in rows(cut)] == [1]
    assert (cut / "metrics.csv").read_text().count("\n") == 2
    assert runs.load_checkpoint(cut)["epoch"] == 1
    assert not list(cut.glob(".*.tmp"))

    ok(["train", "vae", "--resume", "--out", str(cut), "--quiet"], capsys)
    assert without_time(rows(cut)) == without_time(rows(straight))
    a, b = runs.load_weights(straight / "model.safetensors"), runs.load_weights(cut / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_ctrl_c_in_the_command_exits_130_with_a_resume_hint(tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(vae_app, "train", interrupted)
    code, _, err = run(["train", "vae", "--out", str(tmp_path), "--quiet"], capsys)
    assert code == 130
    assert err.strip().count("\n") == 0 and "--resume" in err


def test_resume_with_more_epochs_continues_training(tmp_path, capsys):
    ok(["train", "vae", "--epochs", "1", "--out", str(tmp_path), *TINY_VAE], capsys)
    ok(["train", "vae", "--resume", "--epochs", "2", "--out", str(tmp_path), "--quiet"], capsys)
    assert [r["epoch"] for r in rows(tmp_path)] == [1, 2]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--beta", "-1"], "--beta must be a finite number >= 0"),
        (["--free-bits", "-0.5"], "--free-bits must be a finite number >= 0"),
        (["--latent", "0"], "--latent must be >= 1"),
        (["--epochs", "0"], "--epochs must be >= 1"),
        (["--model", "gan"], "--model must be 'vae' or 'ae'"),
        (["--schedule", "exponential"], "--schedule must be constant, linear or cyclical"),
        (["--ramp", "cubic"], "--ramp must be linear, cosine or sigmoid"),
        (["--ratio", "0"], "--ratio must be in (0, 1]"),
        (["--free-bits-mode", "token"], "--free-bits-mode must be 'batch' or 'sample'"),
        (["--capacity", "-1"], "--capacity must be a finite number >= 0"),
        (["--capacity", "5", "--free-bits", "0.1"], "give one of them"),
        (["--data", "missing.npy"], "does not exist"),
        (["--data", "pictures.png"], "must be 'digits' or a .npy file"),
        (["--resume"], "start a new run without --resume"),
    ],
)
def test_bad_vae_options_give_one_line_and_exit_2(tmp_path, capsys, options, message):
    code, _, err = run(["train", "vae", "--out", str(tmp_path / "run"), *options], capsys)
    assert code == 2
    assert err.startswith("kldiv: error: ") and err.strip().count("\n") == 0
    assert message in err


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros(10), "expected (samples, features) or (samples, height, width)"),
        (np.zeros((2, 3, 4, 5)), "expected (samples, features)"),
        (np.zeros((1, 4)), "need at least 2 samples"),
        (np.full((5, 4), 3.0), "the Bernoulli likelihood needs [0, 1]"),
        (np.array([[0.1, np.nan], [0.2, 0.3]]), "NaN"),
        (np.array([["a", "b"]]), "not numbers"),
    ],
)
def test_npy_of_the_wrong_shape_or_values_gives_one_line_and_exit_2(tmp_path, capsys, array, message):
    np.save(tmp_path / "x.npy", array)
    code, _, err = run(["train", "vae", "--data", str(tmp_path / "x.npy"), "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and err.strip().count("\n") == 0
    assert message in err


def test_a_non_empty_out_folder_needs_resume_or_force(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("x")
    code, _, err = run(["train", "vae", "--out", str(tmp_path)], capsys)
    assert code == 2 and "not a kldiv run folder" in err and "another --out" in err
    assert (tmp_path / "keep.txt").read_text() == "x"
    run_folder = tmp_path / "run"
    assert run(["train", "vae", "--epochs", "1", "--out", str(run_folder), *TINY_VAE], capsys)[0] in (0, None)
    code, _, err = run(["train", "vae", "--out", str(run_folder)], capsys)
    assert code == 2 and "--resume" in err and "--force" in err


# --- character LM -------------------------------------------------------------------------------------------


def test_train_lm_on_the_stdlib_writes_report_samples_and_weights(tmp_path, capsys):
    out = ok(["train", "lm", "--steps", "4", "--eval-every", "2", "--out", str(tmp_path), *TINY_LM], capsys)
    assert "held-out perplexity" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert 1.0 < report["heldout_perplexity"] < report["vocab_size"] * 1.5
    assert [r["step"] for r in rows(tmp_path)] == [2, 4]
    for name in ("model.safetensors", "vocab.json", "samples.txt", "loss.png", "metrics.csv"):
        assert (tmp_path / name).is_file()


def test_stdlib_corpus_is_deterministic_and_capped():
    from kldiv.apps import charlm

    a, b = charlm.stdlib_text(5000), charlm.stdlib_text(5000)
    assert a == b and len(a) == 5000


def test_train_lm_on_a_text_file_and_resume_after_interrupt_matches_a_straight_run(tmp_path, capsys):
    from kldiv.apps import charlm

    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 60)
    config = dict(text=str(text), embed=8, hidden=16, seq_len=16, batch_size=4, steps=6, eval_every=2, eval_chars=300)
    straight, cut = tmp_path / "straight", tmp_path / "cut"
    straight.mkdir()
    cut.mkdir()
    charlm.train(charlm.LMConfig(**config), straight, progress=False)

    def interrupt(step):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        charlm.train(charlm.LMConfig(**config), cut, progress=False, on_step=interrupt)
    assert json.loads((cut / "state.json").read_text())["status"] == "interrupted"
    assert [r["step"] for r in rows(cut)] == [2]
    ok(["train", "lm", "--resume", "--out", str(cut), "--quiet"], capsys)
    assert without_time(rows(cut)) == without_time(rows(straight))


@pytest.mark.parametrize(
    ("content", "options", "message"),
    [
        (b"", [], "is empty"),
        (b"   \n", [], "is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00", [], "looks binary"),
        ("café latin-1 ".encode("latin-1") * 100, [], "not UTF-8"),
        (b"short text", [], "need at least"),
    ],
    ids=["empty", "blank", "binary", "latin-1", "too-short"],
)
def test_bad_text_files_give_one_line_and_exit_2(tmp_path, capsys, content, options, message):
    path = tmp_path / "corpus.txt"
    path.write_bytes(content)
    code, _, err = run(["train", "lm", "--text", str(path), "--out", str(tmp_path / "run"), *options], capsys)
    assert code == 2 and err.strip().count("\n") == 0
    assert message in err


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--steps", "0"], "--steps must be >= 1"),
        (["--hidden", "0"], "--hidden must be >= 1"),
        (["--learning-rate", "-1"], "--learning-rate must be > 0"),
        (["--text", "nowhere.txt"], "does not exist"),
    ],
)
def test_bad_lm_options_give_one_line_and_exit_2(tmp_path, capsys, options, message):
    code, _, err = run(["train", "lm", "--out", str(tmp_path / "run"), *options], capsys)
    assert code == 2 and err.strip().count("\n") == 0
    assert message in err


def test_train_lm_prints_a_time_estimate_after_its_first_steps(tmp_path, capsys):
    argv = ["train", "lm", *[a for a in TINY_LM if a != "--quiet"], "--steps", "25", "--eval-every", "25",
            "--out", str(tmp_path / "lm")]
    out = ok(argv, capsys)
    assert "s per step on this machine: the remaining 15 steps take about" in out


def test_train_vae_says_in_plain_words_whether_the_posterior_collapsed(tmp_path, capsys):
    out = ok(["train", "vae", *TINY_VAE, "--epochs", "1", "--out", str(tmp_path / "v")], capsys)
    last = rows(tmp_path / "v")[-1]
    assert " ".join(vae_app.diagnose(last)).split(":")[0] in out.replace("\n", " ")
