"""Data-parallel training on CPU with gloo: 2 processes compute what 1 process computes on the same global
batch, and `torchrun ... -m train pretrain` trains, writes its run folder once and resumes."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from tests.train_fixtures import LEXICON, make_tiny_bert, tiny_config, write_lexicon, write_shards
from train.objectives.losses import RetrievalLoss
from train.run.distributed import Dist, GlobalBatchNorm2d, init_distributed
from train.run.trainer import TrainingError, _train_stage, train_stage
from train.towers.model import DualEncoder

REPO = Path(__file__).resolve().parents[1]
GLOBAL_BATCH = 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _batch() -> tuple[torch.Tensor, list[str], torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    images = torch.rand(GLOBAL_BATCH, 1, 32, 128, generator=g)
    sids = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    texts = [LEXICON[i][j % 2] for j, i in enumerate(sids.tolist())]  # each ID in two languages
    return images, texts, sids


def _model(bert: Path) -> DualEncoder:
    torch.manual_seed(0)
    model = DualEncoder(tiny_config(bert).model, bert)
    model.train()
    return model


def _loss_and_grads(model: torch.nn.Module, outputs: dict) -> tuple[float, dict[str, torch.Tensor]]:
    loss = RetrievalLoss(True, True, True, 1.0)(**outputs)["loss"]
    loss.backward()
    return float(loss.detach()), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _rank(rank: int, world: int, port: int, bert: Path, out: Path) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    ddp = init_distributed("cpu")
    try:
        model = _model(bert)
        net = ddp.wrap(model, model.frozen_text_keys())  # as the trainer does
        images, texts, sids = _batch()
        mine = list(range(rank * GLOBAL_BATCH // world, (rank + 1) * GLOBAL_BATCH // world))
        outputs = ddp.gather_rows(net(images[mine], [texts[i] for i in mine], sids[mine]))
        loss, grads = _loss_and_grads(model, outputs)
        running = {n: b.clone() for n, b in model.image.named_buffers() if "running" in n}
        if ddp.main:
            torch.save({"loss": loss, "grads": grads, "running": running,
                        "sids": outputs["semantic_ids"]}, out)
    finally:
        ddp.close()


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("bert") / "bert")


@pytest.mark.slow  # make test-fast leaves it out
def test_two_ranks_compute_the_loss_and_gradients_of_one_process(bert, tmp_path):
    port = _free_port()
    mp.start_processes(_rank, args=(2, port, bert, tmp_path / "ddp.pt"), nprocs=2, start_method="spawn")
    ddp = torch.load(tmp_path / "ddp.pt")

    model = _model(bert)  # one process, the whole global batch, plain BatchNorm
    images, texts, sids = _batch()
    loss, grads = _loss_and_grads(model, model(images, texts, sids))
    running = {n: b for n, b in model.image.named_buffers() if "running" in n}

    assert torch.equal(ddp["sids"], sids)  # gathered back in batch order
    assert abs(ddp["loss"] - loss) < 1e-5
    assert set(ddp["grads"]) == set(grads) and any(n.startswith("text.model.") for n in grads)
    for name, g in grads.items():
        assert torch.allclose(ddp["grads"][name], g, atol=1e-5, rtol=1e-4), name
    for name, b in running.items():  # statistics over the global batch, not each rank's half
        assert torch.allclose(ddp["running"][name], b, atol=1e-5, rtol=1e-4), name


def test_global_batchnorm_is_plain_batchnorm_in_one_process():
    torch.manual_seed(0)
    plain = torch.nn.BatchNorm2d(3, momentum=0.1)
    synced = GlobalBatchNorm2d(3, momentum=0.1)
    synced.load_state_dict(plain.state_dict())
    x = torch.randn(4, 3, 5, 7)
    assert torch.allclose(plain(x), synced(x))  # no process group: falls back to nn.BatchNorm2d


def test_batch_must_divide_over_the_ranks(bert, tmp_path):
    lexicon_path = write_lexicon(tmp_path / "lexicon.tsv")
    from synth.lexicon import load_lexicon

    config = tiny_config(bert, **{"batch.batch_size": 13})
    with pytest.raises(TrainingError, match="does not divide over 2 processes; use a multiple of 2"):
        _train_stage(config, [tmp_path], tmp_path / "run", load_lexicon(lexicon_path), Dist(rank=0, world=2),
                     None, None, None, None, (None, None, None))
    assert not (tmp_path / "run").exists()


def _torchrun(args: list[str], port: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_addr", "127.0.0.1", "--master_port", str(port), "-m", "train", "pretrain", *args],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=600, check=False)


@pytest.mark.slow  # make test-fast leaves it out
def test_torchrun_pretrain_writes_once_and_resumes(bert, tmp_path):
    lexicon_path = write_lexicon(tmp_path / "lexicon.tsv")
    data = write_shards(tmp_path / "train", per_id=2)
    args = ["--data", str(data), "--preset", "paper", "--text-encoder", str(bert), "--lexicon", str(lexicon_path),
            "--batch-size", "12", "--workers", "0", "--lr", "2e-3", "--epochs", "2", "--device", "cpu",
            "--set", "model.text.unlocked_layers=1", "--set", "model.text.prefix=''",
            "--set", "model.image.image_height=32", "--set", "model.image.image_width=128",
            "--set", "precise_bn_batches=2", "--set", "checkpoint_every=1", "--set", "keep_checkpoints=1000"]
    run = tmp_path / "ddp"
    done = _torchrun([*args, "--out", str(run)], _free_port())
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("pretrain done") == 1  # rank 0 speaks for the run

    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if "loss" in r]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) >= 4  # one writer: each step once

    # The first step sees the same global batch, augmentation and weights as one process: the same loss.
    from synth.lexicon import load_lexicon

    config = tiny_config(bert)
    single = tmp_path / "single"
    train_stage(config, [data], single, load_lexicon(lexicon_path), stop_at=1, device="cpu")
    first = json.loads((single / "metrics.jsonl").read_text().splitlines()[0])
    assert first["step"] == 1 and abs(first["loss"] - records[0]["loss"]) < 1e-5

    # Resume under torchrun from the second step's checkpoint: the same final weights as the unbroken run.
    resumed = tmp_path / "resumed"
    shutil.copytree(run, resumed)
    for name in ("model.safetensors", "model.json"):
        (resumed / name).unlink()
    shutil.rmtree(resumed / "checkpoints")
    shutil.copytree(run / "checkpoints", resumed / "checkpoints", dirs_exist_ok=True,
                    ignore=lambda folder, names: [n for n in names if n.startswith("step-") and n != "step-00000002"
                                                  or n == "LATEST"])
    assert sorted(p.name for p in (resumed / "checkpoints").iterdir() if p.name.startswith("step-")) == ["step-00000002"]
    again = _torchrun([*args, "--out", str(resumed), "--resume", str(resumed / "checkpoints" / "step-00000002")],
                      _free_port())
    assert again.returncode == 0, again.stdout + again.stderr
    a, b = load_file(run / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key


@pytest.mark.slow  # make test-fast leaves it out
def test_sigterm_stops_at_a_checkpoint(bert, tmp_path):
    """What `timeout`, SLURM and Kubernetes send before a kill: finish the step, save, exit 130."""
    import signal
    import time

    lexicon_path = write_lexicon(tmp_path / "lexicon.tsv")
    data = write_shards(tmp_path / "train", per_id=2)
    run = tmp_path / "run"
    command = [sys.executable, "-m", "train", "pretrain", "--data", str(data), "--out", str(run), "--preset", "paper",
               "--text-encoder", str(bert), "--lexicon", str(lexicon_path), "--batch-size", "12", "--workers", "0",
               "--epochs", "1000", "--device", "cpu", "--set", "model.text.prefix=''",
               "--set", "model.image.image_height=32", "--set", "model.image.image_width=128"]
    proc = subprocess.Popen(command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = run / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.is_file() and metrics.read_text().count("\n") >= 2) and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "checkpoint saved" in err and "--resume latest" in err
    last = max(json.loads(line)["step"] for line in metrics.read_text().splitlines())
    assert (run / "checkpoints" / f"step-{last:08d}" / "state.json").is_file()
