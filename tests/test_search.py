"""`train index` and `train search` on a tiny run: results against a brute-force ranking of the same
embeddings, the index's row keys against the shards, and the refusals."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from synth.lexicon import load_lexicon
from tests.train_fixtures import LEXICON, make_tiny_bert, tiny_config, write_lexicon, write_shards
from train.cli import app
from train.evaluate import embed_images, embed_texts, load_model
from train.evaluate.search import load_index
from train.run.trainer import train_stage

runner = CliRunner()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    lexicon_path = write_lexicon(root / "lexicon.tsv")
    lexicon = load_lexicon(lexicon_path)
    bert = make_tiny_bert(root / "bert")
    data = write_shards(root / "shards", per_id=2)
    train_stage(tiny_config(bert, **{"optim.max_steps": 3}), [data], root / "run", lexicon)
    other = root / "other"
    train_stage(tiny_config(bert, **{"optim.max_steps": 1, "seed": 5}), [data], other, lexicon)
    return root, lexicon_path, data


def test_index_then_text_search_matches_brute_force(world, tmp_path):
    root, _lexicon_path, data = world
    index_dir = tmp_path / "index"
    result = runner.invoke(app, ["index", "--ckpt", str(root / "run"), "--data", str(data), "--out", str(index_dir)])
    assert result.exit_code == 0, result.output
    assert "48 images × 128 dims" in result.output  # 8 IDs × 3 languages × 2

    index = load_index(index_dir)
    # each key points at its row: the shard's own semantic_id and text at that row
    for i in range(0, len(index), 7):
        row = pq.read_table(index.rows["shard"][i]).slice(int(index.rows["row"][i]), 1).to_pylist()[0]
        assert (row["semantic_id"], row["text"]) == (index.rows["semantic_id"][i], index.rows["text"][i])

    result = runner.invoke(app, ["search", "--ckpt", str(root / "run"), "--index", str(index_dir), "--text", "agua",
                                 "--lang", "zh", "--lang", "es", "-k", "4", "--json"])
    assert result.exit_code == 0, result.output
    hits = json.loads(result.output)
    model, _, _ = load_model(root / "run")
    images = embed_images(model, [data])
    query = embed_texts(model, ["agua"])[0]
    scores = images["embeds"] @ query
    keep = np.flatnonzero(np.isin(images["langs"], ["zh", "es"]))
    best = keep[np.argsort(-scores[keep], kind="stable")[:4]]
    assert [h["row"] for h in hits] == images["rows"][best].tolist()
    assert [h["score"] for h in hits] == pytest.approx(scores[best].tolist(), abs=1e-5)
    assert {h["lang"] for h in hits} <= {"zh", "es"}

    # another run's weights do not fit this index
    result = runner.invoke(app, ["search", "--ckpt", str(root / "other"), "--index", str(index_dir), "--text", "agua"])
    assert result.exit_code == 1 and "built with other weights" in result.output
    # an index is never replaced silently, and only an index is replaced at all
    again = ["index", "--ckpt", str(root / "run"), "--data", str(data), "--out", str(index_dir)]
    assert "already exists" in runner.invoke(app, again).output
    assert runner.invoke(app, [*again, "--overwrite"]).exit_code == 0
    (index_dir / "notes.txt").write_text("my notes")  # a file of the user's inside our index
    result = runner.invoke(app, [*again, "--overwrite"])
    assert result.exit_code == 1 and "also holds files `train index` did not write (notes.txt)" in result.output
    assert (index_dir / "notes.txt").read_text() == "my notes"
    (index_dir / "notes.txt").unlink()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("keep")
    result = runner.invoke(app, ["index", "--ckpt", str(root / "run"), "--data", str(data), "--out",
                                 str(tmp_path / "mine"), "--overwrite"])
    assert result.exit_code == 1 and "not an index" in result.output
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "keep"


def test_image_search_matches_brute_force(world, tmp_path):
    root, lexicon_path, data = world
    shard = min((data / "data").glob("*.parquet"))
    row = pq.read_table(shard).slice(5, 1).to_pylist()[0]
    png = tmp_path / "word.png"
    png.write_bytes(row["image"]["bytes"])
    result = runner.invoke(app, ["search", "--ckpt", str(root / "run"), "--image", str(png), "--lexicon",
                                 str(lexicon_path), "-k", "24", "--json"])
    assert result.exit_code == 0, result.output
    hits = json.loads(result.output)
    assert len(hits) == 24 and len({(h["lang"], h["semantic_id"]) for h in hits}) == 24  # every entry, once

    model, _, _ = load_model(root / "run")
    images = embed_images(model, [shard])
    query = images["embeds"][images["rows"].tolist().index(5)]  # the same image through the shard reader
    texts = [(lang, i, LEXICON[i][k]) for k, lang in enumerate(("en", "es", "zh")) for i in range(8)]
    scores = embed_texts(model, [t for _, _, t in texts]) @ query
    order = np.argsort(-scores, kind="stable")
    assert [(h["lang"], h["semantic_id"]) for h in hits] == [texts[i][:2] for i in order]
    assert [h["score"] for h in hits] == pytest.approx(scores[order].tolist(), abs=1e-5)


def test_search_refuses_bad_requests(world, tmp_path):
    root, lexicon_path, _ = world
    run = ["search", "--ckpt", str(root / "run")]
    cases = [
        ([], "exactly one of --image"),
        (["--text", "agua"], "pass --index"),
        (["--image", str(tmp_path / "nope.png")], "image not found"),
        (["--text", "agua", "--index", str(tmp_path)], "not an index"),
    ]
    (tmp_path / "empty.png").write_bytes(b"")
    cases.append((["--image", str(tmp_path / "empty.png"), "--lexicon", str(lexicon_path)], "not an image OpenCV can read"))
    shard = min((root / "shards" / "data").glob("*.parquet"))
    (tmp_path / "ok.png").write_bytes(pq.read_table(shard).slice(0, 1).to_pylist()[0]["image"]["bytes"])
    cases.append((["--image", str(tmp_path / "ok.png"), "--lang", "fr", "--lexicon", str(lexicon_path)], "language 'fr'"))
    for args, fragment in cases:
        result = runner.invoke(app, [*run, *args])
        assert result.exit_code == 1 and fragment in result.output, (args, result.output)
        assert "Traceback" not in result.output
    nowhere = ["search", "--ckpt", str(tmp_path / "no-run")]  # checked before any model is looked for
    for args, fragment in ((["--image", str(tmp_path / "ok.png"), "--lang", "fr"], "language 'fr'"),
                           (["--image", str(tmp_path / "nope.png")], "image not found")):
        result = runner.invoke(app, [*nowhere, *args])
        assert result.exit_code == 1 and fragment in result.output, (args, result.output)
    other = tmp_path / "other.tsv"
    other.write_text(lexicon_path.read_text(encoding="utf-8").replace("\n0\t", "\n0\tx", 1), encoding="utf-8")
    result = runner.invoke(app, [*run, "--image", str(tmp_path / "ok.png"), "--lexicon", str(other)])
    assert result.exit_code == 1 and "is not the lexicon" in result.output
