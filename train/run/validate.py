"""Validation during training: retrieval Acc@1 on a held-out set at epoch ends, so a run shows whether it is
still learning (metrics.jsonl, curves.png).

The set is decoded once (`ValidationSet`: at most `max_images` rows, spread evenly over it). Each time, the
image tower is copied and its BatchNorm statistics re-estimated on a few training batches with the current
weights (`recalibrate_bn`: the running averages trail the weights, as at the end of a run), then the
within-language Acc@1 per language and the mean cross-lingual Acc@1 over the directions present are computed
against the lexicon texts of the set's semantic IDs, as `train eval` computes them. The training state does
not change: the RNG is forked and the copy is thrown away.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from synth.lexicon import Lexicon
from train.metrics import accuracy_at_k, ranks
from train.run.data import ShardSet
from train.run.images import decode

LANGS = ("en", "es", "zh")


@torch.no_grad()
def recalibrate_bn(image: torch.nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Precise BatchNorm: replace the running statistics of the image tower's trainable BN layers by their
    plain average over `batches` computed with the final weights.

    With the paper's BN momentum (0.01, from the TensorFlow decay 0.99) the running averages trail the
    weights by ~100 steps; after a short or fast-moving run they no longer describe the final network and
    eval-mode embeddings collapse (measured on a 240-step test run: Acc@1 at chance in eval mode, 1.0 in
    train mode or after recalibration). Frozen blocks (see ImageTower.lock) keep their statistics.
    Returns the number of batches used.
    """
    was_training = image.training
    image.train()
    layers = [m for m in image.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.training]
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch weighs the same
    n = 0
    for images in batches:
        image(images)
        n += 1
    for m, momentum in zip(layers, momenta):
        m.momentum = momentum
    image.train(was_training)
    return n


class ValidationSet:
    """Held-out word images, decoded once at the model's input size, with their semantic IDs and languages."""

    def __init__(self, roots: Sequence[Path], lexicon: Lexicon, height: int, width: int, max_images: int,
                 crop: bool = False) -> None:
        shards = ShardSet.load(roots, lexicon)
        rows = np.unique(np.linspace(0, len(shards) - 1, min(max_images, len(shards))).round().astype(np.int64))
        self.images = torch.from_numpy(np.stack([decode(shards.png(r), height, width, crop) for r in rows])[:, None])
        self.semantic_ids, self.langs = shards.semantic_ids[rows], shards.langs[rows]
        ids = np.unique(self.semantic_ids)
        present = [lang for lang in LANGS if (self.langs == lang).any()]
        self.gallery_ids = ids
        self.gallery_texts = {lang: [lexicon.entries[i].text(lang) for i in ids] for lang in LANGS}
        self.directions = [(a, b) for a in present for b in LANGS if b != a]
        self.present = present

    def __len__(self) -> int:
        return len(self.semantic_ids)

    @torch.no_grad()
    def score(self, model: torch.nn.Module, bn_batches: Iterable[torch.Tensor], batch_size: int = 256) -> dict[str, float]:
        """{"val_acc1": within-language over all images, "val_acc1_<lang>", "val_cross_acc1": mean over the
        directions} for a DualEncoder in training, which is left as it was."""
        device = next(model.image.parameters()).device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            image = copy.deepcopy(model.image)
            recalibrate_bn(image, bn_batches)
            image.eval()
            embeds = torch.cat([image(self.images[i: i + batch_size].to(device)).float()
                                for i in range(0, len(self), batch_size)]).cpu().numpy()
            text_training = model.text.training
            model.text.eval()
            galleries = {lang: model.text.encode(texts).float().cpu().numpy() for lang, texts in self.gallery_texts.items()}
            model.text.train(text_training)

        def acc1(query: str, gallery: str) -> tuple[float, int]:
            q = self.langs == query
            r = ranks(embeds[q] @ galleries[gallery].T, self.semantic_ids[q], self.gallery_ids)
            return accuracy_at_k(r, 1), int(q.sum())

        within = {lang: acc1(lang, lang) for lang in self.present}
        out = {"val_acc1": sum(a * n for a, n in within.values()) / sum(n for _, n in within.values())}
        out.update({f"val_acc1_{lang}": a for lang, (a, _) in within.items()})
        if self.directions:
            out["val_cross_acc1"] = float(np.mean([acc1(a, b)[0] for a, b in self.directions]))
        return out
