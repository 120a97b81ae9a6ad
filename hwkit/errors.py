"""The one error type a user is shown as a line, and the command-line group that shows it.

Library code raises a subclass of `UserError` for what the person at the keyboard can fix (a wrong path,
a bad setting, a dataset made with other settings), with a message naming the thing and the fix. Both
CLIs (`synth`, `train`) print such an error as one line, `error: …`, and exit 1. Every other exception
keeps its traceback: it is a bug, and hiding it behind one line would hide where it is.

A file-system error about a path the user named (not found, exists, not a directory, is a directory,
permission) is treated the same way: its message names the path.
"""

from __future__ import annotations

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup


class UserError(Exception):
    """An error the user can fix; its first line is the whole message a CLI prints."""


PATH_ERRORS = (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError)
_err = Console(stderr=True)


def fail(message: str) -> typer.Exit:
    """Print `error: MESSAGE` (its first line) on stderr and return the exit to raise."""
    first = str(message).strip().splitlines()[0] if str(message).strip() else "failed"
    _err.print(Text.assemble(("error:", "red"), " ", first), highlight=False, soft_wrap=True)
    return typer.Exit(1)


class OneLineErrors(TyperGroup):
    """The root group of a CLI: a `UserError` (or a path error) from any command, sub-commands included,
    becomes `error: …` and exit status 1 (`typer.Typer(cls=OneLineErrors)`)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (UserError, *PATH_ERRORS) as exc:
            raise fail(str(exc)) from None
