"""`synth preview`: a contact sheet of seeded random samples, each labelled with text, language and style.

Labels include Chinese words, so they are drawn with an installed Han face from the catalogue (LXGW
WenKai by preference, which also has Latin letters); Pillow's default bitmap font would draw tofu.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageFont

from synth.dataset.manifest import DatasetError, read_manifest
from synth.fonts.catalogue import load_catalogue
from synth.fonts.fetch import FetchError, read_installed
from synth.schema import IMAGE, LANG, STYLE, TEXT

PREFERRED_LABEL_FONT = "lxgw-wenkai-400"


@dataclass(frozen=True)
class SheetConfig:
    n: int = 48  # samples on the sheet
    seed: int = 0  # which samples: a seeded draw without replacement over all rows
    columns: int = 4
    label_size: int = 15  # px
    pad: int = 8  # px between cells


def label_font_path(labels: str, catalogue_path: Path | None = None) -> Path:
    """The installed Han outline face that covers most of `labels` (LXGW WenKai 400 on a tie)."""
    catalogue = load_catalogue(catalogue_path)
    best, best_score = None, -1
    for style in catalogue.styles:
        if style.kind != "outline" or "han" not in style.scripts:
            continue
        try:
            installed = read_installed(style)
        except FetchError:
            continue  # a corrupt cache entry is `synth fonts fetch`'s business, not the sheet's
        if installed is None:
            continue
        score = (sum(c in installed.covered for c in set(labels)), style.id == PREFERRED_LABEL_FONT)
        if best is None or score > best_score:
            best, best_score = installed.path, score
    if best is None:
        raise DatasetError(
            f"no Chinese-capable label font is installed; run `synth fonts fetch {PREFERRED_LABEL_FONT}`"
        )
    return best


def _pick_rows(root: Path, n: int, seed: int) -> list[dict]:
    manifest = read_manifest(root)
    if manifest is None:
        raise DatasetError(f"{root}: no manifest.json; not a synth dataset")
    sizes = [e["rows"] for e in manifest["shards"]]
    total = sum(sizes)
    if total == 0:
        raise DatasetError(f"{root}: the dataset has no rows")
    picks = np.sort(np.random.default_rng(seed).choice(total, size=min(n, total), replace=False))
    starts = np.cumsum([0, *sizes])
    rows = []
    for i, entry in enumerate(manifest["shards"]):
        local = picks[(picks >= starts[i]) & (picks < starts[i + 1])] - starts[i]
        if len(local) == 0:
            continue
        path = root / entry["name"]
        if not path.is_file():
            raise DatasetError(f"{entry['name']}: missing; run `synth verify {root}`")
        # Read only the row groups holding picked rows: a sheet of a 262,800-row corpus stays quick.
        parquet = pq.ParquetFile(path)
        group_starts = np.cumsum([0] + [parquet.metadata.row_group(g).num_rows for g in range(parquet.num_row_groups)])
        for g in range(parquet.num_row_groups):
            inside = local[(local >= group_starts[g]) & (local < group_starts[g + 1])] - group_starts[g]
            if len(inside):
                group = parquet.read_row_group(g, columns=[IMAGE, TEXT, LANG, STYLE])
                rows += group.take(inside).to_pylist()
    return rows


def contact_sheet(root: Path, config: SheetConfig = SheetConfig(), catalogue_path: Path | None = None) -> Image.Image:
    """A grid of `config.n` samples of the dataset at `root`, each with its text, language and style."""
    rows = _pick_rows(Path(root), config.n, config.seed)
    labels = [(row[TEXT], f"{row[LANG]} · {row[STYLE]}") for row in rows]
    font = ImageFont.truetype(str(label_font_path("".join(a + b for a, b in labels), catalogue_path)),
                              config.label_size, layout_engine=ImageFont.Layout.BASIC)
    images = [Image.open(io.BytesIO(row[IMAGE]["bytes"])).convert("L") for row in rows]
    cell_w = max(im.width for im in images)
    label_h = 2 * (config.label_size + 3)
    cell_h = max(im.height for im in images) + label_h
    cols = min(config.columns, len(images))
    grid_rows = -(-len(images) // cols)
    sheet = Image.new("L", (cols * (cell_w + config.pad) + config.pad, grid_rows * (cell_h + config.pad) + config.pad), 255)
    draw = ImageDraw.Draw(sheet)
    for k, (image, (text, where)) in enumerate(zip(images, labels)):
        x = config.pad + (k % cols) * (cell_w + config.pad)
        y = config.pad + (k // cols) * (cell_h + config.pad)
        sheet.paste(image, (x, y))
        draw.rectangle([x - 1, y - 1, x + image.width, y + image.height], outline=190)
        draw.text((x, y + image.height + 2), text, fill=0, font=font)
        draw.text((x, y + image.height + 2 + config.label_size + 3), where, fill=96, font=font)
    return sheet
