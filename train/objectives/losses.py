"""Training objectives of the reference method (DESIGN.md §2; "language-agnostic handwriting retrieval", §3.3).

Notation: v_i and t_i are the L2-normalised image and text embeddings of row i of a batch of B rows,
s(a, b) = a·b their cosine similarity, y_i the row's semantic ID, τ the learnable temperature held as
log(1/τ) by `LogitScale`. The losses take the scale 1/τ as an argument (open_clip's `logit_scale`), so
the model that owns the parameter can return a dict keyed exactly like `RetrievalLoss.forward`'s
arguments: image_embeds, text_embeds, semantic_ids, logit_scale.

    L_v2t = −(1/B) Σ_i log( exp(s(v_i,t_i)/τ) / Σ_j exp(s(v_i,t_j)/τ) )     image → text
    L_t2v = −(1/B) Σ_i log( exp(s(t_i,v_i)/τ) / Σ_j exp(s(t_i,v_j)/τ) )     text → image
    L_ITC = (L_v2t + L_t2v) / 2
    L_INV = 1 − Σ_ab M_ab s(u_a,u_b) / (Σ_ab M_ab + ε),  U = {v_1..v_B, t_1..t_B},
            M_ab = 1 if y_a = y_b and a ≠ b else 0
    L     = L_ITC + λ·L_INV

Option (not the paper's): with `negatives="lexicon"` L_v2t ranks each image against every lexicon text of
the training languages, g_1..g_N, instead of the batch's texts (`LexiconInfoNCE`).

Objective `prototype` (this toolkit's default; `PrototypeLoss`): one language-agnostic prototype per semantic
ID, the normalised sum of its texts' embeddings; images and texts are both classified against all of them:

    p_k   = Σ_{n: c_n = k} g_n / ‖Σ_{n: c_n = k} g_n‖
    L_v2p = −(1/B) Σ_i log( exp(s(v_i,p_{y_i})/τ) / Σ_k exp(s(v_i,p_k)/τ) )
    L_t2p = −(1/B) Σ_i log( exp(s(t_i,p_{y_i})/τ) / Σ_k exp(s(t_i,p_k)/τ) )
    L     = L_v2p + α·L_t2p (+ γ·L_v2g) (+ λ·L_INV when on)

With γ = `galleries` > 0 (`PerLanguageGalleryLoss`), each image is also classified against the gallery texts
of each language in turn — the evaluation's galleries, its own script's and the other two:

    L_v2g = −(1/|S|) Σ_{(i,l)∈S} log( Σ_{n∈P_il} exp(s(v_i,g_n)/τ) / Σ_{n∈G_l} exp(s(v_i,g_n)/τ) )

with G_l the gallery texts in language l, P_il = {n ∈ G_l : c_n = y_i} and S the pairs with P_il ≠ ∅.

L_t2p is taken over the batch's texts t_i (each a gallery text g_n of the row's ID): an unbiased estimate of
the mean over the whole gallery at 1/30 of its cost (B = 128 against N = 4,380; the full form was a quarter
of a 2-core training step).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class LogitScale(nn.Module):
    """Learnable inverse temperature 1/τ, stored as log(1/τ) like CLIP's `logit_scale`.

    Initialised at τ = 0.07 (scale ≈ 14.3) and capped at a scale of 100 (τ ≥ 0.01), CLIP's values.
    `forward()` returns exp(min(log_scale, log 100)); call `clamp_()` after each optimiser step, as
    open_clip does, so the stored value never sits above the cap where its gradient is zero.
    """

    def __init__(self, init_temperature: float = 0.07, max_scale: float = 100.0):
        super().__init__()
        if not (max_scale >= 1 and 0 < init_temperature and 1 / init_temperature <= max_scale):
            raise ValueError(
                f"need max_scale ≥ 1 and 1/max_scale ≤ init_temperature; got {init_temperature}, {max_scale}"
            )
        self.max_log_scale = math.log(max_scale)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))

    def forward(self) -> torch.Tensor:
        return self.log_scale.clamp(max=self.max_log_scale).exp()

    @torch.no_grad()
    def clamp_(self) -> None:
        """Clamp the stored log(1/τ) into [0, log max_scale] in place (after optimizer.step())."""
        self.log_scale.clamp_(0.0, self.max_log_scale)


def _check_batch(image_embeds: torch.Tensor, text_embeds: torch.Tensor, semantic_ids: torch.Tensor) -> None:
    if image_embeds.ndim != 2 or image_embeds.shape != text_embeds.shape:
        raise ValueError(
            f"image_embeds and text_embeds must both be (B, D); got {tuple(image_embeds.shape)} "
            f"and {tuple(text_embeds.shape)}"
        )
    if semantic_ids.shape != image_embeds.shape[:1]:
        raise ValueError(
            f"semantic_ids must be (B,) = ({image_embeds.shape[0]},); got {tuple(semantic_ids.shape)}"
        )


def _multi_positive_nll(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    # −(1/B) Σ_i log( Σ_{j∈P(i)} exp(logits_ij) / Σ_j exp(logits_ij) ), logits and positives (B, B).
    # With P(i) = {i} this is F.cross_entropy(logits, arange(B)); every row has its diagonal in P(i),
    # so the masked logsumexp never sees an all -inf row.
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # autocast gives fp16; sum in fp32
    pos = logits.masked_fill(~positives, float("-inf")).logsumexp(dim=1)  # (B,)
    return (logits.logsumexp(dim=1) - pos).mean()


class InfoNCE(nn.Module):
    """Symmetric InfoNCE with a learnable temperature: L_v2t, L_t2v and L_ITC = (L_v2t + L_t2v)/2.

    L_v2t = −(1/B) Σ_i log( exp(s(v_i,t_i)/τ) / Σ_j exp(s(v_i,t_j)/τ) ), L_t2v the same with the roles of
    images and texts swapped (paper eqs. 3–5). As in the paper, another row with the same semantic ID is
    a negative, even though its text is the same anchor or a synonym: that is the default.

    `label_aware=True` is an option to measure, not the paper's loss: every column with the same semantic
    ID is a positive (multi-positive InfoNCE),
        L_v2t = −(1/B) Σ_i log( Σ_{j: y_j = y_i} exp(s(v_i,t_j)/τ) / Σ_j exp(s(v_i,t_j)/τ) ),
    and likewise for L_t2v. With all IDs in the batch distinct the two forms are equal.
    """

    def __init__(self, label_aware: bool = False):
        super().__init__()
        self.label_aware = label_aware

    def get_ground_truth(self, semantic_ids: torch.Tensor) -> torch.Tensor:
        """(B, B) boolean positive mask: the diagonal, or y_i = y_j when label-aware (symmetric either way)."""
        if self.label_aware:
            return semantic_ids[:, None] == semantic_ids[None, :]
        return torch.eye(semantic_ids.shape[0], dtype=torch.bool, device=semantic_ids.device)

    def get_logits(
        self, image_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits_per_image, logits_per_text), each (B, B): s/τ with rows the queries of that direction."""
        logits_per_image = logit_scale * image_embeds @ text_embeds.T  # (B, B): row i = v_i against all t_j
        return logits_per_image, logits_per_image.T

    def forward(
        self,
        image_embeds: torch.Tensor,
        text_embeds: torch.Tensor,
        semantic_ids: torch.Tensor,
        logit_scale: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """{"v2t", "t2v", "itc"} for L2-normalised (B, D) embeddings, (B,) semantic IDs and scale 1/τ."""
        _check_batch(image_embeds, text_embeds, semantic_ids)
        logits_per_image, logits_per_text = self.get_logits(image_embeds, text_embeds, logit_scale)
        positives = self.get_ground_truth(semantic_ids)  # symmetric, so it serves both directions
        v2t = _multi_positive_nll(logits_per_image, positives)
        t2v = _multi_positive_nll(logits_per_text, positives)
        return {"v2t": v2t, "t2v": t2v, "itc": (v2t + t2v) / 2}


class LexiconInfoNCE(nn.Module):
    """L_v2t against the whole lexicon: an option to measure, not the paper's loss.

    g_1..g_N are the text embeddings of every lexicon entry of the training languages, P(i) ⊆ {1..N} the
    entries that count as right for image i (its own text; with label-aware training also its
    translations):
        L_v2t = −(1/B) Σ_i log( Σ_{k∈P(i)} exp(s(v_i,g_k)/τ) / Σ_{k=1..N} exp(s(v_i,g_k)/τ) ).
    Every image meets all N − |P(i)| wrong words as negatives at every step, however small the batch: a
    classifier whose class weights are the projected text embeddings. With a lexicon of thousands and a
    frozen text encoder the N texts cost one projector pass per step. L_t2v stays in-batch.
    """

    def forward(
        self,
        image_embeds: torch.Tensor,
        gallery_embeds: torch.Tensor,
        positives: torch.Tensor,
        logit_scale: torch.Tensor,
    ) -> torch.Tensor:
        """L_v2t for (B, D) images, (N, D) gallery texts, a (B, N) boolean positive mask and scale 1/τ."""
        if positives.shape != (image_embeds.shape[0], gallery_embeds.shape[0]):
            raise ValueError(f"positives must be (B, N) = ({image_embeds.shape[0]}, {gallery_embeds.shape[0]}); "
                             f"got {tuple(positives.shape)}")
        return _multi_positive_nll(logit_scale * image_embeds @ gallery_embeds.T, positives)


class PrototypeLoss(nn.Module):
    """Language-agnostic semantic prototypes: images and texts both classified against one prototype per ID.

    g_1..g_N are the text embeddings of the gallery (every lexicon text of the training rows, in all their
    languages) and c_n the semantic ID of g_n. The prototype of ID k is the normalised sum of its texts,
        p_k = Σ_{n: c_n = k} g_n / ‖Σ_{n: c_n = k} g_n‖,
    and with v_i an image of semantic ID y_i and t_i its row's text (one of the g_n):
        L_v2p = −(1/B) Σ_i log( exp(s(v_i,p_{y_i})/τ) / Σ_k exp(s(v_i,p_k)/τ) )     image → prototype
        L_t2p = −(1/B) Σ_i log( exp(s(t_i,p_{y_i})/τ) / Σ_k exp(s(t_i,p_k)/τ) )     text → prototype
    Without `text_embeds`, L_t2p is the mean over every gallery text instead (its expectation).
    L_t2p draws the translations of an ID onto one point and away from every other ID, so a gallery in any
    language ranks an image's meaning the same way; L_v2p asks each image to pick its ID among all of them
    (every ID a negative at every step, and never a translation or a copy of its own text). The image space
    is language-agnostic because one prototype serves an ID's images in all three scripts.
    """

    def forward(
        self,
        image_embeds: torch.Tensor,
        semantic_ids: torch.Tensor,
        gallery_embeds: torch.Tensor,
        gallery_ids: torch.Tensor,
        logit_scale: torch.Tensor,
        text_embeds: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """{"v2p", "t2p"} for (B, D) images with (B,) IDs, (N, D) gallery texts with (N,) IDs, scale 1/τ, and
        optionally the rows' (B, D) texts, which L_t2p then classifies in place of the whole gallery."""
        if gallery_ids.shape != gallery_embeds.shape[:1]:
            raise ValueError(f"gallery_ids must be (N,) = ({gallery_embeds.shape[0]},); got {tuple(gallery_ids.shape)}")
        ids, column = torch.unique(gallery_ids, return_inverse=True)  # (K,) sorted IDs, (N,) prototype of each text
        target = torch.searchsorted(ids, semantic_ids)  # (B,)
        if (target >= len(ids)).any() or (ids[target.clamp(max=len(ids) - 1)] != semantic_ids).any():
            raise ValueError("an image's semantic ID has no text in the gallery")
        g = gallery_embeds.to(torch.promote_types(gallery_embeds.dtype, torch.float32))
        sums = g.new_zeros(len(ids), g.shape[1]).index_add(0, column, g)  # (K, D)
        prototypes = F.normalize(sums, dim=-1)
        v = image_embeds.to(g.dtype)
        texts, text_target = (g, column) if text_embeds is None else (text_embeds.to(g.dtype), target)
        return {"v2p": F.cross_entropy(logit_scale * v @ prototypes.T, target),
                "t2p": F.cross_entropy(logit_scale * texts @ prototypes.T, text_target)}


class PerLanguageGalleryLoss(nn.Module):
    """L_v2g: every image classified against the gallery texts of each language in turn.

    g_1..g_N are the gallery texts with semantic IDs c_n, `languages` (L, N) says which languages each text
    is an entry of (a text such as "radio" can be both), G_l the texts of language l, P_il = {n ∈ G_l :
    c_n = y_i} the right entries of image i in language l and S the pairs (i, l) with P_il ≠ ∅:
        L_v2g = −(1/|S|) Σ_{(i,l)∈S} log( Σ_{n∈P_il} exp(s(v_i,g_n)/τ) / Σ_{n∈G_l} exp(s(v_i,g_n)/τ) ).
    In its own language this is image → text classification over the lexicon; in the other two it asks an
    image to pick its translation among that language's words, which is what cross-lingual retrieval scores.
    L_t2p alone does not: a text classified against prototypes that contain it is right whether or not its
    translations lie near it, and past a few hundred IDs a text projector left to it keeps them apart.
    """

    def forward(self, image_embeds: torch.Tensor, semantic_ids: torch.Tensor, gallery_embeds: torch.Tensor,
                gallery_ids: torch.Tensor, languages: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
        if languages.ndim != 2 or languages.shape[1] != gallery_embeds.shape[0]:
            raise ValueError(f"languages must be (L, N) with N = {gallery_embeds.shape[0]}; got {tuple(languages.shape)}")
        g = gallery_embeds.to(torch.promote_types(gallery_embeds.dtype, torch.float32))
        logits = logit_scale * image_embeds.to(g.dtype) @ g.T  # (B, N)
        # Σ_{n∈G_l} and Σ_{n∈P_il} as products with the (N, L) membership: one exp over (B, N) for every
        # language instead of a masked logsumexp each (those cost 7× the prototype loss at N = 4,380 on a
        # 2-core CPU). In float64 after subtracting each row's maximum, so no term underflows at 1/τ ≤ 100.
        top = logits.detach().amax(dim=1, keepdim=True)
        e = (logits - top).double().exp()  # (B, N)
        member = languages.T.double()  # (N, L)
        same_id = (semantic_ids[:, None] == gallery_ids[None, :]).double()  # (B, N)
        right = (e * same_id) @ member  # (B, L) Σ over P_il
        valid = (same_id @ member) > 0  # (B, L) pairs in S
        if not valid.any():
            raise ValueError("no image's semantic ID has a gallery text in any language")
        nll = (e @ member).log() - right.where(valid, 1.0).log()  # (B, L)
        return nll[valid].mean().to(logits.dtype)


class InvarianceLoss(nn.Module):
    """Omni-modal semantic invariance loss L_INV (paper eqs. 6–7).

    U = {v_1..v_B, t_1..t_B} (2B vectors) with labels y repeated; M_ab = 1 if y_a = y_b and a ≠ b, else 0;
        L_INV = 1 − Σ_ab M_ab s(u_a,u_b) / (Σ_ab M_ab + ε).
    It is one minus the mean cosine similarity over all same-ID pairs across both modalities and all
    languages, so it is 0 when every same-ID vector coincides. ε (default 1e-6) is the paper's smoothing
    term; since each (v_i, t_i) pair shares an ID, Σ M ≥ 2B and ε only matters as a guard.
    """

    def __init__(self, eps: float = 1e-6):
        super().__init__()
        self.eps = eps

    def forward(
        self, image_embeds: torch.Tensor, text_embeds: torch.Tensor, semantic_ids: torch.Tensor
    ) -> torch.Tensor:
        _check_batch(image_embeds, text_embeds, semantic_ids)
        u = torch.cat([image_embeds, text_embeds])  # (2B, D)
        u = u.to(torch.promote_types(u.dtype, torch.float32))  # the class sums cancel; keep fp16 out
        y = torch.cat([semantic_ids, semantic_ids])  # (2B,)
        # Σ_ab M_ab u_a·u_b without the (2B, 2B) matrix: summing u within each class c gives
        # Σ_{a,b∈c} u_a·u_b = |Σ_{a∈c} u_a|², and removing a = b subtracts Σ_a |u_a|². O(B·D) memory
        # instead of (2B)², at batch sizes on the order of the number of semantic IDs.
        _, cls = torch.unique(y, return_inverse=True)  # (2B,) compact class index
        n_cls = int(cls.max()) + 1
        class_sums = u.new_zeros(n_cls, u.shape[1]).index_add(0, cls, u)  # (C, D)
        pair_sim = class_sums.pow(2).sum() - u.pow(2).sum()
        counts = torch.bincount(cls, minlength=n_cls).to(u.dtype)  # (C,)
        n_pairs = counts.pow(2).sum() - y.shape[0]  # Σ_ab M_ab = Σ_c n_c² − 2B
        return 1 - pair_sim / (n_pairs + self.eps)


class RetrievalLoss(nn.Module):
    """Total objective: the paper's L = L_ITC + λ·L_INV (objective "infonce"), each term switchable for its
    ablation (Table 5), or L = L_v2p + α·L_t2p + γ·L_v2g + λ·L_INV (objective "prototype", `PrototypeLoss`
    and `PerLanguageGalleryLoss`).

    The contrastive part averages the directions that are on: (L_v2t + L_t2v)/2 with both, the single
    one otherwise; "itc" in the output is that average. λ = `lam` (default 1.0: the paper says it sets λ
    empirically for all experiments, but the value is lost from our copy, so λ is reported with every
    result). `forward` returns {"loss", "v2t", "t2v", "itc", "inv"} (infonce) or {"loss", "v2p", "t2p",
    "v2g", "inv"} (prototype), without the keys of terms that are off.
    """

    def __init__(
        self,
        use_v2t: bool = True,  # image → text InfoNCE, the paper's primary driver
        use_t2v: bool = True,  # text → image InfoNCE, the regulariser
        use_inv: bool = True,  # omni-modal invariance L_INV
        lam: float = 1.0,  # λ, weight of L_INV
        label_aware: bool = False,  # multi-positive InfoNCE instead of the paper's form
        eps: float = 1e-6,  # ε smoothing of L_INV
        objective: str = "infonce",  # "infonce" (the paper's L_ITC) or "prototype" (L_v2p + α·L_t2p)
        align: float = 1.0,  # α, weight of L_t2p (prototype objective)
        galleries: float = 0.0,  # γ, weight of L_v2g (prototype objective)
    ):
        super().__init__()
        if lam < 0 or align < 0 or galleries < 0:
            raise ValueError(f"lam (λ), align (α) and galleries (γ) must be ≥ 0, got {lam}, {align} and {galleries}")
        if objective not in ("infonce", "prototype"):
            raise ValueError(f"objective must be 'infonce' or 'prototype', got {objective!r}")
        if objective == "infonce" and not (use_v2t or use_t2v or (use_inv and lam > 0)):
            raise ValueError("every loss term is switched off: enable use_v2t, use_t2v or use_inv (with lam > 0)")
        self.use_v2t, self.use_t2v, self.use_inv, self.lam = use_v2t, use_t2v, use_inv, lam
        self.objective, self.align, self.galleries = objective, align, galleries
        self.infonce = InfoNCE(label_aware=label_aware)
        self.lexicon_infonce = LexiconInfoNCE()
        self.prototype = PrototypeLoss()
        self.per_language = PerLanguageGalleryLoss()
        self.invariance = InvarianceLoss(eps=eps)

    def forward(
        self,
        image_embeds: torch.Tensor,
        text_embeds: torch.Tensor,
        semantic_ids: torch.Tensor,
        logit_scale: torch.Tensor,
        gallery_embeds: torch.Tensor | None = None,
        gallery_positives: torch.Tensor | None = None,
        gallery_ids: torch.Tensor | None = None,
        gallery_languages: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Loss terms for L2-normalised (B, D) embeddings, (B,) semantic IDs and the scale 1/τ.

        The prototype objective needs `gallery_embeds` (N, D) with their `gallery_ids` (N,), and L_v2g the
        (L, N) boolean `gallery_languages`. Under infonce,
        given `gallery_embeds` and `gallery_positives` (B, N), L_v2t is `LexiconInfoNCE`'s.
        """
        _check_batch(image_embeds, text_embeds, semantic_ids)
        out: dict[str, torch.Tensor] = {}
        if self.objective == "prototype":
            if gallery_embeds is None or gallery_ids is None:
                raise ValueError("the prototype objective needs gallery_embeds and gallery_ids")
            out.update(self.prototype(image_embeds, semantic_ids, gallery_embeds, gallery_ids, logit_scale, text_embeds))
            total = out["v2p"] + self.align * out["t2p"]
            if self.galleries > 0:
                if gallery_languages is None:
                    raise ValueError("L_v2g (galleries > 0) needs gallery_languages")
                out["v2g"] = self.per_language(image_embeds, semantic_ids, gallery_embeds, gallery_ids,
                                               gallery_languages, logit_scale)
                total = total + self.galleries * out["v2g"]
            if self.use_inv:
                out["inv"] = self.invariance(image_embeds, text_embeds, semantic_ids)
                total = total + self.lam * out["inv"]
            return {"loss": total, **out}
        if self.use_v2t or self.use_t2v:
            nce = self.infonce(image_embeds, text_embeds, semantic_ids, logit_scale)
            if gallery_embeds is not None and self.use_v2t:
                nce["v2t"] = self.lexicon_infonce(image_embeds, gallery_embeds, gallery_positives, logit_scale)
            directions = [d for d, on in (("v2t", self.use_v2t), ("t2v", self.use_t2v)) if on]
            for d in directions:
                out[d] = nce[d]
            out["itc"] = sum(out[d] for d in directions) / len(directions)
        if self.use_inv:
            out["inv"] = self.invariance(image_embeds, text_embeds, semantic_ids)
        total = out.get("itc", 0.0)
        if self.use_inv and self.lam > 0:
            total = total + self.lam * out["inv"]
        return {"loss": total, **out}
