"""Fetch pinned packages from the two registries this project uses for data: npm and Debian.

Each package version is downloaded once into the cache and unpacked into its own folder; later calls
return that folder without touching the network. We shell out to the registries' own clients (`npm
pack`, `apt-get download`, `dpkg-deb -x`) rather than speaking their protocols: they already know the
machine's proxy, mirror and certificate settings, and need no root to download.
"""

from __future__ import annotations

import os
import subprocess
import tarfile
import tempfile
from pathlib import Path

from hwkit.errors import UserError
from synth.paths import cache_dir


class PackageError(UserError, RuntimeError):
    """A package could not be fetched or unpacked; the message says which and what to do."""


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise PackageError(f"`{cmd[0]}` is not installed; run `make setup` (it installs the registry clients)")


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _fetch_once(dest: Path, download) -> Path:
    """Return `dest`, first creating it with `download(tmp) -> unpacked folder` if it does not exist yet.

    The folder is moved into place whole, so an interrupted fetch leaves nothing half-done behind.
    """
    if dest.is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        unpacked = download(Path(tmp))
        try:
            os.replace(unpacked, dest)
        except OSError:  # another process won the race; keep its copy
            pass
    return dest


def npm_package(name: str, version: str, root: Path | None = None) -> Path:
    """Unpacked folder of npm package `name@version` (the tarball's `package/` folder)."""

    def download(tmp: Path) -> Path:
        proc = _run(["npm", "pack", f"{name}@{version}", "--loglevel=error", "--pack-destination", str(tmp)], cwd=tmp)
        tarballs = list(tmp.glob("*.tgz"))
        if proc.returncode != 0 or not tarballs:
            errors = [line[len("npm error"):].strip() for line in proc.stderr.splitlines() if line.startswith("npm error")]
            reason = next((e for e in errors if not e.startswith("code")), _last_line(proc.stderr))
            raise PackageError(f"npm package {name}@{version} could not be fetched: {reason}")
        with tarfile.open(tarballs[0]) as tar:
            tar.extractall(tmp / "unpacked", filter="data")
        return tmp / "unpacked" / "package"

    root = root or cache_dir() / "packages" / "npm"
    return _fetch_once(root / f"{name.replace('/', '__')}@{version}", download)


def debian_package(name: str, version: str, root: Path | None = None) -> Path:
    """Unpacked file tree of Debian package `name=version` (as if installed at that folder)."""

    def download(tmp: Path) -> Path:
        proc = _run(["apt-get", "download", f"{name}={version}"], cwd=tmp)
        if proc.returncode != 0 and os.geteuid() == 0:
            # A fresh machine has no package lists yet; as root we can make them.
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, check=False)
            proc = _run(["apt-get", "download", f"{name}={version}"], cwd=tmp)
        debs = list(tmp.glob("*.deb"))
        if proc.returncode != 0 or not debs:
            hint = (f"run `apt-get update` as root; if Debian no longer ships {version}, set the version "
                    f"`apt-cache policy {name}` shows and run `synth fonts pin`")
            raise PackageError(f"Debian package {name}={version} could not be fetched ({_last_line(proc.stderr)}); {hint}")
        proc = _run(["dpkg-deb", "-x", str(debs[0]), str(tmp / "unpacked")], cwd=tmp)
        if proc.returncode != 0:
            raise PackageError(f"Debian package {name}={version} could not be unpacked: {_last_line(proc.stderr)}")
        return tmp / "unpacked"

    root = root or cache_dir() / "packages" / "debian"
    return _fetch_once(root / f"{name}_{version}", download)


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
