"""The demo tour's report and the run-folder utilities."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from kldiv.apps import runs, tour  # noqa: E402


def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    runs.atomic_write_text(tmp_path / "a.txt", "one")
    runs.atomic_write_text(tmp_path / "a.txt", "two")
    assert (tmp_path / "a.txt").read_text() == "two"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_metrics_json_writes_non_finite_values_as_null_and_csv_keeps_scalars(tmp_path):
    runs.write_metrics(tmp_path, [{"a": 1.0, "b": float("nan"), "c": [1, 2]}])
    assert '"b": null' in (tmp_path / "metrics.json").read_text()
    assert (tmp_path / "metrics.csv").read_text() == "a,b\n1.0,nan\n"


def test_demo_quick_writes_html_and_markdown_reports_with_the_plots(tmp_path, monkeypatch):
    from rich.console import Console

    monkeypatch.setattr(tour, "QUICK", {**tour.QUICK, "teacher_steps": 4, "student_steps": 2, "vae_epochs": 1,
                                        "max_chars": 6000, "eval_chars": 300})
    report = tour.run_tour(Console(quiet=True), tmp_path, quick=True)
    html, md = report.read_text(), (tmp_path / "report.md").read_text()
    for text in (html, md):
        assert "vae/latent_map.png" in text and "distilled/teacher_gap.png" in text
        assert "from scratch (cross-entropy only)" in text
    assert (tmp_path / "vae" / "latent_map.png").is_file() and (tmp_path / "distilled" / "teacher_gap.png").is_file()
