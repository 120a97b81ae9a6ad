"""Typed training configuration with YAML presets.

A run is one stage (pre-training on synthetic shards, or fine-tuning on real handwriting); the two stages
share everything but their stage block (`OptimConfig`: learning rate, epochs, warm-up, decay). A preset file
(`train/configs/<name>.yaml`) holds the shared blocks and one stage block per stage:

    model: {image: {...}, text: {...}, init_temperature: 0.07}   # image.embed_dim sizes both towers
    loss: {use_v2t: true, use_t2v: true, use_inv: true, lam: 1.0, label_aware: false}
    data: {augment: true, workers: 1}
    batch: {batch_size: 1024, per_id: 2}
    seed: 0
    pretrain: {lr: 1.0e-4, epochs: 20, ...}
    finetune: {lr: 1.0e-5, epochs: 20, ...}

Unknown keys are errors (a typo must not silently train with a default), and every resolved config is
written beside the run's checkpoints, so `--resume` can say exactly what changed.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from hwkit.errors import UserError

STAGES = ("pretrain", "finetune")


class ConfigError(UserError, ValueError):
    """A preset or override that cannot be used, with the offending key named."""


# Stride-2 stages of MobileNetV3-Small (the stem and four bnecks: output stride 32); see train/towers/image_tower.py.
STRIDE2_STAGES = 5


@dataclass
class ImageTowerConfig:
    in_channels: int = 1        # grey word images
    width_mult: float = 1.0     # fixed: the 1.29 M budget and the tested counts assume 1.0
    embed_dim: int = 128        # shared image/text embedding size
    proj_hidden: int = 512      # projector Linear(576→512)–Hardswish–Linear(512→128)
    dropout: float = 0.0        # before the projector; 0 disables
    image_height: int = 64      # default input size (any size ≥ 32×32 works: the pool is global)
    image_width: int = 256
    crop: bool = False          # cut each image to its ink and stretch its levels before fitting (train/run/images.py)
    # The last `keep_width` of the five stride-2 stages halve the height only (stride (2, 1)), so a word
    # keeps more columns before the global pool: at 32×128, 1×4 → 1×8 (keep_width 1) or 1×16 (2). The
    # parameter count is unchanged; the compute of those stages doubles. 0 is the paper's network.
    keep_width: int = 0
    # ReLU wherever the paper's network has hard-swish (stem, last 8 bnecks, last conv, projector): the
    # int8-friendlier variant, since onnxruntime fuses ReLU into its int8 convolutions but runs hard-swish
    # between quantise and dequantise steps (docs/benchmarks.md). Same parameters. False is the paper's.
    relu_only: bool = False

    def __post_init__(self) -> None:
        if self.width_mult != 1.0:
            raise ConfigError("ImageTowerConfig.width_mult is fixed at 1.0 (the parameter budget assumes it)")
        if not 0 <= self.keep_width <= STRIDE2_STAGES:
            raise ConfigError(f"keep_width must be in 0..{STRIDE2_STAGES}, got {self.keep_width}")


@dataclass
class TextConfig:
    model_path: str = ""            # a Hugging Face encoder folder; "" = the prepared multilingual-e5-small
    prefix: str = "query: "         # prepended to every text (e5 models expect "query: ")
    unlocked_layers: int = 0        # top transformer layers that train; 0 = frozen encoder, only the projector
    proj_hidden: int = 0            # 0: Linear(hidden→embed); > 0: a two-layer MLP projector
    max_length: int = 32            # tokens


@dataclass
class ModelConfig:
    image: ImageTowerConfig = field(default_factory=ImageTowerConfig)
    text: TextConfig = field(default_factory=TextConfig)
    init_temperature: float = 0.07  # τ at the start; learnable


@dataclass
class LossConfig:
    # "infonce": the paper's L_ITC (+ λ·L_INV), with the options below; "prototype": L_v2p + α·L_t2p (+ λ·L_INV),
    # one language-agnostic prototype per semantic ID (train/objectives/losses.py). Absent from runs made before it: infonce.
    objective: str = "infonce"
    align: float = 1.0              # α, weight of L_t2p (prototype objective)
    # γ, weight of L_v2g (prototype objective): each image also classified against the training texts of
    # each language in turn, its own script's and the other two (the evaluation's galleries). 0: off.
    galleries: float = 0.0
    use_v2t: bool = True
    use_t2v: bool = True
    use_inv: bool = True
    lam: float = 1.0                # λ, weight of L_INV
    # infonce only:
    label_aware: bool = False       # every same-ID row a positive (an option to measure, not the paper's)
    negatives: str = "batch"        # L_v2t negatives: "batch" (the paper) or "lexicon" (every lexicon text)
    # β, weight of the auxiliary PHOC loss (train/objectives/phoc.py): a training-only head predicts each
    # word's characters and their places from the image tower's pooled features. 0: off (the paper).
    phoc: float = 0.0
    phoc_buckets: int = 256         # character slots per PHOC region (code point modulo this)


@dataclass
class DataConfig:
    augment: bool = True            # jitter training images (train/run/augment.py)
    augment_level: str = "light"    # "light" (small affine + contrast) or "strong" (what an unseen font changes)
    workers: int = 1                # DataLoader worker processes (0: decode in the training process)


@dataclass
class BatchConfig:
    batch_size: int = 1024          # rows per step; the paper uses about the number of semantic IDs
    per_id: int = 2                 # rows of one semantic ID placed together (co-occurrence)


@dataclass
class OptimConfig:
    lr: float = 1e-4                # peak learning rate (AdamW)
    encoder_lr: float = 0.0         # peak rate of the unlocked pre-trained text-encoder layers; 0: the same as lr
    epochs: int = 20
    max_steps: int = 0              # > 0: stop after this many steps; the schedule spans them
    warmup: float = 0.05            # share of the steps with a linear warm-up from 0
    min_lr_ratio: float = 0.0       # cosine decay ends at lr · min_lr_ratio
    weight_decay: float = 0.05      # not applied to biases, norms and the temperature
    betas: tuple[float, float] = (0.9, 0.98)
    grad_clip: float = 1.0          # max global gradient norm; 0 disables clipping


@dataclass
class RunConfig:
    stage: str = "pretrain"
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    seed: int = 0                   # one seed for initialisation, batch order and augmentation
    checkpoint_every: int = 0       # steps between checkpoints (0: at each epoch end only)
    keep_checkpoints: int = 2       # newest step checkpoints kept on disk
    precise_bn_batches: int = 32    # batches re-estimating the image tower's BN statistics at the end (0: off)
    val_images: int = 3000          # held-out images scored at epoch ends when a run is given --val
    val_every: int = 1              # epochs between those scores (the last epoch is always scored)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _build(cls: type, data: Any, where: str):
    """A dataclass from a mapping, recursively, refusing unknown keys and wrong kinds."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; known: {', '.join(known)}")
    kwargs = {}
    defaults = cls()
    for name, value in data.items():
        current = getattr(defaults, name)
        key = f"{where}.{name}" if where else name
        if dataclasses.is_dataclass(current):
            kwargs[name] = _build(type(current), value, key)
        else:
            kwargs[name] = _coerce(current, value, key)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where or 'config'}: {exc}") from None


def _coerce(default: Any, value: Any, key: str) -> Any:
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)) or len(value) != len(default):
            raise ConfigError(f"{key}: expected a list of {len(default)} numbers, got {value!r}")
        return tuple(_coerce(d, v, key) for d, v in zip(default, value))
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    return value


def preset_names() -> list[str]:
    return sorted(p.name[: -len(".yaml")] for p in resources.files("train.configs").iterdir() if p.name.endswith(".yaml"))


def _read_yaml(name_or_path: str) -> tuple[dict, str]:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        text, where = path.read_text(encoding="utf-8"), str(path)
    else:
        if name_or_path not in preset_names():
            raise ConfigError(f"unknown preset {name_or_path!r}; presets: {', '.join(preset_names())} (or a .yaml file)")
        text = resources.files("train.configs").joinpath(f"{name_or_path}.yaml").read_text(encoding="utf-8")
        where = f"preset {name_or_path}"
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level")
    return data, where


def load_config(preset: str, stage: str, overrides: dict[str, Any] | None = None) -> RunConfig:
    """The RunConfig of `stage` from a preset name or YAML path, with dotted-key overrides applied.

    Overrides use dotted names of the resolved config, e.g. {"optim.lr": 3e-4, "batch.batch_size": 256}.
    """
    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
    data, where = _read_yaml(preset)
    stages = {s: data.pop(s, {}) for s in STAGES}
    resolved = {**data, "stage": stage, "optim": stages[stage] or {}}
    for key, value in (overrides or {}).items():
        node = resolved
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {key}: {part} is not a section")
        node[leaf] = value
    config = _build(RunConfig, resolved, "")
    validate(config, where)
    return config


def config_from_dict(data: dict, where: str) -> RunConfig:
    """A RunConfig read back from a run's config.json."""
    data = dict(data)
    if isinstance(data.get("optim", {}).get("betas"), list):
        data["optim"] = {**data["optim"], "betas": tuple(data["optim"]["betas"])}
    config = _build(RunConfig, data, "")
    validate(config, where)
    return config


def workers_refusal(workers: int) -> str | None:
    """Why `workers` DataLoader processes are too many here, or None: each one is a process with its own
    reader and decode buffers, so more than 4 per CPU core only costs memory (9,999 once filled 23 GB)."""
    limit = 4 * (os.cpu_count() or 1)
    if workers > limit:
        return f"{workers:,} data workers is more than 4 per CPU core ({limit} here); use at most {limit}"
    return None


def _non_finite(node: object, prefix: str = "") -> list[tuple[str, object]]:
    """(dotted key, value) of every float setting that is inf or nan, depth first."""
    found = []
    for f in fields(node):
        value, key = getattr(node, f.name), prefix + f.name
        if dataclasses.is_dataclass(value):
            found += _non_finite(value, key + ".")
        elif any(isinstance(x, float) and not math.isfinite(x) for x in (value if isinstance(value, tuple) else (value,))):
            found.append((key, value))
    return found


def validate(c: RunConfig, where: str) -> None:
    for key, value in _non_finite(c):  # inf or nan anywhere would only surface as a diverged run
        raise ConfigError(f"{where}: {key} must be a finite number, got {value}")
    o = c.optim
    checks = [
        (math.isfinite(o.lr) and o.lr > 0, f"optim.lr must be a finite number > 0, got {o.lr}"),
        (math.isfinite(o.encoder_lr) and o.encoder_lr >= 0, f"optim.encoder_lr must be ≥ 0, got {o.encoder_lr}"),
        (o.epochs >= 1, f"optim.epochs must be ≥ 1, got {o.epochs}"),
        (o.max_steps >= 0, f"optim.max_steps must be ≥ 0, got {o.max_steps}"),
        (0 <= o.warmup < 1, f"optim.warmup must be in [0, 1), got {o.warmup}"),
        (0 <= o.min_lr_ratio <= 1, f"optim.min_lr_ratio must be in [0, 1], got {o.min_lr_ratio}"),
        (o.grad_clip >= 0, f"optim.grad_clip must be ≥ 0, got {o.grad_clip}"),
        (c.batch.batch_size >= 2, f"batch.batch_size must be ≥ 2, got {c.batch.batch_size}"),
        (1 <= c.batch.per_id <= c.batch.batch_size, f"batch.per_id must be in [1, batch_size], got {c.batch.per_id}"),
        (c.data.workers >= 0, f"data.workers must be ≥ 0, got {c.data.workers}"),
        (workers_refusal(c.data.workers) is None, f"data.workers: {workers_refusal(c.data.workers)}"),
        (c.model.init_temperature > 0, f"model.init_temperature must be > 0, got {c.model.init_temperature}"),
        (c.model.image.image_height >= 32 and c.model.image.image_width >= 32,
         "model.image needs image_height and image_width ≥ 32"),
        (c.keep_checkpoints >= 1, f"keep_checkpoints must be ≥ 1, got {c.keep_checkpoints}"),
        (c.precise_bn_batches >= 0, f"precise_bn_batches must be ≥ 0, got {c.precise_bn_batches}"),
        (c.val_images >= 1 and c.val_every >= 1, f"val_images and val_every must be ≥ 1, got {c.val_images}, {c.val_every}"),
        (c.data.augment_level in ("light", "strong"),
         f"data.augment_level must be 'light' or 'strong', got {c.data.augment_level!r}"),
        (c.loss.objective in ("infonce", "prototype"),
         f"loss.objective must be 'infonce' or 'prototype', got {c.loss.objective!r}"),
        (c.loss.lam >= 0 and c.loss.align >= 0 and c.loss.galleries >= 0,
         f"loss.lam, loss.align and loss.galleries must be ≥ 0, got {c.loss.lam}, {c.loss.align}, {c.loss.galleries}"),
        (c.loss.galleries == 0 or c.loss.objective == "prototype",
         f"loss.galleries (L_v2g) is a term of the prototype objective; got loss.objective {c.loss.objective!r}"),
        (c.loss.phoc >= 0 and c.loss.phoc_buckets >= 1,
         f"loss.phoc must be ≥ 0 and loss.phoc_buckets ≥ 1, got {c.loss.phoc}, {c.loss.phoc_buckets}"),
        (c.loss.negatives in ("batch", "lexicon"),
         f"loss.negatives must be 'batch' or 'lexicon', got {c.loss.negatives!r}"),
        (c.checkpoint_every >= 0, f"checkpoint_every must be ≥ 0, got {c.checkpoint_every}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"{where}: {message}")
    if c.loss.objective == "infonce" and not (c.loss.use_v2t or c.loss.use_t2v or (c.loss.use_inv and c.loss.lam > 0)):
        raise ConfigError(f"{where}: every loss term is off; enable loss.use_v2t, loss.use_t2v or loss.use_inv")
