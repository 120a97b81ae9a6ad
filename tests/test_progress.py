"""hwkit.progress: on a terminal a live bar; in a log (CI, a pipe) plain lines a reader can follow."""

from __future__ import annotations

import io

from rich.console import Console
from rich.progress import Progress

from hwkit.progress import LineProgress, progress_bar, spinner


def test_a_log_gets_lines_and_a_terminal_gets_the_live_bar():
    log = io.StringIO()
    console = Console(file=log, force_terminal=False, width=80)
    bar = progress_bar(console, "img")
    assert isinstance(bar, LineProgress)
    bar.every = 0.0  # a line at every advance
    with bar:
        task = bar.add_task("rendering", total=10)
        for _ in range(4):
            bar.advance(task, 2)
        bar.update(task, advance=2, description="rendered")
    lines = log.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines] == ["rendering: 2/10", "rendering: 4/10", "rendering: 6/10",
                                                      "rendering: 8/10", "rendered: 10/10", "rendered: 10/10"]
    assert "img/s" in lines[-1] and "\x1b" not in log.getvalue()  # no escape codes in a log
    terminal = progress_bar(Console(file=io.StringIO(), force_terminal=True), "img")
    assert type(terminal) is Progress


def test_a_quiet_bar_logs_only_its_end():
    log = io.StringIO()
    with progress_bar(Console(file=log, force_terminal=False), "img") as bar:  # LOG_EVERY: 30 s between lines
        task = bar.add_task("eval", total=3)
        for _ in range(3):
            bar.advance(task)
    assert log.getvalue().splitlines()[0].startswith("eval: 3/3")
    assert len(log.getvalue().splitlines()) == 1


def test_spinner_messages_become_lines_in_a_log():
    log = io.StringIO()
    with spinner(Console(file=log, force_terminal=False), "export") as status:
        status.update("checking ONNX against PyTorch")
    assert log.getvalue().splitlines() == ["… export", "… checking ONNX against PyTorch"]
    quiet = io.StringIO()
    with spinner(Console(file=quiet, force_terminal=False), "export"):
        pass  # e.g. refused before any work: nothing but the error is printed
    assert quiet.getvalue() == ""
