"""Summaries of hallucination-probe runs: each probe's headline with a Wilson 95% interval, its
secondaries, and paired comparisons (McNemar, bootstrap of the difference) between models on the
identical items.

Everything is computed from records (their ``correct`` verdict and ``details``), so a run can be
summarised again without the model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import BaseModel

from diffbench.stats import paired_bootstrap, paired_comparison, wilson_interval
from diffbench.tasks.probes.metrics import memorization_ratio

Row = dict[str, Any]


class JudgeColumn(BaseModel):
    """A judge's supported rate over the generated answers it decided (never mixed into the headline)."""

    name: str
    supported_rate: float | None
    low: float | None
    high: float | None
    n: int


class Headline(BaseModel):
    """One model × probe × mode: its headline metric with a Wilson 95% interval, and its secondaries."""

    model: str
    variant: str
    probe: str
    mode: str
    metric: str
    value: float | None
    low: float | None
    high: float | None
    n: int
    secondary: dict[str, Any]  # per probe: rates, means and intervals (see the probe's summary)
    judge: JudgeColumn | None = None


class ProbeComparison(BaseModel):
    """``second`` − ``first`` on the items both answered: McNemar's exact p and a bootstrap interval."""

    probe: str
    mode: str
    first: str
    second: str
    n: int
    only_first: int
    only_second: int
    mcnemar_p: float
    difference: float
    low: float
    high: float


class HallucSummary(BaseModel):
    """What summary.json holds (with the run id) and what every view of a halluc run renders."""

    probes: list[Headline]
    comparisons: list[ProbeComparison]

    def as_json(self) -> Row:
        return self.model_dump(mode="json")


def _rate(flags: Iterable[bool]) -> tuple[float | None, float | None, float | None, int]:
    values = list(flags)
    if not values:
        return None, None, None, 0
    low, high = wilson_interval(sum(values), len(values))
    return sum(values) / len(values), low, high, len(values)


def _mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None and math.isfinite(v)]  # fp16 overflow: left out
    return round(sum(present) / len(present), 6) if present else None


def _metric(name: str, flags: Iterable[bool]) -> Row:
    value, low, high, n = _rate(flags)
    return {"metric": name, "value": value, "low": low, "high": high, "n": n}


def _d(record: Row) -> Row:
    return record.get("details") or {}


def _secondaries_factsum(records: list[Row]) -> Row:
    details = [_d(r) for r in records]
    return {
        "unsupported_number_rate": _mean(float(bool(d.get("unsupported_numbers"))) for d in details),
        "unsupported_entity_rate": _mean(float(bool(d.get("unsupported_entities"))) for d in details),
        "misattribution_rate": _mean(float(bool(d.get("misattributed"))) for d in details),
        "degenerate_rate": _mean(float(bool(d.get("degenerate"))) for d in details),
        "fact_recall": _mean(d.get("fact_recall") for d in details),
        "number_precision": _mean(d.get("number_precision") for d in details),
        "prec_s": _mean(d.get("entity_precision") for d in details),
        "k_precision": _mean(d.get("k_precision") for d in details),
        "novel_3gram_rate": _mean(d.get("novel_3gram_rate") for d in details),
        "unknown_capitalised_rate": _mean(float(bool(d.get("unknown_capitalised"))) for d in details),
    }


def _secondaries_factqa(records: list[Row]) -> Row:
    details = [_d(r) for r in records]
    if records and records[0]["scoring"] == "teacher_forced":
        return {"mean_margin": _mean(d.get("margin") for d in details)}
    return {
        "correct_rate": _mean(float(bool(d.get("correct"))) for d in details),
        "grounded_rate": _mean(float(bool(d.get("grounded"))) for d in details),
        "token_f1": _mean(d.get("token_f1") for d in details),
        "distractor_confusion_rate": _mean(float(bool(d.get("distractor_confusion"))) for d in details),
        "extrinsic_rate": _mean(float(bool(d.get("extrinsic"))) for d in details),
    }


def _balanced(records: list[Row]) -> tuple[Row, Row]:
    """P3's headline: ½·(abstain rate on unanswerable + correct rate on answerable), with the interval
    of the two Wilson bounds averaged (conservative: the two halves' extremes at once)."""
    answerable = [r for r in records if _d(r).get("answerable")]
    unanswerable = [r for r in records if not _d(r).get("answerable")]
    a, a_low, a_high, n_a = _rate(r["correct"] for r in answerable)
    u, u_low, u_high, n_u = _rate(r["correct"] for r in unanswerable)
    head: Row = {"metric": "balanced_accuracy", "value": None, "low": None, "high": None, "n": len(records)}
    if a is not None and u is not None and a_low is not None and u_low is not None:
        assert a_high is not None and u_high is not None  # _rate gives all three or none
        head |= {"value": (a + u) / 2, "low": (a_low + u_low) / 2, "high": (a_high + u_high) / 2}
    generated = records and records[0]["scoring"] == "generate"
    details_u = [_d(r) for r in unanswerable]
    extra: Row = {
        "abstain_rate_unanswerable": u,
        "correct_rate_answerable": a,
        "n_unanswerable": n_u,
        "n_answerable": n_a,
        "over_abstention": _mean(float(bool(_d(r).get("abstained"))) for r in answerable),
    }
    if generated:
        extra |= {
            "fabrication_rate": _mean(float(bool(d.get("fabricated"))) for d in details_u),
            "fabrication_bait": _mean(float(d.get("fabrication") == "bait") for d in details_u),
            "fabrication_extrinsic": _mean(float(d.get("fabrication") == "extrinsic") for d in details_u),
        }
    return head, extra


def _counterfactual(records: list[Row]) -> tuple[Row, Row]:
    conflict = [r for r in records if _d(r).get("variant") == "conflict"]
    magic = [r for r in records if _d(r).get("variant") == "magic"]
    head = _metric("context_following_rate", (bool(_d(r).get("follow")) for r in conflict))
    follow = sum(bool(_d(r).get("follow")) for r in conflict)
    parametric = sum(bool(_d(r).get("parametric")) for r in conflict)
    known = [r for r in conflict if _d(r).get("closed_book_known")]
    follow_known = sum(bool(_d(r).get("follow")) for r in known)
    parametric_known = sum(bool(_d(r).get("parametric")) for r in known)
    extra: Row = {
        "parametric_rate": parametric / len(conflict) if conflict else None,
        "memorization_ratio": memorization_ratio(parametric, follow),
        "n_known_closed_book": len(known),
        "context_following_known": follow_known / len(known) if known else None,
        "memorization_ratio_known": memorization_ratio(parametric_known, follow_known),
        "magic_accuracy": _rate(r["correct"] for r in magic)[0],
        "n_magic": len(magic),
    }
    if conflict and conflict[0]["scoring"] == "teacher_forced":
        extra["mean_shift"] = _mean(_d(r).get("shift") for r in conflict)
    return head, extra


def _contrastive(records: list[Row]) -> tuple[Row, Row]:
    ops: dict[str, list[bool]] = {}
    for record in records:
        for op, won in (_d(record).get("wins") or {}).items():
            ops.setdefault(op, []).append(bool(won))
    comparisons = [won for wins in ops.values() for won in wins]
    head = _metric("pairwise_accuracy", comparisons)
    extra: Row = {}
    for op, wins in ops.items():
        value, low, high, _ = _rate(wins)
        extra[f"pairwise_{op}"] = {"value": value, "low": low, "high": high}
    gains = [g for r in records if (g := _d(r).get("context_gain")) is not None and math.isfinite(g)]
    if gains:
        boot = paired_bootstrap([0.0] * len(gains), gains)
        extra["context_gain"] = {"value": round(boot.mean_difference, 6), "low": boot.low, "high": boot.high}
    return head, extra


def _dataset(records: list[Row]) -> tuple[Row, Row]:
    head = _metric("numbers_grounded_rate", (r["correct"] for r in records))
    details = [_d(r) for r in records]
    return head, {
        "k_precision": _mean(d.get("k_precision") for d in details),
        "token_f1": _mean(d.get("token_f1") for d in details),
        "abstain_rate": _mean(float(bool(d.get("abstained"))) for d in details),
    }


def probe_summary(records: list[Row]) -> tuple[Row, Row]:
    """The headline row and the secondaries of one model's records of one probe in one mode."""
    probe = records[0]["task"].split("/", 1)[1]
    generated = records[0]["scoring"] == "generate"
    summaries: dict[str, Callable[[list[Row]], tuple[Row, Row]]] = {
        "unanswerable": _balanced,
        "counterfactual": _counterfactual,
        "contrastive": _contrastive,
        "dataset": _dataset,
    }
    if probe in summaries:
        return summaries[probe](records)
    name = "hallucination_free_accuracy" if generated else "forced_choice_accuracy"
    head = _metric(name, (r["correct"] for r in records))
    extra = _secondaries_factsum(records) if probe == "factsum" else _secondaries_factqa(records)
    return head, extra


def _judge_column(records: list[Row]) -> JudgeColumn | None:
    verdicts: list[Row] = [_d(r)["judge"] for r in records if _d(r).get("judge")]
    if not verdicts:
        return None
    decided = [v["supported"] for v in verdicts if v.get("supported") is not None]
    value, low, high, n = _rate(bool(v) for v in decided)
    return JudgeColumn(name=verdicts[0]["name"], supported_rate=value, low=low, high=high, n=n)


def counted(record: Row) -> bool:
    """Whether the probe's headline counts the record: P4's context-following rate counts conflict
    needles only; its magic-number needles are the knowledge-free control (a secondary)."""
    variant = (record.get("details") or {}).get("variant")
    return record["task"] != "halluc/counterfactual" or variant == "conflict"


def groups(records: list[Row]) -> dict[tuple[str, str, str], list[Row]]:
    table: dict[tuple[str, str, str], list[Row]] = {}
    for record in records:
        if not str(record.get("task", "")).startswith("halluc/"):
            continue
        mode = "generate" if record["scoring"] == "generate" else "forced"
        table.setdefault((record["model"], record["task"].split("/", 1)[1], mode), []).append(record)
    return table


def summarize(records: list[Row], resamples: int = 2000, reference: str | None = None) -> HallucSummary:
    """Per model × probe × mode: headline with interval and secondaries; paired tests of the reference
    (default: the first model) against each other model."""
    table = groups(records)
    rows = []
    for (model, probe, mode), members in table.items():
        head, extra = probe_summary(members)
        rows.append(
            Headline(
                model=model,
                variant=members[0]["variant"],
                probe=probe,
                mode=mode,
                **head,
                secondary=extra,
                judge=_judge_column(members) if mode == "generate" else None,
            )
        )
    return HallucSummary(probes=rows, comparisons=compare_models(table, resamples, reference))


def compare_models(
    table: dict[tuple[str, str, str], list[Row]], resamples: int, reference: str | None = None
) -> list[ProbeComparison]:
    """The reference (default: the first model) against each other one, per probe and mode, on the items
    both have: runs of one sample set share item ids, so models of several runs pair up too."""
    models = list(dict.fromkeys(model for model, _, _ in table))
    base = reference if reference in models else (models[0] if models else None)
    comparisons = []
    for other in [m for m in models if m != base]:
        for (model, probe, mode), members in table.items():
            if model != base or (other, probe, mode) not in table:
                continue
            # the items the headline counts (P4: its conflict needles), so the difference is the headline's
            first = {r["sample_id"]: bool(r["correct"]) for r in members if counted(r)}
            second = {r["sample_id"]: bool(r["correct"]) for r in table[(other, probe, mode)] if counted(r)}
            shared = sorted(set(first) & set(second))
            paired = paired_comparison(
                [float(first[s]) for s in shared], [float(second[s]) for s in shared], resamples=resamples
            )
            assert paired.mcnemar_p is not None  # verdicts are 0/1, so McNemar's test applies
            comparisons.append(
                ProbeComparison(
                    probe=probe,
                    mode=mode,
                    first=base,
                    second=other,
                    n=paired.n,
                    only_first=paired.only_first,
                    only_second=paired.only_second,
                    mcnemar_p=paired.mcnemar_p,
                    difference=paired.difference,
                    low=paired.low,
                    high=paired.high,
                )
            )
    return comparisons


def format_interval(value: float | None, low: float | None, high: float | None) -> str:
    if value is None or low is None or high is None:
        return "–"
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


METRIC_LABELS = {
    "hallucination_free_accuracy": "hallucination-free accuracy",
    "forced_choice_accuracy": "forced-choice accuracy",
    "balanced_accuracy": "balanced accuracy",
    "context_following_rate": "context-following rate",
    "pairwise_accuracy": "pairwise accuracy",
    "all_pairs_accuracy": "all-pairs accuracy",
    "numbers_grounded_rate": "numbers-grounded rate",
}
PAIRED_TITLE = "paired comparisons (same items): second − first"

TextTable = tuple[str, list[str], list[list[str]]]  # title, headers, cells


def metric_label(metric: str) -> str:
    """A headline's name for people; the stored name stays the identifier scripts read."""
    return METRIC_LABELS.get(metric, metric.replace("_", " "))


def headline_cells(payload: HallucSummary, model: str) -> tuple[list[str], list[list[str]]]:
    """One model's headlines; the judge column only where a judge ran (it is never mixed into them)."""
    judged = any(row.judge for row in payload.probes)
    headers = ["probe", "mode", "headline", "value [95% CI]", "n", *(["judge"] if judged else [])]
    cells = []
    for row in (r for r in payload.probes if r.model == model):
        interval = format_interval(row.value, row.low, row.high)
        line = [row.probe, row.mode, metric_label(row.metric), interval, str(row.n)]
        cells.append(line + ([_judge_text(row.judge)] if judged else []))
    return headers, cells


def _judge_text(judge: JudgeColumn | None) -> str:
    if judge is None:
        return ""
    return f"{judge.name}: {format_interval(judge.supported_rate, judge.low, judge.high)}"


def paired_cells(payload: HallucSummary) -> tuple[list[str], list[list[str]]]:
    headers = ["probe", "mode", "first", "second", "n", "McNemar p", "difference [95% CI]"]
    cells = [
        [
            row.probe,
            row.mode,
            row.first,
            row.second,
            str(row.n),
            f"{row.mcnemar_p:.3g}",
            f"{row.difference:+.3f} [{row.low:+.3f}, {row.high:+.3f}]",
        ]
        for row in payload.comparisons
    ]
    return headers, cells


def summary_views(payload: HallucSummary) -> list[TextTable]:
    """Every table of a summary as text cells: one per model, then the paired comparisons. The terminal
    (`diffbench halluc`, `diffbench report`) and report.md render these same cells."""
    views: list[TextTable] = [
        (f"{model}: hallucination probes (95% Wilson intervals)", *headline_cells(payload, model))
        for model in dict.fromkeys(row.model for row in payload.probes)
    ]
    if payload.comparisons:
        views.append(paired_view(payload))
    return views


def paired_view(payload: HallucSummary) -> TextTable:
    """The paired comparisons; the reference, the same in every row, moves from its column to the title."""
    from diffbench.report.tables import without_constant_columns

    headers, cells, constant = without_constant_columns(*paired_cells(payload), ("first",))
    if not constant:
        return PAIRED_TITLE, headers, cells
    headers = ["model" if header == "second" else header for header in headers]
    return f"paired comparisons (same items): model − {constant[0]}", headers, cells


def summary_tables(payload: HallucSummary) -> list[Any]:
    """Rich tables: one per model, then the paired comparisons (compact, like every report table)."""
    from diffbench.report.tables import rich_table

    return [rich_table(headers, cells, title) for title, headers, cells in summary_views(payload)]


def summary_renderables(payload: HallucSummary) -> list[Any]:
    """What the terminal shows of a summary: the tables, then one plain line of secondaries per headline."""
    return [*summary_tables(payload), *secondary_lines(payload)]


def summary_markdown(payload: HallucSummary) -> list[str]:
    """report.md's probe section: the terminal's tables as Markdown, the secondaries as a list."""
    from diffbench.report.tables import markdown_table

    lines = []
    for title, headers, cells in summary_views(payload):
        lines += [f"### {title}", "", markdown_table(headers, cells)]
    secondary = secondary_lines(payload)
    if secondary:
        lines += ["### Secondary metrics", "", *(f"- {line}" for line in secondary), ""]
    return lines


CSV_COLUMNS = [
    "model",
    "variant",
    "probe",
    "mode",
    "metric",
    "value",
    "low",
    "high",
    "n",
    "reference",
    "difference",
    "difference_low",
    "difference_high",
    "mcnemar_p",
    "paired_n",
]


def headline_csv(payload: HallucSummary) -> str:
    """One row per model × probe × mode headline with raw numbers; a model paired with the reference also
    carries its difference (model − reference, bootstrap 95% interval) and McNemar p on the shared items."""
    import pandas as pd

    paired = {(c.second, c.probe, c.mode): c for c in payload.comparisons}
    rows = []
    for row in payload.probes:
        headline = row.model_dump(include=set(CSV_COLUMNS[:9]))
        comparison = paired.get((row.model, row.probe, row.mode))
        if comparison is not None:
            headline |= {
                "reference": comparison.first,
                "difference": comparison.difference,
                "difference_low": comparison.low,
                "difference_high": comparison.high,
                "mcnemar_p": comparison.mcnemar_p,
                "paired_n": comparison.n,
            }
        rows.append(headline)
    frame = pd.DataFrame.from_records(rows, columns=CSV_COLUMNS)
    return str(frame.to_csv(index=False, float_format="%.6g", lineterminator="\n"))


def secondary_lines(payload: HallucSummary) -> list[str]:
    """One line per model × probe × mode with its secondary metrics (too many for a table column)."""
    return [
        f"{row.model} {row.probe} ({row.mode}): {_secondary_text(row.secondary)}"
        for row in payload.probes
        if row.secondary
    ]


def _secondary_text(extra: Row) -> str:
    parts = []
    for key, value in extra.items():
        if isinstance(value, dict):
            parts.append(f"{key} {format_interval(value.get('value'), value.get('low'), value.get('high'))}")
        elif isinstance(value, float):
            parts.append(f"{key} {value:.3f}")
        elif value is not None:
            parts.append(f"{key} {value}")
    return ", ".join(parts)


LOOKBACK_TITLE = "Lookback ratio of the generated answers (halluc --attn)"
LOOKBACK_CAPTION = (
    "Lookback Lens's ratio (attention on the context against the new tokens, mean over layers, heads and "
    "answer tokens) of clean (ok) and hallucinated (hal) answers by the rule checks; AUROC of the ratio "
    "for telling them apart (0.5: no signal) with a stratified bootstrap 95% interval; CV AUROC: "
    "cross-validated AUROC of a logistic regression on the layer × head ratios. 'all' pools probes, "
    "whose answers differ in more than the label."
)


def lookback_cells(rows: list[Row]) -> tuple[list[str], list[list[str]]]:
    """A row per model over all probes, then a row per probe: the attention summary's ``lookback``."""

    def number(value: float | None) -> str:
        return "–" if value is None else f"{value:.3f}"

    headers = ["model", "probe", "n", "hal", "LR ok", "LR hal", "AUROC", "95% CI", "CV AUROC"]
    cells = []
    for row in rows:
        for probe, part in [("all", row), *((p["probe"], p) for p in row.get("by_probe", []))]:
            cells.append(
                [
                    row["model"],
                    probe,
                    str(part["answers"]),
                    str(part["hallucinated"]),
                    number(part["lookback_clean"]),
                    number(part["lookback_hallucinated"]),
                    number(part["auroc"]),
                    _interval(part.get("auroc_interval")),
                    number(part["probe_auroc"]),
                ]
            )
    return headers, cells


def _interval(bounds: list[float] | None) -> str:
    if not bounds:
        return "–"
    low, high = (f"{bound:.2f}".removeprefix("0") for bound in bounds)
    return f"{low}–{high}"
