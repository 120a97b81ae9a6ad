"""The dataset's own record: `manifest.json`, `sizes.json`, and which files in an output folder are ours.

The manifest is written first (status "incomplete", shard checksums filled in as shards land) and last
(status "complete"). It holds no timestamps, host names or absolute paths, so a run interrupted and
resumed ends with the same bytes as one that never stopped. Its `fingerprint` covers everything that
changes what gets rendered; a folder whose fingerprint differs is another dataset and is not touched
without an explicit overwrite.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path

from hwkit.errors import UserError
from hwkit.files import write_atomic
from synth import __version__
from synth.dataset.plan import SERIES, Plan, ShardPlan
from synth.dataset.shards import ShardRecord, is_temp_name
from synth.fonts.catalogue import Catalogue
from synth.lexicon import Lexicon

FORMAT = "synth-dataset/1"
MANIFEST = "manifest.json"
SIZES = "sizes.json"
CARD = "README.md"
DATA = "data"
_SHARD_NAME = re.compile(rf"^({'|'.join(SERIES.values())})-\d{{5}}-of-\d{{5}}\.parquet$")


class DatasetError(UserError, RuntimeError):
    """The dataset cannot be built, resumed or replaced as asked; the message is one line."""


def fingerprint(config: dict, lexicon: Lexicon, catalogue: Catalogue) -> str:
    """sha256 over what decides the bytes: the full config, the lexicon, the catalogue, the version."""
    payload = {"config": config, "lexicon": lexicon.sha256, "catalogue": catalogue.sha256, "synth": __version__}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def library_versions() -> dict[str, str]:
    """The libraries the image bytes depend on (rasteriser, warps, PNG and Parquet encoders), as recorded in a
    manifest: a byte-identical rebuild needs the same ones."""
    import cv2
    import numpy
    import PIL
    import pyarrow
    from PIL import features

    return {"numpy": numpy.__version__, "opencv": cv2.__version__, "pillow": PIL.__version__,
            "freetype": features.version("freetype2") or "none", "pyarrow": pyarrow.__version__}


def make_manifest(plan: Plan, shards: list[ShardPlan], config: dict, command: str, lexicon: Lexicon,
                  catalogue: Catalogue) -> dict:
    """The manifest for `plan` before any shard is written (see `with_records`)."""
    rows_by_style = Counter(t.style.id for t in plan.tasks)
    shard_entries = [
        {"name": s.name, "rows": len(s.tasks), "sha256": None, "semantic_id_min": s.id_range[0],
         "semantic_id_max": s.id_range[1]}
        for s in shards
    ]
    return {
        "format": FORMAT,
        "status": "incomplete",
        "synth_version": __version__,
        "libraries": library_versions(),
        "command": command,
        "fingerprint": fingerprint(config, lexicon, catalogue),
        "config": config,
        "lexicon": {"file": lexicon.path.name, "sha256": lexicon.sha256, "entries": len(lexicon)},
        "catalogue": {"file": catalogue.path.name, "sha256": catalogue.sha256},
        "counts": {
            "rows": len(plan.tasks),
            "shards": len(shards),
            "ids": [plan.ids.start, plan.ids.stop],
            "by_lang": dict(sorted(Counter(t.lang for t in plan.tasks).items())),
            "by_split": dict(sorted(Counter(t.style.split.value for t in plan.tasks).items())),
        },
        "styles": {
            s.id: {"family": s.family, "kind": s.kind, "split": s.split.value, "licence": s.licence,
                   "rows": rows_by_style.get(s.id, 0)}
            for s in plan.styles
        },
        "skipped": {
            "pairs": plan.skipped_pairs,
            "by_lang_style": plan.skipped,
            "ids_without_style": plan.unrenderable,
        },
        "shards": shard_entries,
    }


def with_records(manifest: dict, done: dict[str, ShardRecord]) -> dict:
    """`manifest` with the sha256 of each shard written so far; "complete" once every shard has one."""
    shards = [{**e, "sha256": done[e["name"]].sha256 if e["name"] in done else None} for e in manifest["shards"]]
    complete = all(e["sha256"] for e in shards)
    return {**manifest, "status": "complete" if complete else "incomplete", "shards": shards}


def write_json(path: Path, data: dict) -> None:
    write_atomic(path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")


def sizes(manifest: dict) -> dict[str, int]:
    """sizes.json: shard name → rows, so a trainer knows an epoch's length without opening shards."""
    return {entry["name"]: entry["rows"] for entry in manifest["shards"]}


def read_manifest(root: Path) -> dict | None:
    """The manifest in `root`, None if there is none; DatasetError if it is unreadable."""
    path = root / MANIFEST
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: unreadable manifest ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise DatasetError(f"{path}: not a synth dataset manifest (format {FORMAT!r} expected)")
    missing = [key for key in ("fingerprint", "config", "shards") if key not in data]
    if missing or not isinstance(data["shards"], list):
        raise DatasetError(f"{path}: damaged synth manifest (missing or malformed: {', '.join(missing) or 'shards'})")
    return data


def foreign_files(root: Path) -> list[str]:
    """Paths under `root` that a synth dataset does not write (what an overwrite must never delete)."""
    foreign = []
    for entry in sorted(root.iterdir()):
        name = entry.name
        if name in (MANIFEST, SIZES, CARD) and entry.is_file() or _is_our_temp(name):
            continue
        if name == DATA and entry.is_dir():
            foreign += [f"{DATA}/{p.name}" for p in sorted(entry.iterdir())
                        if not (p.is_file() and (_SHARD_NAME.match(p.name) or is_temp_name(p.name)))]
            continue
        foreign.append(name)
    return foreign


def _is_our_temp(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp") and any(
        name.startswith(f".{ours}.") for ours in (MANIFEST, SIZES, CARD))


def remove_ours(root: Path) -> None:
    """Delete a dataset's files from `root`; callers check `foreign_files` first."""
    data = root / DATA
    if data.is_dir():
        for p in data.iterdir():
            p.unlink()
        data.rmdir()
    for p in root.iterdir():
        if p.name in (MANIFEST, SIZES, CARD) or _is_our_temp(p.name):
            p.unlink()


def sweep_temp(root: Path) -> None:
    """Remove shard temporaries left by a process that was killed before its rename."""
    data = root / DATA
    if data.is_dir():
        for p in data.iterdir():
            if is_temp_name(p.name):
                p.unlink(missing_ok=True)


def config_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted names of config fields that differ, for a refusal message that says what changed."""
    diffs = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            diffs.append(f"{prefix}{key}")
    return diffs
