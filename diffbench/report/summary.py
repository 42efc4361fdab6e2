"""Aggregate records into per-cell and per-model accuracy, the numbers every view shows."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

CELL_KEYS = ["model", "variant", "target_length", "depth"]


def records_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Records as a DataFrame (the same table ``pandas.read_json(records.jsonl, lines=True)`` gives)."""
    return pd.DataFrame.from_records(records)


def finite_mean(values: pd.Series) -> float:
    """Mean over finite values: one fp16/bf16 overflow (-inf) must not turn a whole cell's mean into -inf."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return sum(finite) / len(finite) if finite else math.nan


def nonfinite_count(values: pd.Series) -> int:
    """Log-probs that are NaN or ±inf (reported beside the mean, never silently dropped)."""
    return sum(1 for v in values if v is None or not math.isfinite(float(v)))


def cell_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Accuracy, sample count and mean answer log-prob per model × length × depth."""
    grouped = frame.groupby(CELL_KEYS, sort=True)
    summary = grouped.agg(
        n=("correct", "size"),
        accuracy=("correct", "mean"),
        mean_answer_logprob=("answer_logprob", finite_mean),
        nonfinite_logprobs=("answer_logprob", nonfinite_count),
        mean_seconds=("seconds", "mean"),
        **_recall(frame),
    ).reset_index()
    return summary


def has_recall(frame: pd.DataFrame) -> bool:
    """Whether the records are multi-needle ones (a recall each); older and single-needle runs have none."""
    return "recall" in frame.columns and bool(frame["recall"].notna().any())


def _recall(frame: pd.DataFrame) -> dict[str, tuple[str, str]]:
    """Multi-needle runs: mean recall (fraction of asked needles retrieved) beside all-correct accuracy."""
    return {"recall": ("recall", "mean")} if has_recall(frame) else {}


def model_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Overall accuracy per model; for greedily decoded runs, how often teacher forcing agrees."""
    grouped = frame.groupby(["model", "variant"], sort=False)
    summary = grouped.agg(
        n=("correct", "size"),
        accuracy=("correct", "mean"),
        mean_answer_logprob=("answer_logprob", finite_mean),
        nonfinite_logprobs=("answer_logprob", nonfinite_count),
        **_recall(frame),
    ).reset_index()
    agreement = forced_agreement(frame)
    if agreement is not None:
        summary["teacher_forced_accuracy"] = summary["model"].map(agreement["accuracy"])
        summary["teacher_forced_agreement"] = summary["model"].map(agreement["agreement"])
    known = association_known(frame)
    if known is not None:  # character needles: how many associations the model knows, accuracy on those
        marked = frame.assign(known=known)
        summary["association_known"] = summary["model"].map(marked.groupby("model")["known"].mean())
        where = marked[marked["known"]].groupby("model")["correct"].mean()
        summary["accuracy_where_known"] = summary["model"].map(where)
    wrong = names_wrong_variables(frame)
    if wrong is not None:  # variable tracking: how often a decoded answer names a decoy chain's variable
        decoded = frame.assign(wrong=wrong)[wrong.notna()]
        rate = decoded.groupby("model")["wrong"].agg(lambda named: float(named.astype(bool).mean()))
        summary["wrong_variable_rate"] = summary["model"].map(rate)
    by_hop = recall_by_hop(frame)
    if by_hop:  # variable tracking: where the chains break
        summary["recall_by_hop"] = summary["model"].map(lambda model: by_hop.get(model))
    return summary


def recall_by_hop(frame: pd.DataFrame) -> dict[str, list[float]]:
    """Per model of a variable-tracking run, the share of records that found the chain's k-th variable
    (k = 0: the one assigned the value; k: reached after k hops): where a chain breaks."""
    if "needles" not in frame.columns:
        return {}
    chains = frame[frame["sample_id"].str.startswith("niah-vartrack-")]
    found: dict[str, list[list[bool]]] = {}
    for model, needles in zip(chains["model"], chains["needles"], strict=True):
        asked = sorted((n for n in needles or [] if n.get("query") is not None), key=lambda n: n["query"])
        for hop, needle in enumerate(asked):
            per_hop = found.setdefault(model, [])
            if hop == len(per_hop):
                per_hop.append([])
            per_hop[hop].append(bool(needle.get("retrieved")))
    return {model: [round(sum(hits) / len(hits), 6) for hits in hops] for model, hops in found.items()}


def record_details(frame: pd.DataFrame, field: str) -> pd.Series | None:
    """Per record, ``details[field]`` (None where absent); None when no record holds it."""
    if "details" not in frame.columns:
        return None
    values = frame["details"].map(lambda details: details.get(field) if isinstance(details, dict) else None)
    return values if values.notna().any() else None


def names_wrong_variables(frame: pd.DataFrame) -> pd.Series | None:
    """Per decoded variable-tracking record, whether its answer names a variable of a decoy chain
    (``details.wrong_variables``, engine/runner.py): recall never counts them. None for other runs."""
    wrong = record_details(frame, "wrong_variables")
    return None if wrong is None else wrong.map(lambda names: bool(names) if names is not None else None)


def association_known(frame: pd.DataFrame) -> pd.Series | None:
    """Per record of character needles, whether the model named the landmark's city with no document
    (``details.association.known``, engine/runner.py); None when the records hold no such check."""
    association = record_details(frame, "association")
    if association is None:
        return None
    known = association.map(lambda checked: checked.get("known") if isinstance(checked, dict) else None)
    if not known.notna().any():
        return None
    return known.fillna(False).astype(bool)


def forced_agreement(frame: pd.DataFrame) -> pd.DataFrame | None:
    """Per model, over greedily decoded records: the teacher-forced accuracy and how often the two
    verdicts agree. None when no record was decoded (teacher-forced runs have one verdict only)."""
    if "scoring" not in frame.columns:
        return None
    decoded = frame[frame["scoring"] == "generate"]
    if decoded.empty:
        return None
    same = decoded["correct"].astype(bool) == decoded["greedy_exact"].astype(bool)
    return (
        decoded.assign(agree=same)
        .groupby("model", sort=False)
        .agg(accuracy=("greedy_exact", "mean"), agreement=("agree", "mean"))
    )


def summary_payload(run_id: str, frame: pd.DataFrame) -> dict[str, Any]:
    """summary.json: the grid per model and the overall figures."""
    cells = cell_summary(frame)
    models = model_summary(frame)
    return {
        "run_id": run_id,
        "models": _rounded(models.to_dict(orient="records")),
        "cells": _rounded(cells.to_dict(orient="records")),
    }


def _rounded(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: round(v, 6) if isinstance(v, float) else v for k, v in row.items()} for row in rows]


def grid(cells: pd.DataFrame, model: str) -> pd.DataFrame:
    """One model's accuracy as a depth (rows) × length (columns) table."""
    own = cells[cells["model"] == model]
    return own.pivot(index="depth", columns="target_length", values="accuracy").sort_index()


EFFECTIVE_FRACTION = 0.85
ALL_LENGTHS = "all"


def length_summary(frame: pd.DataFrame, reference: str | None = None, seed: int = 0) -> pd.DataFrame:
    """Accuracy per task × model × length (and over all lengths) with Wilson 95% intervals.

    With a ``reference`` model, each other model's row also gets its accuracy difference on the
    samples both answered (paired), with a seeded paired-bootstrap 95% interval.
    """
    from diffbench.lengths import format_length
    from diffbench.stats import paired_comparison, wilson_interval

    verdicts = _verdicts_by_sample(frame)
    recall = has_recall(frame)
    rows: list[dict[str, Any]] = []
    for (task, model), own in frame.groupby(["task", "model"], sort=False):
        variant = own["variant"].iloc[0]
        lengths = sorted(own["target_length"].unique())
        slices: list[tuple[str, int | None, pd.DataFrame]] = [
            (format_length(int(n)), int(n), own[own["target_length"] == n]) for n in lengths
        ]
        slices.append((ALL_LENGTHS, None, own))
        for label, length, part in slices:
            n, correct = len(part), int(part["correct"].sum())
            low, high = wilson_interval(correct, n)
            row: dict[str, Any] = {
                "task": task,
                "model": model,
                "variant": variant,
                "length": label,
                "target_length": length,
                "n": n,
                "correct": correct,
                "accuracy": correct / n if n else float("nan"),
                "ci_low": low,
                "ci_high": high,
                "mean_score": float(part["score"].mean()),
                # multi-needle runs: the fraction of asked values found, which moves where accuracy is 0
                "recall": float(part["recall"].mean()) if recall else None,
                "delta": None,
                "delta_low": None,
                "delta_high": None,
                "paired_n": None,
            }
            if reference is not None and model != reference:
                ids = [i for i in part["sample_id"] if (reference, i) in verdicts]
                if ids:
                    reference_verdicts = [verdicts[(reference, i)] for i in ids]
                    own_verdicts = [verdicts[(model, i)] for i in ids]
                    result = paired_comparison(reference_verdicts, own_verdicts, seed=seed)
                    row.update(delta=result.difference, delta_low=result.low, delta_high=result.high)
                    row["paired_n"] = result.n
            rows.append(row)
    return pd.DataFrame.from_records(rows)


def _verdicts_by_sample(frame: pd.DataFrame) -> dict[tuple[str, str], float]:
    return {
        (str(m), str(s)): float(c)
        for m, s, c in zip(frame["model"], frame["sample_id"], frame["correct"], strict=True)
    }


def effective_lengths(frame: pd.DataFrame, fraction: float = EFFECTIVE_FRACTION) -> pd.DataFrame:
    """The longest length up to which accuracy stays at least ``fraction`` of the shortest length's.

    As NoLiMa's effective length, read strictly: lengths are walked upwards and the first one
    below the threshold ends the walk, so a lucky long length after a failure does not count.
    With 0 accuracy at the shortest length there is no signal to keep, and no effective length.
    """
    rows: list[dict[str, Any]] = []
    for (task, model), own in frame.groupby(["task", "model"], sort=False):
        by_length = own.groupby("target_length")["correct"].mean().sort_index()
        base_length = int(by_length.index[0])
        base = float(by_length.iloc[0])
        threshold = fraction * base
        effective: int | None = None
        if base > 0:
            for length, accuracy in by_length.items():
                if accuracy + 1e-12 < threshold:
                    break
                effective = int(length)
        rows.append(
            {
                "task": task,
                "model": model,
                "variant": own["variant"].iloc[0],
                "shortest_length": base_length,
                "shortest_accuracy": base,
                "threshold": threshold,
                "effective_length": effective,
                "longest_length": int(by_length.index[-1]),
                "accuracy_by_length": {int(k): float(v) for k, v in by_length.items()},
            }
        )
    return pd.DataFrame.from_records(rows)


def difference_grid(cells: pd.DataFrame, model: str, reference: str) -> pd.DataFrame:
    """model − reference accuracy per depth × length cell; NaN where either has no samples."""
    own, ref = grid(cells, model), grid(cells, reference)
    index = own.index.union(ref.index)
    columns = own.columns.union(ref.columns)
    return own.reindex(index=index, columns=columns) - ref.reindex(index=index, columns=columns)
