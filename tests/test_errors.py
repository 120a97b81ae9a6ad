"""One error type for the user: library messages name parameters, each CLI prints them as its flags."""

import ast
import re
from pathlib import Path

import typer
from typer.testing import CliRunner

from hwkit.errors import OneLineErrors, UserError, cli_flags, with_flags

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = [p for pkg in ("synth", "train", "hwkit") for p in (ROOT / pkg).rglob("*.py") if "cli" not in p.parts]


def test_parameters_become_flags():
    flags = {"resume": "--resume", "overwrite": "--overwrite", "batch.batch_size": "--batch-size"}
    message = ("pass `resume='latest'` to continue, `overwrite=True` to replace it, lower `batch.batch_size`, "
               "or start without `resume`; `unknown` stays; `train index --overwrite` is a command")
    assert with_flags(message, flags) == ("pass --resume latest to continue, --overwrite to replace it, lower "
                                          "--batch-size, or start without --resume; `unknown` stays; "
                                          "`train index --overwrite` is a command")


def test_flags_come_from_the_commands_and_ambiguous_names_are_left_out():
    app = typer.Typer(cls=OneLineErrors)

    @app.command()
    def first(text_encoder: str = typer.Option("", "--text-encoder"), out: str = typer.Option("", "--out")) -> None:
        raise UserError("no encoder at `text_encoder`; choose another `out`")

    @app.command()
    def second(out: str = typer.Option("", "--run")) -> None:
        pass

    flags = cli_flags(typer.main.get_command(app))
    assert flags["text_encoder"] == "--text-encoder" and "out" not in flags
    result = CliRunner().invoke(app, ["first"])
    assert result.exit_code == 1
    assert "error: no encoder at --text-encoder; choose another --out" in result.output  # --out: an alias


def library_messages() -> list[tuple[str, int, str]]:
    """The literal text of every `raise …Error(…)` in the library (f-string parts joined)."""
    found = []
    for path in LIBRARY:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                text = " ".join(c.value for arg in node.exc.args for c in ast.walk(arg)
                                if isinstance(c, ast.Constant) and isinstance(c.value, str))
                found.append((str(path.relative_to(ROOT)), node.lineno, text))
    return found


def test_library_messages_name_parameters_not_flags():
    """A Python caller has no --flags: a library message names the parameter (`resume='latest'`) and the
    CLI writes it as a flag. Whole commands quoted in backticks (`synth render --out …`) are fine."""
    messages = library_messages()
    assert len(messages) > 100  # the scan sees the library's raises
    flagged = [(f, n, t) for f, n, t in messages if re.search(r"(^|[\s(])--[a-z]", re.sub(r"`[^`]*`", "", t))]
    assert not flagged, flagged
