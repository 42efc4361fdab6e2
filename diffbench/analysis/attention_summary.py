"""The attention pass's summary: the head records' means per model, layer, grid cell and head (the
Differential Transformer paper's Table 3 view), and each model's teacher-forced verdicts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from diffbench.analysis.attention_files import RECORDS, SAMPLE_RESULTS, SCHEMA_VERSION

SHARE_COLUMNS = ("answer", "needle", "noise", "sink", "question", "prefix")
OPTIONAL_COLUMNS = ("negative_share", "lambda", "dex_relative_norm", "lookback", "distractor")
VERDICT_COLUMNS = (
    "model",
    "sample_id",
    "target_length",
    "depth",
    "greedy_exact",
    "answer_logprob",
    "seconds",
)


def summarise(directory: Path) -> dict[str, Any]:
    """Means per model and layer (the Table 3 view), per model, per model × length × depth, and verdicts."""
    import pandas as pd

    heads = pd.read_json(directory / RECORDS, lines=True)
    verdicts = pd.read_json(directory / SAMPLE_RESULTS, lines=True)
    summary = summarise_heads(heads)
    correct = verdicts.groupby("model", sort=False)["greedy_exact"].agg(["mean", "count"])
    for row in summary["models"]:
        row["teacher_forced_accuracy"] = float(correct["mean"][row["model"]])
        row["samples"] = int(correct["count"][row["model"]])
    summary["samples"] = json.loads(verdicts[[*VERDICT_COLUMNS]].to_json(orient="records"))
    return summary


def answer_over_net(heads: Any) -> Any:
    """Diff heads' answer share over the net mass Σ(A1 − λ·A2) instead of its absolute mass: the paper's
    normalisation (mass / (1 − λ) for V1). A net region share is mass / (P + N) and the net mass is
    (P − N) / (P + N) = 1 − 2 × negative share, so the ratio is the answer mass over the net mass.
    Undefined (null) where the net mass is not positive (λ ≥ 1): there the paper's share has no meaning.
    Softmax heads (no negative share) get null too: their one share is ``answer``."""
    net = 1.0 - 2.0 * heads["negative_share"]
    return (heads["answer"] / net).where(net > 0)


def summarise_heads(heads: Any) -> dict[str, Any]:
    """The head records' means per model, per model and layer, per length × depth cell and per head.

    A share a unit has no region for (a probe item whose answer is not in its context) is null in
    its records and left out of the means, not counted as zero.
    """
    columns = [*SHARE_COLUMNS, "entropy", "redundancy"]
    columns += [c for c in OPTIONAL_COLUMNS if c in heads.columns]
    heads = heads.astype({column: float for column in columns})  # an all-null column reads as objects
    if "negative_share" in heads.columns:
        heads = heads.assign(answer_over_net=answer_over_net(heads))
        columns.append("answer_over_net")
    order = list(dict.fromkeys(heads["model"]))
    # A sample's layer value is the mean over its heads; a layer's, the mean over samples.
    per_layer = heads.groupby(["model", "variant", "layer"], sort=False)[columns].mean().reset_index()
    per_model = heads.groupby(["model", "variant"], sort=False)[columns].mean().reset_index()
    optional = [c for c in OPTIONAL_COLUMNS if c in heads.columns and c != "lambda"]
    grid = (
        heads.groupby(["model", "target_length", "depth"], sort=False)[
            ["answer", "needle", "noise", *optional]
        ]
        .mean()
        .reset_index()
    )
    per_head = (
        heads.groupby(["model", "layer", "head"], sort=False)[["needle", "answer", "noise"]]
        .mean()
        .reset_index()
    )

    def rows(frame: Any) -> list[dict[str, Any]]:
        return json.loads(frame.to_json(orient="records"))

    return {
        "schema_version": SCHEMA_VERSION,
        "models": rows(per_model),
        "model_order": order,
        "layers": rows(per_layer),
        "grid": rows(grid),
        "heads": rows(per_head),
    }
