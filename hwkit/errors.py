"""The one error type a user is shown as a line, and the command-line group that shows it.

Library code raises a subclass of `UserError` for what the person at the keyboard can fix (a wrong path,
a bad setting, a dataset made with other settings), with a message naming the thing and the fix. Both
CLIs (`synth`, `train`) print such an error as one line, `error: …`, and exit 1. Every other exception
keeps its traceback: it is a bug, and hiding it behind one line would hide where it is.

A file-system error about a path the user named (not found, exists, not a directory, is a directory,
permission) is treated the same way: its message names the path.

Library messages name a parameter as the library calls it, in backticks: `resume`, `resume='latest'`,
`overwrite=True`, `batch.batch_size`. A Python caller reads them as they are; a CLI prints each as its flag
(--resume, --resume latest, --overwrite, --batch-size), mapped from the options its commands declare
(`cli_flags`) and any aliases it adds (`OneLineErrors.aliases`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

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


_PARAMETER = re.compile(r"`([a-z_][a-z0-9_.]*)(?:=([^`]*))?`")


def with_flags(message: str, flags: Mapping[str, str]) -> str:
    """`message` with each backticked parameter the CLI has a flag for written as that flag:
    `name` → --flag, `name=True` → --flag, `name='value'` → --flag value. Others stay as they are."""

    def flag(match: re.Match) -> str:
        name, value = match[1], match[2]
        if name not in flags:
            return match[0]
        return flags[name] if value in (None, "True") else f"{flags[name]} {value.strip(chr(39) + chr(34))}"

    return _PARAMETER.sub(flag, message)


def cli_flags(command: Any) -> dict[str, str]:
    """Every option's parameter name → its long flag, over a command tree; a name that two commands spell
    differently is left out (a message naming it keeps the parameter's name). `command` is a click command
    (Typer's own copy of click: its classes are not `click`'s, hence duck typing)."""
    seen: dict[str, set[str]] = {}
    stack = [command]
    while stack:
        cmd = stack.pop()
        stack.extend(getattr(cmd, "commands", {}).values())
        for param in cmd.params:
            if getattr(param, "param_type_name", "") == "option" and param.name:
                seen.setdefault(param.name, set()).add(max(param.opts, key=len))
    return {name: flags.pop() for name, flags in seen.items() if len(flags) == 1}


class OneLineErrors(TyperGroup):
    """The root group of a CLI: a `UserError` (or a path error) from any command, sub-commands included,
    becomes `error: …` and exit status 1 (`typer.Typer(cls=OneLineErrors)`), its parameters written as
    this CLI's flags. A subclass adds `aliases` for library names no option carries (config keys). A group
    nested in another leaves the error to the outermost one, which knows every command's flags."""

    aliases: Mapping[str, str] = {"out": "--out"}  # both CLIs name their output folder --out

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (UserError, *PATH_ERRORS) as exc:
            if ctx.parent is not None:
                raise
            raise fail(with_flags(str(exc), {**cli_flags(self), **self.aliases})) from None
