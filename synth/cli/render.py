"""`synth render | corpus | verify | preview`: build, check and look at datasets. Parsing and printing only.

Mounted at the root of `synth` (see synth/cli/__init__.py); each function here calls one library function.
"""

from __future__ import annotations

import os
import shlex
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from hwkit.errors import OneLineErrors, fail
from hwkit.files import write_atomic
from hwkit.progress import progress_bar
from synth.cli.fonts import CatalogueOpt
from synth.cli.fonts import SplitOpt as FontsOpt  # the same three font splits
from synth.dataset import Part, build_dataset, merge_parts
from synth.dataset.corpus import load_corpus
from synth.dataset.plan import PlanConfig
from synth.dataset.shards import ShardConfig
from synth.lexicon import LANGS
from synth.render.config import load_render_config

app = typer.Typer(cls=OneLineErrors, no_args_is_help=True)
out = Console()
err = Console(stderr=True)


class LangOpt(str, Enum):
    en = "en"
    es = "es"
    zh = "zh"
    all = "all"


class DistortOpt(str, Enum):
    none = "none"
    light = "light"
    default = "default"
    heavy = "heavy"


OutOpt = Annotated[Path, typer.Option("--out", help="Dataset folder (created; resumed if it holds the same dataset).")]
WorkersOpt = Annotated[int, typer.Option("--workers", min=1, help="Processes rendering shards (default: the CPU count).", show_default=False)]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace a different synth dataset in --out.")]
LexiconOpt = Annotated[Optional[Path], typer.Option("--lexicon", help="Lexicon TSV (default: lexicon/lexicon.tsv).")]
ShardIndexOpt = Annotated[int | None, typer.Option("--shard-index", min=0, help="Build only part I of --num-shards (every N-th shard, from I); join the parts with `synth merge`.")]
class ExecutorOpt(str, Enum):
    local = "local"
    ray = "ray"


ExecutorOptT = Annotated[ExecutorOpt, typer.Option("--executor", help="local: a process pool of --workers; ray: Ray tasks on a cluster (--address) or a local Ray of --workers CPUs (pip install '.\\[ray]'). Same bytes.")]
AddressOpt = Annotated[str | None, typer.Option("--address", help="Ray cluster address for --executor ray: auto, ray://head:10001 … (default: start a local Ray).")]
NumShardsOpt = Annotated[int | None, typer.Option("--num-shards", min=1, help="How many parts the dataset is split into (with --shard-index).")]


def _part(index: int | None, count: int | None) -> Part | None:
    if (index is None) != (count is None):
        raise fail("give --shard-index and --num-shards together")
    return None if index is None else Part(index, count)


def _build(out_dir: Path, plan: PlanConfig, distort: str, config: Path | None, shard_config: ShardConfig,
           workers: int, overwrite: bool, command: str, lexicon: Path | None, catalogue: Path | None,
           part: Part | None, executor: ExecutorOpt, address: str | None) -> None:
    if address and executor is not ExecutorOpt.ray:
        raise fail("--address is for --executor ray")
    # A spinner while the plan is made and checked; the bar appears with the first rendered rows, so
    # input errors print as one line with nothing before it.
    status = out.status("planning: reading the lexicon, the catalogue and each style's coverage")
    bar = progress_bar(out, "img")
    task = None

    def advance(rows: int, total: int) -> None:
        nonlocal task
        if task is None:
            status.stop()
            bar.start()
            task = bar.add_task("rendering", total=total)
        bar.update(task, advance=rows)

    try:
        render_config = load_render_config(distort, config)
        status.start()
        result = build_dataset(
            out_dir, plan, render_config, shard_config=shard_config, lexicon_path=lexicon,
            catalogue_path=catalogue, workers=workers, overwrite=overwrite, command=command, progress=advance,
            part=part, executor=executor.value, address=address,
        )
    finally:
        status.stop()
        bar.stop()
    which = "" if part is None else f" (part {part.index} of {part.count}; join the parts with `synth merge`)"
    out.print(f"done: {result.summary()}{which}", soft_wrap=True, highlight=False)


@app.command()
def render(
    out_dir: OutOpt,
    lang: Annotated[LangOpt, typer.Option("--lang", help="Language of the entries.")] = LangOpt.all,
    fonts: Annotated[FontsOpt, typer.Option("--fonts", help="Font split of the styles.")] = FontsOpt.train,
    per_style: Annotated[Optional[int], typer.Option("--per-style", min=1, help="N images of every renderable (entry, style) (the default, with N = 1).")] = None,
    per_id: Annotated[Optional[int], typer.Option("--per-id", min=1, help="N images per (entry, language), spread evenly over its styles.")] = None,
    ids: Annotated[str, typer.Option("--ids", help="Lexicon IDs: a range a:b (a..b-1) or a count N (the first N); default: every entry.")] = "",
    seed: Annotated[int, typer.Option("--seed", min=0, help="Master seed; every sample's seed derives from it.")] = 0,
    distort: Annotated[DistortOpt, typer.Option("--distort", help="Distortion preset.")] = DistortOpt.default,
    config: Annotated[Optional[Path], typer.Option("--config", help="Render config YAML applied on top of --distort.")] = None,
    rows_per_shard: Annotated[int, typer.Option("--rows-per-shard", min=1, help="Rows per Parquet shard.")] = 2000,
    row_group_size: Annotated[int, typer.Option("--row-group-size", min=1, help="Rows per Parquet row group.")] = 1000,
    workers: WorkersOpt = os.cpu_count() or 1,
    overwrite: OverwriteOpt = False,
    lexicon: LexiconOpt = None,
    catalogue: CatalogueOpt = None,
    shard_index: ShardIndexOpt = None,
    num_shards: NumShardsOpt = None,
    executor: ExecutorOptT = ExecutorOpt.local,
    address: AddressOpt = None,
) -> None:
    """Render lexicon entries in handwriting styles into Parquet shards keyed by semantic ID.

    The same options give the same bytes on any number of workers; re-running an interrupted command
    completes the missing shards. With --shard-index I --num-shards N, N machines each build a part
    (no coordinator), and `synth merge` joins them into what one run writes.
    """
    part = _part(shard_index, num_shards)
    if per_style is not None and per_id is not None:
        raise fail("give --per-style or --per-id, not both")
    mode, samples = ("per_id", per_id) if per_id is not None else ("per_style", per_style or 1)
    plan = PlanConfig(langs=LANGS if lang is LangOpt.all else (lang.value,), fonts=fonts.value, ids=ids,
                      mode=mode, samples=samples, seed=seed, rows_per_shard=rows_per_shard)
    # The command as recorded in the manifest: every option that changes the bytes, none that does not
    # (--workers, --out, --overwrite, --executor, --address, the part), so 1 and N workers, a process pool
    # and a Ray cluster, one build and merged parts write the same manifest.
    parts = ["synth", "render", "--lang", lang.value, "--fonts", fonts.value, f"--{mode.replace('_', '-')}", str(samples)]
    parts += ["--ids", ids] if ids else []
    parts += ["--seed", str(seed), "--distort", distort.value, "--rows-per-shard", str(rows_per_shard),
              "--row-group-size", str(row_group_size)]
    # Files by name only (no machine-specific paths): their contents are recorded in the manifest
    # (the full render config; the lexicon's and catalogue's sha256).
    for option, path in (("--config", config), ("--lexicon", lexicon), ("--catalogue", catalogue)):
        parts += [option, path.name] if path else []
    _build(out_dir, plan, distort.value, config, ShardConfig(row_group_size=row_group_size), workers, overwrite,
           shlex.join(parts), lexicon, catalogue, part, executor, address)


@app.command()
def corpus(
    name: Annotated[str, typer.Argument(help="Preset: pretrain, in-domain, ood-en, ood-es, ood-zh.")],
    out_dir: OutOpt,
    workers: WorkersOpt = os.cpu_count() or 1,
    overwrite: OverwriteOpt = False,
    lexicon: LexiconOpt = None,
    catalogue: CatalogueOpt = None,
    shard_index: ShardIndexOpt = None,
    num_shards: NumShardsOpt = None,
    executor: ExecutorOptT = ExecutorOpt.local,
    address: AddressOpt = None,
) -> None:
    """Build a named corpus (synth/configs/corpus/NAME.yaml), e.g. the 262,800-image `pretrain` set.

    With --shard-index I --num-shards N, only part I of N; `synth merge` joins the parts.
    """
    part = _part(shard_index, num_shards)
    preset = load_corpus(name)
    _build(out_dir, preset.plan, preset.distort, None, ShardConfig(), workers, overwrite,
           f"synth corpus {shlex.quote(name)}", lexicon, catalogue, part, executor, address)


@app.command()
def merge(
    parts: Annotated[list[Path], typer.Argument(help="The part folders (parts 0..N-1 of one dataset, any order).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Dataset folder to create.")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a synth dataset already in --out.")] = False,
    link: Annotated[bool, typer.Option("--link", help="Hard-link the shards instead of copying them (same filesystem; the files are then shared with the parts).")] = False,
    lexicon: LexiconOpt = None,
    catalogue: CatalogueOpt = None,
) -> None:
    """Join the parts built with --shard-index/--num-shards into one dataset, byte-identical to a single
    build. Every shard is checked against its recorded sha256; --out appears whole or not at all."""
    result = merge_parts(parts, out_dir, lexicon_path=lexicon, catalogue_path=catalogue, overwrite=overwrite, link=link)
    out.print(f"merged {len(parts)} parts: {result.rows:,} rows in {result.shards} shards → {out_dir}",
              soft_wrap=True, highlight=False)


@app.command()
def verify(
    root: Annotated[Path, typer.Argument(help="Dataset folder (holding manifest.json).")],
) -> None:
    """Check a dataset against its manifest: schema, checksums, counts, sort order, every PNG."""
    from synth.dataset.verify import manifest_rows, verify_dataset

    total = manifest_rows(root)
    with progress_bar(out, "img") as bar:
        task = bar.add_task("verifying", total=total or None)
        report = verify_dataset(root, lambda rows: bar.advance(task, rows))
    if not report.ok:
        for problem in report.problems:
            err.print(f"[red]problem:[/red] {problem}", highlight=False, soft_wrap=True)
        raise fail(f"{root}: {len(report.problems)} problem(s) found")
    out.print(f"ok: {report.shards} shards, {report.rows:,} rows verified in {root}", soft_wrap=True, highlight=False)


@app.command()
def preview(
    root: Annotated[Path, typer.Argument(help="Dataset folder.")],
    sheet: Annotated[Path, typer.Option("--out", help="PNG file to write.")],
    n: Annotated[int, typer.Option("--n", min=1, help="Samples on the sheet.")] = 48,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Which samples (seeded draw).")] = 0,
    columns: Annotated[int, typer.Option("--columns", min=1, help="Images per row.")] = 4,
    catalogue: CatalogueOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --out file.")] = False,
) -> None:
    """Write a contact sheet of random samples, each labelled with its text, language and style (PNG)."""
    import io

    import pyarrow as pa

    from synth.dataset.preview import SheetConfig, contact_sheet

    if sheet.is_dir():
        raise fail(f"{sheet} is a folder; --out takes a file name, e.g. {sheet / 'sheet.png'}")
    if sheet.exists() and not force:
        raise fail(f"{sheet} exists; pass --force to replace it")
    try:
        image = contact_sheet(root, SheetConfig(n=n, seed=seed, columns=columns), catalogue)
        png = io.BytesIO()
        image.save(png, format="PNG")  # PNG whatever the name's extension
        write_atomic(sheet, png.getvalue())
    except pa.ArrowException as exc:
        raise fail(f"{root}: a shard cannot be read ({str(exc).splitlines()[0]}); `synth verify {root}` names it")
    from synth.dataset.verify import manifest_rows

    rows = manifest_rows(root)
    whole = f"; --n {n:,} is more than the {rows:,} rows, so all of them" if rows < n else ""
    out.print(f"wrote {sheet} ({image.width}×{image.height} px{whole})", soft_wrap=True, highlight=False)
