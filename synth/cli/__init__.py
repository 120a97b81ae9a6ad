"""The `synth` command: one root app, one sub-app per job. Parsing only; the work is in the library."""

from __future__ import annotations

from typing import Annotated

import typer

from hwkit.errors import OneLineErrors
from hwkit.files import exit_on_sigterm
from synth import __version__
from synth.cli import fonts as cli_fonts
from synth.cli import lexicon as cli_lexicon
from synth.cli import render as cli_render

app = typer.Typer(
    cls=OneLineErrors,
    help="Synthetic handwriting for cross-script word retrieval (English, Spanish, Simplified Chinese).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(cli_lexicon.app, name="lexicon", help="The trilingual lexicon: build it from sources, print its statistics.")
app.add_typer(cli_fonts.app, name="fonts", help="The style catalogue: list, fetch, check coverage, pin checksums.")
for command in (cli_render.render, cli_render.corpus, cli_render.merge, cli_render.verify, cli_render.preview):
    app.command(rich_help_panel="Datasets")(command)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"synth {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """Render a trilingual lexicon in handwriting styles, with family-disjoint train / held-out fonts."""
    exit_on_sigterm()
