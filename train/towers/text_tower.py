"""Text tower: a Hugging Face encoder loaded from a local folder, mean pooling over the attention mask, a
learnable projector to the shared embedding space, L2-normalised output.

Freezing follows open_clip: `lock(N)` freezes the embeddings and the bottom (num_layers − N) transformer
layers. The frozen bottom is a fixed function of the text and the lexicon is finite, so `FrozenPrefixCache`
keeps, per distinct string, the hidden states after the last frozen layer; a training step then runs only
the top N layers on the batch's unique strings. Running "only the top layers" needs the model's layer list
(`encoder.layer` for BERT / XLM-R / e5, `transformer.layer` for DistilBERT); the first cached batch is
checked against the full model, and any architecture where that fails runs the whole model instead, with a
warning.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from hwkit.errors import UserError

# Largest max |Δ| between cached and full-model mean-pooled states still taken as "the same function".
CHECK_TOLERANCE = 1e-4


class TextEncoderError(UserError, ValueError):
    """A text encoder folder that cannot be used (not a model, unloadable, or an unknown layout)."""


@dataclass
class TextTowerConfig:
    model_path: str = ""            # a local Hugging Face model folder (config.json, weights, tokenizer)
    embed_dim: int = 128            # shared image/text embedding size
    proj_hidden: int = 0            # 0: Linear(hidden→embed); > 0: Linear(hidden→proj_hidden)–GELU–Linear
    prefix: str = ""                # prepended to every text; e5 models expect "query: "
    max_length: int = 32            # tokens; lexicon entries are single words or short phrases
    cache_frozen: bool = True       # FrozenPrefixCache when locked (off: run the whole encoder each step)
    cache_batch_size: int = 256     # strings per no-grad batch when filling the cache
    local_files_only: bool = True   # never download at run time


def load_encoder(path: str | Path, local_files_only: bool = True) -> tuple[nn.Module, object]:
    """(model, tokenizer) from a Hugging Face folder; one-line errors for a missing folder or a non-model."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a per-load "Loading weights" bar is noise in our own progress display

    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"text encoder folder not found: {folder} "
                                "(run `train text-encoder prepare` or pass a Hugging Face model folder)")
    if not (folder / "config.json").is_file():
        raise TextEncoderError(f"not a Hugging Face model folder (no config.json): {folder}")
    try:
        model = AutoModel.from_pretrained(str(folder), local_files_only=local_files_only)
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=local_files_only)
    except (OSError, ValueError, KeyError) as exc:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise TextEncoderError(f"cannot load a text encoder from {folder}: {first_line}") from exc
    # Positions of real tokens must not depend on padding: cached prefixes are stored unpadded.
    tokenizer.padding_side = "right"
    return model, tokenizer


def transformer_layers(model: nn.Module) -> nn.ModuleList | None:
    """The model's list of transformer blocks, or None for an architecture we don't know."""
    for owner in ("encoder", "transformer"):
        layers = getattr(getattr(model, owner, None), "layer", None)
        if isinstance(layers, nn.ModuleList):
            return layers
    return None


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average of the real (mask = 1) token states: (B, T, H), (B, T) → (B, H)."""
    m = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)


class FrozenPrefixCache:
    """Per distinct string: the hidden states after the last frozen layer, (T_i, H) without padding.

    Entries are valid for one frozen depth and one set of frozen weights: the tower clears the cache when
    `lock` changes the depth or weights are loaded.
    """

    def __init__(self) -> None:
        self._states: dict[str, torch.Tensor] = {}
        self._pooled: dict[str, torch.Tensor] = {}  # mean over each string's states, made on first use

    def __len__(self) -> int:
        return len(self._states)

    def __contains__(self, text: str) -> bool:
        return text in self._states

    def clear(self) -> None:
        self._states.clear()
        self._pooled.clear()

    def missing(self, texts: list[str]) -> list[str]:
        return list(dict.fromkeys(t for t in texts if t not in self._states))

    def add(self, texts: list[str], hidden: torch.Tensor, mask: torch.Tensor) -> None:
        """Store a padded batch (N, T, H) with its mask (N, T), trimming each row to its real tokens."""
        lengths = mask.sum(dim=1).tolist()
        for text, states, n in zip(texts, hidden.detach(), lengths):
            self._states[text] = states[: int(n)].clone()  # clone: don't pin the whole batch in memory

    def pooled(self, texts: list[str], device: torch.device) -> torch.Tensor:
        """Mean-pooled states (U, H) of cached strings, in the order given: for a wholly frozen encoder, whose
        cached states are its output, this is all a step needs (no padding, no per-step pooling)."""
        for t in texts:
            if t not in self._pooled:
                self._pooled[t] = self._states[t].mean(dim=0)
        return torch.stack([self._pooled[t] for t in texts]).to(device)

    def batch(self, texts: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded (U, T, H) states and (U, T) mask for cached strings, in the order given."""
        rows = [self._states[t] for t in texts]
        longest = max(r.shape[0] for r in rows)
        hidden = rows[0].new_zeros(len(rows), longest, rows[0].shape[1])
        mask = torch.zeros(len(rows), longest, dtype=torch.long, device=rows[0].device)
        for i, r in enumerate(rows):
            hidden[i, : r.shape[0]] = r
            mask[i, : r.shape[0]] = 1
        return hidden.to(device), mask.to(device)


class TextTower(nn.Module):
    """Texts → L2-normalised embeddings (B, embed_dim) through a local Hugging Face encoder."""

    def __init__(self, config: TextTowerConfig) -> None:
        super().__init__()
        self.config = config
        self.model, self.tokenizer = load_encoder(config.model_path, config.local_files_only)
        hidden = int(self.model.config.hidden_size)
        if config.proj_hidden > 0:
            self.projector = nn.Sequential(nn.Linear(hidden, config.proj_hidden), nn.GELU(),
                                           nn.Linear(config.proj_hidden, config.embed_dim))
        else:
            self.projector = nn.Linear(hidden, config.embed_dim)
        layers = transformer_layers(self.model)
        # a plain list, not a ModuleList: registering the blocks twice would duplicate state_dict keys
        self.layers: list[nn.Module] | None = None if layers is None else list(layers)
        self.cache = FrozenPrefixCache()
        self._frozen: int | None = None   # frozen transformer layers (None: nothing frozen, no cache)
        self._top_checked = False         # the top-only path has been compared with the full model
        self._top_ok = True               # False once that comparison failed: full model from then on

    @property
    def num_layers(self) -> int | None:
        return None if self.layers is None else len(self.layers)

    def lock(self, unlocked_layers: int | None = 0) -> None:
        """Freeze the embeddings and all but the top `unlocked_layers` transformer layers.

        0 (the default) freezes the whole encoder, so only the projector trains; ≥ num_layers trains every
        layer but keeps the embeddings frozen; None or -1 trains everything and turns the cache off. The
        projector always trains; a `pooler` head never does (mean pooling ignores it). Idempotent: every
        call sets all flags from scratch.
        """
        if unlocked_layers is None or unlocked_layers < 0:
            frozen = None
            self.model.requires_grad_(True)
        elif self.layers is None:
            if unlocked_layers > 0:
                raise TextEncoderError(f"lock({unlocked_layers}) needs a layer list, and "
                                 f"{type(self.model).__name__} has none we know; use lock(0) or lock(None)")
            frozen = 0  # means "whole encoder": there are no separately trainable layers
            self.model.requires_grad_(False)
        else:
            frozen = max(0, len(self.layers) - unlocked_layers)
            self.model.requires_grad_(False)
            for layer in self.layers[frozen:]:
                layer.requires_grad_(True)
        pooler = getattr(self.model, "pooler", None)
        if isinstance(pooler, nn.Module):
            pooler.requires_grad_(False)
        self.projector.requires_grad_(True)
        if frozen != self._frozen:
            self.cache.clear()
        self._frozen = frozen
        self.train(self.training)

    def train(self, mode: bool = True) -> TextTower:
        super().train(mode)
        if self._frozen is not None:
            # The frozen bottom is a fixed function (no dropout), so cached and uncached paths agree.
            self.model.eval()
            for layer in self._top_layers():
                layer.train(mode)
        return self

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        self.cache.clear()  # cached prefixes were computed with the old weights
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def _top_layers(self) -> list[nn.Module]:
        if self.layers is None or self._frozen is None:
            return []
        return list(self.layers[self._frozen:])

    def _device(self) -> torch.device:
        return next(self.projector.parameters()).device

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer([self.config.prefix + t for t in texts], padding=True, truncation=True,
                               max_length=self.config.max_length, return_tensors="pt")
        return {k: v.to(self._device()) for k, v in batch.items()}

    def _full(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.tokenize(texts)
        return self.model(**tokens).last_hidden_state, tokens["attention_mask"]  # (U, T, H), (U, T)

    @torch.no_grad()
    def _fill_cache(self, texts: list[str]) -> None:
        todo = self.cache.missing(texts)
        step = self.config.cache_batch_size
        for i in range(0, len(todo), step):
            chunk = todo[i: i + step]
            tokens = self.tokenize(chunk)
            if self.layers is None or self._frozen >= len(self.layers):
                hidden = self.model(**tokens).last_hidden_state
            else:
                # hidden_states[k] is the input of layer k (0: the embeddings' output)
                hidden = self.model(**tokens, output_hidden_states=True).hidden_states[self._frozen]
            self.cache.add(chunk, hidden, tokens["attention_mask"])

    def precompute(self, texts: list[str]) -> None:
        """Fill the frozen-prefix cache for a whole lexicon up front (a no-op unless locked with caching on)."""
        if self._use_cache():
            self._fill_cache(texts)

    def _attention_mask(self, hidden: torch.Tensor, mask: torch.Tensor):
        # transformers ≥ 5 builds the per-implementation (eager / sdpa / flex) mask here; 4.x used the
        # additive "extended" mask (B, 1, 1, T).
        try:
            from transformers.masking_utils import create_bidirectional_mask
        except ImportError:
            return self.model.get_extended_attention_mask(mask, mask.shape)
        return create_bidirectional_mask(config=self.model.config, inputs_embeds=hidden, attention_mask=mask)

    def _run_top(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Only the unfrozen layers on cached prefixes: (U, T, H), (U, T) → (U, T, H)."""
        top = self._top_layers()
        if not top:
            return hidden  # the whole encoder is frozen: the cache holds its output
        layer_mask = self._attention_mask(hidden, mask)
        for layer in top:
            out = layer(hidden, layer_mask)
            hidden = out[0] if isinstance(out, tuple) else out  # 4.x layers return tuples
        return hidden

    def _cached(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        self._fill_cache(texts)
        hidden, mask = self.cache.batch(texts, self._device())
        return self._run_top(hidden, mask), mask

    def _use_cache(self) -> bool:
        return self.config.cache_frozen and self._frozen is not None and self._top_ok

    def _check_top_path(self, texts: list[str]) -> None:
        """Compare the cached top-only path with the full model once; fall back to the full model if off."""
        self._top_checked = True
        sample = texts[:8]
        was_training = self.training
        self.train(False)
        # Both paths in fp32 even inside a training step's bf16 autocast: the check is of the function, and
        # bf16 rounding alone differs by ~3e-3 between them (seen on an H100, which then ran every layer).
        with torch.no_grad(), torch.autocast(self._device().type, enabled=False):
            try:
                cached = mean_pool(*self._cached(sample))
                full = mean_pool(*self._full(sample))
                diff = (cached - full).abs().max().item()
                error = None if diff <= CHECK_TOLERANCE else f"max |Δ| = {diff:.2e}"
            except (TypeError, ValueError, RuntimeError, AttributeError, IndexError) as exc:
                error = f"{type(exc).__name__}: {exc}"
        self.train(was_training)
        if error is not None:
            warnings.warn(f"{type(self.model).__name__}: running only the top layers does not reproduce the "
                          f"full model ({error}); running the whole encoder every step instead", stacklevel=3)
            self._top_ok = False
            self.cache.clear()

    def encode(self, texts: list[str]) -> torch.Tensor:
        """L2-normalised embeddings (B, embed_dim); each distinct string goes through the encoder once."""
        unique = list(dict.fromkeys(texts))
        index = {t: i for i, t in enumerate(unique)}
        inverse = torch.tensor([index[t] for t in texts], device=self._device())  # (B,)
        if self._use_cache() and not self._top_checked:
            self._check_top_path(unique)
        if self._use_cache() and not self._top_layers():  # wholly frozen: the cache holds the pooled output
            self._fill_cache(unique)
            pooled = self.cache.pooled(unique, self._device())  # (U, H)
        else:
            pooled = mean_pool(*(self._cached(unique) if self._use_cache() else self._full(unique)))  # (U, H)
        z = F.normalize(self.projector(pooled), dim=-1)  # (U, D)
        return z[inverse]  # (B, D): scatter back to batch order; gradients add up over repeats

    def forward(self, texts: list[str]) -> torch.Tensor:
        return self.encode(texts)
