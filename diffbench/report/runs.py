"""Read run directories for reports, leaderboards and checks, and decide whether they are comparable.

A run directory is a niah run (manifest.json, records.jsonl) or, for reports and the leaderboard, a
standalone ``diffbench attn`` run (attention_manifest.json): the latter reads as a run with attention
data and no records, so one comparability check and one labelling cover both.

Two runs are comparable when they hold the same sample set: the same task spec fingerprint
(seed, lengths, depths, haystack, needle, template mode, answer budget, scoring). Models with
different tokenizers see different token ids for the same logical sample; that is still the same
sample set, and ``prompt_sha256`` in each record tells the two cases apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffbench.analysis.attention_files import ATTENTION_DIRECTORY, SUMMARY
from diffbench.analysis.attention_files import MANIFEST as ATTENTION_MANIFEST
from diffbench.analysis.attention_files import SCHEMA_VERSION as ATTENTION_SCHEMA_VERSION
from diffbench.errors import RunDirectoryError, UsageError
from diffbench.specs import (
    AttentionManifest,
    HallucSpec,
    ModelEntry,
    NiahSpec,
    RunManifest,
    spec_difference,
)
from diffbench.store import (
    MANIFEST,
    RECORDS,
    read_json_object,
    read_manifest,
    read_records_counted,
    read_versioned_json,
)

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class Run:
    """One run directory: its manifest and its validated records (as dicts, one per model × sample)."""

    directory: Path
    manifest: RunManifest
    records: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what reading it found and tolerated (repeated records)

    @property
    def run_id(self) -> str:
        return self.manifest.run_id

    @property
    def fingerprint(self) -> str:
        return self.manifest.spec_fingerprint

    @property
    def halluc(self) -> bool:
        """A ``diffbench halluc`` run: its records are probe verdicts, summarised per probe and mode
        (report/halluc.py), never pooled into a NIAH accuracy."""
        return isinstance(self.manifest.spec, HallucSpec)

    @property
    def attention_only(self) -> bool:
        """A ``diffbench attn`` run: attention data, never records."""
        return isinstance(self.manifest, AttentionManifest)

    def model_names(self) -> list[str]:
        """Models with records, in the order they first appear."""
        return list(dict.fromkeys(r["model"] for r in self.records))

    def attention_models(self) -> list[str]:
        """Models the run's attention data covers (``niah --attn`` or ``diffbench attn``)."""
        return [str(name) for name in (self.manifest.attention or {}).get("models", [])]

    def entry(self, model: str) -> ModelEntry | None:
        return next((m for m in self.manifest.models if m.name == model), None)

    def records_of(self, model: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r["model"] == model]


def load_run(directory: Path) -> Run:
    """A run directory with every record checked against the Record schema."""
    if not directory.is_dir():
        raise UsageError(f"{str(directory)!r} is not a directory; pass a run directory written by diffbench")
    manifest = read_manifest(directory)
    records, repeats = read_records_counted(directory / RECORDS)
    run = Run(directory=directory, manifest=manifest, records=[r.model_dump(mode="json") for r in records])
    if repeats:
        run.notes.append(f"run {manifest.run_id} repeats {repeats} record(s) identically; each counts once")
    refuse_lost_records(run)
    refuse_foreign_records(run)
    return run


def refuse_foreign_records(run: Run) -> None:
    """Records of samples the run's spec does not have (appended from another run) are refused: they
    would count in accuracies of a grid they were never part of."""
    from diffbench.tasks.niah import sample_ids

    if not isinstance(run.manifest.spec, NiahSpec):
        return
    known = sample_ids(run.manifest.spec)
    foreign = [r["sample_id"] for r in run.records if r["sample_id"] not in known]
    if foreign:
        raise RunDirectoryError(
            f"{str(run.directory / RECORDS)!r} holds {len(foreign)} record(s) of samples this run's task "
            f"spec does not have (e.g. {foreign[0]!r}): they come from another run; remove those lines"
        )


def refuse_lost_records(run: Run) -> None:
    """A run marked complete that holds fewer records than it completed with has lost lines (a cut or
    edited records.jsonl): refused, since its accuracies would be computed on what happens to remain."""
    if run.manifest.status != "complete" or not run.manifest.complete_records:
        return
    lost = {
        model: (count, len(run.records_of(model)))
        for model, count in run.manifest.complete_records.items()
        if len(run.records_of(model)) < count
    }
    if lost:
        detail = ", ".join(f"{model} {held} of {count}" for model, (count, held) in lost.items())
        raise RunDirectoryError(
            f"{str(run.directory)!r} is marked complete but has lost records ({detail}); rerun its command "
            "(manifest.json: command) with the same --out to redo the missing samples"
        )


def load_attention_run(directory: Path) -> Run:
    """A ``diffbench attn`` run directory as a Run whose ``attention`` note points at its own files."""
    manifest = read_versioned_json(
        directory / ATTENTION_MANIFEST,
        AttentionManifest,
        "schema_version",
        ATTENTION_SCHEMA_VERSION,
        RunDirectoryError,
    )
    manifest.attention = {  # the note niah --attn writes into a niah run's manifest.json
        "directory": ".",
        "status": manifest.status,
        "models": [entry.name for entry in manifest.models],
        "summary": SUMMARY,
        "options": manifest.options,
        "wall_seconds": manifest.wall_seconds,
        "peak_memory_mb": manifest.peak_memory_mb,
    }
    return Run(directory=directory, manifest=manifest)


def load_report_run(directory: Path) -> Run:
    """A niah run, or a ``diffbench attn`` run (attention_manifest.json and no manifest.json)."""
    if not (directory / MANIFEST).exists() and (directory / ATTENTION_MANIFEST).is_file():
        return load_attention_run(directory)
    return load_run(directory)


def find_runs(root: Path) -> list[Path]:
    """Every run directory at or below ``root``, sorted: niah runs and ``diffbench attn`` runs.

    A niah run's own RUN/attention folder (``niah --attn``) also holds an attention manifest; it is
    part of that run, not a run of its own.
    """
    if not root.is_dir():
        raise UsageError(f"{str(root)!r} is not a directory; pass the folder that holds your run directories")
    runs = {path.parent for path in root.rglob(MANIFEST)}
    for path in root.rglob(ATTENTION_MANIFEST):
        inside_run = path.parent.name == ATTENTION_DIRECTORY and (path.parent.parent / MANIFEST).exists()
        if not inside_run:
            runs.add(path.parent)
    return sorted(runs)


def require_same_samples(runs: list[Run]) -> None:
    """Refuse runs whose sample sets differ, naming the runs and the spec fields that differ."""
    first = runs[0]
    for other in runs[1:]:
        tasks = (first.manifest.spec.task, other.manifest.spec.task)
        if tasks[0] != tasks[1]:  # a niah and a halluc run: their specs share almost no field worth naming
            raise UsageError(
                f"runs {first.run_id!r} ({tasks[0]}) and {other.run_id!r} ({tasks[1]}) are runs of different "
                "tasks; report each task's runs on their own, or see them side by side with diffbench "
                "leaderboard"
            )
        if other.fingerprint != first.fingerprint:
            fields = ", ".join(spec_difference(first.manifest.spec, other.manifest.spec)) or "spec"
            raise UsageError(
                f"runs {first.run_id!r} and {other.run_id!r} have different sample sets (their task specs "
                f"differ in {fields}); compare runs made with the same task options, or run the other "
                "model with the first run's options"
            )


def label_models(runs: list[Run]) -> dict[tuple[str, str], str]:
    """A display label per (run id, model): the model name, or name@run-id where names repeat across runs.

    A model counts in a run when it has records or attention data there, so the same model in a niah
    run and in an attention run gets two labels, as it would in two niah runs.
    """
    owners: dict[str, set[str]] = {}
    for run in runs:
        for model in _models(run):
            owners.setdefault(model, set()).add(run.run_id)
    return {
        (run.run_id, model): model if len(owners[model]) == 1 else f"{model}@{run.run_id}"
        for run in runs
        for model in _models(run)
    }


def _models(run: Run) -> list[str]:
    return list(dict.fromkeys([*run.model_names(), *run.attention_models()]))


def labelled_records(runs: list[Run]) -> list[dict[str, Any]]:
    """All records of comparable runs, ``model`` replaced by its unique label (``model_name`` keeps it)."""
    labels = label_models(runs)
    return [
        {**record, "model": labels[(run.run_id, record["model"])], "model_name": record["model"]}
        for run in runs
        for record in run.records
    ]


def combined_frame(runs: list[Run]) -> pd.DataFrame:
    """All records of comparable runs in one DataFrame, ``model`` replaced by its unique label."""
    import pandas as pd

    return pd.DataFrame.from_records(labelled_records(runs))


def read_model_card(entry: ModelEntry | None) -> dict[str, Any]:
    """The checkpoint's diffbench.json (how a DEX model was made), or {} for plain checkpoints."""
    if entry is None:
        return {}
    path = Path(entry.path) / "diffbench.json"
    return read_json_object(path) or {}


def provenance(run: Run, model: str) -> dict[str, Any]:
    """Where one model's results came from: enough to reproduce the row or to distrust it."""
    entry = run.entry(model)
    card = read_model_card(entry)
    manifest = run.manifest
    return {
        "model": model,
        "variant": entry.variant if entry else _first(run.records_of(model), "variant"),
        "source": entry.source if entry else "",
        "architecture": entry.architecture if entry else "",
        "parameters": entry.parameters if entry else None,
        "base_model": _base_model(card),
        "adaptation": _adaptation(card),
        "diffbench_version": manifest.versions.get("diffbench", ""),
        "seed": manifest.seed,
        "device": entry.device if entry else _first(run.records_of(model), "device"),
        "dtype": entry.dtype if entry else _first(run.records_of(model), "dtype"),
        "date": manifest.created_at[:10],
        "created_at": manifest.created_at,
        "run_id": manifest.run_id,
        "status": manifest.status,
        "spec_fingerprint": manifest.spec_fingerprint,
    }


def _base_model(card: dict[str, Any]) -> str:
    base = card.get("base_model")
    if isinstance(base, dict):
        return str(base.get("name") or base.get("source") or "")
    return str(base or "")


def _adaptation(card: dict[str, Any]) -> str:
    """One line on how a DEX checkpoint (or its o_proj control) was made, from its diffbench.json."""
    if not card:
        return ""
    kind = str(card.get("kind", ""))
    heads = card.get("selected_heads")
    parts = ["DEX" if kind == "dex" else (kind or "adapted")]
    if isinstance(heads, list) and kind == "dex":  # the o_proj control selects no heads
        count = sum(len(layer) for layer in heads if isinstance(layer, list))
        parts.append(f"{count} heads" + (f" ({card['select']})" if card.get("select") else ""))
    training = card.get("training")
    if isinstance(training, dict):
        steps, tokens = training.get("steps"), card.get("tokens_seen")
        parts.append(f"adapted {steps} steps" + (f", {tokens:,} tokens" if isinstance(tokens, int) else ""))
    elif kind == "dex":
        parts.append("converted, not trained")
    if card.get("folded"):
        parts.append("folded")
    return ", ".join(parts)


def _first(records: list[dict[str, Any]], key: str) -> str:
    return str(records[0][key]) if records else ""


def describe_spec(spec: NiahSpec | HallucSpec) -> str:
    """A short human label for a sample set, e.g. 'niah 1K–2K, 3 depths, prose, seed 0'."""
    from diffbench.lengths import format_length

    lengths = sorted(spec.lengths)
    span = format_length(lengths[0]) if len(lengths) == 1 else f"{format_length(lengths[0])}–"
    if len(lengths) > 1:
        span += format_length(lengths[-1])
    samples = f", {spec.samples_per_cell} per cell" if spec.samples_per_cell > 1 else ""
    haystack = spec.haystack if len(spec.haystack) <= 24 else "…" + spec.haystack[-23:]
    task = spec.task if isinstance(spec, NiahSpec) else f"halluc ({', '.join(spec.probes)})"
    if isinstance(spec, NiahSpec) and spec.kind == "vartrack":
        chains = f"{spec.needles} chain{'s' if spec.needles > 1 else ''}"
        task += f" vartrack ({chains} of {spec.hops} hop{'s' if spec.hops > 1 else ''}, one asked)"
    elif isinstance(spec, NiahSpec) and spec.multi_needle:
        task += f" N={spec.needles} R={spec.queries} {spec.kind} {spec.values}"
    if isinstance(spec, NiahSpec) and spec.needle_style != "magic":
        task += f" {spec.needle_style} character needles ({spec.needles} characters"
        task += ", a distractor)" if spec.distractor else ")"
    if isinstance(spec, HallucSpec) and spec.fewshot:
        task += f" {spec.fewshot}-shot"
    return f"{task} {span}, {len(spec.depths)} depths{samples}, {haystack}, seed {spec.seed}"
