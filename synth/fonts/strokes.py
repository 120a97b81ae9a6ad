"""Read pen-stroke sources into one normalised form the renderer can draw and distort.

Normalised stroke font (JSON, y up, font units):
    {"units_per_em": 1000, "ascent": 800, "descent": -200,
     "glyphs": {"a": {"advance": 512, "strokes": [[[x, y], [x, y], ...], ...]}, ...}}

Sources:
- SVG fonts (Hershey / EMS single-line fonts in npm `hersheytext`'s `svg_fonts/`): each <glyph>'s path
  is a set of open polylines (mostly M and L; the few C curves are flattened into chords).
- Hanzi Writer data (npm `hanzi-writer-data`): one JSON per character whose `medians` are the stroke
  centre lines in a 1024 box (y up, baseline about -124).
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from hwkit.errors import UserError

Point = list[float]
Polyline = list[Point]

_TOKEN = re.compile(r"[MmLlCcQqZz]|-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_ARITY = {"M": 2, "L": 2, "C": 6, "Q": 4}  # numbers per segment
_CURVE_STEPS = 8  # a glyph-sized curve flattened into 8 chords is smooth at word-image scale


class StrokeFormatError(UserError, ValueError):
    """A stroke source could not be read; the message names the file and the glyph."""


def _bezier(points: list[Point], steps: int) -> list[Point]:
    """Points along a Bézier curve (de Casteljau), excluding its start point."""
    out = []
    for k in range(1, steps + 1):
        t, pts = k / steps, points
        while len(pts) > 1:
            pts = [[a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t] for a, b in zip(pts, pts[1:])]
        out.append(pts[0])
    return out


def parse_polyline_path(d: str, where: str) -> list[Polyline]:
    """Open polylines of an SVG path: M, L, C, Q (absolute or relative) and Z; curves are flattened."""
    if re.search(r"[^MmLlCcQqZz0-9eE.,\s+-]", d):
        raise StrokeFormatError(f"{where}: path uses commands other than M, L, C, Q and Z")
    strokes: list[Polyline] = []
    command, numbers = None, []
    x = y = 0.0

    def flush() -> None:
        nonlocal x, y
        if command is None:
            return
        arity = _ARITY[command.upper()]
        if len(numbers) % arity:
            raise StrokeFormatError(f"{where}: wrong number of coordinates after {command!r}")
        for i in range(0, len(numbers), arity):
            seg = numbers[i:i + arity]
            pts = [[seg[j] + x, seg[j + 1] + y] if command.islower() else [seg[j], seg[j + 1]] for j in range(0, arity, 2)]
            # M starts a stroke; coordinate pairs after an M's first are implicit L's (SVG rule)
            if command in "Mm" and i == 0:
                strokes.append([pts[0]])
            elif not strokes:
                raise StrokeFormatError(f"{where}: path draws before its first M")
            elif arity == 2:
                strokes[-1].append(pts[0])
            else:
                strokes[-1].extend(_bezier([[x, y], *pts], _CURVE_STEPS))
            x, y = pts[-1]

    for token in _TOKEN.findall(d):
        if token.isalpha():
            flush()
            numbers = []
            if token in "Zz":
                if strokes:
                    strokes[-1].append(list(strokes[-1][0]))
                    x, y = strokes[-1][0]
                command = None
            else:
                command = token
        else:
            if command is None:
                raise StrokeFormatError(f"{where}: number {token} before any command")
            numbers.append(float(token))
    flush()
    return strokes


def read_svg_font(path: Path) -> dict:
    """Normalise an SVG font file of single-line glyphs."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise StrokeFormatError(f"{path}: cannot read SVG font ({exc})") from None
    ns = {"svg": "http://www.w3.org/2000/svg"}
    font = root.find(".//svg:font", ns)
    face = root.find(".//svg:font-face", ns)
    if font is None or face is None:
        raise StrokeFormatError(f"{path}: no <font> with a <font-face> inside")
    default_advance = float(font.get("horiz-adv-x", 0))
    glyphs = {}
    for glyph in font.findall("svg:glyph", ns):
        char = glyph.get("unicode")
        if not char or len(char) != 1:  # ligatures and unnamed glyphs are of no use to word rendering
            continue
        strokes = parse_polyline_path(glyph.get("d", ""), f"{path}: glyph {char!r}")
        glyphs[char] = {"advance": float(glyph.get("horiz-adv-x", default_advance)), "strokes": strokes}
    return {
        "units_per_em": float(face.get("units-per-em", 1000)),
        "ascent": float(face.get("ascent", 800)),
        "descent": float(face.get("descent", -200)),
        "glyphs": glyphs,
    }


def read_hanzi_writer(files: list[Path]) -> dict:
    """Normalise Hanzi Writer character files (name = the character) into one stroke font."""
    glyphs = {}
    for path in files:
        try:
            medians = json.loads(path.read_text(encoding="utf-8"))["medians"]
        except (OSError, ValueError, KeyError) as exc:
            raise StrokeFormatError(f"{path}: not a Hanzi Writer character file ({exc})") from None
        glyphs[path.stem] = {"advance": 1024.0, "strokes": [[[float(x), float(y)] for x, y in m] for m in medians]}
    # Hanzi Writer's box: x 0..1024, y -124..900 (y up).
    return {"units_per_em": 1024.0, "ascent": 900.0, "descent": -124.0, "glyphs": dict(sorted(glyphs.items()))}
