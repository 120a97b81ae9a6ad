import json
import os

import cv2
import numpy as np
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from synth.dataset import build_dataset
from synth.dataset.plan import PlanConfig
from synth.dataset.shards import ShardConfig, encode_png, sample_row, write_shard
from synth.schema import IMAGE, SCHEMA, SEMANTIC_ID, SPLIT, TEXT
from tests.dataset_fixtures import DoubleRenderer, make_world, small_config


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Both font splits, 3 samples per renderable (entry, style): 204 rows in 40-row shards, 16-row groups."""
    with pytest.MonkeyPatch.context() as mp:
        w = make_world(tmp_path_factory.mktemp("shards"), mp)
        out = w.root / "out"
        build_dataset(out, PlanConfig(fonts="all", samples=3, rows_per_shard=40), small_config(),
                      shard_config=ShardConfig(row_group_size=16), lexicon_path=w.lexicon,
                      catalogue_path=w.catalogue, renderer_cls=DoubleRenderer)
        yield out


def test_layout_schema_and_sort_order(dataset):
    manifest = json.loads((dataset / "manifest.json").read_text())
    names = [e["name"] for e in manifest["shards"]]
    assert names == [f"data/train-{i:05d}-of-00004.parquet" for i in range(4)] + \
                    [f"data/held_out-{i:05d}-of-00002.parquet" for i in range(2)]
    assert json.loads((dataset / "sizes.json").read_text()) == {e["name"]: e["rows"] for e in manifest["shards"]}
    assert manifest["counts"]["rows"] == 204 == sum(e["rows"] for e in manifest["shards"])
    previous_max = -1
    for entry in manifest["shards"][:4]:
        parquet = pq.ParquetFile(dataset / entry["name"])
        assert parquet.schema_arrow.equals(SCHEMA, check_metadata=True)
        group = parquet.metadata.row_group(0)
        leaf = {group.column(i).path_in_schema: group.column(i) for i in range(group.num_columns)}
        assert {c.compression for c in leaf.values()} == {"ZSTD"}
        ids = parquet.read(columns=[SEMANTIC_ID]).column(0).to_pylist()
        assert ids == sorted(ids) and ids[0] >= previous_max  # sorted inside and contiguous across shards
        previous_max = ids[-1]
        assert (ids[0], ids[-1]) == (entry["semantic_id_min"], entry["semantic_id_max"])
        assert parquet.num_row_groups == -(-entry["rows"] // 16)
        stats = leaf[SEMANTIC_ID].statistics
        assert stats.has_min_max and (stats.min, stats.max) == (ids[0], ids[min(15, len(ids) - 1)])
    held = pq.read_table(dataset / names[-1], columns=[SPLIT])
    assert set(held.column(0).to_pylist()) == {"held-out"}


def test_images_are_png_with_declared_size(dataset):
    table = pq.read_table(dataset / "data/train-00000-of-00004.parquet")
    row = table.slice(0, 1).to_pylist()[0]
    assert row[IMAGE]["path"] is None and row[IMAGE]["bytes"].startswith(b"\x89PNG")
    image = cv2.imdecode(np.frombuffer(row[IMAGE]["bytes"], np.uint8), cv2.IMREAD_UNCHANGED)
    assert image.shape == (row["height"], row["width"]) == (24, 64) and image.dtype == np.uint8
    assert json.loads(row["params"])["text"] == row[TEXT]


def test_pyarrow_dataset_filters_by_semantic_id(dataset):
    ds = pads.dataset(dataset / "data", format="parquet")
    table = ds.to_table(filter=pads.field(SEMANTIC_ID) == 5, columns=[SEMANTIC_ID, TEXT])
    assert set(table.column(SEMANTIC_ID).to_pylist()) == {5}
    assert set(table.column(TEXT).to_pylist()) == {"tree", "árbol", "树"}
    assert table.num_rows == 3 * (2 + 2 + 2 + 3)  # 3 samples × (en, es, zh train styles + 3 held-out)


def test_hugging_face_datasets_decodes_images(dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    datasets = pytest.importorskip("datasets")
    from PIL import Image

    loaded = datasets.load_dataset("parquet", data_dir=str(dataset), cache_dir=str(tmp_path / "hf"))
    assert set(loaded) == {"train", "held_out"}
    assert len(loaded["train"]) == 132 and len(loaded["held_out"]) == 72
    sample = loaded["held_out"][0]
    assert isinstance(sample[IMAGE], Image.Image) and sample[IMAGE].size == (64, 24)
    assert sample[SPLIT] == "held-out"
    by_card = datasets.load_dataset(str(dataset), cache_dir=str(tmp_path / "hf"))  # the README's `configs:`
    assert {name: len(split) for name, split in by_card.items()} == {"train": 132, "held_out": 72}
    streamed = datasets.load_dataset("parquet", data_dir=str(dataset), streaming=True)
    first = next(iter(streamed["train"]))
    assert isinstance(first[IMAGE], Image.Image) and first[SEMANTIC_ID] == 0


def _row(semantic_id: int) -> dict:
    return sample_row(np.full((4, 6), 200, np.uint8), {"k": [1.5, "ñ"]}, semantic_id=semantic_id, lang="es",
                      text="año", style="s", style_kind="outline", split="train", seed=2**64 - 1, png_level=3)


def test_write_shard_is_atomic_and_deterministic(tmp_path):
    (tmp_path / "data").mkdir()
    record = write_shard(tmp_path, "data/train-00000-of-00001.parquet", [_row(0), _row(2)], ShardConfig())
    first = (tmp_path / record.name).read_bytes()
    again = write_shard(tmp_path, "data/train-00000-of-00001.parquet", [_row(0), _row(2)], ShardConfig())
    assert again == record and (tmp_path / record.name).read_bytes() == first
    assert os.listdir(tmp_path / "data") == ["train-00000-of-00001.parquet"]  # no temporaries left
    assert (record.rows, record.semantic_id_min, record.semantic_id_max) == (2, 0, 2)
    row = pq.read_table(tmp_path / record.name).to_pylist()[0]
    assert row["seed"] == 2**64 - 1 and row["params"] == '{"k":[1.5,"ñ"]}'
    with pytest.raises(ValueError, match="sorted by semantic_id"):
        write_shard(tmp_path, "data/x.parquet", [_row(2), _row(0)], ShardConfig())
    assert os.listdir(tmp_path / "data") == ["train-00000-of-00001.parquet"]


def test_encode_png_round_trips_and_rejects_colour():
    image = np.random.default_rng(0).integers(0, 256, (8, 16), dtype=np.uint8)
    for level in (0, 1, 9):
        decoded = cv2.imdecode(np.frombuffer(encode_png(image, level), np.uint8), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(decoded, image)
    with pytest.raises(ValueError, match="expected \\(H, W\\) uint8"):
        sample_row(np.zeros((4, 4, 3), np.uint8), {}, semantic_id=0, lang="en", text="a", style="s",
                   style_kind="outline", split="train", seed=0, png_level=1)
