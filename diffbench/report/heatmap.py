"""Depth × length heatmaps in the original needle-in-a-haystack style, and model-vs-model differences.

Rows are depths (0% at the top), columns are context lengths, each cell shows its value. Accuracy
uses the red (#F0496E) → yellow (#EBB839) → green (#0CD79F) palette users know from gkamradt's
heatmaps. Differences (model − reference) use a diverging palette centred on 0, fixed to
[-1, 1] so that colours mean the same in every figure: red where the model is worse, blue where
it is better, white where they agree.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from diffbench.lengths import format_length

if TYPE_CHECKING:
    from matplotlib.figure import Figure

NIAH_COLORS = ("#F0496E", "#EBB839", "#0CD79F")
DIFFERENCE_CMAP = "RdBu"
MISSING_COLOR = "#DDDDDD"


def pyplot() -> Any:
    """matplotlib's pyplot, off-screen, reading every label as plain text: model names and titles are
    user text, and a name such as ``m$x^$`` must print as typed, not fail as mathtext."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["text.parse_math"] = False
    import matplotlib.pyplot as plt

    return plt


def _figure(table: pd.DataFrame, title: str, difference: bool) -> Figure:
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
            # Strong differences are dark in RdBu: white text stays readable there.
            color = "white" if difference and pd.notna(value) and abs(value) > 0.6 else "black"
            ax.text(col, row, text, ha="center", va="center", fontsize=8, color=color)
    fig.colorbar(image, ax=ax, label=label, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, out_stem: Path) -> list[Path]:
    """STEM.png and STEM.svg, each written atomically (never through a link planted in the run)."""
    import io

    import matplotlib.pyplot as plt

    from diffbench.store import atomic_write_bytes

    paths = [out_stem.with_suffix(".png"), out_stem.with_suffix(".svg")]
    for path in paths:
        buffer = io.BytesIO()
        if path.suffix == ".png":
            fig.savefig(buffer, format="png", dpi=120)
        else:  # no date: the same figure gives the same bytes
            fig.savefig(buffer, format="svg", metadata={"Date": None})
        atomic_write_bytes(path, buffer.getvalue())
    plt.close(fig)
    return paths


def plot_heatmap(table: pd.DataFrame, title: str, out_stem: Path) -> list[Path]:
    """Write ``out_stem``.png and .svg for a depth × length accuracy table; returns the paths."""
    return save_figure(_figure(table, title, difference=False), out_stem)


def plot_difference_heatmap(table: pd.DataFrame, title: str, out_stem: Path) -> list[Path]:
    """Write ``out_stem``.png and .svg for a depth × length table of accuracy differences."""
    return save_figure(_figure(table, title, difference=True), out_stem)


def heatmap_svg(table: pd.DataFrame, title: str, difference: bool = False, prefix: str = "") -> str:
    """The heatmap as an inline ``<svg>`` element (text kept as text, no external references)."""
    return inline_svg(lambda: _figure(table, title, difference), prefix or title, prefix)


def inline_svg(build: Callable[[], Figure], salt: str, prefix: str = "") -> str:
    """A figure as an inline ``<svg>`` element, for HTML pages that hold several.

    Every element id (and every reference to one) gets ``prefix``, so several figures can share
    one HTML page without clashing ids; matplotlib numbers its groups figure_1, axes_1, ... in
    every figure. ``salt`` makes the remaining generated ids stable across runs.
    """
    import matplotlib
    import matplotlib.pyplot as plt

    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
        fig = build()
        buffer = io.StringIO()
        fig.savefig(buffer, format="svg", metadata={"Date": None})
        plt.close(fig)
    text = buffer.getvalue()
    svg = re.sub(r"<metadata>.*?</metadata>", "", text[text.find("<svg") :], flags=re.DOTALL).strip()
    if prefix:
        tag = re.sub(r"[^\w-]+", "-", prefix).strip("-") + "-"
        svg = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{tag}{m.group(1)}"', svg)
        svg = re.sub(r"url\(#([^)]+)\)", lambda m: f"url(#{tag}{m.group(1)})", svg)
        svg = re.sub(r'href="#([^"]+)"', lambda m: f'href="#{tag}{m.group(1)}"', svg)
    return svg
