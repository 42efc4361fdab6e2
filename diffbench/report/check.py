"""`diffbench check`: is a candidate checkpoint worse than its baseline, beyond noise?

Records are paired on identical sample ids, so both models are judged on the same prompts. A
cell, task or the overall result regresses only when the accuracy drop exceeds ``max_drop`` AND
the drop is significant at ``alpha``: a threshold alone fails CI on noise, a test alone fails it
on a real but negligible drop. Verdicts (right/wrong) use the exact McNemar test; scores that
are not plain 0/1 (partial credit) also get a seeded paired bootstrap interval and a sign-flip
test (see diffbench.stats.paired_comparison). Cell p-values are
Holm-adjusted across cells, so a 40-cell grid does not flag ~2 cells by chance at α = 0.05.

Hallucination-probe runs are compared per probe × mode (× length) instead, on each probe's headline
verdict (see diffbench.report.halluc_check): no overall, task or depth rows, which would pool a
probe's generate and forced-choice verdicts or split it into cells too small to ever be significant.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from diffbench.errors import UsageError
from diffbench.report.runs import Run
from diffbench.specs import HallucSpec, NiahSpec, spec_difference
from diffbench.stats import DEFAULT_RESAMPLES, holm_adjust, paired_comparison, wilson_interval

if TYPE_CHECKING:
    from diffbench.report.halluc_check import Unit

Level = Literal["overall", "task", "cell", "probe"]
Verdict = Literal["regression", "not significant", "below threshold", "improved", "ok"]


@dataclass
class Pair:
    """One sample answered by both models."""

    sample_id: str
    task: str
    target_length: int
    depth: float
    baseline_correct: bool
    candidate_correct: bool
    baseline_score: float
    candidate_score: float
    same_prompt: bool


@dataclass
class Row:
    """One compared group (overall, a task, a task × length × depth cell, or a halluc probe unit)."""

    level: Level
    name: str
    n: int
    baseline_accuracy: float
    candidate_accuracy: float
    baseline_ci: tuple[float, float]
    candidate_ci: tuple[float, float]
    drop: float
    only_baseline: int
    only_candidate: int
    p_raw: float
    p_value: float
    score_drop: float | None = None
    score_drop_ci: tuple[float, float] | None = None
    score_p_raw: float | None = None
    score_p_value: float | None = None
    verdict: Verdict = "ok"
    reason: str = ""
    unit: Unit | None = None  # a halluc run's probe, mode, metric and length
    test: str = "McNemar"  # what p_value comes from (families: a seed-level permutation test)

    @property
    def measure(self) -> str:
        """What the row's rates are: the probe's headline for a halluc unit, else accuracy."""
        return self.unit.label if self.unit is not None else "accuracy"


@dataclass
class CheckResult:
    baseline_run: str
    baseline_dir: str
    baseline_model: str
    candidate_run: str
    candidate_dir: str
    candidate_model: str
    spec_fingerprint: str
    max_drop: float
    alpha: float
    score_test: bool
    paired: int
    baseline_only: int
    candidate_only: int
    identical_prompts: int
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[Row]:
        return [row for row in self.rows if row.verdict == "regression"]

    @property
    def passed(self) -> bool:
        return not self.regressions


def select_model(run: Run, name: str | None, role: str) -> str:
    """The one model of a run to compare; a run with several needs ``--<role>-name``."""
    models = run.model_names()
    if not models:
        raise UsageError(
            f"{role} run {run.run_id!r} has no records: nothing to compare; finish the run first "
            "(rerun its command to resume)"
        )
    if name is not None:
        if name not in models:
            raise UsageError(
                f"--{role}-name {name!r} has no records in run {run.run_id!r}; use one of {', '.join(models)}"
            )
        return name
    if len(models) > 1:
        raise UsageError(
            f"{role} run {run.run_id!r} holds several models ({', '.join(models)}); "
            f"choose one with --{role}-name"
        )
    return models[0]


def pair_records(baseline: Run, baseline_model: str, candidate: Run, candidate_model: str) -> list[Pair]:
    """Pairs on identical sample ids; refuses runs whose task specs differ or that share no sample."""
    if baseline.fingerprint != candidate.fingerprint:
        fields = ", ".join(spec_difference(baseline.manifest.spec, candidate.manifest.spec)) or "spec"
        fix = (  # --candidate-model reruns niah specs only
            "rerun the candidate with the baseline's halluc options (the spec in its manifest.json)"
            if isinstance(baseline.manifest.spec, HallucSpec)
            else "run the candidate with `diffbench check --baseline RUN_DIR --candidate-model CKPT`, "
            "which reuses the baseline's spec"
        )
        raise UsageError(
            f"baseline {baseline.run_id!r} and candidate {candidate.run_id!r} have different task specs "
            f"(they differ in {fields}), so their samples are not comparable; {fix}"
        )
    base = {r["sample_id"]: r for r in baseline.records_of(baseline_model)}
    cand = {r["sample_id"]: r for r in candidate.records_of(candidate_model)}
    shared = [sample_id for sample_id in base if sample_id in cand]
    if not shared:
        raise UsageError(
            f"baseline {baseline.run_id!r} ({len(base)} samples) and candidate {candidate.run_id!r} "
            f"({len(cand)} samples) share no sample id; finish both runs (rerun their commands to resume)"
        )
    pairs = []
    for sample_id in shared:
        b, c = base[sample_id], cand[sample_id]
        pairs.append(
            Pair(
                sample_id=sample_id,
                task=b["task"],
                target_length=int(b["target_length"]),
                depth=float(b["depth"]),
                baseline_correct=bool(b["correct"]),
                candidate_correct=bool(c["correct"]),
                baseline_score=float(b["score"]),
                candidate_score=float(c["score"]),
                same_prompt=b["prompt_sha256"] == c["prompt_sha256"],
            )
        )
    return pairs


def needs_score_test(pairs: list[Pair]) -> bool:
    """Scores carry information beyond the verdict (partial credit), so they get their own test."""
    return any(
        score not in (0.0, 1.0) or score != float(correct)
        for p in pairs
        for score, correct in (
            (p.baseline_score, p.baseline_correct),
            (p.candidate_score, p.candidate_correct),
        )
    )


def _row(level: Level, name: str, pairs: list[Pair], score_test: bool, resamples: int, seed: int) -> Row:
    n = len(pairs)
    base_hits = sum(p.baseline_correct for p in pairs)
    cand_hits = sum(p.candidate_correct for p in pairs)
    baseline = [float(p.baseline_correct) for p in pairs]
    candidate = [float(p.candidate_correct) for p in pairs]
    verdicts = paired_comparison(baseline, candidate, resamples=0)  # counts and McNemar only
    assert verdicts.mcnemar_p is not None  # 0/1 verdicts
    only_baseline, only_candidate, p_value = verdicts.only_first, verdicts.only_second, verdicts.mcnemar_p
    row = Row(
        level=level,
        name=name,
        n=n,
        baseline_accuracy=base_hits / n,
        candidate_accuracy=cand_hits / n,
        baseline_ci=wilson_interval(base_hits, n),
        candidate_ci=wilson_interval(cand_hits, n),
        drop=(base_hits - cand_hits) / n,
        only_baseline=only_baseline,
        only_candidate=only_candidate,
        p_raw=p_value,
        p_value=p_value,
    )
    scored = [p for p in pairs if math.isfinite(p.baseline_score) and math.isfinite(p.candidate_score)]
    if score_test and scored:  # a NaN score (low-precision overflow) has no place in a mean: left out
        result = paired_comparison(
            [p.baseline_score for p in scored], [p.candidate_score for p in scored], resamples, seed
        )
        row.score_drop = -result.difference
        row.score_drop_ci = (-result.high, -result.low)
        row.score_p_raw = row.score_p_value = result.p_value
    return row


def _classify(drop: float, p_value: float, max_drop: float, alpha: float) -> Verdict:
    if drop > max_drop:
        return "regression" if p_value < alpha else "not significant"
    if drop < -max_drop and p_value < alpha:
        return "improved"
    return "below threshold" if drop > 0 else "ok"


def decide_row(row: Row, max_drop: float, alpha: float) -> None:
    verdicts = [(row.measure, row.drop, row.p_value, row.test)]
    if row.score_drop is not None and row.score_p_value is not None:
        verdicts.append(("score", row.score_drop, row.score_p_value, "bootstrap"))
    ranked: list[Verdict] = ["regression", "not significant", "improved", "below threshold", "ok"]
    outcomes = [(_classify(d, p, max_drop, alpha), metric, d, p, test) for metric, d, p, test in verdicts]
    verdict, metric, drop, p_value, test = min(outcomes, key=lambda o: ranked.index(o[0]))
    row.verdict = verdict
    relation = ">" if drop > max_drop else "≤"
    significance = "<" if p_value < alpha else "≥"
    row.reason = (
        f"{metric} drop {drop:+.3f} {relation} {max_drop:g}, "
        f"{test} p = {p_value:.3g} {significance} {alpha:g}"
    )


def compare(
    baseline: Run,
    candidate: Run,
    baseline_name: str | None = None,
    candidate_name: str | None = None,
    max_drop: float = 0.02,
    alpha: float = 0.05,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> CheckResult:
    """The full verdict: overall, per task and per cell rows (halluc runs: probe units), each classified."""
    baseline_model = select_model(baseline, baseline_name, "baseline")
    candidate_model = select_model(candidate, candidate_name, "candidate")
    pairs = pair_records(baseline, baseline_model, candidate, candidate_model)
    spec = baseline.manifest.spec  # the candidate's too: pair_records checked the fingerprints
    score_test = not isinstance(spec, HallucSpec) and needs_score_test(pairs)
    paired_ids = {p.sample_id for p in pairs}
    result = CheckResult(
        baseline_run=baseline.run_id,
        baseline_dir=str(baseline.directory),
        baseline_model=baseline_model,
        candidate_run=candidate.run_id,
        candidate_dir=str(candidate.directory),
        candidate_model=candidate_model,
        spec_fingerprint=baseline.fingerprint,
        max_drop=max_drop,
        alpha=alpha,
        score_test=score_test,
        paired=len(pairs),
        baseline_only=sum(r["sample_id"] not in paired_ids for r in baseline.records_of(baseline_model)),
        candidate_only=sum(r["sample_id"] not in paired_ids for r in candidate.records_of(candidate_model)),
        identical_prompts=sum(p.same_prompt for p in pairs),
    )
    if isinstance(spec, HallucSpec):
        rows, unit_notes = _unit_rows(
            spec, baseline.records_of(baseline_model), candidate.records_of(candidate_model), pairs
        )
        result.rows += rows
    else:
        result.rows += _niah_rows(pairs, score_test, resamples, seed)
        unit_notes = []
    for row in result.rows:
        decide_row(row, max_drop, alpha)
    result.notes += _notes(result, baseline, candidate) + unit_notes
    unscored = sum(not (math.isfinite(p.baseline_score) and math.isfinite(p.candidate_score)) for p in pairs)
    if score_test and unscored:
        result.notes.append(
            f"{unscored} of {len(pairs)} pairs have a non-finite score (NaN or infinite: fp16/bf16 overflow, "
            "or an edited record) and are left out of the score test; their verdicts still count"
        )
    result.notes += baseline.notes + candidate.notes
    return result


def _niah_rows(pairs: list[Pair], score_test: bool, resamples: int, seed: int) -> list[Row]:
    """Overall, per task, and per task × length × depth cell (Holm-adjusted across cells)."""
    from diffbench.lengths import format_length

    rows = [_row("overall", "all", pairs, score_test, resamples, seed)]
    for task in sorted({p.task for p in pairs}):
        rows.append(_row("task", task, [p for p in pairs if p.task == task], score_test, resamples, seed))
    cell_keys = sorted({(p.task, p.target_length, p.depth) for p in pairs})
    cells = [
        _row(
            "cell",
            f"{task} {format_length(length)} @ {depth:g}%",
            [p for p in pairs if (p.task, p.target_length, p.depth) == (task, length, depth)],
            score_test,
            resamples,
            seed,
        )
        for task, length, depth in cell_keys
    ]
    return rows + _holm(cells, score_test)


def _unit_rows(
    spec: HallucSpec, baseline: list[dict[str, Any]], candidate: list[dict[str, Any]], pairs: list[Pair]
) -> tuple[list[Row], list[str]]:
    """A halluc run's rows: one per probe × mode (× length), McNemar on the headline verdicts only
    (the verdict is the headline; a score is a secondary), Holm-adjusted across the units."""
    from diffbench.report.halluc_check import rate_note, uncounted_note, units

    by_id = {p.sample_id: p for p in pairs}
    paired = [r for r in baseline if r["sample_id"] in by_id]
    partners = {r["sample_id"]: r for r in candidate}
    rows, notes = [], []
    for unit, members in units(paired, spec.probes, per_length=len(spec.lengths) > 1):
        ids = [r["sample_id"] for r in members]
        row = _row("probe", unit.name, [by_id[i] for i in ids], False, 0, 0)
        row.unit = unit
        rows.append(row)
        notes.append(rate_note(unit, members, [partners[i] for i in ids]))
    notes.append(uncounted_note(paired))
    return _holm(rows, score_test=False), [note for note in notes if note is not None]


def _holm(rows: list[Row], score_test: bool) -> list[Row]:
    """Adjust the rows' p-values (and score p-values) for testing them all (Holm)."""
    for row, adjusted in zip(rows, holm_adjust([r.p_raw for r in rows]), strict=True):
        row.p_value = adjusted
    if score_test:
        scores = holm_adjust([r.score_p_raw if r.score_p_raw is not None else 1.0 for r in rows])
        for row, adjusted in zip(rows, scores, strict=True):
            row.score_p_value = adjusted
    return rows


def _notes(result: CheckResult, baseline: Run, candidate: Run) -> list[str]:
    notes = []
    if result.baseline_only or result.candidate_only:
        notes.append(
            f"{result.baseline_only} baseline and {result.candidate_only} candidate samples have no "
            "partner and are left out"
        )
    if result.identical_prompts < result.paired:
        notes.append(
            f"{result.paired - result.identical_prompts} of {result.paired} pairs saw different token ids "
            "(different tokenizers): same logical samples, not byte-identical prompts"
        )
    for run, role in ((baseline, "baseline"), (candidate, "candidate")):
        if run.manifest.status != "complete":
            notes.append(f"{role} run {run.run_id!r} is {run.manifest.status}")
    return notes


def result_payload(result: CheckResult) -> dict[str, Any]:
    payload = asdict(result)
    for row in payload["rows"]:
        if row["unit"] is None:  # not a halluc unit: the row reads as it always has
            del row["unit"]
        if row["test"] == "McNemar":  # the test every check row used before families
            del row["test"]
    payload["passed"] = result.passed
    payload["regressions"] = [f"{row.level}: {row.name}" for row in result.regressions]
    return payload


def write_json_report(result: CheckResult, path: Path) -> None:
    _write_text(path, json.dumps(result_payload(result), indent=2, allow_nan=False) + "\n")


def junit_xml(result: CheckResult) -> str:
    """JUnit XML: one test case per compared group; regressions are failures CI systems display."""
    import xml.etree.ElementTree as ET

    failures = len(result.regressions)
    suites = ET.Element(
        "testsuites", name="diffbench check", tests=str(len(result.rows)), failures=str(failures)
    )
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=f"diffbench check: {result.candidate_model} vs {result.baseline_model}",
        tests=str(len(result.rows)),
        failures=str(failures),
        errors="0",
        skipped="0",
    )
    properties = ET.SubElement(suite, "properties")
    for key in ("baseline_run", "baseline_model", "candidate_run", "candidate_model", "spec_fingerprint"):
        ET.SubElement(properties, "property", name=key, value=str(getattr(result, key)))
    for key in ("max_drop", "alpha", "paired"):
        ET.SubElement(properties, "property", name=key, value=str(getattr(result, key)))
    for row in result.rows:
        case = ET.SubElement(
            suite, "testcase", classname=f"diffbench.check.{row.level}", name=row.name, time="0"
        )
        summary = (
            f"{row.measure} {row.baseline_accuracy:.3f} → {row.candidate_accuracy:.3f} "
            f"over {row.n} paired samples; {row.reason}"
        )
        if row.verdict == "regression":
            failure = ET.SubElement(case, "failure", type="regression", message=summary)
            failure.text = summary
        else:
            ET.SubElement(case, "system-out").text = f"{row.verdict}: {summary}"
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def write_junit(result: CheckResult, path: Path) -> None:
    _write_text(path, junit_xml(result))


def _write_text(path: Path, text: str) -> None:
    """Atomic for files; written in place for /dev/stdout and the like (see ``atomic_write_text``)."""
    from diffbench.store import atomic_write_text, ensure_directory

    if not path.exists():
        ensure_directory(path.parent, "pass another path")
    atomic_write_text(path, text, special_in_place=True)


def verdict_table(result: CheckResult, show_cells: str = "changed") -> Any:
    """A rich table of the verdict that fits 80 columns (CI logs): intervals go on a second line.

    ``show_cells``: all | changed (cells whose verdict is not ok) | none.
    """
    from rich import box
    from rich.table import Table

    styles = {
        "regression": "bold red",
        "not significant": "yellow",
        "below threshold": "cyan",
        "improved": "green",
        "ok": "green",
    }
    units = [row.unit for row in result.rows if row.unit is not None]
    unit_kind = "probe × mode" + (" × length" if any(u.target_length for u in units) else "")
    caption = (
        f"regression = drop > {result.max_drop:g} and p < {result.alpha:g}; McNemar exact"
        + (" / paired bootstrap on scores" if result.score_test else "")
        + (
            f" on each probe's headline verdicts; p Holm-adjusted over the {len(units)} {unit_kind} "
            "units; −/+ = items lost/won"
            if units
            else "; cell p Holm-adjusted; −/+ = samples lost/won"
        )
    )
    if any(row.test != "McNemar" for row in result.rows):  # variants over seeds (family_check.py)
        caption = (
            f"regression = drop > {result.max_drop:g} and p < {result.alpha:g}; exact seed-level "
            "permutation test; −/+ = samples where the baseline's / candidate's seeds score higher"
        )
    table = Table(
        title=f"{result.candidate_model} ({result.candidate_run}) vs {result.baseline_model} "
        f"({result.baseline_run})",
        caption=caption,
        box=box.SIMPLE_HEAD,
        collapse_padding=True,
        pad_edge=False,
    )
    for header, justify in (
        ("group", "left"),
        ("n", "right"),
        ("baseline", "right"),
        ("candidate", "right"),
        ("drop", "right"),
        ("−/+", "right"),
        ("p", "right"),
        ("verdict", "left"),
    ):
        table.add_column(
            header,
            justify=justify,  # type: ignore[arg-type]
            overflow="fold",
            no_wrap=header in ("verdict", "−/+", "p"),
        )
    previous = None
    for row in result.rows:
        if row.level == "cell" and (
            show_cells == "none" or (show_cells == "changed" and row.verdict == "ok")
        ):
            continue
        if previous is not None and row.level != previous:
            table.add_section()
        previous = row.level
        drop, p_text = f"{row.drop:+.3f}", f"{row.p_value:.2g}"
        if row.score_drop is not None and row.score_p_value is not None:
            drop += f"\nscore {row.score_drop:+.3f}"
            p_text += f"\n{row.score_p_value:.2g}"
        group = {"overall": "overall", "task": f"task {row.name}"}.get(row.level, row.name)
        if row.unit is not None:
            group = f"{row.unit.heading}\n{row.unit.label}"
        table.add_row(
            group,
            str(row.n),
            f"{row.baseline_accuracy:.3f}\n[{row.baseline_ci[0]:.2f}, {row.baseline_ci[1]:.2f}]",
            f"{row.candidate_accuracy:.3f}\n[{row.candidate_ci[0]:.2f}, {row.candidate_ci[1]:.2f}]",
            drop,
            f"{row.only_baseline}/{row.only_candidate}",
            p_text,
            f"[{styles[row.verdict]}]{row.verdict}[/]",
        )
    return table


def run_candidate(
    baseline: Run,
    checkpoint: str,
    out: Path | None,
    results_dir: Path,
    device: str,
    dtype: str,
    command: list[str],
    on_event: Any,
) -> Path:
    """Run the baseline's exact task spec (same seed, grid, haystack, needle) on a checkpoint.

    Returns the candidate's run directory, with its summary and heatmaps written as `niah` does.
    Samples are regenerated from the spec, which is deterministic; ``compare`` then verifies per
    pair that the prompts are byte-identical (same ``prompt_sha256``) where the tokenizers agree.
    """
    from diffbench.engine.registry import run_spec
    from diffbench.report.run_report import write_run_report

    if not isinstance(baseline.manifest.spec, NiahSpec):
        raise UsageError(
            f"--candidate-model can rerun niah runs only; {baseline.run_id!r} is a "
            f"{baseline.manifest.task!r} run: run the candidate yourself and pass --candidate RUN_DIR"
        )
    outcome = run_spec(
        baseline.manifest.spec, [checkpoint], out, results_dir, device, dtype, command, on_event
    )
    write_run_report(outcome.directory)
    return outcome.directory
