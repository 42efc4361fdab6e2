"""The one run loop every task runs through: resolve → prepare → open → units → refuse → load → score →
append → finish.

A task (``Task``: niah's samples, halluc's probe items, the attention pass's samples) says what its
units are, how one loaded model scores them and which files hold its run (``RunLedger``); the loop owns
everything else, the same for every task: every model resolved and checked before any weights load, the
run directory chosen, opened and resumed, units built once per tokenizer and stored, sharded over
torchrun ranks (each rank appends to its own shard, rank 0 merges), mixed settings refused before any
loads, the float32 precision audit, one record appended and fsynced per finished unit, memory handed
back between models, and the manifest finished whatever happens.
"""

from __future__ import annotations

import datetime as dt
import gc
import re
import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from diffbench.engine.distributed import Ranks, join_ranks, rank_device
from diffbench.engine.precision import DEFAULT_AUDIT_SAMPLES, PrecisionAudit, float32_reference, needs_audit
from diffbench.errors import RunDirectoryError
from diffbench.events import EventHook, ModelStarted, Planned, Status, UnitDone
from diffbench.models.device import attention_implementation, dtype_name, resolve_device, resolve_dtype
from diffbench.models.load import (
    LoadedModel,
    ModelRef,
    PreparedModel,
    load_weights,
    prepare_model,
    resolve_model_ref,
)
from diffbench.specs import RunStatus
from diffbench.store import RunFiles, RunStore, claim_new_directory, find_resumable


@dataclass(frozen=True)
class EngineOptions:
    """How samples are executed; results agree within float tolerance whatever is chosen here."""

    prefix_sharing: bool = True
    max_memory_bytes: int | None = None
    chunk_tokens: int | None = None
    batch_size: int | None = None  # None: auto_batch_size (1 on CPU)
    device_map: str | None = None  # "auto": accelerate spreads a model over the visible GPUs
    precision_audit: int = DEFAULT_AUDIT_SAMPLES  # bf16/fp16 runs: samples also scored in float32
    last_layer_rows: bool = True  # False: the last layer attends for every row (a benchmark's baseline)

    def as_manifest(self) -> dict[str, object]:
        return {"prefix_sharing": self.prefix_sharing, "chunk_tokens_requested": self.chunk_tokens}


@dataclass(frozen=True)
class RunOutcome:
    directory: Path
    resumed_records: int
    new_records: int
    main: bool = True  # False on torchrun ranks other than 0, which leave reports to rank 0


class Scoring(Protocol):
    """One loaded model's scoring of its pending units, as the task sets it up."""

    settings: dict[str, object]  # the manifest's engine entry: memory plan, chunk and batch size

    def records(self) -> Iterator[Any]:
        """A record per unit (a ``Record``, or the attention pass's), yielded as soon as it is finished."""
        ...

    def throughput(self) -> dict[str, object]:
        """What the forward passes cost (the cost table's prefill rate), once the records are done."""
        ...


class ShardFiles(Protocol):
    """What every rank may do with a run's files: learn what is finished, append to its own shard."""

    def completed(self, model: str) -> set[str]:
        """The unit ids ``model`` has records for."""
        ...

    def append_to_shard(self, rank: int, record: Any) -> None:
        """A rank's durable append to its own file: ranks never write one file together."""
        ...


class RunLedger(ShardFiles, Protocol):
    """A run directory as rank 0 writes it: ``RunStore`` (manifest.json, records.jsonl) for niah and
    halluc, the attention pass's own files for it."""

    def refuse_mixed_settings(self, name: str, device: str, dtype: str, attn_implementation: str) -> None:
        """Refuse, before any load, to add records of ``name`` made another way than those already here."""
        ...

    def register_model(self, entry: Any) -> None: ...

    def record_engine(self, model: str, settings: dict[str, object]) -> None:
        """How the engine ran ``model`` (memory plan, chunk size, throughput)."""
        ...

    def append(self, record: Any) -> None:
        """One finished unit's record, fsynced before the next unit starts."""
        ...

    def merge_shards(self) -> int:
        """Move the ranks' shard records into the run, each once."""
        ...

    def finish(self, status: RunStatus, wall_seconds: float, peak_memory_mb: float | None) -> None: ...

    def close(self) -> None: ...


class Task(Protocol):
    """What one kind of run (niah, halluc, attention) adds to the loop: its spec, its files, its units and
    their scoring."""

    spec: Any  # a TaskSpec: its fingerprint names the run's sample set
    label: str  # the task's part of default run directory names
    precision_audit: bool  # whether bf16/fp16 runs also score their first units from float32 weights

    def check_model(self, prepared: PreparedModel) -> None:
        """Refuse a model the task cannot run, before the run directory is touched."""
        ...

    def choose_directory(
        self, out: Path | None, results_root: Path, model_texts: list[str], names: list[str]
    ) -> Path:
        """The run directory: --out, a resumable one, or a new one (rank 0 only)."""
        ...

    def open_ledger(self, directory: Path, model_texts: list[str], command: list[str]) -> RunLedger:
        """Open (create or resume) the run's files for writing (rank 0 only)."""
        ...

    def shard_files(self, directory: Path) -> ShardFiles:
        """The run's files as another torchrun rank sees them."""
        ...

    def build_units(self, ledger: Any, prepared: PreparedModel) -> None:
        """Generate and store this tokenizer's units unless the run holds them (rank 0, before any load)."""
        ...

    def units(self, files: Any, prepared: PreparedModel) -> list[Any]:
        """This tokenizer's stored units, in run order."""
        ...

    def unit_id(self, unit: Any) -> str:
        """The sample id the unit's record carries (what resume skips)."""
        ...

    def scoring(
        self, loaded: LoadedModel, pending: list[Any], run_id: str, options: EngineOptions
    ) -> Scoring:
        """How ``loaded`` scores ``pending``."""
        ...


class StoredTask:
    """The run directory of niah and halluc (store.py): manifest.json and records.jsonl, found again by
    spec and models, so rerunning a command resumes it."""

    spec: Any
    label: str

    def check_model(self, prepared: PreparedModel) -> None:
        """Every model niah and halluc can load, they can run."""

    def choose_directory(
        self, out: Path | None, results_root: Path, model_texts: list[str], names: list[str]
    ) -> Path:
        return (
            out
            or find_resumable(results_root, self.spec, model_texts)
            or default_run_directory(results_root, self.label, names)
        )

    def open_ledger(self, directory: Path, model_texts: list[str], command: list[str]) -> RunStore:
        return RunStore.open(directory, self.spec, directory.name, model_texts, command)

    def shard_files(self, directory: Path) -> RunFiles:
        return RunFiles(directory)


def default_run_directory(root: Path, task: str, model_names: list[str]) -> Path:
    """A new run directory under ``root``, created here: runs started in the same second get -2, -3."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    label = "+".join(re.sub(r"[^\w.-]+", "-", name) for name in model_names)[:80]
    return claim_new_directory(root, f"{stamp}_{task}_{label}")


def peak_memory_mb(device: Any, every_gpu: bool = False) -> float:
    """Peak resident memory of this process (CPU) or peak allocated CUDA memory, in MiB; with
    ``every_gpu`` (a model spread by --device-map) the sum over the visible GPUs.

    On Linux the peak is VmHWM: ru_maxrss survives exec, so a process started by a large parent
    (pytest, an IDE) would report the parent's size instead of its own.
    """
    if device.type == "cuda":
        import torch

        devices = range(torch.cuda.device_count()) if every_gpu else [device]
        return sum(float(torch.cuda.max_memory_allocated(d)) for d in devices) / 2**20
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def unique_names(names: list[str]) -> list[str]:
    """Model names, with #2, #3 added to repeats so records of different models never mix."""
    seen: dict[str, int] = {}
    result = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        result.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return result


def resolve_named_refs(model_texts: list[str]) -> list[ModelRef]:
    """Every --model resolved, repeats renamed name#2, name#3 so their records never mix."""
    refs = [resolve_model_ref(text) for text in model_texts]
    names = unique_names([ref.name for ref in refs])
    return [
        ref if ref.name == name else type(ref)(ref.text, name, ref.kind, ref.location)
        for ref, name in zip(refs, names, strict=True)
    ]


def run_task(
    task: Task,
    model_texts: list[str],
    out: Path | None,
    results_root: Path,
    device_choice: str,
    dtype_choice: str,
    command: list[str],
    on_event: EventHook,
    options: EngineOptions | None = None,
) -> RunOutcome:
    """Run every model on the task's units into a (possibly resumed) run directory.

    ``on_event`` receives Status, Planned, ModelStarted and UnitDone events (``events.py``), which the
    CLI turns into a progress bar; the loop itself never prints.
    """
    refs = resolve_named_refs(model_texts)
    device = resolve_device(rank_device(device_choice))
    dtype = resolve_dtype(dtype_choice, device)
    options = options or EngineOptions()

    # Everything that can refuse the run happens before the run directory is touched, so a corrected
    # command can reuse the same --out.
    on_event(Status(f"preparing {len(refs)} model(s)"))
    prepared = [prepare_model(ref, task.spec.rope_scaling, max(task.spec.lengths)) for ref in refs]
    for item in prepared:
        task.check_model(item)

    ranks = join_ranks(device)
    return _run_ranked(
        task, prepared, model_texts, out, results_root, command, on_event, options, ranks, device, dtype
    )


def _run_ranked(
    task: Task,
    prepared: list[PreparedModel],
    model_texts: list[str],
    out: Path | None,
    results_root: Path,
    command: list[str],
    on_event: EventHook,
    options: EngineOptions,
    ranks: Ranks,
    device: Any,
    dtype: Any,
) -> RunOutcome:
    """The run on one rank: rank 0 owns the directory; every rank scores its share of what is left."""
    directory = None
    if ranks.main:
        names = [p.ref.name for p in prepared]
        directory = task.choose_directory(out, results_root, model_texts, names)
    directory = ranks.from_main(directory)
    assert directory is not None  # rank 0 always chooses one
    run_id = directory.name
    store = task.open_ledger(directory, model_texts, command) if ranks.main else None
    files: ShardFiles = store or task.shard_files(directory)
    started = time.perf_counter()
    resumed = new = 0
    status: RunStatus = "failed"
    try:
        if store is not None:
            for item in prepared:
                on_event(Status(f"building samples for {item.ref.name}"))
                task.build_units(store, item)
        ranks.barrier()  # the units are on disk for every rank
        work: list[tuple[PreparedModel, list[Any]]] = []
        for item in prepared:
            units = task.units(files, item)
            done = files.completed(item.ref.name)
            resumed += sum(task.unit_id(u) in done for u in units)
            work.append((item, ranks.shard([u for u in units if task.unit_id(u) not in done])))
        _refuse_mixed_settings(store, ranks, work, device, dtype)
        on_event(Planned(sum(len(pending) for _, pending in work)))
        for item, pending in work:
            if pending:
                new += _run_model(
                    task, item, pending, store, files, ranks, run_id, on_event, options, device, dtype
                )
        peaks = ranks.gather(peak_memory_mb(device, bool(options.device_map)))
        new = sum(ranks.gather(new))
        ranks.barrier()  # every shard is complete
        if store is not None:
            store.merge_shards()
        status = "complete"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        if store is not None:
            store.finish(
                status,
                time.perf_counter() - started,
                max(peaks) if status == "complete" else peak_memory_mb(device, bool(options.device_map)),
            )
            store.close()
    return RunOutcome(directory=directory, resumed_records=resumed, new_records=new, main=ranks.main)


def _refuse_mixed_settings(
    store: RunLedger | None,
    ranks: Ranks,
    work: list[tuple[PreparedModel, list[Any]]],
    device: Any,
    dtype: Any,
) -> None:
    """Every model with work checked before any loads (device kind, dtype, kernel); every rank learns it."""
    refusal = None
    if store is not None:
        try:
            for item, pending in work:
                if pending:
                    attention = attention_implementation(device, dtype, item.config)
                    store.refuse_mixed_settings(item.ref.name, str(device), dtype_name(dtype), attention)
        except RunDirectoryError as error:
            refusal = str(error)
    refusal = ranks.from_main(refusal)
    if refusal is not None:
        raise RunDirectoryError(refusal)


def _run_model(
    task: Task,
    item: PreparedModel,
    pending: list[Any],
    store: RunLedger | None,
    files: ShardFiles,
    ranks: Ranks,
    run_id: str,
    on_event: EventHook,
    options: EngineOptions,
    device: Any,
    dtype: Any,
) -> int:
    """One model's pending units, loaded, scored and appended; its weights freed afterwards."""
    attention = attention_implementation(device, dtype, item.config)
    audit: PrecisionAudit | None = None
    # Rank 0 audits its own first units; a model spread by --device-map may not fit in float32.
    wants_audit = task.precision_audit and needs_audit(dtype, options.precision_audit)
    if store is not None and not options.device_map and wants_audit:
        on_event(Status(f"precision audit: {item.ref.name} in float32"))
        audit = float32_reference(
            item,
            device,
            pending[: options.precision_audit],
            lambda reference, subset: task.scoring(reference, subset, run_id, options).records(),
            dtype_name(dtype),
        )
    on_event(Status(f"loading {item.ref.name}"))
    loaded = load_weights(item, device, dtype, attention, options.device_map)
    scoring = task.scoring(loaded, pending, run_id, options)
    settings = {**options.as_manifest(), **scoring.settings}
    if store is not None:
        store.register_model(loaded.entry)
        store.record_engine(loaded.entry.name, settings)
    on_event(ModelStarted(f"{loaded.entry.name} ({loaded.entry.variant}, {dtype_name(dtype)}, {device})"))
    new = 0
    for record in scoring.records():
        if ranks.world == 1 and store is not None:
            store.append(record)
        else:
            files.append_to_shard(ranks.rank, record)
        new += 1
        on_event(UnitDone(record))
        if audit is not None:
            audit.observe(record.sample_id, record.answer_logprob, record.correct)
    if store is not None:  # the cost table's throughput: this session's forward passes
        checked = {"precision_audit": audit.as_manifest()} if audit is not None else {}
        store.record_engine(loaded.entry.name, {**settings, **scoring.throughput(), **checked})
    del loaded, scoring
    gc.collect()
    if device.type == "cuda":  # hand the freed weights and caches back before the next model loads
        import torch

        torch.cuda.empty_cache()
    return new
