"""`train export`: a run's image tower as ONNX (fp32, and int8 on request) with its text gallery
precomputed, so a device needs only onnxruntime, NumPy and OpenCV (`train.edge`). `train quantize`
(`quantize_export`) adds or remakes the int8 graph of an existing export without the run.

    OUT/manifest.json          format train-export/1: the run, a digest of its weights, the input size and
                               preparation, every file's sha256, the fp32 parity check, the int8 settings
    OUT/image_tower.onnx       input "images" (N, 1, H, W) float32 ink in [0, 1] (`train.run.images.decode`),
                               output "embeddings" (N, D), L2-normalised; N is dynamic
    OUT/image_tower.int8.onnx  with int8: static QDQ quantisation (onnxruntime), calibrated on shard images,
                               optionally distilled against its own roundings first (`train.edge.qat`); the
                               manifest records how close it runs to fp32 (`int8_fidelity`)
    OUT/gallery.npy            (G, D) float32: the text embedding of every lexicon entry, en then es then zh
    OUT/gallery.tsv            semantic_id, lang, text of each gallery row

The export is written under a temporary name and renamed into place; the fp32 graph must match PyTorch
(cosine ≥ 0.999 on every checked image) or nothing is written.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hwkit.errors import UserError
from hwkit.files import atomic_folder, files_besides, replace_refusal, sha256_file
from synth.lexicon import LANGS, Lexicon
from train.edge import FORMAT, onnx_session, read_manifest
from train.evaluate import embed_texts
from train.evaluate.search import weights_digest
from train.towers.image_tower import BNECK_SMALL, ImageTower
from train.towers.model import DualEncoder

MANIFEST, FP32, INT8, GALLERY, GALLERY_KEYS = "manifest.json", "image_tower.onnx", "image_tower.int8.onnx", "gallery.npy", "gallery.tsv"
OPSET = 17
PARITY = 0.999  # least cosine between ONNX fp32 and PyTorch embeddings of the same image


class ExportError(UserError, RuntimeError):
    """The export cannot be made or does not match the model; the message names the cause."""


def export_onnx(tower: ImageTower, path: Path) -> None:
    """The image tower as an ONNX graph with a dynamic batch axis.

    The TorchScript-based exporter (dynamo=False), deprecated in torch 2.9 but present in 2.13: the
    torch.export-based one emits an Expand node whose shape onnxruntime's symbolic shape inference cannot
    follow, so `quant_pre_process` fails on it (measured with torch 2.13, onnxruntime 1.32). For this
    static convolutional graph both give the same numbers; this one takes under a second instead of ~20 s.
    """
    c = tower.config
    tower = tower.cpu().eval()
    example = torch.rand(2, 1, c.image_height, c.image_width)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(tower, (example,), str(path), input_names=["images"], output_names=["embeddings"],
                          dynamic_axes={"images": {0: "batch"}, "embeddings": {0: "batch"}}, opset_version=OPSET,
                          dynamo=False)


def sample_images(roots: Sequence[Path], n: int, height: int, width: int, seed: int = 0, crop: bool = False) -> np.ndarray:
    """(n, 1, height, width) float32 images drawn at random (seeded) from shard sets, prepared as in training."""
    import pyarrow.parquet as pq

    from train.run.data import count_rows, find_shards
    from train.run.images import decode

    shards = [p for root in roots for p in find_shards(Path(root))]
    counts = [count_rows([p]) for p in shards]
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(sum(counts), min(n, sum(counts)), replace=False))
    starts = np.cumsum([0, *counts])
    images = []
    for i, path in enumerate(shards):
        rows = picks[(picks >= starts[i]) & (picks < starts[i + 1])] - starts[i]
        if len(rows):
            column = pq.read_table(path, columns=["image"]).column("image").combine_chunks().field("bytes")
            images += [decode(column[int(r)].as_py(), height, width, crop) for r in rows]
    return np.stack(images)[:, None].astype(np.float32)


# onnxruntime's "entropy" calibration is not offered: quantize_static builds it with 128 histogram bins and
# 128 quantized bins, so its threshold search has nothing to choose from, and it wrote a model byte-identical
# to MinMax's on our tower (onnxruntime 1.32).
CALIBRATION_METHODS = ("minmax", "percentile")


def image_batches(images: np.ndarray, batch: int = 32):
    """`images` as the onnxruntime data reader that calibration and its debugging tools consume."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"images": images[i:i + batch]} for i in range(0, len(images), batch)])

        def get_next(self):
            return next(self.batches, None)

    return Reader()


def prepare_graph(fp32: Path, prepared: Path) -> list:
    """Write the graph `quantize_int8` quantises and return its nodes in order: onnxruntime's pre-processing
    (shape inference and graph optimisation, so Conv+BN fuse, and HardSwish is inlined as x·HardSigmoid(x))
    with every node named. The inlined nodes come unnamed, and quantize_static's `nodes_to_exclude` reaches
    only named nodes: each gets its op type and first output, which is unique in the graph."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(fp32), str(prepared))
    model = onnx.load(prepared)
    for node in model.graph.node:
        node.name = node.name or f"{node.op_type}:{node.output[0]}"
    onnx.save(model, prepared)
    return list(model.graph.node)


def too_many_stages(asked: int, stages: int) -> str:
    return f"`int8_fp32_stages` {asked}: the image tower has {stages} stages, so at most {stages - 1} can stay in fp32 (0 quantises them all)"


def leading_stages(nodes: Sequence, stages: int) -> list[str]:
    """The names of the `prepare_graph` nodes from the input through the image tower's first `stages`
    stages (`features.0`, the stem convolution, then one inverted-residual block each), picked by their
    place in the graph: what `--int8-fp32-stages` keeps in fp32."""
    if stages <= 0:
        return []
    found = {int(m.group(1)) for n in nodes for m in [re.match(r"/features/features\.(\d+)/", n.name)] if m}
    if stages >= len(found):
        raise ExportError(too_many_stages(stages, len(found)))
    boundary = f"/features/features.{stages}/"
    return [n.name for n in itertools.takewhile(lambda n: not n.name.startswith(boundary), nodes)]


# Weight types. uint8 is the default because x86 CPUs without AVX-VNNI (AVX2, AVX-512 before VNNI) multiply
# uint8 activations by int8 weights with VPMADDUBSW, whose int16 pair sums saturate: onnxruntime's fused
# u8×s8 kernels then depart from the graph's own arithmetic. Measured on the 2-core AVX2 VM with the
# cpu-small run: fused vs unfused cosine 0.983 with int8 weights, 0.99995 with uint8, and Acc@1 on the
# held-out fonts −1.71 against −0.85 points (docs/benchmarks.md). int8 weights (symmetric) are for runtimes
# that want them (VNNI and ARM CPUs, TensorRT).
INT8_WEIGHTS = ("uint8", "int8")


def quantize_int8(fp32: Path, int8: Path, calibration: np.ndarray, batch: int = 32, method: str = "minmax",
                  weights: str = "uint8", fp32_stages: int = 0, **options) -> dict:
    """Static QDQ int8 (per-channel `weights`, uint8 activation ranges over `calibration` by `method`: the
    extremes (minmax) or the 0.001st–99.999th percentiles (percentile)) of the `prepare_graph` graph, the
    tower's first `fp32_stages` stages left in fp32 (`leading_stages`). `options` override
    `quantize_static`'s arguments (the benchmark's variants)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if method not in CALIBRATION_METHODS:
        raise ExportError(f"unknown calibration method {method!r}; expected one of {', '.join(CALIBRATION_METHODS)}")
    if weights not in INT8_WEIGHTS:
        raise ExportError(f"unknown int8 weight type {weights!r}; expected one of {', '.join(INT8_WEIGHTS)}")
    calibrate = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile}[method]
    prepared = int8.with_name(int8.name + ".pre.onnx")
    try:
        excluded = leading_stages(prepare_graph(fp32, prepared), fp32_stages)
        settings = {"quant_format": QuantFormat.QDQ, "per_channel": True, "activation_type": QuantType.QUInt8,
                    "weight_type": {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}[weights],
                    "calibrate_method": calibrate, **options}
        settings["nodes_to_exclude"] = [*excluded, *settings.get("nodes_to_exclude", [])]
        quantize_static(str(prepared), str(int8), image_batches(calibration, batch), **settings)
    finally:
        prepared.unlink(missing_ok=True)
    zero = 128 if weights == "uint8" else 0  # onnxruntime quantises weights symmetrically either way
    return {"format": "QDQ", "weights": f"{weights} per channel (symmetric, zero point {zero})", "activations": "uint8 per tensor",
            "calibration": method, "calibration_images": len(calibration), "fp32_stages": fp32_stages}


def activation_scales(int8: Path) -> dict:
    """The scale and zero point of every activation an int8 graph quantises, in the form of quantize_static's
    TensorQuantOverrides, so that another quantisation of the same graph keeps them."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(int8).graph
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    return {node.input[0]: [{"scale": constants[node.input[1]].astype(np.float32), "zero_point": constants[node.input[2]]}]
            for node in graph.node if node.op_type == "QuantizeLinear" and node.input[0] not in constants}


def int8_fidelity(fp32: Path, int8: Path, images: np.ndarray) -> dict:
    """How close the int8 graph runs to fp32 on `images` (mean and least cosine of the embeddings), and how
    close this CPU's fused int8 kernels run to the QDQ graph's own arithmetic (the same graph with graph
    optimisations off: each operator in fp32 between its Q/DQ pairs). The two differ by rounding flips at
    level boundaries, which a deep net can amplify on a few images; a mean cosine there well below 0.999
    means the kernels depart from the graph, as u8×s8 saturation does on x86 without VNNI (0.983 measured
    on the cpu-small run, against 0.99995 with uint8 weights)."""
    reference = onnx_embed(fp32, images)
    fused = onnx_embed(int8, images)
    unfused = onnx_session(int8, optimize=False).run(["embeddings"], {"images": images})[0]
    to_fp32, kernels = (fused * reference).sum(axis=1), (fused * unfused).sum(axis=1)
    return {"images": len(images), "cosine_to_fp32": {"mean": float(to_fp32.mean()), "least": float(to_fp32.min())},
            "cosine_kernels_to_graph": {"mean": float(kernels.mean()), "least": float(kernels.min())}}


KERNEL_FIDELITY = 0.995  # least mean cosine between fused int8 kernels and the graph's arithmetic


def fidelity_warning(fidelity: dict, weights: str) -> str | None:
    """A warning when this CPU's int8 kernels depart from the graph (`int8_fidelity`), naming the fix."""
    kernels = fidelity["cosine_kernels_to_graph"]["mean"]
    if kernels >= KERNEL_FIDELITY:
        return None
    fix = ("export with --int8-weights uint8, which has no such saturation" if weights == "int8"
           else "run the fp32 graph on this CPU")
    return (f"this CPU's int8 kernels depart from the int8 graph (mean cosine {kernels:.4f} < {KERNEL_FIDELITY}): "
            f"x86 CPUs without VNNI saturate uint8×int8 products; on this CPU, {fix}")


def onnx_embed(path: Path, images: np.ndarray, threads: int = 1) -> np.ndarray:
    return onnx_session(path, threads).run(["embeddings"], {"images": images})[0]


@dataclass(frozen=True)
class Int8Settings:
    """How `train export --int8` and `train quantize` make the int8 graph (their options of the same names)."""

    images: int = 512           # --calibration-images
    method: str = "minmax"      # --calibration-method
    weights: str = "uint8"      # --int8-weights
    fp32_stages: int = 0        # --int8-fp32-stages
    distil_steps: int = 0       # --distil-steps

    def check(self, calibration: Sequence[Path]) -> None:
        if not calibration:
            raise ExportError("int8 needs calibration images: pass shard folders as `calibration` (a few hundred training images)")
        if self.method not in CALIBRATION_METHODS:
            raise ExportError(f"unknown `calibration_method` {self.method!r}; expected one of {', '.join(CALIBRATION_METHODS)}")
        if self.weights not in INT8_WEIGHTS:
            raise ExportError(f"unknown `int8_weights` {self.weights!r}; expected one of {', '.join(INT8_WEIGHTS)}")
        stages = len(BNECK_SMALL) + 2  # the stem, the bnecks, the last 1×1 conv; leading_stages checks the graph too
        if self.fp32_stages >= stages:
            raise ExportError(too_many_stages(self.fp32_stages, stages))


def int8_graph(fp32: Path, int8: Path, gallery: np.ndarray, calibration: Sequence[Path], height: int, width: int,
               settings: Int8Settings, *, seed: int = 0, check: np.ndarray | None = None,
               say: Callable[[str], None] = lambda _msg: None, crop: bool = False) -> dict:
    """Write the int8 graph of `fp32` at `int8` and return the manifest's int8 record: `quantize_int8` on
    `settings.images` calibration images drawn (seeded) from `calibration`; with `settings.distil_steps`,
    the weights are first tuned against onnxruntime's roundings (`train.edge.qat`, the gallery as the target)
    and quantised again; then `int8_fidelity` on `check`, by default 64 other images from the same shards."""
    say("calibrating and quantising to int8")
    sample = sample_images(calibration, settings.images, height, width, seed, crop)
    options = {"method": settings.method, "weights": settings.weights, "fp32_stages": settings.fp32_stages}
    record = quantize_int8(fp32, int8, sample, **options)
    if settings.distil_steps:
        from train.edge.qat import DistilConfig, QDQGraph, distil, write_tuned

        distil_steps = settings.distil_steps
        config = DistilConfig(steps=distil_steps, seed=seed)
        pool = sample_images(calibration, config.images, height, width, seed + 2, crop)
        prepared, tuned = int8.with_name(int8.name + ".tune-pre.onnx"), int8.with_name(int8.name + ".tuned.onnx")
        try:
            prepare_graph(fp32, prepared)
            graph = QDQGraph(int8, prepared)
            teacher = onnx_session(fp32, os.cpu_count() or 1)
            record["distillation"] = distil(
                graph, lambda x: teacher.run(["embeddings"], {"images": x})[0], gallery, pool, config,
                lambda step, loss: say(f"distilling int8 against fp32: step {step}/{distil_steps}, loss {loss:.4f}"))
            write_tuned(prepared, graph.weights(), tuned)
            say("quantising the distilled weights")
            # at the activation scales they were tuned for, not re-calibrated ones (re-calibrating measured
            # worse on the paper-size run, in a scratch trial)
            quantize_int8(tuned, int8, sample, **options, extra_options={"TensorQuantOverrides": activation_scales(int8)})
        finally:
            prepared.unlink(missing_ok=True)
            tuned.unlink(missing_ok=True)
    if check is None:
        check = sample_images(calibration, 64, height, width, seed + 1, crop)
    record["fidelity"] = int8_fidelity(fp32, int8, check)
    return {**record, "data": [str(Path(p).resolve()) for p in calibration], "seed": seed}


def export_refusal(out: Path, overwrite: bool) -> str | None:
    """Why `out` may not be written (a folder that is not an export, or one without --overwrite), else None."""
    return replace_refusal(Path(out), overwrite, lambda folder: (folder / MANIFEST).is_file(), "an export",
                           "train export", lambda folder: files_besides(folder, (MANIFEST, FP32, INT8, GALLERY, GALLERY_KEYS)))


def export_run(model: DualEncoder, run: Path, out: Path, lexicon: Lexicon, *, calibration: Sequence[Path] = (),
               int8: Int8Settings | None = None, seed: int = 0, overwrite: bool = False,
               progress: Callable[[str], None] | None = None) -> dict:
    """Write the export folder `out` (see the module docstring), with an int8 graph when `int8` is given,
    and return its manifest."""
    say = progress or (lambda _msg: None)
    out = Path(out)
    refusal = export_refusal(out, overwrite)
    if refusal:
        raise ExportError(refusal)
    if int8:
        int8.check(calibration)
    model = model.cpu().eval()
    c = model.config.image
    with atomic_folder(out, overwrite) as tmp:
        say("exporting the image tower")
        export_onnx(model.image, tmp / FP32)
        say("checking ONNX against PyTorch")
        check = (sample_images(calibration, 64, c.image_height, c.image_width, seed + 1, c.crop) if calibration
                 else np.random.default_rng(seed).random((16, 1, c.image_height, c.image_width), dtype=np.float32))
        with torch.no_grad():
            reference = model.image(torch.from_numpy(check)).numpy()
        cosine = (onnx_embed(tmp / FP32, check) * reference).sum(axis=1)
        if cosine.min() < PARITY:
            raise ExportError(f"ONNX fp32 differs from PyTorch: least cosine {cosine.min():.5f} < {PARITY}")
        say("embedding the text gallery")
        keys = [(e.semantic_id, lang, e.text(lang)) for lang in LANGS for e in lexicon.entries]
        gallery = embed_texts(model, [text for _, _, text in keys]).astype(np.float32)
        np.save(tmp / GALLERY, gallery)
        (tmp / GALLERY_KEYS).write_text("semantic_id\tlang\ttext\n" + "".join(f"{i}\t{lang}\t{t}\n" for i, lang, t in keys),
                                        encoding="utf-8")
        quant = None
        if int8:
            quant = int8_graph(tmp / FP32, tmp / INT8, gallery, calibration, c.image_height, c.image_width, int8,
                               seed=seed, check=check, say=say, crop=c.crop)
        manifest = {
            "format": FORMAT, "run": str(Path(run).resolve()), "weights_sha256": weights_digest(model),
            "input": {"name": "images", "shape": ["batch", 1, c.image_height, c.image_width], "crop": c.crop,
                      "preparation": ("grey → crop to the ink, levels stretched → fit keeping aspect, centred"
                                      if c.crop else "grey → fit keeping aspect, pad right/bottom")
                                     + " → ink = 1 − grey/255 (train.run.images.decode)"},
            "output": {"name": "embeddings", "dim": c.embed_dim, "normalised": True},
            "opset": OPSET, "parity": {"images": len(check), "min_cosine": float(cosine.min()),
                                       "mean_cosine": float(cosine.mean())},
            "int8": quant, "lexicon": {"file": lexicon.path.name, "sha256": lexicon.sha256, "entries": len(lexicon)},
            "files": {name: sha256_file(tmp / name) for name in sorted(os.listdir(tmp)) if name != MANIFEST},
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return manifest


def quantize_export(folder: Path, calibration: Sequence[Path], settings: Int8Settings = Int8Settings(), *,
                    seed: int = 0, overwrite: bool = False, progress: Callable[[str], None] | None = None) -> dict:
    """Add (or with `overwrite`, replace) the int8 graph of an existing export folder (`int8_graph`), e.g.
    one whose run's weights stayed on another machine; returns the updated manifest. The graph and the
    manifest are written under temporary names and renamed into place."""
    folder = Path(folder)
    settings.check(calibration)
    manifest = read_manifest(folder, (FP32, GALLERY))  # EdgeError (a ValueError) names the fault
    if manifest.get("int8") and not overwrite:
        raise ExportError(f"{folder} already has an int8 graph; pass `overwrite=True` to replace it")
    height, width = manifest["input"]["shape"][2:]
    tmp, tmp_manifest = folder / f".{INT8}.{os.getpid()}.tmp", folder / f".{MANIFEST}.{os.getpid()}.tmp"
    try:
        manifest["int8"] = int8_graph(folder / FP32, tmp, np.load(folder / GALLERY), calibration, height, width,
                                      settings, seed=seed, say=progress or (lambda _msg: None),
                                      crop=bool(manifest["input"].get("crop", False)))
        manifest["files"][INT8] = sha256_file(tmp)
        manifest["files"] = dict(sorted(manifest["files"].items()))
        tmp_manifest.write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, folder / INT8)
        os.replace(tmp_manifest, folder / MANIFEST)
    finally:
        tmp.unlink(missing_ok=True)
        tmp_manifest.unlink(missing_ok=True)
    return manifest
