"""hwkit.files: a SIGTERM'd command leaves no temporary folder behind, and report files a user made are
never replaced."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from hwkit import files
from hwkit.files import is_json_with, read_yaml, report_refusal
from synth.cli import app as synth_app

SCRIPT = """
import sys, time
from pathlib import Path
from hwkit.files import atomic_folder, exit_on_sigterm
exit_on_sigterm()
with atomic_folder(Path(sys.argv[1]) / "out", overwrite=False) as tmp:
    (tmp / "half.bin").write_bytes(b"x" * 1000)
    print("ready", flush=True)
    time.sleep(60)
"""


def test_sigterm_removes_the_temporary_folder(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    assert [p.name for p in tmp_path.iterdir()] != []  # the temporary folder exists while it works
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=30) == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == []


def test_the_cli_installs_the_handler():
    previous = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        assert CliRunner().invoke(synth_app, ["lexicon", "stats"]).exit_code == 0
        assert signal.getsignal(signal.SIGTERM) is files._sigterm
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_report_refusal(tmp_path):
    report, table = tmp_path / "r.json", tmp_path / "r.md"
    ours = lambda p: is_json_with(p, ("within",))
    assert report_refusal(report, [table], ours, "cmd") is None  # nothing there yet
    table.write_text("a user's table")
    assert "r.md exists and was not written by `cmd`" in report_refusal(report, [table], ours, "cmd")
    report.write_text(json.dumps({"within": {}}))
    assert report_refusal(report, [table], ours, "cmd") is None  # a report of ours: rewritten with its table
    report.write_text("[1, 2]")
    assert "r.json exists" in report_refusal(report, [table], ours, "cmd")
    assert "is a folder" in report_refusal(tmp_path, [], ours, "cmd")


def test_read_yaml_names_the_file_and_the_problem(tmp_path):
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text("a: 1\n")
    bad.write_text("a: [1,\n")
    assert read_yaml(good, ValueError) == {"a": 1}
    (tmp_path / "empty.yaml").write_text("")
    assert read_yaml(tmp_path / "empty.yaml", ValueError) == {}
    with pytest.raises(KeyError, match=r"--config .*bad.yaml: not valid YAML"):
        read_yaml(bad, KeyError, f"--config {bad}")
    with pytest.raises(ValueError, match=r"nope.yaml: cannot read it \(No such file or directory\)"):
        read_yaml(tmp_path / "nope.yaml", ValueError)


ORPHAN = """
import multiprocessing as mp, os, sys, time
from pathlib import Path
from hwkit.files import die_with_parent

def worker(parent, ready):
    die_with_parent(parent)
    Path(ready + ".tmp").write_text(str(os.getpid()))
    os.replace(ready + ".tmp", ready)
    time.sleep(120)

if __name__ == "__main__":
    mp.get_context("spawn").Process(target=worker, args=(os.getpid(), sys.argv[1])).start()
    time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:  # a zombie waiting for a reaper has stopped too
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_worker_dies_with_its_killed_parent(tmp_path):
    """`kill -9` of a command must not leave its render workers writing into --out (synth.dataset's pool)."""
    (tmp_path / "orphan.py").write_text(ORPHAN)
    ready = tmp_path / "ready"
    parent = subprocess.Popen([sys.executable, str(tmp_path / "orphan.py"), str(ready)])
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        child = int(ready.read_text())
        assert _alive(child)
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child)
