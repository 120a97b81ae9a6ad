"""Search on a device with a `train export` folder: onnxruntime, NumPy and OpenCV only — this module never
imports torch (a test checks), so a device needs none of the training stack."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hwkit.errors import UserError
from hwkit.files import sha256_file
from synth.lexicon import LANGS
from synth.schema import IMAGE, LANG, SEMANTIC_ID
from train.run.images import ImageError, decode
from train.run.shard_files import find_shards

FORMAT = "train-export/1"

# Images per onnxruntime call when embedding many. Small batches keep a call's activations in cache: on 2
# cores at 64×256, fp32 ran at about 2,900 images/s in batches of 16–64 and 2,400 in batches of 256
# (docs/benchmarks.md, `bench_export.py --batches`).
BATCH = 32


class EdgeError(UserError, ValueError):
    """An export folder or a query that cannot be used; the message names the file and the fix."""


def onnx_session(path: Path, threads: int = 1, optimize: bool = True):
    """An onnxruntime CPU session with `threads` intra-op threads (1: the latency setting); `optimize=False`
    runs the graph node by node as written (no fusion into int8 kernels: the QDQ reference arithmetic)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def read_manifest(folder: Path, files: Sequence[str]) -> dict:
    """An export folder's manifest, after checking its format and that each of `files` is listed and
    unchanged (sha256)."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise EdgeError(f"{folder}: no readable manifest.json; make one with `train export`") from None
    if manifest.get("format") != FORMAT:
        raise EdgeError(f"{folder}/manifest.json: format {manifest.get('format')!r}, expected {FORMAT}")
    for file in files:
        if file not in manifest["files"]:
            raise EdgeError(f"{folder} has no {file}; export with `int8=True` to get one")
        path = folder / file
        if not path.is_file() or sha256_file(path) != manifest["files"][file]:
            raise EdgeError(f"{path}: missing or changed since export (sha256 differs); export again")
    return manifest


class EdgeModel:
    """An exported image tower and its text gallery."""

    def __init__(self, folder: Path, int8: bool = False, threads: int = 1) -> None:
        self.folder = Path(folder)
        name = "image_tower.int8.onnx" if int8 else "image_tower.onnx"
        self.manifest = read_manifest(self.folder, (name, "gallery.npy", "gallery.tsv"))
        self.session = onnx_session(self.folder / name, threads)
        self.height, self.width = self.manifest["input"]["shape"][2:]
        self.crop = bool(self.manifest["input"].get("crop", False))  # absent from exports made before it
        self.gallery = np.load(self.folder / "gallery.npy")
        rows = (self.folder / "gallery.tsv").read_text(encoding="utf-8").splitlines()[1:]
        self.keys = [(int(sid), lang, text) for sid, lang, text in (r.split("\t") for r in rows)]

    def embed(self, images: np.ndarray, batch: int = BATCH) -> np.ndarray:
        """(N, 1, H, W) float32 ink → (N, D) L2-normalised embeddings, `batch` images per call."""
        images = images.astype(np.float32, copy=False)
        return np.concatenate([self.session.run(["embeddings"], {"images": images[i:i + batch]})[0]
                               for i in range(0, max(len(images), 1), batch)])

    def embed_file(self, image: Path) -> np.ndarray:
        image = Path(image)
        if not image.is_file():
            raise EdgeError(f"image not found: {image}")
        try:
            ink = decode(image.read_bytes(), self.height, self.width, self.crop)
        except ImageError:
            raise EdgeError(f"{image}: not an image OpenCV can read") from None
        return self.embed(ink[None, None])[0]

    def words_for_image(self, image: Path, langs: Sequence[str] | None = None, k: int = 5) -> list[dict]:
        """The k gallery words closest to a word image, in the languages asked (default all)."""
        langs = list(langs or LANGS)
        bad = [lang for lang in langs if lang not in LANGS]
        if bad:
            raise EdgeError(f"language {bad[0]!r}; expected one of {', '.join(LANGS)}")
        scores = self.gallery @ self.embed_file(image)
        allowed = np.array([lang in langs for _, lang, _ in self.keys])
        scores = np.where(allowed, scores, -np.inf)
        top = np.argsort(-scores, kind="stable")[:k]
        return [{"rank": n + 1, "score": float(scores[i]), "lang": self.keys[i][1], "semantic_id": self.keys[i][0],
                 "text": self.keys[i][2]} for n, i in enumerate(top) if np.isfinite(scores[i])]


def evaluate_export(model: EdgeModel, roots: Sequence[Path], batch: int = 256) -> dict:
    """Within-language Acc@1/3/5 and MRR of an export on shard sets (gallery: the query language's entries
    for the IDs present), the same protocol as `train eval`, to measure what int8 costs."""
    import pyarrow.parquet as pq

    from train.metrics import accuracy_at_k, mrr, ranks

    embeds, sids, langs = [], [], []
    for path in [p for root in roots for p in find_shards(Path(root))]:
        for part in pq.ParquetFile(path).iter_batches(batch_size=batch, columns=[IMAGE, SEMANTIC_ID, LANG]):
            pngs = part.column(IMAGE).field("bytes").to_pylist()
            images = np.stack([decode(p, model.height, model.width, model.crop) for p in pngs])[:, None]
            embeds.append(model.embed(images))
            sids.append(part.column(SEMANTIC_ID).to_numpy())
            langs += part.column(LANG).to_pylist()
    if not embeds:
        raise EdgeError(f"no shards in {', '.join(map(str, roots))}")
    emb, sid, lang = np.concatenate(embeds), np.concatenate(sids).astype(np.int64), np.asarray(langs)
    gallery_ids = np.unique(sid)
    key_sid = np.array([k[0] for k in model.keys])
    key_lang = np.array([k[1] for k in model.keys])
    report = {}
    for language in LANGS:
        q = lang == language
        if not q.any():
            continue
        columns = np.flatnonzero((key_lang == language) & np.isin(key_sid, gallery_ids))
        r = ranks(emb[q] @ model.gallery[columns].T, sid[q], key_sid[columns])
        report[language] = {"acc@1": accuracy_at_k(r, 1), "acc@3": accuracy_at_k(r, 3), "acc@5": accuracy_at_k(r, 5),
                            "mrr": mrr(r), "n_queries": int(r.size)}
    return report
