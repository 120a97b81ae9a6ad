from PIL import ImageFont

from synth.fonts.coverage import can_render, coverage_row, missing_chars, outline_coverage, stroke_coverage


def test_cmap_and_ink_both_required(make_font):
    path = make_font("hand.ttf", inked="aguñ", blank="x")
    covered = outline_coverage(path)
    assert covered == frozenset("aguñ")
    assert can_render(covered, "agua") and can_render(covered, "ñu")
    assert not can_render(covered, "taxi")  # t unmapped, x blank
    assert missing_chars(covered, "taxi") == ["t", "x", "i"]
    assert not can_render(covered, "")


def test_pillow_alone_cannot_tell_a_missing_glyph(make_font):
    # The trap the coverage check exists for: Pillow gives the unmapped "z" an ordinary box.
    font = ImageFont.truetype(str(make_font("hand.ttf", inked="a")), 40)
    left, top, right, bottom = font.getbbox("z")
    assert right > left and bottom > top
    assert "z" not in outline_coverage(make_font("hand2.ttf", inked="a"))


def test_whitespace_counts_when_mapped_and_woff2_reads(make_font):
    covered = outline_coverage(make_font("hand.woff2", inked="ab", blank=" ", flavor="woff2"))
    assert covered == frozenset("ab ")
    assert can_render(covered, "ab ba")


def test_stroke_coverage_needs_a_real_stroke():
    glyphs = {
        "a": {"advance": 500, "strokes": [[[0, 0], [1, 1]]]},
        "b": {"advance": 500, "strokes": []},
        "c": {"advance": 500, "strokes": [[[0, 0]]]},
        " ": {"advance": 300, "strokes": []},
    }
    assert stroke_coverage(glyphs) == frozenset("a ")


def test_coverage_row_counts_and_ranks_blockers():
    row = coverage_row("s", "es", frozenset("abcno"), ["banco", "año", "niño", "cab", ""])
    assert (row.renderable, row.total) == (2, 5)
    assert row.missing == ("ñ", "i")
    assert row.share == 0.4
