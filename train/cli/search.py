"""`train index | search`: embed a shard set once, then query it by a typed word in any script, or query
the lexicon by a word image. Parsing and printing only; the work is in train.evaluate.search and train.edge."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from hwkit.errors import fail
from hwkit.progress import progress_bar
from synth.lexicon import load_lexicon
from train.cli.common import (
    DataOpt,
    DeviceOpt,
    ImagesPerPassOpt,
    LexiconOpt,
    TextEncoderOpt,
    WorkersOpt,
    check_langs,
    err,
    out,
)


def index(
    ckpt: Annotated[Path, typer.Option("--ckpt", help="The run whose image tower embeds the images.")],
    data: DataOpt,
    index_dir: Annotated[Path, typer.Option("--out", help="Index folder to create (embeddings.npy, rows.parquet, index.json).")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an index written before at --out.")] = False,
    text_encoder: TextEncoderOpt = None,
    batch_size: ImagesPerPassOpt = None,
    workers: WorkersOpt = 0,
    device: DeviceOpt = None,
) -> None:
    """Embed every image of a shard set for `train search --index ... --text WORD`."""
    from train.evaluate import load_model
    from train.evaluate.search import build_index
    from train.run.data import count_rows

    model, _, run = load_model(ckpt, text_encoder, device)
    bar = progress_bar(err, unit="images")
    with bar:
        task = bar.add_task("index", total=count_rows(data))
        meta = build_index(model, run, data, index_dir, batch_size=batch_size, workers=workers,
                           overwrite=overwrite, progress=lambda n: bar.advance(task, n))
    out.print(f"{index_dir}: {meta['count']:,} images × {meta['dim']} dims from {len(data)} dataset(s)", highlight=False,
              soft_wrap=True)


def _check(image: Path | None, text: str | None, ckpt: Path | None, onnx: Path | None, index_dir: Path | None,
           lang: list[str] | None) -> None:
    """Every refusal that needs nothing loaded."""
    if (image is None) == (text is None):
        raise fail("give exactly one of --image (find words) or --text (find images, with --index)")
    if (ckpt is None) == (onnx is None):
        raise fail("give exactly one of --ckpt (a run) or --onnx (a `train export` folder)")
    if text is not None and index_dir is None:
        raise fail("--text searches an index: pass --index (build one with `train index`)")
    if onnx is not None and text is not None:
        raise fail("--onnx answers --image queries; --text needs the text tower: use --ckpt")
    check_langs(lang)
    if image is not None and not image.is_file():
        raise fail(f"--image: image not found: {image}")


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
    _check(image, text, ckpt, onnx, index_dir, lang)
    if onnx is not None:
        from train.edge import EdgeModel

        hits = EdgeModel(onnx, int8=int8).words_for_image(image, lang, k)
    else:
        from train.evaluate import load_model
        from train.evaluate.search import images_for_text, load_index, words_for_image

        lex = load_lexicon(lexicon) if image is not None else None  # a text query ranks images, not words
        model, _, _ = load_model(ckpt, text_encoder, device, lex)
        if image is not None:
            hits = words_for_image(model, image, lex, lang, k)
        else:
            hits = images_for_text(model, load_index(index_dir), text, lang, k)
    if as_json:
        out.print_json(json.dumps(hits, ensure_ascii=False))
        return
    from rich.table import Table

    table = Table(title=f"{'words for ' + str(image) if image else 'images for ' + repr(text)}")
    columns = ["rank", "score", "lang", "text", "semantic_id"] + ([] if image else ["shard", "row"])
    for name in columns:
        table.add_column(name, justify="right" if name in ("rank", "score", "semantic_id", "row") else "left")
    for hit in hits:
        table.add_row(*(f"{hit[c]:.4f}" if c == "score" else str(hit[c]) for c in columns))
    out.print(table)
