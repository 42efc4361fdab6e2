"""Rich tables of the depth × length grid for the terminal."""

from __future__ import annotations

import pandas as pd
from rich.table import Table

from diffbench.lengths import format_length


def _style(value: float) -> str:
    return "green" if value >= 0.9 else ("yellow" if value >= 0.5 else "red")


def grid_table(
    table: pd.DataFrame, title: str, spread: pd.DataFrame | None = None, caption: str | None = None
) -> Table:
    """A depth × length accuracy table, coloured like the heatmap; with ``spread`` (a family's max − min
    over seeds, same shape) each cell also shows it in brackets, so a seed split is never averaged away."""
    rich_table = Table(title=title, show_lines=False, caption=caption)
    rich_table.add_column("depth", justify="right")
    for column in table.columns:
        rich_table.add_column(format_length(int(column)), justify="right")
    rich_table.add_column("mean", justify="right", style="bold")
    for depth, row in table.iterrows():
        cells = [f"[{_style(v)}]{v:.2f}[/]" if pd.notna(v) else "-" for v in row]
        if spread is not None:
            cells = [
                f"{cell} ({gap:.1f})" if pd.notna(gap) else cell
                for cell, gap in zip(cells, spread.loc[depth, table.columns], strict=True)
            ]
        rich_table.add_row(f"{depth:g}%", *cells, f"{row.mean():.2f}")
    means = [f"{v:.2f}" for v in table.mean(axis=0)]
    rich_table.add_row("mean", *means, f"{table.to_numpy().mean():.2f}", style="bold")
    return rich_table


def number_text(value: object, fmt: str = "{:.3f}") -> str:
    """A figure for a table cell; "–" where there is none (None or NaN)."""
    return "–" if value is None or pd.isna(value) else fmt.format(value)


def interval_text(low: object, high: object, fmt: str = "{:.3f}") -> str:
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return "–"
    return f"[{fmt.format(low)}, {fmt.format(high)}]"


TEXT_COLUMNS = {
    "task",
    "model",
    "variant",
    "length",
    "shortest",
    "probe",
    "mode",
    "headline",
    "first",
    "second",
    "judge",
}


def comparison_cells(
    rows: pd.DataFrame, reference: str | None, digits: int = 3
) -> tuple[list[str], list[list[str]]]:
    """Headers and text cells of the comparison table, shared by the terminal and Markdown views."""
    value, signed = f"{{:.{digits}f}}", f"{{:+.{digits}f}}"
    headers = ["task", "model", "variant", "length", "n", "accuracy", "95% CI"]
    recall = "recall" in rows.columns and bool(rows["recall"].notna().any())  # multi-needle runs
    if recall:
        headers.append("recall")
    if reference is not None:
        headers += [f"Δ vs {reference}", "Δ 95% CI"]
    cells = []
    for row in rows.to_dict(orient="records"):
        line = [
            str(row["task"]),
            str(row["model"]),
            str(row["variant"]),
            str(row["length"]),
            str(row["n"]),
            number_text(row["accuracy"], value),
            interval_text(row["ci_low"], row["ci_high"], value),
        ]
        if recall:
            line.append(number_text(row["recall"], value))
        if reference is not None:
            line += [
                number_text(row["delta"], signed),
                interval_text(row["delta_low"], row["delta_high"], signed),
            ]
        cells.append(line)
    return headers, cells


def effective_cells(effective: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    headers = ["task", "model", "variant", "shortest", "accuracy there", "85% threshold", "effective length"]
    cells = []
    for row in effective.to_dict(orient="records"):
        length = row["effective_length"]
        cells.append(
            [
                str(row["task"]),
                str(row["model"]),
                str(row["variant"]),
                format_length(int(row["shortest_length"])),
                number_text(row["shortest_accuracy"]),
                number_text(row["threshold"]),
                "none" if length is None or pd.isna(length) else format_length(int(length)),
            ]
        )
    return headers, cells


def without_constant_columns(
    headers: list[str], cells: list[list[str]], names: tuple[str, ...] = ("task", "variant")
) -> tuple[list[str], list[list[str]], list[str]]:
    """Drop the named columns that hold one value in every row (for 80-column terminals); returns it too."""
    dropped = [
        index
        for index, header in enumerate(headers)
        if header in names and len({c[index] for c in cells}) == 1
    ]
    kept = [i for i in range(len(headers)) if i not in dropped]
    values = [cells[0][i] for i in dropped] if cells else []
    return [headers[i] for i in kept], [[line[i] for i in kept] for line in cells], values


def is_interval(cell: str) -> bool:
    """'[0.44, 1.00]' and '0.57 [0.33, 0.79]': a cell that is unreadable once split over two lines."""
    return cell.endswith("]") and "[" in cell


def rich_table(headers: list[str], cells: list[list[str]], title: str, caption: str | None = None) -> Table:
    """A compact table that fits narrow terminals and CI logs (80 columns when stdout is not a TTY):
    model names and interval cells never wrap; other cells and headers fold instead."""
    from rich import box

    table = Table(title=title, caption=caption, box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)
    for index, header in enumerate(headers):
        text = header in TEXT_COLUMNS
        whole = any(is_interval(line[index]) for line in cells)
        table.add_column(
            header,
            justify="left" if text else "right",
            no_wrap=header in ("model", "variant", "probe") or whole,
            overflow="fold",
        )
    for line in cells:
        table.add_row(*line)
    return table


def markdown_table(headers: list[str], cells: list[list[str]]) -> str:
    """A GitHub-flavoured Markdown pipe table (no extra dependency)."""

    def escape(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(escape(h) for h in headers) + " |"]
    lines.append("|" + "|".join("---" if h in TEXT_COLUMNS else "---:" for h in headers) + "|")
    lines += ["| " + " | ".join(escape(c) for c in line) + " |" for line in cells]
    return "\n".join(lines) + "\n"


CSV_COLUMNS = [
    "task",
    "model",
    "variant",
    "length",
    "target_length",
    "n",
    "correct",
    "accuracy",
    "ci_low",
    "ci_high",
    "mean_score",
    "delta",
    "delta_low",
    "delta_high",
    "paired_n",
]


def comparison_csv(rows: pd.DataFrame) -> str:
    """The comparison table as CSV with raw numbers, for spreadsheets and scripts."""
    return str(
        rows.reindex(columns=CSV_COLUMNS).to_csv(index=False, float_format="%.6g", lineterminator="\n")
    )
