"""The asymmetric dual encoder: a compact image tower, a large (mostly frozen) text tower, and the shared
learnable temperature, built from a `ModelConfig`."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from hwkit.errors import UserError
from train.config import ModelConfig
from train.objectives.losses import LogitScale
from train.objectives.phoc import phoc_head
from train.towers.image_tower import LAST_WIDTH, ImageTower
from train.towers.text_tower import TextTower, TextTowerConfig


def resolve_text_encoder(model_path: str) -> Path:
    """The text encoder folder: the configured path, or the prepared multilingual-e5-small in the cache."""
    if model_path:
        return Path(model_path).expanduser().resolve()
    from train.towers.e5_convert import default_encoder_dir

    return default_encoder_dir()


class WeightsError(UserError, ValueError):
    """Saved weights that do not fit the model their config describes."""


class DualEncoder(nn.Module):
    def __init__(self, config: ModelConfig, text_encoder: Path, phoc_buckets: int = 0) -> None:
        """`phoc_buckets` > 0 adds the training-only PHOC head on the image tower's pooled features
        (train/objectives/phoc.py); retrieval never uses it, and a model built without it ignores its weights."""
        super().__init__()
        self.config = config
        self.image = ImageTower(config.image)
        t = config.text
        self.text = TextTower(TextTowerConfig(model_path=str(text_encoder), embed_dim=config.image.embed_dim,
                                              proj_hidden=t.proj_hidden, prefix=t.prefix, max_length=t.max_length))
        self.text.lock(t.unlocked_layers)
        self.logit_scale = LogitScale(config.init_temperature)
        self.phoc_head = phoc_head(LAST_WIDTH, phoc_buckets) if phoc_buckets else None

    def forward(self, images: torch.Tensor, texts: list[str], semantic_ids: torch.Tensor,
                gallery: list[str] | None = None, text_index: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The inputs of `RetrievalLoss`: image and text embeddings (B, D), semantic IDs (B,), scale 1/τ.

        With `gallery` (N strings) and `text_index` (B,) — row i's text is gallery[text_index[i]] — the
        gallery is embedded once, returned as "gallery_embeds" (N, D), and the rows' text embeddings are
        taken from it.
        """
        pooled = self.image.pooled(images)
        out = {"image_embeds": self.image.embed(pooled), "semantic_ids": semantic_ids, "logit_scale": self.logit_scale()}
        if self.phoc_head is not None:
            out["phoc_logits"] = self.phoc_head(pooled)
        if gallery is None:
            return {**out, "text_embeds": self.text(texts)}
        embeds = self.text(gallery)
        return {**out, "text_embeds": embeds[text_index], "gallery_embeds": embeds}

    def saved_state(self) -> dict[str, torch.Tensor]:
        """What a checkpoint stores: everything but the frozen text-encoder weights, which are a pure
        function of the encoder folder (recorded with its checksum) and would add ~470 MB per checkpoint."""
        return {k: v for k, v in self.state_dict().items() if k not in self.frozen_text_keys()}

    def frozen_text_keys(self) -> set[str]:
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        return {f"text.model.{n}" for n, _ in self.text.model.named_parameters()} - trainable

    def load_saved_state(self, state: dict[str, torch.Tensor], where: str) -> None:
        """Load checkpoint weights. The training-only PHOC head is optional both ways: a model without one
        drops its weights, and one with it keeps its fresh head when the weights have none or another size
        (fine-tuning from a run trained without it, or with other buckets)."""
        head = {} if self.phoc_head is None else {f"phoc_head.{k}": v.shape for k, v in self.phoc_head.state_dict().items()}
        state = {k: v for k, v in state.items() if not k.startswith("phoc_head.") or head.get(k) == v.shape}
        expected = {k for k in self.saved_state() if not k.startswith("phoc_head.")}
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - set(self.state_dict()))
        if missing or unexpected:
            what = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
            raise WeightsError(f"{where}: weights do not fit this model ({what}; "
                             f"{len(missing)} missing, {len(unexpected)} unexpected): was it trained with another config?")
        try:
            self.load_state_dict(state, strict=False)
            self.text.cache.clear()
        except RuntimeError as exc:
            raise WeightsError(f"{where}: weights do not fit this model ({str(exc).splitlines()[-1].strip()})") from None
