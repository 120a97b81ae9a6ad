"""The handwriting effects: each samples its parameters from an explicit generator, then applies them.

`sample(rng, strengths, ...) -> params` draws every random value the effect needs and returns them as a
JSON-ready dict, rounded to the precision they are applied at (so a row's recorded params replay it
exactly); `apply(..., params)` is deterministic. The recipe (synth.render.recipe) calls them in a fixed order.
Lengths are in em (fractions of the font size) unless the name says px.
"""

from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np

from synth.render.config import MAX_CANVAS, Strengths


def _r(values, digits: int = 4):
    """Round a draw to the precision it is recorded and applied at."""
    if isinstance(values, np.ndarray):
        return values.round(digits).tolist()
    return round(float(values), digits)


def _clip(values: np.ndarray, bound: float) -> np.ndarray:
    # np.clip's Python wrapper costs more than the arithmetic on these few values
    return np.minimum(np.maximum(values, -bound), bound)


class Size:
    """Word size: a factor in [1 - scale, 1] of the height available on the canvas."""

    @staticmethod
    def sample(rng: np.random.Generator, s: Strengths) -> dict:
        return {"factor": _r(1.0 - s.scale * rng.random())}


class GlyphJitter:
    """Per-glyph scale, baseline shift and extra advance: the unevenness of a hand."""

    @staticmethod
    def sample(rng: np.random.Generator, s: Strengths, n_glyphs: int) -> dict:
        return {
            "scale": _r(_clip(rng.normal(0, s.glyph_scale, n_glyphs), 0.3)),
            "baseline": _r(_clip(rng.normal(0, s.baseline, n_glyphs), 0.25)),
            "spacing": _r(_clip(rng.normal(0, s.spacing, n_glyphs), 0.25)),
        }


class StrokeElastic:
    """Smooth displacement of pen-stroke points: a control grid (3 rows, one column per glyph + 1) over the word."""

    @staticmethod
    def sample(rng: np.random.Generator, s: Strengths, n_glyphs: int) -> dict:
        shape = (3, n_glyphs + 1)
        return {"dx": _r(rng.normal(0, s.stroke_elastic, shape)), "dy": _r(rng.normal(0, s.stroke_elastic, shape))}

    @staticmethod
    def apply(strokes: list[np.ndarray], box: tuple[float, float, float, float], params: dict) -> list[np.ndarray]:
        from synth.render.warp import field_at

        points = np.vstack(strokes)
        dx, dy = field_at([np.asarray(params["dx"]), np.asarray(params["dy"])], points, box)
        moved = points + np.column_stack([dx, dy])
        return np.split(moved, np.cumsum([len(pts) for pts in strokes])[:-1])


class Pen:
    """Pen width (fraction of the x-height) and pressure: each stroke swells in its middle, thins at its ends."""

    @staticmethod
    def sample(rng: np.random.Generator, s: Strengths, n_strokes: int) -> dict:
        low, high = s.pen_width
        return {
            "width": _r(rng.uniform(low, high)),
            "pressure": _r(s.pressure * rng.random()),
            "stroke_scale": _r(1.0 - 0.5 * s.pressure * rng.random(n_strokes)),  # per-stroke force
        }

    @staticmethod
    def apply(canvas: np.ndarray, strokes_px: list[np.ndarray], width_px: float, params: dict) -> None:
        """Draw (N, 2) polylines in output px onto a uint8 coverage canvas, width varying along each."""
        counts = np.array([len(pts) for pts in strokes_px])
        points = np.vstack(strokes_px)
        first = np.concatenate([[0], np.cumsum(counts)[:-1]])  # index of each stroke's first point
        stroke_of = np.repeat(np.arange(len(counts)), counts)
        seg = np.hypot(*np.diff(points, axis=0).T)
        seg[first[1:] - 1] = 0.0  # no segment joins the end of one stroke to the start of the next
        along = np.concatenate([[0.0], np.cumsum(seg)])
        along -= along[first][stroke_of]
        total = along[np.cumsum(counts) - 1][stroke_of]
        t = np.divide(along, total, out=np.zeros_like(along), where=total > 0)
        force = np.asarray(params["stroke_scale"])[stroke_of]
        widths = width_px * force * (1.0 - params["pressure"] * (1.0 - np.sin(np.pi * t)))
        # OpenCV thickness is an integer: cut strokes into runs of equal thickness (a segment takes the
        # thickness of its first point; runs share their end points), then draw each thickness at once.
        thick = np.maximum(1, np.rint(widths)).astype(int)
        fixed = np.rint(points * 16).astype(np.int32)  # 4 bits of sub-pixel precision
        ends = np.cumsum(counts) - 1
        cut = np.flatnonzero(np.diff(thick[:-1]) != 0) + 1  # thickness changes between segments
        starts = np.union1d(first, cut[~np.isin(cut, ends)])
        stops = np.minimum(np.append(starts[1:], len(points)), ends[stroke_of[starts]])
        runs: dict[int, list[np.ndarray]] = {}
        for start, stop in zip(starts.tolist(), stops.tolist()):
            runs.setdefault(int(thick[start]), []).append(fixed[start:stop + 1])
        for width, polylines in runs.items():
            cv2.polylines(canvas, polylines, False, 255, width, cv2.LINE_AA, shift=4)


def _angle(rng: np.random.Generator, sigma: float) -> dict:
    """An angle in degrees from N(0, σ), cut at ±3σ so no sample is turned on its side."""
    return {"deg": _r(min(max(rng.normal(0, sigma), -3 * sigma), 3 * sigma), 3)}


class Slant:
    """Shear: x shifts by tan(angle) per unit of height above the word's centre."""

    @staticmethod
    def sample(rng: np.random.Generator, s: Strengths) -> dict:
        return _angle(rng, s.slant_deg)


class Rotate:
    @staticmethod
    def sample(rng: np.random.Generator, s: Strengths) -> dict:
        return _angle(rng, s.rotate_deg)


def geometry(slant: dict | None, rotate: dict | None) -> np.ndarray:
    """2×2 linear map (layout → page, y down) of slant then rotation."""
    m = np.eye(2)
    if slant:
        m = np.array([[1.0, -math.tan(math.radians(slant["deg"]))], [0.0, 1.0]]) @ m
    if rotate:
        a = math.radians(rotate["deg"])
        m = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]]) @ m
    return m


class Elastic:
    """Coarse-grid elastic warp of the image: displacements (output px) at a grid of control points."""

    @staticmethod
    def sample(rng: np.random.Generator, s: Strengths) -> dict:
        shape = tuple(s.elastic_grid)
        return {"dx": _r(rng.normal(0, s.elastic_px, shape), 3), "dy": _r(rng.normal(0, s.elastic_px, shape), 3)}


class Ink:
    @staticmethod
    def sample(rng: np.random.Generator, s: Strengths) -> dict:
        return {"level": int(rng.integers(s.ink[0], s.ink[1] + 1))}


class Paper:
    """Paper grey level plus a linear illumination gradient (grey levels across the whole image)."""

    @staticmethod
    def sample(rng: np.random.Generator, s: Strengths) -> dict:
        return {"level": int(rng.integers(s.paper[0], s.paper[1] + 1)), "gradient": _r(rng.uniform(-1, 1, 2) * s.gradient, 2)}


# Gaussian noise is cut from one fixed tile at a recorded offset: drawing 16k normals per image would
# cost more than the rest of the appearance step, and the offset replays the exact field.
NOISE_TILE_SHAPE = MAX_CANVAS  # every valid canvas fits


@lru_cache(maxsize=1)
def noise_tile() -> np.ndarray:
    return np.random.default_rng(20_260_001).standard_normal(NOISE_TILE_SHAPE, dtype=np.float32)


class Noise:
    """Gaussian noise (with probability noise_p) of a drawn σ: the noise tile at a drawn offset (top, left)."""

    @staticmethod
    def sample(rng: np.random.Generator, s: Strengths, shape: tuple[int, int]) -> dict:
        rows, cols = NOISE_TILE_SHAPE
        if shape[0] > rows or shape[1] > cols:
            raise ValueError(f"canvas {shape[1]}x{shape[0]} is larger than the noise tile {cols}x{rows}")
        if rng.random() >= s.noise_p:
            return {"sigma": 0.0}
        return {
            "sigma": _r(rng.uniform(*s.noise_sigma), 2),
            "offset": [int(rng.integers(rows - shape[0] + 1)), int(rng.integers(cols - shape[1] + 1))],
        }


class Blur:
    @staticmethod
    def sample(rng: np.random.Generator, s: Strengths) -> dict:
        return {"sigma": _r(rng.uniform(*s.blur_sigma), 2)}


@lru_cache(maxsize=16)
def _ramps(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    return np.linspace(-0.5, 0.5, width, dtype=np.float32), np.linspace(-0.5, 0.5, height, dtype=np.float32)[:, None]


@lru_cache(maxsize=4096)
def _tone(paper: int, ink: int) -> np.ndarray:
    """256-entry table from ink coverage (0 = paper, 255 = full ink) to grey level."""
    return np.rint(paper - np.arange(256) * ((paper - ink) / 255)).astype(np.uint8)


def appearance(coverage: np.ndarray, ink: dict | None, paper: dict | None, noise: dict | None, blur: dict | None) -> np.ndarray:
    """Grey image from an ink coverage map (uint8, 255 = full ink): ink on paper, blur, then light and noise.

    The optics blur the page; the illumination gradient and the sensor noise come after, unblurred.
    """
    height, width = coverage.shape
    image = cv2.LUT(coverage, _tone(paper["level"] if paper else 255, ink["level"] if ink else 0))
    if blur and blur["sigma"] >= 0.3:
        image = cv2.GaussianBlur(image, (0, 0), blur["sigma"])
    shade = None
    if paper and any(paper["gradient"]):
        ramp_x, ramp_y = _ramps(height, width)
        shade = ramp_x * np.float32(paper["gradient"][0]) + ramp_y * np.float32(paper["gradient"][1])
    if noise and noise["sigma"] > 0:
        top, left = noise["offset"]
        grain = noise_tile()[top:top + height, left:left + width] * np.float32(noise["sigma"])
        shade = grain if shade is None else shade + grain
    if shade is not None:
        image = cv2.add(image, shade, dtype=cv2.CV_8U)  # saturating: stays within 0..255
    return image
