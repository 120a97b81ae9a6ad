"""`train eval | baseline | report`: retrieval accuracy of a run, of the OCR baselines on the same sets, and
the results page. Parsing and printing only; the work is in train.evaluate, train.evaluate.baselines, train.evaluate.report."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from hwkit.errors import fail
from hwkit.files import is_json_with, report_refusal
from hwkit.progress import progress_bar, spinner
from synth.lexicon import load_lexicon
from train.cli.common import (
    DataOpt,
    DeviceOpt,
    ImagesPerPassOpt,
    JsonOpt,
    LexiconOpt,
    TextEncoderOpt,
    WorkersOpt,
    err,
    out,
)

EVAL_KEYS = ("run", "data", "within")  # what makes a JSON file a `train eval` report, safe to rewrite
WholeLexiconOpt = Annotated[bool, typer.Option("--whole-lexicon", help="Gallery = every lexicon entry, not only the IDs in --data.")]


def _eval_refusal(target: Path) -> str | None:
    return report_refusal(target, [target.with_suffix(".md")], lambda p: is_json_with(p, EVAL_KEYS), "train eval")


def evaluate(
    ckpt: Annotated[Path, typer.Option("--ckpt", help="A run folder (its final model, else its newest checkpoint) or a checkpoint folder.")],
    data: DataOpt,
    cross_lingual: Annotated[bool, typer.Option("--cross-lingual", help="Also the six cross-lingual directions.")] = False,
    whole_lexicon: WholeLexiconOpt = False,
    report: Annotated[Path | None, typer.Option("--out", help="Report JSON (a .md table is written beside it; default RUN/eval/<data>.json).")] = None,
    text_encoder: TextEncoderOpt = None,
    lexicon: LexiconOpt = None,
    batch_size: ImagesPerPassOpt = None,
    workers: WorkersOpt = 0,
    device: DeviceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Retrieval accuracy of a run: word images as queries, lexicon text embeddings as the gallery.

    Within-language Acc@1/3/5 and MRR per language and overall; with --cross-lingual the six directions
    en→zh, zh→en, zh→es, es→zh, es→en, en→es and their mean; the R/D ratio of the image embeddings.
    """
    from train.evaluate import evaluate as evaluate_run
    from train.evaluate import load_model, markdown
    from train.run.data import count_rows

    if report is not None and _eval_refusal(report):  # before the model loads
        raise fail(_eval_refusal(report))
    lex = load_lexicon(lexicon)
    model, provenance, run = load_model(ckpt, text_encoder, device, lex)
    target = report or run / "eval" / f"{'+'.join(Path(d).resolve().name for d in data)}.json"
    if _eval_refusal(target):
        raise fail(_eval_refusal(target))
    base = next(p for p in [target.parent, *target.parent.parents] if p.exists())
    if not base.is_dir() or not os.access(base, os.W_OK):  # before the work; folders are made only after it
        raise fail(f"--out {target}: cannot make its folder under {base}")
    bar = progress_bar(err, unit="images")
    with bar:
        task = bar.add_task("eval", total=count_rows(data))
        result = evaluate_run(model, data, lex, cross_lingual=cross_lingual, whole_lexicon=whole_lexicon,
                              batch_size=batch_size, workers=workers, progress=lambda n: bar.advance(task, n))
    result = {"run": str(Path(ckpt).resolve()), "data": [str(Path(d).resolve()) for d in data],
              "loss": provenance["config"]["loss"], **result}
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    table = markdown(result)
    target.with_suffix(".md").write_text(table, encoding="utf-8")
    if as_json:
        out.print_json(json.dumps(result, ensure_ascii=False))
    else:
        out.print(table, markup=False, highlight=False)
        err.print(f"report: {target} and {target.with_suffix('.md')}")


def baseline(
    name: Annotated[str, typer.Argument(help="rapidocr or tesseract.")],
    data: DataOpt,
    whole_lexicon: WholeLexiconOpt = False,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="At most this many images per language, drawn with --seed.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the --limit draw.")] = 0,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Recogniser processes (each single-threaded).")] = 2,
    report: Annotated[Path | None, typer.Option("--out", help="Report JSON to write (a .md table and a predictions .tsv go beside it).")] = None,
    lexicon: LexiconOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Two-stage OCR retrieval on the same sets as `train eval`: recognise each word image, rank the
    gallery by normalised edit similarity. Acc@1/3/5, MRR, NES and per-image latency, within-language.

    Engines: rapidocr (PyPI rapidocr-onnxruntime, models in the wheel) and tesseract (Debian
    tesseract-ocr with -spa and -chi-sim); `make setup` installs both.
    """
    from train.evaluate.baselines import markdown, run_baseline

    if report is not None:
        refusal = report_refusal(report, [report.with_suffix(".md"), report.with_suffix(".tsv")],
                                 lambda p: is_json_with(p, ("baseline", "within")), "train baseline")
        if refusal:
            raise fail(refusal)
    lex = load_lexicon(lexicon)
    bar = progress_bar(err, unit="images")
    with bar:
        task = bar.add_task(name, total=None)
        result = run_baseline(name, data, lex, whole_lexicon=whole_lexicon, limit=limit, seed=seed,
                              workers=workers, progress=lambda n: bar.advance(task, n))
    result = {"data": [str(Path(d).resolve()) for d in data], **result}
    predictions = result.pop("predictions")
    table = markdown(result)
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        report.with_suffix(".md").write_text(table, encoding="utf-8")
        lines = ["row\tlang\ttext\tprediction"] + [
            f"{p['row']}\t{p['lang']}\t{p['text']}\t{' '.join(p['prediction'].split())}" for p in predictions]
        report.with_suffix(".tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    if as_json:
        out.print_json(json.dumps(result, ensure_ascii=False))
    else:
        out.print(table, markup=False, highlight=False)
        if report is not None:
            err.print(f"report: {report}, {report.with_suffix('.md')} and {report.with_suffix('.tsv')}")


def _named(items: list[str] | None, option: str, example: str) -> dict[str, Path]:
    pairs = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise fail(f"{option} {item!r}: expected NAME=RUN, e.g. {option} {example}")
        pairs[name] = Path(path)
    return pairs


def report(
    run: Annotated[Path, typer.Option("--run", help="The run to report (its final model).")],
    ood: Annotated[list[Path], typer.Option("--ood", help="Out-of-distribution set (held-out styles); repeat per language.")],
    in_domain: Annotated[list[Path] | None, typer.Option("--in-domain", help="In-domain set (train styles, new samples); repeatable.")] = None,
    baseline_json: Annotated[list[Path] | None, typer.Option("--baseline", help="A `train baseline --out` JSON to put beside ours (repeatable).")] = None,
    ablation: Annotated[list[str] | None, typer.Option("--ablation", help="NAME=RUN: a run for the ablation table (repeatable).")] = None,
    ablation_data: Annotated[list[Path] | None, typer.Option("--ablation-data", help="Where the ablation runs are evaluated (default: the --ood sets).")] = None,
    elsewhere: Annotated[list[str] | None, typer.Option("--elsewhere", help="MACHINE=RUN: a run trained and evaluated on another machine, reported from its saved `train eval` reports (repeatable).")] = None,
    out_md: Annotated[Path, typer.Option("--out", help="Markdown page to write.")] = Path("docs/results.md"),
    plot: Annotated[Path, typer.Option("--plot", help="PNG of the t-SNE embedding map.")] = Path("docs/img/embeddings-tsne.png"),
    lexicon: LexiconOpt = None,
) -> None:
    """Write the paper-style results page: within-language tables (ours and OCR baselines), the six
    cross-lingual directions, R/D, the loss ablation and a t-SNE map, each number measured now."""
    from train.evaluate.report import GENERATED, ReportInputs, build_report

    inputs = ReportInputs(run, list(ood), list(in_domain or []), list(baseline_json or []),
                          _named(ablation, "--ablation", "no-inv=runs/no-inv"), list(ablation_data or []),
                          _named(elsewhere, "--elsewhere", "'NVIDIA H100=runs/paper'"))

    def ours(page: Path) -> bool:  # a page `train report` generated may be rewritten
        try:
            return GENERATED in page.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return False

    refusal = report_refusal(out_md, [plot], ours, "train report")
    if refusal:
        raise fail(refusal)
    lex = load_lexicon(lexicon)
    with spinner(err, "report") as status:
        build_report(inputs, lex, out_md, plot, progress=lambda msg: status.update(msg))
    out.print(f"wrote {out_md} and {plot}", highlight=False, soft_wrap=True)
