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

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffbench.errors import DiffbenchError, RunDirectoryError, UsageError

SCHEMA_VERSION = 1
MANIFEST = "attention_manifest.json"
RECORDS = "attention.jsonl"
SAMPLE_RESULTS = "attention_samples.jsonl"
SUMMARY = "attention_summary.json"
EventHook = Callable[[str, Any], None]


@dataclass(frozen=True)
class AttentionOptions:
    """How the rows are computed; the results do not depend on these (to float rounding; tested)."""

    key_chunk: int = 8192
    prefill_chunk: int = 4096

    def as_manifest(self) -> dict[str, object]:
        return {"key_chunk": self.key_chunk, "prefill_chunk": self.prefill_chunk}


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
    from diffbench.engine.chunked_attention import supports_chunked_attention

    if not supports_chunked_attention(prepared.config):
        raise UsageError(
            f"model {prepared.ref.name!r} uses sliding-window, soft-capped or chunked attention; "
            "diffbench attn measures plain causal softmax attention only"
        )
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(prepared.config)
    attention_layers(skeleton)


def _append(path: Path, lines: list[str]) -> None:
    try:
        with path.open("a", encoding="utf-8") as handle:
            handle.write("".join(lines))
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        raise DiffbenchError(f"cannot append to {str(path)!r}: {error.strerror or error}") from None


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
    from diffbench.engine.runner import default_run_directory, peak_memory_mb, resolve_named_refs
    from diffbench.haystack.sources import load_source
    from diffbench.models.device import resolve_device, resolve_dtype
    from diffbench.models.load import prepare_model
    from diffbench.store import now_iso, write_json
    from diffbench.versions import environment_versions

    options = options or AttentionOptions()
    source = load_source(spec.haystack, spec.seed)
    spec = spec.model_copy(update={"haystack_fingerprint": source.fingerprint})
    refs = resolve_named_refs(model_texts)
    device = resolve_device(device_choice)
    dtype = resolve_dtype(dtype_choice, device)
    on_event("status", f"preparing {len(refs)} model(s)")
    prepared = [prepare_model(ref, spec.rope_scaling, max(spec.lengths)) for ref in refs]
    for item in prepared:
        check_supported(item)

    directory = fresh_directory(
        out or default_run_directory(results_root, "attn", [ref.name for ref in refs])
    )
    manifest: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "kind": "attention",
        "run_id": directory.name,
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
    write_json(directory / MANIFEST, manifest)
    started = time.perf_counter()
    try:
        _run_models(prepared, spec, source, directory, device, dtype, options, manifest, on_event)
        manifest["status"] = "complete"
    except KeyboardInterrupt:
        manifest["status"] = "interrupted"
        raise
    except BaseException:
        manifest["status"] = "failed"
        raise
    finally:
        manifest["wall_seconds"] = round(time.perf_counter() - started, 3)
        manifest["peak_memory_mb"] = round(peak_memory_mb(device), 1)
        manifest["updated_at"] = now_iso()
        write_json(directory / MANIFEST, manifest)
    on_event("status", "writing the summary and plots")
    summary = summarise(directory)
    summary["wall_seconds"] = manifest["wall_seconds"]
    summary["peak_memory_mb"] = manifest["peak_memory_mb"]
    write_json(directory / SUMMARY, summary)
    from diffbench.analysis.attention_plots import write_plots

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
    import gc

    from diffbench.analysis.attention_mass import analyse_sample
    from diffbench.models.device import attention_implementation
    from diffbench.models.load import load_weights
    from diffbench.store import ensure_directory, write_json
    from diffbench.tasks.niah import generate_samples

    work = []
    for item in prepared:
        on_event("status", f"building samples for {item.ref.name}")
        samples = generate_samples(spec, item.tokenizer, source)
        sample_dir = ensure_directory(directory / "samples")
        lines = [sample.model_dump_json() + "\n" for sample in samples]
        (sample_dir / f"{item.tokenizer_fingerprint}.jsonl").write_text("".join(lines), encoding="utf-8")
        work.append((item, samples))
    on_event("plan", sum(len(samples) for _, samples in work))
    for item, samples in work:
        on_event("status", f"loading {item.ref.name}")
        loaded = load_weights(item, device, dtype, attention_implementation(device, dtype, item.config))
        entry = loaded.entry
        manifest["models"].append(entry.model_dump(mode="json"))
        write_json(directory / MANIFEST, manifest)
        on_event("model", f"{entry.name} ({entry.variant}, {entry.dtype}, {entry.device})")
        context = {"schema_version": SCHEMA_VERSION, "run_id": directory.name, "model": entry.name}
        for sample in samples:
            started = time.perf_counter()
            result = analyse_sample(
                loaded.model,
                loaded.tokenizer,
                sample,
                entry.variant,
                entry.variant_version,
                options.key_chunk,
                options.prefill_chunk,
            )
            seconds = time.perf_counter() - started
            about = {
                **context,
                "variant": entry.variant,
                "variant_version": entry.variant_version,
                "sample_id": sample.sample_id,
                "target_length": sample.target_length,
                "prompt_tokens": sample.prompt_tokens,
                "depth": sample.depth,
                "sample_index": sample.sample_index,
                "rows": len(sample.answer_ids),
            }
            lines = [json.dumps({**about, **record}) + "\n" for record in result.records]
            _append(directory / RECORDS, lines)
            verdict = {
                **about,
                "needle_span": list(sample.needle_span),
                "answer_span": list(result.answer_span),
                "haystack_span": list(sample.haystack_span),
                "answer": sample.answer,
                "greedy_exact": result.greedy_exact,
                "answer_logprob": round(result.answer_logprob, 6),
                "seconds": round(seconds, 4),
            }
            _append(directory / SAMPLE_RESULTS, [json.dumps(verdict) + "\n"])
            on_event("done", verdict)
        del loaded
        gc.collect()


SHARE_COLUMNS = ("answer", "needle", "noise", "sink", "question", "prefix")
OPTIONAL_COLUMNS = ("negative_share", "lambda", "dex_relative_norm")
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
    columns = [*SHARE_COLUMNS, "entropy", "redundancy"]
    columns += [c for c in OPTIONAL_COLUMNS if c in heads.columns]
    order = list(dict.fromkeys(heads["model"]))
    # A sample's layer value is the mean over its heads; a layer's, the mean over samples.
    per_layer = heads.groupby(["model", "variant", "layer"], sort=False)[columns].mean().reset_index()
    per_model = heads.groupby(["model", "variant"], sort=False)[columns].mean().reset_index()
    correct = verdicts.groupby("model", sort=False)["greedy_exact"].agg(["mean", "count"])
    per_model["teacher_forced_accuracy"] = per_model["model"].map(correct["mean"])
    per_model["samples"] = per_model["model"].map(correct["count"])
    grid = (
        heads.groupby(["model", "target_length", "depth"], sort=False)[["answer", "needle", "noise"]]
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
        "samples": rows(verdicts[[*VERDICT_COLUMNS]]),
    }
