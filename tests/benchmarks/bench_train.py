"""`make bench` (training part): training throughput, image-tower size and single-image latency.

    .venv/bin/python tests/benchmarks/bench_train.py [--steps 10] [--json out/bench-train.json]

- Training images/s: the full training step (image tower forward + backward, text tower through the
  frozen-prefix cache, RetrievalLoss, AdamW) on random images, for each input size, with every core.
  Data loading is left out: it runs in a worker process beside the step.
- Image-tower parameters, against the paper's 1.29 M.
- Single-image latency: batch 1, one thread, eval mode, median of 200 calls after a warm-up (the paper
  reports 2.89 ms on an RTX 4090), in eager PyTorch.
- With a CUDA device: training images/s and batch-1 latency on it as well.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.train_fixtures import LEXICON, make_tiny_bert
from train.objectives.losses import LogitScale, RetrievalLoss
from train.towers.image_tower import ImageTower, ImageTowerConfig, count_parameters
from train.towers.text_tower import TextTower, TextTowerConfig

PAPER_PARAMETERS = 1_290_000
PAPER_LATENCY_MS = 2.89  # RTX 4090
SIZES = ((32, 128), (48, 192), (64, 256))


def train_throughput(device: torch.device, height: int, width: int, batch: int, steps: int, text: TextTower) -> float:
    torch.manual_seed(0)
    image = ImageTower(ImageTowerConfig(image_height=height, image_width=width)).to(device).train()
    scale = LogitScale().to(device)
    params = [*image.parameters(), *scale.parameters(), *(p for p in text.parameters() if p.requires_grad)]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    loss_fn = RetrievalLoss()
    x = torch.rand(batch, 1, height, width, device=device)
    words = [row[i % 3] for row in LEXICON for i in range(3)]
    texts = [words[i % len(words)] for i in range(batch)]
    ids = torch.tensor([i % len(words) // 3 for i in range(batch)], device=device)
    autocast = device.type == "cuda"
    timings = []
    for step in range(steps + 2):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            zi, zt = image(x), text(texts)
        loss = loss_fn(zi.float(), zt.float(), ids, scale())["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= 2:  # warm-up steps excluded
            timings.append(time.perf_counter() - start)
    return batch / statistics.median(timings)


@torch.no_grad()
def latency_ms(model: torch.nn.Module, x: torch.Tensor, calls: int = 200) -> float:
    for _ in range(20):
        model(x)
    times = []
    for _ in range(calls):
        if x.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        model(x)
        if x.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per size")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    results: dict = {"threads": torch.get_num_threads(), "torch": torch.__version__}
    image = ImageTower()
    results["image_tower_parameters"] = count_parameters(image)
    print(f"image tower: {results['image_tower_parameters']:,} parameters "
          f"({results['image_tower_parameters'] / PAPER_PARAMETERS:.1%} of the paper's 1.29 M)")

    with tempfile.TemporaryDirectory() as tmp:
        # A small BERT stands in for the text tower: with the frozen-prefix cache a step runs only the
        # projector (cpu-small) or the top layers on the batch's unique words, a small share of the step.
        text = TextTower(TextTowerConfig(model_path=str(make_tiny_bert(Path(tmp) / "bert")), prefix=""))
        text.lock(0)
        devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
        results["train_images_per_s"] = {}
        for device in devices:
            text.to(device)
            for h, w in SIZES:
                rate = train_throughput(device, h, w, args.batch, args.steps, text)
                results["train_images_per_s"][f"{device.type} {h}x{w}"] = rate
                print(f"training, {device.type}, {h}×{w}, batch {args.batch}: {rate:,.0f} images/s")

    torch.set_num_threads(1)
    image.eval()
    x = torch.rand(1, 1, 64, 256)
    results["latency_ms"] = {"pytorch-cpu-1thread": latency_ms(image, x)}
    if torch.cuda.is_available():
        results["latency_ms"]["pytorch-cuda"] = latency_ms(image.cuda(), x.cuda())
    for name, ms in results["latency_ms"].items():
        print(f"latency, batch 1, 64×256, {name}: {ms:.2f} ms ({ms / PAPER_LATENCY_MS:.2f}× the paper's 2.89 ms on an RTX 4090)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
