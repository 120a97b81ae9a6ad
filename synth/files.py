"""File helpers shared by the font cache, the lexicon builder and the dataset writer: checksums and
atomic writes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


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
