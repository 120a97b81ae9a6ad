"""One training stage: shards in, a run folder out (see `train.run.checkpoint` for its layout).

Pre-training and fine-tuning are the same loop; they differ only in their stage config and in where the
weights start (random, or `init` = a previous run). Every step:

    lr(step) → forward (bf16 autocast on CUDA) → RetrievalLoss (+ β·L_PHOC) → backward → finite check → clip → AdamW → clamp τ

Determinism: the batch order depends only on (seed, epoch), augmentation on (seed, epoch, batch), dropout on
the torch RNG saved in each checkpoint, and the learning rate is a pure function of the step. So a run
stopped after any checkpoint and resumed reaches the same weights as one that never stopped (on CPU,
bit-for-bit; tested).
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import numpy as np
import torch

from synth.dataset.manifest import config_differences
from synth.lexicon import Lexicon
from train.config import RunConfig
from train.objectives.gallery import TextGallery
from train.objectives.losses import RetrievalLoss
from train.objectives.phoc import PhocTargets, phoc_loss
from train.objectives.sampler import CoOccurrenceSampler, SamplerConfig
from train.run.checkpoint import (
    CheckpointError,
    TrainState,
    latest_checkpoint,
    model_weights,
    read_checkpoint,
    read_run_config,
    restore_rng,
    save_checkpoint,
    save_final,
    step_name,
)
from train.run.data import BatchDataset, EpochBatches, ShardSet, batch_loader, decode_all
from train.run.distributed import Dist, init_distributed
from train.run.folder import (
    CURVES,
    METRICS,
    TrainingError,
    check_resume,
    log,
    plot_curves,
    prepare_out,
    provenance,
    start_fresh,
    trim_metrics,
)
from train.run.validate import ValidationSet, recalibrate_bn
from train.towers.model import DualEncoder, resolve_text_encoder

VAL_BN_BATCHES = 8  # training batches re-estimating BN statistics for each validation (train.run.validate)


@dataclass
class StageResult:
    run: Path
    steps: int
    epochs_done: int
    finished: bool           # False when stopped early (stop_at, Ctrl-C); resume with --resume latest
    images_per_second: float
    seconds: float
    last_loss: float


def lr_at(step: int, total: int, c: RunConfig) -> float:
    """Linear warm-up over the first ⌈warmup·total⌉ steps, then cosine decay to lr·min_lr_ratio."""
    o = c.optim
    warm = math.ceil(o.warmup * total)
    if step < warm:
        return o.lr * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return o.lr * (o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def param_groups(model: torch.nn.Module, weight_decay: float, encoder_lr_scale: float = 1.0) -> list[dict]:
    """AdamW groups: weight decay on matrices and kernels only — not on biases, norms or the temperature; the
    unlocked layers of the pre-trained text encoder (`text.model.*`) in groups of their own whose rate is
    `encoder_lr_scale` × the schedule's (the other parameters start from scratch and take the full rate)."""
    groups = {(decay, encoder): [] for decay in (True, False) for encoder in (False, True)}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups[(p.ndim >= 2 and "logit_scale" not in name, name.startswith("text.model."))].append(p)
    return [{"params": params, "weight_decay": weight_decay if decay else 0.0,
             "lr_scale": encoder_lr_scale if encoder else 1.0}
            for (decay, encoder), params in groups.items() if params or not encoder]


class _Interrupt:
    """First Ctrl-C (SIGINT) or SIGTERM — what `timeout`, SLURM and Kubernetes send before a kill — finishes
    the current step, saves a checkpoint and stops. A second SIGINT stops at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> Self:
        try:
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        except ValueError:  # not the main thread: leave signals alone
            self._previous = {}
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        for s, previous in self._previous.items():
            signal.signal(s, previous)


def train_stage(
    config: RunConfig,
    data: Sequence[Path],
    out: Path,
    lexicon: Lexicon,
    *,
    init: Path | None = None,
    resume: str | None = None,
    device: str | None = None,
    stop_at: int | None = None,
    val: Sequence[Path] | None = None,
    on_step: Callable[[dict], None] | None = None,
    on_start: Callable[[int, int], None] | None = None,
    on_epoch: Callable[[dict], None] | None = None,
) -> StageResult:
    """Run (or resume) one stage. `stop_at` ends after that many total steps with a checkpoint, as an
    interruption would; `val` is a held-out set scored every `config.val_every` epochs (`train.run.validate`),
    logged with the epoch's mean loss; `on_start(total_steps, start_step)`, `on_step(record)` and
    `on_epoch(record)` feed a progress display.

    Under torchrun (WORLD_SIZE > 1) every rank runs this with the same arguments: each takes its slice of
    every global batch, the loss sees the gathered global batch (`train.run.distributed`), and only rank 0
    writes the run folder and calls the callbacks."""
    ddp = init_distributed(device)
    try:
        return _train_stage(config, data, Path(out), lexicon, ddp, init, resume, stop_at, val,
                            (on_start, on_step, on_epoch))
    finally:
        ddp.close()


@dataclass
class _Stage:
    """What one stage's loop works with, built by `_set_up`."""

    config: RunConfig
    out: Path
    ddp: Dist
    shards: ShardSet
    sampler: CoOccurrenceSampler
    dataset: BatchDataset
    model: DualEncoder
    net: torch.nn.Module              # DDP under torchrun, else the model itself
    optimizer: torch.optim.Optimizer
    loss_fn: RetrievalLoss
    gallery: TextGallery | None       # the training texts, for the prototype objective or lexicon negatives
    phoc: PhocTargets | None          # each row's PHOC target, when the auxiliary loss is on
    validation: ValidationSet | None
    state: TrainState
    total: int                        # steps of the whole stage
    per_epoch: int
    trainable: list[torch.nn.Parameter]

    def loader(self, epoch: int, batches: list[list[int]], start: int = 0):
        """This rank's slices of `batches` (global batches of `epoch`), from batch `start` on."""
        return batch_loader(self.dataset, EpochBatches(batches, epoch, start, self.ddp.rank, self.ddp.world),
                            self.config.data.workers)

    def first_batches(self, epoch: int, n: int) -> Iterable[torch.Tensor]:
        """The images of the first `n` global batches of `epoch` (this rank's slices), on the device."""
        self.sampler.set_epoch(epoch)
        return (b["images"].to(self.ddp.device) for b in self.loader(epoch, list(self.sampler)[:n]))

    def step(self, batch: dict, tick: float) -> tuple[dict, int]:
        """One optimiser step on a batch: its metrics record and the global batch's row count."""
        c, dev, state = self.config, self.ddp.device, self.state
        rows = batch["rows"].numpy()  # this rank's slice of the global batch
        lr = lr_at(state.step, self.total, c)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)  # absent in checkpoints of older runs
        sids = torch.as_tensor(self.shards.semantic_ids[rows], device=dev)
        gallery = self.gallery
        extra = {} if gallery is None else {"gallery": gallery.texts,
                                            "text_index": torch.as_tensor(gallery.index[rows], device=dev)}
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            outputs = self.net(batch["images"].to(dev, non_blocking=True), self.shards.texts[rows].tolist(), sids,
                               **extra)
        outputs = self.ddp.gather_rows({**outputs, "rows": torch.as_tensor(rows, device=dev)})
        global_rows = outputs.pop("rows").cpu().numpy()
        if c.loss.objective == "prototype":
            outputs["gallery_ids"] = torch.as_tensor(gallery.ids, device=dev)
            if c.loss.galleries > 0:
                outputs["gallery_languages"] = torch.as_tensor(gallery.language_mask, device=dev)
        elif gallery is not None:
            outputs["gallery_positives"] = torch.as_tensor(gallery.positives(global_rows, c.loss.label_aware), device=dev)
        phoc_logits = outputs.pop("phoc_logits", None)
        terms = self.loss_fn(**{k: (v.float() if k.endswith("embeds") else v) for k, v in outputs.items()})
        if self.phoc is not None:
            terms["phoc"] = phoc_loss(phoc_logits, torch.as_tensor(self.phoc.of_rows(global_rows), device=dev))
            terms["loss"] = terms["loss"] + c.loss.phoc * terms["phoc"]
        self.optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        norm = float(torch.nn.utils.clip_grad_norm_(self.trainable, c.optim.grad_clip or float("inf")))
        loss_value = float(terms["loss"].detach())
        if not (math.isfinite(loss_value) and math.isfinite(norm)):
            _diverged(self.out, state, loss_value, norm)
        self.optimizer.step()
        self.model.logit_scale.clamp_()
        state.step, state.batch, state.loss = state.step + 1, state.batch + 1, loss_value
        record = {"step": state.step, "epoch": state.epoch, "lr": lr, "grad_norm": norm,
                  "temperature": 1.0 / float(outputs["logit_scale"].detach()),
                  "images_per_s": len(global_rows) / (time.perf_counter() - tick),
                  **{k: float(v.detach()) for k, v in terms.items()}}
        return record, len(global_rows)

    def end_epoch(self, losses: list[float]) -> dict:
        """Count the epoch done; its summary (mean loss, and the held-out scores when due)."""
        state = self.state
        state.epoch, state.batch = state.epoch + 1, 0
        summary = {"step": state.step, "epoch_done": state.epoch, "loss_mean": float(np.mean(losses))}
        if self.validation is not None and (state.epoch % self.config.val_every == 0 or state.step >= self.total):
            summary.update(self.validation.score(self.model, self.first_batches(state.epoch, VAL_BN_BATCHES)))
        return summary


def _set_up(config: RunConfig, data: Sequence[Path], out: Path, lexicon: Lexicon, ddp: Dist, init: Path | None,
            resume: str | None, val: Sequence[Path] | None) -> _Stage:
    """Check the command, write or check the run folder, and build the data, model and optimiser (resumed)."""
    if config.batch.batch_size % ddp.world:
        raise TrainingError(f"batch.batch_size {config.batch.batch_size} does not divide over {ddp.world} processes; "
                            f"use a multiple of {ddp.world}")
    checkpoint = prepare_out(out, resume)
    ddp.barrier()  # every rank has checked --out before rank 0 writes into it
    encoder = resolve_text_encoder(config.model.text.model_path)
    record = provenance(config, data, lexicon, encoder, init)
    if checkpoint is not None:
        check_resume(out, record)

    shards = ShardSet.load(data, lexicon)
    sampler = CoOccurrenceSampler(shards.semantic_ids, shards.langs,
                                  SamplerConfig(config.batch.batch_size, config.batch.per_id, config.seed))
    per_epoch = len(sampler)
    if per_epoch == 0:
        raise TrainingError(f"{len(shards):,} rows is fewer than one batch of {config.batch.batch_size}; "
                            "lower `batch.batch_size`")
    total = config.optim.epochs * per_epoch
    if config.optim.max_steps:
        total = min(total, config.optim.max_steps)

    torch.manual_seed(config.seed)
    model = DualEncoder(config.model, encoder, config.loss.phoc_buckets if config.loss.phoc else 0)
    if init is not None:
        _load_init(model, Path(init), config)
    model.to(ddp.device)
    net = ddp.wrap(model, model.frozen_text_keys())
    o, loss = config.optim, config.loss
    encoder_scale = o.encoder_lr / o.lr if o.encoder_lr else 1.0
    optimizer = torch.optim.AdamW(param_groups(model, o.weight_decay, encoder_scale), lr=o.lr, betas=o.betas)
    loss_fn = RetrievalLoss(loss.use_v2t, loss.use_t2v, loss.use_inv, loss.lam, loss.label_aware,
                            objective=loss.objective, align=loss.align, galleries=loss.galleries)
    gallery = TextGallery(shards.texts, shards.semantic_ids, shards.langs) \
        if loss.objective == "prototype" or loss.negatives == "lexicon" else None
    phoc = PhocTargets(shards.texts, loss.phoc_buckets) if loss.phoc else None
    state, rng = TrainState(), None
    if checkpoint is not None:
        weights, optim_state, state, rng = read_checkpoint(checkpoint)
        model.load_saved_state(weights, str(checkpoint))
        optimizer.load_state_dict(optim_state)
        if ddp.main:
            trim_metrics(out, state.step)
    elif ddp.main:
        start_fresh(out, record)
    model.text.precompute(sorted(set(shards.texts.tolist())))

    image = config.model.image
    dataset = BatchDataset(shards, image.image_height, image.image_width, config.data.augment, config.seed,
                           config.data.augment_level, image.crop,
                           decode_all(shards, image.image_height, image.image_width, image.crop))
    validation = ValidationSet(val, lexicon, image.image_height, image.image_width, config.val_images, image.crop) \
        if val else None
    if rng is not None:
        restore_rng(rng)  # last: filling the text cache runs the (dropout-enabled) top layers
    if ddp.rank:  # other ranks draw their own dropout masks (rank 0's stream is the one checkpoints keep)
        torch.manual_seed(hash((config.seed, state.step, ddp.rank)) % 2**63)
    return _Stage(config, out, ddp, shards, sampler, dataset, model, net, optimizer, loss_fn, gallery, phoc,
                  validation, state, total, per_epoch, [p for p in model.parameters() if p.requires_grad])


def _train_stage(config: RunConfig, data: Sequence[Path], out: Path, lexicon: Lexicon, ddp: Dist,
                 init: Path | None, resume: str | None, stop_at: int | None, val: Sequence[Path] | None,
                 callbacks: tuple) -> StageResult:
    on_start, on_step, on_epoch = callbacks
    s = _set_up(config, data, out, lexicon, ddp, init, resume, val)
    state, main = s.state, ddp.main
    if on_start and main:
        on_start(s.total, state.step)
    started, images, loss_value = time.perf_counter(), 0, state.loss
    s.model.train()
    with _Interrupt() as interrupt:

        def should_stop() -> bool:
            return state.step >= s.total or (stop_at is not None and state.step >= stop_at) or \
                ddp.any(interrupt.requested)

        while state.step < s.total:
            s.sampler.set_epoch(state.epoch)
            epoch_losses, tick = [], time.perf_counter()
            for batch in s.loader(state.epoch, list(s.sampler), state.batch):
                record, rows = s.step(batch, tick)
                tick, images, loss_value = time.perf_counter(), images + rows, state.loss
                epoch_losses.append(loss_value)
                if main:
                    log(out, record)
                    if on_step:
                        on_step(record)
                done_epoch = state.batch == s.per_epoch
                if done_epoch:
                    summary = s.end_epoch(epoch_losses)
                    if main:
                        log(out, summary)
                        if on_epoch:
                            on_epoch(summary)
                stop = should_stop()
                every = config.checkpoint_every and state.step % config.checkpoint_every == 0
                if (done_epoch or every or stop) and main:
                    save_checkpoint(out, s.model.saved_state(), s.optimizer, state, config.keep_checkpoints)
                if done_epoch and main:
                    plot_curves(out / METRICS, out / CURVES)
                if stop or done_epoch:
                    break
            if should_stop():
                break
    seconds = time.perf_counter() - started
    finished = state.step >= s.total
    if finished:
        if config.precise_bn_batches:  # the first batches of the epoch that would come next
            recalibrate_bn(s.model.image, s.first_batches(state.epoch, config.precise_bn_batches))
        if main:
            save_final(out, s.model.saved_state(), {"steps": state.step, "epochs": state.epoch, "loss": state.loss,
                                                    "checkpoint": step_name(state.step),
                                                    "model": config.to_dict()["model"]})  # what the weights fit
            plot_curves(out / METRICS, out / CURVES)
    ddp.barrier()  # the run folder is complete before any rank returns
    return StageResult(out, state.step, state.epoch, finished, images / seconds if seconds else 0.0, seconds, loss_value)


def _load_init(model: DualEncoder, init: Path, config: RunConfig) -> None:
    """Start from another run's weights, after checking both runs built the same model."""
    run, weights = model_weights(init)
    theirs = read_run_config(run)["config"]["model"]
    diffs = config_differences(theirs, config.to_dict()["model"], "model.")
    if diffs:
        raise TrainingError(f"`init` {init}: that run's model differs from this config in {', '.join(diffs[:4])}; "
                            "use the same preset (or model overrides) for both stages")
    model.load_saved_state(weights, str(init))


def _diverged(out: Path, state: TrainState, loss: float, norm: float) -> None:
    try:
        last = f"the last good checkpoint is {latest_checkpoint(out)}"
    except CheckpointError:
        last = "no checkpoint was written yet, so `resume='latest'` starts the run again from step 0"
    raise TrainingError(f"training diverged at step {state.step + 1} (epoch {state.epoch}): loss {loss}, "
                        f"gradient norm {norm}; nothing was saved from this step, {last}; "
                        "lower `optim.lr` or set `optim.grad_clip`, then `resume='latest'`")
