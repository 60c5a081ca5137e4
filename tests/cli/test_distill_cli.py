"""`kldiv distill` end to end on a tiny teacher: report values against direct formulas, every divergence, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from kldiv.apps import charlm, runs  # noqa: E402
from kldiv.apps import distill as distill_app  # noqa: E402

from .test_train_cli import rows, run, without_time  # noqa: E402

STUDENT = ["--embed", "8", "--hidden", "12", "--seq-len", "16", "--batch-size", "4", "--eval-chars", "300", "--quiet"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    folder = tmp_path_factory.mktemp("teacher")
    text = folder / "corpus.txt"
    text.write_text("def add(a, b):\n    return a + b\n\nprint(add(1, 2))\n" * 40)
    config = charlm.LMConfig(text=str(text), embed=8, hidden=24, seq_len=16, batch_size=8, steps=30, eval_every=30,
                             eval_chars=300)
    charlm.train(config, folder / "run", progress=False)
    return folder / "run"


def ok(argv, capsys):
    code, out, err = run(argv, capsys)
    assert code == 0, err
    return out


def test_distill_report_matches_direct_formulas_on_the_saved_models(teacher, tmp_path, capsys):
    out = ok(["distill", "--teacher", str(teacher), "--steps", "4", "--eval-every", "2", "--out", str(tmp_path), *STUDENT],
             capsys)
    assert "KL(teacher ‖ student)" in out
    report = json.loads((tmp_path / "report.json").read_text())
    teacher_model, vocab, teacher_config = charlm.load_trained(teacher)
    student, _, config = charlm.load_trained(tmp_path)
    ids = vocab.encode(charlm.load_corpus(teacher_config["text"], teacher_config["max_chars"], 16))
    inputs, targets = charlm.heldout_windows(ids[int(len(ids) * 0.9):], 16, 300)
    with torch.no_grad():
        t = torch.log_softmax(teacher_model(inputs)[0].double(), -1).numpy().reshape(-1, len(vocab))
        s = torch.log_softmax(student(inputs)[0].double(), -1).numpy().reshape(-1, len(vocab))
    kl = np.mean(np.sum(np.exp(t) * (t - s), axis=1))
    perplexity = np.exp(-np.mean(s[np.arange(len(s)), targets.reshape(-1).numpy()]))
    agreement = np.mean(t.argmax(1) == s.argmax(1))
    assert report["kl_to_teacher"] == pytest.approx(kl, rel=1e-5)
    assert report["heldout_perplexity"] == pytest.approx(perplexity, rel=1e-4)
    assert report["agreement"] == pytest.approx(agreement)
    for name in ("heldout.png", "teacher_gap.png", "samples.txt", "metrics.csv", "model.safetensors"):
        assert (tmp_path / name).is_file()


@pytest.mark.parametrize("divergence", distill_app.DIVERGENCES)
def test_every_divergence_trains_to_finite_numbers(teacher, tmp_path, divergence):
    config = distill_app.DistillConfig(teacher=str(teacher), divergence=divergence, temperature=2.0, embed=8,
                                       hidden=12, seq_len=16, batch_size=4, steps=2, eval_every=2, eval_chars=200)
    report = distill_app.distill(config, tmp_path, progress=False)
    assert np.isfinite(report["kl_to_teacher"]) and report["kl_to_teacher"] >= 0
    assert 0 <= report["agreement"] <= 1


def test_top_k_teacher_and_hard_label_mix_run_and_report_the_smaller_teacher_storage(teacher, tmp_path, capsys):
    ok(["distill", "--teacher", str(teacher), "--steps", "2", "--top-k", "3", "--hard-label-weight", "0.3",
        "--out", str(tmp_path), *STUDENT], capsys)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["teacher_logit_bytes_per_batch"] == 4 * 16 * 3 * 12
    assert report["dense_teacher_logit_bytes_per_batch"] > report["teacher_logit_bytes_per_batch"]


def test_hard_label_weight_one_trains_from_scratch_without_the_teacher(teacher, tmp_path):
    config = distill_app.DistillConfig(teacher=str(teacher), hard_label_weight=1.0, embed=8, hidden=12, seq_len=16,
                                       batch_size=4, steps=2, eval_every=2, eval_chars=200)
    report = distill_app.distill(config, tmp_path, progress=False)
    assert report["method"] == "from scratch (cross-entropy only)"
    assert "distill_loss" not in rows(tmp_path)[0]


def test_interrupted_distillation_resumes_to_the_same_numbers(teacher, tmp_path, capsys):
    config = dict(teacher=str(teacher), embed=8, hidden=12, seq_len=16, batch_size=4, steps=4, eval_every=2,
                  eval_chars=200)
    distill_app.distill(distill_app.DistillConfig(**config), tmp_path / "straight", progress=False)

    def interrupt(step):
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        distill_app.distill(distill_app.DistillConfig(**config), tmp_path / "cut", progress=False, on_step=interrupt)
    assert json.loads((tmp_path / "cut" / "state.json").read_text())["status"] == "interrupted"
    assert runs.load_checkpoint(tmp_path / "cut")["step"] == 2
    ok(["distill", "--resume", "--out", str(tmp_path / "cut"), "--quiet"], capsys)
    assert without_time(rows(tmp_path / "cut")) == without_time(rows(tmp_path / "straight"))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--divergence", "wasserstein"], "--divergence must be one of kl, reverse_kl"),
        (["--temperature", "0"], "--temperature must be > 0"),
        (["--hard-label-weight", "1.5"], "--hard-label-weight must be in [0, 1]"),
        (["--top-k", "0"], "--top-k must be >= 1"),
        (["--top-k", "100000"], "vocabulary has only"),
        (["--beta", "2"], "--beta must be in [0, 1]"),
        (["--steps", "0"], "--steps must be >= 1"),
    ],
)
def test_bad_distill_options_give_one_line_and_exit_2(teacher, tmp_path, capsys, options, message):
    code, _, err = run(["distill", "--teacher", str(teacher), "--out", str(tmp_path / "run"), *options], capsys)
    assert code == 2 and err.startswith("kldiv: error: ") and err.strip().count("\n") == 0
    assert message in err


def test_a_folder_that_is_not_a_train_lm_run_is_rejected(tmp_path, capsys):
    (tmp_path / "teacher").mkdir()
    code, _, err = run(["distill", "--teacher", str(tmp_path / "teacher"), "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and "is not a `kldiv train lm` run folder" in err
