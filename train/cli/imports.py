"""`train import`: real handwriting into shards of the synth schema (split `real`), for `train finetune`.
Parsing and printing only; the readers are train/import_*.py and the writer train/realdata/__init__.py."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated

import typer

from hwkit.progress import progress_bar
from synth.lexicon import Lexicon, load_lexicon
from train.cli.common import TrainErrors, err, out
from train.realdata import UNMAPPED, RealWord, write_real_dataset

import_app = typer.Typer(cls=TrainErrors, no_args_is_help=True, pretty_exceptions_show_locals=False)

OutOpt = Annotated[Path, typer.Option("--out", help="Dataset folder to create (refused if it exists, unless --overwrite).")]
LexiconOpt = Annotated[Path | None, typer.Option("--lexicon", help="Lexicon TSV (default: lexicon/lexicon.tsv).")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace an earlier `train import` output at --out.")]
SkipOpt = Annotated[bool, typer.Option("--skip-unreadable", help="Count and list unreadable images instead of stopping.")]


@import_app.callback()
def main() -> None:
    """Real handwriting into shards (split `real`) that `train finetune` and `train eval` read unchanged.

    Each transcription is mapped to a semantic ID through the lexicon (case-folded for English and Spanish); words the lexicon lacks are counted and listed in OUT/unmapped.tsv, never guessed.
    """


def _run(words: Callable[[Lexicon], Iterable[RealWord]], out_dir: Path, lexicon: Path | None, config: dict,
         overwrite: bool, skip_unreadable: bool) -> None:
    lex = load_lexicon(lexicon)
    bar = progress_bar(err, unit="words")
    with bar:
        task = bar.add_task(f"import {config['source']}", total=None)
        result = write_real_dataset(words(lex), out_dir, lex, {**config, "lexicon": lex.path.name},
                                    command=" ".join(["train", *sys.argv[1:]]), overwrite=overwrite,
                                    skip_unreadable=skip_unreadable, progress=lambda n: bar.advance(task, n))
    out.print(result.summary(), highlight=False, soft_wrap=True)
    top = result.unmapped.most_common(10)
    if top:
        shown = ", ".join(f"{text} ({n})" for (_, text), n in top)
        out.print(f"most frequent unmapped: {shown}; all in {out_dir / UNMAPPED}", highlight=False, soft_wrap=True)


@import_app.command()
def iam(
    root: Annotated[Path, typer.Option("--root", help="IAM folder holding ascii/words.txt (or words.txt) and words/.")],
    out_dir: OutOpt,
    include_er: Annotated[bool, typer.Option("--include-er", help="Also import words whose segmentation is marked er.")] = False,
    lexicon: LexiconOpt = None,
    overwrite: OverwriteOpt = False,
    skip_unreadable: SkipOpt = False,
) -> None:
    """IAM word images (words.txt + words/<prefix>/<form>/<id>.png), English."""
    from train.realdata.iam import iam_words

    _run(lambda lex: iam_words(root, include_er), out_dir, lexicon,
         {"source": "iam", "root": str(root), "include_er": include_er}, overwrite, skip_unreadable)


@import_app.command()
def hwdb(
    root: Annotated[Path, typer.Option("--root", help="Folder of CASIA-HWDB .gnt files (searched recursively), or one file.")],
    out_dir: OutOpt,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the spacing and sample draws.")] = 0,
    lexicon: LexiconOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Chinese lexicon words composed from CASIA-HWDB isolated characters, one writer (file) per word."""
    from train.realdata.hwdb import hwdb_words

    _run(lambda lex: hwdb_words(root, lex, seed), out_dir, lexicon, {"source": "hwdb", "root": str(root), "seed": seed},
         overwrite, False)


@import_app.command()
def folder(
    csv_file: Annotated[Path, typer.Option("--csv", help="CSV with a header: path,text,lang[,writer]; relative paths from its folder.")],
    out_dir: OutOpt,
    lexicon: LexiconOpt = None,
    overwrite: OverwriteOpt = False,
    skip_unreadable: SkipOpt = False,
) -> None:
    """Any word images listed in a CSV file (path, text, lang in en/es/zh, optional writer)."""
    from train.realdata.folder import folder_words

    _run(lambda lex: folder_words(csv_file), out_dir, lexicon, {"source": "folder", "csv": str(csv_file)},
         overwrite, skip_unreadable)
