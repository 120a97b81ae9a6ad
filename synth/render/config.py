"""Typed render configuration: canvas, the effects in use, and their strengths, with named presets.

Presets are small YAML files in `synth/configs/distort/` (`none`, `light`, `default`, `heavy`); a user's
`--config file.yaml` may change any field on top of a preset. Every field is validated on load and an
unknown name (preset, effect, field) is an error that lists the valid ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from hwkit.errors import UserError
from hwkit.files import read_yaml

PRESET_DIR = Path(__file__).parent.parent / "configs" / "distort"

# The effects of the recipe, in the order they run (see synth.render.recipe). A config lists the ones in use.
EFFECTS = (
    "size",            # word scale
    "glyph_jitter",    # per-glyph baseline, scale and spacing jitter
    "stroke_elastic",  # smooth displacement of pen-stroke points (stroke styles only)
    "pen",             # pen width and pressure along each stroke (stroke styles only)
    "slant",           # shear
    "rotate",
    "elastic",         # coarse-grid elastic warp of the image
    "ink",             # ink grey level
    "paper",           # paper grey level and a soft illumination gradient
    "noise",           # Gaussian sensor noise
    "blur",            # Gaussian blur
)


# The largest canvas (height, width): the noise tile (synth.render.effects) is cut from an array of this size.
MAX_CANVAS = (512, 2048)


class ConfigError(UserError, ValueError):
    """A render config is invalid; the one-line message names the source, the field and the fix."""


@dataclass
class Strengths:
    """How strong each effect is. Lengths are fractions of the font's em size unless they say px."""

    scale: float = 0.10  # word scale drawn from 1 ± scale (uniform)
    glyph_scale: float = 0.05  # per-glyph scale σ (relative)
    baseline: float = 0.03  # per-glyph baseline shift σ (em)
    spacing: float = 0.03  # per-glyph extra advance σ (em); never closes a gap below zero
    stroke_elastic: float = 0.025  # σ of stroke-point displacement at the control points (em)
    pen_width: tuple[float, float] = (0.10, 0.19)  # stroke styles: pen width range, fraction of the x-height
    pressure: float = 0.35  # relative width change along a stroke, 0 = constant pen
    slant_deg: float = 7.0  # shear angle σ in degrees
    rotate_deg: float = 1.5  # rotation σ in degrees
    elastic_px: float = 1.2  # σ of image displacement at the grid's control points, in output px
    elastic_grid: tuple[int, int] = (3, 9)  # control points (rows, cols) spanning the image
    ink: tuple[int, int] = (0, 70)  # ink grey level range (0 = black)
    paper: tuple[int, int] = (215, 255)  # paper grey level range
    gradient: float = 12.0  # max grey-level change of the illumination gradient across the image
    noise_p: float = 0.5  # share of samples with any noise: many scans are clean, and noise costs PNG bytes
    noise_sigma: tuple[float, float] = (0.0, 2.5)  # Gaussian noise σ range (grey levels) when there is noise
    blur_sigma: tuple[float, float] = (0.0, 0.7)  # Gaussian blur σ range (px); below 0.3 no blur


@dataclass
class RenderConfig:
    height: int = 64  # output height in px
    width: int = 256  # output canvas width in px; words keep their aspect (padded, or shrunk if too wide)
    margin: int = 4  # px of paper kept around the word
    align: str = "left"  # left | center: where a narrow word sits on the canvas
    preset: str = "default"  # the distortion preset these values started from (recorded, not re-read)
    effects: tuple[str, ...] = EFFECTS
    strengths: Strengths = field(default_factory=Strengths)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        """sha256 of the canonical JSON of the config: equal configs render equal samples."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _apply(target, values: dict, where: str) -> None:
    known = {f.name: f for f in dataclasses.fields(target)}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"{where}: unknown field {key!r}; valid fields: {', '.join(known)}")
        current = getattr(target, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: {key} must be a mapping of its fields")
            _apply(current, value, f"{where}.{key}")
        elif key == "effects":
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{where}: effects must be a list of effect names, e.g. [size, slant, ink]")
            setattr(target, key, tuple(value))
        elif isinstance(current, tuple):
            kind = int if isinstance(current[0], int) else (int, float)
            if (not isinstance(value, (list, tuple)) or len(value) != len(current)
                    or not all(isinstance(v, kind) and not isinstance(v, bool) for v in value)):
                what = "whole numbers" if kind is int else "numbers"
                raise ConfigError(f"{where}: {key} must be a list of {len(current)} {what}")
            setattr(target, key, tuple(type(c)(v) for c, v in zip(current, value)))
        elif isinstance(current, (int, float)) and not isinstance(current, bool):
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ConfigError(f"{where}: {key} must be a number, not {value!r}")
            setattr(target, key, type(current)(value))
        else:
            setattr(target, key, value)


def _validate(cfg: RenderConfig, where: str) -> RenderConfig:
    unknown = [e for e in cfg.effects if e not in EFFECTS]
    if unknown:
        raise ConfigError(f"{where}: unknown effect {unknown[0]!r}; valid effects: {', '.join(EFFECTS)}")
    cfg.effects = tuple(e for e in EFFECTS if e in cfg.effects)  # the recipe's order, whatever the file's
    if cfg.height < 16 or cfg.width < cfg.height:
        raise ConfigError(f"{where}: canvas {cfg.width}x{cfg.height} too small; need height ≥ 16 and width ≥ height")
    if cfg.height > MAX_CANVAS[0] or cfg.width > MAX_CANVAS[1]:
        raise ConfigError(f"{where}: canvas {cfg.width}x{cfg.height} too large; at most {MAX_CANVAS[1]}x{MAX_CANVAS[0]}")
    if not 0 <= cfg.margin < cfg.height // 4:
        raise ConfigError(f"{where}: margin {cfg.margin} must be in [0, height/4)")
    if cfg.align not in ("left", "center"):
        raise ConfigError(f"{where}: align {cfg.align!r} must be left or center")
    s = cfg.strengths
    if not 0 <= s.scale < 1:
        raise ConfigError(f"{where}: strengths.scale must be in [0, 1): the word is drawn at 1 − scale … 1 of the height")
    for name in ("glyph_scale", "baseline", "spacing", "stroke_elastic", "slant_deg", "rotate_deg", "elastic_px", "gradient"):
        if getattr(s, name) < 0:
            raise ConfigError(f"{where}: strengths.{name} is a spread and must be ≥ 0")
    if not 0 <= s.pressure <= 1:
        raise ConfigError(f"{where}: strengths.pressure must be in [0, 1]")
    for name in ("pen_width", "ink", "paper", "noise_sigma", "blur_sigma"):
        low, high = getattr(s, name)
        if low > high or low < 0:
            raise ConfigError(f"{where}: strengths.{name} must be a [low, high] range with 0 ≤ low ≤ high")
    if not 0 <= s.noise_p <= 1:
        raise ConfigError(f"{where}: strengths.noise_p must be a probability in [0, 1]")
    if s.ink[1] >= s.paper[0]:
        raise ConfigError(f"{where}: strengths.ink must stay darker than strengths.paper")
    if min(s.elastic_grid) < 2:
        raise ConfigError(f"{where}: strengths.elastic_grid needs at least 2 control points per axis")
    return cfg


def load_render_config(preset: str = "default", path: Path | None = None, overrides: dict | None = None) -> RenderConfig:
    """A preset, then a user's YAML file, then explicit overrides (CLI options) on top."""
    if preset not in preset_names():
        raise ConfigError(f"unknown distortion preset {preset!r}; valid presets: {', '.join(preset_names())}")
    cfg = RenderConfig(preset=preset)
    preset_path = PRESET_DIR / f"{preset}.yaml"
    _apply(cfg, yaml.safe_load(preset_path.read_text(encoding="utf-8")) or {}, str(preset_path))
    if path is not None:
        values = read_yaml(path, ConfigError)
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a mapping of config fields")
        values.pop("preset", None)
        _apply(cfg, values, str(path))
    if overrides:
        _apply(cfg, overrides, "options")
    return _validate(cfg, str(path or preset_path))
