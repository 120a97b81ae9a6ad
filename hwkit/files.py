"""File helpers shared by the font cache, the lexicon builder, the dataset writer and the trainer's output
folders: checksums, atomic writes, and folders that replace only what their own command wrote."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml


def exit_on_sigterm() -> None:
    """Make SIGTERM (what `timeout`, SLURM and Kubernetes send) raise SystemExit(143) in the main thread, so
    `finally` blocks remove temporary files and folders as they do for Ctrl-C; Python's default would kill
    the process on the spot and leave them behind. Both CLIs call it first."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _sigterm)


def _sigterm(signum, _frame) -> None:
    sys.exit(128 + signum)


def die_with_parent(parent: int) -> None:
    """Make a worker process end when `parent` (the pid that started it) does, even by `kill -9`: an orphan
    would go on writing into the output folder beside a resumed run. Linux: the kernel sends SIGKILL on the
    parent's death (prctl PR_SET_PDEATHSIG); elsewhere a daemon thread polls the parent pid twice a second."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(1, signal.SIGKILL, 0, 0, 0) == 0:  # 1 = PR_SET_PDEATHSIG
            if os.getppid() != parent:  # it died before the call: no signal will come
                os._exit(1)
            return

    def watch() -> None:
        while os.getppid() == parent:
            threading.Event().wait(0.5)
        os._exit(1)

    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


def read_yaml(path: Path, error: type[Exception], label: str | None = None) -> Any:
    """A YAML file's document ({} when empty), or `error` with a one-line message that starts with `label`
    (default: the path) and says what is wrong: unreadable, or not valid YAML."""
    label = label or str(path)
    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise error(f"{label}: cannot read it ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise error(f"{label}: not valid YAML ({getattr(exc, 'problem', None) or str(exc).splitlines()[0]})") from None


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def temp_name(final: Path) -> Path:
    """Where a file is written before its rename: hidden, same folder, unique per process."""
    return final.with_name(f".{final.name}.{os.getpid()}.tmp")


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write through a temporary file and a rename: readers see the old file or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def is_empty(folder: Path) -> bool:
    """True for a folder that does not exist or holds nothing."""
    return not folder.exists() or (folder.is_dir() and not any(folder.iterdir()))


def replace_refusal(out: Path, overwrite: bool, is_ours: Callable[[Path], bool], what: str, command: str,
                    foreign: Callable[[Path], list[str]]) -> str | None:
    """Why `out` may not be written, or None: a non-empty `out` is replaced only with `overwrite`, only if
    `is_ours(out)` says `command` wrote it (`what` names such a folder, e.g. "an index"), and only if it
    holds nothing else: `foreign(out)` lists the paths `command` did not write, which would be lost."""
    if is_empty(out):
        return None
    if not overwrite:
        return f"{out} already exists; choose another --out, or pass --overwrite to replace {what}"
    if not (out.is_dir() and is_ours(out)):
        return f"{out} is not {what} written by `{command}`; refusing to replace it"
    extra = foreign(out)
    if extra:
        return (f"{out} also holds files `{command}` did not write ({', '.join(extra[:5])}); move them away "
                "first, or choose another --out")
    return None


def files_besides(folder: Path, names: Iterable[str]) -> list[str]:
    """Paths of the files under `folder`, relative to it, other than `names`."""
    known = set(names)
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and str(p.relative_to(folder)) not in known)


def report_refusal(report: Path, beside: Sequence[Path], is_ours: Callable[[Path], bool], command: str) -> str | None:
    """Why `report` and the files written with it (`beside`) may not be written, or None. When `report` is
    one `command` wrote (`is_ours`), re-running rewrites them all; otherwise none of them may exist yet."""
    for path in (report, *beside):
        if path.is_dir():
            return f"{path} is a folder; --out takes a file name"
    if report.is_file() and is_ours(report):
        return None
    for path in (report, *beside):
        if path.exists():
            return f"{path} exists and was not written by `{command}`; choose another --out, or move it away"
    return None


def is_json_with(path: Path, keys: Sequence[str]) -> bool:
    """True for a JSON object file holding every one of `keys`."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and all(k in data for k in keys)


@contextmanager
def atomic_folder(out: Path, overwrite: bool) -> Iterator[Path]:
    """A temporary folder beside `out` to fill; when the block ends without error it is renamed to `out`,
    replacing an empty `out`, or a non-empty one when `overwrite` (check `replace_refusal` first). On error
    nothing is left behind. A non-empty `out` that appeared meanwhile without `overwrite` is not touched."""
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if not is_empty(out) and not overwrite:
            raise FileExistsError(f"{out} appeared while writing; nothing was written there")
        if out.is_dir():
            shutil.rmtree(out)
        elif out.exists():
            out.unlink()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
