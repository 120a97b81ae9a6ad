"""`make bench`: our renderer beside TRDG and SynthTIGER on the same words, fonts and 64-px canvas.

    .venv/bin/python tests/benchmarks/bench.py --seconds 20 --repeats 2 --json bench.json [--corpus]

Every setting renders one word image and encodes it to PNG, in ONE process pinned to ONE core, for
`--seconds` of wall time after a warm-up; figures are images/s per core (best of `--repeats`). Our
settings use the distortion presets `none` (plain), `default` and `heavy`, the shard writer's PNG
encoder and the same five font files as the peers (`peers.py` documents the peers' settings). With
`--corpus`, it also times `synth corpus pretrain` (262,800 images) with every core, end to end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from tests.benchmarks.peers import (  # noqa: E402
    DEFAULT_FONT_IDS,
    _one_core_env,
    _pick_cpu,
    default_fonts,
    format_table,
    load_words,
    measure_peers,
)

OURS = {"ours-plain": "none", "ours-default": "default", "ours-heavy": "heavy"}
# Which of our settings each peer setting is compared with: comparable distortion.
COMPARE = {
    "trdg-default": "ours-plain", "trdg-basic-layout": "ours-plain", "synthtiger-plain": "ours-plain",
    "trdg-heavy": "ours-heavy", "synthtiger-heavy": "ours-heavy",
}


def _worker(job_path: str, result_path: str) -> None:
    """Runs in the pinned child: render + encode for `seconds`, write images/s."""
    import cv2
    import numpy as np

    from synth.dataset.shards import ShardConfig, encode_png
    from synth.fonts.catalogue import load_catalogue
    from synth.render.config import load_render_config
    from synth.render.recipe import Renderer, SampleTask

    cv2.setNumThreads(1)
    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    catalogue = load_catalogue()
    styles = [catalogue.get(style_id) for style_id in job["styles"]]
    renderer = Renderer(load_render_config(job["preset"]))
    level = ShardConfig().png_compression
    words = job["words"]
    tasks = [SampleTask(i, "es", words[i % len(words)], styles[i % len(styles)], 0, i) for i in range(len(words) * 4)]
    for task in tasks:  # warm-up: every (word, font) once, glyph caches filled; excluded
        encode_png(renderer.render(task)[0], level)
    n, png_bytes = 0, 0
    c0, t0 = time.process_time(), time.perf_counter()
    while time.perf_counter() - t0 < job["seconds"]:
        image, _ = renderer.render(tasks[n % len(tasks)])
        png_bytes += len(encode_png(image, level))
        n += 1
    elapsed = time.perf_counter() - t0
    Path(result_path).write_text(json.dumps({
        "images_per_s": n / elapsed, "n": n, "elapsed_s": elapsed, "cpu_s": time.process_time() - c0,
        "mean_png_bytes": png_bytes / n, "versions": {"numpy": np.__version__, "cv2": cv2.__version__},
    }), encoding="utf-8")


def measure_ours(words: list[str], seconds: float, repeats: int, log=print) -> dict:
    results = {}
    for name, preset in OURS.items():
        best, runs = None, []
        for _ in range(repeats):
            core = _pick_cpu(None)
            with tempfile.TemporaryDirectory() as tmp:
                job, out = Path(tmp) / "job.json", Path(tmp) / "out.json"
                job.write_text(json.dumps({"preset": preset, "styles": list(DEFAULT_FONT_IDS),
                                           "words": words, "seconds": seconds}), encoding="utf-8")
                proc = subprocess.run([sys.executable, __file__, "--worker", str(job), str(out)], env=_one_core_env(),
                                      preexec_fn=lambda: os.sched_setaffinity(0, {core}), capture_output=True, text=True)
                if proc.returncode != 0:
                    raise SystemExit(f"{name} failed: {proc.stderr.strip().splitlines()[-1]}")
                run = json.loads(out.read_text(encoding="utf-8"))
            log(f"[{name}] {run['images_per_s']:.1f} images/s on cpu {core} (cpu/wall {run['cpu_s'] / run['elapsed_s']:.2f})")
            runs.append(round(run["images_per_s"], 1))
            if best is None or run["images_per_s"] > best["images_per_s"]:
                best = run
        best["runs"] = runs
        best["settings"] = f"synth preset `{preset}`, render + PNG (shard writer's encoder)"
        results[name] = best
    return results


def time_corpus(log=print) -> dict:
    """Wall time of `synth corpus pretrain` on every core, into a temporary folder."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "pretrain"
        t0 = time.perf_counter()
        proc = subprocess.run([str(Path(sys.executable).parent / "synth"), "corpus", "pretrain", "--out", str(out),
                               "--workers", str(os.cpu_count())], capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"corpus pretrain failed: {proc.stderr.strip().splitlines()[-1]}")
        rows = sum(json.loads((out / "sizes.json").read_text()).values())
        size = sum(p.stat().st_size for p in out.rglob("*.parquet"))
    log(f"[corpus pretrain] {rows} images in {wall:.0f} s on {os.cpu_count()} cores ({rows / wall:.0f} images/s), {size / 2**20:.0f} MiB")
    return {"rows": rows, "wall_s": round(wall, 1), "images_per_s": round(rows / wall, 1), "cores": os.cpu_count(), "mib": round(size / 2**20)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--words", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", help="write every figure here")
    ap.add_argument("--corpus", action="store_true", help="also time `synth corpus pretrain` (several minutes)")
    ap.add_argument("--no-peers", action="store_true", help="measure only our renderer")
    args = ap.parse_args(argv)
    if args.worker:
        _worker(*args.worker)
        return 0
    words = load_words(args.words, font_paths=default_fonts())
    results = measure_ours(words, args.seconds, args.repeats)
    if not args.no_peers:
        results.update(measure_peers(words, default_fonts(), args.seconds, repeats=args.repeats))
    print()
    print(format_table(results))
    print()
    for peer, ours in COMPARE.items():
        mine, theirs = results.get(ours, {}).get("images_per_s"), results.get(peer, {}).get("images_per_s")
        if mine and theirs:
            print(f"{ours} / {peer}: {mine / theirs:.1f}x")
    if args.corpus:
        results["corpus-pretrain"] = time_corpus()
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
