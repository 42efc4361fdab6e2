"""``diffbench attn``: attention allocation of each model on a NIAH grid, into a run directory.

The samples are niah's (same spec, same token-exact prompts), so an attention run and a niah run made
with the same options look at identical contexts. Files of the run directory:

    attention_manifest.json   provenance: spec, models, versions, command, options, status, time, memory
    attention.jsonl           one line per model × sample × layer × head (plain JSON, pandas-readable)
    attention_samples.jsonl   one line per model × sample: answer region, teacher-forced verdict, seconds
    samples/<tokenizer>.jsonl the exact token ids each tokenizer saw
    attention_summary.json    per model and layer: mean region shares (the Table 3 view), redundancy
    attention_*.png/.svg      the plots (see attention_plots.py)

The pass is a task of the one run loop (``AttentionPass``): it shards under torchrun, and a unit's
records are appended in fsynced writes after it finishes. ``diffbench attn`` does not resume: an
attention run is short next to the niah grid it mirrors, and --out must name a fresh directory; a
finished run's pass (``--attn``) resumes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffbench.errors import RunDirectoryError, UsageError
from diffbench.events import EventHook, Status
from diffbench.specs import AttentionManifest, RunStatus
from diffbench.store import RunFiles, append_durably, read_json_object

SCHEMA_VERSION = 1
MANIFEST = "attention_manifest.json"
RECORDS = "attention.jsonl"
SAMPLE_RESULTS = "attention_samples.jsonl"
SUMMARY = "attention_summary.json"


@dataclass(frozen=True)
class AttentionOptions:
    """How the rows are computed; the results do not depend on these (to float rounding; tested)."""

    key_chunk: int = 8192
    prefill_chunk: int = 4096
    device_map: str | None = None  # "auto": the model spread over the GPUs as the niah pass had it

    def as_manifest(self) -> dict[str, object]:
        placement = {"device_map": self.device_map} if self.device_map else {}
        return {"key_chunk": self.key_chunk, "prefill_chunk": self.prefill_chunk, **placement}


@dataclass
class AttentionOutcome:
    directory: Path
    summary: dict[str, Any]
    files: list[Path] = field(default_factory=list)


def fresh_directory(directory: Path) -> Path:
    """Create --out, refusing one that already holds an attention run (there is no resume to mix into)."""
    from diffbench.store import ensure_directory

    if (directory / RECORDS).exists() or (directory / MANIFEST).exists():
        raise RunDirectoryError(
            f"{str(directory)!r} holds an attention run already; pass another --out "
            "(attention runs do not resume)"
        )
    return ensure_directory(directory)


def check_supported(prepared: Any) -> None:
    """Refuse, before any weights load, a model whose attention is not plain causal softmax over all keys.

    The rows are computed as softmax(q·kᵀ·scale) over every earlier key: a sliding window, logit
    soft-capping or chunked attention would make them differ from what the model computes. The layout
    check builds the model on the meta device, which costs no memory.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from diffbench.analysis.attention_mass import attention_layers
    from diffbench.attention.chunked import supports_chunked_attention

    if not supports_chunked_attention(prepared.config):
        raise UsageError(
            f"model {prepared.ref.name!r} uses sliding-window, soft-capped or chunked attention; "
            "diffbench attn measures plain causal softmax attention only"
        )
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(prepared.config)
    attention_layers(skeleton)


def new_manifest(
    run_id: str, spec: Any, model_texts: list[str], options: AttentionOptions, command: list[str]
) -> AttentionManifest:
    from diffbench.store import now_iso
    from diffbench.versions import environment_versions

    return AttentionManifest(
        schema_version=SCHEMA_VERSION,
        run_id=run_id,
        task=spec.task,
        spec=spec,
        spec_fingerprint=spec.fingerprint(),
        seed=spec.seed,
        created_at=now_iso(),
        updated_at=now_iso(),
        requested_models=list(model_texts),
        options=options.as_manifest(),
        versions=environment_versions(),
        command=list(command),
    )


# A run manifest's fields that an attention manifest leaves out of its file (it has no engine entry, no
# attention note of its own and no record count).
NOT_IN_FILE = {"engine", "attention", "complete_records"}


@dataclass(frozen=True)
class UnitResult:
    """One unit's analysis: fields naming it (on every line), its head records, its verdict fields."""

    about: dict[str, Any]
    records: list[dict[str, Any]]
    verdict: dict[str, Any]


@dataclass(frozen=True)
class AttentionTask:
    """What a run's attention pass works on: its units per model, the analysis of one, the summary.

    A unit has a ``sample_id``: a niah sample, or a probe item with the model's own answer.
    """

    units_of: Callable[[Path, Any], list[Any]]  # (run directory, prepared model) → units
    analyse: Callable[[Any, Any, AttentionOptions], UnitResult]  # (loaded model, unit, options)
    summarise: Callable[[Path], dict[str, Any]]  # attention directory → summary


def _niah_units(run_directory: Path, prepared: Any) -> list[Any]:
    from diffbench.store import RunFiles

    return RunFiles(run_directory).load_samples(prepared.tokenizer_fingerprint) or []


@dataclass(frozen=True)
class AttentionRecord:
    """One unit's attention: its head lines and its verdict line, written together."""

    model: str
    sample_id: str
    heads: list[dict[str, Any]]
    verdict: dict[str, Any]


class AttentionFiles:
    """An attention directory as every rank sees it: a unit is finished once its verdict line is written.

    ``samples`` holds the samples ``diffbench attn`` built, in niah's layout (samples/<tokenizer>.jsonl).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.samples = RunFiles(directory)

    def shard_path(self, rank: int) -> Path:
        return self.directory / "shards" / f"rank-{rank}.jsonl"

    def completed(self, model: str) -> set[str]:
        from diffbench.store import iter_record_lines

        lines = iter_record_lines(self.directory / SAMPLE_RESULTS)
        return {str(line.get("sample_id")) for line in lines if line.get("model") == model}

    def append_to_shard(self, rank: int, record: AttentionRecord) -> None:
        """A unit on one line (heads and verdict), so a rank killed mid-write leaves no half unit."""
        path = self.shard_path(rank)
        path.parent.mkdir(exist_ok=True)
        append_durably(path, json.dumps({"heads": record.heads, "verdict": record.verdict}) + "\n")


class AttentionLedger(AttentionFiles):
    """An attention directory as rank 0 writes it: attention_manifest.json and the two line files.

    Attached to a finished run (``run_directory``), it holds the run's lock and keeps the run's
    manifest.json told where the attention data is and how far it got, so reports find it.
    """

    def __init__(
        self, directory: Path, manifest: AttentionManifest, run_directory: Path | None, lock: Any
    ) -> None:
        super().__init__(directory)
        self.manifest = manifest
        self.run_directory = run_directory
        self._lock = lock

    @classmethod
    def fresh(
        cls, directory: Path, spec: Any, model_texts: list[str], options: AttentionOptions, command: list[str]
    ) -> AttentionLedger:
        """``diffbench attn``'s own directory, which must not hold an attention run already."""
        fresh_directory(directory)
        ledger = cls(directory, new_manifest(directory.name, spec, model_texts, options, command), None, None)
        ledger.save_manifest()
        return ledger

    @classmethod
    def attached(
        cls,
        run_directory: Path,
        spec: Any,
        model_texts: list[str],
        options: AttentionOptions,
        command: list[str],
    ) -> AttentionLedger:
        """RUN/attention, resumed: units with a verdict line are kept, a unit cut short is done again."""
        from diffbench.store import acquire_lock, ensure_directory, read_manifest

        directory = ensure_directory(run_directory / ATTENTION_DIRECTORY)
        lock = acquire_lock(run_directory)
        try:
            manifest = _resumed_manifest(directory) or new_manifest(
                read_manifest(run_directory).run_id, spec, model_texts, options, command
            )
            manifest.requested_models = list(dict.fromkeys([*manifest.requested_models, *model_texts]))
            manifest.options, manifest.command = options.as_manifest(), list(command)
            manifest.status = "running"
            ledger = cls(directory, manifest, run_directory, lock)
            _keep_finished(directory)
            ledger.merge_shards()
            ledger.save_manifest()
        except BaseException:
            lock.close()
            raise
        return ledger

    def save_manifest(self) -> None:
        from diffbench.store import now_iso, write_json

        self.manifest.updated_at = now_iso()
        write_json(self.directory / MANIFEST, self.manifest.model_dump(mode="json", exclude=NOT_IN_FILE))
        if self.run_directory is not None:
            _note_in_run(self.run_directory, self.manifest)

    def refuse_mixed_settings(self, name: str, device: str, dtype: str, attn_implementation: str) -> None:
        """Shares are compared within a model's own rows only: a pass may add rows made another way."""

    def register_model(self, entry: Any) -> None:
        self.manifest.models = [m for m in self.manifest.models if m.name != entry.name] + [entry]
        self.save_manifest()

    def record_engine(self, model: str, settings: dict[str, object]) -> None:
        """The pass's settings are its options, in the manifest already."""

    def append(self, record: AttentionRecord) -> None:
        """The head lines, then the verdict line: a unit without its verdict is redone on resume."""
        append_durably(self.directory / RECORDS, "".join(json.dumps(line) + "\n" for line in record.heads))
        append_durably(self.directory / SAMPLE_RESULTS, json.dumps(record.verdict) + "\n")

    def merge_shards(self) -> int:
        """The units of the ranks' shards, each once; a shard goes only after its units are here."""
        from diffbench.store import iter_record_lines, record_key

        shards = sorted((self.directory / "shards").glob("rank-*.jsonl"))
        if not shards:
            return 0
        present = {record_key(line) for line in iter_record_lines(self.directory / SAMPLE_RESULTS)}
        merged = 0
        for shard in shards:
            for line in iter_record_lines(shard):
                verdict = line["verdict"]
                if record_key(verdict) not in present:
                    model, sample_id = record_key(verdict)
                    self.append(AttentionRecord(model, sample_id, line["heads"], verdict))
                    present.add(record_key(verdict))
                    merged += 1
            shard.unlink()
        return merged

    def finish(self, status: RunStatus, wall_seconds: float, peak_memory_mb: float | None) -> None:
        """Time adds up over resumed passes; the peak memory is the largest of them."""
        self.manifest.status = status
        self.manifest.wall_seconds = round(self.manifest.wall_seconds + wall_seconds, 3)
        if peak_memory_mb is not None:
            peak = round(peak_memory_mb, 1)
            self.manifest.peak_memory_mb = max(self.manifest.peak_memory_mb or 0.0, peak)
        self.save_manifest()

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()


@dataclass
class AttentionScoring:
    """One loaded model's units analysed, a record (heads and verdict) per unit."""

    loaded: Any
    pending: list[Any]
    run_id: str
    analyse: Callable[[Any, Any, AttentionOptions], UnitResult]
    options: AttentionOptions
    settings: dict[str, object] = field(default_factory=dict)

    def records(self) -> Iterator[AttentionRecord]:
        entry = self.loaded.entry
        context = {
            "schema_version": SCHEMA_VERSION,
            "run_id": self.run_id,
            "model": entry.name,
            "variant": entry.variant,
            "variant_version": entry.variant_version,
        }
        for unit in self.pending:
            started = time.perf_counter()
            result = self.analyse(self.loaded, unit, self.options)
            about = {**context, **result.about}
            heads = [{**about, **record} for record in result.records]
            verdict = {**about, **result.verdict, "seconds": round(time.perf_counter() - started, 4)}
            yield AttentionRecord(entry.name, unit.sample_id, heads, verdict)

    def throughput(self) -> dict[str, object]:
        return {}


@dataclass
class AttentionPass:
    """The attention pass as a task of the one run loop (engine/loop.py), so it shards under torchrun
    like niah and halluc.

    Standalone (``diffbench attn``) it builds niah's samples into a fresh directory; attached to a
    finished run (``niah --attn``, ``halluc --attn``) it reads the run's units (never rebuilt, so the
    attention describes exactly the prompts that were scored) into RUN/attention and resumes.
    """

    spec: Any
    analysis: AttentionTask
    options: AttentionOptions
    source: Any = None  # standalone: the haystack the samples are built from
    run_directory: Path | None = None  # attached: the finished run
    run_id: str | None = None  # attached: the run's id, which its attention lines carry
    label: str = "attn"
    precision_audit: bool = False

    def check_model(self, prepared: Any) -> None:
        check_supported(prepared)

    def choose_directory(
        self, out: Path | None, results_root: Path, model_texts: list[str], names: list[str]
    ) -> Path:
        from diffbench.engine.loop import default_run_directory

        if self.run_directory is not None:
            return self.run_directory / ATTENTION_DIRECTORY
        return out or default_run_directory(results_root, self.label, names)

    def open_ledger(self, directory: Path, model_texts: list[str], command: list[str]) -> AttentionLedger:
        if self.run_directory is not None:
            return AttentionLedger.attached(self.run_directory, self.spec, model_texts, self.options, command)
        return AttentionLedger.fresh(directory, self.spec, model_texts, self.options, command)

    def shard_files(self, directory: Path) -> AttentionFiles:
        return AttentionFiles(directory)

    def build_units(self, ledger: AttentionLedger, prepared: Any) -> None:
        if self.run_directory is None:
            from diffbench.engine.runner import samples_for

            samples_for(ledger.samples, self.spec, prepared, self.source)

    def units(self, files: AttentionFiles, prepared: Any) -> list[Any]:
        if self.run_directory is not None:
            return self.analysis.units_of(self.run_directory, prepared)
        return files.samples.load_samples(prepared.tokenizer_fingerprint) or []

    def unit_id(self, unit: Any) -> str:
        return str(unit.sample_id)

    def scoring(self, loaded: Any, pending: list[Any], run_id: str, options: Any) -> AttentionScoring:
        return AttentionScoring(loaded, pending, self.run_id or run_id, self.analysis.analyse, self.options)

    def engine_options(self) -> Any:
        from diffbench.engine.loop import EngineOptions

        return EngineOptions(device_map=self.options.device_map, precision_audit=0)


def run_attention(
    spec: Any,
    model_texts: list[str],
    out: Path | None,
    results_root: Path,
    device_choice: str,
    dtype_choice: str,
    command: list[str],
    on_event: EventHook,
    options: AttentionOptions | None = None,
) -> AttentionOutcome | None:
    """Every model on the spec's niah samples; records, summary and plots in a fresh run directory.

    None on torchrun ranks other than 0, which leave the summary to rank 0.
    """
    from diffbench.engine.loop import run_task
    from diffbench.haystack.sources import load_source

    source = load_source(spec.haystack, spec.seed)
    spec = spec.model_copy(update={"haystack_fingerprint": source.fingerprint})
    task = AttentionPass(spec, NIAH_TASK, options or AttentionOptions(), source=source)
    outcome = run_task(
        task,
        model_texts,
        out,
        results_root,
        device_choice,
        dtype_choice,
        command,
        on_event,
        task.engine_options(),
    )
    return write_summary(outcome.directory, on_event) if outcome.main else None


def attach_attention(
    run_directory: Path,
    model_texts: list[str],
    device_choice: str,
    dtype_choice: str,
    command: list[str],
    on_event: EventHook,
    task: AttentionTask,
    options: AttentionOptions | None = None,
) -> AttentionOutcome | None:
    """The attention pass of a finished run (``niah --attn``, ``halluc --attn``), into RUN/attention.

    Unlike ``diffbench attn`` this resumes. None on torchrun ranks other than 0.
    """
    from diffbench.engine.loop import run_task
    from diffbench.store import read_manifest

    run = read_manifest(run_directory)  # its spec carries the haystack fingerprint the units were built with
    attention = AttentionPass(
        run.spec, task, options or AttentionOptions(), run_directory=run_directory, run_id=run.run_id
    )
    outcome = run_task(
        attention,
        model_texts,
        None,
        run_directory.parent,
        device_choice,
        dtype_choice,
        command,
        on_event,
        attention.engine_options(),
    )
    if not outcome.main:
        return None
    if not (outcome.directory / SAMPLE_RESULTS).exists():
        raise RunDirectoryError(
            f"{str(run_directory)!r} has no samples for these models; run niah or halluc on it first"
        )
    return write_summary(outcome.directory, on_event, task.summarise)


ATTENTION_DIRECTORY = "attention"


def _resumed_manifest(directory: Path) -> AttentionManifest | None:
    """The pass's manifest to go on with; one that is unreadable or of another schema is not ours, so
    the pass starts anew (it is written atomically, so a kill never leaves half of one)."""
    from pydantic import ValidationError

    path = directory / MANIFEST
    payload = read_json_object(path) if path.exists() else None
    if payload is None or payload.get("schema_version") != SCHEMA_VERSION:
        return None
    try:
        return AttentionManifest.model_validate(payload)
    except ValidationError:
        return None


def _keep_finished(directory: Path) -> set[tuple[str, str]]:
    """(model, sample id) of every sample with a verdict; head records of any other sample are dropped.

    A sample's head records are written before its verdict, so a kill between the two leaves records
    that its redo would repeat.
    """
    from diffbench.store import atomic_write_text, iter_record_lines, record_key

    verdicts = list(iter_record_lines(directory / SAMPLE_RESULTS))
    done = {record_key(verdict) for verdict in verdicts}
    for path, rows in [(directory / SAMPLE_RESULTS, verdicts), (directory / RECORDS, None)]:
        if not path.exists():
            continue
        rows = [r for r in iter_record_lines(path) if record_key(r) in done] if rows is None else rows
        text = "".join(json.dumps(row) + "\n" for row in rows)
        if text != path.read_text(encoding="utf-8"):
            atomic_write_text(path, text)
    return done


def _note_in_run(run_directory: Path, manifest: AttentionManifest) -> None:
    """The run's manifest.json says where its attention data is, its status, and which models it covers."""
    from diffbench.store import MANIFEST as RUN_MANIFEST
    from diffbench.store import read_manifest, write_json

    run = read_manifest(run_directory)
    run.attention = {
        "directory": ATTENTION_DIRECTORY,
        "status": manifest.status,
        "models": [entry.name for entry in manifest.models],
        "summary": f"{ATTENTION_DIRECTORY}/{SUMMARY}",
        "options": manifest.options,
        "wall_seconds": manifest.wall_seconds,
        "peak_memory_mb": manifest.peak_memory_mb,
    }
    write_json(run_directory / RUN_MANIFEST, run.model_dump(mode="json"))


def prepare_supported(spec: Any, model_texts: list[str], on_event: EventHook) -> list[Any]:
    """Every --model resolved and checked for plain causal attention, before any weights load."""
    from diffbench.engine.loop import resolve_named_refs
    from diffbench.models.load import prepare_model

    refs = resolve_named_refs(model_texts)
    on_event(Status(f"preparing {len(refs)} model(s)"))
    prepared = [prepare_model(ref, spec.rope_scaling, max(spec.lengths)) for ref in refs]
    for item in prepared:
        check_supported(item)
    return prepared


def write_summary(
    directory: Path,
    on_event: EventHook,
    summarise_records: Callable[[Path], dict[str, Any]] | None = None,
) -> AttentionOutcome:
    """attention_summary.json and the plots, from the records (whole runs and resumed ones alike)."""
    from diffbench.analysis.attention_plots import write_plots
    from diffbench.store import write_json

    on_event(Status("writing the summary and plots"))
    manifest = read_json_object(directory / MANIFEST) or {}
    summary = (summarise_records or summarise)(directory)
    summary["wall_seconds"] = manifest.get("wall_seconds")
    summary["peak_memory_mb"] = manifest.get("peak_memory_mb")
    write_json(directory / SUMMARY, summary)
    files = write_plots(directory, summary)
    return AttentionOutcome(directory=directory, summary=summary, files=files)


def analyse_niah_sample(loaded: Any, sample: Any, options: AttentionOptions) -> UnitResult:
    """The Table 3 records of one niah sample and its teacher-forced verdict."""
    from diffbench.analysis.attention_mass import analyse_sample

    entry = loaded.entry
    result = analyse_sample(
        loaded.model,
        loaded.tokenizer,
        sample,
        entry.variant,
        entry.variant_version,
        options.key_chunk,
        options.prefill_chunk,
    )
    about = {
        "sample_id": sample.sample_id,
        "target_length": sample.target_length,
        "prompt_tokens": sample.prompt_tokens,
        "depth": sample.depth,
        "sample_index": sample.sample_index,
        "rows": len(sample.answer_ids),
    }
    verdict = {
        "needle_span": list(sample.needle_span),
        "answer_span": list(result.answer_span),
        "haystack_span": list(sample.haystack_span),
        "answer": sample.answer,
        "greedy_exact": result.greedy_exact,
        "answer_logprob": round(result.answer_logprob, 6),
    }
    if result.answer_spans:
        verdict["answer_spans"] = [list(span) for span in result.answer_spans]
    return UnitResult(about, result.records, verdict)


SHARE_COLUMNS = ("answer", "needle", "noise", "sink", "question", "prefix")
OPTIONAL_COLUMNS = ("negative_share", "lambda", "dex_relative_norm", "lookback")
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


NIAH_TASK = AttentionTask(_niah_units, analyse_niah_sample, summarise)  # niah --attn
