"""Image-tower inference on a CUDA GPU at the paper's 64×256: batch-1 latency and batched throughput, in
fp32 and bf16 autocast, eager and as a replayed CUDA graph (the paper reports 2.89 ms on an RTX 4090).
Random weights: speed does not depend on them. Needs a GPU; prints one table and optionally writes JSON.

    python tests/benchmarks/bench_gpu.py [--json out/bench-gpu.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from train.config import ImageTowerConfig  # noqa: E402
from train.towers.image_tower import ImageTower  # noqa: E402


def timed_ms(call, warmup: int, calls: int) -> float:
    """Median milliseconds per call, timed with CUDA events."""
    for _ in range(warmup):
        call()
    torch.cuda.synchronize()
    times = []
    for _ in range(calls):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        call()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def runner(model: torch.nn.Module, x: torch.Tensor, bf16: bool, graph: bool):
    def forward():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            return model(x)

    if not graph:
        return forward
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            forward()
    torch.cuda.current_stream().wait_stream(stream)
    cuda_graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(cuda_graph):
        forward()
    return cuda_graph.replay


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=1460, help="batch size for throughput (the paper's batch)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu: no CUDA device; this benchmark needs a GPU")
    torch.backends.cudnn.benchmark = True
    model = ImageTower(ImageTowerConfig()).cuda().eval()
    rows = []
    with torch.inference_mode():
        for bf16 in (False, True):
            for graph in (False, True):
                one = runner(model, torch.rand(1, 1, 64, 256, device="cuda"), bf16, graph)
                many = runner(model, torch.rand(args.batch, 1, 64, 256, device="cuda"), bf16, graph)
                latency = timed_ms(one, 20, 200)
                batch_ms = timed_ms(many, 5, 30)
                rows.append({"precision": "bf16" if bf16 else "fp32", "mode": "CUDA graph" if graph else "eager",
                             "latency_ms": round(latency, 3), "images_per_s": round(args.batch / batch_ms * 1000)})
    print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, image tower 64×256, "
          f"latency at batch 1, throughput at batch {args.batch}")
    print("| precision | mode | latency (ms) | images/s |\n|---|---|---:|---:|")
    for r in rows:
        print(f"| {r['precision']} | {r['mode']} | {r['latency_ms']:.3f} | {r['images_per_s']:,} |")
    if args.json:
        args.json.write_text(json.dumps({"device": torch.cuda.get_device_name(0), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
