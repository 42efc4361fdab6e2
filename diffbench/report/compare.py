"""`diffbench report`: heatmaps, difference heatmaps, effective lengths and tables across runs.

Runs from several commands are merged when they share a sample set (same task spec fingerprint);
otherwise the report refuses and names the differing spec fields, because a table that puts two
different sample sets side by side would silently compare apples with oranges. A ``diffbench attn``
run has attention data and no records: it adds to the Table 3 view, never to the accuracy tables,
and a report of attention runs alone has only the Table 3 view.

Runs of ``diffbench halluc`` hold five probes in two modes whose headlines measure different things, so
they are never pooled into a NIAH accuracy: their report is the probe summary ``diffbench halluc`` prints
(report/halluc.py), over the models of every run, with paired tests on the identical items.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from diffbench.engine.precision import audit_warning
from diffbench.errors import DiffbenchError, UsageError
from diffbench.report.attention import (
    AttentionView,
    attention_markdown,
    attention_rich_tables,
    attention_view,
    has_results,
    write_attention_figure,
)
from diffbench.report.families import (
    FAMILIES_CAPTION,
    FAMILIES_TITLE,
    FamilyView,
    detect_families,
    explicit_families,
    families_csv,
    family_cells,
    family_view,
)
from diffbench.report.halluc import (
    HallucSummary,
    headline_csv,
    summarize,
    summary_markdown,
    summary_renderables,
)
from diffbench.report.heatmap import plot_difference_heatmap, plot_family_heatmap, plot_heatmap
from diffbench.report.run_report import safe_filename
from diffbench.report.runs import (
    Run,
    combined_frame,
    describe_spec,
    label_models,
    labelled_records,
    load_report_run,
    require_same_samples,
)
from diffbench.report.summary import (
    EFFECTIVE_FRACTION,
    cell_summary,
    difference_grid,
    effective_lengths,
    forced_agreement,
    grid,
    length_summary,
    nonfinite_count,
)
from diffbench.report.tables import (
    comparison_cells,
    comparison_csv,
    effective_cells,
    markdown_table,
)
from diffbench.store import ensure_directory, write_json


@dataclass
class ComparisonReport:
    """Everything `diffbench report` shows and writes."""

    runs: list[Run]
    title: str
    models: list[str]
    reference: str | None
    frame: pd.DataFrame
    cells: pd.DataFrame
    comparison: pd.DataFrame
    effective: pd.DataFrame
    out: Path
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    attention: AttentionView | None = None  # runs made with niah --attn or diffbench attn
    attention_files: list[Path] = field(default_factory=list)
    halluc: HallucSummary | None = None  # halluc runs: the probe summary (report/halluc.py summarize)
    families: FamilyView | None = None  # niah runs with several seeds of a variant (report/families.py)
    cost: pd.DataFrame = field(default_factory=pd.DataFrame)  # per model: variant, layout, KV, throughput
    control: pd.DataFrame = field(default_factory=pd.DataFrame)  # --control: report/needle_control.py


COST_TITLE = "Cost per model"
COST_CAPTION = (
    "KV cache bytes per token in the run's dtype; prefill tokens/s: tokens fed per second of forward "
    "passes (prompts and teacher-forced answers) in the run's last session, on its device (not comparable "
    "across devices or runs sharing a machine)"
)


def cost_table(runs: list[Run]) -> pd.DataFrame:
    """One row per model of the runs: what it is (variant, version, layout) and what it costs to run."""
    labels = label_models(runs)
    rows = []
    for run in runs:
        for entry in run.manifest.models:
            engine = run.manifest.engine.get(entry.name, {})
            rows.append(
                {
                    "model": labels.get((run.run_id, entry.name), entry.name),
                    "variant": entry.variant + (f" {entry.variant_version}" if entry.variant_version else ""),
                    "layout": entry.layout or "native",
                    "parameters": entry.parameters,
                    "device": f"{entry.device} {entry.dtype}",
                    "kv_bytes_per_token": engine.get("kv_bytes_per_token"),
                    "prefill_tokens_per_second": engine.get("prefill_tokens_per_second"),
                }
            )
    return pd.DataFrame(rows)


def cost_cells(cost: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """The cost table as text cells (– where a run predates a figure)."""
    headers = ["model", "variant", "layout", "params", "device", "KV bytes/token", "prefill tok/s"]

    def figure(value: Any, digits: int = 0) -> str:
        return "–" if value is None or pd.isna(value) else f"{float(value):,.{digits}f}"

    cells = [
        [
            row.model,
            row.variant,
            row.layout,
            f"{row.parameters / 1e6:.2f}M",
            row.device,
            figure(row.kv_bytes_per_token),
            figure(row.prefill_tokens_per_second),
        ]
        for row in cost.itertuples()
    ]
    return headers, cells


PROBES_TITLE = "Hallucination probes"
PROBES_CAPTION = (
    "Each probe's headline per model and mode (generate: greedy text, exact checks; forced: candidates' "
    "log-probabilities) with a Wilson 95% interval; paired comparisons on the identical items: McNemar's "
    "exact p and a bootstrap 95% interval of the difference."
)


def default_out(directories: list[Path]) -> Path:
    """One run: <run>/report; several: reports/<time>."""
    if len(directories) == 1:
        return directories[0] / "report"
    return Path("reports") / dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def resolve_reference(models: list[str], reference: str | None, runs: list[Run]) -> str | None:
    """The reference label: as given (a label or a unique model name), else the first model."""
    if len(models) < 2:
        if reference is not None and reference not in models:
            raise UsageError(f"--reference {reference!r} is not among the models ({', '.join(models)})")
        return None
    if reference is None:
        return models[0]
    if reference in models:
        return reference
    labels = label_models(runs)
    matches = [label for (_, name), label in labels.items() if name == reference and label in models]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise UsageError(
            f"--reference {reference!r} is ambiguous: it ran in several runs; use one of {', '.join(matches)}"
        )
    raise UsageError(f"--reference {reference!r} is not among the models: use one of {', '.join(models)}")


def build_report(
    directories: list[Path],
    reference: str | None,
    out: Path | None,
    family_options: list[str] | None = None,
    control: Path | None = None,
) -> ComparisonReport:
    """Load, check comparability, aggregate, and write every file of the report.

    ``family_options`` (``--family NAME=A,B``) group models into variants; without them, names that
    differ only by a ``-sN`` seed suffix are grouped. ``control``: a run of the same character needles
    asked another way, paired with these runs sample by sample (report/needle_control.py).
    """
    if not directories:
        raise UsageError("pass at least one run directory")
    runs = [load_report_run(directory) for directory in directories]
    ids = [run.run_id for run in runs]
    if len(set(ids)) != len(ids):
        raise UsageError("the same run directory is given twice; pass each run once")
    require_same_samples(runs)
    empty = [run.run_id for run in runs if not has_results(run)]
    if empty:
        raise DiffbenchError(f"run(s) {', '.join(empty)} have no records yet; run the task first")
    frame = combined_frame(runs) if any(run.records for run in runs) else pd.DataFrame()
    models = list(dict.fromkeys(frame["model"])) if not frame.empty else []
    reference = resolve_reference(models, reference, runs)
    halluc = summarize(labelled_records(runs), reference=reference) if any(r.halluc for r in runs) else None
    cells, comparison, effective = _accuracy_tables(frame if halluc is None else pd.DataFrame(), reference)
    out = out or default_out(directories)
    ensure_directory(out)

    report = ComparisonReport(
        runs=runs,
        title=describe_spec(runs[0].manifest.spec),
        models=models,
        reference=reference,
        frame=frame,
        cells=cells,
        comparison=comparison,
        effective=effective,
        out=out,
        halluc=halluc,
        cost=cost_table(runs),
    )
    if family_options and (halluc is not None or not models):
        raise UsageError("--family groups niah models; these runs hold no niah records")
    if halluc is None and models:
        families = explicit_families(family_options, models) if family_options else detect_families(models)
        report.families = family_view(frame, families, reference)
    if control is not None:
        from diffbench.report.needle_control import control_table

        control_run = load_report_run(control)
        if control_run.directory.resolve() in {run.directory.resolve() for run in runs}:
            raise UsageError(
                f"--control {control_run.run_id!r} is also a reported run; pass it once, as --control"
            )
        report.control, control_notes = control_table(runs, control_run)
        report.notes += control_notes
    report.notes += _notes(report)
    _write_heatmaps(report)
    labels = label_models(runs)
    report.attention = attention_view(
        [(run, model, labels[(run.run_id, model)]) for run in runs for model in run.attention_models()]
    )
    if report.attention is not None:
        report.attention_files = write_attention_figure(report.attention, out)
        report.files += report.attention_files
    _write_tables(report)
    return report


def _accuracy_tables(frame: pd.DataFrame, reference: str | None) -> tuple[pd.DataFrame, ...]:
    """Cells, accuracy by length, effective lengths; all empty for attention runs alone and probe runs."""
    if frame.empty:
        return pd.DataFrame(), pd.DataFrame(), pd.DataFrame()
    return cell_summary(frame), length_summary(frame, reference), effective_lengths(frame)


def _notes(report: ComparisonReport) -> list[str]:
    notes = list(report.families.notes) if report.families is not None else []
    for run in report.runs:  # an attention run's status is noted by its attention view
        notes += run.notes
        if run.manifest.status != "complete" and not run.attention_only:
            notes.append(f"run {run.run_id} is {run.manifest.status}: it reports the samples it finished")
    if not report.models:
        notes.append("no run has niah records (only diffbench attn runs): the report is the attention view")
        return notes
    if "answer_logprob" in report.frame.columns:
        nonfinite = report.frame.groupby("model", sort=False)["answer_logprob"].agg(nonfinite_count)
        for model, count in nonfinite.items():
            if count:
                notes.append(
                    f"{model} has {count} NaN or infinite answer log-probs (low-precision overflow?); "
                    "mean log-probs leave them out"
                )
    for run in report.runs:
        for model, settings in run.manifest.engine.items():
            audit = settings.get("precision_audit")
            warning = audit_warning(model, audit) if isinstance(audit, dict) else None
            if warning:
                notes.append(warning)
    agreement = forced_agreement(report.frame)
    if agreement is not None:
        detail = ", ".join(
            f"{model} {row.agreement:.0%} (teacher-forced accuracy {row.accuracy:.3f})"
            for model, row in agreement.iterrows()
        )
        notes.append(f"accuracy is greedy decoding's; teacher-forced verdicts agree on: {detail}")
    counts = report.frame.groupby("model")["sample_id"].nunique()
    if counts.nunique() > 1:
        detail = ", ".join(f"{model} {count}" for model, count in counts.items())
        notes.append(
            f"models answered different numbers of samples ({detail}); differences use shared samples"
        )
    return notes


def _write_heatmaps(report: ComparisonReport) -> None:
    if report.cells.empty:  # no depth × length cells: attention or probe runs
        return
    for model in report.models:
        variant = report.frame.loc[report.frame["model"] == model, "variant"].iloc[0]
        title = f"{model} ({variant}): needle-in-a-haystack accuracy"
        report.files += plot_heatmap(
            grid(report.cells, model), title, report.out / f"heatmap_{safe_filename(model)}"
        )
    if report.families is not None:
        for name, table in report.families.grids.items():
            seeds = report.families.estimates[name].seeds
            title = f"{name}: mean accuracy over {seeds} seed(s) (seed range)"
            stem = report.out / f"heatmap_family_{safe_filename(name)}"
            report.files += plot_family_heatmap(table, report.families.spreads[name], title, stem)
    if report.reference is None:
        return
    for model in report.models:
        if model == report.reference:
            continue
        table = difference_grid(report.cells, model, report.reference)
        title = f"{model} − {report.reference}: accuracy difference"
        stem = report.out / f"difference_{safe_filename(model)}_vs_{safe_filename(report.reference)}"
        report.files += plot_difference_heatmap(table, title, stem)


def report_markdown(report: ComparisonReport) -> str:
    """The whole report as Markdown: runs, effective lengths, the comparison table, the figures."""
    lines = [f"# diffbench report: {report.title}", ""]
    lines += [f"- run `{run.run_id}` {_run_line(run)}" for run in report.runs]
    if report.reference:
        lines.append(f"- differences are against **{report.reference}**")
    lines += [f"- note: {note}" for note in report.notes]
    lines.append("")
    if report.halluc is not None:
        lines += [f"## {PROBES_TITLE}", "", PROBES_CAPTION, ""]
        lines += summary_markdown(report.halluc)
    elif report.models:
        if report.families is not None:
            lines += [f"## {FAMILIES_TITLE}", "", FAMILIES_CAPTION + ".", ""]
            lines.append(markdown_table(*family_cells(report.families)))
        lines += [f"## Effective length (≥ {EFFECTIVE_FRACTION:.0%} of the shortest length's accuracy)", ""]
        lines.append(markdown_table(*effective_cells(report.effective)))
        lines += ["## Accuracy by length (Wilson 95% intervals; Δ: paired bootstrap 95% intervals)", ""]
        lines.append(markdown_table(*comparison_cells(report.comparison, report.reference)))
    if not report.control.empty:
        from diffbench.report.needle_control import CAPTION, control_cells, control_title

        lines += [f"## {control_title(report.control)}", "", CAPTION + ".", ""]
        lines.append(markdown_table(*control_cells(report.control)))
    if not report.cost.empty:
        lines += [f"## {COST_TITLE}", "", COST_CAPTION + ".", ""]
        lines.append(markdown_table(*cost_cells(report.cost)))
    figures = [p for p in report.files if p.suffix == ".png" and p not in report.attention_files]
    if figures:
        lines += ["## Heatmaps", ""]
        lines += [f"![{path.stem}]({path.name})\n" for path in figures]
    if report.attention is not None:
        lines += attention_markdown(report.attention, report.attention_files)
    return "\n".join(lines).rstrip("\n") + "\n"


def _run_line(run: Run) -> str:
    """'(status): models' of a niah run; an attention run says so and names the models it covers."""
    if run.attention_only:
        return f"(diffbench attn, {run.manifest.status}): {', '.join(run.attention_models())}"
    return f"({run.manifest.status}): {', '.join(run.model_names())}"


def terminal_tables(report: ComparisonReport) -> list[Any]:
    """Rich tables for the terminal: each model's grid, effective lengths, the comparison; for probe runs
    the probe summary (its tables and secondary lines); then the attention view."""
    if not report.models:  # attention runs only
        return attention_rich_tables(report.attention) if report.attention is not None else []
    from diffbench.report.tables import rich_table

    tables = (
        summary_renderables(report.halluc) if report.halluc is not None else _accuracy_rich_tables(report)
    )
    if not report.control.empty:
        from diffbench.report.needle_control import CAPTION, control_cells, control_title

        tables.append(rich_table(*control_cells(report.control), control_title(report.control), CAPTION))
    if not report.cost.empty:
        tables.append(rich_table(*cost_cells(report.cost), COST_TITLE, COST_CAPTION))
    if report.attention is not None:
        tables += attention_rich_tables(report.attention)
    return tables


def _grid_tables(report: ComparisonReport) -> list[Any]:
    """One depth × length grid per family of seeds (mean over seeds, spread in brackets) and per model
    outside a family; without families, one per model. Each seed's grid stays in heatmap_*.png."""
    from diffbench.report.tables import grid_table

    view = report.families
    if view is None:
        return [grid_table(grid(report.cells, m), f"{m}: accuracy by depth × length") for m in report.models]
    tables = []
    for family in view.families:
        if len(family.members) == 1:
            model = family.members[0]
            tables.append(grid_table(grid(report.cells, model), f"{model}: accuracy by depth × length"))
            continue
        tables.append(
            grid_table(
                view.grids[family.name],
                f"{family.name} ({len(family.members)} seeds): accuracy by depth × length",
                spread=view.spreads[family.name],
                caption="mean over seeds; in brackets: max − min over seeds",
            )
        )
    return tables


def _accuracy_rich_tables(report: ComparisonReport) -> list[Any]:
    """Each model's depth × length grid, effective lengths, accuracy by length (NIAH runs)."""
    from diffbench.report.tables import rich_table, without_constant_columns

    tables = _grid_tables(report)
    headers, cells, constant = without_constant_columns(*effective_cells(report.effective))
    suffix = f" ({', '.join(constant)})" if constant else ""
    tables.append(
        rich_table(
            headers,
            cells,
            f"Effective length{suffix}",
            f"longest length with accuracy ≥ {EFFECTIVE_FRACTION:.0%} of the shortest length's; "
            "none: 0 at the shortest length",
        )
    )
    headers, cells, constant = without_constant_columns(
        *comparison_cells(report.comparison, report.reference, 2)
    )
    suffix = f" ({', '.join(constant)})" if constant else ""
    headers = ["Δ" if header.startswith("Δ vs ") else header for header in headers]  # the caption names it
    caption = "accuracy: Wilson 95% CI" + (
        f"; Δ: difference to {report.reference}, paired bootstrap 95% CI" if report.reference else ""
    )
    tables.append(rich_table(headers, cells, f"Accuracy by length{suffix}", caption))
    if report.families is not None:
        tables.append(rich_table(*family_cells(report.families), FAMILIES_TITLE, FAMILIES_CAPTION))
    return tables


def report_payload(report: ComparisonReport) -> dict[str, Any]:
    def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
        return json.loads(frame.to_json(orient="records"))

    payload: dict[str, Any] = {
        "title": report.title,
        "runs": [
            {
                "run_id": r.run_id,
                "directory": str(r.directory),
                "status": r.manifest.status,
                "kind": _kind(r),
            }
            for r in report.runs
        ],
        "spec_fingerprint": report.runs[0].fingerprint,
        "models": report.models,
        "reference": report.reference,
    }
    if report.halluc is not None:
        payload |= (
            report.halluc.as_json()
        )  # the summary.json shape `diffbench halluc` writes: probes, comparisons
    else:
        payload["effective_length_fraction"] = EFFECTIVE_FRACTION
        payload["effective_lengths"] = records(report.effective)
        payload["comparison"] = records(report.comparison)
        if report.families is not None:
            payload["families"] = report.families.payload()
    if not report.control.empty:
        payload["control"] = records(report.control)
    payload["cost"] = records(report.cost) if not report.cost.empty else []
    payload["notes"] = report.notes
    if report.attention is not None:
        payload["attention"] = report.attention.payload()
    return payload


def _kind(run: Run) -> str:
    if run.attention_only:
        return "attention"
    return "halluc" if run.halluc else "niah"


def report_csv(report: ComparisonReport) -> str:
    """--format csv: accuracy by length, or for probe runs one row per model × probe × mode headline."""
    return headline_csv(report.halluc) if report.halluc is not None else comparison_csv(report.comparison)


def _write_tables(report: ComparisonReport) -> None:
    from diffbench.store import atomic_write_text

    paths = {}
    if report.halluc is not None:
        paths["headlines.csv"] = headline_csv(report.halluc)
    elif report.models:  # an attention-only report has no accuracy tables
        effective = report.effective.drop(columns=["accuracy_by_length"])
        paths["comparison.csv"] = comparison_csv(report.comparison)
        paths["effective_length.csv"] = str(effective.to_csv(index=False, lineterminator="\n"))
        if report.families is not None:
            paths["families.csv"] = families_csv(report.families)
        if not report.control.empty:
            paths["control.csv"] = str(report.control.to_csv(index=False, lineterminator="\n"))
    for name, text in paths.items():
        atomic_write_text(report.out / name, text)
        report.files.append(report.out / name)
    write_json(report.out / "report.json", report_payload(report))
    report.files.append(report.out / "report.json")
    atomic_write_text(report.out / "report.md", report_markdown(report))
    report.files.append(report.out / "report.md")
