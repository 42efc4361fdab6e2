"""`diffbench leaderboard`: one static HTML page over a folder of runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from diffbench.cli.console import stderr, stdout, user_errors


def leaderboard(
    results_dir: Annotated[
        Path, typer.Argument(help="Folder holding run directories (searched recursively).")
    ],
    out: Annotated[Path, typer.Option(help="Folder for index.html and leaderboard.json.")] = Path("site"),
    reference: Annotated[
        str | None,
        typer.Option(help="Model for the difference views (default: the first baseline model of each task)."),
    ] = None,
    title: Annotated[str, typer.Option(help="Page title.")] = "diffbench leaderboard",
) -> None:
    """One static, self-contained HTML page: sortable models × tasks table, heatmaps, provenance."""
    with user_errors():
        from diffbench.report.leaderboard import write_leaderboard

        page, board = write_leaderboard(results_dir, out, reference, title)
        for reason in board.skipped:
            stderr.print(f"[yellow]skipped:[/] {escape(reason)}", highlight=False, soft_wrap=True)
        stdout.print(
            f"leaderboard: {page} ({board.counts()})",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
