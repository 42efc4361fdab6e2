"""The attention allocation of runs, for `diffbench report` and the leaderboard.

The Diff paper's Table 3 view: per model, the share of attention at the answer rows that lands on the
answer span and on the noise (the haystack without the needle), by needle depth and per layer. The
numbers are read from the attention_summary.json of a ``niah --attn`` run (RUN/attention/) or of a
``diffbench attn`` run (see analysis/attention_run.py); a pass that has not finished has no summary
yet, so its finished samples are summarised here. A run without attention data contributes nothing,
so reports of such runs are unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffbench.errors import DiffbenchError
from diffbench.store import read_json_object

if TYPE_CHECKING:
    from diffbench.report.runs import Run

SHARES = ("answer", "noise")
EXTRAS = {  # optional per-model columns: summary field → header
    "distractor": "distractor",
    "negative_share": "negative",
    "answer_over_net": "answer ÷ net",
    "dex_relative_norm": "DEX ‖λ·f_D(O)‖/‖O‖",
}
TITLE = "Attention at the answer rows (Table 3 view)"
CAPTION = (
    "share of the attention of the rows that produce the answer: on the answer span, on the noise "
    "(haystack without the needle); mean over layers, heads and samples. Diff: net map A1 − λ·A2 over its "
    "absolute mass, negative = its negative part, answer ÷ net = its answer mass over the net mass (the "
    "paper's normalisation; none where λ ≥ 1). DEX: softmax maps (unchanged by DEX) and the relative "
    "norm of its value-side term. distractor: on a character needle's distractor sentence, which the "
    "question matches word for word (taken out of the noise)."
)

SHORT_CAPTION = "shares of the attention at the answer rows (diff: net map; negative: its negative part)"


@dataclass
class AttentionTable:
    title: str
    headers: list[str]
    cells: list[list[str]]
    caption: str | None = None


@dataclass
class AttentionView:
    """Every model's attention summary rows under its display label, and what was incomplete."""

    models: list[dict[str, Any]]
    layers: list[dict[str, Any]]
    depths: list[dict[str, Any]]
    order: list[str]
    notes: list[str] = field(default_factory=list)
    lookback: list[dict[str, Any]] = field(default_factory=list)  # halluc --attn runs: per model

    def as_summary(self) -> dict[str, Any]:
        """The shape attention_plots expects (model_order, models, layers)."""
        return {"model_order": self.order, "models": self.models, "layers": self.layers}

    def tables(self) -> list[AttentionTable]:
        """Means per model, shares by depth, shares per layer: one set of cells for every view."""
        from diffbench.analysis.attention_plots import layer_cells

        extras = [key for key in EXTRAS if any(row.get(key) is not None for row in self.models)]
        headers = ["model", "variant", "answer", "noise", *(EXTRAS[k] for k in extras), "samples"]
        cells = [
            [
                row["model"],
                row["variant"],
                *(_share(row.get(key)) for key in (*SHARES, *extras)),
                str(row.get("samples", "–")),
            ]
            for row in self.models
        ]
        tables = [AttentionTable("Mean over layers, heads and samples", headers, cells)]
        depths = sorted({float(row["depth"]) for row in self.depths})
        by_depth = {(row["model"], float(row["depth"])): row for row in self.depths}
        headers = ["model"] + [f"{share} {depth:g}%" for share in SHARES for depth in depths]
        cells = [
            [model] + [_share(by_depth.get((model, d), {}).get(s)) for s in SHARES for d in depths]
            for model in self.order
        ]
        tables.append(AttentionTable("Answer and noise shares by needle depth", headers, cells))
        headers, cells = layer_cells(self.as_summary())
        tables.append(AttentionTable("Answer and noise shares per layer", headers, cells))
        if self.lookback:
            from diffbench.report.halluc import LOOKBACK_CAPTION, LOOKBACK_TITLE, lookback_cells

            tables.append(AttentionTable(LOOKBACK_TITLE, *lookback_cells(self.lookback), LOOKBACK_CAPTION))
        return tables

    def payload(self) -> dict[str, Any]:
        payload = {"models": self.models, "layers": self.layers, "depths": self.depths, "notes": self.notes}
        if self.lookback:  # reports of niah runs keep their exact former shape
            payload["lookback"] = self.lookback
        return payload


def _share(value: object) -> str:
    return "–" if value is None or value != value else f"{float(value):.3f}"  # type: ignore[arg-type]


def has_results(run: Run) -> bool:
    """Records, or for a ``diffbench attn`` run at least one finished sample (its records are attention)."""
    return bool(run.records) or (run.attention_only and read_summary(run) is not None)


def read_summary(run: Run) -> dict[str, Any] | None:
    """The run's attention summary, or None when the run has no (readable) attention data.

    A ``diffbench attn`` run still running, or cut short, has written no summary yet (it never
    resumes): its finished samples are summarised instead (a corrupt line is an error naming the
    file and line). A ``niah --attn`` pass cut short is resumed by rerunning it, and until then its
    older summary, if any, is shown.
    """
    noted = run.manifest.attention
    if not noted:
        return None
    path = run.directory / str(noted.get("summary", "attention/attention_summary.json"))
    if run.attention_only and not path.exists():
        return summarise_finished(run.directory)
    return read_json_object(path)


def summarise_finished(directory: Path) -> dict[str, Any] | None:
    """The summary of the samples with a verdict line, or None when no sample has finished.

    ``summarise`` reads whole files, but a pass cut short may end in half a line, or hold the head
    records of a sample whose verdict was never written: the finished samples are copied aside first.
    """
    import tempfile

    from diffbench.analysis.attention_files import RECORDS, SAMPLE_RESULTS
    from diffbench.analysis.attention_summary import summarise
    from diffbench.store import iter_record_lines, record_key

    hint = "remove that line (its sample is then left out)"
    verdicts = list(iter_record_lines(directory / SAMPLE_RESULTS, hint))
    if not verdicts:
        return None
    done = {record_key(verdict) for verdict in verdicts}
    heads = [row for row in iter_record_lines(directory / RECORDS, hint) if record_key(row) in done]
    if not heads:
        return None
    with tempfile.TemporaryDirectory(prefix="diffbench-attention-") as scratch:
        for name, rows in [(RECORDS, heads), (SAMPLE_RESULTS, verdicts)]:
            text = "".join(json.dumps(row) + "\n" for row in rows)
            (Path(scratch) / name).write_text(text, encoding="utf-8")
        return summarise(Path(scratch))


def attention_view(members: list[tuple[Run, str, str]]) -> AttentionView | None:
    """The attention rows of (run, model, display label) members; None when none of them has any."""
    summaries: dict[Path, dict[str, Any] | None] = {}
    view = AttentionView(models=[], layers=[], depths=[], order=[])
    for run, model, label in members:
        if run.directory not in summaries:
            try:
                summaries[run.directory] = read_summary(run)
            except DiffbenchError as error:  # one unreadable run must not hide the others
                summaries[run.directory] = None
                view.notes.append(f"run {run.run_id}: its attention data is left out: {error}")
            status = (run.manifest.attention or {}).get("status")
            if summaries[run.directory] is not None and status != "complete":
                view.notes.append(f"run {run.run_id}: its attention pass is {status}: older or partial data")
        summary = summaries[run.directory]
        if summary is None:
            continue
        rows = [row for row in summary.get("models", []) if row["model"] == model]
        if not rows:
            continue
        view.order.append(label)
        view.models += [{**row, "model": label, "run_id": run.run_id} for row in rows]
        view.layers += [{**row, "model": label} for row in summary["layers"] if row["model"] == model]
        view.depths += _by_depth(summary["grid"], model, label)
        view.lookback += [
            {**row, "model": label} for row in summary.get("lookback", []) if row["model"] == model
        ]
    return view if view.order else None


def _by_depth(grid: list[dict[str, Any]], model: str, label: str) -> list[dict[str, Any]]:
    """Mean over lengths of each depth's shares (every cell holds the same number of heads and samples)."""
    cells: dict[float, list[dict[str, Any]]] = {}
    for row in grid:
        if row["model"] == model:
            cells.setdefault(float(row["depth"]), []).append(row)
    rows = []
    for depth in sorted(cells):
        found = cells[depth]
        keys = [k for k in (*SHARES, "needle", *EXTRAS) if any(r.get(k) is not None for r in found)]
        means = {k: _mean_of_present([r.get(k) for r in found]) for k in keys}
        rows.append({"model": label, "depth": depth, **means})
    return rows


def _mean_of_present(values: list[Any]) -> float:
    """The mean of the cells that have a value (a probe cell whose answers are not in context has none)."""
    present = [float(value) for value in values if value is not None]
    return sum(present) / len(present)


def attention_markdown(view: AttentionView, figures: list[Path]) -> list[str]:
    """The report.md section: the three tables, the caption and the per-layer figure."""
    from diffbench.report.tables import markdown_table

    lines = [f"## {TITLE}", "", CAPTION, ""]
    lines += [f"- note: {note}" for note in view.notes]
    for table in view.tables():
        lines += [f"### {table.title}", ""] + ([table.caption, ""] if table.caption else [])
        lines.append(markdown_table(table.headers, table.cells))
    lines += [f"![{path.stem}]({path.name})\n" for path in figures if path.suffix == ".png"]
    return lines


def attention_rich_tables(view: AttentionView) -> list[Any]:
    from diffbench.report.tables import rich_table

    tables = view.tables()
    return [
        rich_table(
            t.headers, t.cells, f"Attention: {t.title.lower()}", SHORT_CAPTION if i == 0 else t.caption
        )
        for i, t in enumerate(tables)
    ]


def write_attention_figure(view: AttentionView, out: Path) -> list[Path]:
    """Per layer, answer vs noise share (and the other regions), one panel per model side by side."""
    from diffbench.analysis.attention_plots import plot_layers

    return plot_layers(view.as_summary(), out / "attention_layers")
