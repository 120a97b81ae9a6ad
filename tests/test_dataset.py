import dataclasses
import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from hwkit.files import sha256_file
from synth.dataset import build_dataset
from synth.dataset.manifest import DatasetError
from synth.dataset.plan import PlanConfig, PlanError
from synth.dataset.verify import verify_dataset
from synth.fonts.catalogue import load_catalogue
from synth.fonts.fetch import FetchError
from synth.lexicon import LexiconError
from synth.render.config import load_render_config
from synth.schema import IMAGE, SCHEMA, WIDTH
from tests.conftest import write_catalogue
from tests.dataset_fixtures import DoubleRenderer, make_world, small_config, tree_bytes

# Both splits, 4 samples per (ID, language) spread over all styles: 96 rows in 12-row shards.
CONFIG = PlanConfig(fonts="all", mode="per_id", samples=4, seed=7, rows_per_shard=12)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        yield make_world(tmp_path_factory.mktemp("dataset"), mp)


def build(world, out: Path, config: PlanConfig = CONFIG, **kwargs):
    kwargs.setdefault("renderer_cls", DoubleRenderer)
    return build_dataset(out, config, small_config(), lexicon_path=world.lexicon, catalogue_path=world.catalogue,
                         command="synth render (test)", **kwargs)


@pytest.fixture(scope="module")
def reference(world):
    """The dataset built in one go by one process: every other run must end with exactly these bytes."""
    out = world.root / "reference"
    result = build(world, out, workers=1)
    assert (result.rows, result.shards, result.reused_shards) == (96, 9, 0)
    return out


def test_reference_is_complete_and_verifies(reference):
    manifest = json.loads((reference / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["command"] == "synth render (test)"
    assert manifest["libraries"]["pyarrow"] == pa.__version__ and set(manifest["libraries"]) >= {"opencv", "pillow", "freetype"}
    assert manifest["config"]["plan"]["seed"] == 7 and manifest["config"]["renderer"] == "tests.dataset_fixtures.DoubleRenderer"
    assert all(e["sha256"] == sha256_file(reference / e["name"]) for e in manifest["shards"])
    assert {"manifest.json", "sizes.json", "README.md"} <= set(tree_bytes(reference))
    card = (reference / "README.md").read_text()
    assert "| `semantic_id` | `int32` |" in card and "latin-held" in card and "Arphic-1999" in card
    assert verify_dataset(reference).ok


def test_one_and_two_workers_write_identical_bytes(world, reference, tmp_path):
    seen = []
    result = build(world, tmp_path / "two", workers=2, progress=lambda n, total: seen.append((n, total)))
    assert tree_bytes(tmp_path / "two") == tree_bytes(reference)
    assert seen[0] == (0, 96) and sum(n for n, _ in seen) == 96 and result.rendered_rows == 96


def test_killed_worker_then_rerun_ends_byte_identical(world, reference, tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setenv("SYNTH_TEST_CRASH_ID", "5")
    monkeypatch.setenv("SYNTH_TEST_CRASH_MARKER", str(tmp_path / "crashed"))
    with pytest.raises(DatasetError, match="a worker process died while rendering .* re-run the same command"):
        build(world, out, workers=2)
    assert (tmp_path / "crashed").exists()
    assert json.loads((out / "manifest.json").read_text())["status"] == "incomplete"
    assert all(not p.name.startswith(".") for p in (out / "data").iterdir())  # no temporaries left
    assert not (out / "sizes.json").exists()
    build(world, out, workers=2)  # the marker is there: this time nobody crashes
    assert tree_bytes(out) == tree_bytes(reference)


def test_failed_render_keeps_finished_shards_and_resume_skips_them(world, reference, tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setenv("SYNTH_TEST_FAIL_ID", "5")
    with pytest.raises(DatasetError, match=r"rendering data/train-\d{5}-of-\d{5}\.parquet failed on '\w+' in style [\w-]+ \(.*\.ttf\): ValueError: cannot draw this"):
        build(world, out, workers=1)
    written = [e["name"] for e in json.loads((out / "manifest.json").read_text())["shards"] if e["sha256"]]
    assert written and all((out / name).exists() for name in written)
    monkeypatch.delenv("SYNTH_TEST_FAIL_ID")
    result = build(world, out, workers=1)
    assert result.reused_shards == len(written) and result.rendered_rows < 96
    assert tree_bytes(out) == tree_bytes(reference)


def test_rerun_of_complete_dataset_renders_nothing_and_repairs_a_corrupt_shard(world, reference, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(reference, out)
    assert build(world, out).rendered_rows == 0
    victim = out / "data/held_out-00001-of-00003.parquet"
    victim.write_bytes(victim.read_bytes()[:-10])
    result = build(world, out)
    assert result.reused_shards == 8 and result.rendered_rows == 12
    assert tree_bytes(out) == tree_bytes(reference)


def test_different_config_refuses_and_overwrite_rules(world, reference, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(reference, out)
    other = dataclasses.replace(CONFIG, seed=8)
    with pytest.raises(DatasetError, match=r"holds a different dataset \(config differs in plan.seed\); pass `overwrite=True`"):
        build(world, out, other)
    assert tree_bytes(out) == tree_bytes(reference)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match=r"holds files that are not part of a synth dataset \(notes.txt\)"):
        build(world, out, other, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine" and (out / "manifest.json").exists()
    (out / "notes.txt").unlink()
    build(world, out, other, overwrite=True)
    assert json.loads((out / "manifest.json").read_text())["config"]["plan"]["seed"] == 8
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "photo.jpg").write_bytes(b"x")
    with pytest.raises(DatasetError, match="is not empty and holds no synth dataset"):
        build(world, stranger, overwrite=True)
    assert [p.name for p in stranger.iterdir()] == ["photo.jpg"]
    project = tmp_path / "project"  # someone else's manifest.json: never ours to replace
    project.mkdir()
    (project / "manifest.json").write_text('{"name": "my-project"}')
    (project / "README.md").write_text("# my notes")
    with pytest.raises(DatasetError, match="not a synth dataset manifest .* refusing to touch .* even with `overwrite=True`"):
        build(world, project, overwrite=True)
    assert (project / "README.md").read_text() == "# my notes" and "my-project" in (project / "manifest.json").read_text()


def test_bad_input_fails_before_writing_anything(world, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(PlanError, match="out of range: the lexicon has 8 entries"):
        build(world, out, dataclasses.replace(CONFIG, ids="0:9"))
    only_noenye = write_catalogue(tmp_path / "cat.yaml", [_entry(world, "latin-noenye")])
    with pytest.raises(PlanError, match="no es entry in IDs 1:3 can be rendered"):
        build_dataset(out, PlanConfig(langs=("es",), ids="1:3"), small_config(), lexicon_path=world.lexicon,
                      catalogue_path=only_noenye, renderer_cls=DoubleRenderer)
    with pytest.raises(LexiconError, match="file not found"):
        build_dataset(out, CONFIG, small_config(), lexicon_path=tmp_path / "nope.tsv", catalogue_path=world.catalogue,
                      renderer_cls=DoubleRenderer)
    cached = world.cache / "fonts" / "han-held.ttf"
    good = cached.read_bytes()
    cached.write_bytes(b"garbage")
    try:
        with pytest.raises(FetchError, match="style han-held: cached file .* is corrupt"):
            build(world, out)
    finally:
        cached.write_bytes(good)
    assert not out.exists()
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(DatasetError, match="cannot write to .*a-file/out"):
        build(world, blocker / "out")
    with pytest.raises(DatasetError, match="exists and is not a folder"):
        build(world, blocker)


def _entry(world, style_id: str) -> dict:
    return next(e for e in yaml.safe_load(world.catalogue.read_text())["styles"] if e["id"] == style_id)


def test_verify_names_each_problem(reference, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(reference, out)
    manifest = json.loads((out / "manifest.json").read_text())
    first, second, third = (e["name"] for e in manifest["shards"][:3])
    corrupt = out / first
    data = bytearray(corrupt.read_bytes())
    data[100] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    (out / second).unlink()
    table = pq.read_table(out / third)
    table = table.set_column(table.schema.get_field_index(WIDTH), WIDTH, pa.array([65] * table.num_rows, pa.int32()))
    pq.write_table(table.cast(SCHEMA), out / third)
    sizes = json.loads((out / "sizes.json").read_text())
    sizes[first] += 1
    (out / "sizes.json").write_text(json.dumps(sizes))
    shutil.copy(out / manifest["shards"][3]["name"], out / "data/train-00099-of-00099.parquet")
    fifth = manifest["shards"][5]["name"]
    renamed = pq.read_table(out / fifth)
    pq.write_table(renamed.rename_columns(["picture" if c == IMAGE else c for c in renamed.column_names]), out / fifth)
    report = verify_dataset(out)
    problems = report.problems
    text = "\n".join(problems)
    assert f"{first}: sha256 differs" in text
    assert f"{second}: missing" in text
    assert f"{fifth}: missing column 'image'; unexpected column 'picture' (synth/schema.py)" in text  # not the schema dump
    assert report.rows == sum(e["rows"] for e in manifest["shards"]) - manifest["shards"][1]["rows"]  # the missing one
    assert f"{third}: sha256 differs" in text and f"{third}: 12 bad image(s): row 0: image is 64×24, row says 65×24" in text
    assert "sizes.json: does not match" in text
    assert "data/train-00099-of-00099.parquet: shard file not listed" in text
    manifest["shards"][4]["rows"] += 1
    manifest["status"] = "incomplete"
    (out / "manifest.json").write_text(json.dumps(manifest))
    text = "\n".join(verify_dataset(out).problems)
    assert f"{manifest['shards'][4]['name']}: 12 rows, manifest.json says 13" in text
    assert "status is 'incomplete'" in text
    assert verify_dataset(tmp_path).problems == [f"{tmp_path}: no manifest.json; not a synth dataset"]
    del manifest["shards"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert any("damaged synth manifest (missing or malformed: shards)" in p for p in verify_dataset(out).problems)


_REAL_CACHE = os.environ.get("SYNTH_CACHE")  # read before the module fixture points it at a tiny cache
_REAL_FONTS = load_catalogue().get("lxgw-wenkai-400").cache_path.is_file()


@pytest.mark.slow  # make test-fast leaves it out
@pytest.mark.skipif(not _REAL_FONTS and not os.environ.get("CI"), reason="fonts not fetched (run `synth fonts fetch`)")
def test_real_renderer_end_to_end(tmp_path, monkeypatch):
    if _REAL_CACHE is None:
        monkeypatch.delenv("SYNTH_CACHE", raising=False)
    else:
        monkeypatch.setenv("SYNTH_CACHE", _REAL_CACHE)
    out = tmp_path / "real"
    plan = PlanConfig(fonts="all", mode="per_id", samples=2, ids="0:8", rows_per_shard=20)
    result = build_dataset(out, plan, load_render_config("default"), command="synth render (real test)")
    assert result.rows == 48 and verify_dataset(out).ok
    # The real renderer, too, writes the same bytes from two worker processes as from one.
    build_dataset(tmp_path / "two", plan, load_render_config("default"), command="synth render (real test)", workers=2)
    assert tree_bytes(tmp_path / "two") == tree_bytes(out)
    table = pq.read_table(out / "data/train-00000-of-00002.parquet")
    for row in table.slice(0, 8).to_pylist():
        image = cv2.imdecode(np.frombuffer(row["image"]["bytes"], np.uint8), cv2.IMREAD_UNCHANGED)
        assert image.shape == (64, 256) and int(image.min()) < int(np.median(image)) - 60  # ink on paper
