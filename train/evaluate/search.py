"""Search with a trained run: an image against the lexicon in any language (query by example), and a typed
word against an index of word images in any script (query by string).

An index is a folder:

    INDEX/index.json       format train-index/1, the run and a digest of its weights, the data, N, D
    INDEX/embeddings.npy   (N, D) float32 L2-normalised image embeddings
    INDEX/rows.parquet     per embedding: shard file, row in that shard, semantic_id, lang, text

Embeddings from different weights are not comparable, so searching an index with another run is refused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from hwkit.errors import UserError
from hwkit.files import atomic_folder, files_besides, replace_refusal
from synth.lexicon import LANGS, Lexicon
from train.evaluate import embed_images, embed_texts
from train.run.images import ImageError, decode
from train.towers.model import DualEncoder

FORMAT = "train-index/1"
META, EMBEDDINGS, ROWS = "index.json", "embeddings.npy", "rows.parquet"


class SearchError(UserError, ValueError):
    """A search or an index cannot be made as asked; the message names the thing and the fix."""


def weights_digest(model: DualEncoder) -> str:
    """sha256 over the run's own weights (name, shape, bytes), so an index knows which model made it."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.saved_state().items()):
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@dataclass
class Index:
    path: Path
    meta: dict
    embeds: np.ndarray  # (N, D)
    rows: dict[str, np.ndarray]  # shard, row, semantic_id, lang, text

    def __len__(self) -> int:
        return len(self.embeds)


def build_index(model: DualEncoder, run: Path, roots: Sequence[Path], out: Path, *, batch_size: int | None = None,
                workers: int = 0, overwrite: bool = False, progress: Callable[[int], None] | None = None) -> dict:
    """Embed every image of `roots` and write the index folder `out` (atomically: a temporary folder, renamed)."""
    out = Path(out)
    refusal = replace_refusal(out, overwrite, lambda folder: (folder / META).is_file(), "an index", "train index",
                              lambda folder: files_besides(folder, (META, EMBEDDINGS, ROWS)))
    if refusal:
        raise SearchError(refusal)
    images = embed_images(model, roots, batch_size, workers, progress=progress)
    c = model.config.image
    meta = {"format": FORMAT, "run": str(Path(run).resolve()), "weights_sha256": weights_digest(model),
            "data": [str(Path(r).resolve()) for r in roots], "count": len(images["embeds"]),
            "dim": int(images["embeds"].shape[1]), "image_size": [c.image_height, c.image_width]}
    table = pa.table({"shard": images["shards"], "row": images["rows"].astype(np.int64),
                      "semantic_id": images["semantic_ids"].astype(np.int32), "lang": images["langs"].tolist(),
                      "text": images["texts"]})
    with atomic_folder(out, overwrite) as tmp:
        np.save(tmp / EMBEDDINGS, images["embeds"].astype(np.float32))
        pq.write_table(table, tmp / ROWS)
        (tmp / META).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return meta


def load_index(path: Path) -> Index:
    path = Path(path)
    try:
        meta = json.loads((path / META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise SearchError(f"{path}: not an index (no readable {META}); build one with `train index`") from None
    if meta.get("format") != FORMAT:
        raise SearchError(f"{path / META}: format {meta.get('format')!r}, expected {FORMAT}")
    try:
        embeds = np.load(path / EMBEDDINGS)
        table = pq.read_table(path / ROWS)
    except (OSError, ValueError) as exc:
        raise SearchError(f"{path}: damaged index ({exc}); rebuild it with `train index --overwrite`") from None
    if embeds.shape != (meta["count"], meta["dim"]) or table.num_rows != meta["count"]:
        raise SearchError(f"{path}: {EMBEDDINGS} is {embeds.shape} and {ROWS} has {table.num_rows} rows, "
                          f"{META} says {meta['count']}×{meta['dim']}; rebuild it with `train index --overwrite`")
    rows = {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
    return Index(path, meta, embeds, rows)


def _check_langs(langs: Sequence[str] | None) -> list[str]:
    langs = list(langs or LANGS)
    bad = [lang for lang in langs if lang not in LANGS]
    if bad:
        raise SearchError(f"language {bad[0]!r}; expected one of {', '.join(LANGS)}")
    return langs


@torch.no_grad()
def embed_image_file(model: DualEncoder, image: Path) -> np.ndarray:
    """(D,) embedding of a word image file (any format OpenCV reads; dark ink on light paper)."""
    image = Path(image)
    if not image.is_file():
        raise SearchError(f"image not found: {image}")
    data = image.read_bytes()
    c = model.config.image
    try:
        ink = decode(data, c.image_height, c.image_width, c.crop)
    except ImageError:
        raise SearchError(f"{image}: not an image OpenCV can read") from None
    device = next(model.parameters()).device
    return model.image(torch.from_numpy(ink)[None, None].to(device)).float().cpu().numpy()[0]


def words_for_image(model: DualEncoder, image: Path, lexicon: Lexicon, langs: Sequence[str] | None = None,
                    k: int = 5) -> list[dict]:
    """The k lexicon words closest to a word image, over the given languages (default all three)."""
    query = embed_image_file(model, image)
    entries = [(lang, e.semantic_id, e.text(lang)) for lang in _check_langs(langs) for e in lexicon.entries]
    gallery = embed_texts(model, [text for _, _, text in entries])
    scores = gallery @ query
    top = np.argsort(-scores, kind="stable")[:k]
    return [{"rank": n + 1, "score": float(scores[i]), "lang": entries[i][0], "semantic_id": entries[i][1],
             "text": entries[i][2]} for n, i in enumerate(top)]


def images_for_text(model: DualEncoder, index: Index, text: str, langs: Sequence[str] | None = None,
                    k: int = 5) -> list[dict]:
    """The k images of the index closest to a typed word, among images of the given languages."""
    if index.meta["weights_sha256"] != weights_digest(model):
        raise SearchError(f"{index.path} was built with other weights ({index.meta['run']}); search it with that "
                          "run, or rebuild the index with this one")
    if not text.strip():
        raise SearchError("empty `text`")
    query = embed_texts(model, [text.strip()])[0]
    allowed = np.isin(index.rows["lang"], _check_langs(langs))
    scores = np.where(allowed, index.embeds @ query, -np.inf)
    top = [i for i in np.argsort(-scores, kind="stable")[:k] if np.isfinite(scores[i])]
    return [{"rank": n + 1, "score": float(scores[i]), "lang": str(index.rows["lang"][i]),
             "semantic_id": int(index.rows["semantic_id"][i]), "text": str(index.rows["text"][i]),
             "shard": str(index.rows["shard"][i]), "row": int(index.rows["row"][i])} for n, i in enumerate(top)]
