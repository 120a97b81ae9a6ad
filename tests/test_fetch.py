import json

import pytest

import synth.fonts.fetch as fetch
from synth.fonts.catalogue import load_catalogue, source_digest
from synth.fonts.fetch import FetchError, install_style, installed_coverage, stamp_path
from tests.conftest import build_font, style_entry, write_catalogue


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A fake unpacked package folder; package_dir() returns it and counts calls (network work)."""
    pkg = tmp_path / "pkg"
    (pkg / "files").mkdir(parents=True)
    calls = []
    monkeypatch.setenv("SYNTH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(fetch, "package_dir", lambda style: calls.append(style.id) or pkg)
    return pkg, calls


def _style(tmp_path, package, **entry):
    pkg = package[0]
    if "sha256" not in entry:
        entry["sha256"] = source_digest(pkg, entry["file"])
    return load_catalogue(write_catalogue(tmp_path / "catalogue.yaml", [style_entry(**entry)])).styles[0]


def test_woff2_installs_as_sfnt_with_coverage_and_second_run_is_local(tmp_path, package):
    pkg, calls = package
    build_font(pkg / "files/hand-latin-400.woff2", inked="abcñ", blank="z", flavor="woff2")
    style = _style(tmp_path, package, file="files/hand-latin-400.woff2")
    done = install_style(style)
    assert done.status == "fetched" and done.path == style.cache_path
    assert done.path.read_bytes()[:4] == b"\x00\x01\x00\x00"  # plain TrueType, no longer woff2
    assert done.covered == frozenset("abcñ")
    stamp = json.loads(stamp_path(style).read_text())
    assert stamp["source_sha256"] == style.sha256 and stamp["covered"] == "abcñ"
    assert install_style(style).status == "cached"
    assert calls == [style.id]  # the second run never asked for the package
    assert installed_coverage(style) == frozenset("abcñ")


def test_checksum_mismatch_is_an_error_and_leaves_nothing(tmp_path, package):
    pkg, calls = package
    build_font(pkg / "files/hand.ttf", inked="ab")
    style = _style(tmp_path, package, file="files/hand.ttf", sha256="f" * 64)
    with pytest.raises(FetchError, match=r"style hand-a: checksum mismatch .*synth fonts pin hand-a"):
        install_style(style)
    assert not style.cache_path.parent.exists() or not list(style.cache_path.parent.iterdir())


def test_missing_file_unpinned_and_not_installed_are_clear_errors(tmp_path, package):
    pkg, calls = package
    build_font(pkg / "files/hand.ttf", inked="ab")
    style = _style(tmp_path, package, file="files/hand.ttf")
    missing = _style(tmp_path, package, file="files/other.ttf", sha256="0" * 64)
    with pytest.raises(FetchError, match="has no file files/other.ttf"):
        install_style(missing)
    unpinned = _style(tmp_path, package, file="files/hand.ttf", sha256="")
    with pytest.raises(FetchError, match="run `synth fonts pin hand-a` first"):
        install_style(unpinned)
    with pytest.raises(FetchError, match="not installed .* run `synth fonts fetch`"):
        installed_coverage(style)


def test_corrupt_cache_is_detected(tmp_path, package):
    pkg, calls = package
    build_font(pkg / "files/hand.ttf", inked="ab")
    style = _style(tmp_path, package, file="files/hand.ttf")
    install_style(style)
    style.cache_path.write_bytes(b"garbage")
    with pytest.raises(FetchError, match="is corrupt"):
        install_style(style)


def test_unicode_range_pieces_merge_into_one_font(tmp_path, package):
    pkg, calls = package
    build_font(pkg / "files/cjk-0-400-normal.woff2", inked="水火", flavor="woff2")
    build_font(pkg / "files/cjk-1-400-normal.woff2", inked="山木", flavor="woff2")
    build_font(pkg / "files/cjk-latin-400-normal.woff2", inked="ab", flavor="woff2")
    style = _style(tmp_path, package, file="files/cjk-*-400-normal.woff2", scripts=["han"], tags=["kai"])
    assert install_style(style).covered == frozenset("水火山木ab")


def test_ttc_face_is_extracted(tmp_path, package):
    pkg, calls = package
    from fontTools.ttLib import TTCollection, TTFont

    build_font(tmp_path / "f0.ttf", inked="ab")
    build_font(tmp_path / "f1.ttf", inked="水")
    ttc = TTCollection()
    ttc.fonts = [TTFont(tmp_path / "f0.ttf"), TTFont(tmp_path / "f1.ttf")]
    ttc.save(pkg / "files/both.ttc")
    style = _style(tmp_path, package, file="files/both.ttc", face=1, scripts=["han"], tags=["kai"])
    assert install_style(style).covered == frozenset("水")
    other_face = _style(tmp_path, package, file="files/both.ttc", face=0, scripts=["han"], tags=["kai"])
    assert install_style(other_face).covered == frozenset("ab")  # same source, new face: installed again


def test_stroke_sources_normalise(tmp_path, package):
    pkg, calls = package
    (pkg / "files/font.svg").write_text(
        '<svg xmlns="http://www.w3.org/2000/svg"><defs><font horiz-adv-x="400">'
        '<font-face units-per-em="1000" ascent="800" descent="-200"/>'
        '<glyph unicode="a" d="M 0 0 L 10 10"/><glyph unicode="b"/></font></defs></svg>', encoding="utf-8")
    svg = _style(tmp_path, package, id="ems", file="files/font.svg", kind="stroke", tags=["single-line"])
    assert install_style(svg).covered == frozenset("a")
    (pkg / "水.json").write_text(json.dumps({"medians": [[[0, 0], [5, 5]]]}), encoding="utf-8")
    hanzi = _style(tmp_path, package, id="hw", file="?.json", kind="stroke", scripts=["han"], tags=["single-line"])
    done = install_style(hanzi)
    assert done.covered == frozenset("水")
    assert json.loads(done.path.read_text())["glyphs"]["水"]["strokes"] == [[[0, 0], [5, 5]]]


def test_parallel_install_keeps_order_and_raises_the_first_failure(tmp_path, package):
    from synth.fonts.fetch import install_styles

    pkg, _ = package
    build_font(pkg / "files/a.ttf", inked="a")
    build_font(pkg / "files/b.ttf", inked="b")
    a = _style(tmp_path, package, id="a", family="A", file="files/a.ttf")
    b = _style(tmp_path, package, id="b", family="B", file="files/b.ttf")
    seen = []
    # fork, so the workers inherit this test's stand-in package (the CLI spawns)
    done = install_styles([a, b], workers=2, on_done=lambda i: seen.append(i.style.id), start_method="fork")
    assert [i.covered for i in done] == [frozenset("a"), frozenset("b")] and sorted(seen) == ["a", "b"]
    bad = _style(tmp_path, package, id="c", family="C", file="files/a.ttf", sha256="e" * 64)
    with pytest.raises(FetchError, match="style c: checksum mismatch"):
        install_styles([bad, b], workers=2, start_method="fork")


def test_damaged_sources_are_fetch_errors(tmp_path, package):
    pkg, _ = package
    (pkg / "files/broken.woff2").write_bytes(b"wOF2 but not really")
    broken = _style(tmp_path, package, file="files/broken.woff2")
    with pytest.raises(FetchError, match=r"style hand-a: cannot convert files/broken.woff2"):
        install_style(broken)
    (pkg / "files/arc.svg").write_text(
        '<svg xmlns="http://www.w3.org/2000/svg"><defs><font><font-face units-per-em="1000"/>'
        '<glyph unicode="a" d="M 0 0 A 1 1 0 0 0 5 5"/></font></defs></svg>', encoding="utf-8")
    arc = _style(tmp_path, package, id="arc", file="files/arc.svg", kind="stroke", tags=["single-line"])
    with pytest.raises(FetchError, match=r"style arc: .*arc.svg: glyph 'a': path uses commands other than"):
        install_style(arc)
    assert not list((tmp_path / "cache" / "fonts").glob("*"))
