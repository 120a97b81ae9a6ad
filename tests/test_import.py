"""`train import iam | hwdb | folder` against fixture trees written in the public formats, good and malformed."""

from __future__ import annotations

import json
import struct

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from synth.cli import app as synth_app
from synth.lexicon import load_lexicon
from tests.train_fixtures import write_lexicon
from train.cli import app
from train.realdata import SourceError
from train.realdata.hwdb import compose, read_gnt
from train.run.data import ShardSet

runner = CliRunner()


@pytest.fixture
def lexicon(tmp_path):
    return write_lexicon(tmp_path / "lexicon.tsv")


def ink(rng, h=40, w=60) -> np.ndarray:
    image = np.full((h, w), 250, np.uint8)
    image[5:-5, int(rng.integers(3, 10)):-5:7] = 20  # dark strokes on light paper
    return image


def write_iam(root, lines, images, forms=True):
    """IAM layout: ascii/words.txt (comment header, then `lines`), ascii/forms.txt, words/<p>/<form>/<id>.png."""
    (root / "ascii").mkdir(parents=True)
    header = "#--- words.txt ---#\n# format: a01-000u-00-00 ok 154 1 408 768 27 51 AT A\n#\n"
    (root / "ascii" / "words.txt").write_text(header + "\n".join(lines) + "\n", encoding="utf-8")
    if forms:
        (root / "ascii" / "forms.txt").write_text("# forms\na01-000u 000 2 prt 7 5 52 36\nb02-011 031 3 prt 7 5 50 38\n")
    for word_id, image in images.items():
        prefix, form = word_id.split("-")[0], "-".join(word_id.split("-")[:2])
        folder = root / "words" / prefix / form
        folder.mkdir(parents=True, exist_ok=True)
        if isinstance(image, bytes):
            (folder / f"{word_id}.png").write_bytes(image)
        else:
            cv2.imwrite(str(folder / f"{word_id}.png"), image)


IAM_LINES = [
    "a01-000u-00-00 ok 154 1 408 768 27 51 NN Water",  # case-folded to the lexicon's "water"
    "a01-000u-00-01 ok 154 1 507 766 213 48 NN child",
    "a01-000u-00-02 ok 154 1 796 764 70 50 ATI The",  # not in the lexicon: unmapped
    "a01-000u-00-03 er 154 1 919 757 166 78 NN fire",  # segmentation er: only with --include-er
    "b02-011-01-00 ok 160 1 300 700 120 60 NN water",
    "b02-011-01-01 ok 160 1 420 700 100 60 ATI The",
]


def iam_images(rng):
    return {line.split()[0]: ink(rng) for line in IAM_LINES}


def test_iam_import_maps_counts_and_feeds_training(tmp_path, lexicon):
    rng = np.random.default_rng(0)
    images = iam_images(rng)
    write_iam(tmp_path / "iam", IAM_LINES, images)
    out = tmp_path / "real"
    result = runner.invoke(app, ["import", "iam", "--root", str(tmp_path / "iam"), "--out", str(out), "--lexicon", str(lexicon)])
    assert result.exit_code == 0, result.output
    assert "3 of 5 words mapped to 2 semantic IDs" in result.output and "The (2)" in result.output

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["rows"] == 3 and manifest["counts"]["unmapped"] == 2
    assert manifest["counts"]["writers"] == 2 and manifest["config"]["source"] == "iam"
    assert (out / "unmapped.tsv").read_text().splitlines() == ["lang\ttext\tcount", "en\tThe\t2"]
    table = pq.read_table(out / manifest["shards"][0]["name"])
    rows = table.to_pylist()
    assert [r["semantic_id"] for r in rows] == [0, 0, 1]  # sorted by ID, source order within one
    assert [r["text"] for r in rows] == ["Water", "water", "child"]
    assert {r["split"] for r in rows} == {"real"} and {r["style_kind"] for r in rows} == {"real"}
    assert [r["style"] for r in rows] == ["iam:000", "iam:031", "iam:000"]  # writers from forms.txt
    first = json.loads(rows[0]["params"])
    assert first["id"] == "a01-000u-00-00" and first["file"] == "words/a01/a01-000u/a01-000u-00-00.png"
    decoded = cv2.imdecode(np.frombuffer(rows[0]["image"]["bytes"], np.uint8), cv2.IMREAD_GRAYSCALE)
    assert np.array_equal(decoded, images["a01-000u-00-00"])  # pixels kept as written (lossless PNG)

    assert runner.invoke(synth_app, ["verify", str(out)]).exit_code == 0
    shards = ShardSet.load([out], load_lexicon(lexicon))  # what `train finetune` reads
    assert len(shards) == 3 and shards.texts.tolist() == ["water", "water", "child"]

    again = runner.invoke(app, ["import", "iam", "--root", str(tmp_path / "iam"), "--out", str(out), "--include-er",
                                "--lexicon", str(lexicon)])
    assert again.exit_code == 1 and "already exists" in again.output and (out / "manifest.json").is_file()
    again = runner.invoke(app, ["import", "iam", "--root", str(tmp_path / "iam"), "--out", str(out), "--include-er",
                                "--overwrite", "--lexicon", str(lexicon)])
    assert again.exit_code == 0, again.output
    assert json.loads((out / "manifest.json").read_text())["counts"]["rows"] == 4  # the er word "fire" joined
    (out / "data" / "notes.txt").write_text("mine")  # a user's file inside the import: --overwrite keeps off
    again = runner.invoke(app, ["import", "iam", "--root", str(tmp_path / "iam"), "--out", str(out), "--include-er",
                                "--overwrite", "--lexicon", str(lexicon)])
    assert again.exit_code == 1 and "did not write (data/notes.txt)" in again.output
    (out / "data" / "notes.txt").unlink()


def one_error(result, *fragments):
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and all(f in result.output for f in fragments), result.output
    assert "Traceback" not in result.output


def test_iam_malformed_inputs_name_the_file_and_leave_nothing(tmp_path, lexicon):
    rng = np.random.default_rng(1)
    images = iam_images(rng)
    del images["a01-000u-00-01"]  # "child" maps, so its missing image is an error
    write_iam(tmp_path / "missing", IAM_LINES, images)
    out = tmp_path / "out"
    args = ["--out", str(out), "--lexicon", str(lexicon)]
    one_error(runner.invoke(app, ["import", "iam", "--root", str(tmp_path / "missing"), *args]),
              "words.txt:5", "a01-000u-00-01.png is missing")
    assert not out.exists() and not list(tmp_path.glob(".out*"))

    images = iam_images(rng)
    images["a01-000u-00-01"] = b""  # IAM ships a few zero-byte images
    write_iam(tmp_path / "empty", IAM_LINES, images)
    one_error(runner.invoke(app, ["import", "iam", "--root", str(tmp_path / "empty"), *args]), "not a readable image")
    result = runner.invoke(app, ["import", "iam", "--root", str(tmp_path / "empty"), "--skip-unreadable", *args])
    assert result.exit_code == 0 and "1 unreadable image(s) skipped" in result.output
    assert len(json.loads((out / "manifest.json").read_text())["skipped_unreadable"]) == 1

    write_iam(tmp_path / "short", ["a01-000u-00-00 ok 154 1 408 768 27 NN"], {})
    one_error(runner.invoke(app, ["import", "iam", "--root", str(tmp_path / "short"), "--out", str(tmp_path / "o2")]),
              "words.txt:4", "expected 10 fields")
    one_error(runner.invoke(app, ["import", "iam", "--root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o3")]),
              "no words.txt")


def gnt_record(char: str, bitmap: np.ndarray) -> bytes:
    h, w = bitmap.shape
    return struct.pack("<I", 10 + w * h) + char.encode("gb2312") + struct.pack("<HH", w, h) + bitmap.tobytes()


def write_gnt(path, chars: dict[str, list[np.ndarray]]) -> list[tuple[int, str]]:
    """A .gnt file of the given characters; returns (offset, char) of every record, computed by hand."""
    data, index = b"", []
    for char, bitmaps in chars.items():
        for bitmap in bitmaps:
            index.append((len(data), char))
            data += gnt_record(char, bitmap)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return index


def test_gnt_reader_and_word_composition(tmp_path, lexicon):
    rng = np.random.default_rng(2)
    # writer 1001 wrote 水 孩 子 年 (年 twice) but not 火 树 …; writer 1002 wrote only 火 and 山
    one = {"水": [ink(rng, 50, 48)], "孩": [ink(rng, 60, 52)], "子": [ink(rng, 44, 40)], "年": [ink(rng, 58, 50), ink(rng, 55, 49)]}
    two = {"火": [ink(rng, 52, 52)], "山": [ink(rng, 47, 58)]}
    index = write_gnt(tmp_path / "hwdb" / "1001-c.gnt", one)
    write_gnt(tmp_path / "hwdb" / "sub" / "1002-c.gnt", two)
    got = [(off, ch) for off, ch, _ in read_gnt(tmp_path / "hwdb" / "1001-c.gnt")]
    assert got == index

    out = tmp_path / "real"
    result = runner.invoke(app, ["import", "hwdb", "--root", str(tmp_path / "hwdb"), "--out", str(out), "--lexicon", str(lexicon)])
    assert result.exit_code == 0, result.output
    rows = pq.read_table(next((out / "data").glob("*.parquet"))).to_pylist()
    assert sorted((r["text"], r["style"]) for r in rows) == sorted([
        ("山", "hwdb:1002-c"), ("孩子", "hwdb:1001-c"), ("年", "hwdb:1001-c"), ("水", "hwdb:1001-c"), ("火", "hwdb:1002-c")])
    child = next(r for r in rows if r["text"] == "孩子")
    params = json.loads(child["params"])
    offsets = {ch: off for off, ch in index}
    assert [(s["char"], s["offset"]) for s in params["samples"]] == [("孩", offsets["孩"]), ("子", offsets["子"])]
    image = cv2.imdecode(np.frombuffer(child["image"]["bytes"], np.uint8), cv2.IMREAD_GRAYSCALE)
    m, (gap,) = params["margin"], params["gaps"]
    assert image.shape[1] == 52 + gap + 40 + 2 * m  # characters side by side at their written size
    assert (image[:, :m] == 255).all() and (image[:, -m:] == 255).all()  # blank margins
    # brute force: place each character by hand from the recorded draws, darker pixel winning
    chars = [one["孩"][0], one["子"][0]]
    unit = params["unit"]
    assert unit == np.median([60, 44, 50, 58, 55])  # the writer's median character height, over the file
    tops = [shift - c.shape[0] // 2 for c, shift in zip(chars, params["shifts"])]
    top = min(*tops, -round(unit) // 2)
    expected = np.full(image.shape, 255, np.uint8)
    x = m
    for c, t in zip(chars, tops):
        for r in range(c.shape[0]):
            for col in range(c.shape[1]):
                y = t - top + m + r
                expected[y, x + col] = min(expected[y, x + col], c[r, col])
        x += c.shape[1] + gap
    assert np.array_equal(image, expected)
    assert all(abs(s) <= 0.04 * unit + 1 for s in params["shifts"])
    canvas, draws = compose(chars, np.random.default_rng(params["seed"]), unit)  # the recorded seed replays it
    assert np.array_equal(canvas, image) and draws["gaps"] == params["gaps"]
    # a flat character still gets a word-sized box: at least the writer's median height plus margins
    one_char = next(r for r in rows if r["text"] == "水")
    assert one_char["height"] >= unit + 2 * m
    assert runner.invoke(synth_app, ["verify", str(out)]).exit_code == 0


@pytest.mark.parametrize("damage, fragment", [
    (lambda d: d[:-7], "truncated record at offset 2410"),
    (lambda d: d[:2410 + 6], "truncated record at offset 2410"),
    (lambda d: d[:2410] + struct.pack("<I", 999) + d[2414:], "bad record at offset 2410: size field 999"),
    (lambda d: d[:2414] + b"\xff\xff" + d[2416:], "offset 2410 has tag code ffff"),
])
def test_malformed_gnt_records_name_file_and_offset(tmp_path, lexicon, damage, fragment):
    rng = np.random.default_rng(3)
    write_gnt(tmp_path / "a.gnt", {"水": [ink(rng, 40, 60)], "火": [ink(rng, 40, 60)]})  # 2 records of 2,410 bytes
    path = tmp_path / "hwdb" / "a.gnt"
    path.parent.mkdir()
    path.write_bytes(damage((tmp_path / "a.gnt").read_bytes()))
    with pytest.raises(SourceError, match=fragment):
        list(read_gnt(path))
    one_error(runner.invoke(app, ["import", "hwdb", "--root", str(tmp_path / "hwdb"), "--out", str(tmp_path / "out"),
                                  "--lexicon", str(lexicon)]), "a.gnt", fragment)
    assert not (tmp_path / "out").exists()


def test_folder_import_from_csv(tmp_path, lexicon):
    rng = np.random.default_rng(4)
    (tmp_path / "img").mkdir()
    for name in ("a", "b", "c", "d"):
        cv2.imwrite(str(tmp_path / "img" / f"{name}.png"), ink(rng))
    csv = tmp_path / "words.csv"
    csv.write_text("path,text,lang,writer\nimg/a.png,Agua,es,w1\nimg/b.png,水,zh,w2\n"
                   f"{tmp_path / 'img' / 'c.png'},agüita,es,w1\nimg/d.png,Fire,en,\n", encoding="utf-8")
    out = tmp_path / "real"
    result = runner.invoke(app, ["import", "folder", "--csv", str(csv), "--out", str(out), "--lexicon", str(lexicon)])
    assert result.exit_code == 0, result.output
    rows = pq.read_table(next((out / "data").glob("*.parquet"))).to_pylist()
    assert [(r["semantic_id"], r["lang"], r["style"]) for r in rows] == [(0, "es", "folder:w1"), (0, "zh", "folder:w2"),
                                                                         (3, "en", "folder:unknown")]
    assert (out / "unmapped.tsv").read_text().splitlines()[1] == "es\tagüita\t1"
    card = (out / "README.md").read_text()
    assert "3 word images of 2 lexicon entries by 3 writer(s)" in card and "Rows per language: en 1, es 1, zh 1" in card
    assert "| `style` | `string` | the writer" in card and "path: data/real-*" in card

    bad = tmp_path / "bad.csv"
    bad.write_text("path,text,lang\nimg/a.png,agua,pt\n", encoding="utf-8")
    one_error(runner.invoke(app, ["import", "folder", "--csv", str(bad), "--out", str(tmp_path / "o")]), "bad.csv:2", "'pt'")
    bad.write_text("file,word\nimg/a.png,agua\n", encoding="utf-8")
    one_error(runner.invoke(app, ["import", "folder", "--csv", str(bad), "--out", str(tmp_path / "o")]), "header lacks path")
    bad.write_text("path,text,lang\n", encoding="utf-8")
    one_error(runner.invoke(app, ["import", "folder", "--csv", str(bad), "--out", str(tmp_path / "o"), "--lexicon",
                                  str(lexicon)]), "the source holds no words")
    bad.write_text("path,text,lang\nimg/zz.png,agua,es\n", encoding="utf-8")
    one_error(runner.invoke(app, ["import", "folder", "--csv", str(bad), "--out", str(tmp_path / "o"),
                                  "--lexicon", str(lexicon)]), "bad.csv:2", "zz.png is missing")
    # --overwrite replaces only what `train import` wrote
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    one_error(runner.invoke(app, ["import", "folder", "--csv", str(csv), "--out", str(tmp_path / "mine"), "--overwrite",
                                  "--lexicon", str(lexicon)]), "not an import written by `train import`")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_atomic_folder_leaves_nothing_on_error_and_never_clobbers_a_newcomer(tmp_path):
    """The shared writer behind `train import`, `train index` and `train export`."""
    from hwkit.files import atomic_folder

    out = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic_folder(out, overwrite=False) as tmp:
        (tmp / "half.bin").write_bytes(b"x")
        raise RuntimeError("interrupted")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(FileExistsError, match="appeared while writing"), atomic_folder(out, overwrite=False) as tmp:
        (tmp / "ours.txt").write_text("ours")
        out.mkdir()
        (out / "theirs.txt").write_text("theirs")  # someone else's, made while we worked
    assert [p.name for p in out.iterdir()] == ["theirs.txt"] and len(list(tmp_path.iterdir())) == 1
    with atomic_folder(out, overwrite=True) as tmp:
        (tmp / "ours.txt").write_text("ours")
    assert [p.name for p in out.iterdir()] == ["ours.txt"]
