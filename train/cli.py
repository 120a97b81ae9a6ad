"""The `train` command. Parsing only; the work is in the library. More commands arrive with the trainer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Dual-encoder training and cross-lingual retrieval on synth shards.", no_args_is_help=True,
                  pretty_exceptions_show_locals=False)
out = Console()
err = Console(stderr=True)

PAPER_IMAGE_TOWER = 1_290_000  # the reference paper's image-tower size (1.29 M parameters)


@app.callback()
def main() -> None:
    """Dual-encoder training and cross-lingual retrieval on synth shards."""


@app.command()
def info(
    text_encoder: Annotated[Optional[Path], typer.Option("--text-encoder", help="A local Hugging Face encoder folder to size too.")] = None,
    unlocked_layers: Annotated[int, typer.Option("--unlocked-layers", help="Top text layers left trainable by lock().")] = 2,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Model sizes: the image tower against the paper's 1.29 M budget, and optionally a text tower."""
    from train.image_tower import ImageTower, count_parameters

    image = ImageTower()
    rows = {
        "image_tower.features": count_parameters(image.features),
        "image_tower.projector": count_parameters(image.projector),
        "image_tower.total": count_parameters(image),
    }
    if text_encoder is not None:
        from train.text_tower import TextTower, TextTowerConfig

        try:
            text = TextTower(TextTowerConfig(model_path=str(text_encoder)))
        except (OSError, ValueError) as exc:
            err.print(f"[red]error:[/red] {str(exc).splitlines()[0]}", highlight=False, soft_wrap=True)
            raise typer.Exit(1)
        text.lock(unlocked_layers)
        rows["text_tower.total"] = count_parameters(text)
        rows["text_tower.trainable"] = count_parameters(text, trainable_only=True)
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table(title="parameters")
    table.add_column("part")
    table.add_column("parameters", justify="right")
    for name, n in rows.items():
        table.add_row(name, f"{n:,}")
    out.print(table)
    share = rows["image_tower.total"] / PAPER_IMAGE_TOWER
    out.print(f"image tower: {rows['image_tower.total']:,} parameters, {share:.1%} of the paper's 1.29 M", soft_wrap=True)
