"""Training-time augmentation of word images: ink (H, W) in [0, 1] in, the same out; NumPy and OpenCV only.

Each image's parameters are drawn first (`draw`, always the same number of values for a level and an image
size, so a DDP rank can skip the draws of the rows before its own) and then applied (`apply`). Levels:

- `light`: one affine (scale 0.9–1.05, rotation ±2°, shear ±0.15, shift ±4 % of the height and width) and an
  ink-contrast factor 0.7–1.1. The first recipe's jitter.
- `strong`: what an unseen handwriting font changes. The affine is wider and separates the axes (scale
  0.8–1.05, width stretch ×0.75–1.3, rotation ±4°, slant ±0.45, shift ±5 %, about the word's centre and
  never pushing it out of the frame); a smooth elastic field moves the strokes locally (a 3×9 grid of
  displacements, σ = 3 % of the height); the pen is made thicker or thinner (a 2×2 dilation in 30 % of the
  images, an erosion of thick strokes in 15 %); 25 % are blurred (σ 0.4–0.8 px); ink contrast 0.6–1.1;
  Gaussian noise σ 0–0.05. Paper, not blank, fills what the transforms bring into the frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

LEVELS = ("light", "strong")
GRID = (3, 9)  # elastic control points (rows, columns) over the image


@dataclass(frozen=True)
class AugmentParams:
    scale: float        # overall size factor
    stretch: float      # extra width factor (strong only; 1 in light)
    degrees: float      # rotation
    shear: float        # x += shear · y (slant)
    shift: tuple[float, float]  # (x, y) as fractions of the width and height
    contrast: float     # ink multiplier
    elastic: np.ndarray | None = None  # (2, *GRID) displacements as fractions of the height
    pen: float = 0.5    # < 0.3: dilate; 0.3–0.45: erode; else unchanged
    blur: float = 0.0   # Gaussian σ in pixels (0: none)
    noise: np.ndarray | None = None  # (H, W) standard-normal field, times noise_sigma
    noise_sigma: float = 0.0


def draw(rng: np.random.Generator, level: str, shape: tuple[int, int]) -> AugmentParams:
    """One image's parameters; a fixed number of draws per (level, shape)."""
    if level == "light":
        scale, degrees, shear, fx, fy, contrast = (rng.uniform(0.9, 1.05), rng.uniform(-2.0, 2.0),
                                                   rng.uniform(-0.15, 0.15), rng.uniform(-0.04, 0.04),
                                                   rng.uniform(-0.04, 0.04), rng.uniform(0.7, 1.1))
        return AugmentParams(scale, 1.0, degrees, shear, (fx, fy), contrast)
    if level != "strong":
        raise ValueError(f"augmentation level must be one of {', '.join(LEVELS)}, got {level!r}")
    u = rng.uniform(size=10)
    blur = 0.4 + 0.4 * u[8] if u[7] < 0.25 else 0.0
    return AugmentParams(
        scale=0.8 + 0.25 * u[0], stretch=math.exp(math.log(0.75) + (math.log(1.3) - math.log(0.75)) * u[1]),
        degrees=-4 + 8 * u[2], shear=-0.45 + 0.9 * u[3], shift=(-0.05 + 0.1 * u[4], -0.05 + 0.1 * u[5]),
        contrast=0.6 + 0.5 * u[9], elastic=rng.normal(0.0, 0.03, size=(2, *GRID)), pen=float(u[6]), blur=blur,
        noise=rng.standard_normal(shape).astype(np.float32), noise_sigma=0.05 * float(rng.uniform()),
    )


def _affine(p: AugmentParams, h: int, w: int, ink: np.ndarray, paper: float) -> np.ndarray:
    """The 2×3 matrix: about the image centre (light); about the word's box, kept inside the frame (strong)."""
    angle = math.radians(p.degrees)
    cos, sin = math.cos(angle), math.sin(angle)
    if p.elastic is None:
        sx = sy = p.scale
        centre = np.array([w / 2, h / 2], np.float32)
    else:
        ys, xs = np.nonzero(ink > paper + 0.25)
        box = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) if xs.size else (0, 0, w, h)
        width = (box[2] - box[0]) * p.scale * p.stretch + abs(p.shear) * h
        sy = p.scale
        sx = p.scale * p.stretch * min(1.0, 0.98 * w / max(1.0, width))  # a stretched word still fits
        centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], np.float32)
    a = np.array([[cos * sx, -sin * sy + p.shear * sy, 0.0], [sin * sx, cos * sy, 0.0]], np.float32)
    a[:, 2] = centre - a[:, :2] @ centre + (p.shift[0] * w, p.shift[1] * h)
    if p.elastic is not None:  # move the transformed box back inside the frame where it left it
        corners = np.array([[box[0], box[1]], [box[2], box[1]], [box[0], box[3]], [box[2], box[3]]], np.float32)
        moved = corners @ a[:, :2].T + a[:, 2]
        low, high = moved.min(axis=0), moved.max(axis=0)
        a[:, 2] += np.maximum(0.0, -low) - np.maximum(0.0, high - (w, h))
    return a


def paper_level(ink: np.ndarray) -> float:
    """The image's k-th lightest value, k = a fifth of its pixels, on the 1/255 grid of the decoded images
    (words rarely cover more than four fifths of their image). A 256-bin histogram: `np.partition` is ten
    times slower on images whose paper is many exact zeros, and this ran once per training image."""
    counts = np.bincount((np.clip(ink, 0.0, 1.0) * 255 + 0.5).astype(np.uint8).ravel(), minlength=256)
    return float(np.searchsorted(np.cumsum(counts), ink.size // 5 + 1)) / 255


@lru_cache(maxsize=8)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    return np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))


def apply(ink: np.ndarray, p: AugmentParams) -> np.ndarray:
    h, w = ink.shape
    # strong: what comes into the frame is paper, not a blank border around a tilted sheet
    paper = 0.0 if p.elastic is None else paper_level(ink)
    out = cv2.warpAffine(ink, _affine(p, h, w, ink, paper), (w, h), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=paper)
    if p.elastic is not None:
        dx = cv2.resize(p.elastic[0].astype(np.float32) * h, (w, h), interpolation=cv2.INTER_CUBIC)
        dy = cv2.resize(p.elastic[1].astype(np.float32) * h, (w, h), interpolation=cv2.INTER_CUBIC)
        gx, gy = _grid(h, w)
        out = cv2.remap(out, gx + dx, gy + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=paper)
        if p.pen < 0.3:
            out = cv2.dilate(out, np.ones((2, 2), np.uint8))
        elif p.pen < 0.45 and (out > 0.5).mean() > 0.08:  # only thick pens lose a pixel: thin strokes would vanish
            out = cv2.erode(out, np.ones((2, 2), np.uint8))
        if p.blur:
            out = cv2.GaussianBlur(out, (0, 0), p.blur)
    out = out * p.contrast
    if p.noise is not None:
        out = out + p.noise_sigma * p.noise
    return np.clip(out, 0.0, 1.0)


def augment(ink: np.ndarray, rng: np.random.Generator, level: str = "light") -> np.ndarray:
    """`apply(ink, draw(rng, level, ink.shape))`."""
    return apply(ink, draw(rng, level, ink.shape))
