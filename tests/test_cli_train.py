"""`train pretrain | finetune | eval` end to end through the real entry points: `synth render` writes a few
dozen word images with the test fonts, the trainer runs a few steps on a tiny BERT, eval prints the tables.
Then each kind of bad input gets one clear line and exit code 1."""

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from synth.cli import app as synth_app
from tests.dataset_fixtures import make_world
from tests.train_fixtures import make_tiny_bert
from train.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-train")
    with pytest.MonkeyPatch.context() as mp:
        w = make_world(root, mp)
        canvas = root / "canvas.yaml"
        canvas.write_text("height: 32\nwidth: 128\n")
        common = ["--ids", "0:8", "--config", str(canvas), "--lexicon", str(w.lexicon), "--catalogue",
                  str(w.catalogue), "--workers", "1"]
        for fonts, per_id, out in (("train", "2", root / "shards"), ("held-out", "1", root / "held")):
            result = runner.invoke(synth_app, ["render", "--lang", "all", "--fonts", fonts, "--per-id", per_id,
                                               "--out", str(out), *common])
            assert result.exit_code == 0, result.output
        bert = make_tiny_bert(root / "bert")
        small = ["--preset", "cpu-small", "--text-encoder", str(bert), "--lexicon", str(w.lexicon), "--workers", "0",
                 "--batch-size", "12", "--set", "model.text.prefix=''", "--set", "precise_bn_batches=1"]
        yield root, w, small


def one_error_line(result, fragment: str) -> None:
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and fragment in errors[0], result.output
    assert "Traceback" not in result.output


def test_pretrain_finetune_eval(world):
    root, w, small = world
    run, fine = root / "run", root / "fine"
    result = runner.invoke(app, ["pretrain", "--data", str(root / "shards"), "--out", str(run), "--max-steps", "2", *small])
    assert result.exit_code == 0, result.output
    assert "pretrain done, 2 steps" in result.output
    for name in ("config.json", "metrics.jsonl", "curves.png", "model.safetensors", "model.json"):
        assert (run / name).is_file(), name
    assert json.loads((run / "config.json").read_text())["config"]["optim"]["max_steps"] == 2

    result = runner.invoke(app, ["finetune", "--init", str(run), "--data", str(root / "shards"), "--out", str(fine),
                                 "--max-steps", "1", *small])
    assert result.exit_code == 0, result.output
    provenance = json.loads((fine / "config.json").read_text())
    assert provenance["init"] == str(run.resolve()) and provenance["config"]["stage"] == "finetune"
    assert provenance["config"]["optim"]["lr"] == 4e-4  # the preset's finetune stage

    report = root / "eval.json"
    result = runner.invoke(app, ["eval", "--ckpt", str(fine), "--data", str(root / "held"), "--cross-lingual",
                                 "--lexicon", str(w.lexicon), "--out", str(report)])
    assert result.exit_code == 0, result.output
    for row in ("| en |", "| es |", "| zh |", "| all |", "| es→zh |", "| en→es |", "| mean |"):
        assert row in result.output, row
    data = json.loads(report.read_text())
    assert data["n_images"] == 24 and data["gallery"]["size"] == 8  # 8 IDs × 3 languages × 1 held-out style
    assert f"{data['within']['es']['acc@1']:.4f}" in report.with_suffix(".md").read_text()


@pytest.fixture(scope="module")
def run(world):
    """A one-step pre-training run the refusal tests below point at (none of them changes it)."""
    root, _, small = world
    out = root / "one-step"
    result = runner.invoke(app, ["pretrain", "--data", str(root / "shards"), "--out", str(out), "--max-steps", "1", *small])
    assert result.exit_code == 0, result.output
    return out


def test_reports_a_user_made_are_never_replaced(world, run, tmp_path):
    """A report of its own is rewritten when eval runs again; a file a user made is never replaced."""
    root, w, _ = world
    report = tmp_path / "eval.json"
    again = ["eval", "--ckpt", str(run), "--data", str(root / "held"), "--lexicon", str(w.lexicon), "--out"]
    assert runner.invoke(app, [*again, str(report)]).exit_code == 0
    assert runner.invoke(app, [*again, str(report)]).exit_code == 0
    notes, lone_md = tmp_path / "notes.json", tmp_path / "fresh.md"
    notes.write_text('{"mine": true}')
    lone_md.write_text("my table")
    one_error_line(runner.invoke(app, [*again, str(notes)]), "notes.json exists and was not written by `train eval`")
    one_error_line(runner.invoke(app, [*again, str(tmp_path / "fresh.json")]), "fresh.md exists and was not written by")
    one_error_line(runner.invoke(app, [*again, str(root / "shards")]), "is a folder; --out takes a file name")
    one_error_line(runner.invoke(app, [*again, str(lone_md / "e.json")]), "cannot make its folder")
    assert notes.read_text() == '{"mine": true}' and lone_md.read_text() == "my table"
    assert not (tmp_path / "fresh.json").exists() and not (tmp_path / "notes.md").exists()
    for command in (["baseline", "tesseract", "--data", str(root / "held")],
                    ["report", "--run", str(run), "--ood", str(root / "held"), "--plot", str(tmp_path / "map.png")]):
        one_error_line(runner.invoke(app, [*command, "--out", str(lone_md if command[0] == "report" else notes)]),
                       "exists and was not written by")
    assert notes.read_text() == '{"mine": true}' and lone_md.read_text() == "my table"


def test_bad_data_is_one_line(world, tmp_path):
    _, _, small = world
    one_error_line(runner.invoke(app, ["pretrain", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r"), *small]),
                   "data not found")

    broken = tmp_path / "broken" / "data"
    broken.mkdir(parents=True)
    pq.write_table(pa.table({"image": [b"x"], "semantic_id": [0]}), broken / "train-00000-of-00001.parquet")
    one_error_line(runner.invoke(app, ["pretrain", "--data", str(broken.parent), "--out", str(tmp_path / "r"), *small]),
                   "column 'image' has type binary; expected struct")


def test_bad_run_folders_and_settings_are_one_line(world, run, tmp_path, monkeypatch):
    root, w, small = world
    locked, mkdir = tmp_path / "locked", Path.mkdir

    def unwritable(self, *args, **kwargs):  # root may write anywhere, so a mode bit cannot refuse it here
        if self == locked or locked in self.parents:
            raise PermissionError(13, "Permission denied", str(self))
        return mkdir(self, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(Path, "mkdir", unwritable)
        one_error_line(runner.invoke(app, ["pretrain", "--data", str(root / "shards"), "--out", str(locked / "r"), *small]),
                       f"Permission denied: '{locked / 'r'}'")
    one_error_line(runner.invoke(app, ["pretrain", "--data", str(root / "shards"), "--out", str(run), *small]),
                   "already exists")
    plain = tmp_path / "plain.txt"
    plain.write_text("a user's file")
    one_error_line(runner.invoke(app, ["pretrain", "--data", str(root / "shards"), "--out", str(plain / "r"), *small]),
                   f"Not a directory: '{plain / 'r'}'")
    one_error_line(runner.invoke(app, ["export", "--ckpt", str(run), "--out", str(plain / "e"), "--lexicon", str(w.lexicon)]),
                   "Not a directory")
    assert plain.read_text() == "a user's file"
    one_error_line(runner.invoke(app, ["finetune", "--init", str(run), "--data", str(root / "shards"), "--out",
                                       str(tmp_path / "f"), "--set", "model.image.image_width=160", *small]),
                   "model differs from this config in model.image.image_width")
    one_error_line(runner.invoke(app, ["pretrain", "--data", str(root / "shards"), "--out", str(tmp_path / "x"),
                                       "--set", "optim.warmup=2", *small]), "optim.warmup must be in [0, 1)")

    one_error_line(runner.invoke(app, ["pretrain", "--data", str(root / "shards"), "--out", str(tmp_path / "w"),
                                       *small, "--workers", "9999"]), "9,999 data workers is more than 4 per CPU core")
    one_error_line(runner.invoke(app, ["eval", "--ckpt", str(run), "--data", str(root / "held"), "--workers", "9999",
                                       "--lexicon", str(w.lexicon)]),
                   "--workers: 9,999 data workers")
    one_error_line(runner.invoke(app, ["eval", "--ckpt", str(run), "--data", str(root / "held"), "--device", "tpu",
                                       "--lexicon", str(w.lexicon)]),
                   "--device 'tpu' is not a device; use cpu, cuda or cuda:N")
    one_error_line(runner.invoke(app, ["pretrain", "--data", str(root / "shards"), "--out", str(tmp_path / "d"),
                                       "--device", "cuda:99", *small]), "--device cuda:99: ")
    assert not (tmp_path / "d").exists()


def test_eval_and_export_refuse_what_the_run_was_not_made_with(world, run, tmp_path):
    root, w, small = world
    taken = tmp_path / "taken.json"
    taken.write_text("a user's notes")
    one_error_line(runner.invoke(app, ["eval", "--ckpt", str(tmp_path / "no-run"), "--data", str(root / "held"),
                                       "--out", str(taken)]), str(taken))  # refused before any model is looked for
    assert taken.read_text() == "a user's notes"
    other_lexicon = tmp_path / "other-lexicon.tsv"
    other_lexicon.write_text(w.lexicon.read_text(encoding="utf-8").replace("\n0\t", "\n0\tx", 1), encoding="utf-8")
    for command in (["eval", "--data", str(root / "held")], ["export", "--out", str(tmp_path / "exp")]):
        one_error_line(runner.invoke(app, [command[0], "--ckpt", str(run), *command[1:], "--lexicon", str(other_lexicon)]),
                       f"--lexicon {other_lexicon} is not the lexicon {run} was trained with")
    assert not (tmp_path / "exp").exists()
    wide = tmp_path / "wide"
    assert runner.invoke(app, ["pretrain", "--data", str(root / "shards"), "--out", str(wide), "--max-steps", "1", *small,
                               "--set", "model.image.image_width=160"]).exit_code == 0
    swapped = tmp_path / "swapped"
    shutil.copytree(run, swapped)
    for name in ("model.safetensors", "model.json"):  # another run's final weights, checksums and all
        shutil.copy(wide / name, swapped / name)
    one_error_line(runner.invoke(app, ["eval", "--ckpt", str(swapped), "--data", str(root / "held"), "--lexicon", str(w.lexicon)]),
                   "the final weights were trained with another model.image.image_width")


def test_damaged_files_are_named(world, run, tmp_path):
    root, w, _ = world
    torn = tmp_path / "torn"
    shutil.copytree(root / "held", torn)
    shard = min((torn / "data").glob("*.parquet"))
    shard.write_bytes(shard.read_bytes()[:200])  # no Parquet footer
    one_error_line(runner.invoke(app, ["eval", "--ckpt", str(run), "--data", str(torn), "--lexicon", str(w.lexicon),
                                       "--out", str(tmp_path / "reports" / "torn.json")]),
                   f"{shard}: not a readable Parquet file")
    assert not (tmp_path / "reports").exists()  # no report, and no empty folder for one

    damaged = tmp_path / "damaged"
    shutil.copytree(run, damaged)
    weights = damaged / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    one_error_line(runner.invoke(app, ["eval", "--ckpt", str(damaged), "--data", str(root / "held"), "--lexicon", str(w.lexicon)]),
                   "checksum mismatch")
