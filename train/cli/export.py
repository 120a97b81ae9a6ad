"""`train export | quantize`: a run as ONNX graphs and a precomputed gallery for devices, and its int8
graph. Parsing and printing only; the work is in train.edge.export (figures in docs/benchmarks.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hwkit.errors import fail
from hwkit.progress import spinner
from synth.lexicon import load_lexicon
from train.cli.common import LexiconOpt, TextEncoderOpt, err, out

CalibrationOpt = Annotated[list[Path] | None, typer.Option("--calibration", help="Shards to draw calibration (and check) images from; repeatable.")]
CalibrationImagesOpt = Annotated[int, typer.Option("--calibration-images", min=16, help="Images for int8 calibration.")]
CalibrationMethodOpt = Annotated[str, typer.Option("--calibration-method", help="int8 activation ranges: minmax (the extremes) or percentile (0.001st–99.999th).")]
Int8WeightsOpt = Annotated[str, typer.Option("--int8-weights", help="uint8 (per channel, zero point 128): exact on every CPU. int8: for VNNI/ARM CPUs and TensorRT; x86 CPUs without AVX-VNNI saturate uint8×int8 products and lose accuracy.")]
Int8Fp32StagesOpt = Annotated[int, typer.Option("--int8-fp32-stages", min=0, help="Keep the image tower's first N stages in fp32 (1: the stem; 2: also block 1; 3: also block 2), where most of the int8 error starts; the rest stays int8.")]
CalibrationSeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the calibration draw.")]
DistilStepsOpt = Annotated[int, typer.Option("--distil-steps", min=0, help="Tune the int8 graph's weights for this many steps against onnxruntime's own roundings, distilling the fp32 graph's gallery ranking (train.edge.qat; minutes on a CPU).")]


def _print_int8(manifest: dict, weights: str) -> None:
    from train.edge.export import fidelity_warning

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


def export(
    ckpt: Annotated[Path, typer.Option("--ckpt", help="The run to export (its final model).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to create: ONNX graphs, gallery, manifest.")],
    int8: Annotated[bool, typer.Option("--int8", help="Also a static int8 (QDQ) graph, calibrated on --calibration images: 3× smaller, for int8 hardware (on x86 CPUs the fp32 graph is faster). The manifest records its cosine to fp32.")] = False,
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
    from train.edge.export import Int8Settings, export_refusal, export_run
    from train.evaluate import load_model

    refusal = export_refusal(out_dir, overwrite)  # before the model loads: a refusal takes no time
    if refusal:
        raise fail(refusal)
    lex = load_lexicon(lexicon)
    model, _, run = load_model(ckpt, text_encoder, "cpu", lex)
    with spinner(err, "export") as status:
        settings = Int8Settings(calibration_images, calibration_method, int8_weights, int8_fp32_stages, distil_steps)
        manifest = export_run(model, run, out_dir, lex, calibration=list(calibration or []),
                              int8=settings if int8 else None, seed=seed, overwrite=overwrite,
                              progress=lambda msg: status.update(msg))
    parity = manifest["parity"]
    out.print(f"{out_dir}: {', '.join(manifest['files'])}; ONNX fp32 vs PyTorch cosine ≥ {parity['min_cosine']:.6f} "
              f"on {parity['images']} images", highlight=False, soft_wrap=True)
    if manifest["int8"]:
        _print_int8(manifest, int8_weights)


def quantize(
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
    from train.edge.export import Int8Settings, quantize_export

    with spinner(err, "quantize") as status:
        settings = Int8Settings(calibration_images, calibration_method, int8_weights, int8_fp32_stages, distil_steps)
        manifest = quantize_export(export, list(calibration or []), settings, seed=seed, overwrite=overwrite,
                                   progress=lambda msg: status.update(msg))
    out.print(f"{export}: image_tower.int8.onnx written", highlight=False)
    _print_int8(manifest, int8_weights)
