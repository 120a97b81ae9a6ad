"""train.metrics against brute-force loops and hand-made rankings."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from train.metrics import (
    accuracy_at_k,
    levenshtein,
    mrr,
    normalized_edit_similarity,
    radius_distance_ratio,
    ranks,
    retrieval_report,
)

SEEDS = range(5)


def brute_ranks(sim, qlab, glab) -> list[int]:
    """Sort each query's gallery by score, wrong items first among equals; rank = first correct + 1."""
    out = []
    for q in range(len(qlab)):
        order = sorted(range(len(glab)), key=lambda g: (-sim[q][g], glab[g] == qlab[q]))
        out.append(next(i for i, g in enumerate(order) if glab[g] == qlab[q]) + 1)
    return out


def random_case(seed: int, q: int = 40, g: int = 15, n_ids: int = 6):
    """Integer scores (many ties) and repeated labels; every query's label is in the gallery."""
    rng = np.random.default_rng(seed)
    glab = rng.integers(0, n_ids, g)
    glab[:n_ids] = np.arange(n_ids)  # each ID at least once
    qlab = rng.integers(0, n_ids, q)
    sim = rng.integers(0, 4, (q, g)).astype(np.float32)
    return sim, qlab, glab


@pytest.mark.parametrize("seed", SEEDS)
def test_ranks_match_brute_force(seed):
    sim, qlab, glab = random_case(seed)
    got = ranks(sim, qlab, glab)
    assert got.dtype == np.int64
    assert got.tolist() == brute_ranks(sim.tolist(), qlab.tolist(), glab.tolist())


def test_ranks_hand_made():
    glab = np.array([10, 20, 30, 20])
    sim = np.array(
        [
            [0.9, 0.1, 0.2, 0.3],  # label 10 best: rank 1
            [0.9, 0.1, 0.2, 0.8],  # label 20: best correct 0.8 (item 3), beaten by 0.9: rank 2
            [0.9, 0.8, 0.2, 0.3],  # label 30: 0.2 beaten by three: rank 4
            [0.5, 0.5, 0.1, 0.1],  # label 20 ties the wrong 0.5: pessimistic, rank 2
            [0.3, 0.3, 0.3, 0.3],  # label 30 ties everything: the three wrong items go first: rank 4
        ]
    )
    qlab = np.array([10, 20, 30, 20, 30])
    assert ranks(sim, qlab, glab).tolist() == [1, 2, 4, 2, 4]


def test_ties_are_pessimistic():
    glab = np.array([0, 1, 1, 2, 3])
    sim = np.zeros((2, 5))
    # all equal: a query with 2 correct items ranks after the 3 wrong ones; other correct items don't count
    assert ranks(sim, np.array([1, 3]), glab).tolist() == [4, 5]


@pytest.mark.parametrize("chunk", [1, 3, 7, 40, 1000])
def test_chunked_equals_unchunked(chunk):
    sim, qlab, glab = random_case(11, q=53)
    rng = np.random.default_rng(0)
    sim = sim + rng.normal(0, 0.1, sim.shape).astype(np.float32)  # mix ties and distinct scores
    full = ranks(sim, qlab, glab, chunk=len(qlab))
    assert np.array_equal(ranks(sim, qlab, glab, chunk=chunk), full)
    assert retrieval_report(sim, qlab, glab, chunk=chunk) == retrieval_report(sim, qlab, glab, chunk=len(qlab))


def test_query_without_correct_item_is_an_error():
    with pytest.raises(ValueError, match="no correct gallery item"):
        ranks(np.zeros((2, 3)), np.array([0, 9]), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="query_labels"):
        ranks(np.zeros((2, 3)), np.array([0]), np.array([0, 1, 2]))


@pytest.mark.parametrize("seed", SEEDS)
def test_accuracy_and_mrr_match_loops(seed):
    sim, qlab, glab = random_case(seed)
    r = brute_ranks(sim.tolist(), qlab.tolist(), glab.tolist())
    report = retrieval_report(sim, qlab, glab)
    assert set(report) == {"acc@1", "acc@3", "acc@5", "mrr", "n_queries"}
    assert report["n_queries"] == len(qlab)
    for k in (1, 3, 5):
        hits = 0
        for x in r:
            hits += x <= k
        assert report[f"acc@{k}"] == pytest.approx(hits / len(r))
        assert accuracy_at_k(np.array(r), k) == pytest.approx(hits / len(r))
    recip = 0.0
    for x in r:
        recip += 1 / x
    assert report["mrr"] == pytest.approx(recip / len(r))


def test_accuracy_and_mrr_hand_made():
    r = np.array([1, 2, 4, 1, 6])
    assert accuracy_at_k(r, 1) == pytest.approx(0.4)
    assert accuracy_at_k(r, 3) == pytest.approx(0.6)
    assert accuracy_at_k(r, 5) == pytest.approx(0.8)
    assert mrr(r) == pytest.approx((1 + 1 / 2 + 1 / 4 + 1 + 1 / 6) / 5)
    with pytest.raises(ValueError):
        mrr(np.array([], dtype=np.int64))
    with pytest.raises(ValueError):
        accuracy_at_k(np.array([0, 1]), 1)


def brute_levenshtein(a: str, b: str) -> int:
    """Full (|a|+1) × (|b|+1) table."""
    d = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        for j in range(len(b) + 1):
            if i == 0 or j == 0:
                d[i][j] = i + j
            else:
                d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
    return d[-1][-1]


@pytest.mark.parametrize("seed", SEEDS)
def test_levenshtein_matches_table(seed):
    rng = random.Random(seed)
    alphabet = "abcñá水火"
    for _ in range(30):
        a = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8)))
        b = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8)))
        assert levenshtein(a, b) == brute_levenshtein(a, b) == levenshtein(b, a)


def test_nes_edge_cases():
    assert normalized_edit_similarity("", "") == 1.0
    assert normalized_edit_similarity("agua", "agua") == 1.0
    assert normalized_edit_similarity("abc", "xyz") == 0.0
    assert normalized_edit_similarity("", "water") == 0.0
    assert normalized_edit_similarity("water", "") == 0.0
    assert normalized_edit_similarity("kitten", "sitting") == pytest.approx(1 - 3 / 7)
    assert normalized_edit_similarity("水", "火") == 0.0  # by characters, not bytes
    assert normalized_edit_similarity("año", "ano") == pytest.approx(1 - 1 / 3)


def test_rd_hand_computed():
    # A: (-1,0),(1,0) → centroid (0,0), radius 1; B: (3,2),(3,6) → centroid (3,4), radius 2;
    # C: singleton (0,8) → no radius, centroid (0,8). R = (1 + 2)/2 = 1.5.
    # Centroid distances: |A−B| = 5, |A−C| = 8, |B−C| = 5 → D = 6. R/D = 0.25.
    x = np.array([[-1, 0], [1, 0], [3, 2], [3, 6], [0, 8]], dtype=float)
    labels = np.array(["A", "A", "B", "B", "C"])
    assert radius_distance_ratio(x, labels) == pytest.approx(0.25)


def brute_rd(x, labels) -> float:
    classes = sorted(set(labels))
    cent = {}
    for c in classes:
        pts = [p for p, l in zip(x, labels) if l == c]
        cent[c] = [sum(col) / len(pts) for col in zip(*pts)]
    radii = []
    for c in classes:
        pts = [p for p, l in zip(x, labels) if l == c]
        if len(pts) >= 2:
            radii.append(sum(math.dist(p, cent[c]) for p in pts) / len(pts))
    dists = []
    for i in range(len(classes)):
        for j in range(len(classes)):
            if i < j:
                dists.append(math.dist(cent[classes[i]], cent[classes[j]]))
    return (sum(radii) / len(radii)) / (sum(dists) / len(dists))


@pytest.mark.parametrize("seed", SEEDS)
def test_rd_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(30, 4))
    labels = rng.integers(0, 9, 30)
    assert radius_distance_ratio(x, labels) == pytest.approx(brute_rd(x.tolist(), labels.tolist()), rel=1e-10)


def test_rd_degenerate_inputs():
    with pytest.raises(ValueError):
        radius_distance_ratio(np.zeros((3, 2)), np.array([0, 0, 0]))  # one class
    with pytest.raises(ValueError):
        radius_distance_ratio(np.eye(3), np.array([0, 1, 2]))  # no class with two points
    assert radius_distance_ratio(np.ones((4, 2)), np.array([0, 0, 1, 1])) == math.inf  # collapsed
