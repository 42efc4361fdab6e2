"""`diffbench report`: heatmaps and comparison tables across finished runs."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from diffbench.cli.console import print_renderables, stderr, stdout, user_errors


class TableFormat(StrEnum):
    terminal = "terminal"
    markdown = "markdown"
    csv = "csv"


def report(
    run_dirs: Annotated[
        list[Path], typer.Argument(help="Run directories sharing one sample set (same task options).")
    ],
    reference: Annotated[
        str | None,
        typer.Option(
            help="Model that difference heatmaps and Δ columns compare against (default: the first)."
        ),
    ] = None,
    table_format: Annotated[
        TableFormat, typer.Option("--format", "-f", help="How the tables print on stdout.")
    ] = TableFormat.terminal,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Folder for heatmaps and tables (default: RUN_DIR/report; reports/<time> for several)."
        ),
    ] = None,
    control: Annotated[
        Path | None,
        typer.Option(
            help="A run of the same character needles asked another way (--needle-style literal for a "
            "nonliteral run, or without --distractor): each model paired with it sample by sample.",
        ),
    ] = None,
    family: Annotated[
        list[str] | None,
        typer.Option(
            help="NAME=MODEL,MODEL,...: one variant's seeds, reported together (repeat per variant; "
            "default: names differing only by -sN)."
        ),
    ] = None,
) -> None:
    """Heatmaps, difference heatmaps, effective lengths and comparison tables across runs; for halluc runs,
    each probe's headline with its interval and paired tests between models."""
    with user_errors():
        from diffbench.report.compare import build_report, report_csv, report_markdown, terminal_tables

        result = build_report(run_dirs, reference, out, family, control)
        for note in result.notes:
            stderr.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
        if table_format is TableFormat.csv:
            sys.stdout.write(report_csv(result))
        elif table_format is TableFormat.markdown:
            sys.stdout.write(report_markdown(result))
        else:
            stdout.print(f"[bold]{result.title}[/]", highlight=False, soft_wrap=True)
            print_renderables(terminal_tables(result))
        stderr.print(
            f"report: {result.out} ({len(result.files)} files)", markup=False, highlight=False, soft_wrap=True
        )
