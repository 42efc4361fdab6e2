"""What `diffbench check` compares on hallucination-probe runs: one unit per probe × mode (× length).

A probe's generate-and-check and forced-choice verdicts answer different questions (docs/design/probes.md), so
they are never pooled. Depths are pooled: a probe's items cycle over the depths (4 per depth at 20
items), too few for a per-depth cell ever to be significant. Lengths stay apart when a run has
several, since a long-context regression is what a gate is for. Each unit compares the per-item
headline verdict (the record's ``correct``) of the records the halluc summary's headline counts, and
is named as that summary (diffbench.report.halluc) names the headline, so the two outputs agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from diffbench.report.halluc import counted, groups, metric_label, probe_summary

Record = dict[str, Any]

ALL_PAIRS_ACCURACY = "all_pairs_accuracy"
"""P5's per-item verdict: the faithful summary beats every negative. The summary's headline,
pairwise_accuracy, counts each comparison; an item's comparisons are not independent, and McNemar
needs one verdict per item, so P5 units compare this verdict under this name."""

MODES = ("generate", "forced")


@dataclass(frozen=True)
class Unit:
    """One compared group of a halluc run."""

    probe: str
    mode: str  # generate | forced, as the halluc summary names the modes
    metric: str  # the headline's name in the halluc summary (summary.json's "metric")
    target_length: int | None = None  # None: the run has one length, which the unit spans

    @property
    def label(self) -> str:
        return metric_label(self.metric)

    @property
    def heading(self) -> str:
        """Probe, mode and (with several lengths) length: the row's first line in the table."""
        from diffbench.lengths import format_length

        parts = [self.probe, self.mode]
        if self.target_length is not None:
            parts.append(format_length(self.target_length))
        return " · ".join(parts)

    @property
    def name(self) -> str:
        return f"{self.heading} · {self.label}"


def mean_verdict(records: list[Record]) -> float:
    """The rate McNemar compares: the mean of the per-item verdicts."""
    return sum(bool(r["correct"]) for r in records) / len(records)


def headline(records: list[Record]) -> tuple[str, float | None]:
    """The halluc summary's name for the records' headline and its value there (P5: the per-item rate)."""
    if records[0]["task"] == "halluc/contrastive":
        return ALL_PAIRS_ACCURACY, mean_verdict(records)
    head = probe_summary(records)[0]
    return str(head["metric"]), head["value"]


def units(records: list[Record], probes: Sequence[str], per_length: bool) -> list[tuple[Unit, list[Record]]]:
    """One model's records as units, each with the records it compares, in the run's probe order."""
    found = []
    for (_, probe, mode), members in groups([r for r in records if counted(r)]).items():
        lengths = sorted({int(r["target_length"]) for r in members})
        for length in lengths if per_length else [None]:
            part = [r for r in members if length is None or int(r["target_length"]) == length]
            found.append((Unit(probe, mode, headline(part)[0], length), part))
    order = {probe: index for index, probe in enumerate(probes)}
    return sorted(
        found,
        key=lambda unit: (
            order.get(unit[0].probe, len(order)),
            unit[0].probe,
            MODES.index(unit[0].mode),
            unit[0].target_length or 0,
        ),
    )


def rate_note(unit: Unit, baseline: list[Record], candidate: list[Record]) -> str | None:
    """Says so when the summary's headline is not the mean of the verdicts the check tests (P3's
    balanced accuracy when answerable and unanswerable items are unequal in number)."""
    summary = [headline(records)[1] for records in (baseline, candidate)]
    means = [mean_verdict(records) for records in (baseline, candidate)]
    if all(
        value is not None and abs(value - mean) < 1e-9 for value, mean in zip(summary, means, strict=True)
    ):
        return None
    shown = " → ".join("–" if value is None else f"{value:.3f}" for value in summary)
    return (
        f"{unit.name}: the rates compared are the means of the paired per-item verdicts McNemar tests "
        f"({means[0]:.3f} → {means[1]:.3f}), not the halluc summary's {unit.label} ({shown}), "
        "which weighs the items differently"
    )


def uncounted_note(records: list[Record]) -> str | None:
    """Names the paired items no headline counts, so a reader knows they were not gated."""
    left = [r for r in records if not counted(r) and str(r.get("task", "")).startswith("halluc/")]
    if not left:
        return None
    kinds = sorted({f"{r['task'].split('/', 1)[1]} {(r.get('details') or {}).get('variant')}" for r in left})
    return (
        f"{len(left)} paired items are controls no headline counts ({', '.join(kinds)}: a secondary "
        "of the halluc summary), so check does not compare them"
    )
