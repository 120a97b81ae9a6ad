"""CASIA-HWDB isolated characters (`.gnt`) → whole handwritten Chinese words, one writer at a time.

A `.gnt` file holds one writer's characters as consecutive records, all integers little-endian:

    uint32  record size in bytes, header included (= 10 + width·height)
    2 bytes tag code: the character in GB2312 (first byte first)
    uint16  width
    uint16  height
    width·height bytes: the grey bitmap, row by row, 255 = background

The lexicon's Chinese words are composed from one writer's own characters (one file): each word whose
every character that writer wrote becomes one image. Characters keep their written size and sit on a
shared centre line (hanzi are centred in their square, not seated on a baseline) in a box at least as
tall as the writer's median character, with a small random gap and vertical wander per character; which records made each image, and every draw, are recorded in
the row's params. The draws come from a generator seeded by (seed, file index, semantic ID).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from synth.lexicon import Lexicon
from train.realdata import RealWord, SourceError

HEADER = struct.Struct("<I2sHH")  # size, tag code, width, height
GAP = (0.04, 0.18)  # gap between characters, as a share of the word's median character height
WANDER = 0.04  # vertical offset of each character from the centre line, ± this share of that height
MARGIN = 0.1  # blank border around the word, as a share of the median character height


def read_gnt(path: Path) -> Iterator[tuple[int, str, np.ndarray]]:
    """(byte offset, character, (H, W) uint8 bitmap) for every record; SourceError names file and offset."""
    data = Path(path).read_bytes()
    offset = 0
    while offset < len(data):
        if len(data) - offset < HEADER.size:
            raise SourceError(f"{path}: truncated record at offset {offset} ({len(data) - offset} bytes, "
                              f"a header needs {HEADER.size}); the file is cut short: copy it again")
        size, tag, width, height = HEADER.unpack_from(data, offset)
        if size != HEADER.size + width * height or width == 0 or height == 0:
            raise SourceError(f"{path}: bad record at offset {offset}: size field {size} but a {width}×{height} "
                              f"bitmap needs {HEADER.size + width * height}; not a CASIA-HWDB .gnt file, or damaged")
        if offset + size > len(data):
            raise SourceError(f"{path}: truncated record at offset {offset}: {size} bytes declared, "
                              f"{len(data) - offset} left; the file is cut short: copy it again")
        try:
            char = tag.decode("gbk")  # GBK extends GB2312: HWDB's codes decode the same under both
        except UnicodeDecodeError:
            raise SourceError(f"{path}: record at offset {offset} has tag code {tag.hex()}, not a GB2312 "
                              "character") from None
        bitmap = np.frombuffer(data, np.uint8, width * height, offset + HEADER.size).reshape(height, width)
        yield offset, char, bitmap
        offset += size


def compose(chars: list[np.ndarray], rng: np.random.Generator, unit: float | None = None) -> tuple[np.ndarray, dict]:
    """One word image from character bitmaps (255 background), and the draws that placed them.

    `unit` is the writer's typical character height (default: the median of these characters): gaps,
    wander and margin scale with it, and the canvas is at least that tall, so a flat character such as
    一 sits in a word-sized box instead of a sliver.
    """
    unit = float(unit or np.median([c.shape[0] for c in chars]))
    gaps = [round(float(g) * unit) for g in rng.uniform(*GAP, size=len(chars) - 1)]
    shifts = [round(float(s) * unit) for s in rng.uniform(-WANDER, WANDER, size=len(chars))]
    margin = max(1, round(MARGIN * unit))
    # each character's top edge, with the centre line at 0; the line box spans [-unit/2, unit/2)
    tops = [s - c.shape[0] // 2 for c, s in zip(chars, shifts)]
    top = min(*tops, -round(unit) // 2)
    bottom = max(*(t + c.shape[0] for t, c in zip(tops, chars)), round(unit) - round(unit) // 2)
    height = bottom - top + 2 * margin
    width = sum(c.shape[1] for c in chars) + sum(gaps) + 2 * margin
    canvas = np.full((height, width), 255, np.uint8)
    x = margin
    for i, (c, t) in enumerate(zip(chars, tops)):
        y = t - top + margin
        region = canvas[y:y + c.shape[0], x:x + c.shape[1]]
        np.minimum(region, c, out=region)  # ink is dark: the darker pixel wins
        x += c.shape[1] + (gaps[i] if i < len(gaps) else 0)
    return canvas, {"unit": unit, "gaps": gaps, "shifts": shifts, "margin": margin}


def gnt_files(root: Path) -> list[Path]:
    root = Path(root)
    files = [root] if root.is_file() else sorted(root.rglob("*.gnt"))
    if not files:
        raise SourceError(f"{root}: no .gnt files found; pass a CASIA-HWDB folder (for example HWDB1.1trn_gnt)")
    return files


def hwdb_words(root: Path, lexicon: Lexicon, seed: int = 0) -> Iterator[RealWord]:
    """Every Chinese lexicon word each writer can spell, composed from that writer's characters.

    Words some writer cannot spell are not yielded; they are not transcriptions of the source, so they do
    not count as unmapped. A character the writer wrote more than once is drawn at random among them.
    """
    root = Path(root)
    files = gnt_files(root)
    words = list(enumerate(lexicon.texts("zh")))
    for index, path in enumerate(files):
        samples: dict[str, list[tuple[int, np.ndarray]]] = {}
        for offset, char, bitmap in read_gnt(path):
            samples.setdefault(char, []).append((offset, bitmap))
        unit = float(np.median([b.shape[0] for bitmaps in samples.values() for _, b in bitmaps]))
        name = path.relative_to(root).as_posix() if path != root else path.name
        for sid, text in words:
            if not text or any(ch not in samples for ch in text):
                continue
            rng = np.random.default_rng([seed, index, sid])
            picks = [samples[ch][int(rng.integers(len(samples[ch])))] for ch in text]
            image, draws = compose([bitmap for _, bitmap in picks], rng, unit)
            source = {"dataset": "hwdb", "file": name, "seed": [seed, index, sid],
                      "samples": [{"char": ch, "offset": off} for ch, (off, _) in zip(text, picks)], **draws}
            yield RealWord(text=text, lang="zh", writer=f"hwdb:{path.stem}", source=source,
                           load=lambda image=image: image, seed=seed)
