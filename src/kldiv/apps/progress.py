"""Progress of a training run: a live bar on a terminal, whole lines when the output is piped or redirected.

The remaining time is the number of steps left times an exponentially smoothed time per step (weight 0.1 per
observation, so one slow step — an evaluation, a checkpoint — moves it by a tenth, not all the way), and it is
shown only once a few steps have been timed.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

SMOOTHING = 0.1  # weight of each new observation of the time per step
WARMUP_STEPS = 3  # steps timed before an ETA is shown


def format_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


class SmoothedETA:
    """Exponentially smoothed seconds per step, and the time left for the steps remaining."""

    def __init__(self, total: int, completed: int = 0):
        self.total, self.completed = total, completed
        self.per_step: float | None = None
        self.timed = 0
        self._last = time.perf_counter()

    def advance(self, steps: int = 1, now: float | None = None) -> None:
        now = time.perf_counter() if now is None else now
        elapsed, self._last = now - self._last, now
        self.completed += steps
        if steps <= 0:
            return
        observed = elapsed / steps
        self.per_step = observed if self.per_step is None else (1 - SMOOTHING) * self.per_step + SMOOTHING * observed
        self.timed += steps

    def remaining(self) -> float | None:
        if self.per_step is None or self.timed < WARMUP_STEPS:
            return None
        return self.per_step * max(0, self.total - self.completed)

    def text(self) -> str:
        left = self.remaining()
        return "ETA --" if left is None else f"ETA {format_duration(left)}"


class Progress:
    """``with Progress(title, total, completed, enabled=...) as bar:`` then ``bar.advance()`` per step and
    ``bar.note(stats)`` after each evaluation. On a terminal: a Rich bar; otherwise one full line per note."""

    def __init__(self, title: str, total: int, completed: int = 0, *, enabled: bool = True, stream: TextIO | None = None):
        self.title, self.total, self.enabled = title, total, enabled
        self.stream = sys.stdout if stream is None else stream
        self.eta = SmoothedETA(total, completed)
        self.stats = ""
        self._bar: Any = None
        self._task: Any = None
        isatty = getattr(self.stream, "isatty", None)
        self.live = enabled and bool(isatty and isatty())

    def __enter__(self) -> Progress:
        if self.live:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}", markup=False), TextColumn("{task.fields[eta]}"),
                console=Console(file=self.stream),
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(self.title, total=self.total, completed=self.eta.completed, stats="",
                                            eta=self.eta.text())
        return self

    def advance(self, steps: int = 1) -> None:
        self.eta.advance(steps)
        if self._bar is not None:
            self._bar.update(self._task, advance=steps, eta=self.eta.text())

    def note(self, stats: str) -> None:
        self.stats = stats
        if self._bar is not None:
            self._bar.update(self._task, stats=stats)
        elif self.enabled:
            line = f"{self.title}: {self.eta.completed}/{self.total}  {stats}  {self.eta.text()}"
            print(line, file=self.stream, flush=True)

    def message(self, text: str) -> None:
        """One line above the bar (or on the stream when piped)."""
        if self._bar is not None:
            self._bar.console.print(text, highlight=False, markup=False)
        elif self.enabled:
            print(text, file=self.stream, flush=True)

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
