"""Auxiliary PHOC objective: the image tower also predicts which characters a word has, and where.

A pyramidal histogram of characters (PHOC; Almazán et al., 2014, "Word spotting and recognition with
embedded attributes") splits a word of n characters into L equal regions at each level L ∈ LEVELS; character
i occupies [i/n, (i+1)/n] and belongs to a region when at least half of it lies inside. Each (level, region)
has one slot per character bucket, and a character's bucket is its code point modulo `buckets` (every
Latin letter of the lexicon keeps its own slot at 256 or more; CJK characters share a few per slot). With
R = Σ LEVELS regions, the target a ∈ {0, 1}^(R·buckets) has a_{r·buckets + b} = 1 when a character of
bucket b lies in region r. A training-only linear head maps the tower's pooled features f (576) to logits
z = W f + c, and

    L_PHOC = −(1/(B·R)) Σ_i Σ_d [ a_id log σ(z_id) + (1 − a_id) log(1 − σ(z_id)) ]      (D = R·buckets)

is added to the retrieval loss with weight β (`loss.phoc`): a sum over each region's buckets, averaged over
regions and rows, so that its gradient is on the scale of the retrieval loss's (a mean over all D slots
would be ~buckets times smaller). The head's bias starts at −log(buckets), about one character per region. Why: the retrieval objective classifies whole
words, each seen in a few dozen renders, and at 1,460 words it memorises the renders; letters are shared
by thousands of words, so predicting them teaches features that carry to new renders and fonts (the
attribute idea of PHOCNet and of Seq2Emb's recogniser-trained encoder, ../shared/reference). The head is
not part of the tower: retrieval, export and the parameter budget never see it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

LEVELS = (1, 2, 3, 4)


def phoc_size(buckets: int) -> int:
    """Length D of a PHOC vector: one slot per bucket in each of the Σ LEVELS regions."""
    return sum(LEVELS) * buckets


def phoc_bits(text: str, buckets: int) -> list[int]:
    """The set positions of `text`'s PHOC vector, sorted (whitespace is not a character of the word)."""
    chars = [c for c in text.lower() if not c.isspace()]
    n, bits, offset = len(chars), set(), 0
    for level in LEVELS:
        for i, c in enumerate(chars):
            lo, hi = i / n, (i + 1) / n
            for region in range(level):
                overlap = min(hi, (region + 1) / level) - max(lo, region / level)
                if overlap >= 0.5 / n - 1e-12:
                    bits.add((offset + region) * buckets + ord(c) % buckets)
        offset += level
    return sorted(bits)


def phoc_matrix(texts: list[str], buckets: int) -> np.ndarray:
    """(N, D) float32 targets, one row per text."""
    out = np.zeros((len(texts), phoc_size(buckets)), np.float32)
    for row, text in enumerate(texts):
        out[row, phoc_bits(text, buckets)] = 1.0
    return out


def phoc_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """L_PHOC for logits and targets (B, D): binary cross-entropy summed over slots, / (B·R)."""
    bce = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="sum")
    return bce / (logits.shape[0] * sum(LEVELS))


def phoc_head(in_features: int, buckets: int) -> torch.nn.Linear:
    """The training-only head: Linear(in_features → D), its bias at the prior −log(buckets)."""
    head = torch.nn.Linear(in_features, phoc_size(buckets))
    torch.nn.init.normal_(head.weight, 0.0, 0.01)
    torch.nn.init.constant_(head.bias, -math.log(buckets))
    return head


class PhocTargets:
    """The PHOC target of every training row, stored once per distinct text: `of_rows(rows)` is (B, D)."""

    def __init__(self, row_texts: np.ndarray, buckets: int) -> None:
        texts, self.index = np.unique(row_texts.astype(str), return_inverse=True)
        self.index = self.index.reshape(-1)
        self.matrix = phoc_matrix(texts.tolist(), buckets)

    def of_rows(self, rows: np.ndarray) -> np.ndarray:
        return self.matrix[self.index[rows]]
