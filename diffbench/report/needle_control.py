"""`diffbench report RUN --control CONTROL`: character needles against the same needles asked another way.

Both character styles (and a run with or without ``--distractor``) hide the same character at the same
landmark, with the same wording and depth, for a given seed and cell (tasks/character_needles.py). A
nonliteral run and its literal control therefore pair sample by sample: where only the nonliteral one
fails, the model found the needle when the question named it but did not make the association. This
module pairs them by cell (length, depth, sample index) per model and gives the difference with a paired
bootstrap interval and McNemar's exact test, per length and over all lengths.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from diffbench.errors import UsageError
from diffbench.report.runs import Run, combined_frame
from diffbench.report.summary import ALL_LENGTHS
from diffbench.specs import NiahSpec, spec_difference

if TYPE_CHECKING:
    import pandas as pd

PAIRED_FIELDS = {"needle_style", "distractor"}  # what may differ between a run and its control
KNOWN = "all, known"  # the row over the samples whose landmark→city association the model knows
TITLE = "Against the control"
CAPTION = (
    "Each model's accuracy here and on the control's same needles, paired by cell (length, depth, sample); "
    "Δ = here − control with a paired bootstrap 95% interval; McNemar's exact p over the discordant pairs; "
    "Δ log-prob: the mean paired difference in the answer's log-probability (nats), which moves where "
    "accuracy cannot; 'all, known': the samples whose landmark's city the model names with no document"
)


def needles_label(spec: NiahSpec) -> str:
    """How a run's needles are asked: 'nonliteral', 'literal + distractor', ..."""
    return spec.needle_style + (" + distractor" if spec.distractor else "")


def check_control(runs: list[Run], control: Run) -> None:
    """Refuse a control that is not the runs' character-needle grid asked another way."""
    for run in runs:
        spec, own = run.manifest.spec, control.manifest.spec
        if not (isinstance(spec, NiahSpec) and isinstance(own, NiahSpec)):
            raise UsageError(f"--control {control.run_id!r}: a control pairs niah runs of character needles")
        why = _why_unpaired(spec, own)
        if why is not None:
            raise UsageError(
                f"--control {control.run_id!r} cannot pair with run {run.run_id!r}: {why}; a control is the "
                "same grid of character needles in the other --needle-style, or with/without --distractor"
            )
    if not control.records:
        raise UsageError(f"--control {control.run_id!r} has no records yet; run it first")
    if not any(run.records for run in runs):
        raise UsageError(
            f"--control {control.run_id!r} pairs niah records, and the reported runs hold none (attention "
            "runs have no verdicts); report a niah run of the same needles with it"
        )


def _why_unpaired(spec: NiahSpec, own: NiahSpec) -> str | None:
    """Why a run's spec and its control's do not pair, or None when they do."""
    fields = set(spec_difference(spec, own))
    if fields - PAIRED_FIELDS:
        return f"its task spec also differs in {', '.join(sorted(fields - PAIRED_FIELDS))}"
    if not fields:
        return "it asks the needles the same way"
    if "magic" in (spec.needle_style, own.needle_style):
        return "magic-number needles pair with nothing"
    return None


def control_table(runs: list[Run], control: Run, seed: int = 0) -> tuple[pd.DataFrame, list[str]]:
    """One row per model × length (and over all lengths) for each model the control also ran, and notes
    naming the models it did not run and the samples either side lacks. A model is matched by its name,
    so ``m@run-a`` and ``m@run-b`` (one model in two reported runs) both pair with the control's ``m``."""
    import pandas as pd

    from diffbench.lengths import format_length
    from diffbench.stats import paired_comparison

    check_control(runs, control)
    here = _by_cell(combined_frame([run for run in runs if run.records]))
    there = _by_cell(combined_frame([control]))
    label = needles_label(control.manifest.spec)  # type: ignore[arg-type]  # checked: a NiahSpec
    rows: list[dict[str, Any]] = []
    notes = []
    for model, own in here.groupby("model", sort=False):
        name = own["model_name"].iloc[0]
        theirs = there[there["model_name"] == name]
        if theirs.empty:
            who = "it" if model == name else model
            notes.append(f"the control run {control.run_id} has no model {name}: {who} is not paired")
            continue
        paired = own.merge(theirs, on=["cell", "target_length"], suffixes=("", "_control"))
        if len(paired) < max(len(own), len(theirs)):
            notes.append(
                f"{model}: {len(paired)} samples paired with the control; {len(own) - len(paired)} here "
                f"and {len(theirs) - len(paired)} in the control have no partner (an unfinished run?)"
            )
        lengths = sorted(paired["target_length"].unique())
        slices = [(format_length(int(n)), paired[paired["target_length"] == n]) for n in lengths]
        slices.append((ALL_LENGTHS, paired))
        if paired["known"].any():  # the samples whose association the model knows (NoLiMa keeps only those)
            slices.append((KNOWN, paired[paired["known"]]))
        for length, part in slices:
            result = paired_comparison(part["correct_control"], part["correct"], seed=seed)
            rows.append(
                {
                    "model": model,
                    "length": length,
                    "n": result.n,
                    "needles": needles_label(runs[0].manifest.spec),  # type: ignore[arg-type]
                    "accuracy": float(part["correct"].mean()),
                    "control": label,
                    "control_accuracy": float(part["correct_control"].mean()),
                    "delta": result.difference,
                    "delta_low": result.low,
                    "delta_high": result.high,
                    "only_here": result.only_second,
                    "only_control": result.only_first,
                    "mcnemar_p": result.mcnemar_p,
                    "logprob_delta": float((part["answer_logprob"] - part["answer_logprob_control"]).mean()),
                }
            )
    return pd.DataFrame(rows), notes


def _by_cell(frame: pd.DataFrame) -> pd.DataFrame:
    """Verdicts keyed by cell: the sample id less its task ('niah-literal/4096/50/0' → '4096/50/0')."""
    from diffbench.report.summary import association_known

    cells = frame["sample_id"].str.split("/", n=1).str[1]
    known = association_known(frame)
    return frame.assign(
        cell=cells,
        correct=frame["correct"].astype(float),
        known=False if known is None else known,
    )[["model", "model_name", "cell", "target_length", "correct", "answer_logprob", "known"]]


def control_title(table: pd.DataFrame) -> str:
    """The table's title, naming both ways of asking: 'Against the control: nonliteral, control literal'."""
    first = table.iloc[0]
    return f"{TITLE}: {first['needles']} needles, control {first['control']}"


def control_cells(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Headers and text cells of the control table, shared by the terminal and Markdown views."""
    from diffbench.report.tables import interval_text, number_text

    headers = ["model", "length", "n", "accuracy", "control", "Δ", "Δ 95% CI", "McNemar p", "Δ log-prob"]
    cells = []
    for row in table.to_dict(orient="records"):
        cells.append(
            [
                str(row["model"]),
                str(row["length"]),
                str(row["n"]),
                number_text(row["accuracy"]),
                number_text(row["control_accuracy"]),
                number_text(row["delta"], "{:+.3f}"),
                interval_text(row["delta_low"], row["delta_high"], "{:+.3f}"),
                number_text(row["mcnemar_p"], "{:.3g}"),
                number_text(row["logprob_delta"], "{:+.2f}"),
            ]
        )
    return headers, cells
