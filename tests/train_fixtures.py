"""A tiny world for the trainer's tests: a random 2-layer BERT with its tokenizer, and shards of simple
synthetic word images whose pattern depends on the semantic ID (so a few steps can learn something)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import transformers

from synth.dataset.shards import ShardConfig, sample_row, write_shard
from train.config import RunConfig, load_config

LEXICON = [
    ("water", "agua", "水"), ("child", "niño", "孩子"), ("year", "año", "年"), ("fire", "fuego", "火"),
    ("mountain", "montaña", "山"), ("tree", "árbol", "树"), ("one", "uno", "一"), ("big", "grande", "大"),
]


def write_lexicon(path: Path) -> Path:
    path.write_text("semantic_id\ten\tes\tzh\n" + "".join(f"{i}\t{en}\t{es}\t{zh}\n" for i, (en, es, zh) in enumerate(LEXICON)),
                    encoding="utf-8")
    return path


def make_tiny_bert(folder: Path, hidden: int = 32, layers: int = 2, dropout: float = 0.0) -> Path:
    """A random BERT with a WordPiece vocabulary covering the fixture lexicon, saved as a HF folder."""
    folder.mkdir(parents=True, exist_ok=True)
    letters = sorted({c for row in LEXICON for word in row for c in word} | set("query:"))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *letters, *("##" + c for c in letters)]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = transformers.BertTokenizer(str(folder / "vocab.txt"), tokenize_chinese_chars=True)
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers,
                                     num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=64,
                                     hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    transformers.BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def word_image(semantic_id: int, rng: np.random.Generator, height: int = 32, width: int = 128) -> np.ndarray:
    """Paper with dark bars whose positions spell the ID's bits, jittered: learnable, never identical."""
    image = np.full((height, width), 235, np.uint8)
    shift = int(rng.integers(0, 6))
    for bit in range(4):
        if (semantic_id >> bit) & 1:
            x = 8 + bit * 28 + shift
            image[4: height - 4, x: x + 10] = rng.integers(10, 60)
    noise = rng.normal(0, 8, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def write_shards(folder: Path, per_id: int = 4, langs=("en", "es", "zh"), ids=None, seed: int = 0,
                 shards: int = 2, lexicon=LEXICON, size=(32, 128)) -> Path:
    """Shards under folder/data like `synth render` writes (no manifest), rows sorted by semantic ID."""
    rng = np.random.default_rng(seed)
    ids = list(range(len(lexicon))) if ids is None else list(ids)
    rows = []
    for sid in ids:
        for lang in langs:
            text = lexicon[sid][("en", "es", "zh").index(lang)]
            for k in range(per_id):
                rows.append(sample_row(word_image(sid, rng, *size), {"k": k}, semantic_id=sid, lang=lang, text=text,
                                       style="bars", style_kind="outline", split="train", seed=k, png_level=1))
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    chunk = -(-len(rows) // shards)
    for i in range(shards):
        part = rows[i * chunk: (i + 1) * chunk]
        if part:
            write_shard(data, f"train-{i:05d}-of-{shards:05d}.parquet", part, ShardConfig())
    return folder


def tiny_config(bert, stage: str = "pretrain", **overrides) -> RunConfig:
    """The paper preset shrunk for tests: the tiny BERT (top layer trainable), 32×128 images, batch 12."""
    base = {"model.text.model_path": str(bert), "model.text.unlocked_layers": 1, "model.text.prefix": "",
            "model.image.image_height": 32, "model.image.image_width": 128, "batch.batch_size": 12,
            "data.workers": 0, "optim.lr": 2e-3, "optim.epochs": 2, "precise_bn_batches": 2}
    return load_config("paper", stage, {**base, **overrides})
