"""One training stage: shards in, a run folder out (see `train.checkpoint` for its layout).

Pre-training and fine-tuning are the same loop; they differ only in their stage config and in where the
weights start (random, or `init` = a previous run). Every step:

    lr(step) → forward (bf16 autocast on CUDA) → RetrievalLoss → backward → finite check → clip → AdamW → clamp τ

Determinism: the batch order depends only on (seed, epoch), augmentation on (seed, epoch, batch), dropout on
the torch RNG saved in each checkpoint, and the learning rate is a pure function of the step. So a run
stopped after any checkpoint and resumed reaches the same weights as one that never stopped (on CPU,
bit-for-bit; tested).
"""

from __future__ import annotations

import json
import math
import signal
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import numpy as np
import torch

from hwkit.errors import UserError
from hwkit.files import sha256_file, write_atomic
from synth.lexicon import Lexicon
from synth.manifest import config_differences, read_manifest
from train.checkpoint import (
    CHECKPOINTS,
    CONFIG,
    LATEST,
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
from train.config import RunConfig, config_from_dict
from train.data import BatchDataset, EpochBatches, ShardSet, batch_loader, decode_all, find_shards
from train.distributed import Dist, init_distributed
from train.losses import RetrievalLoss
from train.model import DualEncoder, resolve_text_encoder
from train.sampler import CoOccurrenceSampler, SamplerConfig
from train.validate import ValidationSet, recalibrate_bn

METRICS = "metrics.jsonl"
CURVES = "curves.png"
VAL_BN_BATCHES = 8  # training batches re-estimating BN statistics for each validation (train.validate)


class TrainingError(UserError, RuntimeError):
    """Training cannot start or go on; the message names the cause and the fix."""


@dataclass
class StageResult:
    run: Path
    steps: int
    epochs_done: int
    finished: bool           # False when stopped early (stop_at, Ctrl-C); resume with --resume latest
    images_per_second: float
    seconds: float
    last_loss: float


class TextGallery:
    """The lexicon texts of the training rows, one column per distinct (semantic ID, text), for the prototype
    objective and for L_v2t against the whole lexicon (`loss.negatives: lexicon`): `texts` (N), `ids` (N,) the
    semantic ID of each column, `index` (rows,) the column of each row's own text. A homograph ("pie" is an
    English and a Spanish word of two IDs) is one column per ID: its prototype is the ID's, not a blend."""

    def __init__(self, row_texts: np.ndarray, semantic_ids: np.ndarray) -> None:
        texts, text_of_row = np.unique(row_texts.astype(str), return_inverse=True)
        pairs, index = np.unique(np.stack([semantic_ids, text_of_row.reshape(-1)]), axis=1, return_inverse=True)
        self.index = index.reshape(-1)
        self.ids = pairs[0]  # sorted: np.unique orders the pairs by ID first
        self.texts: list[str] = texts[pairs[1]].tolist()
        self.semantic_ids = semantic_ids
        starts = np.flatnonzero(np.r_[True, self.ids[1:] != self.ids[:-1]])
        self.columns_of_id = dict(zip(self.ids[starts].tolist(), np.split(np.arange(len(self.ids)), starts[1:]),
                                      strict=True))

    def positives(self, rows: np.ndarray, label_aware: bool) -> np.ndarray:
        """(B, N) boolean: each row's own text, and with `label_aware` every text of its semantic ID."""
        mask = np.zeros((len(rows), len(self.texts)), dtype=bool)
        mask[np.arange(len(rows)), self.index[rows]] = True
        if label_aware:
            for i, y in enumerate(self.semantic_ids[rows].tolist()):
                mask[i, self.columns_of_id[y]] = True
        return mask


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


def _provenance(config: RunConfig, data: Sequence[Path], lexicon: Lexicon, encoder: Path, init: Path | None) -> dict:
    weights = sorted(encoder.glob("*.safetensors")) or sorted(encoder.glob("*.bin"))
    provenance = {
        "config": config.to_dict(),
        "data": data_fingerprint(data),
        "lexicon": {"file": lexicon.path.name, "sha256": lexicon.sha256},
        "text_encoder": {"path": str(encoder), "weights_sha256": {p.name: sha256_file(p) for p in weights}},
        "init": None if init is None else str(Path(init).resolve()),
        "versions": {"torch": torch.__version__},
    }
    return json.loads(json.dumps(provenance))  # as config.json will read back (tuples become lists)


def _check_resume(run: Path, provenance: dict) -> None:
    old = read_run_config(run)
    # through the dataclasses and back: keys added to the config since the run started take their defaults
    old["config"] = json.loads(json.dumps(config_from_dict(old["config"], str(run)).to_dict()))
    diffs = config_differences({k: old.get(k) for k in ("config", "data", "lexicon", "text_encoder", "init")},
                               {k: provenance[k] for k in ("config", "data", "lexicon", "text_encoder", "init")})
    if diffs:
        shown = ", ".join(diffs[:4]) + (f" and {len(diffs) - 4} more" if len(diffs) > 4 else "")
        raise TrainingError(f"{run}: cannot resume: this command differs from the run's {CONFIG} in {shown}; "
                            "resume with the original settings or start a new --out")


def _prepare_out(out: Path, resume: str | None) -> Path | None:
    """The checkpoint to resume from (None for a fresh run), refusing to reuse a non-empty folder."""
    if resume is None:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise TrainingError(f"{out} already exists and is not empty; pass --resume latest to continue that run, "
                                "or choose another --out")
        return None
    if resume == "latest":
        if (out / CONFIG).is_file() and not (out / CHECKPOINTS / LATEST).is_file():
            return None  # the run stopped before its first checkpoint (diverged or killed): start it again here
        return latest_checkpoint(out)
    path = Path(resume)
    if not (path / "state.json").is_file():
        raise CheckpointError(f"{path}: not a checkpoint folder (expected {out}/checkpoints/step-N)")
    return path


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


def _log(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def _trim_metrics(path: Path, step: int) -> None:
    """After a resume from step N, drop logged records past N: they belong to the abandoned continuation."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= step]
    write_atomic(path, "".join(line + "\n" for line in kept))


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
    interruption would; `val` is a held-out set scored every `config.val_every` epochs (`train.validate`),
    logged with the epoch's mean loss; `on_start(total_steps, start_step)`, `on_step(record)` and
    `on_epoch(record)` feed a progress display.

    Under torchrun (WORLD_SIZE > 1) every rank runs this with the same arguments: each takes its slice of
    every global batch, the loss sees the gathered global batch (`train.distributed`), and only rank 0
    writes the run folder and calls the callbacks."""
    ddp = init_distributed(device)
    try:
        return _train_stage(config, data, Path(out), lexicon, ddp, init, resume, stop_at, val,
                            (on_start, on_step, on_epoch))
    finally:
        ddp.close()


def _train_stage(config: RunConfig, data: Sequence[Path], out: Path, lexicon: Lexicon, ddp: Dist,
                 init: Path | None, resume: str | None, stop_at: int | None, val: Sequence[Path] | None,
                 callbacks: tuple) -> StageResult:
    on_start, on_step, on_epoch = callbacks
    if config.batch.batch_size % ddp.world:
        raise TrainingError(f"batch.batch_size {config.batch.batch_size} does not divide over {ddp.world} processes; "
                            f"use a multiple of {ddp.world}")
    checkpoint = _prepare_out(out, resume)
    ddp.barrier()  # every rank has checked --out before rank 0 writes into it
    dev = ddp.device
    encoder = resolve_text_encoder(config.model.text.model_path)
    provenance = _provenance(config, data, lexicon, encoder, init)
    if checkpoint is not None:
        _check_resume(out, provenance)

    shards = ShardSet.load(data, lexicon)
    sampler = CoOccurrenceSampler(shards.semantic_ids, shards.langs,
                                  SamplerConfig(config.batch.batch_size, config.batch.per_id, config.seed))
    per_epoch = len(sampler)
    if per_epoch == 0:
        raise TrainingError(f"{len(shards):,} rows is fewer than one batch of {config.batch.batch_size}; "
                            "lower batch.batch_size (--batch-size)")
    total = config.optim.epochs * per_epoch
    if config.optim.max_steps:
        total = min(total, config.optim.max_steps)

    torch.manual_seed(config.seed)
    model = DualEncoder(config.model, encoder)
    if init is not None:
        _load_init(model, Path(init), config)
    model.to(dev)
    net = ddp.wrap(model, model.frozen_text_keys())  # DDP under torchrun, else the model itself
    encoder_scale = config.optim.encoder_lr / config.optim.lr if config.optim.encoder_lr else 1.0
    optimizer = torch.optim.AdamW(param_groups(model, config.optim.weight_decay, encoder_scale), lr=config.optim.lr,
                                  betas=config.optim.betas)
    loss_fn = RetrievalLoss(config.loss.use_v2t, config.loss.use_t2v, config.loss.use_inv, config.loss.lam,
                            config.loss.label_aware, objective=config.loss.objective, align=config.loss.align)
    prototypes = config.loss.objective == "prototype"
    gallery = TextGallery(shards.texts, shards.semantic_ids) \
        if prototypes or config.loss.negatives == "lexicon" else None
    state = TrainState()
    if checkpoint is not None:
        weights, optim_state, state, rng = read_checkpoint(checkpoint)
        model.load_saved_state(weights, str(checkpoint))
        optimizer.load_state_dict(optim_state)
        if ddp.main:
            _trim_metrics(out / METRICS, state.step)
    elif ddp.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / METRICS).unlink(missing_ok=True)  # a restart of a run that saved no checkpoint logs afresh
        write_atomic(out / CONFIG, json.dumps(provenance, indent=1) + "\n")
    model.text.precompute(sorted(set(shards.texts.tolist())))

    height, width, crop = config.model.image.image_height, config.model.image.image_width, config.model.image.crop
    dataset = BatchDataset(shards, height, width, config.data.augment, config.seed, config.data.augment_level, crop,
                           decode_all(shards, height, width, crop))
    validation = ValidationSet(val, lexicon, height, width, config.val_images, crop) if val else None

    def first_batches(epoch: int, n: int) -> Iterable[torch.Tensor]:
        """The images of the first `n` global batches of `epoch` (this rank's slices), on the device."""
        sampler.set_epoch(epoch)
        loader = batch_loader(dataset, EpochBatches(list(sampler)[:n], epoch, 0, ddp.rank, ddp.world),
                              config.data.workers)
        return (b["images"].to(dev) for b in loader)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if checkpoint is not None:
        restore_rng(rng)  # last: filling the text cache runs the (dropout-enabled) top layers
    if ddp.rank:  # other ranks draw their own dropout masks (rank 0's stream is the one checkpoints keep)
        torch.manual_seed(hash((config.seed, state.step, ddp.rank)) % 2**63)
    main = ddp.main
    if on_start and main:
        on_start(total, state.step)
    started, images, loss_value = time.perf_counter(), 0, state.loss
    model.train()
    with _Interrupt() as interrupt:

        def should_stop() -> bool:
            return state.step >= total or (stop_at is not None and state.step >= stop_at) or \
                ddp.any(interrupt.requested)

        while state.step < total:
            sampler.set_epoch(state.epoch)
            batches = list(sampler)
            loader = batch_loader(dataset, EpochBatches(batches, state.epoch, state.batch, ddp.rank, ddp.world),
                                  config.data.workers)
            epoch_losses = []
            tick = time.perf_counter()
            for batch in loader:
                rows = batch["rows"].numpy()  # this rank's slice of the global batch
                lr = lr_at(state.step, total, config)
                for group in optimizer.param_groups:
                    group["lr"] = lr * group.get("lr_scale", 1.0)  # absent in checkpoints of older runs
                sids = torch.as_tensor(shards.semantic_ids[rows], device=dev)
                extra = {} if gallery is None else {"gallery": gallery.texts,
                                                    "text_index": torch.as_tensor(gallery.index[rows], device=dev)}
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                    outputs = net(batch["images"].to(dev, non_blocking=True), shards.texts[rows].tolist(), sids,
                                  **extra)
                outputs = ddp.gather_rows({**outputs, "rows": torch.as_tensor(rows, device=dev)})
                global_rows = outputs.pop("rows").cpu().numpy()
                if prototypes:
                    outputs["gallery_ids"] = torch.as_tensor(gallery.ids, device=dev)
                elif gallery is not None:
                    outputs["gallery_positives"] = torch.as_tensor(
                        gallery.positives(global_rows, config.loss.label_aware), device=dev)
                terms = loss_fn(**{k: (v.float() if k.endswith("embeds") else v) for k, v in outputs.items()})
                optimizer.zero_grad(set_to_none=True)
                terms["loss"].backward()
                norm = float(torch.nn.utils.clip_grad_norm_(trainable, config.optim.grad_clip or float("inf")))
                loss_value = float(terms["loss"].detach())
                if not (math.isfinite(loss_value) and math.isfinite(norm)):
                    _diverged(out, state, loss_value, norm)
                optimizer.step()
                model.logit_scale.clamp_()
                state.step, state.batch, state.loss = state.step + 1, state.batch + 1, loss_value
                images += len(global_rows)
                now = time.perf_counter()
                record = {"step": state.step, "epoch": state.epoch, "lr": lr, "grad_norm": norm,
                          "temperature": 1.0 / float(outputs["logit_scale"].detach()),
                          "images_per_s": len(global_rows) / (now - tick), **{k: float(v.detach()) for k, v in terms.items()}}
                tick = now
                epoch_losses.append(loss_value)
                if main:
                    _log(out / METRICS, record)
                if on_step and main:
                    on_step(record)
                done_epoch = state.batch == per_epoch
                if done_epoch:
                    state.epoch, state.batch = state.epoch + 1, 0
                    summary = {"step": state.step, "epoch_done": state.epoch, "loss_mean": float(np.mean(epoch_losses))}
                    if validation is not None and (state.epoch % config.val_every == 0 or state.step >= total):
                        summary.update(validation.score(model, first_batches(state.epoch, VAL_BN_BATCHES)))
                    if main:
                        _log(out / METRICS, summary)
                    if on_epoch and main:
                        on_epoch(summary)
                stop = should_stop()
                every = config.checkpoint_every and state.step % config.checkpoint_every == 0
                if (done_epoch or every or stop) and main:
                    save_checkpoint(out, model.saved_state(), optimizer, state, config.keep_checkpoints)
                if done_epoch and main:
                    plot_curves(out / METRICS, out / CURVES)
                if stop or done_epoch:
                    break
            if should_stop():
                break
    seconds = time.perf_counter() - started
    finished = state.step >= total
    if finished:
        if config.precise_bn_batches:  # the first batches of the epoch that would come next
            recalibrate_bn(model.image, first_batches(state.epoch, config.precise_bn_batches))
        if main:
            save_final(out, model.saved_state(), {"steps": state.step, "epochs": state.epoch, "loss": state.loss,
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
        raise TrainingError(f"--init {init}: that run's model differs from this config in {', '.join(diffs[:4])}; "
                            "use the same preset (or model overrides) for both stages")
    model.load_saved_state(weights, str(init))


def _diverged(out: Path, state: TrainState, loss: float, norm: float) -> None:
    try:
        last = f"the last good checkpoint is {latest_checkpoint(out)}"
    except CheckpointError:
        last = "no checkpoint was written yet, so --resume latest starts the run again from step 0"
    raise TrainingError(f"training diverged at step {state.step + 1} (epoch {state.epoch}): loss {loss}, "
                        f"gradient norm {norm}; nothing was saved from this step, {last}; "
                        "lower optim.lr or set optim.grad_clip, then --resume latest")


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
