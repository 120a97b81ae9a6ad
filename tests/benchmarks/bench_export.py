"""`make bench` (edge part): single-image latency and batched throughput of the image tower in PyTorch
fp32, ONNX Runtime fp32 and ONNX Runtime int8 (static QDQ), the model files' sizes, and — given a run and a
held-out set — the Acc@1 that int8 costs.

    .venv/bin/python tests/benchmarks/bench_export.py [--run RUN | --export DIR] [--data OOD --calibration SHARDS] [--json F]

- Latency: batch 1, one thread, median of 500 calls after 50 warm-up calls, at the run's input size
  (default 64×256, the paper's). The paper reports 2.89 ms on an RTX 4090. The ONNX graphs compared
  (fp32, int8 with uint8 and with int8 weights; the --int8-variants; each network variant's pair) are
  timed in turn, in blocks of calls, so their ratios hold on a shared machine whose speed drifts.
- Throughput: every core (intra-op threads = cores), 1,024 images in batches of each --batches size
  (32 and 256), median of 5 passes; one session at a time.
- --int8-profile: onnxruntime's profiler per kind of operator, fp32 against int8, and fp32/int8 latency
  of two int8-friendlier networks made from the tower (ReLU for hard-swish; also without squeeze-excite).
- Always: how closely this CPU's fused int8 kernels compute the QDQ graph's own arithmetic, with uint8
  weights (the export's default) and int8 weights (u8×s8 products saturate on x86 without VNNI).
- --int8-sqnr: the int8 graph's error tensor by tensor (SQNR against fp32, on held-out images).
- --openvino: the peer runtime OpenVINO on the same ONNX files (`pip install '.[bench]'`).
- Without --run or --export, the tower is randomly initialised and int8 is calibrated on random images:
  the speed is the same, the accuracy figures need a real run. --export takes a `train export` folder
  instead of a run (its fp32 graph and gallery), for runs whose weights stayed on another machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from train.config import ImageTowerConfig
from train.edge import onnx_session
from train.edge.export import export_onnx, int8_fidelity, quantize_int8, sample_images
from train.towers.image_tower import ImageTower

PAPER_LATENCY_MS = 2.89


def median_ms(call, warmup: int, calls: int) -> float:
    return interleaved_ms({"": call}, warmup, rounds=1, block=calls)[""]


def images_per_s(run, images: np.ndarray, batch: int, passes: int = 5) -> float:
    """Images per second of `run` over all of `images` in batches of `batch`: the median of `passes` timed
    passes after one untimed."""
    chunks = [images[i:i + batch] for i in range(0, len(images), batch)]
    seconds = []
    for _ in range(passes + 1):
        start = time.perf_counter()
        for chunk in chunks:
            run(chunk)
        seconds.append(time.perf_counter() - start)
    return len(images) / statistics.median(seconds[1:])


def interleaved_ms(calls: dict, warmup: int = 10, rounds: int = 10, block: int = 50) -> dict[str, float]:
    """Median milliseconds per call of each of `calls`, timed in turn in blocks: each round runs every call
    `warmup` times untimed, then `block` times timed. Taking turns spreads a slow spell of a shared machine
    over all of them, so their ratios hold; blocks keep each graph's weights in cache as in steady use.
    (Taking turns call by call evicted them: every figure came out up to 2× slower at 64×256, and the
    ratios were off.)"""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            for _ in range(warmup):
                call()
            for _ in range(block):
                start = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(t) for name, t in times.items()}


def op_profile(path: Path, image: np.ndarray, runs: int = 300) -> dict[str, float]:
    """Milliseconds per call spent in each kind of operator (batch 1, one thread), from onnxruntime's own
    profiler on the graph as it runs (after fusion and layout changes). Convolutions are split into the stem
    (the 3×3 on the one-channel image), depthwise and pointwise (1×1) ones. Profiling slows every operator,
    so compare shares and fp32 against int8, not the absolute figures."""
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = str(path.with_suffix(""))
    options.optimized_model_filepath = str(path.with_suffix(".optimized.onnx"))
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for _ in range(runs):
        session.run(None, {"images": image})
    events = json.loads(Path(session.end_profiling()).read_text(encoding="utf-8"))
    kinds = {}
    for node in onnx.load(options.optimized_model_filepath).graph.node:
        attrs = {a.name: a for a in node.attribute}
        if "Conv" in node.op_type:
            group = attrs["group"].i if "group" in attrs else 1
            kernel = list(attrs["kernel_shape"].ints) if "kernel_shape" in attrs else []
            kinds[node.name] = ("conv, depthwise" if group > 1 else "conv, pointwise 1×1" if kernel == [1, 1]
                                else "conv, stem 3×3")
        elif node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            kinds[node.name] = "quantise / dequantise"
        elif node.op_type in ("ReorderInput", "ReorderOutput"):
            kinds[node.name] = "NCHWc layout reorders"
        else:
            kinds[node.name] = node.op_type
    calls = sum(1 for e in events if e.get("name") == "model_run")
    totals: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            kind = kinds.get(e["name"].removesuffix("_kernel_time"), e["args"]["op_name"])
            totals[kind] = totals.get(kind, 0.0) + e["dur"] / 1000 / calls
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def network_variants(tower: ImageTower, calibration: np.ndarray, image: np.ndarray, tmp: Path) -> dict:
    """fp32 and int8 latency (batch 1, one thread) of the tower as built and of two int8-friendlier
    variants made from it: every hard-swish replaced by ReLU (which int8 convolutions fuse), and that
    without the squeeze-excite gates. Random weights suffice: speed does not depend on them."""
    import copy

    from train.towers.image_tower import SqueezeExcite

    def replaced(net: torch.nn.Module, kind: type, make: type) -> torch.nn.Module:
        net = copy.deepcopy(net)
        for module in list(net.modules()):
            for name, child in module.named_children():
                if isinstance(child, kind):
                    setattr(module, name, make())
        return net

    relu = replaced(tower, torch.nn.Hardswish, torch.nn.ReLU)
    plain = replaced(relu, SqueezeExcite, torch.nn.Identity)
    out = {}
    for name, net in (("MobileNetV3-Small as built", tower), ("ReLU for hard-swish", relu),
                      ("ReLU, no squeeze-excite", plain)):
        fp32, int8 = tmp / "net.onnx", tmp / "net.int8.onnx"
        export_onnx(net, fp32)
        quantize_int8(fp32, int8, calibration)
        sessions = {kind: onnx_session(path, 1) for kind, path in (("fp32", fp32), ("int8", int8))}
        out[name] = interleaved_ms({kind: lambda s=s: s.run(None, {"images": image}) for kind, s in sessions.items()})
    return out


def openvino_latency(fp32: Path, int8: Path, image: np.ndarray) -> dict:
    """The peer runtime: OpenVINO's CPU plugin on the same two ONNX files (it runs the QDQ graph in int8),
    batch 1, one thread. Needs `pip install '.[bench]'`."""
    import openvino as ov

    core, out = ov.Core(), {}
    for name, path in (("openvino-fp32", fp32), ("openvino-int8", int8)):
        model = core.read_model(str(path))
        model.reshape(list(image.shape))
        request = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": 1, "PERFORMANCE_HINT": "LATENCY",
                                                    "INFERENCE_PRECISION_HINT": "f32"}).create_infer_request()
        out[name] = median_ms(lambda r=request: r.infer({0: image}), 50, 500)
    return out


def int8_sqnr(fp32: Path, int8: Path, images: np.ndarray, tmp: Path) -> dict[str, float]:
    """End-to-end signal-to-quantisation-noise ratio (dB) of every tensor the int8 graph quantises: the fp32
    graph's value against the int8 graph's on the same `images` (onnxruntime's qdq_loss_debug), in graph
    order. It shows where int8's error grows, tensor by tensor."""
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    from train.edge.export import image_batches, prepare_graph

    nodes = prepare_graph(fp32, tmp / "sqnr.pre.onnx")  # the graph quantize_int8 quantised
    modify_model_output_intermediate_tensors(str(tmp / "sqnr.pre.onnx"), str(tmp / "sqnr.fp32.onnx"))
    modify_model_output_intermediate_tensors(str(int8), str(tmp / "sqnr.int8.onnx"))
    reference = collect_activations(str(tmp / "sqnr.fp32.onnx"), image_batches(images))
    errors = compute_activation_error(create_activation_matching(
        collect_activations(str(tmp / "sqnr.int8.onnx"), image_batches(images)), reference))
    order = [out for node in nodes for out in node.output]
    return {name: float(errors[name]["xmodel_err"]) for name in order if "xmodel_err" in errors.get(name, {})}


def int8_accuracy(folder: Path, data: list[Path], cores: int, images: np.ndarray | None = None, **options) -> dict[str, float]:
    """Acc@1 per language of the int8 graph of the export in `folder` on the `data` shards; with `images`,
    quantised again first (`quantize_int8` with `options`). The manifest takes the file's new digest,
    since the re-quantised file is this benchmark's own."""
    from hwkit.files import sha256_file
    from train.edge import EdgeModel, evaluate_export
    from train.edge.export import FP32, INT8, MANIFEST

    if images is not None:
        quantize_int8(folder / FP32, folder / INT8, images, **options)
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    manifest["files"][INT8] = sha256_file(folder / INT8)
    (folder / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    return {lang: r["acc@1"] for lang, r in evaluate_export(EdgeModel(folder, int8=True, threads=cores), data).items()}


def accuracy_variants(folder: Path, args, cores: int) -> dict:
    """int8 Acc@1 (MinMax) with parts of the tower kept in fp32, re-quantising the export in `folder`. Parts
    are picked on the graph quantize_int8 quantises (`prepare_graph`), by their place in it."""
    from train.edge import EdgeModel
    from train.edge.export import FP32, prepare_graph

    nodes = prepare_graph(folder / FP32, folder / "variants.pre.onnx")
    (folder / "variants.pre.onnx").unlink()

    pooled = next(i for i, n in enumerate(nodes) if n.op_type == "ReduceMean")  # the projector follows
    projector = [n.name for n in nodes[pooled + 1:]]
    gates = {n.name.split("/reduce/")[0] + "/" for n in nodes if "/reduce/" in n.name}  # each squeeze-excite
    squeeze_excite = [n.name for n in nodes if any(n.name.startswith(gate) or n.output[0].startswith(gate) for gate in gates)]
    h, w = EdgeModel(folder).manifest["input"]["shape"][2:]
    variants = {
        "first conv fp32": ({"nodes_to_exclude": [next(n.name for n in nodes if n.op_type == "Conv")]}, 512),
        "stem fp32 (--int8-fp32-stages 1)": ({"fp32_stages": 1}, 512),
        "stem and block 1 fp32 (--int8-fp32-stages 2)": ({"fp32_stages": 2}, 512),
        "stem and blocks 1-2 fp32 (--int8-fp32-stages 3)": ({"fp32_stages": 3}, 512),
        "projector fp32": ({"nodes_to_exclude": projector}, 512),
        "stem, block 1 and projector fp32": ({"fp32_stages": 2, "nodes_to_exclude": projector}, 512),
        "squeeze-excite gates fp32": ({"nodes_to_exclude": squeeze_excite}, 512),
        "only convolutions quantised": ({"op_types_to_quantize": ["Conv"]}, 512),
        "int8 weights (u8×s8)": ({"weights": "int8"}, 512),
        "7-bit int8 weights (reduce_range)": ({"weights": "int8", "reduce_range": True}, 512),
        "2,048 calibration images": ({}, 2048),
    }
    return {f"onnx-int8 (minmax, {name})": int8_accuracy(folder, args.data, cores,
                                                         sample_images(args.calibration or args.data, n, h, w), **options)
            for name, (options, n) in variants.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a trained run (default: a random tower at 64×256)")
    parser.add_argument("--export", type=Path, help="instead of --run, a `train export` folder (its fp32 graph and "
                        "gallery; no PyTorch figures), e.g. one brought back from a GPU machine without the weights")
    parser.add_argument("--data", type=Path, action="append", help="held-out shards for the int8 accuracy check")
    parser.add_argument("--calibration", type=Path, action="append", help="shards for int8 calibration")
    parser.add_argument("--calibration-images", type=int, default=512)
    parser.add_argument("--int8-variants", action="store_true", help="also time other int8 settings (batch 1, 1 thread)")
    parser.add_argument("--calibration-methods", default="minmax",
                        help="comma-separated int8 calibrations to measure Acc@1 for (minmax, percentile)")
    parser.add_argument("--int8-accuracy-variants", action="store_true",
                        help="also measure Acc@1 with some layers kept in fp32, and with 2,048 calibration images")
    parser.add_argument("--int8-distil-steps", type=int, default=0,
                        help="also Acc@1 of int8 distilled for this many steps (train quantize --distil-steps)")
    parser.add_argument("--int8-profile", action="store_true",
                        help="also profile fp32 and int8 per kind of operator, and time int8-friendlier networks")
    parser.add_argument("--openvino", action="store_true", help="also time OpenVINO on the same files (peer)")
    parser.add_argument("--int8-sqnr", action="store_true",
                        help="also the int8 graph's error tensor by tensor (SQNR against fp32, on --data images)")
    parser.add_argument("--batches", default="32,256", help="comma-separated batch sizes for the throughput figures")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    batches = [int(b) for b in args.batches.split(",")]

    if args.run and args.export:
        parser.error("pass --run or --export, not both")
    tower = None
    if args.run:
        from train.evaluate import load_model

        model, _, _ = load_model(args.run, device="cpu")
        tower = model.image.eval()
        h, w = tower.config.image_height, tower.config.image_width
    elif args.export:
        from train.edge import EdgeModel

        h, w = EdgeModel(args.export).manifest["input"]["shape"][2:]
    else:
        torch.manual_seed(0)
        tower = ImageTower(ImageTowerConfig()).eval()
        h, w = tower.config.image_height, tower.config.image_width
    results: dict = {"input": f"{h}x{w}", "cores": cores, "batches": batches, "torch": torch.__version__,
                     "latency_ms": {}, "images_per_s": {}}
    with tempfile.TemporaryDirectory() as tmp:
        from train.edge.export import FP32

        fp32, int8 = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        if tower is None:
            shutil.copyfile(args.export / FP32, fp32)
        else:
            export_onnx(tower, fp32)
        calibration = (sample_images(args.calibration, args.calibration_images, h, w) if args.calibration
                       else np.random.default_rng(0).random((64, 1, h, w), dtype=np.float32))
        quantize_int8(fp32, int8, calibration)
        held_out = sample_images(args.data, 256, h, w, seed=5) if args.data else np.random.default_rng(3).random((64, 1, h, w), dtype=np.float32)
        signed = Path(tmp) / "int8-weights.onnx"
        quantize_int8(fp32, signed, calibration, weights="int8")
        # onnxruntime's remedy for u8×s8 saturation: weights in [-64, 64], so no int16 pair sum can overflow
        seven = Path(tmp) / "int8-weights-7bit.onnx"
        quantize_int8(fp32, seven, calibration, weights="int8", reduce_range=True)
        results["int8_kernels_vs_graph"] = {name: int8_fidelity(fp32, path, held_out)["cosine_kernels_to_graph"]["mean"]
                                            for name, path in (("uint8 weights", int8), ("int8 weights", signed),
                                                               ("7-bit int8 weights", seven))}
        results["size_mb"] = {"onnx-fp32": fp32.stat().st_size / 1e6, "onnx-int8": int8.stat().st_size / 1e6}
        one = np.random.default_rng(1).random((1, 1, h, w), dtype=np.float32)
        many = np.random.default_rng(2).random((1024, 1, h, w), dtype=np.float32)

        single = {"onnx-fp32": onnx_session(fp32, 1), "onnx-int8": onnx_session(int8, 1),  # all graph optimisations
                  "onnx-int8 (int8 weights)": onnx_session(signed, 1),
                  "onnx-int8 (7-bit int8 weights)": onnx_session(seven, 1)}
        results["latency_ms"].update(interleaved_ms({name: lambda s=s: s.run(None, {"images": one}) for name, s in single.items()}))
        for name, path in (("onnx-fp32", fp32), ("onnx-int8", int8)):
            # one session at a time: an idle session's threads spin for a while and would slow the other's
            batched = onnx_session(path, cores)
            results["images_per_s"][name] = {b: images_per_s(lambda x, s=batched: s.run(None, {"images": x}), many, b)
                                             for b in batches}
            del batched
        if args.int8_variants:
            from onnxruntime.quantization import QuantFormat, QuantType

            variants = {"QDQ, Conv/Gemm/MatMul only": {"op_types_to_quantize": ["Conv", "Gemm", "MatMul"]},
                        "QDQ, Conv only": {"op_types_to_quantize": ["Conv"]},
                        "QOperator": {"quant_format": QuantFormat.QOperator},
                        "QDQ, int8 activations and weights": {"activation_type": QuantType.QInt8, "weights": "int8"},
                        "QDQ, stem and blocks 1-2 in fp32 (--int8-fp32-stages 3)": {"fp32_stages": 3}}
            sessions = {"fp32 (the same rounds)": single["onnx-fp32"], "default int8 (the same rounds)": single["onnx-int8"]}
            for i, (name, options) in enumerate(variants.items()):
                quantize_int8(fp32, Path(tmp) / f"variant{i}.onnx", calibration, **options)
                sessions[name] = onnx_session(Path(tmp) / f"variant{i}.onnx", 1)
            results["int8_variants_ms"] = interleaved_ms({name: lambda s=s: s.run(None, {"images": one})
                                                          for name, s in sessions.items()})

        if args.int8_profile:
            results["op_profile_ms"] = {name: op_profile(path, one) for name, path in (("fp32", fp32), ("int8", int8))}
            if tower is not None:  # the variants are made from the PyTorch tower
                results["networks_ms"] = network_variants(tower, calibration, one, Path(tmp))
        if args.openvino:
            results["latency_ms"].update(openvino_latency(fp32, int8, one))
        if tower is not None:  # last: torch's idle OpenMP threads keep spinning and slow what runs next
            torch.set_num_threads(1)
            with torch.no_grad():
                x1, xn = torch.from_numpy(one), torch.from_numpy(many)
                results["latency_ms"]["pytorch-fp32"] = median_ms(lambda: tower(x1), 50, 500)
                torch.set_num_threads(cores)
                results["images_per_s"]["pytorch-fp32"] = {b: images_per_s(tower, xn, b, passes=2) for b in batches}

        if (args.run or args.export) and args.data:
            from synth.lexicon import load_lexicon
            from train.edge import EdgeModel, evaluate_export
            from train.edge.export import export_run

            folder = Path(tmp) / "export"
            if args.export:
                shutil.copytree(args.export, folder)
            else:
                export_run(model, args.run, folder, load_lexicon())
            report = evaluate_export(EdgeModel(folder, threads=cores), args.data)
            results["acc@1"] = {"onnx-fp32": {lang: r["acc@1"] for lang, r in report.items()}}
            for method in args.calibration_methods.split(","):
                results["acc@1"][f"onnx-int8 ({method})"] = int8_accuracy(folder, args.data, cores, calibration, method=method)
            if args.int8_distil_steps:
                from train.edge.export import GALLERY, INT8, Int8Settings, int8_graph

                settings = Int8Settings(images=args.calibration_images, distil_steps=args.int8_distil_steps)
                results["int8_distillation"] = int8_graph(
                    folder / FP32, folder / INT8, np.load(folder / GALLERY), args.calibration or args.data, h, w,
                    settings)["distillation"]
                results["acc@1"][f"onnx-int8 (minmax, distilled {args.int8_distil_steps} steps)"] = int8_accuracy(
                    folder, args.data, cores)
            if args.int8_accuracy_variants:
                results["acc@1"].update(accuracy_variants(folder, args, cores))
        if args.int8_sqnr:
            results["int8_sqnr_db"] = int8_sqnr(fp32, int8, held_out, Path(tmp))

    for name, ms in results["latency_ms"].items():
        print(f"latency, batch 1, 1 thread, {h}×{w}, {name}: {ms:.3f} ms ({ms / PAPER_LATENCY_MS:.2f}× the paper's "
              f"{PAPER_LATENCY_MS} ms on an RTX 4090)")
    for name, rates in results["images_per_s"].items():
        print(f"throughput, {cores} threads, {h}×{w}, {name}: " +
              ", ".join(f"batch {b} {rate:,.0f} images/s" for b, rate in rates.items()))
    for name, mb in results["size_mb"].items():
        print(f"model file, {name}: {mb:.2f} MB")
    for name, ms in results.get("int8_variants_ms", {}).items():
        print(f"latency, batch 1, 1 thread, {h}×{w}, int8 variant {name}: {ms:.3f} ms")
    if "op_profile_ms" in results:
        fp32_ops, int8_ops = results["op_profile_ms"]["fp32"], results["op_profile_ms"]["int8"]
        print(f"profile, batch 1, 1 thread, ms per call (profiler on): {'operators':28} {'fp32':>7} {'int8':>7}")
        for kind in sorted(set(fp32_ops) | set(int8_ops), key=lambda k: -max(fp32_ops.get(k, 0), int8_ops.get(k, 0))):
            print(f"  {kind:28} {fp32_ops.get(kind, 0):7.3f} {int8_ops.get(kind, 0):7.3f}")
        print(f"  {'total':28} {sum(fp32_ops.values()):7.3f} {sum(int8_ops.values()):7.3f}")
        for name, ms in results.get("networks_ms", {}).items():
            print(f"latency, batch 1, 1 thread, {h}×{w}, {name}: fp32 {ms['fp32']:.3f} ms, int8 {ms['int8']:.3f} ms "
                  f"({ms['int8'] / ms['fp32']:.2f}×)")
    if "int8_sqnr_db" in results:
        sqnr = results["int8_sqnr_db"]
        values = np.array(list(sqnr.values()))
        print(f"int8 SQNR against fp32 over {len(sqnr)} tensors (graph order in the JSON): last "
              f"{sqnr[list(sqnr)[-1]]:.1f} dB ({list(sqnr)[-1]}), median {np.median(values):.1f} dB; the ten lowest:")
        for name in sorted(sqnr, key=sqnr.get)[:10]:
            print(f"  {sqnr[name]:5.1f} dB  {name}")
    print("int8 kernels on this CPU vs the QDQ graph's arithmetic, mean cosine: " +
          ", ".join(f"{name} {c:.5f}" for name, c in results["int8_kernels_vs_graph"].items()))
    fp32_ms, int8_ms = results["latency_ms"]["onnx-fp32"], results["latency_ms"]["onnx-int8"]
    print(f"int8 / fp32 latency: {int8_ms / fp32_ms:.2f}×" + (f"; ONNX fp32 / PyTorch: {fp32_ms / results['latency_ms']['pytorch-fp32']:.2f}×"
                                                            if "pytorch-fp32" in results["latency_ms"] else ""))
    for name, accs in results.get("acc@1", {}).items():
        print(f"Acc@1, {name}: " + ", ".join(f"{lang} {a:.4f}" for lang, a in accs.items()))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
