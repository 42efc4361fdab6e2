"""The `diffbench` command: the app, its root options, and one line per command.

Each command lives in its own module (niah.py, run.py, ...); options several share are in options.py (a
leaf), the error-to-one-line handling in console.py. Modules import downwards only: options/console ←
common ← commands ← this file.
"""

from __future__ import annotations

from typing import Annotated

import typer

from diffbench import __version__
from diffbench.cli import attn, check, dex, halluc, leaderboard, niah, report, run, zoo
from diffbench.cli.console import OneLineErrorsGroup, stdout
from diffbench.engine.distributed import leave_ranks_together

app = typer.Typer(
    name="diffbench",
    help="Long-context retrieval and contextual hallucination benchmarks for attention variants.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=OneLineErrorsGroup,
)


def _version(value: bool) -> None:
    if value:
        stdout.print(f"diffbench {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """diffbench: does an attention variant really retrieve better and hallucinate less?"""


app.command()(niah.niah)
app.command()(run.run)
app.command()(report.report)
app.command()(leaderboard.leaderboard)
app.command()(check.check)
app.command()(attn.attn)
app.command()(halluc.halluc)
app.add_typer(dex.dex_app, name="dex")
app.add_typer(zoo.zoo_app, name="zoo")


def main() -> None:
    try:
        app()
    except SystemExit as done:
        if done.code in (None, 0):
            leave_ranks_together()
        raise
