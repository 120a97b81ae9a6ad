"""`synth lexicon ...`: build the lexicon from its sources, show its statistics, draw the audit sample.

Only option parsing and printing live here; the work is done by synth.lexicon and synth.lexicon.build.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from hwkit.errors import OneLineErrors, fail
from hwkit.progress import spinner
from synth.lexicon import LANGS, lexicon_stats, load_lexicon
from synth.paths import DEFAULT_LEXICON

app = typer.Typer(cls=OneLineErrors, help="The trilingual (en/es/zh) lexicon: build it from its sources, inspect it.", no_args_is_help=True)
out = Console()
err = Console(stderr=True)


@app.command()
def build(
    output: Annotated[Path, typer.Option("--out", help="Lexicon TSV to write.")] = DEFAULT_LEXICON,
    overrides: Annotated[Path | None, typer.Option(help="Overrides YAML (default: lexicon/overrides.yaml).")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML of BuildConfig fields to change.")] = None,
    report: Annotated[Path | None, typer.Option(help="Build report JSON (default: build_report.json beside --out).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing lexicon that differs.")] = False,
) -> None:
    """Rebuild the lexicon from CC-CEDICT, FreeDict and wordfreq (needs the lexicon extra: pip install -e '.\\[lexicon]')."""
    from hwkit.files import write_atomic
    from synth.lexicon.build import build_lexicon, build_report, load_config, render_lexicon
    from synth.lexicon.embed import UseEmbedder
    from synth.lexicon.overrides import load_overrides
    from synth.lexicon.sources import load_sources

    report = report or output.parent / "build_report.json"
    start = time.perf_counter()
    cfg = load_config(config)
    fixes = load_overrides(overrides)
    try:
        with spinner(err, "reading sources (FreeDict, CC-CEDICT, wordfreq)"):
            sources = load_sources()
        with spinner(err, "scoring candidates (USE-multilingual embeddings; ~1 min the first time)"):
            result = build_lexicon(sources, UseEmbedder(), cfg, fixes)
    except ModuleNotFoundError as exc:
        raise fail(f"{exc}: the build needs the lexicon extra (pip install -e '.[lexicon]')")
    data = render_lexicon(result.triples)
    report_data = (json.dumps(build_report(result, data), ensure_ascii=False, indent=2) + "\n").encode("utf-8")
    for path, new in ((output, data), (report, report_data)):  # check both before writing either
        if path.exists() and path.read_bytes() != new and not force:
            raise fail(f"{path}: exists and differs from the new build; pass --force to overwrite")
    unchanged = output.exists() and output.read_bytes() == data
    write_atomic(output, data)
    write_atomic(report, report_data)

    table = Table(title="lexicon build stages")
    table.add_column("stage")
    table.add_column("kept", justify="right")
    table.add_column("rule")
    for stage in result.stages:
        table.add_row(stage["stage"], str(stage["count"]), stage["note"])
    err.print(table)
    status = "unchanged" if unchanged else "written"
    err.print(f"{output}: {len(result.triples)} entries {status} in {time.perf_counter() - start:.1f} s; report {report}")


@app.command()
def stats(
    lexicon: Annotated[Path, typer.Option(help="Lexicon TSV to describe.")] = DEFAULT_LEXICON,
    as_json: Annotated[bool, typer.Option("--json", help="Print the statistics as JSON.")] = False,
) -> None:
    """Counts, text lengths and character coverage of each language."""
    summary = lexicon_stats(load_lexicon(lexicon))
    if as_json:
        print(json.dumps(summary, ensure_ascii=False, indent=2))
        return
    out.print(f"{summary['path']}  {summary['entries']} semantic IDs  sha256 {summary['sha256'][:16]}…")
    table = Table(title="texts per language (lengths in characters)")
    for column in ("lang", "texts", "min", "median", "mean", "max", "distinct chars"):
        table.add_column(column, justify="left" if column == "lang" else "right")
    for lang in LANGS:
        s = summary["languages"][lang]
        length = s["length"]
        table.add_row(lang, str(s["count"]), *(str(length[k]) for k in ("min", "median", "mean", "max")), str(s["distinct_chars"]))
    out.print(table)
    histogram = Table(title="length histogram (texts per length)")
    histogram.add_column("chars", justify="right")
    lengths = sorted({int(n) for lang in LANGS for n in summary["languages"][lang]["length"]["histogram"]})
    for lang in LANGS:
        histogram.add_column(lang, justify="right")
    for n in lengths:
        histogram.add_row(str(n), *(str(summary["languages"][lang]["length"]["histogram"].get(str(n), "")) for lang in LANGS))
    out.print(histogram)
    zh = summary["languages"]["zh"]
    out.print(f"zh characters outside GB 2312 level 1: {zh['outside_gb2312_level1']} {zh['outside_gb2312_level1_chars']}")
    for lang in ("en", "es"):
        out.print(f"{lang} characters: {summary['languages'][lang]['chars']}", markup=False, highlight=False)


@app.command("audit-sample")
def audit_sample(
    output: Annotated[Path, typer.Option("--out", help="Audit TSV to write (verdict and reason left blank).")],
    lexicon: Annotated[Path, typer.Option(help="Lexicon TSV to sample.")] = DEFAULT_LEXICON,
    n: Annotated[int, typer.Option(min=1, help="Entries to draw.")] = 100,
    seed: Annotated[int | None, typer.Option(help="Seed of the draw (default: the documented AUDIT_SEED).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing audit file (its verdicts are lost).")] = False,
) -> None:
    """Draw the audit sample: N entries chosen by a seeded random.Random, for a person to judge."""
    from hwkit.files import write_atomic
    from synth.lexicon.build import AUDIT_SEED, draw_audit_sample, render_audit

    if output.is_dir():
        raise fail(f"{output} is a folder; --out takes a file name, e.g. {output / 'AUDIT.tsv'}")
    if output.exists() and not force:
        raise fail(f"{output}: exists (it may hold verdicts); pass --force to overwrite")
    entries = draw_audit_sample(load_lexicon(lexicon), n, AUDIT_SEED if seed is None else seed)
    write_atomic(output, render_audit(entries))
    whole = f" (--n {n:,} is more than the lexicon's {len(entries):,} entries: all of them)" if len(entries) < n else ""
    err.print(f"{output}: {len(entries)} entries drawn with seed {AUDIT_SEED if seed is None else seed}{whole}")
