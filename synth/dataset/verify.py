"""`synth verify`: check a dataset folder against its manifest and name every problem found.

Checks: the manifest is complete; sizes.json agrees with it; every shard listed exists with the listed
sha256 and row count and no other shard file is present; each shard has the schema (with the
`huggingface` metadata), rows sorted by semantic ID within the listed ID range, the split of its file
series, and PNGs that decode to the width and height their row declares.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq

from hwkit.files import sha256_file
from synth.dataset.manifest import DATA, MANIFEST, SIZES, DatasetError, read_manifest, sizes
from synth.dataset.plan import SPLIT_OF_SERIES
from synth.schema import HEIGHT, IMAGE, SCHEMA, SEMANTIC_ID, SPLIT, WIDTH, schema_differences

MAX_LISTED = 5  # bad rows named per shard before summarising; enough to locate a problem


@dataclass
class VerifyReport:
    root: Path
    shards: int = 0
    rows: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def manifest_rows(root: Path) -> int:
    """Total rows the manifest in `root` lists (for a progress bar's total)."""
    manifest = read_manifest(Path(root))
    return sum(e["rows"] for e in manifest["shards"]) if manifest else 0


def verify_dataset(root: Path, progress: Callable[[int], None] | None = None) -> VerifyReport:
    """Check the dataset at `root`; `progress(rows)` is called as each shard's rows are checked."""
    root = Path(root)
    report = VerifyReport(root)
    problems = report.problems
    try:
        manifest = read_manifest(root)
    except DatasetError as exc:
        problems.append(str(exc))
        return report
    if manifest is None:
        problems.append(f"{root}: no {MANIFEST}; not a synth dataset")
        return report
    if "part" in manifest:
        part = manifest["part"]
        problems.append(f"{root} is part {part['index']} of {part['count']} of a dataset; join the parts with "
                        "`synth merge`, then verify the result")
        return report
    if manifest.get("status") != "complete":
        problems.append(f"{MANIFEST}: status is {manifest.get('status')!r}; the build did not finish (re-run its command)")
    try:
        listed_sizes = json.loads((root / SIZES).read_text(encoding="utf-8"))
        if listed_sizes != sizes(manifest):
            problems.append(f"{SIZES}: does not match the shards and row counts in {MANIFEST}")
    except (OSError, ValueError) as exc:
        problems.append(f"{SIZES}: unreadable ({exc})")

    listed = {e["name"] for e in manifest["shards"]}
    on_disk = {f"{DATA}/{p.name}" for p in (root / DATA).glob("*.parquet")} if (root / DATA).is_dir() else set()
    problems += [f"{name}: shard file not listed in {MANIFEST}" for name in sorted(on_disk - listed)]
    for entry in manifest["shards"]:
        rows = _check_shard(root, entry, problems)
        report.shards += rows is not None
        report.rows += rows or 0
        if progress:
            progress(rows or 0)  # a missing or unreadable shard leaves the bar short of its total
    return report


def _check_shard(root: Path, entry: dict, problems: list[str]) -> int | None:
    """Rows read from the shard, None if it is missing or unreadable; its problems go into `problems`."""
    name, path = entry["name"], root / entry["name"]
    if not path.is_file():
        problems.append(f"{name}: missing")
        return None
    if entry.get("sha256") and sha256_file(path) != entry["sha256"]:
        problems.append(f"{name}: sha256 differs from {MANIFEST} (file changed or corrupt)")
    try:
        parquet = pq.ParquetFile(path)
        table = parquet.read()
    except Exception as exc:  # pyarrow raises several types for a damaged file
        problems.append(f"{name}: not a readable Parquet file ({type(exc).__name__}: {exc})")
        return None
    schema = table.schema
    differences = schema_differences(schema)
    if differences:
        problems.append(f"{name}: {'; '.join(differences)} (synth/schema.py)")
        return table.num_rows
    if (schema.metadata or {}).get(b"huggingface") != SCHEMA.metadata[b"huggingface"]:
        problems.append(f"{name}: schema metadata lacks the `huggingface` features (datasets would not decode images)")
    if table.num_rows != entry["rows"]:
        problems.append(f"{name}: {table.num_rows} rows, {MANIFEST} says {entry['rows']}")
    ids = table.column(SEMANTIC_ID).to_numpy()
    if len(ids) and np.any(np.diff(ids) < 0):
        problems.append(f"{name}: rows not sorted by {SEMANTIC_ID} (first break at row {int(np.argmax(np.diff(ids) < 0)) + 1})")
    if len(ids) and (int(ids.min()), int(ids.max())) != (entry["semantic_id_min"], entry["semantic_id_max"]):
        problems.append(f"{name}: {SEMANTIC_ID} range {ids.min()}–{ids.max()}, {MANIFEST} says "
                        f"{entry['semantic_id_min']}–{entry['semantic_id_max']}")
    series = Path(name).name.split("-")[0]
    splits = set(table.column(SPLIT).unique().to_pylist())
    if series in SPLIT_OF_SERIES and splits - {SPLIT_OF_SERIES[series]}:
        problems.append(f"{name}: holds {SPLIT} {sorted(splits - {SPLIT_OF_SERIES[series]})} in the {series} series")
    _check_images(name, table, problems)
    return table.num_rows


def _check_images(name: str, table, problems: list[str]) -> None:
    images = table.column(IMAGE).combine_chunks().field("bytes").to_pylist()
    widths = table.column(WIDTH).to_pylist()
    heights = table.column(HEIGHT).to_pylist()
    bad = []
    for row, (data, width, height) in enumerate(zip(images, widths, heights)):
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
        if image is None:
            bad.append(f"row {row}: PNG does not decode")
        elif image.shape[:2] != (height, width):
            bad.append(f"row {row}: image is {image.shape[1]}×{image.shape[0]}, row says {width}×{height}")
    if bad:
        more = f" (and {len(bad) - MAX_LISTED} more)" if len(bad) > MAX_LISTED else ""
        problems.append(f"{name}: {len(bad)} bad image(s): {'; '.join(bad[:MAX_LISTED])}{more}")
