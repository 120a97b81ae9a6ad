"""Every `--help` shows all of its text: Rich (typer's help renderer) reads `[word…]` as a markup tag and
drops it, which once turned "pip install '.[ray]'" into "pip install '.'"."""

from __future__ import annotations

import re

import click
import pytest
import typer
from click.testing import CliRunner

from synth.cli import app as synth_app
from train.cli import app as train_app

TAG = re.compile(r"(?<!\\)\[[a-z#/@]")  # what Rich would take for the start of a markup tag


def commands(group: click.Command, path: tuple[str, ...] = ()):
    yield path, group
    for name, command in getattr(group, "commands", {}).items():
        yield from commands(command, path + (name,))


@pytest.mark.parametrize("app", [synth_app, train_app], ids=["synth", "train"])
def test_help_texts_have_no_unescaped_markup(app):
    root = typer.main.get_command(app)
    found = []
    for path, command in commands(root):
        texts = [command.help or ""] + [getattr(p, "help", None) or "" for p in command.params]
        found += [f"{' '.join(path) or '(top)'}: {t!r}" for t in texts if TAG.search(t)]
        result = CliRunner().invoke(root, [*path, "--help"], terminal_width=200)
        assert result.exit_code == 0, (path, result.output)
    assert not found, "escape '[' as '\\\\[' in help text: " + "; ".join(found)


def test_escaped_brackets_are_shown():
    result = CliRunner().invoke(typer.main.get_command(synth_app), ["render", "--help"], terminal_width=250)
    assert "pip install '.[ray]'" in result.output


@pytest.mark.parametrize(("app", "name"), [(synth_app, "synth"), (train_app, "train")])
def test_version(app, name):
    from synth import __version__

    result = CliRunner().invoke(typer.main.get_command(app), ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"{name} {__version__}"
