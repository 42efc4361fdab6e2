"""The consoles every command prints to, and the one way user errors end a command: one line, exit 2
(usage) or 1 (runtime), never a traceback."""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Iterator
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup
from typer.exceptions import TyperException

from diffbench.errors import DiffbenchError

stderr = Console(stderr=True)
stdout = Console()

# A full disk, quota or file-size limit, or a read-only filesystem: wherever a write fails that way (a
# heatmap, a checkpoint, a library's own save), the command ends in one line; every earlier write stood.
STORAGE_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """One red line and exit code 2 (usage) or 1 (runtime) for errors a user can act on; no traceback."""
    try:
        yield
    except DiffbenchError as error:
        # Messages quote user input ('--lengths [/x]'), which rich must not read as markup.
        stderr.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)
        raise typer.Exit(error.exit_code) from None
    except KeyboardInterrupt:
        stderr.print("[yellow]interrupted: finished samples are saved; rerun the same command to resume[/]")
        raise typer.Exit(130) from None
    except Exception as error:
        reason = storage_failure(error)
        if reason is None:
            raise
        stderr.print(
            f"[bold red]error:[/] cannot write{escape(reason)}; what finished is saved: free space and rerun "
            "the same command",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1) from None


def storage_failure(error: BaseException) -> str | None:
    """' PATH: reason' when ``error`` is a write that failed for want of space (or a read-only disk),
    as Python reports it (OSError) or as a Rust writer does (safetensors: '... (os error 28)')."""
    if isinstance(error, OSError):
        if error.errno not in STORAGE_FULL:
            return None
        where = f" {str(error.filename)!r}" if error.filename else ""
        return f"{where}: {error.strerror or error}"
    found = re.search(r"\(os error (\d+)\)", str(error))
    if found is None or int(found.group(1)) not in STORAGE_FULL:
        return None
    return f": {os.strerror(int(found.group(1)))}"


@contextlib.contextmanager
def click_errors_in_one_line() -> Iterator[None]:
    """Typer's own usage errors (an unknown option, a value that is no number, a missing argument) as
    the single 'error:' line every other user error gets, instead of a usage banner and a framed
    panel whose message wraps; exit code 2 as before."""
    try:
        yield
    except TyperException as error:
        if type(error).__name__ == "NoArgsIsHelpError":
            raise  # a bare `diffbench` or `diffbench dex` prints its help, as before
        context = getattr(error, "ctx", None)
        hint = f"; see '{context.command_path} --help'" if context is not None else ""
        message = escape(error.format_message().rstrip(".") + hint)
        stderr.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
        raise typer.Exit(error.exit_code) from None


class OneLineErrorsGroup(TyperGroup):
    """The root group: its own parse errors and every subcommand's go through click_errors_in_one_line."""

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        with click_errors_in_one_line():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: Any) -> Any:
        with click_errors_in_one_line():
            return super().invoke(ctx)


def print_renderables(items: list[Any]) -> None:
    """Tables as rich draws them; plain lines as they are (no markup, not cut at the terminal's width)."""
    for item in items:
        if isinstance(item, str):
            stdout.print(item, markup=False, highlight=False, soft_wrap=True)
        else:
            stdout.print(item)
