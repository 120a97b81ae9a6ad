"""The lexicon loader: the good case, every malformed case, statistics, and the committed lexicon."""

from __future__ import annotations

import hashlib
import re

import pytest

from synth.fonts.charsets import gb2312_level1
from synth.lexicon import LANGS, Entry, LexiconError, lexicon_stats, load_lexicon
from synth.lexicon.build import draw_audit_sample, read_audit
from synth.paths import DEFAULT_LEXICON, LEXICON_DIR

HEADER = "semantic_id\ten\tes\tzh\n"
GOOD = HEADER + "0\tdog\tperro\t狗\n1\twater\tagua\t水\n2\tbook\tlibro\t书\n"


def write(tmp_path, text: str | bytes, name: str = "lexicon.tsv"):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def test_good_lexicon_loads(tmp_path):
    path = write(tmp_path, GOOD)
    lex = load_lexicon(path)
    assert len(lex) == 3
    assert lex.path == path
    assert lex.sha256 == hashlib.sha256(GOOD.encode("utf-8")).hexdigest()
    assert lex.entries[1] == Entry(1, "water", "agua", "水")
    assert [e.semantic_id for e in lex.entries] == [0, 1, 2]
    assert lex.texts("es") == ["perro", "agua", "libro"]
    assert lex.entries[0].text("zh") == "狗"
    assert lex.charset("zh") == {"狗", "水", "书"}
    assert lex.charset("en") == set("dogwaterbook")


def test_id_of(tmp_path):
    lex = load_lexicon(write(tmp_path, GOOD))
    assert lex.id_of("en", "book") == 2
    assert lex.id_of("zh", "水") == 1
    with pytest.raises(KeyError):
        lex.id_of("es", "gato")
    with pytest.raises(KeyError):
        lex.id_of("fr", "chien")
    with pytest.raises(KeyError):
        lex.entries[0].text("fr")


def test_file_without_final_newline_loads(tmp_path):
    assert len(load_lexicon(write(tmp_path, GOOD.rstrip("\n")))) == 3


MALFORMED = [
    pytest.param("", 1, "empty file", id="empty-file"),
    pytest.param(HEADER, 1, "no entries", id="header-only"),
    pytest.param("id\ten\tes\tzh\n0\ta\tb\tc\n", 1, "missing column(s) semantic_id", id="header-bad-id-column"),
    pytest.param("semantic_id\ten\tes\n0\ta\tb\n", 1, "missing column(s) zh", id="header-missing-language"),
    pytest.param("semantic_id\tes\ten\tzh\n0\ta\tb\tc\n", 1, "bad header", id="header-wrong-order"),
    pytest.param(HEADER + "0\tdog\tperro\t狗\textra\n", 2, "too many columns", id="too-many-columns"),
    pytest.param(HEADER + "0\tdog\tperro\n", 2, "too few columns", id="too-few-columns"),
    pytest.param(HEADER + "zero\tdog\tperro\t狗\n", 2, "semantic_id 'zero' is not a non-negative integer", id="id-not-int"),
    pytest.param(HEADER + "-1\tdog\tperro\t狗\n", 2, "not a non-negative integer", id="id-negative"),
    pytest.param(HEADER + "00\tdog\tperro\t狗\n", 2, "not a non-negative integer", id="id-leading-zero"),
    pytest.param(HEADER + "0\tdog\tperro\t狗\n0\tcat\tgato\t猫\n", 3, "duplicate semantic_id 0 (first at line 2)", id="id-duplicate"),
    pytest.param(HEADER + "0\tdog\tperro\t狗\n2\tcat\tgato\t猫\n", 3, "semantic_id 2 out of sequence: expected 1", id="id-gap"),
    pytest.param(HEADER + "1\tdog\tperro\t狗\n", 2, "out of sequence: expected 0", id="id-not-zero-based"),
    pytest.param(HEADER + "0\tdog\t \t狗\n", 2, "empty es text", id="empty-text"),
    pytest.param(HEADER + "0\tdog\tperro\t\n", 2, "empty zh text", id="empty-last-column"),
    pytest.param(HEADER + "0\t dog\tperro\t狗\n", 2, "leading or trailing whitespace in en text", id="leading-space"),
    pytest.param(HEADER + "0\tdog\tperro \t狗\n", 2, "leading or trailing whitespace in es text", id="trailing-space"),
    pytest.param(
        HEADER + "0\tdog\tagua\t狗\n1\twater\tagua\t水\n", 3,
        "es text 'agua' maps to semantic_id 1 here and to 0 at line 2", id="text-two-ids",
    ),
    pytest.param(HEADER + "0\tdog\tperro\t狗\n\n1\tcat\tgato\t猫\n", 3, "empty line", id="blank-line"),
    pytest.param(HEADER + "0\tdog\tperro\t狗\r\n", 2, "CRLF", id="crlf"),
    pytest.param(b"\xef\xbb\xbf" + GOOD.encode(), 1, "byte-order mark", id="bom"),
    pytest.param(HEADER.encode() + b"0\tdog\tperro\t\xff\n", 2, "not valid UTF-8", id="bad-utf8"),
]


@pytest.mark.parametrize("content, line, problem", MALFORMED)
def test_malformed_lexicon_names_file_line_and_problem(tmp_path, content, line, problem):
    path = write(tmp_path, content)
    with pytest.raises(LexiconError) as caught:
        load_lexicon(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}:{line}: ")
    assert problem in message
    assert (caught.value.line, caught.value.path) == (line, str(path))


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere.tsv"
    with pytest.raises(LexiconError, match=re.escape(f"{path}:0: file not found")):
        load_lexicon(path)


def test_gb2312_level1_is_the_3755_common_characters():
    chars = gb2312_level1()
    assert len(chars) == 3755
    assert {"狗", "水", "啊", "座"} <= chars  # first and last of level 1 included
    assert "丐" not in chars  # level 2
    assert "犬" in chars


def test_stats(tmp_path):
    text = HEADER + "0\tox\tbuey\t牛\n1\twater\tagua\t水\n2\tbeggar\tmendigo\t乞丐\n"
    stats = lexicon_stats(load_lexicon(write(tmp_path, text)))
    assert stats["entries"] == 3
    en, es, zh = (stats["languages"][lang] for lang in LANGS)
    assert en["count"] == en["distinct"] == 3
    assert en["length"] == {"min": 2, "median": 5, "mean": 4.333, "max": 6, "histogram": {"2": 1, "5": 1, "6": 1}}
    assert es["chars"] == "".join(sorted(set("bueyaguamendigo")))
    assert zh["length"]["histogram"] == {"1": 2, "2": 1}
    assert zh["distinct_chars"] == 4
    assert zh["outside_gb2312_level1"] == 1 and zh["outside_gb2312_level1_chars"] == "丐"


# ---- the committed lexicon ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def committed():
    return load_lexicon()


def test_committed_lexicon_is_large_and_one_to_one(committed):
    assert committed.path == DEFAULT_LEXICON
    assert len(committed) >= 1500
    for lang in LANGS:
        texts = committed.texts(lang)
        assert len(set(texts)) == len(texts), lang


def test_committed_lexicon_characters(committed):
    assert committed.charset("zh") <= gb2312_level1()  # every Chinese font in the catalogue covers these
    assert committed.charset("en") <= set("abcdefghijklmnopqrstuvwxyz")
    assert committed.charset("es") <= set("abcdefghijklmnopqrstuvwxyzáéíóúüñ")
    assert all(1 <= len(t) <= 4 for t in committed.texts("zh"))


def test_committed_audit_matches_the_draw_and_passes(committed):
    rows = read_audit(LEXICON_DIR / "audit.tsv")
    drawn = draw_audit_sample(committed)
    assert [(int(r["semantic_id"]), r["en"], r["es"], r["zh"]) for r in rows] == [
        (e.semantic_id, e.en, e.es, e.zh) for e in drawn
    ]
    assert sum(r["verdict"] == "correct" for r in rows) >= 97


def test_committed_build_report_describes_the_committed_lexicon(committed):
    import json

    report = json.loads((LEXICON_DIR / "build_report.json").read_text(encoding="utf-8"))
    assert report["output"] == {"entries": len(committed), "sha256": committed.sha256}
    assert report["stages"][-1]["count"] == len(committed)
