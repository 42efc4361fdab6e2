"""`diffbench leaderboard`: one static, self-contained HTML page from a folder of run directories.

Columns are sample sets ("tasks": one task spec fingerprint each), rows are models. A model is
identified by its resolved checkpoint path, so the same checkpoint evaluated in several runs is
one row; when the same model ran one sample set twice, the newest run counts. Everything the page
needs is inline (CSS, a few lines of JavaScript for sorting, heatmaps as SVG): it opens from disk
with no network.

Attention data (``niah --attn`` runs and standalone ``diffbench attn`` runs) is chosen the same way,
separately: the newest run with attention data for a model × sample set gives its Table 3 rows, so an
attention run adds its section next to the accuracy of a niah run of the same sample set. A sample set
that only attention runs measured has a section and no column in the accuracy table.

A ``diffbench halluc`` sample set holds five probes in two modes whose headlines measure different
things: it gets one column per probe × mode with that headline and its Wilson interval (report/halluc.py),
never one pooled accuracy, and its section lists the paired comparisons instead of NIAH heatmaps.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffbench import __version__
from diffbench.errors import DiffbenchError, UsageError
from diffbench.report.attention import CAPTION as ATTENTION_CAPTION
from diffbench.report.attention import AttentionTable, AttentionView, attention_view, has_results
from diffbench.report.families import (
    FAMILIES_CAPTION,
    FAMILIES_TITLE,
    FamilyView,
    detect_families,
    family_cells,
    family_view,
)
from diffbench.report.runs import Run, describe_spec, find_runs, load_report_run, provenance

KEY_SEPARATOR = "|"
PROVENANCE_KEYS = ("variant", "base_model", "adaptation", "diffbench_version", "seed", "device", "date")


@dataclass
class Column:
    """One sample set."""

    fingerprint: str
    label: str
    task: str

    @property
    def key(self) -> str:
        """Where rows keep this column's cell."""
        return self.fingerprint


@dataclass
class ProbeColumn:
    """One probe × mode headline of a halluc sample set."""

    fingerprint: str
    label: str
    task: str
    probe: str
    mode: str
    metric: str
    key: str


@dataclass
class Cell:
    accuracy: float
    low: float
    high: float
    n: int
    effective_length: str

    @property
    def score(self) -> float:
        """The number the page sorts and tints by."""
        return self.accuracy


@dataclass
class ProbeCell:
    """A probe's headline (hallucination-free accuracy, balanced accuracy, ...) with its Wilson interval."""

    metric: str
    value: float
    low: float
    high: float
    n: int

    @property
    def score(self) -> float:
        return self.value


@dataclass
class Row:
    key: str
    label: str
    cells: dict[str, Cell | ProbeCell] = field(default_factory=dict)
    provenance: list[dict[str, Any]] = field(default_factory=list)

    def summary(self, key: str) -> str:
        values = list(dict.fromkeys(str(p[key]) for p in self.provenance if p.get(key) not in ("", None)))
        return ", ".join(values) if values else "—"


@dataclass
class Figure:
    title: str
    svg: str


@dataclass
class Section:
    column: Column
    reference: str | None
    paired: AttentionTable | None = None  # halluc sample sets: the paired comparisons
    families: FamilyView | None = None  # niah sample sets holding several seeds of a variant
    family_table: AttentionTable | None = None  # the variants table, as text cells
    heatmaps: list[Figure] = field(default_factory=list)
    family_heatmaps: list[Figure] = field(default_factory=list)
    differences: list[Figure] = field(default_factory=list)
    attention: AttentionView | None = None  # models of runs made with niah --attn or diffbench attn
    attention_figure: Figure | None = None


@dataclass
class Leaderboard:
    title: str
    generated_at: str
    columns: list[Column | ProbeColumn]
    rows: list[Row]
    sections: list[Section]
    skipped: list[str]

    @property
    def has_attention(self) -> bool:
        return any(section.attention for section in self.sections)

    @property
    def has_probes(self) -> bool:
        return any(isinstance(column, ProbeColumn) for column in self.columns)

    def counts(self) -> str:
        """What the page holds, for the command's one line: sample sets only attention runs measured too."""
        scored = len(dict.fromkeys(column.fingerprint for column in self.columns))
        text = f"{len(self.rows)} models × {scored} sample sets"
        probes = sum(isinstance(column, ProbeColumn) for column in self.columns)
        text += f"; {probes} probe headline columns" if probes else ""
        unscored = len(self.sections) - scored
        return text + (f" + {unscored} with attention data only" if unscored else "")

    def payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "title": self.title,
            "generated_at": self.generated_at,
            "diffbench_version": __version__,
            "columns": [vars(c) for c in self.columns],
            "rows": [
                {
                    "model": row.label,
                    "key": row.key,
                    "results": {k: vars(v) for k, v in row.cells.items()},
                    "provenance": row.provenance,
                }
                for row in self.rows
            ],
            "skipped": self.skipped,
        }
        attention = {s.column.fingerprint: s.attention.payload() for s in self.sections if s.attention}
        if attention:  # boards without attention data keep their exact former shape
            payload["attention"] = attention
        families = {s.column.fingerprint: s.families.payload() for s in self.sections if s.families}
        if families:  # likewise boards without model families
            payload["families"] = families
        return payload


def _model_key(run: Run, model: str) -> str:
    """A checkpoint in one numeric precision: bfloat16 and float32 runs of one model are two rows."""
    entry = run.entry(model)
    if entry is None or not entry.path:
        return model
    return f"{entry.path}{KEY_SEPARATOR}{entry.dtype}"


def collect(results_dir: Path) -> tuple[list[Run], list[str]]:
    """Every readable run with results under ``results_dir``; unreadable ones are listed, not fatal."""
    runs: list[Run] = []
    skipped: list[str] = []
    for directory in find_runs(results_dir):
        try:
            run = load_report_run(directory)
            usable = has_results(run)
        except DiffbenchError as error:
            skipped.append(f"{directory}: {error}")
            continue
        if usable:
            runs.append(run)
        else:
            skipped.append(f"{directory}: no records")
    if not runs:
        detail = f" ({len(skipped)} skipped: {skipped[0]})" if skipped else ""
        raise UsageError(
            f"no run directories with records under {str(results_dir)!r}{detail}; "
            "run `diffbench niah --results-dir` there first"
        )
    return runs, skipped


def build_leaderboard(results_dir: Path, reference: str | None, title: str) -> Leaderboard:
    """Gather runs, pick one result per model × sample set, and compute everything the page shows."""
    import pandas as pd

    runs, skipped = collect(results_dir)
    newest_first = sorted(runs, key=lambda r: r.manifest.created_at, reverse=True)
    chosen = _newest(newest_first, Run.model_names, "", skipped)
    attention = _newest(newest_first, Run.attention_models, "the attention of ", skipped)

    labels = _labels({key: model for (_, key), (_, model) in [*chosen.items(), *attention.items()]})
    fingerprints = list(
        dict.fromkeys(run.fingerprint for run in sorted(runs, key=lambda r: r.manifest.created_at))
    )
    columns = _columns(fingerprints, runs)
    rows: dict[str, Row] = {}
    sections = []
    scored: list[Column | ProbeColumn] = []  # the table's columns: sample sets (or probes) with records
    for column in columns:
        members = [(run, model) for (fp, _), (run, model) in chosen.items() if fp == column.fingerprint]
        section = Section(column=column, reference=None)
        if members:
            records = [
                {**record, "model": labels[_model_key(run, model)]}
                for run, model in members
                for record in run.records_of(model)
            ]
            for run, model in members:
                key = _model_key(run, model)
                row = rows.setdefault(key, Row(key=key, label=labels[key]))
                row.provenance.append({**provenance(run, model), "task": column.label})
            if column.task == "halluc":
                probes, section = _probe_columns(records, column, rows, reference, scored)
                scored += probes
            else:
                frame = pd.DataFrame.from_records(records)
                _fill_cells(frame, column, rows, labels)
                section = _section(frame, column, reference)
                scored.append(column)
        watched = [(run, m) for (fp, _), (run, m) in attention.items() if fp == column.fingerprint]
        section.attention = attention_view([(run, m, labels[_model_key(run, m)]) for run, m in watched])
        if section.attention is not None:
            section.attention_figure = _attention_figure(section.attention, column)
        sections.append(section)
    ordered = sorted(
        rows.values(),
        key=lambda r: (
            -(r.cells[scored[0].key].score) if scored[0].key in r.cells else 1,
            r.label,
        ),
    )
    return Leaderboard(
        title=title,
        generated_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        columns=scored,
        rows=ordered,
        sections=sections,
        skipped=skipped,
    )


def _newest(
    runs: list[Run], models_of: Callable[[Run], list[str]], what: str, skipped: list[str]
) -> dict[tuple[str, str], tuple[Run, str]]:
    """One (run, model) per sample set × checkpoint from runs newest first; older ones are listed skipped."""
    chosen: dict[tuple[str, str], tuple[Run, str]] = {}
    for run in runs:
        for model in models_of(run):
            slot = (run.fingerprint, _model_key(run, model))
            if slot in chosen:
                skipped.append(f"{run.directory}: {what}{model} also in newer run {chosen[slot][0].run_id}")
            else:
                chosen[slot] = (run, model)
    return chosen


def _labels(models: dict[str, str]) -> dict[str, str]:
    """Model name as label; where names repeat, the precision, else the parent folder, tells them apart."""

    def clashes(labels: dict[str, str]) -> set[str]:
        seen: dict[str, int] = {}
        for label in labels.values():
            seen[label] = seen.get(label, 0) + 1
        return {label for label, count in seen.items() if count > 1}

    labels = dict(models)
    repeated = clashes(labels)
    dtypes = {key: key.rpartition(KEY_SEPARATOR)[2] for key in models if KEY_SEPARATOR in key}
    for key, name in models.items():
        if name in repeated and key in dtypes and dtypes[key] != "float32":
            labels[key] = f"{name} ({dtypes[key]})"
    repeated = clashes(labels)
    for key, label in list(labels.items()):
        if label in repeated:
            folder = Path(key.rpartition(KEY_SEPARATOR)[0] or key).parent.name or key
            labels[key] = f"{label} ({folder})"
    return labels


def _columns(fingerprints: list[str], runs: list[Run]) -> list[Column]:
    by_fingerprint = {run.fingerprint: run for run in runs}
    columns = []
    seen: dict[str, int] = {}
    for fingerprint in fingerprints:
        spec = by_fingerprint[fingerprint].manifest.spec
        label = describe_spec(spec)
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            label = f"{label} [{fingerprint[:6]}]"
        columns.append(Column(fingerprint=fingerprint, label=label, task=spec.task))
    return columns


def _fill_cells(frame: Any, column: Column, rows: dict[str, Row], labels: dict[str, str]) -> None:
    from diffbench.lengths import format_length
    from diffbench.report.summary import effective_lengths
    from diffbench.stats import wilson_interval

    effective = {row["model"]: row["effective_length"] for row in effective_lengths(frame).to_dict("records")}
    by_label = {row.label: row for row in rows.values()}
    for label, own in frame.groupby("model", sort=False):
        hits, n = int(own["correct"].sum()), len(own)
        low, high = wilson_interval(hits, n)
        length = effective.get(label)
        by_label[str(label)].cells[column.fingerprint] = Cell(
            accuracy=hits / n,
            low=low,
            high=high,
            n=n,
            effective_length=format_length(int(length)) if length is not None and length == length else "—",
        )


def _probe_columns(
    records: list[dict[str, Any]],
    column: Column,
    rows: dict[str, Row],
    reference: str | None,
    taken: list[Column | ProbeColumn],
) -> tuple[list[ProbeColumn], Section]:
    """A halluc sample set's headline columns (in the records' probe order), each model's cells, and its
    section: the paired comparisons against the reference on the identical items."""
    from diffbench.report.halluc import metric_label, paired_view, summarize

    models = sorted(dict.fromkeys(str(record["model"]) for record in records))
    variants = {str(record["model"]): str(record["variant"]) for record in records}
    section = Section(column=column, reference=_reference(models, variants, reference))
    payload = summarize(records, reference=section.reference)
    taken_labels = {c.label for c in taken}
    by_label = {row.label: row for row in rows.values()}
    probes: dict[str, ProbeColumn] = {}
    for headline in payload.probes:
        probe, mode, metric = headline.probe, headline.mode, headline.metric
        key = f"{column.fingerprint}/{probe}/{mode}"
        if key not in probes:
            label = f"{probe} · {mode}: {metric_label(metric)}"
            label += f" [{column.fingerprint[:6]}]" if label in taken_labels else ""
            probes[key] = ProbeColumn(column.fingerprint, label, column.task, probe, mode, metric, key)
        if headline.value is not None and headline.low is not None and headline.high is not None:
            # e.g. no answerable item, no balanced accuracy: a blank cell
            by_label[headline.model].cells[key] = ProbeCell(
                metric, headline.value, headline.low, headline.high, headline.n
            )
    if payload.comparisons:
        section.paired = AttentionTable(*paired_view(payload))
    return list(probes.values()), section


def _section(frame: Any, column: Column, reference: str | None) -> Section:
    from diffbench.report.heatmap import heatmap_svg
    from diffbench.report.summary import cell_summary, difference_grid, grid

    cells = cell_summary(frame)
    models = sorted(dict.fromkeys(frame["model"]))
    variants = dict(zip(frame["model"], frame["variant"], strict=True))
    section = Section(column=column, reference=_reference(models, variants, reference))
    section.families = family_view(frame, detect_families(models), section.reference)
    if section.families is not None:
        section.family_table = AttentionTable(FAMILIES_TITLE, *family_cells(section.families))
        for name, table in section.families.grids.items():
            title = f"{name}: mean over {section.families.estimates[name].seeds} seed(s) (seed range)"
            svg = heatmap_svg(
                table,
                title,
                spread=section.families.spreads[name],
                prefix=f"{column.fingerprint}-family-{name}",
            )
            section.family_heatmaps.append(Figure(title, svg))
    for model in models:
        title = f"{model} ({variants[model]})"
        section.heatmaps.append(
            Figure(title, heatmap_svg(grid(cells, model), title, prefix=f"{column.fingerprint}-{model}"))
        )
    if section.reference is None:
        return section
    for model in models:
        if model == section.reference:
            continue
        title = f"{model} − {section.reference}"
        table = difference_grid(cells, model, section.reference)
        svg = heatmap_svg(table, title, difference=True, prefix=f"{column.fingerprint}-{model}-diff")
        section.differences.append(Figure(title, svg))
    return section


def _attention_figure(view: AttentionView, column: Column) -> Figure:
    """The per-layer answer vs noise panels as inline SVG (ids prefixed: several sit on one page)."""
    from diffbench.analysis.attention_plots import layers_figure
    from diffbench.figures import inline_svg

    prefix = f"{column.fingerprint}-attention"
    svg = inline_svg(lambda: layers_figure(view.as_summary()), prefix, prefix)
    return Figure("answer, needle, noise and sink shares per layer", svg)


def _reference(models: list[str], variants: dict[str, str], reference: str | None) -> str | None:
    """The given reference where it ran this sample set, else the first baseline-variant model (A→Z)."""
    if len(models) < 2:
        return None
    if reference is not None:
        matches = [m for m in models if m == reference or m.startswith(f"{reference} (")]
        if matches:
            return matches[0]
    baselines = [m for m in models if variants[m] == "baseline"]
    return (baselines or models)[0]


def tint(accuracy: float) -> str:
    """The heatmaps' red → yellow → green at this accuracy, translucent so the numbers stay readable."""
    from diffbench.report.heatmap import NIAH_COLORS

    stops = [tuple(int(color[i : i + 2], 16) for i in (1, 3, 5)) for color in NIAH_COLORS]
    position = min(1.0, max(0.0, accuracy)) * (len(stops) - 1)
    index = min(int(position), len(stops) - 2)
    fraction = position - index
    red, green, blue = (
        round(a + (b - a) * fraction) for a, b in zip(stops[index], stops[index + 1], strict=True)
    )
    return f"rgba({red}, {green}, {blue}, 0.35)"


def render(board: Leaderboard) -> str:
    """The page: Jinja2 template with autoescaping; the SVGs are matplotlib's own (escaped) output."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    environment = Environment(
        loader=PackageLoader("diffbench.report", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    template = environment.get_template("leaderboard.html.j2")
    return template.render(
        board=board,
        provenance_keys=PROVENANCE_KEYS,
        version=__version__,
        tint=tint,
        attention_caption=ATTENTION_CAPTION,
        families_caption=FAMILIES_CAPTION,
    )


def write_leaderboard(
    results_dir: Path, out: Path, reference: str | None, title: str
) -> tuple[Path, Leaderboard]:
    """Write ``out``/index.html and ``out``/leaderboard.json; returns the page's path."""
    from diffbench.store import atomic_write_text, ensure_directory

    board = build_leaderboard(results_dir, reference, title)
    ensure_directory(out)
    page = out / "index.html"
    atomic_write_text(page, render(board))
    atomic_write_text(out / "leaderboard.json", json.dumps(board.payload(), indent=2, allow_nan=False) + "\n")
    return page, board
