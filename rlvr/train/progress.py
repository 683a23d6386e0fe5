"""A rich progress bar for training loops: step count, rate, ETA and live metrics."""

from __future__ import annotations

import sys

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class StepBar:
    def __init__(self, name: str, total: int, start: int = 0, show: bool = True):
        self.progress = Progress(
            TextColumn(f"[bold]{name}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
            TextColumn("{task.fields[metrics]}"), disable=not (show and sys.stderr.isatty()), transient=False)
        self.task = self.progress.add_task(name, total=total, completed=start, metrics="")

    def __enter__(self) -> "StepBar":
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def set_total(self, total: int) -> None:
        """The run learned when it ends (e.g. pretraining's check): the bar's length follows."""
        self.progress.update(self.task, total=total)

    def warn(self, message: str) -> None:
        """A warning above the bar (printed to stderr when there is no bar)."""
        self.progress.console.print(f"[yellow]warning:[/] {message}")

    def update(self, step: int, **metrics: float) -> None:
        shown = " ".join(f"{k}={v:.3g}" for k, v in metrics.items())
        self.progress.update(self.task, completed=step, metrics=shown)
