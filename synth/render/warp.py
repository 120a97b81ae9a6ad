"""Smooth displacement fields from coarse control grids, for the image and for pen-stroke points.

A field is given by displacements at a (rows × cols) grid of control points spanning the target (the
first and last control points sit on its edges) and interpolated with Catmull-Rom splines, which pass
through the control values. This is the coarse-grid elastic deformation of `elasticdeform`
(`deform_grid`), computed as two small matrix products: on a 64 × 256 word image `elasticdeform` takes
≈ 6 ms, this ≈ 0.02 ms plus one `cv2.remap` (≈ 0.1 ms) — the difference between ~150 and >1,000 images/s.
The tests compare the two on the same grid.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np


def catmull_rom_weights(u: np.ndarray, n_ctrl: int) -> np.ndarray:
    """(len(u), n_ctrl) weights interpolating control values at positions u ∈ [0, n_ctrl - 1]."""
    u = np.minimum(np.maximum(np.asarray(u, np.float64), 0), n_ctrl - 1)
    i = np.minimum(np.floor(u).astype(np.intp), n_ctrl - 2)
    t = (u - i)[:, None]
    # Catmull-Rom basis for neighbours i-1, i, i+1, i+2
    basis = 0.5 * np.hstack([
        -t**3 + 2 * t**2 - t,
        3 * t**3 - 5 * t**2 + 2,
        -3 * t**3 + 4 * t**2 + t,
        t**3 - t**2,
    ])
    # Padded columns 0 and n_ctrl + 1 are phantom controls extrapolated linearly from the two end
    # values (2·v0 − v1), so a linear field stays linear up to the edges; the padding also makes the
    # four neighbours of every row distinct columns, placed with one fancy assignment.
    padded = np.zeros((len(u), n_ctrl + 2))
    padded[np.arange(len(u))[:, None], i[:, None] + np.arange(4)] = basis
    padded[:, 1] += 2 * padded[:, 0]
    padded[:, 2] -= padded[:, 0]
    padded[:, n_ctrl] += 2 * padded[:, n_ctrl + 1]
    padded[:, n_ctrl - 1] -= padded[:, n_ctrl + 1]
    return padded[:, 1:n_ctrl + 1]


@lru_cache(maxsize=64)
def _dense_weights(n_ctrl: int, n_out: int) -> np.ndarray:
    return catmull_rom_weights(np.linspace(0, n_ctrl - 1, n_out), n_ctrl).astype(np.float32)


def dense_field(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    """(height, width) field from a (rows, cols) control grid spanning it corner to corner."""
    rows, cols = grid.shape
    return _dense_weights(rows, height) @ grid.astype(np.float32) @ _dense_weights(cols, width).T


def field_at(grids: list[np.ndarray], points: np.ndarray, box: tuple[float, float, float, float]) -> list[np.ndarray]:
    """Values of each field (control grids of one shape spanning `box` = (x0, y0, x1, y1)) at (N, 2) points."""
    rows, cols = grids[0].shape
    x0, y0, x1, y1 = box
    wu = catmull_rom_weights((points[:, 0] - x0) / max(x1 - x0, 1e-9) * (cols - 1), cols)
    wv = catmull_rom_weights((points[:, 1] - y0) / max(y1 - y0, 1e-9) * (rows - 1), rows)
    return [np.einsum("nr,rc,nc->n", wv, grid, wu) for grid in grids]


@lru_cache(maxsize=16)
def _pixel_grid(height: int, width: int) -> np.ndarray:
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    return np.dstack([xs, ys])  # (H, W, 2): each pixel's own (x, y)


def warp(source: np.ndarray, inverse: np.ndarray, shape: tuple[int, int], dx: np.ndarray | None = None, dy: np.ndarray | None = None) -> np.ndarray:
    """Output (H, W) image: out(p) = source(inverse · (p + d(p))), zero outside the source.

    `inverse` is the 2×3 affine from output to source pixel coordinates; `dx`, `dy` are optional
    dense displacement fields in output pixels (the elastic warp).
    """
    points = _pixel_grid(*shape)
    if dx is not None:
        points = points + np.dstack([dx, dy])
    coords = cv2.transform(points, inverse.astype(np.float32))  # (H, W, 2) source coordinates
    return cv2.remap(source, coords, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
