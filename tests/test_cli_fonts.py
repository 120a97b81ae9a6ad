import json

import pytest
from typer.testing import CliRunner

import synth.fonts.fetch as fetch
from synth.cli.fonts import app
from synth.fonts.catalogue import load_catalogue, source_digest
from synth.fonts.charsets import LATIN_REQUIRED
from tests.conftest import build_font, style_entry, write_catalogue

runner = CliRunner()


@pytest.fixture
def setup(tmp_path, monkeypatch):
    """Two Latin styles in a fake package: one full, one lacking ñ; a three-entry lexicon.

    Fetches run with --workers 1: spawned workers would not see this test's stand-in package.
    """
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    full = "".join(sorted(LATIN_REQUIRED))
    build_font(pkg / "full.ttf", inked=full)
    build_font(pkg / "noñ.ttf", inked=full.replace("ñ", ""))
    monkeypatch.setenv("SYNTH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(fetch, "package_dir", lambda style: pkg)
    catalogue = write_catalogue(tmp_path / "catalogue.yaml", [
        style_entry(id="full", family="Full", file="full.ttf", sha256=source_digest(pkg, "full.ttf")),
        style_entry(id="no-enye", family="No Enye", file="noñ.ttf", split="held-out", sha256=None),
    ])
    lexicon = tmp_path / "lexicon.tsv"
    lexicon.write_text("semantic_id\ten\tes\tzh\n0\twater\tagua\t水\n1\tchild\tniño\t孩子\n2\tyear\taño\t年\n", encoding="utf-8")
    return tmp_path, catalogue, lexicon


def test_list_filters_and_json(setup):
    _, catalogue, _ = setup
    result = runner.invoke(app, ["list", "--catalogue", str(catalogue), "--split", "held-out", "--json"])
    assert result.exit_code == 0, result.output
    assert [row["id"] for row in json.loads(result.output)] == ["no-enye"]
    result = runner.invoke(app, ["list", "--catalogue", str(catalogue), "--split", "nowhere"])
    assert result.exit_code != 0 and "nowhere" in result.output


def test_pin_then_fetch_then_check(setup):
    tmp_path, catalogue, lexicon = setup
    result = runner.invoke(app, ["fetch", "--catalogue", str(catalogue), "--workers", "1"])
    assert result.exit_code == 1 and "no-enye has no sha256" in result.output
    result = runner.invoke(app, ["pin", "--catalogue", str(catalogue)])
    assert result.exit_code == 0 and "pinned 1 style(s), 1 checksum(s) changed" in result.output
    assert load_catalogue(catalogue).get("no-enye").sha256
    result = runner.invoke(app, ["fetch", "--catalogue", str(catalogue), "--workers", "1"])
    assert result.exit_code == 0 and "2 fetched, 0 already installed" in result.output
    result = runner.invoke(app, ["fetch", "--catalogue", str(catalogue), "--workers", "1"])
    assert "0 fetched, 2 already installed" in result.output

    result = runner.invoke(app, ["check", "--catalogue", str(catalogue), "--lexicon", str(lexicon), "--json"])
    assert result.exit_code == 1  # no-enye cannot draw ñ
    report = json.loads(result.stdout)
    shares = {(r["style"], r["lang"]): r["share"] for r in report["rows"]}
    assert shares[("full", "es")] == 1.0 and shares[("no-enye", "es")] == pytest.approx(1 / 3)
    assert any("no-enye: lacks 1 required latin character(s): ñ" in p for p in report["problems"])
    result = runner.invoke(app, ["check", "--catalogue", str(catalogue), "--lexicon", str(lexicon), "--split", "train"])
    assert result.exit_code == 0 and "ok: 1 styles, 2 (style, language) pairs" in result.output


def test_checksum_mismatch_exits_with_one_line(setup):
    tmp_path, catalogue, _ = setup
    bad = write_catalogue(tmp_path / "bad.yaml", [style_entry(id="full", family="Full", file="full.ttf", sha256="a" * 64)])
    result = runner.invoke(app, ["fetch", "--catalogue", str(bad), "--workers", "1"])
    assert result.exit_code == 1
    assert "checksum mismatch" in result.output and "Traceback" not in result.output


def test_check_before_fetch_and_unknown_style(setup):
    _, catalogue, lexicon = setup
    result = runner.invoke(app, ["check", "--catalogue", str(catalogue), "--lexicon", str(lexicon)])
    assert result.exit_code == 1 and "not installed" in result.output
    result = runner.invoke(app, ["fetch", "nope", "--catalogue", str(catalogue)])
    assert result.exit_code == 1 and "unknown style(s) nope" in result.output
