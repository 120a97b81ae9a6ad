"""The run folder around the training loop (layout in `train.run.checkpoint`): what the run was made from
(config.json), whether a command may start or resume it, and its logs (metrics.jsonl, curves.png).
The loop itself is `train.run.trainer`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from hwkit.errors import UserError
from hwkit.files import sha256_file, write_atomic
from synth.dataset.manifest import config_differences, read_manifest
from synth.lexicon import Lexicon
from train.config import RunConfig, config_from_dict
from train.run.checkpoint import CHECKPOINTS, CONFIG, LATEST, CheckpointError, latest_checkpoint, read_run_config
from train.run.data import find_shards

METRICS = "metrics.jsonl"
CURVES = "curves.png"
_RECORDED = ("config", "data", "lexicon", "text_encoder", "init")  # what a resume must match


class TrainingError(UserError, RuntimeError):
    """Training cannot start or go on; the message names the cause and the fix."""


def data_fingerprint(roots: Sequence[Path]) -> list[dict]:
    """What identifies the training data: each dataset's manifest fingerprint, else its shard names and sizes."""
    out = []
    for root in roots:
        root = Path(root).resolve()
        find_shards(root)  # a missing, empty or unfinished dataset is named before anything else
        manifest = read_manifest(root) if root.is_dir() else None
        if manifest is not None:
            out.append({"path": str(root), "fingerprint": manifest["fingerprint"]})
        else:
            out.append({"path": str(root), "shards": [[p.name, p.stat().st_size] for p in find_shards(root)]})
    return out


def provenance(config: RunConfig, data: Sequence[Path], lexicon: Lexicon, encoder: Path, init: Path | None) -> dict:
    """config.json: the config, the data, lexicon and text encoder by checksum, the --init run, versions."""
    weights = sorted(encoder.glob("*.safetensors")) or sorted(encoder.glob("*.bin"))
    record = {
        "config": config.to_dict(),
        "data": data_fingerprint(data),
        "lexicon": {"file": lexicon.path.name, "sha256": lexicon.sha256},
        "text_encoder": {"path": str(encoder), "weights_sha256": {p.name: sha256_file(p) for p in weights}},
        "init": None if init is None else str(Path(init).resolve()),
        "versions": {"torch": torch.__version__},
    }
    return json.loads(json.dumps(record))  # as config.json will read back (tuples become lists)


def check_resume(run: Path, record: dict) -> None:
    """Refuse to resume `run` with a command whose provenance differs from the one it started with."""
    old = read_run_config(run)
    # through the dataclasses and back: keys added to the config since the run started take their defaults
    old["config"] = json.loads(json.dumps(config_from_dict(old["config"], str(run)).to_dict()))
    diffs = config_differences({k: old.get(k) for k in _RECORDED}, {k: record[k] for k in _RECORDED})
    if diffs:
        shown = ", ".join(diffs[:4]) + (f" and {len(diffs) - 4} more" if len(diffs) > 4 else "")
        raise TrainingError(f"{run}: cannot resume: this command differs from the run's {CONFIG} in {shown}; "
                            "resume with the original settings or start a new `out`")


def prepare_out(out: Path, resume: str | None) -> Path | None:
    """The checkpoint to resume from (None for a fresh run), refusing to reuse a non-empty folder."""
    if resume is None:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise TrainingError(f"{out} already exists and is not empty; pass `resume='latest'` to continue that run, "
                                "or choose another `out`")
        return None
    if resume == "latest":
        if (out / CONFIG).is_file() and not (out / CHECKPOINTS / LATEST).is_file():
            return None  # the run stopped before its first checkpoint (diverged or killed): start it again here
        return latest_checkpoint(out)
    path = Path(resume)
    if not (path / "state.json").is_file():
        raise CheckpointError(f"{path}: not a checkpoint folder (expected {out}/checkpoints/step-N)")
    return path


def start_fresh(out: Path, record: dict) -> None:
    """A new run (or the restart of one that saved no checkpoint): config.json written, metrics cleared."""
    out.mkdir(parents=True, exist_ok=True)
    (out / METRICS).unlink(missing_ok=True)
    write_atomic(out / CONFIG, json.dumps(record, indent=1) + "\n")


def log(out: Path, record: dict) -> None:
    """One line of metrics.jsonl."""
    with open(out / METRICS, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def trim_metrics(out: Path, step: int) -> None:
    """After a resume from step N, drop logged records past N: they belong to the abandoned continuation."""
    path = out / METRICS
    if not path.is_file():
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= step]
    write_atomic(path, "".join(line + "\n" for line in kept))


def plot_curves(metrics: Path, png: Path) -> None:
    """Loss terms, learning rate, temperature and (with --val) held-out Acc@1 against the step, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in metrics.read_text(encoding="utf-8").splitlines() if line.strip()]
    steps = [r for r in records if "loss" in r]
    if not steps:
        return
    epochs = [r for r in records if "epoch_done" in r]
    scored = [r for r in epochs if "val_acc1" in r]
    x = [r["step"] for r in steps]
    fig, axes = plt.subplots(1, 4 if scored else 3, figsize=(17 if scored else 13, 3.6), constrained_layout=True)
    for key in ("loss", "itc", "v2p", "t2p", "inv"):
        if key in steps[0]:
            axes[0].plot(x, [r[key] for r in steps], label=key, linewidth=1)
    if epochs:
        axes[0].plot([r["step"] for r in epochs], [r["loss_mean"] for r in epochs], "o-", label="epoch mean")
    axes[0].set(title="loss", xlabel="step")
    axes[0].legend()
    axes[1].plot(x, [r["lr"] for r in steps])
    axes[1].set(title="learning rate", xlabel="step")
    axes[2].plot(x, [r["temperature"] for r in steps])
    axes[2].set(title="temperature τ", xlabel="step")
    if scored:
        at = [r["step"] for r in scored]
        keys = [k for k in scored[-1] if k.startswith("val_acc1_")] + ["val_cross_acc1"]
        for key in keys:
            if key in scored[-1]:
                label = "cross-lingual mean" if key == "val_cross_acc1" else key.removeprefix("val_acc1_")
                axes[3].plot(at, [r.get(key, float("nan")) for r in scored], "o-", label=label, markersize=3)
        axes[3].set(title="held-out Acc@1 (--val)", xlabel="step", ylim=(0, 1))
        axes[3].legend()
    tmp = png.with_name(f".{png.name}.tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(png)
