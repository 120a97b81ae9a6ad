import json

import pytest

from synth.fonts.strokes import StrokeFormatError, parse_polyline_path, read_hanzi_writer, read_svg_font


def test_polyline_path_absolute_relative_implicit_and_close():
    assert parse_polyline_path("M 0 0 L 10 0 20 5 M 1,1 l 2 2", "t") == [[[0, 0], [10, 0], [20, 5]], [[1, 1], [3, 3]]]
    assert parse_polyline_path("M0 0 10 0 10 10 Z", "t") == [[[0, 0], [10, 0], [10, 10], [0, 0]]]
    assert parse_polyline_path("m 1 1 2 0", "t") == [[[1, 1], [3, 1]]]
    assert parse_polyline_path("", "t") == []


@pytest.mark.parametrize("d, message", [
    ("M 0 0 A 1 1 0 0 0 3 3", "commands other than M, L, C, Q and Z"),
    ("M 0 0 L 1", "wrong number of coordinates"),
    ("L 1 1", "draws before its first M"),
    ("5 5", "before any command"),
])
def test_polyline_path_errors_name_the_glyph(d, message):
    with pytest.raises(StrokeFormatError, match=f"glyph 'x': .*{message}"):
        parse_polyline_path(d, "glyph 'x'")


def test_svg_font(tmp_path):
    svg = tmp_path / "font.svg"
    svg.write_text(
        '<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><defs>'
        '<font id="f" horiz-adv-x="400"><font-face units-per-em="1000" ascent="800" descent="-200"/>'
        '<glyph unicode=" " horiz-adv-x="300"/>'
        '<glyph unicode="&#xF1;" horiz-adv-x="500" d="M 10 0 L 10 300 M 0 400 L 50 420"/>'
        '<glyph unicode="ff" d="M 0 0 L 1 1"/><glyph unicode="i" d="M 5 0 L 5 300"/>'
        '</font></defs></svg>', encoding="utf-8")
    font = read_svg_font(svg)
    assert font["units_per_em"] == 1000 and font["descent"] == -200
    assert set(font["glyphs"]) == {" ", "ñ", "i"}  # the "ff" ligature is dropped
    assert font["glyphs"]["ñ"] == {"advance": 500, "strokes": [[[10, 0], [10, 300]], [[0, 400], [50, 420]]]}
    assert font["glyphs"]["i"]["advance"] == 400  # the font's default advance


def test_hanzi_writer_medians(tmp_path):
    (tmp_path / "水.json").write_text(json.dumps({"strokes": ["M 0 0 Z"], "medians": [[[1, 2], [3, 4]], [[5, 6], [7, 8], [9, 9]]]}), encoding="utf-8")
    (tmp_path / "火.json").write_text(json.dumps({"strokes": [], "medians": []}), encoding="utf-8")
    font = read_hanzi_writer(sorted(tmp_path.glob("?.json")))
    assert list(font["glyphs"]) == ["水", "火"]
    assert font["glyphs"]["水"]["strokes"] == [[[1, 2], [3, 4]], [[5, 6], [7, 8], [9, 9]]]
    (tmp_path / "坏.json").write_text("{}", encoding="utf-8")
    with pytest.raises(StrokeFormatError, match="坏.json: not a Hanzi Writer character file"):
        read_hanzi_writer([tmp_path / "坏.json"])


def test_curves_are_flattened_onto_the_curve():
    (stroke,) = parse_polyline_path("M 0 0 C 0 10 10 10 10 0", "t")
    assert stroke[0] == [0, 0] and stroke[-1] == [10, 0] and len(stroke) == 9
    mid = stroke[4]  # t = 0.5 of the cubic: (5, 7.5)
    assert mid == pytest.approx([5, 7.5])
    (quad,) = parse_polyline_path("M 0 0 q 5 10 10 0", "t")
    assert quad[-1] == [10, 0] and quad[4] == pytest.approx([5, 5])
