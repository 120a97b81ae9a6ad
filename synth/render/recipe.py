"""The rendering recipe: one word in one style, from a seed to a grey image and the params that made it.

`Renderer.render` reads top to bottom as the generation order: size → glyph jitter → layout → (strokes:
stroke elastic, pen) → slant → rotate → fit to the canvas → elastic warp → ink → paper → noise → blur.
Each effect samples from the sample's own generator just before it is applied, and its params go into
the returned dict; an effect left out of the config draws nothing and leaves the image unchanged.

The output keeps the word's aspect ratio: its ink box is fitted to the canvas height (less margins,
times the size factor), shrunk further when the word is too wide, and padded with paper to the canvas
width — the tight crops of real word databases such as IAM, at a fixed size.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from synth.fonts.catalogue import Style
from synth.fonts.glyphs import REFERENCE_SIZE, compose_outline, layout_outline, layout_strokes, load_face, raster_size
from synth.render.config import RenderConfig
from synth.render.effects import (
    Blur,
    Elastic,
    GlyphJitter,
    Ink,
    Noise,
    Paper,
    Pen,
    Rotate,
    Size,
    Slant,
    StrokeElastic,
    appearance,
    geometry,
)
from synth.render.warp import dense_field, warp

MIN_FIT_EM = 0.5  # the shortest ink box height (em) a word is fitted as

# Extra space (em) between stroke-font glyphs: Hanzi Writer boxes touch, Hershey glyphs sit tight.
STROKE_TRACKING = {"latin": 0.02, "han": 0.08}


@dataclass(frozen=True)
class SampleTask:
    semantic_id: int
    lang: str  # en | es | zh
    text: str
    style: Style
    index: int  # k-th sample of this (semantic_id, lang, style)
    seed: int  # uint64, derived from (master seed, semantic_id, lang, style, index)


class Renderer:
    """Renders samples with one config; faces are loaded on first use and cached for the process."""

    def __init__(self, config: RenderConfig) -> None:
        self.config = config
        self.on = set(config.effects)

    def _draw(self, name: str, sampler, rng, *args) -> dict | None:
        return sampler(rng, self.config.strengths, *args) if name in self.on else None

    def _fit(self, box: tuple[float, float, float, float], size: dict | None, em: float, linear=None) -> tuple[float, float, float]:
        """Scale and offset placing ink box `box` (x0, y0, x1, y1), mapped by 2×2 `linear`, on the canvas.

        The ink box fills the height, but never counts as less than MIN_FIT_EM em tall: a flat word
        (一, "—", "no" in a small-x-height font) keeps a handwriting size instead of being blown up.
        """
        cfg = self.config
        x0, y0, x1, y1 = box
        if linear is not None:  # the box of the mapped corners; plain floats beat NumPy at this size
            (a, b), (c, d) = linear.tolist()
            xs = (a * x0 + b * y0, a * x1 + b * y0, a * x0 + b * y1, a * x1 + b * y1)
            ys = (c * x0 + d * y0, c * x1 + d * y0, c * x0 + d * y1, c * x1 + d * y1)
            x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
        box_h, box_w = cfg.height - 2 * cfg.margin, cfg.width - 2 * cfg.margin
        factor = size["factor"] if size else 1.0
        scale = min(box_h * factor / max(y1 - y0, MIN_FIT_EM * em), box_w / max(x1 - x0, 1e-6))
        left = cfg.margin if cfg.align == "left" else (cfg.width - (x1 - x0) * scale) / 2
        return scale, left - x0 * scale, cfg.height / 2 - (y0 + y1) / 2 * scale

    def render(self, task: SampleTask) -> tuple[np.ndarray, dict]:
        """(height, width) uint8 grey image of `task.text` in `task.style`, and every draw that made it."""
        cfg, style = self.config, task.style
        rng = np.random.default_rng(task.seed)
        params: dict = {}
        face = load_face(style.kind, str(style.cache_path))
        params["size"] = self._draw("size", Size.sample, rng)
        params["glyph_jitter"] = self._draw("glyph_jitter", GlyphJitter.sample, rng, len(task.text))

        if style.kind == "outline":
            # Measure at a reference size, then rasterise near the final size (sharp, and no aliasing).
            placed, box = layout_outline(face, task.text, REFERENCE_SIZE, params["glyph_jitter"])
            params["slant"] = self._draw("slant", Slant.sample, rng)
            params["rotate"] = self._draw("rotate", Rotate.sample, rng)
            linear = geometry(params["slant"], params["rotate"])
            scale, _, _ = self._fit(box, params["size"], REFERENCE_SIZE, linear)
            raster = raster_size(REFERENCE_SIZE * scale)
            placed, box = layout_outline(face, task.text, raster, params["glyph_jitter"])
            source, origin = compose_outline(placed, box)
            scale, tx, ty = self._fit(box, params["size"], raster, linear)
            forward = np.hstack([linear * scale, [[tx], [ty]]])  # layout px → output px
            forward[:, 2] += forward[:, :2] @ origin  # source raster px → output px
        else:
            script = "han" if "han" in style.scripts and task.lang == "zh" else "latin"
            strokes, _ = layout_strokes(face, task.text, params["glyph_jitter"], STROKE_TRACKING[script])
            points = np.vstack(strokes)
            box = (*points.min(axis=0), *points.max(axis=0))
            params["stroke_elastic"] = self._draw("stroke_elastic", StrokeElastic.sample, rng, len(task.text))
            if params["stroke_elastic"]:
                strokes = StrokeElastic.apply(strokes, box, params["stroke_elastic"])
            params["pen"] = Pen.sample(rng, cfg.strengths, len(strokes))  # a stroke style always needs a pen
            pen_em = params["pen"]["width"] * face.pen_unit
            params["slant"] = self._draw("slant", Slant.sample, rng)
            params["rotate"] = self._draw("rotate", Rotate.sample, rng)
            linear = geometry(params["slant"], params["rotate"])
            moved = [pts @ linear.T for pts in strokes]
            half_pen = pen_em / 2
            allpts = np.vstack(moved)
            (x0, y0), (x1, y1) = allpts.min(axis=0) - half_pen, allpts.max(axis=0) + half_pen
            scale, tx, ty = self._fit((x0, y0, x1, y1), params["size"], 1.0)
            source = np.zeros((cfg.height, cfg.width), np.uint8)
            Pen.apply(source, [pts * scale + (tx, ty) for pts in moved], pen_em * scale, params["pen"])
            forward = np.array([[1.0, 0, 0], [0, 1.0, 0]])  # already drawn in output px

        params["elastic"] = self._draw("elastic", Elastic.sample, rng)
        dx = dy = None
        if params["elastic"]:
            dx = dense_field(np.asarray(params["elastic"]["dx"]), cfg.height, cfg.width)
            dy = dense_field(np.asarray(params["elastic"]["dy"]), cfg.height, cfg.width)
        inverse = cv2.invertAffineTransform(forward)
        coverage = warp(source, inverse, (cfg.height, cfg.width), dx, dy)

        params["ink"] = self._draw("ink", Ink.sample, rng)
        params["paper"] = self._draw("paper", Paper.sample, rng)
        params["noise"] = self._draw("noise", Noise.sample, rng, (cfg.height, cfg.width))
        params["blur"] = self._draw("blur", Blur.sample, rng)
        image = appearance(coverage, params["ink"], params["paper"], params["noise"], params["blur"])
        return image, {name: value for name, value in params.items() if value is not None}
