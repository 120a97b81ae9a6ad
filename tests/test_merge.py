"""`synth render --shard-index I --num-shards N` on N "machines", then `synth merge`: the same folder, byte
for byte, as one build; and every way to get it wrong gives one clear line and writes nothing."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from synth.cli.render import app
from tests.dataset_fixtures import double_world, tree_bytes

runner = CliRunner()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        w, small = double_world(tmp_path_factory.mktemp("merge"), mp)
        args = ["render", "--lang", "all", "--per-id", "2", "--ids", "0:6", "--rows-per-shard", "5", "--config",
                str(small), "--lexicon", str(w.lexicon), "--catalogue", str(w.catalogue), "--workers", "1"]
        yield w, args


def one_error(result, fragment):
    assert result.exit_code == 1, result.output
    assert fragment in result.output and len(result.output.strip().splitlines()) == 1, result.output


def test_parts_merge_into_the_single_build(world, tmp_path):
    w, args = world
    whole = tmp_path / "whole"
    assert runner.invoke(app, [*args, "--out", str(whole)]).exit_code == 0
    shards = json.loads((whole / "manifest.json").read_text())["counts"]["shards"]
    assert shards >= 5  # enough that 3 parts differ in size

    parts = [tmp_path / f"part{i}" for i in range(3)]
    for i, part in enumerate(parts):
        result = runner.invoke(app, [*args, "--out", str(part), "--shard-index", str(i), "--num-shards", "3"])
        assert result.exit_code == 0, result.output
        assert f"(part {i} of 3; join the parts with `synth merge`)" in result.output
        manifest = json.loads((part / "manifest.json").read_text())
        assert manifest["status"] == "part-complete" and manifest["part"] == {"index": i, "count": 3}
        assert len(list((part / "data").iterdir())) == len(range(i, shards, 3))
        again = runner.invoke(app, [*args, "--out", str(part), "--shard-index", str(i), "--num-shards", "3"])
        assert again.exit_code == 0 and "already present" in again.output  # a part resumes like a build

    merged = tmp_path / "merged"
    result = runner.invoke(app, ["merge", str(parts[2]), str(parts[0]), str(parts[1]), "--out", str(merged),
                                 "--lexicon", str(w.lexicon), "--catalogue", str(w.catalogue)])
    assert result.exit_code == 0, result.output
    assert "merged 3 parts: " in result.output
    assert tree_bytes(merged) == tree_bytes(whole)
    verified = runner.invoke(app, ["verify", str(merged)])
    assert verified.exit_code == 0, verified.output
    linked = tmp_path / "linked"
    result = runner.invoke(app, ["merge", *map(str, parts), "--out", str(linked), "--link",
                                 "--lexicon", str(w.lexicon), "--catalogue", str(w.catalogue)])
    assert result.exit_code == 0 and tree_bytes(linked) == tree_bytes(whole)
    first = min((parts[0] / "data").iterdir())
    assert (linked / "data" / first.name).stat().st_ino == first.stat().st_ino  # shared, not copied

    # Refusals, each before anything is written.
    common = ["--lexicon", str(w.lexicon), "--catalogue", str(w.catalogue)]
    one_error(runner.invoke(app, ["merge", str(parts[0]), str(parts[2]), "--out", str(tmp_path / "m1"), *common]),
              "missing part(s) 1 of 3")
    one_error(runner.invoke(app, ["merge", *map(str, parts), str(parts[1]), "--out", str(tmp_path / "m2"), *common]),
              "part(s) 1 given twice")
    one_error(runner.invoke(app, ["merge", str(whole), "--out", str(tmp_path / "m3"), *common]),
              "is not a dataset part")
    checked = runner.invoke(app, ["verify", str(parts[0])])
    assert checked.exit_code == 1 and "is part 0 of 3 of a dataset; join the parts" in checked.output
    from train.run.data import DataError, find_shards

    with pytest.raises(DataError, match="part 1 of 3 of a dataset; join the parts with `synth merge`"):
        find_shards(parts[1])
    one_error(runner.invoke(app, ["merge", *map(str, parts), "--out", str(merged), *common]),
              "already exists; choose another --out, or pass --overwrite")
    (merged / "notes.txt").write_text("mine")  # --overwrite must not take a user's file with it
    one_error(runner.invoke(app, ["merge", *map(str, parts), "--out", str(merged), "--overwrite", *common]),
              "also holds files `synth` did not write (notes.txt)")
    assert (merged / "notes.txt").read_text() == "mine"
    (merged / "notes.txt").unlink()
    one_error(runner.invoke(app, [*args, "--out", str(parts[0]), "--shard-index", "1", "--num-shards", "3"]),
              "holds part 0 of 3 of this dataset, and this command builds part 1 of 3")
    one_error(runner.invoke(app, [*args, "--out", str(tmp_path / "p"), "--shard-index", "3", "--num-shards", "3"]),
              "need 0 ≤ --shard-index < --num-shards")
    one_error(runner.invoke(app, [*args, "--out", str(tmp_path / "p"), "--shard-index", "1"]),
              "give --shard-index and --num-shards together")
    other = tmp_path / "other-seed"
    assert runner.invoke(app, [*args, "--seed", "5", "--out", str(other), "--shard-index", "1", "--num-shards", "3"]).exit_code == 0
    one_error(runner.invoke(app, ["merge", str(parts[0]), str(other), str(parts[2]), "--out", str(tmp_path / "m5"), *common]),
              "is a part of another dataset than")
    unfinished = tmp_path / "unfinished"
    shutil.copytree(parts[1], unfinished)
    manifest = json.loads((unfinished / "manifest.json").read_text())
    (unfinished / "manifest.json").write_text(json.dumps({**manifest, "status": "incomplete"}))
    one_error(runner.invoke(app, ["merge", str(parts[0]), str(unfinished), str(parts[2]), "--out", str(tmp_path / "m6"),
                                  *common]), "part 1 of 3 is not finished; run its command again")
    one_error(runner.invoke(app, ["merge", *map(str, parts), "--out", str(tmp_path / "m7"), "--catalogue",
                                  str(w.catalogue)]), "the parts were rendered with another lexicon")
    broken = next((parts[1] / "data").iterdir())
    broken.write_bytes(broken.read_bytes()[:-1])
    one_error(runner.invoke(app, ["merge", *map(str, parts), "--out", str(tmp_path / "m4"), *common]),
              "differs from its recorded sha256")
    assert not any((tmp_path / name).exists() for name in ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "p"))
    assert tree_bytes(merged) == tree_bytes(whole)  # the refused merge over it left it alone
