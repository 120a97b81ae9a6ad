import json

import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

import synth.dataset
import synth.dataset.corpus
from synth.cli.render import app
from tests.conftest import write_catalogue
from tests.dataset_fixtures import double_world

runner = CliRunner()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        w, small = double_world(tmp_path_factory.mktemp("cli"), mp)
        yield w, ["--lexicon", str(w.lexicon), "--catalogue", str(w.catalogue), "--workers", "1"], small


def test_render_verify_preview_end_to_end(world, tmp_path):
    w, common, small = world
    out = tmp_path / "es-held-out"
    args = ["render", "--lang", "es", "--fonts", "held-out", "--per-id", "3", "--ids", "0:6", "--config", str(small),
            "--distort", "light", "--out", str(out), *common]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "done: 18 rows in 1 shards, 0 (entry, style) pairs skipped" in result.output and "images/s" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["command"] == (f"synth render --lang es --fonts held-out --per-id 3 --ids 0:6 --seed 0 --distort light "
                                   f"--rows-per-shard 2000 --row-group-size 1000 --config {small.name} "
                                   f"--lexicon {w.lexicon.name} --catalogue {w.catalogue.name}")
    assert manifest["config"]["render"]["preset"] == "light" and manifest["config"]["render"]["height"] == 24
    assert set(manifest["styles"]) == {"latin-held"}

    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "(1 already present)" in again.output

    other = runner.invoke(app, [*args[:-len(common)], "--seed", "1", *common])
    assert other.exit_code == 1 and "holds a different dataset (config differs in plan.seed)" in other.output
    assert len(other.output.strip().splitlines()) == 1

    verified = runner.invoke(app, ["verify", str(out)])
    assert verified.exit_code == 0 and "ok: 1 shards, 18 rows verified" in verified.output

    sheet = tmp_path / "sheet.png"
    shown = runner.invoke(app, ["preview", str(out), "--out", str(sheet), "--n", "6", "--columns", "3",
                                "--catalogue", str(w.catalogue)])
    assert shown.exit_code == 0, shown.output
    with Image.open(sheet) as image:
        assert image.mode == "L" and image.width == 3 * (64 + 8) + 8 and image.height > 2 * 24
    again = runner.invoke(app, ["preview", str(out), "--out", str(sheet), "--catalogue", str(w.catalogue)])
    assert again.exit_code == 1 and "exists; pass --force to replace it" in again.output
    bare = tmp_path / "sheet-without-extension"
    shown = runner.invoke(app, ["preview", str(out), "--out", str(bare), "--n", "3", "--catalogue", str(w.catalogue)])
    assert shown.exit_code == 0 and bare.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "more than" not in shown.output
    every = runner.invoke(app, ["preview", str(out), "--out", str(tmp_path / "all.png"), "--n", "50", "--catalogue", str(w.catalogue)])
    assert every.exit_code == 0 and "--n 50 is more than the 18 rows, so all of them" in every.output  # said, not silent
    folder = runner.invoke(app, ["preview", str(out), "--out", str(tmp_path), "--force", "--catalogue", str(w.catalogue)])
    assert folder.exit_code == 1 and "is a folder; --out takes a file name" in folder.output
    shard = min((out / "data").glob("*.parquet"))
    shard.write_bytes(shard.read_bytes()[:300])  # cut short: no Parquet footer
    broken = runner.invoke(app, ["preview", str(out), "--out", str(tmp_path / "b.png"), "--catalogue", str(w.catalogue)])
    assert broken.exit_code == 1 and f"synth verify {out}` names it" in broken.output, broken.output
    assert "Traceback" not in broken.output and not list(tmp_path.glob(".*.tmp")) and not (tmp_path / "b.png").exists()

    shard = out / manifest["shards"][0]["name"]
    shard.write_bytes(shard.read_bytes()[:-1] + b"\0")
    broken = runner.invoke(app, ["verify", str(out)])
    assert broken.exit_code == 1 and "2 problem(s) found" in broken.output
    assert "sha256 differs" in broken.output and "not a readable Parquet file" in broken.output


def test_option_errors_name_the_valid_choices(world, tmp_path):
    _, common, _ = world
    out = ["--out", str(tmp_path / "x")]
    for option, value, valid in (("--lang", "fr", "'en', 'es', 'zh', 'all'"), ("--fonts", "test", "'train', 'held-out', 'all'"),
                                 ("--distort", "3", "'none', 'light', 'default', 'heavy'")):
        result = runner.invoke(app, ["render", option, value, *out, *common])
        assert result.exit_code == 2 and valid in " ".join(result.output.replace("│", " ").split())
    both = runner.invoke(app, ["render", "--per-id", "2", "--per-style", "1", *out, *common])
    assert both.exit_code == 1 and "give --per-style or --per-id, not both" in both.output
    far = runner.invoke(app, ["render", "--ids", "0:99", *out, *common])
    assert far.exit_code == 1 and "out of range: the lexicon has 8 entries" in far.output
    assert not (tmp_path / "x").exists()


def test_missing_font_is_one_line(world, tmp_path, monkeypatch):
    _, common, _ = world
    monkeypatch.setenv("SYNTH_CACHE", str(tmp_path / "empty"))
    result = runner.invoke(app, ["render", "--lang", "zh", "--out", str(tmp_path / "x"), *common])
    assert result.exit_code == 1 and "is not installed" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_corpus_presets(world, tmp_path, monkeypatch):
    w, common, small = world
    unknown = runner.invoke(app, ["corpus", "tiny", "--out", str(tmp_path / "a"), *common])
    assert unknown.exit_code == 1 and "valid presets: in-domain, ood-en, ood-es, ood-zh, pretrain" in unknown.output
    real = runner.invoke(app, ["corpus", "ood-es", "--out", str(tmp_path / "b"), *common])
    assert real.exit_code == 1 and "--ids '1460' is out of range" in real.output and not (tmp_path / "b").exists()

    presets = tmp_path / "presets"
    presets.mkdir()
    (presets / "mini.yaml").write_text(yaml.safe_dump({"langs": ["zh"], "fonts": "train", "ids": "4", "per_id": 2,
                                                       "seed": 5, "distort": "none"}))
    monkeypatch.setattr(synth.dataset.corpus, "CORPUS_DIR", presets)
    built = runner.invoke(app, ["corpus", "mini", "--out", str(tmp_path / "c"), *common])
    assert built.exit_code == 0, built.output
    assert "done: 8 rows in 1 shards" in built.output
    manifest = json.loads((tmp_path / "c/manifest.json").read_text())
    assert manifest["command"] == "synth corpus mini" and manifest["config"]["plan"]["mode"] == "per_id"


def test_preview_needs_a_chinese_label_font(world, tmp_path):
    w, common, _ = world
    out = tmp_path / "en"
    assert runner.invoke(app, ["render", "--lang", "en", "--ids", "2", "--out", str(out), *common]).exit_code == 0
    entries = [e for e in yaml.safe_load(w.catalogue.read_text())["styles"] if e["id"].startswith("latin")]
    latin_only = write_catalogue(tmp_path / "latin.yaml", entries)
    result = runner.invoke(app, ["preview", str(out), "--out", str(tmp_path / "s.png"), "--catalogue", str(latin_only)])
    assert result.exit_code == 1 and "no Chinese-capable label font is installed; run `synth fonts fetch lxgw-wenkai-400`" in result.output
    missing = runner.invoke(app, ["verify", str(tmp_path / "nothing")])
    assert missing.exit_code == 1 and "no manifest.json" in missing.output


def test_a_damaged_font_is_caught_by_check_and_named_by_render(tmp_path, monkeypatch):
    """A font file damaged after its install, its stamp rewritten to match: the stamp alone would vouch for it."""
    from hwkit.files import sha256_file
    from synth.cli.fonts import app as fonts_app
    from synth.fonts.catalogue import load_catalogue
    from synth.fonts.fetch import stamp_path
    from synth.render.recipe import Renderer
    from tests.dataset_fixtures import make_world

    w = make_world(tmp_path, monkeypatch)
    monkeypatch.setattr(synth.dataset, "default_renderer", lambda: Renderer)  # the real one, not the module's double
    style = load_catalogue(w.catalogue).get("latin-held")
    style.cache_path.write_bytes(b"\0" * 4096)
    meta = json.loads(stamp_path(style).read_text())
    stamp_path(style).write_text(json.dumps({**meta, "sha256": sha256_file(style.cache_path)}))
    args = ["--lexicon", str(w.lexicon), "--catalogue", str(w.catalogue)]
    checked = runner.invoke(fonts_app, ["check", *args])
    assert checked.exit_code == 1 and f"latin-held: {style.cache_path} cannot be drawn" in checked.output
    rendered = runner.invoke(app, ["render", "--lang", "en", "--fonts", "held-out", "--ids", "0:2", "--workers", "1",
                                   "--out", str(tmp_path / "out"), *args])
    assert rendered.exit_code == 1 and "Traceback" not in rendered.output
    assert "in style latin-held" in rendered.output and str(style.cache_path) in rendered.output.replace("\n", "")
    assert not (tmp_path / "out").exists()  # nothing landed: no incomplete manifest, no empty data/
