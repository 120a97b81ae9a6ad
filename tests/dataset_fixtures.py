"""A tiny world for the dataset pipeline's tests: eight lexicon entries, six installed box fonts, and a
renderer double with the real renderer's interface.

Styles (family-disjoint): Latin train `latin-full` and `latin-noenye` (no ñ: skips niño, año, montaña),
Latin held-out `latin-held`; Han train `han-full` and `han-nohai` (no 孩: skips 孩子), Han held-out
`han-held`. Every Han face also maps Latin letters so it can label a contact sheet.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import synth.fonts.fetch as fetch
from synth.fonts.catalogue import load_catalogue, source_digest
from synth.fonts.charsets import LATIN_REQUIRED
from synth.render.config import RenderConfig, load_render_config
from tests.conftest import build_font, style_entry, write_catalogue

LEXICON = [
    ("water", "agua", "水"), ("child", "niño", "孩子"), ("year", "año", "年"), ("fire", "fuego", "火"),
    ("mountain", "montaña", "山"), ("tree", "árbol", "树"), ("one", "uno", "一"), ("big", "grande", "大"),
]
HANZI = "".join(sorted({c for *_, zh in LEXICON for c in zh}))
LABEL_CHARS = " ·-0123456789"
LATIN = "".join(sorted(LATIN_REQUIRED))


@dataclass(frozen=True)
class World:
    root: Path
    lexicon: Path
    catalogue: Path
    cache: Path


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under `root` by relative path: two folders are byte-identical iff these are equal."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def double_world(root: Path, monkeypatch) -> tuple[World, Path]:
    """`make_world` with DoubleRenderer as the default renderer, and a 24×64 render config file."""
    import synth.dataset

    world = make_world(root, monkeypatch)
    monkeypatch.setattr(synth.dataset, "default_renderer", lambda: DoubleRenderer)
    small = world.root / "small.yaml"
    small.write_text("height: 24\nwidth: 64\n")
    return world, small


def make_world(root: Path, monkeypatch) -> World:
    """Write the lexicon and catalogue under `root` and install every style into `root/cache`."""
    pkg = root / "pkg"
    pkg.mkdir(parents=True)
    fonts = {
        "latin-full": LATIN, "latin-noenye": LATIN.replace("ñ", ""), "latin-held": LATIN,
        "han-full": HANZI + LATIN + LABEL_CHARS, "han-nohai": HANZI.replace("孩", "") + LATIN + LABEL_CHARS,
        "han-held": HANZI + LATIN + LABEL_CHARS,
    }
    entries = []
    for style_id, inked in fonts.items():
        build_font(pkg / f"{style_id}.ttf", inked=inked)
        script = "han" if style_id.startswith("han") else "latin"
        entries.append(style_entry(
            id=style_id, family=style_id.title(), scripts=[script], file=f"{style_id}.ttf",
            sha256=source_digest(pkg, f"{style_id}.ttf"), split="held-out" if style_id.endswith("held") else "train",
            licence="OFL-1.1" if script == "latin" else "Arphic-1999",
        ))
    catalogue = write_catalogue(root / "catalogue.yaml", entries)
    lexicon = root / "lexicon.tsv"
    lexicon.write_text("semantic_id\ten\tes\tzh\n" + "".join(f"{i}\t{en}\t{es}\t{zh}\n" for i, (en, es, zh) in enumerate(LEXICON)),
                       encoding="utf-8")
    cache = root / "cache"
    monkeypatch.setenv("SYNTH_CACHE", str(cache))
    monkeypatch.setattr(fetch, "package_dir", lambda style: pkg)
    for style in load_catalogue(catalogue).styles:
        fetch.install_style(style)
    return World(root, lexicon, catalogue, cache)


def small_config() -> RenderConfig:
    return load_render_config("none", overrides={"height": 24, "width": 64})


class DoubleRenderer:
    """Deterministic from task.seed: paper grey plus a few dark rectangles drawn with a numpy Generator.

    Failure injection through the environment (inherited by spawned workers), keeping one renderer
    class — and so one config fingerprint — for the failing run and its resume:
    SYNTH_TEST_FAIL_ID=k raises on semantic ID k; SYNTH_TEST_CRASH_ID=k with SYNTH_TEST_CRASH_MARKER=path
    makes the process exit abruptly on ID k (like a killed worker), once: the marker file remembers.
    """

    def __init__(self, config: RenderConfig) -> None:
        self.height, self.width = config.height, config.width

    def render(self, task):
        if os.environ.get("SYNTH_TEST_FAIL_ID") == str(task.semantic_id):
            raise ValueError("cannot draw this")
        crash_id, marker = os.environ.get("SYNTH_TEST_CRASH_ID"), os.environ.get("SYNTH_TEST_CRASH_MARKER")
        if crash_id == str(task.semantic_id) and marker and not os.path.exists(marker):
            Path(marker).touch()
            os._exit(3)
        rng = np.random.default_rng(task.seed)
        paper = int(rng.integers(200, 256))
        image = np.full((self.height, self.width), paper, np.uint8)
        rects = []
        for _ in range(3):
            y, x = int(rng.integers(0, self.height - 4)), int(rng.integers(0, self.width - 8))
            h, w = int(rng.integers(2, 5)), int(rng.integers(4, 9))
            image[y:y + h, x:x + w] = 30
            rects.append([x, y, w, h])
        return image, {"paper": paper, "rects": rects, "text": task.text}
