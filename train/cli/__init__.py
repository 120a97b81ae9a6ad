"""The `train` command: one root app; each module here holds the commands of one job (run, evaluate,
search, export) or a sub-app (import, text-encoder). Parsing and printing only: the work is in the
library. A `hwkit.errors.UserError` from any command prints as one line, its parameters as flags (`TrainErrors`)."""

from __future__ import annotations

from typing import Annotated

import typer

from hwkit.files import exit_on_sigterm
from train.cli import evaluate, export, run, search
from train.cli.common import TrainErrors
from train.cli.imports import import_app
from train.cli.text_encoder import text_encoder_app

app = typer.Typer(cls=TrainErrors, no_args_is_help=True, pretty_exceptions_show_locals=False)
for panel, commands in {
    "Training": {"pretrain": run.pretrain, "finetune": run.finetune, "info": run.info},
    "Evaluation": {"eval": evaluate.evaluate, "baseline": evaluate.baseline, "report": evaluate.report},
    "Search": {"index": search.index, "search": search.search},
    "Export": {"export": export.export, "quantize": export.quantize},
}.items():
    for name, command in commands.items():
        app.command(name, rich_help_panel=panel)(command)
app.add_typer(import_app, name="import", rich_help_panel="Data")
app.add_typer(text_encoder_app, name="text-encoder", rich_help_panel="Data")


def _version(value: bool) -> None:
    if value:
        from synth import __version__  # one package, one version

        typer.echo(f"train {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """Dual-encoder training and cross-lingual retrieval on synth shards (docs/training.md).

    Typical use: `train text-encoder prepare` once; then `train pretrain --data SHARDS --out RUN`;
    `train finetune --init RUN --data REAL --out RUN2`; `train eval --ckpt RUN2 --data OOD --cross-lingual`.
    """
    exit_on_sigterm()
