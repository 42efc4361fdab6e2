"""`diffbench check`: the regression gate CI pipelines call (exit 1 on a significant drop)."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from diffbench.cli.console import stderr, stdout, user_errors
from diffbench.errors import UsageError


class CellDisplay(StrEnum):
    changed = "changed"
    all = "all"
    none = "none"


def check(
    baseline: Annotated[Path, typer.Option(help="The baseline's run directory.")],
    candidate: Annotated[
        Path | None, typer.Option(help="The candidate's run directory (same task options as the baseline).")
    ] = None,
    candidate_model: Annotated[
        str | None,
        typer.Option(help="A checkpoint to run on the baseline's exact samples first, then compare."),
    ] = None,
    max_drop: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="Accuracy drop a regression must exceed (0.02 = 2 points)."),
    ] = 0.02,
    alpha: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Significance level the drop's p-value must be below.")
    ] = 0.05,
    baseline_name: Annotated[
        str | None, typer.Option(help="Model of the baseline run to compare, if it holds several.")
    ] = None,
    candidate_name: Annotated[
        str | None, typer.Option(help="Model of the candidate run to compare, if it holds several.")
    ] = None,
    baseline_family: Annotated[
        str | None,
        typer.Option(
            help="A,B,C: the baseline variant's seeds (models of the baseline run), judged together."
        ),
    ] = None,
    candidate_family: Annotated[
        str | None,
        typer.Option(help="A,B,C: the candidate variant's seeds (models of the candidate run)."),
    ] = None,
    output: Annotated[
        Path | None, typer.Option(help="Verdict as JSON (default: CANDIDATE_RUN/check.json).")
    ] = None,
    junit: Annotated[Path | None, typer.Option(help="Also write the verdict as JUnit XML here.")] = None,
    cells: Annotated[
        CellDisplay, typer.Option(help="Cells to show: changed (verdict not ok), all, or none.")
    ] = CellDisplay.changed,
    resamples: Annotated[
        int, typer.Option(min=100, help="Bootstrap resamples for partial-credit scores.")
    ] = 2000,
    out: Annotated[
        Path | None, typer.Option(help="With --candidate-model: the candidate's run directory.")
    ] = None,
    results_dir: Annotated[
        Path, typer.Option(help="With --candidate-model: where its default run directory goes.")
    ] = Path("results"),
    device: Annotated[str, typer.Option(help="With --candidate-model: auto | cpu | cuda")] = "auto",
    dtype: Annotated[
        str, typer.Option(help="With --candidate-model: auto | float32 | bfloat16 | float16")
    ] = "auto",
) -> None:
    """Regression gate: exit 0 on pass, 1 on a significant drop above --max-drop, 2 on unusable input."""
    with user_errors():
        from diffbench.progress import sample_progress
        from diffbench.report.check import (
            compare,
            run_candidate,
            verdict_table,
            write_json_report,
            write_junit,
        )
        from diffbench.report.runs import load_run

        if (candidate is None) == (candidate_model is None):
            raise UsageError("pass exactly one of --candidate RUN_DIR or --candidate-model CHECKPOINT")
        if not 0.0 < alpha < 1.0:
            raise UsageError(f"--alpha {alpha:g} must be strictly between 0 and 1, e.g. 0.05")
        baseline_run = load_run(baseline)
        if candidate is not None:
            candidate_dir = candidate
        elif candidate_model is not None:
            if out is not None and out.resolve() == baseline.resolve():
                raise UsageError(
                    "--out is the baseline's run directory; pass a new directory for the candidate"
                )
            with sample_progress(stderr, "candidate") as on_event:
                candidate_dir = run_candidate(
                    baseline_run, candidate_model, out, results_dir, device, dtype, sys.argv, on_event
                )
        candidate_run = load_run(candidate_dir)
        if baseline_family is not None or candidate_family is not None:
            from diffbench.report.family_check import compare_families, parse_members

            if baseline_family is None or candidate_family is None or baseline_name or candidate_name:
                raise UsageError(
                    "families are compared whole: pass both --baseline-family and --candidate-family, "
                    "and no --baseline-name/--candidate-name"
                )
            result = compare_families(
                baseline_run,
                candidate_run,
                parse_members(baseline_family, baseline_run, "baseline"),
                parse_members(candidate_family, candidate_run, "candidate"),
                max_drop,
                alpha,
                resamples,
            )
        else:
            result = compare(
                baseline_run, candidate_run, baseline_name, candidate_name, max_drop, alpha, resamples
            )
        stdout.print(verdict_table(result, cells.value))
        for note in result.notes:
            stderr.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
        json_path = output or candidate_dir / "check.json"
        write_json_report(result, json_path)
        if junit is not None:
            write_junit(result, junit)
        written = escape(f" (verdict: {json_path}" + (f", {junit})" if junit else ")"))
        if result.passed:
            stdout.print(
                f"[bold green]PASS[/]: no significant drop above {max_drop:g}{written}",
                highlight=False,
                soft_wrap=True,
            )
            return
        names = escape(", ".join(f"{row.level} {row.name}" for row in result.regressions))
        stdout.print(f"[bold red]REGRESSION[/] in {names}{written}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
