"""`synth lexicon` through typer's CliRunner: stats, build on fixture sources, audit-sample."""

from __future__ import annotations

import json
import re

import pytest
from lexicon_fixtures import ConceptEmbedder, make_sources
from typer.testing import CliRunner

from synth.cli import lexicon as cli_lexicon
from synth.lexicon import load_lexicon


@pytest.fixture()
def sources(tmp_path):
    return make_sources(tmp_path)


runner = CliRunner()


def test_cli_stats(tmp_path):
    path = tmp_path / "lexicon.tsv"
    path.write_text("semantic_id\ten\tes\tzh\n0\tdog\tperro\t狗\n1\tbeggar\tmendigo\t乞丐\n", encoding="utf-8")
    result = runner.invoke(cli_lexicon.app, ["stats", "--lexicon", str(path)])
    assert result.exit_code == 0, result.output
    assert "2 semantic IDs" in result.stdout and "outside GB 2312 level 1: 1" in result.stdout
    result = runner.invoke(cli_lexicon.app, ["stats", "--lexicon", str(path), "--json"])
    assert json.loads(result.stdout)["languages"]["zh"]["outside_gb2312_level1_chars"] == "丐"


def test_cli_stats_on_a_bad_lexicon_prints_one_line(tmp_path):
    path = tmp_path / "lexicon.tsv"
    path.write_text("semantic_id\ten\tes\tzh\n0\tdog\tperro\n", encoding="utf-8")
    result = runner.invoke(cli_lexicon.app, ["stats", "--lexicon", str(path)])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [f"error: {path}:2: too few columns: expected 4 (semantic_id, en, es, zh), found 3"]
    assert "Traceback" not in result.output


def test_cli_build_on_fixtures(tmp_path, sources, monkeypatch):
    import synth.lexicon.embed
    import synth.lexicon.sources

    monkeypatch.setattr(synth.lexicon.sources, "load_sources", lambda: sources)
    monkeypatch.setattr(synth.lexicon.embed, "UseEmbedder", ConceptEmbedder)
    config, overrides = tmp_path / "config.yaml", tmp_path / "overrides.yaml"
    config.write_text("min_size: 1\nen_min_zipf: 3.0\n", encoding="utf-8")
    overrides.write_text("drop_en: [the]\n", encoding="utf-8")
    out = tmp_path / "lex" / "lexicon.tsv"
    args = ["build", "--out", str(out), "--config", str(config), "--overrides", str(overrides)]

    result = runner.invoke(cli_lexicon.app, args)
    assert result.exit_code == 0, result.output
    built = out.read_bytes()
    report = json.loads((out.parent / "build_report.json").read_text(encoding="utf-8"))
    assert report["output"]["entries"] == len(load_lexicon(out)) and report["overrides"]["drop_en"] == 1

    result = runner.invoke(cli_lexicon.app, args)  # same sources, same bytes: nothing to refuse
    assert result.exit_code == 0 and "unchanged" in result.stderr and out.read_bytes() == built

    out.write_bytes(built.replace(b"perro", b"can"))
    result = runner.invoke(cli_lexicon.app, args)
    assert result.exit_code == 1 and "--force" in result.stderr
    assert b"\tcan\t" in out.read_bytes()  # refused: left as it was
    assert runner.invoke(cli_lexicon.app, [*args, "--force"]).exit_code == 0
    assert out.read_bytes() == built
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp files left

    report_path = out.parent / "build_report.json"
    report_path.write_text("my own notes", encoding="utf-8")  # a report that differs is protected too
    result = runner.invoke(cli_lexicon.app, args)
    assert result.exit_code == 1 and "build_report.json: exists and differs" in result.stderr
    assert report_path.read_text(encoding="utf-8") == "my own notes"


def test_cli_build_reports_bad_overrides_in_one_line(tmp_path, sources, monkeypatch):
    import synth.lexicon.sources

    monkeypatch.setattr(synth.lexicon.sources, "load_sources", lambda: sources)
    overrides = tmp_path / "overrides.yaml"
    overrides.write_text("drop_en: [the]\nbogus: 1\n", encoding="utf-8")
    out = tmp_path / "lexicon.tsv"
    result = runner.invoke(cli_lexicon.app, ["build", "--out", str(out), "--overrides", str(overrides)])
    assert result.exit_code == 1 and not out.exists()
    assert re.fullmatch(rf"error: {re.escape(str(overrides))}:2: unknown key 'bogus'.*\n", result.stderr)
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("a: [1,\n")
    result = runner.invoke(cli_lexicon.app, ["build", "--out", str(out), "--config", str(bad_yaml)])
    assert result.exit_code == 1 and not out.exists()
    assert result.stderr.startswith(f"error: --config {bad_yaml}: not valid YAML") and len(result.stderr.splitlines()) == 1
    result = runner.invoke(cli_lexicon.app, ["audit-sample", "--out", str(tmp_path), "--force"])
    assert result.exit_code == 1 and "is a folder; --out takes a file name" in result.stderr
    result = runner.invoke(cli_lexicon.app, ["audit-sample", "--out", str(tmp_path / "a.tsv"), "--n", "0"])
    assert result.exit_code == 2 and not (tmp_path / "a.tsv").exists()  # --n must be at least 1


def test_cli_audit_sample(tmp_path):
    path = tmp_path / "lexicon.tsv"
    rows = "".join(f"{i}\tw{chr(97 + i)}\tp{chr(97 + i)}\t{chr(0x4E00 + i)}\n" for i in range(10))
    path.write_text("semantic_id\ten\tes\tzh\n" + rows, encoding="utf-8")
    audit = tmp_path / "audit.tsv"
    args = ["audit-sample", "--lexicon", str(path), "--out", str(audit), "--n", "3", "--seed", "1"]
    assert runner.invoke(cli_lexicon.app, args).exit_code == 0
    assert len(audit.read_text(encoding="utf-8").splitlines()) == 4
    assert runner.invoke(cli_lexicon.app, args).exit_code == 1  # would lose verdicts
    every = runner.invoke(cli_lexicon.app, [*args[:-4], "--n", "50", "--force"])
    assert every.exit_code == 0 and "--n 50 is more than the lexicon's 10 entries: all of them" in every.output
    assert len(audit.read_text(encoding="utf-8").splitlines()) == 11
