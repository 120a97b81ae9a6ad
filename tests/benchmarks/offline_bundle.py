"""Carry a full-scale run to an offline machine that takes only small uploads (the GPU machine of
docs/benchmarks.md takes 64 MiB per call and reaches no network).

`pack` (here) writes a folder of parts, each under --part-mb, holding exactly what rendering and training
need and nothing else:
- the font cache, with every outline font over 1 MB cut down to the characters the lexicon uses (plus
  printable ASCII), and the Chinese stroke data cut down the same way; the stamps get the new files'
  sha256 and keep their coverage, so the render plan is unchanged. `pack` renders a sample with both
  caches and carries whole any font whose images are not byte-identical.
- the text encoder with every token-embedding row that no lexicon string tokenises to left out (the
  vocabulary is 250k rows, 96M of the model's 118M parameters; the lexicon uses a few thousand). Lexicon
  strings give exactly the same outputs, since the rows they read are the same bytes; any other string
  would read zeros. The tokenizer is carried unchanged.

`unpack` (there) rebuilds a font cache folder and a Hugging Face encoder folder from the parts:

    python tests/benchmarks/offline_bundle.py pack --out .dev/bundle
    python3 tests/benchmarks/offline_bundle.py unpack --parts .dev/bundle --cache /tmp/synth --encoder /tmp/e5
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tarfile
from pathlib import Path

import numpy as np

EMBEDDINGS = "embeddings.word_embeddings.weight"
ROWS_KEY, VALUES_KEY = "__rows__", "__row_values__"
PREFIXES = ("", "query: ", "passage: ")
# FreeType's auto-hinter sets a CJK font's blue zones from these ideographs (its afblue.dat, CJK top,
# bottom, left and right strings), so a cut-down font must keep them or every glyph hints differently.
AUTOHINT_CJK = ("他们你來們到和地对對就席我时時會来為能舰說说这這齊军同已愿既星是景民照现現理用置要軍那配里開雷露面顾"
                "个为人以個大有主些因它想意生當看着者自著裡过还进進過道還她将將年得情最样樣通即吗吧听呢品响嗎师師收断"
                "斷明眼間间际陈限除陳随際隨事前學政斯新民沒没然特球第經谁起例別别制动動增指朝期构物确种調调費费都田囗")


def lexicon_strings() -> list[str]:
    from synth.lexicon import LANGS, load_lexicon

    lexicon = load_lexicon()
    return sorted({text for lang in LANGS for text in lexicon.texts(lang)})


def subset_fonts(source: Path, out: Path, chars: str) -> dict:
    """Copy the font cache, cutting outline fonts over 1 MB and the stroke data down to `chars`."""
    from fontTools import subset
    from fontTools.ttLib import TTFont

    from hwkit.files import sha256_file

    out.mkdir(parents=True, exist_ok=True)
    sizes = {"before": 0, "after": 0}
    for path in sorted(source.iterdir()):
        if path.name.endswith(".stamp.json") or path.name.startswith("."):
            continue
        target = out / path.name
        sizes["before"] += path.stat().st_size
        if path.suffix in (".ttf", ".otf") and path.stat().st_size > 1_000_000:
            font = TTFont(path)
            options = subset.Options()
            options.layout_features = ["*"]
            options.name_IDs = ["*"]
            options.notdef_outline = True
            options.glyph_names = True
            options.hinting = True
            options.retain_gids = True
            options.hinting_tables = ["*"]
            options.legacy_kern = True
            options.drop_tables = []
            options.recalc_bounds = False
            options.recalc_average_width = False
            options.prune_unicode_ranges = False
            options.prune_codepage_ranges = False
            subsetter = subset.Subsetter(options)
            subsetter.populate(text=chars)
            subsetter.subset(font)
            font.save(target)
        elif path.name.endswith(".strokes.json") and path.stat().st_size > 1_000_000:
            data = json.loads(path.read_text(encoding="utf-8"))
            data["glyphs"] = {c: g for c, g in data["glyphs"].items() if c in chars}
            target.write_text(json.dumps(data, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")
        else:
            shutil.copy2(path, target)
        sizes["after"] += target.stat().st_size
        stamp = path.with_name(path.name.split(".")[0] + ".stamp.json")
        if stamp.is_file():  # the file's own sha256, coverage kept: the plan reads coverage from stamps
            meta = json.loads(stamp.read_text(encoding="utf-8"))
            meta["sha256"] = sha256_file(target)
            (out / stamp.name).write_text(json.dumps(meta, ensure_ascii=False, indent=1), encoding="utf-8")
    return sizes


def pack_encoder(encoder: Path, strings: list[str]) -> tuple[dict[str, np.ndarray], list[Path], int]:
    """The encoder's tensors with the token-embedding matrix as (rows used, their values)."""
    from safetensors.numpy import load_file
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(encoder), local_files_only=True)
    used: set[int] = set(tokenizer.all_special_ids)
    for prefix in PREFIXES:
        for ids in tokenizer([prefix + s for s in strings])["input_ids"]:
            used.update(ids)
    tensors = load_file(str(encoder / "model.safetensors"))
    rows = np.array(sorted(used), dtype=np.int64)
    full = tensors.pop(EMBEDDINGS)
    tensors[ROWS_KEY], tensors[VALUES_KEY] = rows, full[rows]
    others = [p for p in encoder.iterdir() if p.name != "model.safetensors" and p.is_file()]
    return tensors, others, full.shape[0]


def pack(out: Path, part_mb: float) -> None:
    from safetensors.numpy import save_file

    from synth.paths import cache_dir
    from train.towers.e5_convert import default_encoder_dir

    strings = lexicon_strings()
    chars = "".join(sorted(set("".join(strings)) | set(AUTOHINT_CJK) | {chr(c) for c in range(32, 127)}))
    out.mkdir(parents=True, exist_ok=True)
    work = out / "_work"
    fonts = work / "fonts"
    sizes = subset_fonts(cache_dir() / "fonts", fonts, chars)
    print(f"fonts: {sizes['before'] / 1e6:.1f} MB -> {sizes['after'] / 1e6:.1f} MB ({len(chars):,} characters kept)")
    differing = differing_styles(fonts)
    for style in sorted(differing):  # carried whole: they render differently when cut down
        for path in (cache_dir() / "fonts").glob(f"{style}.*"):
            shutil.copy2(path, fonts / path.name)
    if differing and differing_styles(fonts):
        raise SystemExit("the font cache still renders differently after restoring the whole files")
    print(f"fonts: identical renders; carried whole: {', '.join(sorted(differing)) or 'none'}")

    encoder = default_encoder_dir()
    tensors, others, vocab = pack_encoder(encoder, strings)
    print(f"encoder: {len(tensors[ROWS_KEY]):,} of {vocab:,} token rows used by the lexicon")
    with tarfile.open(work / "rest.tar.xz", "w:xz") as tar:
        tar.add(fonts, arcname="fonts")
        for path in others:
            tar.add(path, arcname=f"encoder/{path.name}")
    # Balanced parts, largest tensors first onto the lightest part; the fonts and small files go in part 0.
    rest = (work / "rest.tar.xz").stat().st_size
    count = math.ceil((rest + sum(a.nbytes for a in tensors.values())) / (part_mb * 1e6))
    parts: list[dict[str, np.ndarray]] = [{} for _ in range(count)]
    loads = [rest] + [0] * (count - 1)
    for name in sorted(tensors, key=lambda k: -tensors[k].nbytes):
        i = loads.index(min(loads))
        parts[i][name], loads[i] = tensors[name], loads[i] + tensors[name].nbytes
    for i, part in enumerate(parts):
        folder = out / f"part{i}"
        folder.mkdir(exist_ok=True)
        save_file(part, str(folder / "encoder.safetensors"), metadata={"vocab_size": str(vocab)})
    shutil.move(work / "rest.tar.xz", out / "part0" / "rest.tar.xz")
    shutil.rmtree(work)
    for folder in sorted(out.glob("part*")):
        size = sum(p.stat().st_size for p in folder.iterdir())
        print(f"{folder}: {size / 2**20:.1f} MiB")


def unpack(parts: Path, cache: Path, encoder: Path) -> None:
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    tensors: dict[str, np.ndarray] = {}
    vocab = 0
    for folder in sorted(parts.glob("part*")):
        tensors.update(load_file(str(folder / "encoder.safetensors")))
        with safe_open(str(folder / "encoder.safetensors"), "np") as f:
            vocab = int(f.metadata()["vocab_size"])
        if (folder / "rest.tar.xz").is_file():
            with tarfile.open(folder / "rest.tar.xz") as tar:
                tar.extractall(parts / "_rest", filter="data")
    rows, values = tensors.pop(ROWS_KEY), tensors.pop(VALUES_KEY)
    full = np.zeros((vocab, values.shape[1]), dtype=values.dtype)
    full[rows] = values
    tensors[EMBEDDINGS] = full
    encoder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(encoder / "model.safetensors"), metadata={"format": "pt"})
    for path in (parts / "_rest" / "encoder").iterdir():
        shutil.copy2(path, encoder / path.name)
    (cache / "fonts").parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(cache / "fonts", ignore_errors=True)
    shutil.copytree(parts / "_rest" / "fonts", cache / "fonts")
    print(f"unpacked: fonts into {cache / 'fonts'}, encoder into {encoder} ({len(rows):,} token rows)")


def differing_styles(fonts: Path) -> set[str]:
    """Render every (entry, style) of 100 IDs with the full and with the cut-down font cache; the styles
    whose images are not byte-identical. (FreeType's hinting reads font-wide data, so a style that agrees
    on a sample agrees everywhere.)"""
    import os
    import subprocess
    import tempfile

    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory() as tmp:
        cut = Path(tmp) / "cache"
        cut.mkdir()
        (cut / "fonts").symlink_to(fonts.resolve())
        rows = {}
        for name, env in (("full", {}), ("cut", {"SYNTH_CACHE": str(cut)})):
            target = Path(tmp) / name
            subprocess.run([sys.executable, "-m", "synth", "render", "--lang", "all", "--fonts", "all",
                            "--per-style", "1", "--ids", "0:100", "--out", str(target)],
                           check=True, capture_output=True, env={**os.environ, **env})
            rows[name] = [r for p in sorted(target.glob("data/*.parquet"))
                          for r in pq.read_table(p, columns=["image", "style"]).to_pylist()]
    print(f"check: {len(rows['full']):,} images rendered with both caches")
    return {a["style"] for a, b in zip(rows["full"], rows["cut"], strict=True) if a["image"] != b["image"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--part-mb", type=float, default=60.0)
    u = sub.add_parser("unpack")
    u.add_argument("--parts", type=Path, required=True)
    u.add_argument("--cache", type=Path, required=True)
    u.add_argument("--encoder", type=Path, required=True)
    args = parser.parse_args()
    if args.command == "pack":
        pack(args.out, args.part_mb)
    else:
        unpack(args.parts, args.cache, args.encoder)


if __name__ == "__main__":
    main()
