"""Which characters a style can really draw.

A character counts as covered only if the font maps it AND its glyph has ink: Pillow happily draws the
`.notdef` box for an unmapped character, and some fonts map characters to empty outlines (Debian's
Seto maps hundreds of GB 2312 characters to blank glyphs). Whitespace is the one exception: it is
covered when mapped, ink or not. The renderer asks `can_render` before every (entry, style) pair, so
no sample ever shows a tofu box or a blank glyph.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from fontTools.pens.boundsPen import BoundsPen
from fontTools.ttLib import TTFont


def _has_ink(font: TTFont, glyph_name: str, glyph_set) -> bool:
    if "glyf" in font:
        glyph = font["glyf"][glyph_name]
        if glyph.numberOfContours == 0:
            return False
        if glyph.numberOfContours > 0:  # simple glyph: its stored box tells us without drawing
            glyph.recalcBounds(font["glyf"])
            return glyph.xMax > glyph.xMin or glyph.yMax > glyph.yMin
    # CFF outlines and composite glyphs: draw them and see whether anything lands.
    pen = BoundsPen(glyph_set)
    glyph_set[glyph_name].draw(pen)
    return pen.bounds is not None


def outline_coverage(font_path: Path, face: int | None = None) -> frozenset[str]:
    """Characters the font maps to a glyph with a non-empty outline (whitespace: mapped is enough)."""
    font = TTFont(font_path, fontNumber=face if face is not None else -1, lazy=True)
    cmap = font.getBestCmap() or {}
    glyph_set = font.getGlyphSet()
    ink: dict[str, bool] = {}
    covered = []
    for codepoint, glyph_name in cmap.items():
        char = chr(codepoint)
        if char.isspace():
            covered.append(char)
            continue
        if glyph_name not in ink:
            ink[glyph_name] = _has_ink(font, glyph_name, glyph_set)
        if ink[glyph_name]:
            covered.append(char)
    font.close()
    return frozenset(covered)


def stroke_coverage(glyphs: dict[str, dict]) -> frozenset[str]:
    """Characters of a normalised stroke font that have at least one stroke of two or more points."""
    return frozenset(
        char for char, glyph in glyphs.items()
        if char.isspace() or any(len(stroke) >= 2 for stroke in glyph["strokes"])
    )


def missing_chars(covered: frozenset[str], text: str) -> list[str]:
    """Characters of `text` the style cannot draw, in order of first appearance."""
    return list(dict.fromkeys(c for c in text if c not in covered))


def can_render(covered: frozenset[str], text: str) -> bool:
    """True when every character of a non-empty `text` is covered."""
    return bool(text) and all(c in covered for c in text)


@dataclass(frozen=True)
class CoverageRow:
    style: str
    lang: str
    renderable: int
    total: int
    missing: tuple[str, ...]  # the characters that blocked entries, most frequent first

    @property
    def share(self) -> float:
        return self.renderable / self.total if self.total else 0.0


def coverage_row(style: str, lang: str, covered: frozenset[str], texts: Iterable[str]) -> CoverageRow:
    """How many of `texts` the style can render, and which characters stopped the rest."""
    texts = list(texts)
    blockers: dict[str, int] = {}
    renderable = 0
    for text in texts:
        miss = missing_chars(covered, text)
        if miss:
            for char in miss:
                blockers[char] = blockers.get(char, 0) + 1
        elif text:
            renderable += 1
    ranked = sorted(blockers, key=lambda c: (-blockers[c], c))
    return CoverageRow(style, lang, renderable, len(texts), tuple(ranked))
