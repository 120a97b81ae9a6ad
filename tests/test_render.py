"""Renderer: determinism, replayable params, canvas fitting, effects on/off, and the warp maths."""

import json

import numpy as np
import pytest

import synth.fonts.fetch as fetch
from synth.fonts.catalogue import load_catalogue, source_digest
from synth.fonts.fetch import install_style
from synth.render.config import ConfigError, load_render_config, preset_names
from synth.render.effects import Pen, StrokeElastic
from synth.render.recipe import Renderer, SampleTask
from synth.render.warp import catmull_rom_weights, dense_field, field_at, warp
from tests.conftest import build_font, style_entry, write_catalogue

LETTERS = "abcdefghijklmnopqrstuvwxyzñáéíóú"


@pytest.fixture
def styles(tmp_path, monkeypatch):
    """An outline and a stroke style, installed into a temporary cache from a fake package."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    build_font(pkg / "hand.ttf", inked=LETTERS + "水")
    glyphs = "".join(f'<glyph unicode="{c}" horiz-adv-x="500" d="M 50 0 L 250 450 L 450 0 M 120 200 L 380 200"/>' for c in LETTERS)
    (pkg / "pen.svg").write_text(
        '<svg xmlns="http://www.w3.org/2000/svg"><defs><font horiz-adv-x="500">'
        '<font-face units-per-em="1000" ascent="800" descent="-200"/>'
        f'<glyph unicode="x" horiz-adv-x="500" d="M 0 0 L 400 400 M 0 400 L 400 0"/>{glyphs}</font></defs></svg>', encoding="utf-8")
    monkeypatch.setenv("SYNTH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(fetch, "package_dir", lambda style: pkg)
    cat = load_catalogue(write_catalogue(tmp_path / "catalogue.yaml", [
        style_entry(id="hand", family="Hand", file="hand.ttf", sha256=source_digest(pkg, "hand.ttf")),
        style_entry(id="pen", family="Pen", kind="stroke", file="pen.svg", tags=["single-line"], sha256=source_digest(pkg, "pen.svg")),
    ]))
    for style in cat.styles:
        install_style(style)
    return {s.id: s for s in cat.styles}


def _task(style, text="pequeño", seed=7, lang="es"):
    return SampleTask(semantic_id=3, lang=lang, text=text, style=style, index=0, seed=seed)


@pytest.mark.parametrize("style_id", ["hand", "pen"])
def test_same_seed_same_image_and_params_are_json(styles, style_id):
    renderer = Renderer(load_render_config("default"))
    a, pa = renderer.render(_task(styles[style_id]))
    b, pb = Renderer(load_render_config("default")).render(_task(styles[style_id]))
    assert a.shape == (64, 256) and a.dtype == np.uint8
    assert np.array_equal(a, b) and pa == pb
    assert json.loads(json.dumps(pa)) == pa  # every draw is plain JSON
    c, _ = renderer.render(_task(styles[style_id], seed=8))
    assert not np.array_equal(a, c)


def test_params_record_every_effect_in_use(styles):
    _, params = Renderer(load_render_config("default")).render(_task(styles["hand"]))
    assert set(params) == {"size", "glyph_jitter", "slant", "rotate", "elastic", "ink", "paper", "noise", "blur"}
    assert len(params["glyph_jitter"]["baseline"]) == len("pequeño")
    _, stroke_params = Renderer(load_render_config("default")).render(_task(styles["pen"]))
    assert {"stroke_elastic", "pen"} <= set(stroke_params)


def test_plain_preset_is_black_on_white_and_fits_the_margins(styles):
    cfg = load_render_config("none")
    for style_id in ("hand", "pen"):
        image, params = Renderer(cfg).render(_task(styles[style_id], text="ab"))
        assert set(params) <= {"pen"}
        assert image.max() == 255 and image.min() == 0  # white paper, black ink, nothing else drawn
        ys, xs = np.nonzero(image < 255)
        # the ink box maps onto the margins exactly; interpolation may bleed one pixel
        assert ys.min() >= cfg.margin - 1 and ys.max() <= cfg.height - cfg.margin + 1
        assert xs.min() >= cfg.margin - 1 and xs.max() <= cfg.width - cfg.margin + 1
        assert ys.max() - ys.min() >= cfg.height - 2 * cfg.margin - 3  # the ink box fills the height


def test_a_long_word_is_shrunk_to_the_canvas_width(styles):
    cfg = load_render_config("none")
    image, _ = Renderer(cfg).render(_task(styles["hand"], text="a" * 40))
    xs = np.nonzero(image < 255)[1]
    assert xs.min() >= cfg.margin - 1 and xs.max() <= cfg.width - cfg.margin + 1


def test_effects_can_be_switched_off_by_name(styles):
    cfg = load_render_config("default", overrides={"effects": ["size", "ink", "paper"]})
    _, params = Renderer(cfg).render(_task(styles["hand"]))
    assert set(params) == {"size", "ink", "paper"}


def test_config_presets_and_errors(tmp_path):
    assert preset_names() == ["default", "heavy", "light", "none"]
    assert load_render_config("heavy").strengths.slant_deg > load_render_config("light").strengths.slant_deg
    user = tmp_path / "mine.yaml"
    user.write_text("height: 32\nwidth: 128\nstrengths:\n  slant_deg: 2.5\n")
    cfg = load_render_config("light", user)
    assert (cfg.height, cfg.width, cfg.strengths.slant_deg, cfg.preset) == (32, 128, 2.5, "light")
    assert cfg.fingerprint() != load_render_config("light").fingerprint()
    with pytest.raises(ConfigError, match="unknown distortion preset 'wild'; valid presets: default, heavy, light, none"):
        load_render_config("wild")
    with pytest.raises(ConfigError, match="unknown effect 'wobble'; valid effects: size, glyph_jitter"):
        load_render_config(overrides={"effects": ["wobble"]})
    with pytest.raises(ConfigError, match="unknown field 'slnt'; valid fields: scale"):
        load_render_config(overrides={"strengths": {"slnt": 3}})
    with pytest.raises(ConfigError, match="ink must stay darker than"):
        load_render_config(overrides={"strengths": {"ink": [0, 250], "paper": [200, 255]}})
    with pytest.raises(ConfigError, match="must be a number"):
        load_render_config(overrides={"height": "tall"})
    bad = [
        ({"strengths": {"elastic_grid": [2.5, 4]}}, "elastic_grid must be a list of 2 whole numbers"),
        ({"strengths": {"ink": ["a", 3]}}, "ink must be a list of 2 whole numbers"),
        ({"strengths": {"blur_sigma": [0, "x"]}}, "blur_sigma must be a list of 2 numbers"),
        ({"strengths": {"scale": 1.5}}, r"strengths.scale must be in \[0, 1\)"),
        ({"strengths": {"slant_deg": -2}}, "slant_deg is a spread and must be ≥ 0"),
        ({"strengths": {"pressure": 2}}, "pressure must be in"),
        ({"effects": "size"}, "effects must be a list of effect names"),
        ({"width": 4096}, "too large; at most 2048x512"),
    ]
    for overrides, message in bad:
        with pytest.raises(ConfigError, match=message):
            load_render_config(overrides=overrides)


def test_catmull_rom_passes_through_controls_and_reproduces_lines():
    values = np.array([3.0, -1.0, 4.0, 1.0, 5.0])
    w = catmull_rom_weights(np.arange(5.0), 5)
    assert np.allclose(w @ values, values)
    u = np.linspace(0, 4, 33)
    assert np.allclose(catmull_rom_weights(u, 5).sum(axis=1), 1.0)
    assert np.allclose(catmull_rom_weights(u, 5) @ (2 * np.arange(5.0) + 1), 2 * u + 1)  # linear stays linear


def test_dense_field_matches_a_brute_force_loop():
    grid = np.random.default_rng(0).normal(size=(3, 5))
    dense = dense_field(grid, 7, 11)
    for y in range(7):
        for x in range(11):
            wy = catmull_rom_weights(np.array([y * 2 / 6]), 3)[0]
            wx = catmull_rom_weights(np.array([x * 4 / 10]), 5)[0]
            assert dense[y, x] == pytest.approx(wy @ grid @ wx, abs=1e-5)
    points = np.array([[0.0, 0.0], [10.0, 6.0], [5.0, 3.0]])
    (at,) = field_at([grid], points, (0, 0, 10, 6))
    assert at[:2] == pytest.approx([grid[0, 0], grid[-1, -1]])
    assert at[2] == pytest.approx(dense_field(grid, 7, 11)[3, 5], abs=1e-5)


def test_warp_agrees_with_elasticdeform_on_the_same_grid():
    elasticdeform = pytest.importorskip("elasticdeform")
    image = np.zeros((64, 256), np.float32)
    image[20:44, 100:140] = 255
    image[30:34, 10:250] = 255
    grid = np.random.default_rng(1).normal(0, 2, (2, 3, 9))
    reference = elasticdeform.deform_grid(image, grid, order=1, mode="constant", cval=0)
    ours = warp(image, np.array([[1.0, 0, 0], [0, 1.0, 0]]), (64, 256), dense_field(grid[1], 64, 256), dense_field(grid[0], 64, 256))
    assert np.abs(reference - ours).mean() < 2.0  # grey levels; both interpolate the grid with cubic splines


def test_stroke_elastic_moves_points_smoothly_and_pen_draws():
    strokes = [np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.5]]), np.array([[0.5, -0.5], [0.5, 0.5]])]
    params = {"dx": [[0.1] * 3] * 3, "dy": [[0.0] * 3] * 3}
    moved = StrokeElastic.apply(strokes, (0, -0.5, 2, 0.5), params)
    assert [m.shape for m in moved] == [(3, 2), (2, 2)]
    assert np.allclose(moved[0][:, 0], strokes[0][:, 0] + 0.1)  # a constant field is a translation
    canvas = np.zeros((40, 80), np.uint8)
    pen = {"width": 0.1, "pressure": 0.5, "stroke_scale": [1.0, 1.0]}
    Pen.apply(canvas, [np.array([[5.0, 20.0], [40.0, 20.0], [75.0, 20.0]]), np.array([[40.0, 5.0], [40.0, 35.0]])], 6.0, pen)
    assert canvas[20, 40] == 255 and canvas[20, 5] > 0 and canvas[35, 40] > 0
    assert (canvas[:, 40] > 128).sum() > (canvas[:, 8] > 128).sum()  # pressure: thicker mid-stroke
