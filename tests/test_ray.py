"""`synth render --executor ray` on a local Ray with 2 CPUs writes the same bytes as the process pool."""

import sys

import pytest
from typer.testing import CliRunner

from synth.cli.render import app
from synth.dataset import build_dataset
from synth.dataset.manifest import DatasetError
from synth.dataset.plan import PlanConfig
from synth.render.config import RenderConfig
from tests.dataset_fixtures import make_world, tree_bytes

pytest.importorskip("ray")  # the `ray` extra; `make setup` installs it with the test extra
runner = CliRunner()


@pytest.mark.slow  # make test-fast leaves it out
def test_ray_executor_writes_the_process_pool_bytes(tmp_path, monkeypatch):
    w = make_world(tmp_path / "world", monkeypatch)  # sets SYNTH_CACHE before Ray starts: workers inherit it
    small = tmp_path / "small.yaml"
    small.write_text("height: 32\nwidth: 96\n")
    args = ["render", "--lang", "all", "--per-id", "3", "--ids", "0:8", "--rows-per-shard", "10", "--config",
            str(small), "--lexicon", str(w.lexicon), "--catalogue", str(w.catalogue), "--workers", "2"]
    pool = runner.invoke(app, [*args, "--out", str(tmp_path / "pool")])
    assert pool.exit_code == 0, pool.output
    ray = runner.invoke(app, [*args, "--out", str(tmp_path / "ray"), "--executor", "ray"])
    assert ray.exit_code == 0, ray.output
    assert len(list((tmp_path / "ray" / "data").iterdir())) >= 3  # several shards, spread over the actors
    assert tree_bytes(tmp_path / "ray") == tree_bytes(tmp_path / "pool")

    wrong = runner.invoke(app, [*args, "--out", str(tmp_path / "x"), "--address", "auto"])
    assert wrong.exit_code == 1 and "--address is for --executor ray" in wrong.output


def test_ray_missing_is_one_clear_error(tmp_path, monkeypatch):
    w = make_world(tmp_path / "world", monkeypatch)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    with pytest.raises(DatasetError, match=r"`executor='ray'` needs Ray: pip install '\.\[ray\]'"):
        build_dataset(tmp_path / "out", PlanConfig(langs=("es",), ids="0:2"), RenderConfig(), lexicon_path=w.lexicon,
                      catalogue_path=w.catalogue, executor="ray")
    assert not (tmp_path / "out").exists()  # refused before anything was written
    with pytest.raises(DatasetError, match="unknown executor 'dask'; expected one of local, ray"):
        build_dataset(tmp_path / "out", PlanConfig(langs=("es",), ids="0:2"), RenderConfig(), lexicon_path=w.lexicon,
                      catalogue_path=w.catalogue, executor="dask")
    assert not (tmp_path / "out").exists()


def test_an_address_where_no_cluster_answers_is_one_clear_error(tmp_path, monkeypatch):
    import socket

    w = make_world(tmp_path / "world", monkeypatch)
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = ["render", "--lang", "es", "--ids", "0:2", "--lexicon", str(w.lexicon), "--catalogue", str(w.catalogue),
            "--executor", "ray", "--out", str(tmp_path / "out")]
    for address, message in ((f"127.0.0.1:{port}", f"cannot reach a Ray cluster at '127.0.0.1:{port}': "),
                             (f"ray://127.0.0.1:{port}", "cannot reach a Ray cluster at 'ray://127.0.0.1:"),
                             ("head-node", "--address 'head-node': expected HOST:PORT, ray://HOST:PORT or auto")):
        result = runner.invoke(app, [*args, "--address", address])
        assert result.exit_code == 1 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()  # refused before anything was written


@pytest.mark.slow  # make test-fast leaves it out
def test_a_failed_ray_task_keeps_finished_shards_and_resumes(tmp_path, monkeypatch):
    from pathlib import Path

    from tests.dataset_fixtures import DoubleRenderer

    w = make_world(tmp_path / "world", monkeypatch)
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[1]))  # actors import tests.*
    plan = PlanConfig(ids="0:8", mode="per_id", samples=2, rows_per_shard=6)
    kwargs = {"lexicon_path": w.lexicon, "catalogue_path": w.catalogue, "renderer_cls": DoubleRenderer, "workers": 2}
    out = tmp_path / "ray"
    monkeypatch.setenv("SYNTH_TEST_FAIL_ID", "5")  # read by DoubleRenderer in the actors
    with pytest.raises(DatasetError, match="a Ray task failed: .*cannot draw this.*re-run the same command"):
        build_dataset(out, plan, RenderConfig(), executor="ray", **kwargs)
    monkeypatch.delenv("SYNTH_TEST_FAIL_ID")
    resumed = build_dataset(out, plan, RenderConfig(), executor="ray", **kwargs)
    assert 0 < resumed.reused_shards < resumed.shards  # the shards that landed before the failure were kept
    build_dataset(tmp_path / "pool", plan, RenderConfig(), **kwargs)
    assert tree_bytes(out) == tree_bytes(tmp_path / "pool")


@pytest.mark.slow  # make test-fast leaves it out
def test_ray_cluster_at_an_address_renders_on_its_worker_nodes(tmp_path, monkeypatch):
    """A real multi-node cluster on this machine: a head with no CPUs and two worker nodes (own raylets and
    object stores), reached by --address, so every shard is rendered on a node other than the driver's and
    crosses nodes as bytes. Same bytes as the process pool."""
    from ray.cluster_utils import Cluster

    w = make_world(tmp_path / "world", monkeypatch)
    args = ["render", "--lang", "es", "--per-id", "2", "--ids", "0:8", "--rows-per-shard", "6",
            "--lexicon", str(w.lexicon), "--catalogue", str(w.catalogue), "--workers", "2"]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray = runner.invoke(app, [*args, "--out", str(tmp_path / "ray"), "--executor", "ray",
                                  "--address", cluster.address])
        assert ray.exit_code == 0, ray.output
    finally:
        cluster.shutdown()
    pool = runner.invoke(app, [*args, "--out", str(tmp_path / "pool")])
    assert pool.exit_code == 0, pool.output
    assert tree_bytes(tmp_path / "ray") == tree_bytes(tmp_path / "pool")

