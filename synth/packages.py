"""Fetch pinned packages from the two registries this project uses for data: npm and Debian.

Each package version is downloaded once into the cache and unpacked into its own folder; later calls
return that folder without touching the network. We shell out to the registries' own clients (`npm
pack`, `apt-get download`, `dpkg-deb -x`) rather than speaking their protocols: they already know the
machine's proxy, mirror and certificate settings, and need no root to download.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from synth.paths import cache_dir


class PackageError(RuntimeError):
    """A package could not be fetched or unpacked; the message says which and what to do."""


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise PackageError(f"`{cmd[0]}` is not installed; run `make setup` (it installs the registry clients)")


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _publish(tmp: Path, dest: Path) -> Path:
    """Move a fully unpacked folder into place atomically, so an interrupted fetch leaves nothing half-done."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, dest)
    except OSError:  # another process won the race; keep its copy
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def npm_package(name: str, version: str, root: Path | None = None) -> Path:
    """Unpacked folder of npm package `name@version` (the tarball's `package/` folder)."""
    root = root or cache_dir() / "packages" / "npm"
    dest = root / f"{name.replace('/', '__')}@{version}"
    if dest.is_dir():
        return dest
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        tmp = Path(tmp)
        proc = _run(["npm", "pack", f"{name}@{version}", "--silent", "--pack-destination", str(tmp)], cwd=tmp)
        tarballs = list(tmp.glob("*.tgz"))
        if proc.returncode != 0 or not tarballs:
            raise PackageError(f"npm package {name}@{version} could not be fetched: {_last_line(proc.stderr)}")
        unpacked = tmp / "unpacked"
        with tarfile.open(tarballs[0]) as tar:
            tar.extractall(unpacked, filter="data")
        return _publish(unpacked / "package", dest)


def debian_package(name: str, version: str, root: Path | None = None) -> Path:
    """Unpacked file tree of Debian package `name=version` (as if installed at that folder)."""
    root = root or cache_dir() / "packages" / "debian"
    dest = root / f"{name}_{version}"
    if dest.is_dir():
        return dest
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        tmp = Path(tmp)
        proc = _run(["apt-get", "download", f"{name}={version}"], cwd=tmp)
        if proc.returncode != 0 and os.geteuid() == 0:
            # A fresh machine has no package lists yet; as root we can make them.
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, check=False)
            proc = _run(["apt-get", "download", f"{name}={version}"], cwd=tmp)
        debs = list(tmp.glob("*.deb"))
        if proc.returncode != 0 or not debs:
            hint = "run `apt-get update` as root, or pin the version Debian now ships with `synth fonts pin`"
            raise PackageError(f"Debian package {name}={version} could not be fetched ({_last_line(proc.stderr)}); {hint}")
        unpacked = tmp / "unpacked"
        proc = _run(["dpkg-deb", "-x", str(debs[0]), str(unpacked)], cwd=tmp)
        if proc.returncode != 0:
            raise PackageError(f"Debian package {name}={version} could not be unpacked: {_last_line(proc.stderr)}")
        return _publish(unpacked, dest)


def latest_version(source: str, name: str) -> str:
    """Version the registry offers now (used when pinning a new catalogue or lexicon source)."""
    if source == "npm":
        proc = _run(["npm", "view", name, "version"], cwd=Path.cwd())
        if proc.returncode != 0:
            raise PackageError(f"npm package {name} not found: {_last_line(proc.stderr)}")
        return proc.stdout.strip().splitlines()[-1]
    if source == "debian":
        proc = _run(["apt-cache", "policy", name], cwd=Path.cwd())
        for line in proc.stdout.splitlines():
            if line.strip().startswith("Candidate:") and "(none)" not in line:
                return line.split(":", 1)[1].strip()
        raise PackageError(f"Debian package {name} not found; run `apt-get update` as root and check its name")
    raise PackageError(f"unknown package source {source!r}; expected npm or debian")
