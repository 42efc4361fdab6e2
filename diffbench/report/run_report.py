"""Write a run directory's summary.json and heatmaps from its records."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from diffbench.errors import DiffbenchError
from diffbench.report.heatmap import plot_heatmap
from diffbench.report.summary import cell_summary, grid, records_frame, summary_payload
from diffbench.store import RECORDS, SUMMARY, iter_record_lines, read_manifest, write_json


@dataclass(frozen=True)
class RunReport:
    summary: dict[str, Any]
    cells: pd.DataFrame
    heatmaps: list[Path]


def safe_filename(name: str) -> str:
    return re.sub(r"[^\w.-]+", "-", name).strip("-") or "model"


def write_run_report(directory: Path) -> RunReport:
    """summary.json and heatmap_<model>.png/.svg for every model with records."""
    manifest = read_manifest(directory)
    records = list(iter_record_lines(directory / RECORDS))
    if not records:
        raise DiffbenchError(f"{str(directory)!r} has no records yet; run the task first")
    frame = records_frame(records)
    payload = summary_payload(manifest.run_id, frame)
    payload["status"] = manifest.status
    audits = {m: e["precision_audit"] for m, e in manifest.engine.items() if e.get("precision_audit")}
    if audits:  # bf16/fp16 runs: each model's drift from float32 (engine/precision.py)
        payload["precision_audit"] = audits
    write_json(directory / SUMMARY, payload)
    cells = cell_summary(frame)
    heatmaps: list[Path] = []
    for model in cells["model"].unique():
        variant = cells.loc[cells["model"] == model, "variant"].iloc[0]
        counts = cells.loc[cells["model"] == model, "n"]
        per_cell = f"{counts.min()}" if counts.min() == counts.max() else f"{counts.min()}–{counts.max()}"
        title = f"{model} ({variant}): needle-in-a-haystack accuracy, n = {per_cell} per cell"
        heatmaps += plot_heatmap(grid(cells, model), title, directory / f"heatmap_{safe_filename(model)}")
    return RunReport(summary=payload, cells=cells, heatmaps=heatmaps)
