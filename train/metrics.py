"""Retrieval metrics of the reference method (DESIGN.md §2), in NumPy.

A query (a word image) is scored against every gallery item (a text embedding); a gallery item is
correct when its semantic ID equals the query's. From the similarity matrix S (Q, G):

    rank_q  = 1 + #{g : y_g ≠ y_q and S_qg ≥ max_{g': y_g' = y_q} S_qg'}   (1-based, ties pessimistic)
    Acc@K   = (1/Q) Σ_q [rank_q ≤ K]
    MRR     = (1/Q) Σ_q 1 / rank_q
    NES     = 1 − Lev(pred, gt) / max(|pred|, |gt|)                          (for string-output baselines)
    R/D     = mean intra-class radius / mean inter-class distance             (lower is better)
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

import numpy as np


def ranks(
    similarity: np.ndarray, query_labels: np.ndarray, gallery_labels: np.ndarray, chunk: int = 1024
) -> np.ndarray:
    """(Q,) int64 rank of each query's first correct gallery item, 1-based.

    rank_q = 1 + the number of wrong gallery items scoring ≥ the best correct item. Ties are broken
    pessimistically: a wrong item with exactly the correct item's score ranks ahead of it, so a
    degenerate model that scores everything equal gets rank G − n_correct + 1, not 1. Other correct
    items never push the rank down. Queries are processed `chunk` rows at a time, so the temporary
    masks stay (chunk, G) however large Q is. A query with no correct item in the gallery is an error:
    its rank is undefined, and silently scoring it 0 would hide a gallery built for the wrong IDs.
    """
    similarity = np.asarray(similarity)
    query_labels, gallery_labels = np.asarray(query_labels), np.asarray(gallery_labels)
    q, g = similarity.shape
    if query_labels.shape != (q,) or gallery_labels.shape != (g,):
        raise ValueError(
            f"similarity is {similarity.shape}; need query_labels ({q},) and gallery_labels ({g},), "
            f"got {query_labels.shape} and {gallery_labels.shape}"
        )
    if chunk < 1:
        raise ValueError(f"chunk must be ≥ 1, got {chunk}")
    out = np.empty(q, dtype=np.int64)
    for start in range(0, q, chunk):
        sim = similarity[start : start + chunk]  # (c, G)
        correct = query_labels[start : start + chunk, None] == gallery_labels[None, :]  # (c, G)
        missing = ~correct.any(axis=1)
        if missing.any():
            first = start + int(np.flatnonzero(missing)[0])
            raise ValueError(
                f"{int(missing.sum())} queries in rows {start}..{start + len(sim) - 1} have no correct gallery "
                f"item (first: row {first}, label {query_labels[first]!r}); drop them or widen the gallery"
            )
        best = np.where(correct, sim, -np.inf).max(axis=1)  # (c,) score of the first correct item
        out[start : start + len(sim)] = 1 + (~correct & (sim >= best[:, None])).sum(axis=1)
    return out


def _check_ranks(r: np.ndarray) -> np.ndarray:
    r = np.asarray(r)
    if r.ndim != 1 or r.size == 0:
        raise ValueError(f"need a non-empty (Q,) array of ranks, got shape {r.shape}")
    if (r < 1).any():
        raise ValueError("ranks are 1-based; got a rank < 1")
    return r


def accuracy_at_k(ranks: np.ndarray, k: int) -> float:
    """Acc@K = (1/Q) Σ_q [rank_q ≤ K]: the share of queries whose correct item is in the top K."""
    return float(np.mean(_check_ranks(ranks) <= k))


def mrr(ranks: np.ndarray) -> float:
    """Mean reciprocal rank, (1/Q) Σ_q 1/rank_q."""
    return float(np.mean(1.0 / _check_ranks(ranks)))


def retrieval_report(
    similarity: np.ndarray,
    query_labels: np.ndarray,
    gallery_labels: np.ndarray,
    ks: Sequence[int] = (1, 3, 5),
    chunk: int = 1024,
) -> dict[str, float | int]:
    """{"acc@1", "acc@3", "acc@5", "mrr", "n_queries"} for one query set against one gallery (see `ranks`)."""
    r = ranks(similarity, query_labels, gallery_labels, chunk=chunk)
    report: dict[str, float | int] = {f"acc@{k}": accuracy_at_k(r, k) for k in ks}
    report["mrr"] = mrr(r)
    report["n_queries"] = int(r.size)
    return report


def levenshtein(a: str, b: str) -> int:
    """Edit distance by characters (code points): the fewest insertions, deletions and substitutions."""
    if len(a) < len(b):
        a, b = b, a  # keep the row as short as the shorter string
    prev = list(range(len(b) + 1))  # distances from a[:0] to every prefix of b
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def normalise(text: str, lang: str) -> str:
    """The form words are compared in: NFC, whitespace removed, case-folded for English and Spanish."""
    text = "".join(unicodedata.normalize("NFC", text).split())
    return text.casefold() if lang in ("en", "es") else text


def normalized_edit_similarity(pred: str, gt: str) -> float:
    """NES = 1 − Lev(pred, gt) / max(|pred|, |gt|), in [0, 1]; NES("", "") = 1.

    Lengths and edits count code points, so compare strings in one Unicode normal form (NFC).
    """
    longest = max(len(pred), len(gt))
    if longest == 0:
        return 1.0
    return 1.0 - levenshtein(pred, gt) / longest


def radius_distance_ratio(embeddings: np.ndarray, labels: np.ndarray) -> float:
    """R/D ratio of an embedding space (lower = tighter, better separated classes).

    With classes c, their points X_c and centroids μ_c = mean(X_c) (the plain mean, not re-normalised),
    Euclidean distances throughout:
        R = mean over classes with ≥ 2 points of (1/|X_c|) Σ_{x∈X_c} ‖x − μ_c‖  (mean intra-class radius)
        D = mean over unordered pairs c < c' of all classes of ‖μ_c − μ_c'‖  (mean inter-class distance)
        R/D = R / D
    Singleton classes have no radius but do count as centroids in D. Needs at least one class with
    ≥ 2 points and at least two classes; returns inf when every centroid coincides (D = 0).
    """
    x = np.asarray(embeddings, dtype=np.float64)
    labels = np.asarray(labels)
    if x.ndim != 2 or labels.shape != (x.shape[0],):
        raise ValueError(f"need embeddings (N, D) and labels (N,), got {x.shape} and {labels.shape}")
    classes, cls, counts = np.unique(labels, return_inverse=True, return_counts=True)
    if len(classes) < 2 or counts.max() < 2:
        raise ValueError("R/D needs at least two classes and one class with two or more points")
    centroids = np.zeros((len(classes), x.shape[1]))
    np.add.at(centroids, cls, x)
    centroids /= counts[:, None]  # (C, D)
    dist_to_centroid = np.linalg.norm(x - centroids[cls], axis=1)  # (N,)
    radii = np.bincount(cls, weights=dist_to_centroid) / counts  # (C,)
    radius = radii[counts >= 2].mean()
    # Pairwise centroid distances a block of rows at a time: (rows, C, D) differences are exact where the
    # Gram-matrix shortcut loses precision, and the block keeps memory near 16 M floats for any C.
    n = len(classes)
    rows = max(1, 16_000_000 // (n * x.shape[1] + 1))
    total = 0.0
    for start in range(0, n, rows):
        block = centroids[start : start + rows]  # (r, D)
        d = np.linalg.norm(block[:, None, :] - centroids[None, :, :], axis=2)  # (r, C)
        total += d.sum()
    distance = total / (n * (n - 1))  # the sum counted each unordered pair twice, the diagonal is 0
    if distance == 0:
        return float("inf")  # every centroid coincides: a collapsed space, the worst possible ratio
    return float(radius / distance)
