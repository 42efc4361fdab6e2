"""The attention pass: where each model's attention goes at the answer positions of niah samples
(``diffbench attn``) or of a finished run's units (``niah --attn``, ``halluc --attn``).

The samples are niah's (same spec, same token-exact prompts), so an attention run and a niah run made
with the same options look at identical contexts. The pass is a task of the one run loop
(``AttentionPass``): it shards under torchrun, and a unit's records are appended in fsynced writes after
it finishes (its files: attention_files.py). ``diffbench attn`` does not resume: an attention run is
short next to the niah grid it mirrors, and --out must name a fresh directory; a finished run's pass
(``--attn``) resumes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffbench.analysis.attention_files import (
    ATTENTION_DIRECTORY,
    MANIFEST,
    SAMPLE_RESULTS,
    SCHEMA_VERSION,
    SUMMARY,
    AttentionFiles,
    AttentionLedger,
    AttentionRecord,
)
from diffbench.analysis.attention_mass import SharedContext, shared_order
from diffbench.analysis.attention_summary import summarise
from diffbench.errors import RunDirectoryError, UsageError
from diffbench.events import EventHook, Status
from diffbench.store import read_json_object

if TYPE_CHECKING:
    from diffbench.engine.runner import NiahTask


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
    analyse: Callable[
        [Any, Any, AttentionOptions, SharedContext], UnitResult
    ]  # (model, unit, options, cache)
    summarise: Callable[[Path], dict[str, Any]]  # attention directory → summary
    sequence: Callable[[Any], list[int]]  # the tokens a unit runs: its context, then its answer rows


def _niah_units(run_directory: Path, prepared: Any) -> list[Any]:
    from diffbench.store import RunFiles

    return RunFiles(run_directory).load_samples(prepared.tokenizer_fingerprint) or []


@dataclass
class AttentionScoring:
    """One loaded model's units analysed, a record (heads and verdict) per unit."""

    loaded: Any
    pending: list[Any]
    run_id: str
    analysis: AttentionTask
    options: AttentionOptions
    settings: dict[str, object] = field(default_factory=dict)

    def records(self) -> Iterator[AttentionRecord]:
        """The units in the order that shares most context, each prefilling only what it adds."""
        if not self.pending:
            return
        entry = self.loaded.entry
        capacity = max(len(self.analysis.sequence(unit)) for unit in self.pending)
        shared = SharedContext(self.loaded.model, capacity, self.options.prefill_chunk)
        context = {
            "schema_version": SCHEMA_VERSION,
            "run_id": self.run_id,
            "model": entry.name,
            "variant": entry.variant,
            "variant_version": entry.variant_version,
        }
        for unit in shared_order(self.pending, self.analysis.sequence):
            started = time.perf_counter()
            result = self.analysis.analyse(self.loaded, unit, self.options, shared)
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

    Standalone (``diffbench attn``) it builds niah's samples (``niah``, the niah task's own way) into a
    fresh directory; attached to a finished run (``niah --attn``, ``halluc --attn``) it reads the run's
    units (never rebuilt, so the attention describes exactly the prompts that were scored) into
    RUN/attention and resumes.
    """

    spec: Any
    analysis: AttentionTask
    options: AttentionOptions
    niah: NiahTask | None = None  # standalone: the samples' task (its haystack loaded)
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
            return AttentionLedger.attached(
                self.run_directory, self.spec, model_texts, self.options.as_manifest(), command
            )
        return AttentionLedger.fresh(directory, self.spec, model_texts, self.options.as_manifest(), command)

    def shard_files(self, directory: Path) -> AttentionFiles:
        return AttentionFiles(directory)

    def build_units(self, ledger: AttentionLedger, prepared: Any) -> None:
        if self.niah is not None:
            self.niah.build_units(ledger.samples, prepared)

    def units(self, files: AttentionFiles, prepared: Any) -> list[Any]:
        if self.niah is not None:
            return self.niah.units(files.samples, prepared)
        assert self.run_directory is not None  # attached, then
        return self.analysis.units_of(self.run_directory, prepared)

    def unit_id(self, unit: Any) -> str:
        return str(unit.sample_id)

    def scoring(self, loaded: Any, pending: list[Any], run_id: str, options: Any) -> AttentionScoring:
        return AttentionScoring(loaded, pending, self.run_id or run_id, self.analysis, self.options)

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
    from diffbench.engine.runner import NiahTask

    niah = NiahTask.from_spec(spec)  # its spec carries the haystack's fingerprint
    task = AttentionPass(niah.spec, NIAH_TASK, options or AttentionOptions(), niah=niah)
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


def niah_sequence(sample: Any) -> list[int]:
    """A niah sample's prompt, then its answer but the last token (the rows predict the answer)."""
    return list(sample.input_ids) + list(sample.answer_ids[:-1])


def analyse_niah_sample(
    loaded: Any, sample: Any, options: AttentionOptions, shared: SharedContext | None = None
) -> UnitResult:
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
        shared,
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


NIAH_TASK = AttentionTask(_niah_units, analyse_niah_sample, summarise, niah_sequence)  # niah --attn
