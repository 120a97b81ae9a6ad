"""Quantisation-aware distillation of an int8 export: onnxruntime's QDQ graph run in PyTorch node by node, with
the roundings onnxruntime makes (straight-through gradients), its float weights tuned so that its embeddings
rank the text gallery as the fp32 graph does. The tuned weights are then quantised again as usual.

Why run the QDQ graph rather than fake-quantise the PyTorch tower (torch.ao's QAT): onnxruntime rounds
tensors the PyTorch modules do not expose (a convolution's output before hard-swish, the inlined
HardSigmoid gate, the squeeze-excite pooling, the biases at input scale × weight scale). Fake-quantising
module outputs missed them and trained against the wrong noise. The graph itself holds every one, for any
network; on the cpu-small run `QDQGraph` reproduces onnxruntime's fused int8 kernels to a mean cosine of
0.99994 (uint8 weights).

    loss = KL(p_fp32 ‖ p_int8),  p(x) = softmax(e(x) · Gᵀ / τ)

e(x) the L2-normalised embedding of image x, G the export's text gallery (every lexicon entry, every
language), τ the temperature. Only the image tower's float weights and biases train; the activation ranges
stay those of the calibration.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class DistilConfig:
    steps: int = 300
    lr: float = 1e-5          # Adam; the weights need only nudging off rounding boundaries
    temperature: float = 0.02
    batch: int = 64
    images: int = 4096        # drawn once from the calibration shards
    seed: int = 0


def _attributes(node) -> dict:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _per_channel(t: torch.Tensor, axis: int, ndim: int) -> torch.Tensor:
    shape = [1] * ndim
    shape[axis] = -1
    return t.reshape(shape)


def _straight_through(value: torch.Tensor, rounded: torch.Tensor) -> torch.Tensor:
    """`rounded` forward, the identity backward."""
    return value + (rounded - value).detach()


class QDQGraph(nn.Module):
    """A `quantize_int8` graph (QDQ format) as a differentiable PyTorch module. Its parameters are the float
    weights and biases of the graph it was quantised from (`prepared`, the `prepare_graph` output), keyed
    by initializer name; each forward quantises them as onnxruntime did: weights per channel, symmetric
    (uint8 with zero point 128, or int8), biases in int32 at the stored input × weight scale.
    `exact_weights=True` uses the stored integer weights instead (the graph exactly as written)."""

    def __init__(self, int8: Path, prepared: Path) -> None:
        super().__init__()
        import onnx
        from onnx import numpy_helper

        graph = onnx.load(int8).graph
        self.input = graph.input[0].name
        self.output = graph.output[0].name
        self.nodes = [(n.op_type, list(n.input), list(n.output), _attributes(n)) for n in graph.node]
        unknown = {op for op, *_ in self.nodes} - set(self.OPS)
        if unknown:
            raise ValueError(f"{int8}: operators {', '.join(sorted(unknown))} are not supported by QDQGraph")
        self.consts = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in graph.initializer}
        floats = {t.name: numpy_helper.to_array(t) for t in onnx.load(prepared).graph.initializer}
        self.params = nn.ParameterDict()
        self.names: dict[str, str] = {}       # parameter key → initializer name in `prepared`
        self.sources: dict[str, str] = {}     # DQ output → parameter key
        for op, inputs, outputs, _ in self.nodes:
            name = inputs[0].removesuffix("_quantized")
            if op == "DequantizeLinear" and inputs[0].endswith("_quantized") and name in floats:
                key = f"p{len(self.params)}"
                self.params[key] = nn.Parameter(torch.from_numpy(floats[name].astype(np.float32)))
                self.names[key], self.sources[outputs[0]] = name, key
        self.exact_weights = False

    OPS = ("QuantizeLinear", "DequantizeLinear", "Conv", "Gemm", "HardSigmoid", "Relu", "Mul", "Add", "Sub", "Div",
           "GlobalAveragePool", "ReduceMean", "ReduceL2", "Clip", "Shape", "Expand", "Flatten", "Reshape")

    def _dequantize(self, inputs: list[str], output: str, axis: int, env: dict) -> torch.Tensor:
        if inputs[0] in env:  # an activation: its QuantizeLinear already rounded it
            return env[inputs[0]]
        q, scale = self.consts[inputs[0]], self.consts[inputs[1]].float()
        zero = self.consts[inputs[2]].float() if len(inputs) > 2 and inputs[2] else torch.zeros_like(scale)
        key = self.sources.get(output)
        if key is None or self.exact_weights:
            if scale.dim():
                scale, zero = _per_channel(scale, axis, q.dim()), _per_channel(zero, axis, q.dim())
            return (q.float() - zero) * scale
        w = self.params[key]
        if q.dtype == torch.int32:  # a bias: input scale × weight scale, as calibrated
            return _straight_through(w, torch.round(w.detach() / scale) * scale)
        centre, half = (128.0, 127.5) if q.dtype == torch.uint8 else (0.0, 127.0)
        reduce = [d for d in range(w.dim()) if d != axis]
        step = _per_channel((w.detach().abs().amax(dim=reduce) / half).clamp_min(1e-12), axis, w.dim())
        # x / step as onnxruntime divides (multiplying by 1/step rounds −127.5 up to −127)
        levels = (torch.round(w.detach() / step) + centre).clamp(0 if centre else -127, 255 if centre else 127)
        return _straight_through(w, (levels - centre) * step)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        env: dict[str, torch.Tensor] = {self.input: images}

        def value(name: str):
            return env[name] if name in env else self.consts.get(name) if name else None

        for op, inputs, outputs, a in self.nodes:
            v = [value(n) for n in inputs]
            if op == "QuantizeLinear":
                low, high = (0, 255) if v[2].dtype == torch.uint8 else (-128, 127)
                y = torch.fake_quantize_per_tensor_affine(v[0], float(v[1]), int(v[2]), low, high)
            elif op == "DequantizeLinear":
                y = self._dequantize(inputs, outputs[0], a.get("axis", 1), env)
            elif op == "Conv":
                pads = a.get("pads", [0, 0, 0, 0])
                if pads[:2] != pads[2:]:
                    raise ValueError(f"Conv {outputs[0]}: asymmetric padding {pads} is not supported")
                y = F.conv2d(v[0], v[1], v[2] if len(v) > 2 else None, a.get("strides", 1), pads[:2],
                             a.get("dilations", 1), a.get("group", 1))
            elif op == "Gemm":
                y = a.get("alpha", 1.0) * (v[0].T if a.get("transA") else v[0]) @ (v[1].T if a.get("transB") else v[1])
                if len(v) > 2 and v[2] is not None:
                    y = y + a.get("beta", 1.0) * v[2]
            elif op == "HardSigmoid":
                y = (a.get("alpha", 0.2) * v[0] + a.get("beta", 0.5)).clamp(0, 1)
            elif op == "Relu":
                y = F.relu(v[0])
            elif op in ("Mul", "Add", "Sub", "Div"):
                y = {"Mul": torch.mul, "Add": torch.add, "Sub": torch.sub, "Div": torch.div}[op](v[0], v[1])
            elif op == "GlobalAveragePool":
                y = v[0].mean(dim=(2, 3), keepdim=True)
            elif op in ("ReduceMean", "ReduceL2"):
                axes = tuple(a["axes"]) if "axes" in a else tuple(v[1].tolist())
                reduce = torch.mean if op == "ReduceMean" else torch.linalg.vector_norm
                y = reduce(v[0], dim=axes, keepdim=bool(a.get("keepdims", 1)))
            elif op == "Clip":
                y = v[0].clamp(*(float(b) if b is not None else None for b in (v + [None, None])[1:3]))
            elif op == "Shape":
                y = torch.tensor(v[0].shape)
            elif op == "Expand":
                y = v[0].expand(*v[1].tolist())
            elif op == "Flatten":
                y = v[0].flatten(a.get("axis", 1))
            else:  # Reshape
                y = v[0].reshape(*v[1].tolist())
            env[outputs[0]] = y
        return env[self.output]

    def weights(self) -> dict[str, np.ndarray]:
        """The float weights and biases, by initializer name in the prepared graph."""
        return {self.names[k]: p.detach().numpy().copy() for k, p in self.params.items()}


def distil(graph: QDQGraph, teacher: Callable[[np.ndarray], np.ndarray], gallery: np.ndarray, images: np.ndarray,
           config: DistilConfig, progress: Callable[[int, float], None] | None = None) -> dict:
    """Tune `graph`'s weights for `config.steps` Adam steps on batches drawn (seeded) from `images`, so that
    its gallery distribution follows `teacher`'s (the fp32 embeddings; loss in the module docstring).
    Returns the settings and the first and last 20 steps' mean loss."""
    rng = np.random.default_rng(config.seed)
    g = torch.from_numpy(np.ascontiguousarray(gallery, dtype=np.float32))
    optimiser = torch.optim.Adam(graph.params.parameters(), lr=config.lr)
    losses, started = [], time.perf_counter()
    for step in range(config.steps):
        batch = images[rng.choice(len(images), min(config.batch, len(images)), replace=False)]
        target = F.log_softmax(torch.from_numpy(teacher(batch)) @ g.T / config.temperature, dim=1)
        student = F.log_softmax(graph(torch.from_numpy(batch)) @ g.T / config.temperature, dim=1)
        loss = F.kl_div(student, target, log_target=True, reduction="batchmean")
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
        if progress:
            progress(step + 1, losses[-1])
    window = max(1, min(20, len(losses) // 4))
    return {**asdict(config), "images": len(images), "loss_first": float(np.mean(losses[:window])) if losses else None,
            "loss_last": float(np.mean(losses[-window:])) if losses else None,
            "seconds": round(time.perf_counter() - started, 1)}


def write_tuned(prepared: Path, weights: dict[str, np.ndarray], out: Path) -> None:
    """`prepared` with its initializers replaced by `weights` (same names), saved at `out`."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(prepared)
    for tensor in model.graph.initializer:
        if tensor.name in weights:
            tensor.CopyFrom(numpy_helper.from_array(weights[tensor.name].astype(np.float32), tensor.name))
    onnx.save(model, out)
