"""``halluc --attn``: where each model's attention goes on the probe items, and Lookback Lens's ratio.

Two diagnostics of docs/design/probes.md, on the run's own items and the model's own answers:

- **Table 3 view.** At the query row that emits the first answer token, each head's share of attention
  on the answer tokens in the document (``answer``), on the sentences carrying the answer (``needle``)
  and on the rest of the document (``noise``), as ``diffbench attn`` measures on NIAH samples. An item
  whose answer is not in its context (an unanswerable question) has no answer share: null, not zero.
- **Lookback ratio.** Per layer, head and generated token, the mean attention on the context over it
  plus the mean on the new tokens (Lookback-Lens step01), over the model's own generated answer. Its
  per-item mean is scored against the rule checks' hallucination labels: the AUROC of the ratio for
  telling clean answers from hallucinated ones, and the cross-validated AUROC of a logistic regression
  on the layer × head ratios (a Lookback Lens trained on diffbench's labels, not on GPT-4o's).

Every item is analysed once per model: the prompt, then the generated answer teacher-forced as rows.
Items with no generated answer (forced-choice-only probes) give the Table 3 row alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffbench.analysis.attention_mass import SharedContext
from diffbench.analysis.attention_run import AttentionOptions, AttentionTask, UnitResult
from diffbench.errors import RunDirectoryError
from diffbench.store import read_json_object

MIN_PER_CLASS = 2  # the cross-validated probe needs two folds with both labels


@dataclass(frozen=True)
class HallucUnit:
    """One probe item and the answer the model generated for it (empty when it only scored candidates)."""

    item: Any  # ProbeItem
    output_ids: list[int]
    hallucinated: bool | None  # the rule checks' label of that answer; None without one

    @property
    def sample_id(self) -> str:
        return str(self.item.item_id)


def hallucinated(probe: str, details: dict[str, Any], correct: bool) -> bool | None:
    """The rule checks' hallucination label of one generated answer (the probe designs' checks).

    P1/P2: not hallucination-free; P3: a fabricated value (an abstention on an answerable question is
    wrong but invents nothing); P4: the answer does not follow the context; --dataset: unsupported numbers.
    """
    if probe in ("factsum", "factqa"):
        return not bool(details.get("hallucination_free", correct))
    if probe == "unanswerable":
        return bool(details.get("fabricated"))
    if probe in ("counterfactual", "dataset"):
        return not correct
    return None


def answer_ids(tokenizer: Any, generated: list[int], prediction: str) -> list[int]:
    """The generated tokens up to the scored answer (the text after its stop marker is not the answer)."""
    if not prediction:
        return []
    for count in range(1, len(generated) + 1):
        if len(tokenizer.decode(generated[:count], skip_special_tokens=True).strip()) >= len(prediction):
            return list(generated[:count])
    return list(generated)


def halluc_units(run_directory: Path, prepared: Any) -> list[HallucUnit]:
    """The run's items in this model's tokenizer, each with the model's generated answer and its label."""
    from diffbench.haystack.fit import SegmentEncoder
    from diffbench.store import RunFiles, iter_record_lines
    from diffbench.tasks.probes.core import ProbeItem

    path = run_directory / "samples" / f"{prepared.tokenizer_fingerprint}.probes.jsonl"
    if not path.exists():
        return []
    items = [ProbeItem.model_validate(payload) for payload in iter_record_lines(path)]
    stale = [item.item_id for item in items if item.document_span is None or item.response_start is None]
    if stale:
        raise RunDirectoryError(
            f"the probe items of {str(run_directory)!r} predate halluc --attn (no document spans, e.g. "
            f"{stale[0]!r}); run halluc again with --attn and a new --out"
        )
    generated = {
        record["sample_id"].removesuffix("#gen"): record
        for record in RunFiles(run_directory).records()
        if record["model"] == prepared.ref.name and record["sample_id"].endswith("#gen")
    }
    encoder = SegmentEncoder(prepared.tokenizer)
    units = []
    for item in items:
        record = generated.get(item.item_id)
        if record is None:
            units.append(HallucUnit(item, [], None))
            continue
        details, prediction = record.get("details") or {}, record.get("prediction") or ""
        ids = details.get("output_ids")
        if ids is None:  # records written before output ids were kept: the answer's text, encoded
            ids = encoder.encode((" " if item.answer_prefix else "") + prediction) if prediction else []
        label = hallucinated(item.probe, details, bool(record["correct"]))
        units.append(HallucUnit(item, answer_ids(prepared.tokenizer, ids, prediction), label))
    return units


def halluc_sequence(unit: HallucUnit) -> list[int]:
    """An item's prompt, then the model's own answer but its last token."""
    return list(unit.item.input_ids) + list(unit.output_ids[:-1])


def analyse_halluc_unit(
    loaded: Any, unit: HallucUnit, options: AttentionOptions, shared: SharedContext | None = None
) -> UnitResult:
    """Table 3 records at the first answer row, each head's mean lookback ratio over the answer."""
    from diffbench.analysis.attention_mass import (
        capture_rows,
        key_labels,
        layer_head_records,
        lookback_ratios,
    )

    entry, item = loaded.entry, unit.item
    outputs = unit.output_ids
    sequence = list(item.input_ids) + outputs[:-1]
    captured = capture_rows(loaded.model, sequence, max(len(outputs), 1), options.prefill_chunk, shared)
    labels = key_labels(
        len(sequence), list(item.evidence_spans), tuple(item.document_span), list(item.answer_spans)
    )
    records: list[dict[str, Any]] = []
    for capture in captured.layers:
        heads = layer_head_records(
            capture.rows(0, 1), labels, entry.variant, entry.variant_version, options.key_chunk
        )
        ratios = None
        if outputs:
            ratios = lookback_ratios(
                capture, entry.variant, entry.variant_version, item.response_start, options.key_chunk
            ).mean(-1)
        for record in heads:
            _null_missing_regions(record, item)
            record["lookback"] = None if ratios is None else float(ratios[record["head"]])
        records.extend(heads)
        capture.query = capture.key = capture.output = None  # the key is a view of the cache: let it go
    lookbacks = [r["lookback"] for r in records if r["lookback"] is not None]
    about = {
        "sample_id": item.item_id,
        "probe": item.probe,
        "probe_variant": item.variant,
        "target_length": item.target_length,
        "prompt_tokens": item.prompt_tokens,
        "depth": item.depth,
        "sample_index": item.sample_index,
        "rows": len(sequence) - len(item.input_ids) + 1,
    }
    verdict = {
        "has_answer": bool(item.answer_spans),
        "output_tokens": len(outputs),
        "hallucinated": unit.hallucinated,
        "lookback": sum(lookbacks) / len(lookbacks) if lookbacks else None,
        "evidence_spans": [list(span) for span in item.evidence_spans],
        "answer_spans": [list(span) for span in item.answer_spans],
        "document_span": list(item.document_span),
        "response_start": item.response_start,
    }
    return UnitResult(about, records, verdict)


def _null_missing_regions(record: dict[str, Any], item: Any) -> None:
    """No answer (or needle) region in the item: its share is undefined, not zero."""
    missing = [] if item.answer_spans else ["answer"]
    missing += [] if item.evidence_spans else ["needle"]
    for region in missing:
        for key in (region, f"pos_{region}", f"neg_{region}"):
            if key in record:
                record[key] = None


def summarise_halluc(directory: Path) -> dict[str, Any]:
    """The Table 3 summary of the items, plus per model the lookback ratio and how well it separates
    clean answers from hallucinated ones."""
    import pandas as pd

    from diffbench.analysis.attention_files import MANIFEST, RECORDS, SAMPLE_RESULTS
    from diffbench.analysis.attention_summary import summarise_heads

    heads = pd.read_json(directory / RECORDS, lines=True)
    verdicts = pd.read_json(directory / SAMPLE_RESULTS, lines=True)
    summary = summarise_heads(heads)
    counts = verdicts.groupby("model", sort=False)["sample_id"].count()
    for row in summary["models"]:
        row["samples"] = int(counts[row["model"]])
    seed = int((read_json_object(directory / MANIFEST) or {}).get("seed", 0))
    summary["lookback"] = [lookback_summary(heads, verdicts, model, seed) for model in summary["model_order"]]
    columns = ["model", "sample_id", "probe", "target_length", "depth", "has_answer"]
    columns += ["output_tokens", "hallucinated", "lookback", "seconds"]
    summary["samples"] = json.loads(verdicts[columns].to_json(orient="records"))
    return summary


def lookback_summary(heads: Any, verdicts: Any, model: str, seed: int = 0) -> dict[str, Any]:
    """Mean lookback ratio of clean and hallucinated answers, the AUROC of the ratio, and the
    cross-validated AUROC of a logistic regression on the layer × head ratios; then the same per probe.

    Over all probes the label also tells the probes apart (one probe's answers may be mostly clean),
    so the per-probe rows are the ones that compare like with like.
    """
    labelled = verdicts[(verdicts["model"] == model) & verdicts["lookback"].notna()]
    labelled = labelled[labelled["hallucinated"].notna()]
    row = {"model": model, **_separation(heads, labelled, model, seed)}
    if "probe" in labelled.columns:
        row["by_probe"] = [
            {"probe": probe, **_separation(heads, labelled[labelled["probe"] == probe], model, seed)}
            for probe in dict.fromkeys(labelled["probe"])
        ]
    return row


def _separation(heads: Any, labelled: Any, model: str, seed: int) -> dict[str, Any]:
    """How the lookback ratio of a set of labelled answers splits between clean and hallucinated.

    The AUROC's interval is a stratified bootstrap seeded from the run's seed (the manifest's)."""
    clean = labelled[~labelled["hallucinated"].astype(bool)]
    dirty = labelled[labelled["hallucinated"].astype(bool)]
    row: dict[str, Any] = {
        "answers": len(labelled),
        "hallucinated": len(dirty),
        "lookback": _mean(labelled["lookback"]),
        "lookback_clean": _mean(clean["lookback"]),
        "lookback_hallucinated": _mean(dirty["lookback"]),
        "auroc": None,
        "auroc_interval": None,
        "probe_auroc": None,
        "probe_folds": None,
    }
    if len(clean) and len(dirty):
        from sklearn.metrics import roc_auc_score

        from diffbench.stats import auroc_interval

        target = (~labelled["hallucinated"].astype(bool)).astype(int)
        row["auroc"] = float(roc_auc_score(target, labelled["lookback"]))
        row["auroc_interval"] = list(auroc_interval(clean["lookback"], dirty["lookback"], seed=seed))
    folds = min(5, len(clean), len(dirty))
    if folds >= MIN_PER_CLASS:
        row["probe_auroc"], row["probe_folds"] = _probe_auroc(heads, labelled, model, folds), folds
    return row


def _probe_auroc(heads: Any, labelled: Any, model: str, folds: int) -> float:
    """Cross-validated AUROC of a logistic regression on each answer's layer × head lookback ratios.

    The folds are stratified and unshuffled, so the figure needs no seed.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    mine = heads[(heads["model"] == model) & heads["sample_id"].isin(labelled["sample_id"])]
    features = mine.pivot_table(index="sample_id", columns=["layer", "head"], values="lookback")
    target = (~labelled.set_index("sample_id")["hallucinated"].astype(bool)).astype(int)
    target = target.loc[features.index]
    probability = cross_val_predict(
        LogisticRegression(max_iter=1000),
        features.to_numpy(),
        target.to_numpy(),
        cv=StratifiedKFold(n_splits=folds),
        method="predict_proba",
    )[:, 1]
    return float(roc_auc_score(target.to_numpy(), probability))


def _mean(values: Any) -> float | None:
    return float(values.mean()) if len(values) else None


HALLUC_TASK = AttentionTask(
    halluc_units, analyse_halluc_unit, summarise_halluc, halluc_sequence
)  # halluc --attn
