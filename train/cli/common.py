"""What every `train` command shares: the consoles and the options that mean the same in each."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from hwkit.errors import OneLineErrors, fail
from synth.lexicon import LANGS

out = Console()
err = Console(stderr=True)


class TrainErrors(OneLineErrors):
    """`train`'s root and sub-app groups: library parameters no option is named after, as their flags."""

    aliases = {**OneLineErrors.aliases, "csv_path": "--csv", "batch.batch_size": "--batch-size",
               "optim.lr": "--lr"}


DataOpt = Annotated[list[Path], typer.Option("--data", help="Shard folder (as `synth render --out` writes); repeat to combine.")]
TextEncoderOpt = Annotated[Path | None, typer.Option("--text-encoder", help="Hugging Face encoder folder (default: the prepared multilingual-e5-small).")]
LexiconOpt = Annotated[Path | None, typer.Option("--lexicon", help="Lexicon TSV (default: lexicon/lexicon.tsv).")]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="cpu, cuda, cuda:1 … (default: cuda when available).")]
ImagesPerPassOpt = Annotated[int | None, typer.Option(
    "--batch-size", min=1, help="Images per forward pass (default: 256 on a GPU; on a CPU 32 at 64×256, 128 at 32×128).")]
WorkersOpt = Annotated[int, typer.Option("--workers", min=0, help="Processes decoding shards.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON instead of a table.")]


def check_langs(codes: list[str] | None) -> None:
    """Refuse an unknown --lang before anything loads."""
    bad = [code for code in codes or [] if code not in LANGS]
    if bad:
        raise fail(f"--lang: language {bad[0]!r}; expected one of {', '.join(LANGS)}")
