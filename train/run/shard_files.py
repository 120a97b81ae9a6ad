"""A dataset's shard files, found and checked without torch (the edge runtime uses this too)."""

from __future__ import annotations

from pathlib import Path

from hwkit.errors import UserError
from synth.dataset.manifest import DATA, DatasetError, read_manifest
from synth.dataset.shards import is_temp_name


class DataError(UserError, ValueError):
    """Shards that cannot be read for training, with the file and the fix named."""


def find_shards(root: Path) -> list[Path]:
    """The Parquet shards of a dataset folder (`root/data/*.parquet`, as synth writes), a folder of shards,
    or a single shard file; refuses a dataset whose manifest says it is unfinished."""
    root = Path(root)
    if root.is_file():
        if root.suffix != ".parquet":
            raise DataError(f"{root}: not a Parquet shard (expected a synth dataset folder or a .parquet file)")
        return [root]
    if not root.is_dir():
        raise DataError(f"data not found: {root} (render shards first, e.g. `synth render --out {root}`)")
    try:
        manifest = read_manifest(root)
    except DatasetError as exc:  # a manifest we cannot read is reported, not trusted
        raise DataError(str(exc)) from None
    if manifest is not None and "part" in manifest:
        raise DataError(f"{root}: part {manifest['part']['index']} of {manifest['part']['count']} of a dataset; "
                        "join the parts with `synth merge` and train on the result")
    if manifest is not None and manifest.get("status") != "complete":
        raise DataError(f"{root}: dataset is incomplete (manifest status {manifest.get('status')!r}); "
                        "re-run the same `synth render` command to finish it")
    folder = root / DATA if (root / DATA).is_dir() else root
    shards = sorted(p for p in folder.glob("*.parquet") if not is_temp_name(p.name))
    if not shards:
        raise DataError(f"no Parquet shards in {folder} (expected {root}/{DATA}/*.parquet, as `synth render` writes)")
    return shards
