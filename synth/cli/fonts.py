"""`synth fonts …`: list, fetch, check and pin the handwriting style catalogue."""

from __future__ import annotations

import json
import os
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from hwkit.errors import OneLineErrors, fail
from hwkit.progress import progress_bar
from synth.fonts.catalogue import Catalogue, Split, load_catalogue, resolve_styles, set_checksums
from synth.fonts.charsets import SCRIPT_LANGS, required_chars
from synth.fonts.coverage import CoverageRow, coverage_row
from synth.fonts.fetch import install_styles, installed_coverage, pin_digest

app = typer.Typer(cls=OneLineErrors, help="The handwriting style catalogue: fonts and pen-stroke sources, split train / held-out.", no_args_is_help=True)
out = Console()
err = Console(stderr=True)


class SplitOpt(str, Enum):
    train = "train"
    held_out = "held-out"
    all = "all"


class ScriptOpt(str, Enum):
    latin = "latin"
    han = "han"


class KindOpt(str, Enum):
    outline = "outline"
    stroke = "stroke"


CatalogueOpt = Annotated[Optional[Path], typer.Option("--catalogue", help="Catalogue YAML (default: fonts/catalogue.yaml).")]
SplitArg = Annotated[SplitOpt, typer.Option("--split", help="Which split's styles.")]
ScriptArg = Annotated[Optional[ScriptOpt], typer.Option("--script", help="Only styles for this script.")]
KindArg = Annotated[Optional[KindOpt], typer.Option("--kind", help="Only outline fonts or only pen-stroke sources.")]
JsonArg = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _load(path: Path | None) -> Catalogue:
    return load_catalogue(path)


def _select(catalogue: Catalogue, split: SplitOpt, script: ScriptOpt | None, kind: KindOpt | None, ids: list[str] | None = None):
    styles = resolve_styles(
        catalogue,
        None if split is SplitOpt.all else Split(split.value),
        script.value if script else None,
        kind.value if kind else None,
    )
    if ids:
        unknown = sorted(set(ids) - {s.id for s in catalogue.styles})
        if unknown:
            raise fail(f"unknown style(s) {', '.join(unknown)}; `synth fonts list` shows the catalogue")
        styles = [s for s in styles if s.id in set(ids)]
    return styles


@app.command("list")
def list_styles(
    split: SplitArg = SplitOpt.all,
    script: ScriptArg = None,
    kind: KindArg = None,
    catalogue: CatalogueOpt = None,
    as_json: JsonArg = False,
) -> None:
    """List catalogue styles with family, kind, scripts, split, tags and licence."""
    styles = _select(_load(catalogue), split, script, kind)
    if as_json:
        rows = [{
            "id": s.id, "family": s.family, "kind": s.kind, "scripts": list(s.scripts), "split": s.split.value,
            "tags": list(s.tags), "licence": s.licence, "source": s.source, "package": s.package,
            "version": s.version, "file": s.file, "sha256": s.sha256,
        } for s in styles]
        out.print_json(json.dumps(rows, ensure_ascii=False))
        return
    table = Table(title=f"{len(styles)} styles, {len({s.family for s in styles})} families")
    for column in ("id", "family", "kind", "scripts", "split", "tags", "licence", "package"):
        table.add_column(column)
    for s in styles:
        table.add_row(s.id, s.family, s.kind, ",".join(s.scripts), s.split.value, ",".join(s.tags), s.licence, f"{s.package} {s.version}")
    out.print(table)


@app.command()
def fetch(
    styles: Annotated[Optional[list[str]], typer.Argument(help="Style ids (default: every style).", show_default=False)] = None,
    split: SplitArg = SplitOpt.all,
    script: ScriptArg = None,
    catalogue: CatalogueOpt = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Styles installed in parallel (default: CPU count).")] = os.cpu_count() or 1,
) -> None:
    """Install styles into the cache ($SYNTH_CACHE): download, verify sha256, convert, record coverage.

    Idempotent: installed styles are checked against their stamps without network work. The first run
    merges the Chinese web-font pieces, which takes about half a minute per face.
    """
    chosen = _select(_load(catalogue), split, script, None, styles)
    unpinned = [s.id for s in chosen if not s.sha256]
    if unpinned:  # refuse before downloading anything
        raise fail(f"style {', '.join(unpinned)} has no sha256 in the catalogue; run `synth fonts pin` first")
    counts = {"cached": 0, "fetched": 0}
    with progress_bar(out, "styles") as bar:
        task = bar.add_task("fetching styles", total=len(chosen))

        def done(installed) -> None:
            counts[installed.status] += 1
            bar.update(task, advance=1, description=installed.style.id)

        install_styles(chosen, workers, done)
    out.print(f"{len(chosen)} styles ready in {chosen[0].cache_path.parent if chosen else '-'}: "
              f"{counts['fetched']} fetched, {counts['cached']} already installed", soft_wrap=True)


def probe_chars(style, covered: frozenset[str], n: int = 6) -> str:
    """`n` characters the style must draw, spread over its scripts' required ones it covers."""
    pool = sorted(set().union(*(required_chars(script) for script in style.scripts)) & covered) or sorted(
        c for c in covered if not c.isspace())
    return "".join(pool[i * len(pool) // n] for i in range(min(n, len(pool))))


def _coverage_rows(catalogue: Catalogue, styles, lexicon_path: Path | None) -> tuple[list[CoverageRow], list[str]]:
    from synth.fonts.glyphs import probe_face
    from synth.lexicon import load_lexicon

    lexicon = load_lexicon(lexicon_path)
    rows, problems = [], []
    for style in styles:
        covered = installed_coverage(style)
        problem = probe_face(style.kind, style.cache_path, probe_chars(style, covered))
        if problem:  # the stamp vouches for the file it described; this checks the file that is there
            problems.append(f"{style.id}: {style.cache_path} {problem}; delete it and run `synth fonts fetch`")
        for script in style.scripts:
            lacking = sorted(required_chars(script) - covered)
            if lacking:
                problems.append(f"{style.id}: lacks {len(lacking)} required {script} character(s): {''.join(lacking[:20])}")
            for lang in SCRIPT_LANGS[script]:
                rows.append(coverage_row(style.id, lang, covered, lexicon.texts(lang)))
    return rows, problems


@app.command()
def check(
    split: SplitArg = SplitOpt.all,
    script: ScriptArg = None,
    catalogue: CatalogueOpt = None,
    lexicon: Annotated[Optional[Path], typer.Option("--lexicon", help="Lexicon TSV (default: lexicon/lexicon.tsv).")] = None,
    min_share: Annotated[float, typer.Option("--min-share", min=0.0, max=1.0, help="Fail if a style renders a smaller share of a language's entries.")] = 0.98,
    as_json: JsonArg = False,
) -> None:
    """Report, per style and language, the share of lexicon entries the style can render.

    A character counts only if the font maps it AND its glyph has ink (Pillow alone would draw a tofu
    box). Fails if a style misses a character its script requires (Spanish letters for Latin, GB 2312
    level 1 for Han) or renders less than --min-share of a language's entries.
    """
    cat = _load(catalogue)
    rows, problems = _coverage_rows(cat, _select(cat, split, script, None), lexicon)
    problems += [f"{r.style}/{r.lang}: renders {r.share:.1%} < {min_share:.0%} (blocked by {''.join(r.missing[:10])})"
                 for r in rows if r.share < min_share]
    if as_json:
        out.print_json(json.dumps({
            "rows": [{"style": r.style, "lang": r.lang, "renderable": r.renderable, "total": r.total,
                      "share": round(r.share, 6), "missing": "".join(r.missing)} for r in rows],
            "problems": problems,
        }, ensure_ascii=False))
    else:
        table = Table(title="lexicon entries each style can render")
        for column in ("style", "lang", "renderable", "share", "blocked by"):
            table.add_column(column, justify="right" if column in ("renderable", "share") else "left")
        for r in rows:
            share = f"{r.share:.1%}" if r.share >= min_share else f"[red]{r.share:.1%}[/red]"
            table.add_row(r.style, r.lang, f"{r.renderable}/{r.total}", share, "".join(r.missing[:10]))
        out.print(table)
    if problems:
        for line in problems:
            err.print(f"[red]problem:[/red] {line}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    if not as_json:
        out.print(f"ok: {len({r.style for r in rows})} styles, {len(rows)} (style, language) pairs, lowest share "
                  f"{min((r.share for r in rows), default=1.0):.1%}", soft_wrap=True)


@app.command()
def pin(
    styles: Annotated[Optional[list[str]], typer.Argument(help="Style ids (default: those without a sha256).", show_default=False)] = None,
    catalogue: CatalogueOpt = None,
) -> None:
    """Write the sha256 of each style's source into the catalogue (after adding or updating a font)."""
    cat = _load(catalogue)
    chosen = _select(cat, SplitOpt.all, None, None, styles) if styles else [s for s in cat.styles if not s.sha256]
    if not chosen:
        out.print("every style is pinned; name styles to re-pin them")
        return
    digests = {}
    with progress_bar(out, "styles") as bar:
        task = bar.add_task("pinning", total=len(chosen))
        for style in chosen:
            digests[style.id] = pin_digest(style)
            bar.advance(task)
    changed = set_checksums(cat.path, digests)
    out.print(f"pinned {len(digests)} style(s), {changed} checksum(s) changed in {cat.path}", soft_wrap=True)
