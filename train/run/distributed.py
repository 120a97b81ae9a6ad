"""Data-parallel training across processes: `torchrun --nproc_per_node N -m train pretrain ...`.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; without them everything here is a no-op and training runs
in one process as before. With them:

- each rank takes an equal contiguous slice of every global batch the co-occurrence sampler draws
  (`train.run.data.EpochBatches`), and augments it with its part of the batch's one random stream;
- the image and text embeddings (and the rows' labels) are gathered from all ranks in batch order, with
  their gradients routed back (`torch.distributed.nn.functional.all_gather`), so InfoNCE and L_INV see
  the whole global batch, as in one process;
- BatchNorm normalises over the global batch too: torch's SyncBatchNorm on GPUs, `GlobalBatchNorm2d`
  (below) on CPUs, where SyncBatchNorm refuses to run;
- DistributedDataParallel averages the parameter gradients. Each rank's loss is the whole global loss L,
  and the gather's backward sums the W ranks' copies, so the average is exactly ∇L.

So a step on W ranks computes the same loss and gradients as one process on the same global batch (tested
on CPU with gloo). Backends: NCCL when CUDA is used, gloo otherwise.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

from hwkit.errors import UserError

# The per-row outputs of DualEncoder.forward (and the trainer's extras) that are gathered across ranks.
ROW_KEYS = ("image_embeds", "text_embeds", "semantic_ids", "rows", "phoc_logits")


def launched() -> bool:
    """True in a process started by torchrun (or any launcher setting WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_main_process() -> bool:
    """Rank 0, or the only process: the one that writes files and prints."""
    return os.environ.get("RANK", "0") == "0"


@dataclass(frozen=True)
class Dist:
    """This process's place in the group (rank 0 of 1 when not launched by torchrun) and its collectives,
    each a no-op in one process."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False  # this process initialised the group and tears it down

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def any(self, flag: bool) -> bool:
        """True on every rank if it is True on any (a stop request must stop all ranks at the same step)."""
        if not self.active:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def gather_rows(self, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Concatenate the per-row outputs of all ranks in rank order; float tensors keep their gradients."""
        if not self.active:
            return outputs
        gathered = dict(outputs)
        for key in ROW_KEYS:
            t = outputs.get(key)
            if t is None:
                continue
            if t.is_floating_point():
                parts = torch.distributed.nn.functional.all_gather(t)
            else:
                parts = [torch.empty_like(t) for _ in range(self.world)]
                dist.all_gather(parts, t.contiguous())
            gathered[key] = torch.cat(parts)
        return gathered

    def wrap(self, model: nn.Module, frozen: Iterable[str] = ()) -> nn.Module:
        """`model` itself in one process; else its BatchNorm layers synchronised and the model wrapped in
        DistributedDataParallel. `frozen` names parameters identical on every rank that DDP need not
        broadcast (the text encoder's frozen ~470 MB)."""
        if not self.active:
            return model
        sync_batchnorm(model, self.device)
        DDP = nn.parallel.DistributedDataParallel
        DDP._set_params_and_buffers_to_ignore_for_model(model, sorted(frozen))
        return DDP(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


class DeviceError(UserError, ValueError):
    """A device this machine or torch build cannot give."""


def resolve_device(name: str | None) -> torch.device:
    """The device `name` names (default: cuda when available, else cpu), checked: a DeviceError naming the
    fix for a name torch does not know, or a CUDA device this machine or torch build does not have."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"`device` {name!r} is not a device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise DeviceError(f"`device` {name}: no CUDA device here (or a CPU build of torch); use `device='cpu'`")
        if device.index is not None and device.index >= count:
            raise DeviceError(f"`device` {name}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    elif device.type != "cpu":
        raise DeviceError(f"`device` {name!r}: only cpu and cuda devices are supported")
    return device


def init_distributed(device: str | None) -> Dist:
    """The process group from torchrun's environment, or a single-process Dist on `device`."""
    if not launched():
        return Dist(device=resolve_device(device))
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = resolve_device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(local)
    dev = torch.device("cuda", local) if cuda else torch.device("cpu")
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(minutes=30))
    return Dist(rank=rank, world=world, device=dev, owns_group=owns)


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training-mode statistics are over the batch of every rank (for CPU process groups,
    where torch's SyncBatchNorm raises). Per channel c over N·H·W values on all ranks:

        μ_c = Σx / n,   σ²_c = Σx² / n − μ_c²,   y = (x − μ_c) / √(σ²_c + ε) · γ_c + β_c

    The sums are all-reduced with autograd, so gradients flow through the statistics as in one process.
    Running statistics use the unbiased variance, as nn.BatchNorm2d does.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized()):
            return super().forward(x)
        count = torch.full((1,), x.numel() / x.shape[1], dtype=x.dtype, device=x.device)
        sums = torch.cat([x.sum(dim=(0, 2, 3)), (x * x).sum(dim=(0, 2, 3)), count])
        sums = torch.distributed.nn.functional.all_reduce(sums)
        c = x.shape[1]
        n = sums[-1]
        mean, var = sums[:c] / n, sums[c:2 * c] / n - (sums[:c] / n) ** 2
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(var.detach() * n / (n - 1), momentum)
        shape = (1, c, 1, 1)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        return y * self.weight.view(shape) + self.bias.view(shape) if self.affine else y


def sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """BatchNorm over the global batch: SyncBatchNorm on CUDA, GlobalBatchNorm2d elsewhere."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            synced = GlobalBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                       child.track_running_stats)
            synced.load_state_dict(child.state_dict())
            synced.train(child.training)
            synced.requires_grad_(any(p.requires_grad for p in child.parameters()))
            setattr(module, name, synced)
        else:
            sync_batchnorm(child, device)
    return module

