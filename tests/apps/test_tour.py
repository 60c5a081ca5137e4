"""The demo tour: worked examples against SciPy, the report's rendering, the output folder's safety, a tiny run."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from scipy import special, stats

from kldiv.apps import tour
from kldiv.apps.errors import CommandError


def examples():
    return {example.title: example for example in tour.worked_examples()}


def test_worked_examples_quote_the_values_scipy_computes():
    ex = examples()
    fair, loaded = np.full(6, 1 / 6), np.array([0.1, 0.1, 0.1, 0.1, 0.1, 0.5])
    die = ex["A fair die against a loaded one"].values
    assert die["kl_pq"] == pytest.approx(stats.entropy(fair, loaded, base=2), rel=1e-12)
    assert die["kl_qp"] == pytest.approx(stats.entropy(loaded, fair, base=2), rel=1e-12)
    mixture = (fair + loaded) / 2
    assert die["js"] == pytest.approx(
        (stats.entropy(fair, mixture, base=2) + stats.entropy(loaded, mixture, base=2)) / 2, rel=1e-12
    )
    coin = ex["The coin"].values
    assert coin["kl_pq"] == pytest.approx(0.8 * np.log(9), rel=1e-12)  # 0.1 log(1/9) + 0.9 log 9
    assert coin["kl_qp"] == pytest.approx(coin["kl_pq"], rel=1e-12)
    asym = ex["KL is not symmetric"].values
    assert asym["kl_pq"] == pytest.approx(special.rel_entr([0.5, 0.5], [0.9, 0.1]).sum(), rel=1e-12)
    assert asym["kl_qp"] == pytest.approx(special.rel_entr([0.9, 0.1], [0.5, 0.5]).sum(), rel=1e-12)
    assert asym["surprise_tail"] == pytest.approx(-np.log(0.1), rel=1e-12)
    identity = ex["KL(P‖Q) = H(P, Q) − H(P)"].values
    assert identity["entropy"] == pytest.approx(np.log(6), rel=1e-12)
    assert identity["cross_entropy"] == pytest.approx(-np.sum(fair * np.log(loaded)), rel=1e-12)
    assert identity["kl"] == pytest.approx(die["kl_pq"] * np.log(2), rel=1e-12)
    zeros = ex["Zeros and an infinity"].values
    assert zeros["kl_pq"] == pytest.approx(np.log(2), rel=1e-12) and zeros["kl_qp"] == np.inf
    assert 0 < zeros["js"] < np.log(2)


def test_gradient_example_matches_finite_differences():
    values = examples()["The backward pass: gradients of KL from logits"].values
    x, y = np.array([2.0, 0.0, -1.0]), np.array([0.0, 1.0, 0.0])

    def kl(a, b):
        return stats.entropy(special.softmax(a), special.softmax(b))

    h = 1e-6
    for i in range(3):
        e = np.eye(3)[i] * h
        assert values[f"grad_x{i}"] == pytest.approx((kl(x + e, y) - kl(x - e, y)) / (2 * h), abs=1e-7)
        assert values[f"grad_y{i}"] == pytest.approx((kl(x, y + e) - kl(x, y - e)) / (2 * h), abs=1e-7)


def test_pairwise_example_is_the_matrix_of_scipy_kl_with_the_same_seed():
    values = examples()["A pairwise matrix"].values
    topics = np.random.default_rng(0).dirichlet(np.full(8, 0.5), size=4)
    for a in range(4):
        for b in range(4):
            assert values[f"kl_{a}{b}"] == pytest.approx(stats.entropy(topics[a], topics[b]), rel=1e-9, abs=1e-12)


def test_every_example_has_text_and_quotes_its_numbers():
    for example in tour.worked_examples():
        assert example.paragraphs and all(len(p) > 40 for p in example.paragraphs)
        text = " ".join(example.paragraphs)
        quoted = [v for v in example.values.values() if np.isfinite(v) and abs(v) > 1e-9]
        if example.table is None:  # the numbers must then be in the sentences
            assert all(f"{v:.4f}" in text or f"{v:.3f}" in text for v in quoted)


def test_inline_marks_render_as_html_and_everything_else_is_escaped():
    assert tour.inline_html("use `kl(p, q)` <now> **twice**") == (
        "use <code>kl(p, q)</code> &lt;now&gt; <strong>twice</strong>"
    )
    assert tour.inline_parts("no marks") == [("plain", "no marks")]


# --- the output folder --------------------------------------------------------------------------------


def test_a_non_empty_folder_kldiv_did_not_make_is_refused_and_left_untouched(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(CommandError, match="not made by kldiv demo.*--force"):
        tour.prepare_output(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_a_run_folder_kldiv_did_not_make_is_refused_even_with_force(tmp_path):
    (tmp_path / "teacher").mkdir()
    (tmp_path / "teacher" / "model.safetensors").write_text("a user's own run")
    with pytest.raises(CommandError, match="teacher.*never overwrites"):
        tour.prepare_output(tmp_path, force=True)
    assert (tmp_path / "teacher" / "model.safetensors").read_text() == "a user's own run"
    assert not (tmp_path / tour.MARKER).exists()


def test_a_file_where_the_folder_should_be_is_refused(tmp_path):
    (tmp_path / "out").write_text("x")
    with pytest.raises(CommandError, match="not a folder"):
        tour.prepare_output(tmp_path / "out")


def test_the_demo_reuses_its_own_folder_and_deletes_nothing(tmp_path):
    out = tmp_path / "demo"
    assert tour.prepare_output(out) == set()
    assert json.loads((out / tour.MARKER).read_text())["runs"] == list(tour.RUNS)
    (out / "vae").mkdir()
    (out / "vae" / "keep.txt").write_text("a file the user put there")
    (out / "notes.txt").write_text("another")
    assert tour.prepare_output(out) == {"vae"}  # a second `kldiv demo` into the same folder
    assert (out / "vae" / "keep.txt").read_text() == "a file the user put there"
    assert (out / "notes.txt").read_text() == "another"


def test_force_writes_into_a_non_empty_folder_without_removing_its_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    tour.prepare_output(tmp_path, force=True)
    assert (tmp_path / "notes.txt").read_text() == "mine" and (tmp_path / tour.MARKER).is_file()


# --- a tiny run of the whole tour ------------------------------------------------------------------------


def test_tiny_tour_writes_a_report_that_teaches_with_readable_curves(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from rich.console import Console

    monkeypatch.setattr(tour, "QUICK", {**tour.QUICK, "teacher_steps": 6, "student_steps": 6, "eval_every": 2,
                                        "vae_epochs": 1, "max_chars": 6000, "eval_chars": 300})
    report = tour.run_tour(Console(quiet=True), tmp_path, quick=True)
    page, md = report.read_text(), (tmp_path / "report.md").read_text()
    for title in ("fair die", "The coin", "not symmetric", "H(P, Q) − H(P)", "infinity", "pairwise matrix",
                  "posterior collapse", "What you just saw", "from scratch (cross-entropy only)"):
        assert title.lower() in page.lower() and title.lower() in md.lower()
    body = re.sub(r"<pre>.*?</pre>", "", page, flags=re.S)  # the generated Python sample may hold backticks
    assert "`" not in body and "**" not in body and "<code>kldiv.vae.gaussian_kl</code>" in page
    for src in re.findall(r'<img src="([^"]+)"', page):
        assert (tmp_path / src).is_file(), src
    assert 'src="comparison.png"' in page and 'src="vae/loss.png"' in page
    for name in ("teacher", "scratch", "distilled"):  # eval_every < steps: a curve, not one point
        assert len(json.loads((tmp_path / name / "metrics.json").read_text())) == 3
    assert (tmp_path / tour.MARKER).is_file()
    tour.run_tour(Console(quiet=True), tmp_path, quick=True)  # a second demo into its own folder: runs again
