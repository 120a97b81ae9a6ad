"""Shard readers for training and evaluation: errors, lexicon lookup, decoding, and worker splitting."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from synth.lexicon import load_lexicon
from tests.train_fixtures import write_lexicon, write_shards
from train.run.augment import LEVELS, augment, draw, paper_level
from train.run.data import (
    BatchDataset,
    DataError,
    EpochBatches,
    ShardSet,
    ShardStream,
    batch_loader,
    decode,
    decode_all,
    find_shards,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return root, load_lexicon(write_lexicon(root / "lexicon.tsv")), write_shards(root / "shards", per_id=2, shards=3)


def test_find_shards_explains_what_is_wrong(tmp_path, tiny):
    _, _, shards = tiny
    assert [p.name for p in find_shards(shards)] == [f"train-{i:05d}-of-00003.parquet" for i in range(3)]
    with pytest.raises(DataError, match="data not found"):
        find_shards(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no Parquet shards"):
        find_shards(tmp_path / "empty")
    (tmp_path / "half").mkdir()
    manifest = {"format": "synth-dataset/1", "status": "incomplete", "fingerprint": "f", "config": {}, "shards": []}
    (tmp_path / "half" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="incomplete"):
        find_shards(tmp_path / "half")
    (tmp_path / "half" / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match="unreadable manifest"):
        find_shards(tmp_path / "half")


def test_rows_take_their_text_from_the_lexicon(tiny, tmp_path):
    root, lexicon, shards = tiny
    data = ShardSet.load([shards], lexicon)
    assert len(data) == 8 * 3 * 2
    for sid, lang, text in zip(data.semantic_ids, data.langs, data.texts):
        assert text == lexicon.entries[sid].text(lang)
    assert set(ShardSet.load([shards], lexicon, langs=["zh"]).langs) == {"zh"}
    other = root / "other.tsv"
    other.write_text(lexicon.path.read_text().replace("agua", "aguas"))
    with pytest.raises(DataError, match="reads 'agua' but lexicon entry 0 \\(es\\) is 'aguas'"):
        ShardSet.load([shards], load_lexicon(other))
    short = root / "short.tsv"
    short.write_text("".join(lexicon.path.read_text().splitlines(keepends=True)[:3]))
    with pytest.raises(DataError, match="semantic ID 2 is not in the lexicon"):
        ShardSet.load([shards], load_lexicon(short))


def test_decode_with_crop_cuts_to_the_ink_and_stretches_its_levels():
    """A small grey word on shaded paper fills the frame, centred, paper 0 and ink 1; blank paper stays whole."""
    import cv2

    grey = np.tile(np.linspace(200, 230, 256).astype(np.uint8), (64, 1))  # paper shaded left to right
    grey[20:36, 100:148] = 90  # a faint, small "word": 16 × 48 px
    png = cv2.imencode(".png", grey)[1].tobytes()
    ink = decode(png, 32, 128, crop=True)
    assert ink.shape == (32, 128)
    rows, cols = np.flatnonzero(ink.max(axis=1) > 0.5), np.flatnonzero(ink.max(axis=0) > 0.5)
    # the 16 × 48 box (+ 3 px margins) is height-bound: scaled ×32/22, about 26 × 70, centred on both axes
    assert 24 <= len(rows) <= 28 and 64 <= len(cols) <= 76
    assert abs((rows[0] + rows[-1]) / 2 - 15.5) <= 1 and abs((cols[0] + cols[-1]) / 2 - 63.5) <= 1
    assert ink[rows[3]: rows[-3], cols[3]: cols[-3]].min() > 0.95  # the darkest ink reads 1
    assert ink[:, :20].max() < 0.05 and ink[:, -20:].max() < 0.05  # paper and padding read 0
    blank = cv2.imencode(".png", np.full((64, 256), 240, np.uint8))[1].tobytes()
    assert np.allclose(decode(blank, 32, 128, crop=True), decode(blank, 32, 128), atol=1e-6)
    assert decode(png, 32, 128, crop=True).tobytes() == ink.tobytes()  # deterministic


def test_decoded_cache_is_what_decode_gives(tiny):
    """decode_all (forked workers, uint8) holds every row as decode prepares it, to within its rounding."""
    _, lexicon, shards = tiny
    data = ShardSet.load([shards], lexicon)
    for crop in (False, True):
        cached = decode_all(data, 32, 128, crop, processes=2, chunk=5)
        assert cached.shape == (len(data), 32, 128) and cached.dtype == np.uint8
        exact = np.stack([decode(data.png(r), 32, 128, crop) for r in range(len(data))])
        assert np.abs(cached / 255 - exact).max() <= 0.5 / 255 + 1e-6
        assert np.array_equal(cached, decode_all(data, 32, 128, crop, processes=1))


def test_png_buffer_holds_every_image_exactly(tiny):
    _, lexicon, shards = tiny
    data = ShardSet.load([shards], lexicon)
    stored = [cell["bytes"] for p in find_shards(shards) for cell in pq.read_table(p, columns=["image"])["image"].to_pylist()]
    assert [data.png(i).tobytes() for i in range(len(data))] == stored


def test_decode_fits_keeping_aspect():
    import cv2

    grey = np.full((20, 100), 255, np.uint8)
    grey[:, :10] = 0  # ink at the left
    png = cv2.imencode(".png", grey)[1].tobytes()
    same = decode(png, 20, 100)
    assert same.shape == (20, 100) and same[:, :10].min() == 1.0 and same[:, 10:].max() == 0.0
    fitted = decode(png, 32, 64)  # width-bound: 100 → 64, height 20 → 13, padded below with paper (0)
    assert fitted.shape == (32, 64) and fitted[13:].max() == 0.0 and fitted[:12, :5].min() > 0.9


def test_augment_is_light_and_seeded():
    ink = np.zeros((32, 128), np.float32)
    ink[8:24, 20:100] = 1.0
    a = augment(ink, np.random.default_rng(1))
    assert np.array_equal(a, augment(ink, np.random.default_rng(1)))
    assert not np.array_equal(a, augment(ink, np.random.default_rng(2)))
    assert 0.0 <= a.min() and a.max() <= 1.0 and abs(a.sum() / ink.sum() - 1) < 0.35


@pytest.mark.parametrize("level", LEVELS)
def test_augment_draws_a_fixed_number_of_values_and_keeps_the_word(level):
    """The same draws whatever the image (a DDP rank skips other ranks' rows by drawing); a word that fills
    the width is not lost, and under `strong` (which stretches) not pushed out of the frame either."""
    word = np.zeros((32, 128), np.float32)
    word[6:26, 4:124] = 1.0  # a long word, edge to edge
    for seed in range(20):
        rng_a, rng_b = np.random.default_rng(seed), np.random.default_rng(seed)
        draw(rng_a, level, word.shape)
        draw(rng_b, level, word.shape)
        assert rng_a.uniform() == rng_b.uniform()
        out = augment(word, np.random.default_rng(seed), level)
        assert out.shape == word.shape and 0.0 <= out.min() and out.max() <= 1.0
        assert 0.2 < out.sum() / word.sum() < 1.6, (seed, out.sum() / word.sum())  # shrunk, faded, never lost
        if level == "strong":
            assert out[:, :2].mean() < 0.35 and out[:, -2:].mean() < 0.35  # no stripe of ink cut off at an edge
    with pytest.raises(ValueError, match="augmentation level"):
        draw(np.random.default_rng(0), "extreme", word.shape)


def test_paper_level_is_the_fifth_lightest_value():
    """Against `np.partition` on images on the decoder's 1/255 grid: mostly paper, mostly ink, grey noise."""
    rng = np.random.default_rng(0)
    for image in (np.where(rng.uniform(size=(32, 128)) < 0.7, 0, rng.integers(1, 256, (32, 128))),
                  np.where(rng.uniform(size=(32, 128)) < 0.9, 255, rng.integers(0, 256, (32, 128))),
                  rng.integers(0, 256, (48, 192))):
        ink = image.astype(np.float32) * np.float32(1 / 255)
        k = ink.size // 5
        assert paper_level(ink) == pytest.approx(float(np.partition(ink.ravel(), k)[k]), abs=1e-6)


def test_batches_are_the_same_with_or_without_workers(tiny):
    _, lexicon, shards = tiny
    data = ShardSet.load([shards], lexicon)
    dataset = BatchDataset(data, 32, 128, augment=True, seed=3)
    batches = [list(range(i, i + 8)) for i in range(0, 48, 8)]

    def run(workers):
        return list(batch_loader(dataset, EpochBatches(batches, epoch=1, start=2), workers))

    inline, forked = run(0), run(2)
    assert len(inline) == len(forked) == 4
    for a, b in zip(inline, forked):
        assert torch.equal(a["rows"], b["rows"]) and torch.equal(a["images"], b["images"])
    assert [b["rows"].tolist() for b in inline] == batches[2:]


def test_ranks_together_load_the_one_process_batch(tiny):
    """Under DDP each rank loads and augments its slice; together they are the single process's batch."""
    _, lexicon, shards = tiny
    dataset = BatchDataset(ShardSet.load([shards], lexicon), 32, 128, augment=True, seed=3)
    batches = [list(range(i, i + 8)) for i in range(0, 48, 8)]
    whole = list(batch_loader(dataset, EpochBatches(batches, epoch=1), 0))
    parts = [list(batch_loader(dataset, EpochBatches(batches, epoch=1, rank=r, world=4), 0)) for r in range(4)]
    for i, batch in enumerate(whole):
        assert torch.equal(torch.cat([p[i]["rows"] for p in parts]), batch["rows"])
        assert torch.equal(torch.cat([p[i]["images"] for p in parts]), batch["images"])


def test_stream_splits_shards_across_workers_without_duplicates(tiny):
    shards = tiny[2]
    stream = ShardStream(find_shards(shards), 32, 128, batch_size=5)
    for workers in (0, 2):
        loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers)
        seen = [(int(s), l, t) for b in loader for s, l, t in zip(b["semantic_ids"], b["langs"], b["texts"])]
        assert len(seen) == 48
        counts = {}
        for key in seen:
            counts[key] = counts.get(key, 0) + 1
        assert all(n == 2 for n in counts.values()) and len(counts) == 24  # per_id=2 rows of each (id, lang)
    only_es = [b for b in ShardStream(find_shards(shards), 32, 128, langs=["es"])]
    assert {lang for b in only_es for lang in b["langs"]} == {"es"}
