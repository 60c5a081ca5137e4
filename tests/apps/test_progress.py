"""Progress reports: the smoothed ETA against its closed form, and whole lines when the output is not a terminal."""

from __future__ import annotations

import io

import pytest

from kldiv.apps.progress import SMOOTHING, WARMUP_STEPS, Progress, SmoothedETA, format_duration


def test_eta_is_the_exponentially_smoothed_time_per_step_times_the_steps_left():
    eta = SmoothedETA(total=100, completed=10)
    now = 0.0
    eta._last = now
    durations = [1.0, 1.0, 9.0, 1.0, 1.0]  # one slow step (an evaluation)
    expected = None
    for d in durations:
        now += d
        eta.advance(1, now=now)
        expected = d if expected is None else (1 - SMOOTHING) * expected + SMOOTHING * d
    assert eta.per_step == pytest.approx(expected, rel=1e-12)
    assert eta.remaining() == pytest.approx(expected * (100 - 15), rel=1e-12)
    # the slow step moved the estimate by a tenth of its excess, not to 9 s per step
    assert eta.per_step < 1 + 8 * SMOOTHING


def test_eta_is_unknown_until_a_few_steps_are_timed():
    eta = SmoothedETA(total=10)
    eta._last = 0.0
    for i in range(WARMUP_STEPS - 1):
        eta.advance(1, now=float(i + 1))
        assert eta.remaining() is None and eta.text() == "ETA --"
    eta.advance(1, now=float(WARMUP_STEPS))
    assert eta.text() == f"ETA {format_duration(10 - WARMUP_STEPS)}"


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (59.4, "59s"), (61, "1m01s"), (3600 * 2 + 65, "2h01m")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_piped_progress_writes_whole_lines_of_any_length():
    stream = io.StringIO()
    stats = "  ".join(f"metric_{i} {i / 7:.3g}" for i in range(20))  # far wider than 80 columns
    with Progress("steps", 4, 0, stream=stream) as bar:
        for _ in range(4):
            bar.advance()
            bar.note(stats)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4 and all(line.startswith(f"steps: {i + 1}/4  {stats}  ETA") for i, line in enumerate(lines))


def test_disabled_progress_writes_nothing():
    stream = io.StringIO()
    with Progress("steps", 2, stream=stream, enabled=False) as bar:
        bar.advance()
        bar.note("x 1")
    assert stream.getvalue() == ""
