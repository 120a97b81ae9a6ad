"""Shared test helpers: tiny fonts built with fontTools, and a catalogue writer."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from fontTools.fontBuilder import FontBuilder
from fontTools.pens.ttGlyphPen import TTGlyphPen


def build_font(path: Path, inked: str, blank: str = "", flavor: str | None = None, family: str = "Test Hand") -> Path:
    """A TrueType font mapping `inked` chars to a filled box and `blank` chars to empty outlines."""
    names = [".notdef"] + [f"u{ord(c):04X}" for c in inked + blank]
    fb = FontBuilder(1000, isTTF=True)
    fb.setupGlyphOrder(names)
    fb.setupCharacterMap({ord(c): f"u{ord(c):04X}" for c in inked + blank})
    glyphs = {}
    for name in names:
        pen = TTGlyphPen(None)
        if name == ".notdef" or chr(int(name[1:], 16)) in inked:
            # .notdef gets ink too: a real font's tofu box is not blank, which is exactly the trap
            pen.moveTo((100, 0)); pen.lineTo((100, 700)); pen.lineTo((500, 700)); pen.lineTo((500, 0)); pen.closePath()
        glyphs[name] = pen.glyph()
    fb.setupGlyf(glyphs)
    fb.setupHorizontalMetrics({name: (600, 100) for name in names})
    fb.setupHorizontalHeader(ascent=800, descent=-200)
    fb.setupNameTable({"familyName": family, "styleName": "Regular"})
    fb.setupOS2(sTypoAscender=800, sTypoDescender=-200, usWinAscent=800, usWinDescent=200)
    fb.setupPost()
    if flavor:
        fb.font.flavor = flavor
    fb.save(str(path))
    return path


@pytest.fixture
def make_font(tmp_path):
    def make(name: str, inked: str, blank: str = "", flavor: str | None = None) -> Path:
        return build_font(tmp_path / name, inked, blank, flavor)
    return make


def style_entry(**overrides) -> dict:
    entry = {
        "id": "hand-a", "family": "Hand A", "kind": "outline", "scripts": ["latin"], "source": "npm",
        "package": "@fontsource/hand-a", "version": "1.0.0", "file": "files/hand-a.woff2",
        "sha256": "0" * 64, "licence": "OFL-1.1", "tags": ["print"], "split": "train",
    }
    entry.update(overrides)
    return entry


def write_catalogue(path: Path, entries: list[dict]) -> Path:
    path.write_text(yaml.safe_dump({"styles": entries}, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def installed_fonts() -> dict[str, frozenset[str]]:
    """Covered characters of every style of the real catalogue, from the fetched font cache.

    Skips only when the cache is absent AND CI is unset: in CI the set-up has fetched the fonts, so
    a missing style there is a failure, not a skip.
    """
    import os

    from synth.fonts.catalogue import load_catalogue
    from synth.fonts.fetch import read_installed

    found = {s.id: read_installed(s) for s in load_catalogue().styles}
    if not all(found.values()) and not os.environ.get("CI"):
        pytest.skip("fonts not fetched (run `make setup`)")
    missing = [sid for sid, done in found.items() if done is None]
    assert not missing, f"styles not installed: {missing}"
    return {sid: done.covered for sid, done in found.items()}
