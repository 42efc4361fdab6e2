"""Depth × length heatmaps in the original needle-in-a-haystack style, and model-vs-model differences.

Rows are depths (0% at the top), columns are context lengths, each cell shows its value. Accuracy
uses the red (#F0496E) → yellow (#EBB839) → green (#0CD79F) palette users know from gkamradt's
heatmaps. Differences (model − reference) use a diverging palette centred on 0, fixed to
[-1, 1] so that colours mean the same in every figure: red where the model is worse, blue where
it is better, white where they agree.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from diffbench.figures import inline_svg, pyplot, save_figure
from diffbench.lengths import format_length

if TYPE_CHECKING:
    from matplotlib.figure import Figure

NIAH_COLORS = ("#F0496E", "#EBB839", "#0CD79F")
DIFFERENCE_CMAP = "RdBu"
MISSING_COLOR = "#DDDDDD"


def _figure(table: pd.DataFrame, title: str, difference: bool, spread: pd.DataFrame | None = None) -> Figure:
    plt = pyplot()
    from matplotlib.colors import LinearSegmentedColormap, TwoSlopeNorm

    rows, cols = table.shape
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * cols + 2.5), max(3.0, 0.45 * rows + 1.6)))
    values = table.to_numpy(dtype=float)
    if difference:
        cmap: Any = plt.get_cmap(DIFFERENCE_CMAP).with_extremes(bad=MISSING_COLOR)
        norm = TwoSlopeNorm(vmin=-1.0, vcenter=0.0, vmax=1.0)
        image = ax.imshow(values, cmap=cmap, norm=norm, aspect="auto")
        label, fmt = "Accuracy difference", "{:+.2f}"
    else:
        cmap = LinearSegmentedColormap.from_list("niah", list(NIAH_COLORS)).with_extremes(bad=MISSING_COLOR)
        image = ax.imshow(values, cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
        label, fmt = "Accuracy", "{:.2f}"
    ax.set_xticks(range(cols), [format_length(int(c)) for c in table.columns])
    ax.set_yticks(range(rows), [f"{d:g}%" for d in table.index])
    ax.set_xlabel("Context length (tokens)")
    ax.set_ylabel("Needle depth")
    ax.set_title(title)
    for row in range(rows):
        for col in range(cols):
            value = table.iat[row, col]
            text = fmt.format(value) if pd.notna(value) else "–"
            if spread is not None and pd.notna(value):  # a family's cell: the seeds' range below the mean
                text += f"\n({spread.iat[row, col]:.2f})"
            # Strong differences are dark in RdBu: white text stays readable there.
            color = "white" if difference and pd.notna(value) and abs(value) > 0.6 else "black"
            ax.text(col, row, text, ha="center", va="center", fontsize=8, color=color)
    fig.colorbar(image, ax=ax, label=label, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return fig


def plot_heatmap(table: pd.DataFrame, title: str, out_stem: Path) -> list[Path]:
    """Write ``out_stem``.png and .svg for a depth × length accuracy table; returns the paths."""
    return save_figure(_figure(table, title, difference=False), out_stem)


def plot_family_heatmap(table: pd.DataFrame, spread: pd.DataFrame, title: str, out_stem: Path) -> list[Path]:
    """A variant's mean accuracy over its seeds per cell, the seeds' range (max − min) in brackets."""
    aligned = spread.reindex(index=table.index, columns=table.columns)
    return save_figure(_figure(table, title, difference=False, spread=aligned), out_stem)


def plot_difference_heatmap(table: pd.DataFrame, title: str, out_stem: Path) -> list[Path]:
    """Write ``out_stem``.png and .svg for a depth × length table of accuracy differences."""
    return save_figure(_figure(table, title, difference=True), out_stem)


def heatmap_svg(
    table: pd.DataFrame,
    title: str,
    difference: bool = False,
    prefix: str = "",
    spread: pd.DataFrame | None = None,
) -> str:
    """The heatmap as an inline ``<svg>`` element (text kept as text, no external references); with
    ``spread`` a family's heatmap (the seeds' range under each mean)."""
    aligned = spread.reindex(index=table.index, columns=table.columns) if spread is not None else None
    return inline_svg(lambda: _figure(table, title, difference, aligned), prefix or title, prefix)
