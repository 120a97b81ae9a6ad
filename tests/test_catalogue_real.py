"""The committed catalogue meets the brief; with fonts fetched, every style draws what it must.

Tests needing the fetched fonts skip only when the cache is absent AND CI is unset: in CI `make test`
has run the set-up, which fetches them, so they always run there.
"""



from synth.fonts.catalogue import Split, load_catalogue, resolve_styles
from synth.fonts.charsets import LATIN_REQUIRED, gb2312_level1

CATALOGUE = load_catalogue()


def _families(split, script, kind="outline"):
    return {s.family for s in resolve_styles(CATALOGUE, split, script, kind)}


def test_counts_meet_the_brief():
    assert len(_families("train", "latin")) >= 30
    assert len(_families("held-out", "latin")) >= 15
    assert len(resolve_styles(CATALOGUE, "train", "han", "outline")) >= 8
    assert len(resolve_styles(CATALOGUE, "held-out", "han", "outline")) >= 3
    for script in ("latin", "han"):
        assert resolve_styles(CATALOGUE, None, script, "stroke"), f"no pen-stroke source for {script}"


def test_splits_are_family_disjoint_and_every_style_pinned():
    assert not CATALOGUE.families(Split.train) & CATALOGUE.families(Split.held_out)
    assert all(len(s.sha256) == 64 for s in CATALOGUE.styles)


def test_held_out_latin_mixes_print_and_joined_hands():
    tags = {t for s in resolve_styles(CATALOGUE, "held-out", "latin", "outline") for t in s.tags}
    assert "print" in tags and tags & {"cursive", "script"}


def test_every_latin_style_draws_spanish(installed_fonts):
    for style in resolve_styles(CATALOGUE, None, "latin"):
        lacking = LATIN_REQUIRED - installed_fonts[style.id]
        assert not lacking, f"{style.id} cannot draw {''.join(sorted(lacking))}"


def test_han_faces_cover_gb2312_level1(installed_fonts):
    level1 = gb2312_level1()
    for split, need in (("train", 8), ("held-out", 3)):
        full = [s.id for s in resolve_styles(CATALOGUE, split, "han", "outline") if level1 <= installed_fonts[s.id]]
        assert len(full) >= need, f"only {full} cover GB 2312 level 1 in {split}"


def test_every_style_renders_the_lexicon(installed_fonts):
    from synth.fonts.charsets import SCRIPT_LANGS
    from synth.fonts.coverage import coverage_row
    from synth.lexicon import load_lexicon

    lexicon = load_lexicon()
    for style in CATALOGUE.styles:
        for script in style.scripts:
            for lang in SCRIPT_LANGS[script]:
                row = coverage_row(style.id, lang, installed_fonts[style.id], lexicon.texts(lang))
                assert row.share >= 0.98, f"{style.id}/{lang}: {row.share:.1%}, blocked by {''.join(row.missing[:10])}"
