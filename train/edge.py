"""Search on a device with a `train export` folder: onnxruntime, NumPy and OpenCV only — this module never
imports torch (a test checks), so a device needs none of the training stack."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from train.images import ImageError, decode

FORMAT = "train-export/1"
LANGS = ("en", "es", "zh")


class EdgeError(ValueError):
    """An export folder or a query that cannot be used; the message names the file and the fix."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class EdgeModel:
    """An exported image tower and its text gallery."""

    def __init__(self, folder: Path, int8: bool = False, threads: int = 1) -> None:
        import onnxruntime as ort

        self.folder = Path(folder)
        try:
            self.manifest = json.loads((self.folder / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise EdgeError(f"{self.folder}: no readable manifest.json; make one with `train export`") from None
        if self.manifest.get("format") != FORMAT:
            raise EdgeError(f"{self.folder}/manifest.json: format {self.manifest.get('format')!r}, expected {FORMAT}")
        name = "image_tower.int8.onnx" if int8 else "image_tower.onnx"
        if name not in self.manifest["files"]:
            raise EdgeError(f"{self.folder} has no {name}; export with --int8 to get one")
        for file in (name, "gallery.npy", "gallery.tsv"):
            path = self.folder / file
            if not path.is_file() or _sha256(path) != self.manifest["files"][file]:
                raise EdgeError(f"{path}: missing or changed since export (sha256 differs); export again")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(self.folder / name), options, providers=["CPUExecutionProvider"])
        self.height, self.width = self.manifest["input"]["shape"][2:]
        self.gallery = np.load(self.folder / "gallery.npy")
        rows = (self.folder / "gallery.tsv").read_text(encoding="utf-8").splitlines()[1:]
        self.keys = [(int(sid), lang, text) for sid, lang, text in (r.split("\t") for r in rows)]

    def embed(self, images: np.ndarray) -> np.ndarray:
        """(N, 1, H, W) float32 ink → (N, D) L2-normalised embeddings."""
        return self.session.run(["embeddings"], {"images": images.astype(np.float32, copy=False)})[0]

    def embed_file(self, image: Path) -> np.ndarray:
        image = Path(image)
        if not image.is_file():
            raise EdgeError(f"image not found: {image}")
        try:
            ink = decode(image.read_bytes(), self.height, self.width)
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
