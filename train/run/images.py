"""Word images as the image tower sees them, with NumPy and OpenCV only (no torch), so the ONNX search path
on a device and the trainer prepare images the same way.

An image is decoded to grey, fitted into (height, width) keeping its aspect (shrunk or enlarged until one
side fits) and returned as ink intensity in [0, 1]: 1 − grey/255, so paper and padding are 0. Two ways:

- plain (`crop=False`, the first models'): the whole image is fitted and padded at the right and bottom;
- `crop=True`: the image is first cut to the box of its ink (plus a margin of 4 % of its height) and its
  levels stretched so that its paper reads 0 and its darkest ink 1; the word is then fitted and centred.
  A word's size, position and contrast in the scan say nothing about which word it is, and a network that
  no longer has to learn that is more accurate on unseen handwriting (docs/results-discussion.md).
"""

from __future__ import annotations

import cv2
import numpy as np

from hwkit.errors import UserError


class ImageError(UserError, ValueError):
    """Bytes that do not decode to an image."""


def decode(png: np.ndarray | bytes, height: int, width: int, crop: bool = False) -> np.ndarray:
    """Encoded image bytes (PNG, JPEG, … anything OpenCV reads) → (height, width) float32 ink in [0, 1]."""
    data = np.frombuffer(png, dtype=np.uint8)
    grey = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE) if data.size else None
    if grey is None:
        raise ImageError("the bytes do not hold a decodable image")
    if crop:
        return fit_ink(1.0 - crop_word(grey), height, width, centre=True)
    return fit_ink(1.0 - grey.astype(np.float32) / 255.0, height, width)


def crop_word(grey: np.ndarray) -> np.ndarray:
    """(h, w) uint8 grey → float32 grey in [0, 1] cut to the ink's box, paper 1 and the darkest ink 0.

    Levels from the grey histogram: paper is the median, ink the darkest 0.1 % (a thin, small word still
    has that many pixels; a stray dark speck does not). Ink is what is darker than halfway between them. An
    image without such contrast (blank paper) is returned whole, levels unchanged.
    """
    cdf = np.cumsum(np.bincount(grey.ravel(), minlength=256))
    paper = int(np.searchsorted(cdf, cdf[-1] * 0.5))
    dark = int(np.searchsorted(cdf, cdf[-1] * 0.001))
    if paper - dark < 26:  # less than a tenth of the range between paper and ink: nothing to crop to
        return grey.astype(np.float32) / 255.0
    mask = grey < (paper + dark) / 2
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    margin = max(1, round(0.04 * grey.shape[0]))
    box = grey[max(0, rows[0] - margin): rows[-1] + 1 + margin, max(0, cols[0] - margin): cols[-1] + 1 + margin]
    return np.clip((box.astype(np.float32) - dark) / (paper - dark), 0.0, 1.0)


def fit_ink(ink: np.ndarray, height: int, width: int, centre: bool = False) -> np.ndarray:
    """(h, w) float32 ink → (height, width), fitted keeping its aspect; padded at the right and bottom, or
    with `centre` on both sides."""
    ink = ink.astype(np.float32, copy=False)
    h, w = ink.shape
    if (h, w) == (height, width):
        return ink
    scale = min(height / h, width / w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    ink = cv2.resize(ink, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    out = np.zeros((height, width), np.float32)
    y, x = ((height - ink.shape[0]) // 2, (width - ink.shape[1]) // 2) if centre else (0, 0)
    out[y: y + ink.shape[0], x: x + ink.shape[1]] = ink
    return out
