"""Run folders and checkpoints: safetensors for every tensor (weights, optimizer moments, RNG state), JSON
for everything else. Nothing is pickled, so a checkpoint can be opened without trusting its author.

    RUN/
      config.json                      resolved RunConfig + provenance (data, text encoder, init)
      metrics.jsonl                    one JSON object per step and per epoch
      curves.png                       training curves
      model.safetensors, model.json    the final weights (after the last epoch) and their summary
      checkpoints/
        LATEST                         name of the newest complete checkpoint
        step-00000120/
          model.safetensors            DualEncoder.saved_state()
          optimizer.safetensors        AdamW moments, flattened as state.<param index>.<name>; torch RNG
          state.json                   step, epoch, position in the epoch, param groups, file checksums

A checkpoint folder is written under a temporary name and renamed into place, and LATEST is rewritten only
after that, so an interrupted save leaves the previous checkpoint intact. Loading checks every file against
the checksums in state.json, so a truncated or edited file is reported by name.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from hwkit.errors import UserError
from hwkit.files import sha256_file, write_atomic

FORMAT = "train-checkpoint/1"
CHECKPOINTS = "checkpoints"
LATEST = "LATEST"
CONFIG = "config.json"
FINAL = "model.safetensors"
FINAL_INFO = "model.json"


class CheckpointError(UserError, ValueError):
    """A checkpoint or run folder that cannot be used, with the path and the fix named."""


@dataclass
class TrainState:
    step: int = 0            # optimizer steps done
    epoch: int = 0           # current epoch (0-based)
    batch: int = 0           # batches of `epoch` done
    loss: float = float("nan")

    def to_dict(self) -> dict:
        return {"step": self.step, "epoch": self.epoch, "batch": self.batch, "loss": self.loss}


def step_name(step: int) -> str:
    return f"step-{step:08d}"


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, state in sd["state"].items():
        for name, value in state.items():
            if torch.is_tensor(value):
                tensors[f"state.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_state(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("state."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for key, value in meta["scalars"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(run: Path, model_state: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
                    state: TrainState, keep: int) -> Path:
    """Write checkpoints/step-N atomically, point LATEST at it, and prune to the newest `keep`."""
    root = run / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_name(state.step)
    tmp = root / f".{final.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in model_state.items()}, str(tmp / "model.safetensors"))
        tensors, meta = _optimizer_tensors(optimizer)
        tensors["rng.torch"] = torch.get_rng_state()
        if torch.cuda.is_available():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                tensors[f"rng.cuda.{i}"] = s
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        files = {name: sha256_file(tmp / name) for name in ("model.safetensors", "optimizer.safetensors")}
        info = {"format": FORMAT, **state.to_dict(), "optimizer": meta, "files": files}
        (tmp / "state.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write_atomic(root / LATEST, final.name + "\n")
    steps = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in steps[:-keep]:
        shutil.rmtree(old)
    return final


def latest_checkpoint(run: Path) -> Path:
    pointer = run / CHECKPOINTS / LATEST
    if not pointer.is_file():
        raise CheckpointError(f"{run}: no checkpoint to resume from (no {CHECKPOINTS}/{LATEST}); start without `resume`")
    return run / CHECKPOINTS / pointer.read_text(encoding="utf-8").strip()


def _checked_file(folder: Path, name: str, digest: str | None) -> dict[str, torch.Tensor]:
    path = folder / name
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; the checkpoint is incomplete, resume from an earlier one")
    if digest is not None and sha256_file(path) != digest:
        raise CheckpointError(f"{path}: checksum mismatch (truncated or modified); resume from an earlier checkpoint")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: unreadable safetensors file ({exc}); resume from an earlier checkpoint") from None


def read_checkpoint(folder: Path) -> tuple[dict[str, torch.Tensor], dict, TrainState, dict[str, torch.Tensor]]:
    """(model state, optimizer state dict, train state, rng tensors) of a step checkpoint, checksums checked."""
    info_path = folder / "state.json"
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{folder}: not a checkpoint (no state.json)") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{info_path}: damaged JSON ({exc.msg}); resume from an earlier checkpoint") from None
    if info.get("format") != FORMAT:
        raise CheckpointError(f"{folder}: checkpoint format {info.get('format')!r}, expected {FORMAT}")
    model = _checked_file(folder, "model.safetensors", info["files"].get("model.safetensors"))
    tensors = _checked_file(folder, "optimizer.safetensors", info["files"].get("optimizer.safetensors"))
    rng = {k: v for k, v in tensors.items() if k.startswith("rng.")}
    optimizer = _optimizer_state({k: v for k, v in tensors.items() if not k.startswith("rng.")}, info["optimizer"])
    state = TrainState(info["step"], info["epoch"], info["batch"], info.get("loss", float("nan")))
    return model, optimizer, state, rng


def restore_rng(rng: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(rng["rng.torch"])
    cuda = [rng[k] for k in sorted(k for k in rng if k.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def save_final(run: Path, model_state: dict[str, torch.Tensor], summary: dict) -> None:
    tmp = run / f".{FINAL}.{os.getpid()}.tmp"
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in model_state.items()}, str(tmp))
        os.replace(tmp, run / FINAL)
    finally:
        tmp.unlink(missing_ok=True)
    summary = {**summary, "sha256": sha256_file(run / FINAL)}
    write_atomic(run / FINAL_INFO, json.dumps(summary, indent=1) + "\n")


def read_run_config(run: Path) -> dict:
    path = run / CONFIG
    if not path.is_file():
        raise CheckpointError(f"{run}: not a training run (no {CONFIG}); pass the `out` folder of a training run")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: damaged JSON ({exc.msg})") from None


def model_weights(target: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """(run folder, weights) for a run folder (its final model, else its newest checkpoint) or a checkpoint."""
    target = Path(target)
    if (target / "state.json").is_file():
        return target.parent.parent, read_checkpoint(target)[0]
    if not target.is_dir():
        raise CheckpointError(f"run not found: {target}")
    read_run_config(target)
    if (target / FINAL).is_file():
        info_path = target / FINAL_INFO
        digest = json.loads(info_path.read_text(encoding="utf-8")).get("sha256") if info_path.is_file() else None
        return target, _checked_file(target, FINAL, digest)
    return target, read_checkpoint(latest_checkpoint(target))[0]
