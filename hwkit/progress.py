"""One progress look for every long command: on a terminal a live bar (count, rate, elapsed time, time
left) and a spinner; in a log (CI, `| tee`, a batch job) plain lines instead, a bar's at most every
`LOG_EVERY` seconds, since a live display there prints only its last frame when it ends."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class RateColumn(ProgressColumn):
    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        # completed / elapsed: rich's windowed speed jumps wildly when cached items finish at once
        elapsed = task.finished_time if task.finished else task.elapsed
        if not elapsed or not task.completed:
            return Text("")
        return Text(f"{task.completed / elapsed:,.1f} {self.unit}/s", style="progress.data.speed")


LOG_EVERY = 30.0


class LineProgress(Progress):
    """A Progress for consoles that are not terminals: no live display; a line per task at most every
    `every` seconds while it advances, and its last state when the progress stops."""

    def __init__(self, console: Console, unit: str, every: float = LOG_EVERY) -> None:
        super().__init__(console=console, disable=True)
        self.unit, self.every = unit, every
        self._logged: dict[TaskID, float] = {}

    def _line(self, task_id: TaskID) -> None:
        task = self._tasks[task_id]
        self._logged[task_id] = time.monotonic()
        total = f"/{task.total:,.0f}" if task.total is not None else ""
        rate = f", {task.completed / task.elapsed:,.1f} {self.unit}/s" if task.elapsed and task.completed else ""
        self.console.print(f"{task.description}: {task.completed:,.0f}{total}{rate}, {task.elapsed or 0:,.0f} s",
                       markup=False, highlight=False, soft_wrap=True)

    def _maybe_line(self, task_id: TaskID) -> None:
        if time.monotonic() - self._logged[task_id] >= self.every:
            self._line(task_id)

    def add_task(self, description: str, *args, **kwargs) -> TaskID:
        task_id = super().add_task(description, *args, **kwargs)
        self._logged[task_id] = time.monotonic()
        return task_id

    def update(self, task_id: TaskID, **kwargs) -> None:
        super().update(task_id, **kwargs)
        self._maybe_line(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._maybe_line(task_id)

    def stop(self) -> None:
        for task_id in self._logged:
            self._line(task_id)
        self._logged.clear()
        super().stop()


def progress_bar(console: Console, unit: str = "items") -> Progress:
    """A rich Progress: description, bar, n/total, rate in `unit`/s, elapsed and ETA; `LineProgress` when
    `console` is not a terminal."""
    if not console.is_terminal:
        return LineProgress(console, unit)
    return Progress(
        TextColumn("{task.description}", style="bold"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(unit),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
    )


class _LineStatus:
    """Stages as lines; the opening one waits for the first stage, so that an input error raised before
    any work prints as one line with nothing before it."""

    def __init__(self, console: Console, opening: str) -> None:
        self.console, self.pending = console, [opening]

    def update(self, message: str) -> None:
        for line in [*self.pending, message]:
            self.console.print(f"… {line}", markup=False, highlight=False, soft_wrap=True)
        self.pending = []


@contextmanager
def spinner(console: Console, message: str) -> Iterator:
    """`console.status(message)` on a terminal; elsewhere each message (this one and every `.update(msg)`)
    as a line of its own."""
    if console.is_terminal:
        with console.status(message) as live:
            yield live
    else:
        yield _LineStatus(console, message)
