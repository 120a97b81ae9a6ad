import dataclasses

import pytest

from synth.fonts.catalogue import CatalogueError, Split, load_catalogue, resolve_styles, set_checksums, source_digest
from tests.conftest import style_entry, write_catalogue


def _catalogue(tmp_path, entries):
    return load_catalogue(write_catalogue(tmp_path / "catalogue.yaml", entries))


def test_loads_and_resolves_by_split_script_and_kind(tmp_path):
    cat = _catalogue(tmp_path, [
        style_entry(id="a-400", family="A"),
        style_entry(id="a-700", family="A"),
        style_entry(id="b", family="B", split="held-out"),
        style_entry(id="c", family="C", scripts=["han"], tags=["kai"]),
        style_entry(id="d", family="D", kind="stroke", tags=["single-line"]),
    ])
    assert [s.id for s in resolve_styles(cat, "train")] == ["a-400", "a-700", "c", "d"]
    assert [s.id for s in resolve_styles(cat, Split.held_out)] == ["b"]
    assert [s.id for s in resolve_styles(cat, "train", script="han")] == ["c"]
    assert [s.id for s in resolve_styles(cat, "train", kind="stroke")] == ["d"]
    assert len(resolve_styles(cat, None)) == 5
    assert cat.families(Split.train) == {"A", "C", "D"}


def test_train_split_never_yields_a_held_out_family(tmp_path):
    entries = [style_entry(id=f"s{i}", family=f"F{i % 7}", split="held-out" if i % 7 < 3 else "train") for i in range(40)]
    cat = _catalogue(tmp_path, entries)
    held_out = cat.families(Split.held_out)
    train = resolve_styles(cat, "train")
    assert train and not {s.family for s in train} & held_out
    assert {s.family for s in resolve_styles(cat, "held-out")} == held_out


def test_family_in_two_splits_is_rejected_at_load(tmp_path):
    with pytest.raises(CatalogueError, match=r"style a-700: family 'A' is held-out here but train in style a-400"):
        _catalogue(tmp_path, [style_entry(id="a-400", family="A"), style_entry(id="a-700", family="A", split="held-out")])


def test_resolver_rechecks_catalogues_built_in_code(tmp_path):
    cat = _catalogue(tmp_path, [style_entry(id="a", family="A"), style_entry(id="b", family="B", split="held-out")])
    leaky = dataclasses.replace(cat, styles=(cat.styles[0], dataclasses.replace(cat.styles[1], family="A")))
    with pytest.raises(CatalogueError, match="in both splits"):
        resolve_styles(leaky, "train")


@pytest.mark.parametrize("change, message", [
    ({"kind": "bitmap"}, "kind 'bitmap' is not one of outline, stroke"),
    ({"split": "test"}, "split 'test' is not one of train, held-out"),
    ({"scripts": ["cyrillic"]}, "scripts 'cyrillic' is not one of latin, han"),
    ({"scripts": []}, "scripts must be a non-empty list"),
    ({"tags": ["fancy"]}, "tags 'fancy' is not one of"),
    ({"sha256": "abc"}, "sha256 must be 64 lowercase hex digits"),
    ({"id": "Bad Id"}, "id 'Bad Id' must be lowercase"),
    ({"colour": "blue"}, "unknown key(s) colour"),
])
def test_bad_entries_name_file_style_and_problem(tmp_path, change, message):
    with pytest.raises(CatalogueError) as info:
        _catalogue(tmp_path, [style_entry(**change)])
    text = str(info.value)
    assert "catalogue.yaml" in text and message in text and "\n" not in text


def test_missing_key_and_duplicate_id(tmp_path):
    entry = style_entry()
    del entry["licence"]
    with pytest.raises(CatalogueError, match="style hand-a: missing key"):
        _catalogue(tmp_path, [entry])
    with pytest.raises(CatalogueError, match="style hand-a: duplicate id"):
        _catalogue(tmp_path, [style_entry(), style_entry()])


def test_unreadable_and_invalid_yaml(tmp_path):
    with pytest.raises(CatalogueError, match="cannot read catalogue"):
        load_catalogue(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("styles:\n  - id: [unclosed\n")
    with pytest.raises(CatalogueError, match=r"bad.yaml:\d+: not valid YAML"):
        load_catalogue(bad)


def test_source_digest_single_file_and_glob(tmp_path):
    import hashlib

    (tmp_path / "files").mkdir()
    for name, data in [("x-1.woff2", b"one"), ("x-0.woff2", b"zero"), ("other.txt", b"no")]:
        (tmp_path / "files" / name).write_bytes(data)
    assert source_digest(tmp_path, "files/x-1.woff2") == hashlib.sha256(b"one").hexdigest()
    expected = hashlib.sha256()
    for name, data in [("files/x-0.woff2", b"zero"), ("files/x-1.woff2", b"one")]:
        expected.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    assert source_digest(tmp_path, "files/x-*.woff2") == expected.hexdigest()


def test_set_checksums_keeps_comments_and_adds_missing_lines(tmp_path):
    path = tmp_path / "catalogue.yaml"
    path.write_text(
        "# my catalogue\nstyles:\n"
        "  # group\n  - id: a\n    family: A\n    kind: outline\n    scripts: [latin]\n    source: npm\n"
        "    package: p\n    version: '1'\n    file: f.ttf\n    sha256: \"" + "0" * 64 + "\"\n    licence: OFL-1.1\n"
        "    tags: [print]\n    split: train\n"
        "  - id: b\n    family: B\n    kind: outline\n    scripts: [latin]\n    source: npm\n"
        "    package: p\n    version: '1'\n    file: g.ttf\n    licence: OFL-1.1\n    tags: [print]\n    split: train\n"
    )
    assert load_catalogue(path).get("b").sha256 == ""
    assert set_checksums(path, {"a": "1" * 64, "b": "2" * 64}) == 2
    cat = load_catalogue(path)
    assert (cat.get("a").sha256, cat.get("b").sha256) == ("1" * 64, "2" * 64)
    assert path.read_text().startswith("# my catalogue\n") and "  # group\n" in path.read_text()
    assert set_checksums(path, {"a": "1" * 64}) == 0
