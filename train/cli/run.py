"""`train pretrain | finetune | info`: the two training stages and the model's size. Parsing and printing
only; the work is `train.run.trainer.train_stage`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from hwkit.errors import fail
from hwkit.progress import progress_bar
from synth.lexicon import load_lexicon
from train.cli.common import DataOpt, DeviceOpt, LexiconOpt, TextEncoderOpt, err, out
from train.config import ConfigError, load_config, preset_names

PAPER_IMAGE_TOWER = 1_290_000  # the reference paper's image-tower size (1.29 M parameters)

RunOpt = Annotated[Path, typer.Option("--out", help="Run folder: config, metrics, curves and checkpoints (must be new unless --resume).")]
PresetOpt = Annotated[str, typer.Option("--preset", help=f"Preset name ({', '.join(preset_names())}) or a YAML file.")]
EpochsOpt = Annotated[int | None, typer.Option("--epochs", min=1, help="Epochs (default: the preset's, in train/configs/PRESET.yaml).")]
BatchOpt = Annotated[int | None, typer.Option("--batch-size", min=2, help="Images per step, the global batch (default: the preset's).")]
LrOpt = Annotated[float | None, typer.Option("--lr", help="Peak learning rate (default: the preset's).")]
MaxStepsOpt = Annotated[int | None, typer.Option("--max-steps", min=1, help="Stop after this many steps (the LR schedule spans them).")]
LoaderWorkersOpt = Annotated[int | None, typer.Option("--workers", min=0, help="DataLoader processes decoding images (default: the preset's).")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Any config value, KEY=VALUE with a dotted key, e.g. loss.lam=0.5 (repeatable).")]
ValOpt = Annotated[list[Path] | None, typer.Option(
    "--val", help="Held-out shards scored at epoch ends (Acc@1 within and across languages) into metrics.jsonl and curves.png; repeatable.")]
ResumeOpt = Annotated[str | None, typer.Option("--resume", help="Continue --out from `latest` or a checkpoint folder.")]


@dataclass
class StageOptions:
    """One `train pretrain | finetune` command line, typed."""

    stage: str
    data: list[Path]
    run: Path
    preset: str = "cpu-small"
    text_encoder: Path | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    max_steps: int | None = None
    workers: int | None = None
    sets: list[str] | None = None
    val: list[Path] | None = None
    resume: str | None = None
    lexicon: Path | None = None
    device: str | None = None
    init: Path | None = None

    def overrides(self) -> dict[str, Any]:
        """The config values this command line sets: every --set, then the named options given."""
        found: dict[str, Any] = {}
        for item in self.sets or []:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set loss.lam=0.5")
            found[key.strip()] = yaml.safe_load(value)
        encoder = str(self.text_encoder.expanduser().resolve()) if self.text_encoder else None
        named = {"model.text.model_path": encoder, "optim.epochs": self.epochs, "batch.batch_size": self.batch_size,
                 "optim.lr": self.lr, "optim.max_steps": self.max_steps, "data.workers": self.workers}
        found.update({k: v for k, v in named.items() if v is not None})
        return found


def run_stage(o: StageOptions) -> None:
    from train.run.distributed import is_main_process, resolve_device
    from train.run.trainer import train_stage

    resolve_device(o.device)
    config = load_config(o.preset, o.stage, o.overrides())
    lexicon = load_lexicon(o.lexicon)
    bar = progress_bar(err, unit="steps")
    task, first = None, 0

    def on_start(total: int, start: int) -> None:
        # the bar counts this process's steps (a resumed run's rate and ETA stay true); the description
        # carries the run's global step
        nonlocal task, first
        first = start
        bar.start()
        task = bar.add_task(o.stage, total=total - start)

    def on_epoch(record: dict) -> None:
        if "val_acc1" in record:
            langs = " ".join(f"{k[-2:]} {v:.3f}" for k, v in record.items() if k.startswith("val_acc1_"))
            cross = f" · cross-lingual {record['val_cross_acc1']:.3f}" if "val_cross_acc1" in record else ""
            bar.console.print(f"epoch {record['epoch_done']}: held-out Acc@1 {record['val_acc1']:.3f} "
                              f"({langs}){cross} · mean loss {record['loss_mean']:.3f}", highlight=False)

    def on_step(record: dict) -> None:
        bar.update(task, completed=record["step"] - first,
                   description=f"{o.stage} · step {record['step']:,} · epoch {record['epoch'] + 1} · "
                               f"loss {record['loss']:.3f} · {record['images_per_s']:,.0f} img/s")

    try:
        result = train_stage(config, o.data, o.run, lexicon, init=o.init, resume=o.resume, device=o.device,
                             val=o.val, on_step=on_step, on_start=on_start, on_epoch=on_epoch)
    except KeyboardInterrupt:
        err.print(f"interrupted; continue with: train {o.stage} ... --out {o.run} --resume latest")
        raise typer.Exit(130)
    finally:
        bar.stop()
    if not is_main_process():  # under torchrun, rank 0 speaks for the run
        raise typer.Exit(0 if result.finished else 130)
    if not result.finished:
        err.print(f"stopped at step {result.steps}; checkpoint saved. Continue with the same command and --resume latest",
                  soft_wrap=True)
        raise typer.Exit(130)
    out.print(f"{o.run}: {o.stage} done, {result.steps:,} steps over {result.epochs_done} epochs in "
              f"{result.seconds / 60:.1f} min ({result.images_per_second:,.0f} img/s); final loss {result.last_loss:.4f}",
              soft_wrap=True)


def pretrain(
    data: DataOpt,
    run: RunOpt,
    preset: PresetOpt = "cpu-small",
    text_encoder: TextEncoderOpt = None,
    epochs: EpochsOpt = None,
    batch_size: BatchOpt = None,
    lr: LrOpt = None,
    max_steps: MaxStepsOpt = None,
    workers: LoaderWorkersOpt = None,
    sets: SetOpt = None,
    val: ValOpt = None,
    resume: ResumeOpt = None,
    lexicon: LexiconOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Stage 1: train both towers on synthetic shards from scratch (AdamW, warm-up then cosine decay).

    Writes --out/config.json, metrics.jsonl (one line per step), curves.png, checkpoints/ and, at the end,
    model.safetensors. Ctrl-C finishes the current step, saves a checkpoint and stops; `--resume latest`
    continues to the same result an uninterrupted run reaches. Presets: `cpu-small` (2 CPU cores: 32×128
    ink-cropped images, prototype objective, frozen text encoder), `gpu` (the same recipe at 64×256) and
    `paper` (the reference settings: InfoNCE + L_INV, lr 1e-4, 20 epochs, batch ≈ number of IDs).
    --val scores held-out shards at each epoch end, e.g. `synth render --fonts held-out --per-id 1 --seed 5`.
    """
    run_stage(StageOptions("pretrain", data, run, preset, text_encoder, epochs, batch_size, lr, max_steps, workers,
                           sets, val, resume, lexicon, device))


def finetune(
    init: Annotated[Path, typer.Option("--init", help="The pre-training run (or a checkpoint folder) to start from.")],
    data: DataOpt,
    run: RunOpt,
    preset: PresetOpt = "cpu-small",
    text_encoder: TextEncoderOpt = None,
    epochs: EpochsOpt = None,
    batch_size: BatchOpt = None,
    lr: LrOpt = None,
    max_steps: MaxStepsOpt = None,
    workers: LoaderWorkersOpt = None,
    sets: SetOpt = None,
    val: ValOpt = None,
    resume: ResumeOpt = None,
    lexicon: LexiconOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Stage 2: continue from --init on (real) handwriting shards with the preset's finetune stage.

    The model part of the config must match the --init run's; everything else may differ.
    """
    run_stage(StageOptions("finetune", data, run, preset, text_encoder, epochs, batch_size, lr, max_steps, workers,
                           sets, val, resume, lexicon, device, init=init))


def info(
    text_encoder: Annotated[Path | None, typer.Option("--text-encoder", help="A local Hugging Face encoder folder to size too.")] = None,
    unlocked_layers: Annotated[int, typer.Option("--unlocked-layers", help="Top text layers left trainable by lock().")] = 2,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Model sizes: the image tower against the paper's 1.29 M budget, and optionally a text tower."""
    import json

    from rich.table import Table

    from train.towers.image_tower import ImageTower, count_parameters

    image = ImageTower()
    rows = {
        "image_tower.features": count_parameters(image.features),
        "image_tower.projector": count_parameters(image.projector),
        "image_tower.total": count_parameters(image),
    }
    if text_encoder is not None:
        from train.towers.text_tower import TextTower, TextTowerConfig

        try:
            text = TextTower(TextTowerConfig(model_path=str(text_encoder)))
        except (OSError, ValueError) as exc:  # transformers' own errors for a folder that is not an encoder
            raise fail(str(exc))
        text.lock(unlocked_layers)
        rows["text_tower.total"] = count_parameters(text)
        rows["text_tower.trainable"] = count_parameters(text, trainable_only=True)
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table(title="parameters")
    table.add_column("part")
    table.add_column("parameters", justify="right")
    for name, n in rows.items():
        table.add_row(name, f"{n:,}")
    out.print(table)
    share = rows["image_tower.total"] / PAPER_IMAGE_TOWER
    out.print(f"image tower: {rows['image_tower.total']:,} parameters, {share:.1%} of the paper's 1.29 M", soft_wrap=True)
