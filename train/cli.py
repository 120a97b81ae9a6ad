"""The `train` command: pretrain, finetune, eval, info, text-encoder. Parsing and printing only; the work is
in the library (train.trainer, train.evaluate, train.e5_convert)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from synth.files import exit_on_sigterm, is_json_with, report_refusal
from synth.lexicon import LANGS, LexiconError, load_lexicon
from synth.progress import progress_bar, spinner
from train.cli_import import import_app
from train.cli_text_encoder import text_encoder_app
from train.config import ConfigError, RunConfig, load_config, preset_names

app = typer.Typer(no_args_is_help=True, pretty_exceptions_show_locals=False)
out = Console()
err = Console(stderr=True)

app.add_typer(text_encoder_app, name="text-encoder")
app.add_typer(import_app, name="import")

PAPER_IMAGE_TOWER = 1_290_000  # the reference paper's image-tower size (1.29 M parameters)
def _errors() -> tuple[type[Exception], ...]:
    """The errors every command reports as one line. Imported on demand: the torch-free paths (import,
    search --onnx) must not import torch by importing this module."""
    from train.checkpoint import CheckpointError
    from train.data import DataError
    from train.text_tower import TextEncoderError

    return (DataError, ConfigError, CheckpointError, LexiconError, TextEncoderError, FileNotFoundError, FileExistsError,
            NotADirectoryError, IsADirectoryError, PermissionError)  # a path the user named: one line naming it


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(1)


def _version(value: bool) -> None:
    if value:
        from synth import __version__  # one package, one version

        typer.echo(f"train {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """Dual-encoder training and cross-lingual retrieval on synth shards (docs/training.md).

    Typical use: `train text-encoder prepare` once; then `train pretrain --data SHARDS --out RUN`;
    `train finetune --init RUN --data REAL --out RUN2`; `train eval --ckpt RUN2 --data OOD --cross-lingual`.
    """
    exit_on_sigterm()


EVAL_KEYS = ("run", "data", "within")  # what makes a JSON file a `train eval` report, safe to rewrite
DataOpt = Annotated[list[Path], typer.Option("--data", help="Shard folder (as `synth render --out` writes); repeat to combine.")]
RunOpt = Annotated[Path, typer.Option("--out", help="Run folder: config, metrics, curves and checkpoints (must be new unless --resume).")]
PresetOpt = Annotated[str, typer.Option("--preset", help=f"Preset name ({', '.join(preset_names())}) or a YAML file.")]
TextEncoderOpt = Annotated[Path | None, typer.Option("--text-encoder", help="Hugging Face encoder folder (default: the prepared multilingual-e5-small).")]
EpochsOpt = Annotated[int | None, typer.Option("--epochs", min=1, help="Epochs (default: the preset's, in train/configs/PRESET.yaml).")]
BatchOpt = Annotated[int | None, typer.Option("--batch-size", min=2, help="Images per step, the global batch (default: the preset's).")]
ImagesPerPassOpt = Annotated[int | None, typer.Option(
    "--batch-size", min=1, help="Images per forward pass (default: 256 on a GPU; on a CPU 32 at 64×256, 128 at 32×128).")]
LrOpt = Annotated[float | None, typer.Option("--lr", help="Peak learning rate (default: the preset's).")]
MaxStepsOpt = Annotated[int | None, typer.Option("--max-steps", min=1, help="Stop after this many steps (the LR schedule spans them).")]
WorkersOpt = Annotated[int | None, typer.Option("--workers", min=0, help="DataLoader processes decoding images (default: the preset's).")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Any config value, KEY=VALUE with a dotted key, e.g. loss.lam=0.5 (repeatable).")]
ValOpt = Annotated[list[Path] | None, typer.Option(
    "--val", help="Held-out shards scored at epoch ends (Acc@1 within and across languages) into metrics.jsonl and curves.png; repeatable.")]
ResumeOpt = Annotated[str | None, typer.Option("--resume", help="Continue --out from `latest` or a checkpoint folder.")]
LexiconOpt = Annotated[Path | None, typer.Option("--lexicon", help="Lexicon TSV (default: lexicon/lexicon.tsv).")]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="cpu, cuda, cuda:1 … (default: cuda when available).")]


def _overrides(text_encoder, epochs, batch_size, lr, max_steps, workers, sets) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for item in sets or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set loss.lam=0.5")
        found[key.strip()] = yaml.safe_load(value)
    named = {"model.text.model_path": str(text_encoder.expanduser().resolve()) if text_encoder else None,
             "optim.epochs": epochs, "batch.batch_size": batch_size, "optim.lr": lr, "optim.max_steps": max_steps,
             "data.workers": workers}
    found.update({k: v for k, v in named.items() if v is not None})
    return found


def _run_stage(stage: str, data, run, preset, text_encoder, epochs, batch_size, lr, max_steps, workers, sets,
               resume, lexicon, device, init=None, val=None) -> None:
    from train.distributed import resolve_device
    from train.trainer import TrainingError, train_stage

    try:
        resolve_device(device)
    except ValueError as exc:
        raise _fail(str(exc))
    try:
        config: RunConfig = load_config(preset, stage, _overrides(text_encoder, epochs, batch_size, lr, max_steps, workers, sets))
        lex = load_lexicon(lexicon)
        bar = progress_bar(err, unit="steps")
        task, first = None, 0

        def on_start(total: int, start: int) -> None:
            # the bar counts this process's steps (a resumed run's rate and ETA stay true); the
            # description carries the run's global step
            nonlocal task, first
            first = start
            bar.start()
            task = bar.add_task(stage, total=total - start)

        def on_epoch(record: dict) -> None:
            if "val_acc1" in record:
                langs = " ".join(f"{k[-2:]} {v:.3f}" for k, v in record.items() if k.startswith("val_acc1_"))
                cross = f" · cross-lingual {record['val_cross_acc1']:.3f}" if "val_cross_acc1" in record else ""
                bar.console.print(f"epoch {record['epoch_done']}: held-out Acc@1 {record['val_acc1']:.3f} "
                                  f"({langs}){cross} · mean loss {record['loss_mean']:.3f}", highlight=False)

        def on_step(record: dict) -> None:
            bar.update(task, completed=record["step"] - first,
                       description=f"{stage} · step {record['step']:,} · epoch {record['epoch'] + 1} · "
                                   f"loss {record['loss']:.3f} · {record['images_per_s']:,.0f} img/s")

        try:
            result = train_stage(config, data, run, lex, init=init, resume=resume, device=device,
                                 val=val, on_step=on_step, on_start=on_start, on_epoch=on_epoch)
        finally:
            bar.stop()
    except (*_errors(), TrainingError) as exc:
        raise _fail(str(exc))
    except KeyboardInterrupt:
        err.print(f"interrupted; continue with: train {stage} ... --out {run} --resume latest")
        raise typer.Exit(130)
    from train.distributed import is_main_process

    if not is_main_process():  # under torchrun, rank 0 speaks for the run
        raise typer.Exit(0 if result.finished else 130)
    if not result.finished:
        err.print(f"stopped at step {result.steps}; checkpoint saved. Continue with the same command and --resume latest",
                  soft_wrap=True)
        raise typer.Exit(130)
    out.print(f"{run}: {stage} done, {result.steps:,} steps over {result.epochs_done} epochs in {result.seconds / 60:.1f} min "
              f"({result.images_per_second:,.0f} img/s); final loss {result.last_loss:.4f}", soft_wrap=True)


@app.command()
def pretrain(
    data: DataOpt,
    run: RunOpt,
    preset: PresetOpt = "cpu-small",
    text_encoder: TextEncoderOpt = None,
    epochs: EpochsOpt = None,
    batch_size: BatchOpt = None,
    lr: LrOpt = None,
    max_steps: MaxStepsOpt = None,
    workers: WorkersOpt = None,
    sets: SetOpt = None,
    val: ValOpt = None,
    resume: ResumeOpt = None,
    lexicon: LexiconOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Stage 1: train both towers on synthetic shards from scratch (AdamW, warm-up then cosine decay).

    Writes --out/config.json, metrics.jsonl (one line per step), curves.png, checkpoints/ and, at the end,
    model.safetensors. Ctrl-C finishes the current step, saves a checkpoint and stops; `--resume latest`
    continues to the same result an uninterrupted run reaches. Presets: `cpu-small` (2 CPU cores, under an
    hour: 32×128 ink-cropped images, prototype objective, frozen text encoder), `gpu` (the same recipe at
    64×256) and `paper` (the reference settings: InfoNCE + L_INV, lr 1e-4, 20 epochs, batch ≈ number of IDs).
    --val scores held-out shards at each epoch end, e.g. `synth render --fonts held-out --per-id 1 --seed 5`.
    """
    _run_stage("pretrain", data, run, preset, text_encoder, epochs, batch_size, lr, max_steps, workers, sets,
               resume, lexicon, device, val=val)


@app.command()
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
    workers: WorkersOpt = None,
    sets: SetOpt = None,
    val: ValOpt = None,
    resume: ResumeOpt = None,
    lexicon: LexiconOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Stage 2: continue from --init on (real) handwriting shards with the preset's finetune stage.

    The model part of the config must match the --init run's; everything else may differ.
    """
    _run_stage("finetune", data, run, preset, text_encoder, epochs, batch_size, lr, max_steps, workers, sets,
               resume, lexicon, device, init=init, val=val)


@app.command("eval")
def evaluate_cmd(
    ckpt: Annotated[Path, typer.Option("--ckpt", help="A run folder (its final model, else its newest checkpoint) or a checkpoint folder.")],
    data: DataOpt,
    cross_lingual: Annotated[bool, typer.Option("--cross-lingual", help="Also the six cross-lingual directions.")] = False,
    whole_lexicon: Annotated[bool, typer.Option("--whole-lexicon", help="Gallery = every lexicon entry, not only the IDs in --data.")] = False,
    report: Annotated[Path | None, typer.Option("--out", help="Report JSON (a .md table is written beside it; default RUN/eval/<data>.json).")] = None,
    text_encoder: TextEncoderOpt = None,
    lexicon: LexiconOpt = None,
    batch_size: ImagesPerPassOpt = None,
    workers: Annotated[int, typer.Option("--workers", min=0, help="Processes decoding shards.")] = 0,
    device: DeviceOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON instead of tables.")] = False,
) -> None:
    """Retrieval accuracy of a run: word images as queries, lexicon text embeddings as the gallery.

    Within-language Acc@1/3/5 and MRR per language and overall; with --cross-lingual the six directions
    en→zh, zh→en, zh→es, es→zh, es→en, en→es and their mean; the R/D ratio of the image embeddings.
    """
    from train.data import count_rows
    from train.evaluate import evaluate, load_model, markdown

    def refusal(target: Path) -> str | None:
        return report_refusal(target, [target.with_suffix(".md")], lambda p: is_json_with(p, EVAL_KEYS), "train eval")

    if report is not None and refusal(report):  # before the model loads
        raise _fail(refusal(report))
    try:
        lex = load_lexicon(lexicon)
        model, provenance, run = load_model(ckpt, text_encoder, device, lex)
        target = report or run / "eval" / f"{'+'.join(Path(d).resolve().name for d in data)}.json"
        if refusal(target):
            raise ValueError(refusal(target))
        base = next(p for p in [target.parent, *target.parent.parents] if p.exists())
        if not base.is_dir() or not os.access(base, os.W_OK):  # before the work; folders are made only after it
            raise ValueError(f"--out {target}: cannot make its folder under {base}")
        total = count_rows(data)
        bar = progress_bar(err, unit="images")
        with bar:
            task = bar.add_task("eval", total=total)
            result = evaluate(model, data, lex, cross_lingual=cross_lingual, whole_lexicon=whole_lexicon,
                              batch_size=batch_size, workers=workers, progress=lambda n: bar.advance(task, n))
    except (*_errors(), ValueError) as exc:
        raise _fail(str(exc).splitlines()[0])
    result = {"run": str(Path(ckpt).resolve()), "data": [str(Path(d).resolve()) for d in data],
              "loss": provenance["config"]["loss"], **result}
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    table = markdown(result)
    target.with_suffix(".md").write_text(table, encoding="utf-8")
    if as_json:
        out.print_json(json.dumps(result, ensure_ascii=False))
    else:
        out.print(table, markup=False, highlight=False)
        err.print(f"report: {target} and {target.with_suffix('.md')}")


@app.command()
def baseline(
    name: Annotated[str, typer.Argument(help="rapidocr or tesseract.")],
    data: DataOpt,
    whole_lexicon: Annotated[bool, typer.Option("--whole-lexicon", help="Gallery = every lexicon entry, not only the IDs in --data.")] = False,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="At most this many images per language, drawn with --seed.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the --limit draw.")] = 0,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Recogniser processes (each single-threaded).")] = 2,
    report: Annotated[Path | None, typer.Option("--out", help="Report JSON to write (a .md table and a predictions .tsv go beside it).")] = None,
    lexicon: LexiconOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON instead of a table.")] = False,
) -> None:
    """Two-stage OCR retrieval on the same sets as `train eval`: recognise each word image, rank the
    gallery by normalised edit similarity. Acc@1/3/5, MRR, NES and per-image latency, within-language.

    Engines: rapidocr (PyPI rapidocr-onnxruntime, models in the wheel) and tesseract (Debian
    tesseract-ocr with -spa and -chi-sim); `make setup` installs both.
    """
    from train.baselines import BaselineError, markdown, run_baseline

    try:
        if report is not None:
            refusal = report_refusal(report, [report.with_suffix(".md"), report.with_suffix(".tsv")],
                                     lambda p: is_json_with(p, ("baseline", "within")), "train baseline")
            if refusal:
                raise ValueError(refusal)
        lex = load_lexicon(lexicon)
        bar = progress_bar(err, unit="images")
        with bar:
            task = bar.add_task(name, total=None)
            result = run_baseline(name, data, lex, whole_lexicon=whole_lexicon, limit=limit, seed=seed,
                                  workers=workers, progress=lambda n: bar.advance(task, n))
    except (*_errors(), BaselineError, ValueError) as exc:
        raise _fail(str(exc).splitlines()[0])
    result = {"data": [str(Path(d).resolve()) for d in data], **result}
    predictions = result.pop("predictions")
    table = markdown(result)
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        report.with_suffix(".md").write_text(table, encoding="utf-8")
        lines = ["row\tlang\ttext\tprediction"] + [
            f"{p['row']}\t{p['lang']}\t{p['text']}\t{' '.join(p['prediction'].split())}" for p in predictions]
        report.with_suffix(".tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    if as_json:
        out.print_json(json.dumps(result, ensure_ascii=False))
    else:
        out.print(table, markup=False, highlight=False)
        if report is not None:
            err.print(f"report: {report}, {report.with_suffix('.md')} and {report.with_suffix('.tsv')}")


@app.command()
def index(
    ckpt: Annotated[Path, typer.Option("--ckpt", help="The run whose image tower embeds the images.")],
    data: DataOpt,
    index_dir: Annotated[Path, typer.Option("--out", help="Index folder to create (embeddings.npy, rows.parquet, index.json).")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an index written before at --out.")] = False,
    text_encoder: TextEncoderOpt = None,
    batch_size: ImagesPerPassOpt = None,
    workers: Annotated[int, typer.Option("--workers", min=0, help="Processes decoding shards.")] = 0,
    device: DeviceOpt = None,
) -> None:
    """Embed every image of a shard set for `train search --index ... --text WORD`."""
    from train.data import count_rows
    from train.evaluate import load_model
    from train.search import SearchError, build_index

    try:
        model, _, run = load_model(ckpt, text_encoder, device)
        total = count_rows(data)
        bar = progress_bar(err, unit="images")
        with bar:
            task = bar.add_task("index", total=total)
            meta = build_index(model, run, data, index_dir, batch_size=batch_size, workers=workers,
                               overwrite=overwrite, progress=lambda n: bar.advance(task, n))
    except (*_errors(), SearchError, ValueError) as exc:
        raise _fail(str(exc).splitlines()[0])
    out.print(f"{index_dir}: {meta['count']:,} images × {meta['dim']} dims from {len(data)} dataset(s)", highlight=False,
              soft_wrap=True)


@app.command()
def search(
    ckpt: Annotated[Path | None, typer.Option("--ckpt", help="A trained run (or checkpoint).")] = None,
    onnx: Annotated[Path | None, typer.Option("--onnx", help="A `train export` folder instead of --ckpt: onnxruntime only, no torch (--image only).")] = None,
    int8: Annotated[bool, typer.Option("--int8", help="With --onnx: the int8 image tower.")] = False,
    image: Annotated[Path | None, typer.Option("--image", help="A word image: find the words it shows, in any language.")] = None,
    text: Annotated[str | None, typer.Option("--text", help="A typed word: find its images in --index, in any script.")] = None,
    index_dir: Annotated[Path | None, typer.Option("--index", help="Index from `train index` (needed with --text).")] = None,
    lang: Annotated[list[str] | None, typer.Option("--lang", help="Only results in this language (repeatable; default all).")] = None,
    k: Annotated[int, typer.Option("-k", "--top", min=1, help="How many results.")] = 5,
    text_encoder: TextEncoderOpt = None,
    lexicon: LexiconOpt = None,
    device: DeviceOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Query by example (--image word.png: the closest lexicon words in en, es and zh) or by string
    (--index INDEX --text agua: the closest word images, whatever their script).

    With --onnx EXPORT instead of --ckpt, an image query runs on onnxruntime alone (no torch import),
    against the gallery precomputed by `train export`: what a device would run.
    """
    if (image is None) == (text is None):
        raise _fail("give exactly one of --image (find words) or --text (find images, with --index)")
    if (ckpt is None) == (onnx is None):
        raise _fail("give exactly one of --ckpt (a run) or --onnx (a `train export` folder)")
    if text is not None and index_dir is None:
        raise _fail("--text searches an index: pass --index (build one with `train index`)")
    bad = [code for code in lang or [] if code not in LANGS]
    if bad:  # these before anything loads
        raise _fail(f"--lang: language {bad[0]!r}; expected one of {', '.join(LANGS)}")
    if image is not None and not image.is_file():
        raise _fail(f"--image: image not found: {image}")
    if onnx is not None:
        from train.edge import EdgeError, EdgeModel

        if text is not None:
            raise _fail("--onnx answers --image queries; --text needs the text tower: use --ckpt")
        try:
            hits = EdgeModel(onnx, int8=int8).words_for_image(image, lang, k)
        except (EdgeError, OSError) as exc:
            raise _fail(str(exc).splitlines()[0])
    else:
        from train.evaluate import load_model
        from train.search import SearchError, images_for_text, load_index, words_for_image

        try:
            lex = load_lexicon(lexicon) if image is not None else None  # a text query ranks images, not words
            model, _, _ = load_model(ckpt, text_encoder, device, lex)
            if image is not None:
                hits = words_for_image(model, image, lex, lang, k)
            else:
                hits = images_for_text(model, load_index(index_dir), text, lang, k)
        except (*_errors(), SearchError, ValueError) as exc:
            raise _fail(str(exc).splitlines()[0])
    if as_json:
        out.print_json(json.dumps(hits, ensure_ascii=False))
        return
    table = Table(title=f"{'words for ' + str(image) if image else 'images for ' + repr(text)}")
    columns = ["rank", "score", "lang", "text", "semantic_id"] + ([] if image else ["shard", "row"])
    for name in columns:
        table.add_column(name, justify="right" if name in ("rank", "score", "semantic_id", "row") else "left")
    for hit in hits:
        table.add_row(*(f"{hit[c]:.4f}" if c == "score" else str(hit[c]) for c in columns))
    out.print(table)


CalibrationOpt = Annotated[list[Path] | None, typer.Option("--calibration", help="Shards to draw calibration (and check) images from; repeatable.")]
CalibrationImagesOpt = Annotated[int, typer.Option("--calibration-images", min=16, help="Images for int8 calibration.")]
CalibrationMethodOpt = Annotated[str, typer.Option("--calibration-method", help="int8 activation ranges: minmax (the extremes) or percentile (0.001st–99.999th).")]
Int8WeightsOpt = Annotated[str, typer.Option("--int8-weights", help="uint8 (per channel, zero point 128): exact on every CPU. int8: for VNNI/ARM CPUs and TensorRT; x86 CPUs without AVX-VNNI saturate uint8×int8 products and lose accuracy (docs/benchmarks.md).")]
Int8Fp32StagesOpt = Annotated[int, typer.Option("--int8-fp32-stages", min=0, help="Keep the image tower's first N stages in fp32 (1: the stem; 2: also block 1; 3: also block 2), where most of the int8 error starts; the rest stays int8. At the paper's size, 3 cut the Acc@1 cost from 1.25 to 0.52 points (docs/benchmarks.md).")]
CalibrationSeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the calibration draw.")]
DistilStepsOpt = Annotated[int, typer.Option("--distil-steps", min=0, help="Tune the int8 graph's weights for this many steps against onnxruntime's own roundings, distilling the fp32 graph's gallery ranking (train.qat; 300 steps cut the Acc@1 cost from 0.85 to 0.36 points on cpu-small, 1.25 to 0.99 at the paper's size; minutes on a CPU).")]


def _print_int8(manifest: dict, weights: str) -> None:
    from train.export import fidelity_warning

    record = manifest["int8"]
    if "distillation" in record:
        d = record["distillation"]
        out.print(f"distilled int8 for {d['steps']} steps: loss {d['loss_first']:.4f} → {d['loss_last']:.4f}", highlight=False)
    if record.get("fp32_stages"):
        out.print(f"int8 with the image tower's first {record['fp32_stages']} stages in fp32", highlight=False)
    fp32, kernels = record["fidelity"]["cosine_to_fp32"], record["fidelity"]["cosine_kernels_to_graph"]
    out.print(f"int8 vs fp32 cosine: mean {fp32['mean']:.4f}, least {fp32['least']:.4f}; this CPU's int8 kernels vs "
              f"the QDQ graph: mean {kernels['mean']:.5f}", highlight=False, soft_wrap=True)
    warning = fidelity_warning(record["fidelity"], weights)
    if warning:
        err.print(f"[yellow]warning:[/yellow] {warning}", highlight=False, soft_wrap=True)


@app.command("export")
def export_cmd(
    ckpt: Annotated[Path, typer.Option("--ckpt", help="The run to export (its final model).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to create: ONNX graphs, gallery, manifest.")],
    int8: Annotated[bool, typer.Option("--int8", help="Also a static int8 (QDQ) graph, calibrated on --calibration images: 3× smaller, for int8 hardware (on x86 CPUs the fp32 graph is faster; docs/benchmarks.md). The manifest records its cosine to fp32.")] = False,
    calibration: CalibrationOpt = None,
    calibration_images: CalibrationImagesOpt = 512,
    calibration_method: CalibrationMethodOpt = "minmax",
    int8_weights: Int8WeightsOpt = "uint8",
    int8_fp32_stages: Int8Fp32StagesOpt = 0,
    distil_steps: DistilStepsOpt = 0,
    seed: CalibrationSeedOpt = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an earlier export at --out.")] = False,
    text_encoder: TextEncoderOpt = None,
    lexicon: LexiconOpt = None,
) -> None:
    """Export a run for devices: the image tower as ONNX (dynamic batch; --int8 adds static int8), the text
    embeddings of every lexicon entry, and a manifest. `train search --onnx OUT --image word.png` uses it."""
    from train.evaluate import load_model
    from train.export import ExportError, Int8Settings, export_refusal, export_run

    refusal = export_refusal(out_dir, overwrite)  # before the model loads: a refusal takes no time
    if refusal:
        raise _fail(refusal)
    try:
        lex = load_lexicon(lexicon)
        model, _, run = load_model(ckpt, text_encoder, "cpu", lex)
        with spinner(err, "export") as status:
            settings = Int8Settings(calibration_images, calibration_method, int8_weights, int8_fp32_stages, distil_steps)
            manifest = export_run(model, run, out_dir, lex, calibration=list(calibration or []),
                                  int8=settings if int8 else None, seed=seed, overwrite=overwrite,
                                  progress=lambda msg: status.update(msg))
    except (*_errors(), ExportError, ValueError) as exc:
        raise _fail(str(exc).splitlines()[0])
    parity = manifest["parity"]
    out.print(f"{out_dir}: {', '.join(manifest['files'])}; ONNX fp32 vs PyTorch cosine ≥ {parity['min_cosine']:.6f} "
              f"on {parity['images']} images", highlight=False, soft_wrap=True)
    if manifest["int8"]:
        _print_int8(manifest, int8_weights)


@app.command("quantize")
def quantize_cmd(
    export: Annotated[Path, typer.Option("--export", help="A `train export` folder (its fp32 graph and gallery are used; the run is not needed).")],
    calibration: CalibrationOpt = None,
    calibration_images: CalibrationImagesOpt = 512,
    calibration_method: CalibrationMethodOpt = "minmax",
    int8_weights: Int8WeightsOpt = "uint8",
    int8_fp32_stages: Int8Fp32StagesOpt = 0,
    distil_steps: DistilStepsOpt = 0,
    seed: CalibrationSeedOpt = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the export's int8 graph if it has one.")] = False,
) -> None:
    """Add the int8 graph to an existing export, or make it again with other settings: `train export
    --int8` without the run, e.g. for an export brought back from a GPU machine."""
    from train.export import ExportError, Int8Settings, quantize_export

    try:
        with spinner(err, "quantize") as status:
            settings = Int8Settings(calibration_images, calibration_method, int8_weights, int8_fp32_stages, distil_steps)
            manifest = quantize_export(export, list(calibration or []), settings, seed=seed, overwrite=overwrite,
                                       progress=lambda msg: status.update(msg))
    except (*_errors(), ExportError, ValueError) as exc:
        raise _fail(str(exc).splitlines()[0])
    out.print(f"{export}: image_tower.int8.onnx written", highlight=False)
    _print_int8(manifest, int8_weights)


@app.command()
def report(
    run: Annotated[Path, typer.Option("--run", help="The run to report (its final model).")],
    ood: Annotated[list[Path], typer.Option("--ood", help="Out-of-distribution set (held-out styles); repeat per language.")],
    in_domain: Annotated[list[Path] | None, typer.Option("--in-domain", help="In-domain set (train styles, new samples); repeatable.")] = None,
    baseline_json: Annotated[list[Path] | None, typer.Option("--baseline", help="A `train baseline --out` JSON to put beside ours (repeatable).")] = None,
    ablation: Annotated[list[str] | None, typer.Option("--ablation", help="NAME=RUN: a run for the ablation table (repeatable).")] = None,
    ablation_data: Annotated[list[Path] | None, typer.Option("--ablation-data", help="Where the ablation runs are evaluated (default: the --ood sets).")] = None,
    elsewhere: Annotated[list[str] | None, typer.Option("--elsewhere", help="MACHINE=RUN: a run trained and evaluated on another machine, reported from its saved `train eval` reports (repeatable).")] = None,
    out_md: Annotated[Path, typer.Option("--out", help="Markdown page to write.")] = Path("docs/results.md"),
    plot: Annotated[Path, typer.Option("--plot", help="PNG of the t-SNE embedding map.")] = Path("docs/img/embeddings-tsne.png"),
    lexicon: LexiconOpt = None,
) -> None:
    """Write the paper-style results page: within-language tables (ours and OCR baselines), the six
    cross-lingual directions, R/D, the loss ablation and a t-SNE map, each number measured now."""
    from train.report import GENERATED, ReportError, ReportInputs, build_report

    def named(items: list[str] | None, option: str, example: str) -> dict[str, Path]:
        pairs = {}
        for item in items or []:
            name, sep, path = item.partition("=")
            if not sep or not name or not path:
                raise _fail(f"{option} {item!r}: expected NAME=RUN, e.g. {option} {example}")
            pairs[name] = Path(path)
        return pairs

    inputs = ReportInputs(run, list(ood), list(in_domain or []), list(baseline_json or []),
                          named(ablation, "--ablation", "no-inv=runs/no-inv"), list(ablation_data or []),
                          named(elsewhere, "--elsewhere", "'NVIDIA H100=runs/paper'"))

    def ours(page: Path) -> bool:  # a page `train report` generated may be rewritten
        try:
            return GENERATED in page.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return False

    refusal = report_refusal(out_md, [plot], ours, "train report")
    if refusal:
        raise _fail(refusal)
    try:
        lex = load_lexicon(lexicon)
        with spinner(err, "report") as status:
            build_report(inputs, lex, out_md, plot, progress=lambda msg: status.update(msg))
    except (*_errors(), ReportError, ValueError) as exc:
        raise _fail(str(exc).splitlines()[0])
    out.print(f"wrote {out_md} and {plot}", highlight=False, soft_wrap=True)


@app.command()
def info(
    text_encoder: Annotated[Path | None, typer.Option("--text-encoder", help="A local Hugging Face encoder folder to size too.")] = None,
    unlocked_layers: Annotated[int, typer.Option("--unlocked-layers", help="Top text layers left trainable by lock().")] = 2,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Model sizes: the image tower against the paper's 1.29 M budget, and optionally a text tower."""
    from train.image_tower import ImageTower, count_parameters

    image = ImageTower()
    rows = {
        "image_tower.features": count_parameters(image.features),
        "image_tower.projector": count_parameters(image.projector),
        "image_tower.total": count_parameters(image),
    }
    if text_encoder is not None:
        from train.text_tower import TextTower, TextTowerConfig

        try:
            text = TextTower(TextTowerConfig(model_path=str(text_encoder)))
        except (OSError, ValueError) as exc:
            raise _fail(str(exc).splitlines()[0])
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
