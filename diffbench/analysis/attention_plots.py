"""The views of an attention run: the Table 3 table (rich) and its figures (matplotlib, PNG + SVG).

- ``attention_layers``: per layer, the answer, needle, noise and sink shares, one panel per model side
  by side with a shared y axis (the Diff paper's Table 3, layer by layer);
- ``attention_heads_<model>``: layers × heads map of the needle's share (which heads retrieve);
- ``attention_grid_<model>``: depths × lengths map of the answer share (where retrieval fades), one
  colour scale for all models so their figures compare.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

from diffbench.figures import pyplot, save_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

LINES = {  # region → (colour, style): the answer in the NIAH green, noise in its red
    "answer": ("#0CD79F", "-"),
    "needle": ("#0CD79F", ":"),
    "noise": ("#F0496E", "-"),
    "sink": ("#777777", "--"),
}
NIAH_COLORS = ("#F0496E", "#EBB839", "#0CD79F")
SHARES = ("answer", "noise")  # the two columns of the Diff paper's Table 3


def safe_name(name: str) -> str:
    return re.sub(r"[^\w.-]+", "-", name).strip("-") or "model"


def layer_cells(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Per layer, each model's answer and noise shares side by side, and their means over layers."""
    models = summary["model_order"]
    variants = {row["model"]: row["variant"] for row in summary["models"]}
    headers = ["layer"] + [f"{model} ({variants[model]}) {region}" for model in models for region in SHARES]
    by_layer: dict[int, dict[str, dict[str, Any]]] = {}
    for row in summary["layers"]:
        by_layer.setdefault(int(row["layer"]), {})[row["model"]] = row
    cells = []
    for layer in sorted(by_layer):
        line = [str(layer)]
        for model in models:
            row = by_layer[layer].get(model)
            line += ["–", "–"] if row is None else [f"{row[region]:.3f}" for region in SHARES]
        cells.append(line)
    means = {row["model"]: row for row in summary["models"]}
    cells.append(["mean"] + [f"{means[model][region]:.3f}" for model in models for region in SHARES])
    return headers, cells


def table3(summary: dict[str, Any]) -> Table:
    """The per-layer cells as a rich table: model, variant and share on their own header lines."""
    from rich import box

    headers, cells = layer_cells(summary)
    table = Table(
        title="Attention at the answer rows: answer share vs noise share, per layer",
        box=box.SIMPLE_HEAD,
        collapse_padding=True,
        pad_edge=False,
    )
    table.add_column(headers[0], justify="right")
    for header in headers[1:]:
        name, _, region = header.rpartition(" ")
        model, _, variant = name.rpartition(" (")
        table.add_column(f"{model}\n({variant}\n{region}", justify="right", overflow="fold")
    for line in cells[:-1]:
        table.add_row(*line)
    table.add_row(*cells[-1], style="bold")
    return table


def plot_layers(summary: dict[str, Any], stem: Path) -> list[Path]:
    """One panel per model: share of each region per layer."""
    return save_figure(layers_figure(summary), stem)


def layers_figure(summary: dict[str, Any]) -> Figure:
    """Per layer, each region's share (and Diff's negative share), one panel per model, shared y axis."""
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()
    models = summary["model_order"]
    fig, axes = plt.subplots(
        1, len(models), figsize=(4.2 * len(models) + 0.8, 3.6), sharey=True, squeeze=False
    )
    variants = {row["model"]: row["variant"] for row in summary["models"]}
    for ax, model in zip(axes[0], models, strict=True):
        rows = sorted((r for r in summary["layers"] if r["model"] == model), key=lambda r: r["layer"])
        layers = [r["layer"] for r in rows]
        for region, (color, style) in LINES.items():
            ax.plot(layers, [r[region] for r in rows], style, color=color, label=region, marker=".")
        if any(r.get("negative_share") is not None for r in rows):  # Diff: the net map's negative part
            negative = [r.get("negative_share") for r in rows]
            ax.plot(layers, negative, "-.", color="#6A4C93", label="negative", marker=".")
        ax.set_title(f"{model} ({variants[model]})", fontsize=10)
        ax.set_xlabel("layer")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.axhline(0.0, color="#999999", linewidth=0.6)  # Diff's net shares go below it
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("share of attention at the answer rows")
    legend: dict[str, Any] = {}  # every panel's lines once: only Diff panels draw the negative share
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    axes[0][-1].legend(list(legend.values()), list(legend), fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def plot_heads(summary: dict[str, Any], model: str, stem: Path) -> list[Path]:
    """Layers × heads map of the needle's share, mean over samples."""
    import numpy as np

    plt = pyplot()
    rows = [r for r in summary["heads"] if r["model"] == model]
    layers = 1 + max(int(r["layer"]) for r in rows)
    heads = 1 + max(int(r["head"]) for r in rows)
    values = np.full((layers, heads), np.nan)
    for r in rows:
        values[int(r["layer"]), int(r["head"])] = r["needle"]
    fig, ax = plt.subplots(figsize=(max(3.5, 0.45 * heads + 2.2), max(3.0, 0.22 * layers + 1.4)))
    image = ax.imshow(values, cmap="viridis", vmin=0.0, aspect="auto", interpolation="nearest")
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_xticks(range(heads))
    ax.set_title(f"{model}: needle share per head", fontsize=10)
    fig.colorbar(image, ax=ax, label="needle share", fraction=0.046, pad=0.04)
    fig.tight_layout()
    return save_figure(fig, stem)


def plot_grid(summary: dict[str, Any], model: str, stem: Path, vmax: float) -> list[Path]:
    """Depths × lengths map of the answer share, mean over layers, heads and samples."""
    import numpy as np
    from matplotlib.colors import LinearSegmentedColormap

    from diffbench.lengths import format_length

    plt = pyplot()
    rows = [r for r in summary["grid"] if r["model"] == model]
    depths = sorted({float(r["depth"]) for r in rows})
    lengths = sorted({int(r["target_length"]) for r in rows})
    values = np.full((len(depths), len(lengths)), np.nan)
    for r in rows:
        values[depths.index(float(r["depth"])), lengths.index(int(r["target_length"]))] = r["answer"]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(lengths) + 2.5), max(3.0, 0.45 * len(depths) + 1.6)))
    cmap = LinearSegmentedColormap.from_list("niah", list(NIAH_COLORS))
    image = ax.imshow(values, cmap=cmap, vmin=0.0, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(lengths)), [format_length(n) for n in lengths])
    ax.set_yticks(range(len(depths)), [f"{d:g}%" for d in depths])
    ax.set_xlabel("Context length (tokens)")
    ax.set_ylabel("Needle depth")
    ax.set_title(f"{model}: answer share (mean over layers and heads)", fontsize=10)
    for i in range(len(depths)):
        for j in range(len(lengths)):
            if not np.isnan(values[i, j]):
                ax.text(j, i, f"{values[i, j]:.3f}", ha="center", va="center", fontsize=8)
    fig.colorbar(image, ax=ax, label="answer share", fraction=0.046, pad=0.04)
    fig.tight_layout()
    return save_figure(fig, stem)


def write_plots(directory: Path, summary: dict[str, Any]) -> list[Path]:
    """Every figure of the run; returns the files written."""
    files = plot_layers(summary, directory / "attention_layers")
    shares = [float(r["answer"]) for r in summary["grid"]]
    vmax = max([*shares, 1e-3])
    for model in summary["model_order"]:
        name = safe_name(model)
        files += plot_heads(summary, model, directory / f"attention_heads_{name}")
        files += plot_grid(summary, model, directory / f"attention_grid_{name}", vmax)
    return files
