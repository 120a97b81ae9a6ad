"""Glyph sources for the renderer: rasterised outline glyphs (cached) and pen-stroke glyphs.

Both give a word *layout*: glyphs placed along a baseline in layout units (y down, baseline at y = 0),
with per-glyph jitter applied. Outline layouts are composed into one coverage raster; stroke layouts
stay vectors until the pen draws them on the output canvas.

Outline glyphs are rasterised once per (style, pixel size, character) with Pillow's basic layout
engine (no shaping is needed for en/es/zh, and basic layout is ~10× cheaper per call) and kept as
NumPy masks; a word is then a few array copies. Sizes come from a short ladder so the cache stays small
and each word is rasterised close to its final size (no blurry upscaling, no aliased shrinking).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageFont

# Pixel em sizes glyphs are rasterised at; a word uses the smallest one at least as big as needed.
SIZE_LADDER = (16, 20, 24, 28, 32, 38, 44, 52, 60, 70, 82, 96, 112, 128)
REFERENCE_SIZE = 64  # em px used to measure a layout before choosing its raster size


@dataclass(frozen=True)
class Glyph:
    mask: np.ndarray  # (h, w) uint8 coverage
    left: int  # mask offset from the pen position, px
    top: int  # mask offset from the baseline (negative = above), px
    advance: float  # px


class OutlineFace:
    """One font file at any ladder size: glyph masks and advances, cached per size and character."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self._fonts: dict[int, ImageFont.FreeTypeFont] = {}
        self._glyphs: dict[tuple[int, str], Glyph] = {}

    def _font(self, size: int) -> ImageFont.FreeTypeFont:
        font = self._fonts.get(size)
        if font is None:
            font = ImageFont.truetype(self.path, size, layout_engine=ImageFont.Layout.BASIC)
            self._fonts[size] = font
        return font

    def glyph(self, char: str, size: int) -> Glyph:
        key = (size, char)
        glyph = self._glyphs.get(key)
        if glyph is None:
            font = self._font(size)
            ascent, _ = font.getmetrics()
            core, (left, top) = font.getmask2(char, mode="L")
            mask = np.asarray(Image.Image()._new(core)) if core.size[0] and core.size[1] else np.zeros((0, 0), np.uint8)
            # Pillow's mask can carry empty rows and columns (a whole line box for 一): crop to the ink,
            # so layouts measure the true ink box the word is fitted by.
            rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
            if rows.size:
                mask = mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
                left, top = left + int(cols[0]), top + int(rows[0])
            else:
                mask = np.zeros((0, 0), np.uint8)
            glyph = Glyph(np.ascontiguousarray(mask), left, top - ascent, font.getlength(char))
            self._glyphs[key] = glyph
        return glyph


def raster_size(needed_em_px: float) -> int:
    """The smallest ladder size at least `needed_em_px` (the largest if none is)."""
    for size in SIZE_LADDER:
        if size >= needed_em_px:
            return size
    return SIZE_LADDER[-1]


@dataclass(frozen=True)
class PlacedGlyph:
    glyph: Glyph
    x: float  # pen position, px
    y: float  # baseline shift, px (positive = down)
    scale: float


def layout_outline(face: OutlineFace, text: str, size: int, jitter: dict | None) -> tuple[list[PlacedGlyph], tuple[float, float, float, float]]:
    """Place the glyphs of `text` at `size` px with per-glyph jitter; returns glyphs and ink bbox (x0, y0, x1, y1)."""
    placed, pen = [], 0.0
    x0 = y0 = np.inf
    x1 = y1 = -np.inf
    for i, char in enumerate(text):
        g = face.glyph(char, size)
        scale = 1.0 + (jitter["scale"][i] if jitter else 0.0)
        dy = jitter["baseline"][i] * size if jitter else 0.0
        h, w = g.mask.shape
        if h and w:
            gx0, gy0 = pen + g.left * scale, dy + g.top * scale
            x0, y0 = min(x0, gx0), min(y0, gy0)
            x1, y1 = max(x1, gx0 + w * scale), max(y1, gy0 + h * scale)
        placed.append(PlacedGlyph(g, pen, dy, scale))
        # spacing jitter may tighten a gap but never lets the pen move backwards
        pen += max(g.advance * scale + (jitter["spacing"][i] * size if jitter else 0.0), 0.3 * g.advance)
    return placed, (float(x0), float(y0), float(x1), float(y1))


def compose_outline(placed: list[PlacedGlyph], bbox: tuple[float, float, float, float], pad: int = 2) -> tuple[np.ndarray, tuple[float, float]]:
    """One coverage raster of the placed glyphs; returns it and the layout coordinates of its (0, 0)."""
    x0, y0, x1, y1 = bbox
    ox, oy = np.floor(x0) - pad, np.floor(y0) - pad
    canvas = np.zeros((int(np.ceil(y1 - oy)) + pad, int(np.ceil(x1 - ox)) + pad), np.uint8)
    for p in placed:
        mask = p.glyph.mask
        if not mask.size:
            continue
        if abs(p.scale - 1.0) > 0.01:
            h, w = mask.shape
            mask = cv2.resize(mask, (max(1, round(w * p.scale)), max(1, round(h * p.scale))), interpolation=cv2.INTER_LINEAR)
        left = int(round(p.x + p.glyph.left * p.scale - ox))
        top = int(round(p.y + p.glyph.top * p.scale - oy))
        h, w = mask.shape
        region = canvas[top:top + h, left:left + w]
        np.maximum(region, mask[: region.shape[0], : region.shape[1]], out=region)
    return canvas, (float(ox), float(oy))


# Pen widths are given as a fraction of the x-height, so a font with a small x-height (Hershey Script)
# is not drawn with a heavier pen than one with a large x-height. Hanzi have no x-height; 0.35 em plays
# its part (a 64 px word then gets a 2-4 px pen, as a ballpoint would).
HAN_PEN_UNIT = 0.35


class StrokeFace:
    """A normalised stroke font (see synth.fonts.strokes): polylines per character in font units, y up."""

    def __init__(self, path: Path) -> None:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        self.units_per_em = float(data["units_per_em"])
        self.glyphs = {
            char: (float(g["advance"]), [np.asarray(s, np.float64) for s in g["strokes"] if len(s) >= 2])
            for char, g in data["glyphs"].items()
        }
        x = self.glyphs.get("x")
        if x and x[1]:
            ys = np.vstack(x[1])[:, 1]
            self.pen_unit = float(ys.max() - ys.min()) / self.units_per_em  # x-height, em
        else:
            self.pen_unit = HAN_PEN_UNIT


def layout_strokes(face: StrokeFace, text: str, jitter: dict | None, tracking: float) -> tuple[list[np.ndarray], float]:
    """Polylines of `text` in layout units (1 em = 1, y down, baseline 0) and the pen's end x.

    `tracking` (em) is added between glyphs: single-line fonts are spaced for engraving, and Hanzi
    Writer characters fill their whole box.
    """
    em = face.units_per_em
    strokes, pen = [], 0.0
    for i, char in enumerate(text):
        advance, glyph_strokes = face.glyphs[char]
        scale = 1.0 + (jitter["scale"][i] if jitter else 0.0)
        dy = jitter["baseline"][i] if jitter else 0.0
        for s in glyph_strokes:
            pts = np.empty_like(s)
            pts[:, 0] = pen + s[:, 0] / em * scale
            pts[:, 1] = dy - s[:, 1] / em * scale
            strokes.append(pts)
        pen += max(advance / em * scale + tracking + (jitter["spacing"][i] if jitter else 0.0), 0.3 * advance / em)
    return strokes, pen


@lru_cache(maxsize=None)
def load_face(kind: str, path: str) -> OutlineFace | StrokeFace:
    """One face object per file and process (glyph caches live as long as the process)."""
    return OutlineFace(Path(path)) if kind == "outline" else StrokeFace(Path(path))


def probe_face(kind: str, path: Path, chars: str) -> str | None:
    """Draw `chars` (a few the style claims to cover) from the file itself: None if each has ink, else what is
    wrong, in a phrase. `synth fonts check` runs it so a damaged or blanked file is caught before a render."""
    try:
        if kind == "outline":
            face = OutlineFace(Path(path))
            blank = [c for c in chars if not face.glyph(c, 48).mask.any()]
        else:
            strokes = StrokeFace(Path(path)).glyphs
            blank = [c for c in chars if not strokes.get(c, (0, []))[1]]
    except Exception as exc:  # FreeType, fontTools and json raise many types for a damaged file
        return f"cannot be drawn ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no message'})"
    return f"draws no ink for {''.join(blank)}" if blank else None
