"""Word images as the image tower sees them, with NumPy and OpenCV only (no torch), so the ONNX search path
on a device and the trainer prepare images the same way.

An image is decoded to grey, fitted into (height, width) keeping its aspect (shrunk or enlarged until one
side fits, then padded at the right and bottom) and returned as ink intensity in [0, 1]: 1 − grey/255, so
paper and padding are 0.
"""

from __future__ import annotations

import cv2
import numpy as np


class ImageError(ValueError):
    """Bytes that do not decode to an image."""


def decode(png: np.ndarray | bytes, height: int, width: int) -> np.ndarray:
    """Encoded image bytes (PNG, JPEG, … anything OpenCV reads) → (height, width) float32 ink in [0, 1]."""
    data = np.frombuffer(png, dtype=np.uint8)
    grey = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE) if data.size else None
    if grey is None:
        raise ImageError("the bytes do not hold a decodable image")
    return fit_ink(grey, height, width)


def fit_ink(grey: np.ndarray, height: int, width: int) -> np.ndarray:
    """(h, w) uint8 grey → (height, width) float32 ink, the word fitted in keeping its aspect."""
    ink = 1.0 - grey.astype(np.float32) / 255.0
    h, w = ink.shape
    if (h, w) == (height, width):
        return ink
    scale = min(height / h, width / w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    ink = cv2.resize(ink, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    out = np.zeros((height, width), np.float32)
    out[: ink.shape[0], : ink.shape[1]] = ink
    return out
