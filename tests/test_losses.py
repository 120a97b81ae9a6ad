"""train.objectives.losses against brute-force double loops over the batch (DESIGN.md §2 definitions)."""

from __future__ import annotations

import itertools
import math

import pytest

torch = pytest.importorskip("torch")

from train.objectives.losses import (  # noqa: E402
    InfoNCE,
    InvarianceLoss,
    LexiconInfoNCE,
    LogitScale,
    PerLanguageGalleryLoss,
    PrototypeLoss,
    RetrievalLoss,
)

SEEDS = range(5)


def make_batch(seed: int, b: int = 12, d: int = 8, n_ids: int = 4, dtype=torch.float64):
    """L2-normalised (B, D) image and text embeddings and (B,) semantic IDs with repeats."""
    g = torch.Generator().manual_seed(seed)
    v = torch.nn.functional.normalize(torch.randn(b, d, generator=g, dtype=dtype), dim=1)
    t = torch.nn.functional.normalize(torch.randn(b, d, generator=g, dtype=dtype), dim=1)
    y = torch.randint(0, n_ids, (b,), generator=g)
    return v, t, y


def dot(a, b) -> float:
    return sum(x * y for x, y in zip(a, b))


def brute_infonce(queries, keys, y, scale, label_aware) -> float:
    """−(1/B) Σ_i log( Σ_{j positive} exp(scale·s_ij) / Σ_j exp(scale·s_ij) ), by loops."""
    b = len(queries)
    total = 0.0
    for i in range(b):
        num = den = 0.0
        for j in range(b):
            e = math.exp(scale * dot(queries[i], keys[j]))
            den += e
            if (y[j] == y[i]) if label_aware else (i == j):
                num += e
        total += -math.log(num / den)
    return total / b


def brute_inv(v, t, y, eps) -> float:
    u, yy = v + t, y + y
    num = cnt = 0.0
    for a in range(len(u)):
        for b in range(len(u)):
            if a != b and yy[a] == yy[b]:
                num += dot(u[a], u[b])
                cnt += 1
    return 1 - num / (cnt + eps)


def lists(v, t, y):
    return v.tolist(), t.tolist(), y.tolist()


@pytest.mark.parametrize("label_aware", [False, True])
@pytest.mark.parametrize("seed", SEEDS)
def test_infonce_matches_brute_force(seed, label_aware):
    v, t, y = make_batch(seed)
    scale = 1 / 0.07
    out = InfoNCE(label_aware=label_aware)(v, t, y, torch.tensor(scale, dtype=v.dtype))
    vl, tl, yl = lists(v, t, y)
    v2t = brute_infonce(vl, tl, yl, scale, label_aware)
    t2v = brute_infonce(tl, vl, yl, scale, label_aware)
    assert out["v2t"].item() == pytest.approx(v2t, rel=1e-10)
    assert out["t2v"].item() == pytest.approx(t2v, rel=1e-10)
    assert out["itc"].item() == pytest.approx((v2t + t2v) / 2, rel=1e-10)


def test_plain_infonce_is_cross_entropy_on_the_diagonal():
    v, t, y = make_batch(0)
    scale = torch.tensor(20.0, dtype=v.dtype)
    out = InfoNCE()(v, t, y, scale)
    labels = torch.arange(len(y))
    assert out["v2t"].item() == pytest.approx(torch.nn.functional.cross_entropy(scale * v @ t.T, labels).item())
    assert out["t2v"].item() == pytest.approx(torch.nn.functional.cross_entropy(scale * t @ v.T, labels).item())


@pytest.mark.parametrize("eps", [1e-6, 0.5])
@pytest.mark.parametrize("seed", SEEDS)
def test_invariance_matches_brute_force(seed, eps):
    v, t, y = make_batch(seed)
    got = InvarianceLoss(eps=eps)(v, t, y).item()
    assert got == pytest.approx(brute_inv(*lists(v, t, y), eps), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_float32_agrees_with_float64(seed):
    v, t, y = make_batch(seed)
    loss = RetrievalLoss(label_aware=bool(seed % 2))
    scale = torch.tensor(1 / 0.07)
    hi = loss(v, t, y, scale.double())
    lo = loss(v.float(), t.float(), y, scale)
    for k in hi:
        assert lo[k].dtype == torch.float32
        assert lo[k].item() == pytest.approx(hi[k].item(), rel=1e-5, abs=1e-6)


SWITCHES = [c for c in itertools.product([False, True], repeat=3) if any(c)]


@pytest.mark.parametrize("use_v2t,use_t2v,use_inv", SWITCHES)
def test_retrieval_loss_total_and_switches(use_v2t, use_t2v, use_inv):
    v, t, y = make_batch(3)
    lam, scale = 0.7, 12.0
    out = RetrievalLoss(use_v2t=use_v2t, use_t2v=use_t2v, use_inv=use_inv, lam=lam)(
        v, t, y, torch.tensor(scale, dtype=v.dtype)
    )
    vl, tl, yl = lists(v, t, y)
    expected = {}
    if use_v2t:
        expected["v2t"] = brute_infonce(vl, tl, yl, scale, False)
    if use_t2v:
        expected["t2v"] = brute_infonce(tl, vl, yl, scale, False)
    directions = [expected[d] for d in ("v2t", "t2v") if d in expected]
    if directions:
        expected["itc"] = sum(directions) / len(directions)
    if use_inv:
        expected["inv"] = brute_inv(vl, tl, yl, 1e-6)
    expected["loss"] = expected.get("itc", 0.0) + lam * expected.get("inv", 0.0)
    assert set(out) == set(expected)  # terms that are off are absent
    for k, val in expected.items():
        assert out[k].item() == pytest.approx(val, rel=1e-10)


def make_gallery(seed: int, ids: list[int], d: int = 8):
    """L2-normalised (N, D) gallery texts with their (N,) semantic IDs (an ID may have 1-3 texts)."""
    g = torch.Generator().manual_seed(seed + 100)
    gallery = torch.nn.functional.normalize(torch.randn(len(ids), d, generator=g, dtype=torch.float64), dim=1)
    return gallery, torch.tensor(ids)


def brute_prototype(queries, query_ids, gallery, gallery_ids, scale) -> float:
    """−(1/Q) Σ_q log( exp(scale·s(q, p_y)) / Σ_k exp(scale·s(q, p_k)) ), p_k the normalised sum of ID k's texts."""
    prototypes = {}
    for k in sorted(set(gallery_ids)):
        total = [sum(g[j] for g, y in zip(gallery, gallery_ids) if y == k) for j in range(len(gallery[0]))]
        norm = math.sqrt(dot(total, total))
        prototypes[k] = [x / norm for x in total]
    loss = 0.0
    for q, y in zip(queries, query_ids):
        den = sum(math.exp(scale * dot(q, p)) for p in prototypes.values())
        loss += -math.log(math.exp(scale * dot(q, prototypes[y])) / den)
    return loss / len(queries)


@pytest.mark.parametrize("seed", SEEDS)
def test_prototype_loss_matches_brute_force(seed):
    v, t, y = make_batch(seed)  # IDs 0..3
    gallery, gallery_ids = make_gallery(seed, [0, 0, 0, 1, 1, 2, 2, 2, 3, 5])  # ID 5: a text no image has
    scale, lam, align = 9.0, 0.3, 0.6
    out = RetrievalLoss(objective="prototype", align=align, lam=lam)(
        v, t, y, torch.tensor(scale, dtype=v.dtype), gallery_embeds=gallery, gallery_ids=gallery_ids)
    vl, tl, yl = lists(v, t, y)
    gl, gyl = gallery.tolist(), gallery_ids.tolist()
    v2p, t2p = brute_prototype(vl, yl, gl, gyl, scale), brute_prototype(tl, yl, gl, gyl, scale)  # the rows' texts
    inv = brute_inv(vl, tl, yl, 1e-6)
    whole = PrototypeLoss()(v, y, gallery, gallery_ids, torch.tensor(scale, dtype=v.dtype))  # every gallery text
    assert whole["t2p"].item() == pytest.approx(brute_prototype(gl, gyl, gl, gyl, scale), rel=1e-10)
    assert set(out) == {"loss", "v2p", "t2p", "inv"}
    assert out["v2p"].item() == pytest.approx(v2p, rel=1e-10)
    assert out["t2p"].item() == pytest.approx(t2p, rel=1e-10)
    assert out["loss"].item() == pytest.approx(v2p + align * t2p + lam * inv, rel=1e-10)
    off = RetrievalLoss(objective="prototype", use_inv=False)(v, t, y, torch.tensor(scale, dtype=v.dtype),
                                                              gallery_embeds=gallery, gallery_ids=gallery_ids)
    assert set(off) == {"loss", "v2p", "t2p"}


def test_prototype_loss_is_low_when_translations_and_images_meet():
    """Texts of one ID on one point and images on it: L_t2p and L_v2p near 0 at a sharp temperature."""
    g = torch.Generator().manual_seed(0)
    points = torch.nn.functional.normalize(torch.randn(4, 16, generator=g, dtype=torch.float64), dim=1)
    gallery_ids = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    y = torch.tensor([0, 1, 2, 3, 2, 1])
    out = PrototypeLoss()(points[y], y, points[gallery_ids], gallery_ids, torch.tensor(100.0, dtype=torch.float64))
    assert out["v2p"].item() < 1e-3 and out["t2p"].item() < 1e-3
    with pytest.raises(ValueError, match="no text in the gallery"):
        PrototypeLoss()(points[y], y + 10, points[gallery_ids], gallery_ids, torch.tensor(10.0))


@pytest.mark.parametrize("seed", SEEDS)
def test_per_language_gallery_loss_matches_brute_force(seed):
    """L_v2g by loops: for each (image, language) whose ID has a text there, −log of its right texts' share
    of that language's texts; an ID without a text in a language is skipped there, a text of two languages
    counts in both."""
    v, t, y = make_batch(seed)  # IDs 0..3
    ids = [0, 0, 0, 1, 1, 2, 2, 2, 3, 3, 5]
    gallery, gallery_ids = make_gallery(seed, ids)
    languages = torch.tensor([[1, 0, 0, 1, 0, 1, 0, 0, 1, 0, 1],   # en: ID 1's text 3 is also Spanish
                              [0, 1, 0, 1, 0, 0, 1, 0, 0, 0, 0],   # es: IDs 3 and 5 have none
                              [0, 0, 1, 0, 1, 0, 0, 1, 0, 1, 0]], dtype=torch.bool)
    scale = 7.0
    got = PerLanguageGalleryLoss()(v, y, gallery, gallery_ids, languages, torch.tensor(scale, dtype=v.dtype))
    terms = []
    for vi, yi in zip(v.tolist(), y.tolist()):
        for member in languages.tolist():
            e = [math.exp(scale * dot(vi, g)) for g, m in zip(gallery.tolist(), member) if m]
            right = [x for x, m, k in zip(e, [m for m in member if m], [k for k, m in zip(ids, member) if m])
                     if k == yi]
            if right:
                terms.append(-math.log(sum(right) / sum(e)))
    assert got.item() == pytest.approx(sum(terms) / len(terms), rel=1e-10)
    out = RetrievalLoss(objective="prototype", use_inv=False, align=0.5, galleries=2.0)(
        v, t, y, torch.tensor(scale, dtype=v.dtype), gallery_embeds=gallery, gallery_ids=gallery_ids,
        gallery_languages=languages)
    assert set(out) == {"loss", "v2p", "t2p", "v2g"}
    assert out["loss"].item() == pytest.approx((out["v2p"] + 0.5 * out["t2p"] + 2.0 * got).item(), rel=1e-10)
    with pytest.raises(ValueError, match="languages must be"):
        PerLanguageGalleryLoss()(v, y, gallery, gallery_ids, languages[:, :4], torch.tensor(scale))
    with pytest.raises(ValueError, match="needs gallery_languages"):
        RetrievalLoss(objective="prototype", galleries=1.0)(v, t, y, torch.tensor(scale), gallery_embeds=gallery,
                                                            gallery_ids=gallery_ids)


def test_per_language_gallery_loss_asks_for_translations():
    """Images on their own language's text but far from their translations: L_t2p and L_v2p are content
    with texts kept apart, L_v2g is not; with the translations on one point it is near 0."""
    g = torch.Generator().manual_seed(0)
    apart = torch.nn.functional.normalize(torch.randn(6, 64, generator=g, dtype=torch.float64), dim=1)
    ids, langs = torch.tensor([0, 1, 2, 0, 1, 2]), torch.tensor([0, 0, 0, 1, 1, 1])  # 3 IDs × 2 languages
    member = torch.stack([langs == 0, langs == 1])
    scale = torch.tensor(30.0, dtype=torch.float64)
    kept_apart = PerLanguageGalleryLoss()(apart, ids, apart, ids, member, scale)  # each image on its own text
    met = apart[ids]  # both languages' texts of ID k on one point
    together = PerLanguageGalleryLoss()(met, ids, met, ids, member, scale)
    assert together.item() < 1e-3 < kept_apart.item()


def test_every_term_off_is_an_error():
    with pytest.raises(ValueError, match="switched off"):
        RetrievalLoss(use_v2t=False, use_t2v=False, use_inv=False)
    with pytest.raises(ValueError, match="switched off"):
        RetrievalLoss(use_v2t=False, use_t2v=False, use_inv=True, lam=0.0)
    with pytest.raises(ValueError, match="lam"):
        RetrievalLoss(lam=-1.0)


def test_shape_mismatch_is_an_error():
    v, t, y = make_batch(0)
    loss = RetrievalLoss()
    with pytest.raises(ValueError, match="image_embeds and text_embeds"):
        loss(v, t[:-1], y, torch.tensor(10.0))
    with pytest.raises(ValueError, match="semantic_ids"):
        loss(v, t, y[:-1], torch.tensor(10.0))


@pytest.mark.parametrize("seed", SEEDS)
def test_label_aware_equals_plain_when_ids_distinct(seed):
    v, t, _ = make_batch(seed)
    y = torch.randperm(len(v), generator=torch.Generator().manual_seed(seed)) * 3  # distinct, not 0..B-1
    scale = torch.tensor(14.0, dtype=v.dtype)
    plain = InfoNCE()(v, t, y, scale)
    aware = InfoNCE(label_aware=True)(v, t, y, scale)
    for k in plain:
        assert aware[k].item() == pytest.approx(plain[k].item(), rel=1e-12)


def test_label_aware_differs_with_repeated_ids():
    v, t, y = make_batch(1)
    assert len(set(y.tolist())) < len(y)
    scale = torch.tensor(14.0, dtype=v.dtype)
    assert InfoNCE(label_aware=True)(v, t, y, scale)["v2t"] < InfoNCE()(v, t, y, scale)["v2t"]


def test_invariance_is_zero_when_same_id_vectors_coincide():
    y = torch.tensor([0, 2, 0, 1, 2, 2, 1, 0])
    g = torch.Generator().manual_seed(0)
    prototypes = torch.nn.functional.normalize(torch.randn(3, 5, generator=g), dim=1)  # (n_ids, D)
    v = prototypes[y]  # (B, D): every image of an ID is its prototype ...
    t = prototypes[y].clone()  # ... and so is every text
    assert InvarianceLoss()(v, t, y).item() == pytest.approx(0.0, abs=1e-6)
    # antipodal texts: same-modality pairs score +1 but the (more numerous) cross pairs −1, so the mean is < 0
    assert InvarianceLoss()(v, -t, y).item() > 1.0


def test_gradients_flow_to_inputs_and_temperature():
    g = torch.Generator().manual_seed(0)
    raw_v = torch.randn(10, 6, generator=g, requires_grad=True)
    raw_t = torch.randn(10, 6, generator=g, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 3, 3, 0, 4])
    scale = LogitScale()
    for label_aware in (False, True):
        for p in (raw_v, raw_t, scale.log_scale):
            p.grad = None
        v = torch.nn.functional.normalize(raw_v, dim=1)
        t = torch.nn.functional.normalize(raw_t, dim=1)
        out = RetrievalLoss(label_aware=label_aware)(v, t, y, scale())
        out["loss"].backward()
        for p in (raw_v, raw_t, scale.log_scale):
            assert p.grad is not None and torch.isfinite(p.grad).all()
        assert scale.log_scale.grad.abs().item() > 0
        assert raw_v.grad.abs().sum().item() > 0 and raw_t.grad.abs().sum().item() > 0


def test_logit_scale_init_and_clamp():
    scale = LogitScale()
    assert scale().item() == pytest.approx(1 / 0.07, rel=1e-6)
    with torch.no_grad():
        scale.log_scale.fill_(10.0)  # e^10 ≫ 100
    assert scale().item() == pytest.approx(100.0, rel=1e-6)
    scale.clamp_()
    assert scale.log_scale.item() == pytest.approx(math.log(100.0), rel=1e-6)
    with pytest.raises(ValueError):
        LogitScale(init_temperature=0.001)  # 1/τ = 1000 > 100


@pytest.mark.parametrize("seed", SEEDS)
def test_lexicon_infonce_matches_brute_force(seed):
    """L_v2t against N gallery texts with a multi-positive mask, by loops."""
    v, _, _ = make_batch(seed)
    g = torch.Generator().manual_seed(100 + seed)
    gallery = torch.nn.functional.normalize(torch.randn(20, v.shape[1], generator=g, dtype=v.dtype), dim=1)
    positives = torch.rand(len(v), 20, generator=g) < 0.15
    positives[torch.arange(len(v)), torch.randint(0, 20, (len(v),), generator=g)] = True  # ≥ 1 per row
    scale = 1 / 0.05
    got = LexiconInfoNCE()(v, gallery, positives, torch.tensor(scale, dtype=v.dtype)).item()
    total = 0.0
    for i, vi in enumerate(v.tolist()):
        e = [math.exp(scale * dot(vi, gk)) for gk in gallery.tolist()]
        total -= math.log(sum(x for x, p in zip(e, positives[i].tolist()) if p) / sum(e))
    assert got == pytest.approx(total / len(v), rel=1e-9)
    # RetrievalLoss swaps only L_v2t for it; L_t2v stays in-batch
    out = RetrievalLoss()(v, v, torch.arange(len(v)), torch.tensor(scale, dtype=v.dtype), gallery, positives)
    plain = RetrievalLoss()(v, v, torch.arange(len(v)), torch.tensor(scale, dtype=v.dtype))
    assert out["v2t"].item() == pytest.approx(got) and out["t2v"].item() == pytest.approx(plain["t2v"].item())
    with pytest.raises(ValueError, match="positives must be"):
        LexiconInfoNCE()(v, gallery, positives[:, :5], torch.tensor(scale))
