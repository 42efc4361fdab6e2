"""``diffbench attn``: attention allocation of each model on a NIAH grid, into a run directory.

The samples are niah's (same spec, same token-exact prompts), so an attention run and a niah run made
with the same options look at identical contexts. Files of the run directory:

    attention_manifest.json   provenance: spec, models, versions, command, options, status, time, memory
    attention.jsonl           one line per model × sample × layer × head (plain JSON, pandas-readable)
    attention_samples.jsonl   one line per model × sample: answer region, teacher-forced verdict, seconds
    samples/<tokenizer>.jsonl the exact token ids each tokenizer saw
    attention_summary.json    per model and layer: mean region shares (the Table 3 view), redundancy
    attention_*.png/.svg      the plots (see attention_plots.py)

A sample's records are appended in one fsynced write after it finishes. There is no resume: an
attention run is short next to the niah grid it mirrors, and --out must name a fresh directory.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffbench.errors import RunDirectoryError, UsageError
from diffbench.events import EventHook, ModelStarted, Planned, Status, UnitDone
from diffbench.store import append_durably, read_json_object

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
) -> AttentionOutcome:
    """Every model on the spec's samples; records, summary and plots in the run directory."""
    from diffbench.engine.loop import default_run_directory
    from diffbench.haystack.sources import load_source
    from diffbench.models.device import resolve_device, resolve_dtype

    options = options or AttentionOptions()
    source = load_source(spec.haystack, spec.seed)
    spec = spec.model_copy(update={"haystack_fingerprint": source.fingerprint})
    device = resolve_device(device_choice)
    dtype = resolve_dtype(dtype_choice, device)
    prepared = prepare_supported(spec, model_texts, on_event)

    directory = fresh_directory(
        out or default_run_directory(results_root, "attn", [item.ref.name for item in prepared])
    )
    manifest = new_manifest(directory.name, spec, model_texts, options, command)
    with tracked(directory, manifest, device):
        _run_models(prepared, spec, source, directory, device, dtype, options, manifest, on_event)
    return write_summary(directory, manifest, on_event)


def new_manifest(
    run_id: str, spec: Any, model_texts: list[str], options: AttentionOptions, command: list[str]
) -> dict[str, Any]:
    from diffbench.store import now_iso
    from diffbench.versions import environment_versions

    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "attention",
        "run_id": run_id,
        "task": spec.task,
        "spec": spec.model_dump(mode="json"),
        "spec_fingerprint": spec.fingerprint(),
        "seed": spec.seed,
        "status": "running",
        "created_at": now_iso(),
        "updated_at": now_iso(),
        "requested_models": list(model_texts),
        "models": [],
        "options": options.as_manifest(),
        "versions": environment_versions(),
        "command": list(command),
        "wall_seconds": 0.0,
        "peak_memory_mb": None,
    }


@contextlib.contextmanager
def tracked(
    directory: Path, manifest: dict[str, Any], device: Any, every_gpu: bool = False
) -> Iterator[None]:
    """The manifest says running, then complete, interrupted or failed, with the time and peak memory.

    Time adds up over resumed passes; the peak memory is the largest of them.
    """
    from diffbench.engine.loop import peak_memory_mb
    from diffbench.store import now_iso, write_json

    manifest["status"] = "running"
    write_json(directory / MANIFEST, manifest)
    started = time.perf_counter()
    try:
        yield
        manifest["status"] = "complete"
    except KeyboardInterrupt:
        manifest["status"] = "interrupted"
        raise
    except BaseException:
        manifest["status"] = "failed"
        raise
    finally:
        manifest["wall_seconds"] = round(manifest["wall_seconds"] + time.perf_counter() - started, 3)
        peak = round(peak_memory_mb(device, every_gpu), 1)
        manifest["peak_memory_mb"] = max(manifest["peak_memory_mb"] or 0.0, peak)
        manifest["updated_at"] = now_iso()
        write_json(directory / MANIFEST, manifest)


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


def attach_attention(
    run_directory: Path,
    model_texts: list[str],
    device_choice: str,
    dtype_choice: str,
    command: list[str],
    on_event: EventHook,
    task: AttentionTask,
    options: AttentionOptions | None = None,
) -> AttentionOutcome:
    """The attention pass of a finished run (``niah --attn``, ``halluc --attn``), into RUN/attention.

    The units are read from the run (never rebuilt), so the attention describes exactly the prompts
    that were scored. Unlike ``diffbench attn`` this resumes: units with a verdict line are kept and
    a unit cut short is done again. The run's manifest.json records where the data is and its
    status, under the run's lock, so reports find it and a concurrent run on it waits.
    """
    from diffbench.models.device import resolve_device, resolve_dtype
    from diffbench.store import acquire_lock, ensure_directory, read_manifest

    options = options or AttentionOptions()
    spec = read_manifest(run_directory).spec  # carries the haystack fingerprint the samples were built with
    device = resolve_device(device_choice)
    dtype = resolve_dtype(dtype_choice, device)
    prepared = prepare_supported(spec, model_texts, on_event)
    directory = ensure_directory(run_directory / ATTENTION_DIRECTORY)
    lock = acquire_lock(run_directory)
    try:
        manifest = _resumed_manifest(directory) or new_manifest(
            read_manifest(run_directory).run_id, spec, model_texts, options, command
        )
        manifest["requested_models"] = list(dict.fromkeys([*manifest["requested_models"], *model_texts]))
        manifest.update(options=options.as_manifest(), command=list(command))
        done = _keep_finished(directory)
        work = []
        for item in prepared:
            units = task.units_of(run_directory, item)
            work.append((item, [u for u in units if (item.ref.name, u.sample_id) not in done]))
        on_event(Planned(sum(len(pending) for _, pending in work)))
        try:
            with tracked(directory, manifest, device, bool(options.device_map)):
                _note_in_run(run_directory, manifest)
                for item, pending in work:
                    analyse_model(
                        item, pending, directory, device, dtype, options, manifest, on_event, task.analyse
                    )
        finally:
            _note_in_run(run_directory, manifest)
        if not (directory / SAMPLE_RESULTS).exists():
            raise RunDirectoryError(
                f"{str(run_directory)!r} has no samples for these models; run niah or halluc on it first"
            )
        return write_summary(directory, manifest, on_event, task.summarise)
    finally:
        lock.close()


ATTENTION_DIRECTORY = "attention"


def _resumed_manifest(directory: Path) -> dict[str, Any] | None:
    path = directory / MANIFEST
    if not path.exists():
        return None
    payload = read_json_object(path)  # written atomically: an unreadable one is not ours, start anew
    return payload if payload is not None and payload.get("schema_version") == SCHEMA_VERSION else None


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


def _note_in_run(run_directory: Path, manifest: dict[str, Any]) -> None:
    """The run's manifest.json says where its attention data is, its status, and which models it covers."""
    from diffbench.store import MANIFEST as RUN_MANIFEST
    from diffbench.store import read_manifest, write_json

    run = read_manifest(run_directory)
    run.attention = {
        "directory": ATTENTION_DIRECTORY,
        "status": manifest["status"],
        "models": [entry["name"] for entry in manifest["models"]],
        "summary": f"{ATTENTION_DIRECTORY}/{SUMMARY}",
        "options": manifest["options"],
        "wall_seconds": manifest["wall_seconds"],
        "peak_memory_mb": manifest["peak_memory_mb"],
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
    manifest: dict[str, Any],
    on_event: EventHook,
    summarise_records: Callable[[Path], dict[str, Any]] | None = None,
) -> AttentionOutcome:
    """attention_summary.json and the plots, from the records (whole runs and resumed ones alike)."""
    from diffbench.analysis.attention_plots import write_plots
    from diffbench.store import write_json

    on_event(Status("writing the summary and plots"))
    summary = (summarise_records or summarise)(directory)
    summary["wall_seconds"] = manifest["wall_seconds"]
    summary["peak_memory_mb"] = manifest["peak_memory_mb"]
    write_json(directory / SUMMARY, summary)
    files = write_plots(directory, summary)
    return AttentionOutcome(directory=directory, summary=summary, files=files)


def _run_models(
    prepared: list[Any],
    spec: Any,
    source: Any,
    directory: Path,
    device: Any,
    dtype: Any,
    options: AttentionOptions,
    manifest: dict[str, Any],
    on_event: EventHook,
) -> None:
    from diffbench.store import atomic_write_text, ensure_directory
    from diffbench.tasks.niah import generate_samples

    work = []
    for item in prepared:
        on_event(Status(f"building samples for {item.ref.name}"))
        samples = generate_samples(spec, item.tokenizer, source)
        sample_dir = ensure_directory(directory / "samples")
        lines = [sample.model_dump_json() + "\n" for sample in samples]
        atomic_write_text(sample_dir / f"{item.tokenizer_fingerprint}.jsonl", "".join(lines))
        work.append((item, samples))
    on_event(Planned(sum(len(samples) for _, samples in work)))
    for item, samples in work:
        analyse_model(
            item, samples, directory, device, dtype, options, manifest, on_event, analyse_niah_sample
        )


def analyse_model(
    item: Any,
    units: list[Any],
    directory: Path,
    device: Any,
    dtype: Any,
    options: AttentionOptions,
    manifest: dict[str, Any],
    on_event: EventHook,
    analyse: Callable[[Any, Any, AttentionOptions], UnitResult],
) -> None:
    """Load one model and append its head records and verdicts, one fsynced write per unit.

    Shared by ``diffbench attn``, ``niah --attn`` and ``halluc --attn``; the manifest (written to
    MANIFEST in ``directory``) gains the model's entry once its weights are loaded.
    """
    import gc

    from diffbench.models.device import attention_implementation
    from diffbench.models.load import load_weights
    from diffbench.store import write_json

    if not units:
        return
    on_event(Status(f"loading {item.ref.name}"))
    attention = attention_implementation(device, dtype, item.config)
    loaded = load_weights(item, device, dtype, attention, options.device_map)
    entry = loaded.entry
    manifest["models"] = [m for m in manifest["models"] if m["name"] != entry.name]
    manifest["models"].append(entry.model_dump(mode="json"))
    write_json(directory / MANIFEST, manifest)
    on_event(ModelStarted(f"{entry.name} ({entry.variant}, {entry.dtype}, {entry.device})"))
    context = {
        "schema_version": SCHEMA_VERSION,
        "run_id": manifest["run_id"],
        "model": entry.name,
        "variant": entry.variant,
        "variant_version": entry.variant_version,
    }
    for unit in units:
        started = time.perf_counter()
        result = analyse(loaded, unit, options)
        about = {**context, **result.about}
        lines = [json.dumps({**about, **record}) + "\n" for record in result.records]
        append_durably(directory / RECORDS, "".join(lines))
        verdict = {**about, **result.verdict, "seconds": round(time.perf_counter() - started, 4)}
        append_durably(directory / SAMPLE_RESULTS, json.dumps(verdict) + "\n")
        on_event(UnitDone(verdict))
    del loaded
    gc.collect()


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
