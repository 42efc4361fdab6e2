"""Run a task spec over one or more models, appending a record per finished sample.

Every model is resolved and checked (config, causal LM, context window, tokenizer) before any
weights load, so a typo in the last --model fails in a second, not after the first model's run.
All models run the same logical samples; each tokenizer gets its own token-exact copy.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import gc
import re
import resource
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffbench.engine.distributed import Ranks, join_ranks, rank_device
from diffbench.engine.memory import MemoryPlan, auto_batch_size, kv_bytes_per_token, plan_memory
from diffbench.engine.precision import DEFAULT_AUDIT_SAMPLES, float32_reference, needs_audit
from diffbench.engine.shared_prefill import Generation, PromptJob, SharedPrefixEngine
from diffbench.engine.teacher_forcing import AnswerScore
from diffbench.errors import RunDirectoryError
from diffbench.haystack.sources import load_source
from diffbench.models.device import attention_implementation, dtype_name, resolve_device, resolve_dtype
from diffbench.models.load import (
    LoadedModel,
    ModelRef,
    PreparedModel,
    load_weights,
    prepare_model,
    resolve_model_ref,
)
from diffbench.scoring import answer_ends, contains_answer, ruler_all, ruler_part
from diffbench.specs import NeedleResult, NiahSpec, Record, Sample
from diffbench.store import RunFiles, RunStore, claim_new_directory, find_resumable
from diffbench.tasks.niah import generate_samples, sample_ids


@dataclass(frozen=True)
class EngineOptions:
    """How samples are executed; results agree within float tolerance whatever is chosen here."""

    prefix_sharing: bool = True
    max_memory_bytes: int | None = None
    chunk_tokens: int | None = None
    batch_size: int | None = None  # None: auto_batch_size (1 on CPU)
    device_map: str | None = None  # "auto": accelerate spreads a model over the visible GPUs
    precision_audit: int = DEFAULT_AUDIT_SAMPLES  # bf16/fp16 runs: samples also scored in float32

    def as_manifest(self) -> dict[str, object]:
        return {"prefix_sharing": self.prefix_sharing, "chunk_tokens_requested": self.chunk_tokens}


@dataclass(frozen=True)
class RunOutcome:
    directory: Path
    resumed_records: int
    new_records: int
    main: bool = True  # False on torchrun ranks other than 0, which leave reports to rank 0


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


def value_ended(tokenizer: Any, sample: Sample, scored: AnswerScore, start: int, end: int) -> bool:
    """Whether the greedy token after answer tokens [start, end) leaves the value ended (not 3943425…5)."""
    following = scored.following(end)
    return following is None or answer_ends(tokenizer, list(sample.answer_ids[start:end]), following)


def record_for(
    loaded: LoadedModel, sample: Sample, spec: NiahSpec, run_id: str, scored: AnswerScore, seconds: float
) -> Record:
    """Teacher-forced verdict always; with spec.generate the greedy text scored by RULER's rules instead.

    Under the answer-boundary rule (``spec.answer_boundary``) a teacher-forced answer counts only when
    the greedy token after it does not extend it, and a gold string in the text only at word bounds.
    A multi-needle record is correct when every asked value is retrieved (RULER's ``all`` = 1), and
    carries the recall (the fraction retrieved) and each needle's placement and result.
    """
    boundary = spec.answer_boundary
    tokenizer = loaded.tokenizer
    prediction = None
    all_score = part_score = None
    golds = sample.answers or [sample.answer]
    spans = sample.answer_value_spans or [(0, len(sample.answer_ids))]
    values = [scored.span(start, end) for start, end in spans]
    ended = [value_ended(tokenizer, sample, scored, *span) if boundary else None for span in spans]
    forced = [greedy and end is not False for (_, greedy), end in zip(values, ended, strict=True)]
    greedy_exact = all(forced)  # every value greedy (given the teacher-forced connectors) and ended
    answer_ended = None if not boundary else all(end is not False for end in ended)
    if spec.generate:
        prediction = tokenizer.decode(scored.generated_ids or [], skip_special_tokens=True).strip()
        all_score = ruler_all(prediction, golds, boundary)
        part_score = ruler_part(prediction, golds, boundary)
        correct, score = all_score == 1.0, all_score
    else:
        correct, score = greedy_exact, float(greedy_exact)
    answer_logprob = scored.answer_logprob
    recall = needles = None
    if sample.needles is not None and sample.answer_value_spans is not None:
        answer_logprob = sum(logprob for logprob, _ in values)  # the values' tokens, not the connectors
        found = forced
        if prediction is not None:
            found = [contains_answer(prediction, gold, boundary) for gold in golds]
        else:
            all_score, part_score = sum(found) / len(found), float(any(found))
        recall = sum(found) / len(found)
        needles = [
            NeedleResult(
                **needle.model_dump(),
                retrieved=None if needle.query is None else found[needle.query],
                logprob=None if needle.query is None else round(values[needle.query][0], 6),
            )
            for needle in sample.needles
        ]
    return Record(
        run_id=run_id,
        sample_id=sample.sample_id,
        task=sample.task,
        model=loaded.entry.name,
        variant=loaded.entry.variant,
        target_length=sample.target_length,
        prompt_tokens=sample.prompt_tokens,
        depth=sample.depth,
        sample_index=sample.sample_index,
        needle_span=sample.needle_span,
        answer=sample.answer,
        prediction=prediction,
        correct=correct,
        score=score,
        scoring="generate" if spec.generate else "teacher_forced",
        greedy_exact=greedy_exact,
        answer_ended=answer_ended,
        answer_logprob=round(answer_logprob, 6),
        answer_tokens=len(sample.answer_ids),
        ruler_all=all_score,
        ruler_part=part_score,
        prompt_sha256=sample.prompt_sha256,
        device=loaded.entry.device,
        dtype=loaded.entry.dtype,
        seconds=round(seconds, 4),
        recall=recall,
        needles=needles,
    )


def fork_hint(sample: Sample) -> int:
    """Where the sample may stop sharing tokens with others: its first needle (the earliest one)."""
    if sample.needles:
        return min(needle.span[0] for needle in sample.needles)
    return sample.needle_span[0]


def score_samples(
    loaded: LoadedModel, samples: list[Sample], spec: NiahSpec, options: EngineOptions
) -> tuple[MemoryPlan, SharedPrefixEngine, Iterator[tuple[Sample, AnswerScore, float]]]:
    """The memory plan, the engine (its throughput, once done) and the samples' scores, each yielded as
    soon as it is done."""
    generation = None
    if spec.generate:
        eos = loaded.model.generation_config.eos_token_id
        generation = Generation(spec.answer_budget, loaded.tokenizer.eos_token_id if eos is None else eos)
    extra = spec.answer_budget if spec.generate else 0
    capacity = max(len(s.input_ids) + max(len(s.answer_ids), extra) for s in samples)
    memory = plan_memory(loaded.model, capacity, options.max_memory_bytes, options.chunk_tokens)
    device = next(loaded.model.parameters()).device
    batch = options.batch_size or auto_batch_size(device, memory)
    memory = dataclasses.replace(memory, batch_size=batch)
    engine = SharedPrefixEngine(loaded.model, memory.chunk_tokens, options.prefix_sharing, batch)
    jobs = [PromptJob(s.input_ids, s.answer_ids, fork_hint(s)) for s in samples]

    def results() -> Iterator[tuple[Sample, AnswerScore, float]]:
        for done in engine.run(jobs, generation):
            yield samples[done.position], done.score, done.seconds

    return memory, engine, results()


def scored_records(
    loaded: LoadedModel, samples: list[Sample], spec: NiahSpec, run_id: str, options: EngineOptions
) -> Iterator[tuple[Sample, Record]]:
    """Each sample with the record the run makes of it (the precision audit's float32 pass)."""
    _, _, results = score_samples(loaded, samples, spec, options)
    for sample, scored, seconds in results:
        yield sample, record_for(loaded, sample, spec, run_id, scored, seconds)


def samples_for(store: RunStore, spec: NiahSpec, prepared: PreparedModel, source: Any) -> list[Sample]:
    """The run's samples in this tokenizer: stored ones on resume, else generated and stored first."""
    fingerprint = prepared.tokenizer_fingerprint
    samples = store.load_samples(fingerprint)
    if samples is None:
        samples = generate_samples(spec, prepared.tokenizer, source)
        store.save_samples(fingerprint, samples)
    elif sorted(s.sample_id for s in samples) != sorted(sample_ids(spec)):
        raise RunDirectoryError(
            f"{str(store.samples_path(fingerprint))!r} does not hold this run's samples (a sample is "
            "missing, repeated or foreign); delete the file and rerun: the samples are generated again, "
            "identically"
        )
    return samples


def run_niah(
    spec: NiahSpec,
    model_texts: list[str],
    out: Path | None,
    results_root: Path,
    device_choice: str,
    dtype_choice: str,
    command: list[str],
    on_event: Callable[[str, Any], None],
    options: EngineOptions | None = None,
) -> RunOutcome:
    """Run every model on the spec's samples into a (possibly resumed) run directory.

    ``on_event`` receives ("plan", total), ("model", name), ("done", record) and ("status", text),
    which the CLI turns into a progress bar; the engine itself never prints.
    """
    source = load_source(spec.haystack, spec.seed)
    spec = spec.model_copy(update={"haystack_fingerprint": source.fingerprint})
    refs = resolve_named_refs(model_texts)
    device = resolve_device(rank_device(device_choice))
    dtype = resolve_dtype(dtype_choice, device)
    options = options or EngineOptions()

    # Everything that can refuse the run happens before the run directory is touched, so a corrected
    # command can reuse the same --out.
    on_event("status", f"preparing {len(refs)} model(s)")
    prepared = [prepare_model(ref, spec.rope_scaling, max(spec.lengths)) for ref in refs]

    ranks = join_ranks(device)
    try:
        return _run_ranked(
            spec,
            prepared,
            model_texts,
            out,
            results_root,
            command,
            on_event,
            options,
            ranks,
            device,
            dtype,
            source,
        )
    finally:
        ranks.leave()


def _run_ranked(
    spec: NiahSpec,
    prepared: list[PreparedModel],
    model_texts: list[str],
    out: Path | None,
    results_root: Path,
    command: list[str],
    on_event: Callable[[str, Any], None],
    options: EngineOptions,
    ranks: Ranks,
    device: Any,
    dtype: Any,
    source: Any,
) -> RunOutcome:
    """The run on one rank: rank 0 owns the directory; every rank scores its share of what is left."""
    directory = None
    if ranks.main:
        directory = out or find_resumable(results_root, spec, model_texts)
        directory = directory or default_run_directory(
            results_root, spec.task, [p.ref.name for p in prepared]
        )
    directory = ranks.from_main(directory)
    assert directory is not None  # rank 0 always chooses one
    run_id = directory.name
    store = RunStore.open(directory, spec, run_id, model_texts, command) if ranks.main else None
    files = store or RunFiles(directory)
    started = time.perf_counter()
    resumed = new = 0
    status = "failed"
    try:
        if store is not None:
            for item in prepared:
                on_event("status", f"building samples for {item.ref.name}")
                samples_for(store, spec, item, source)
        ranks.barrier()  # the samples are on disk for every rank
        work: list[tuple[PreparedModel, list[Sample]]] = []
        for item in prepared:
            samples = files.load_samples(item.tokenizer_fingerprint) or []
            done = files.completed(item.ref.name)
            resumed += sum(s.sample_id in done for s in samples)
            work.append((item, ranks.shard([s for s in samples if s.sample_id not in done])))
        refusal = None
        if store is not None:  # every model with work, before any loads; every rank learns the verdict
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
        on_event("plan", sum(len(pending) for _, pending in work))
        for item, pending in work:
            if not pending:
                continue
            attention = attention_implementation(device, dtype, item.config)
            audit = None
            # Rank 0 audits its own first samples; a model spread by --device-map may not fit in float32.
            if store is not None and not options.device_map and needs_audit(dtype, options.precision_audit):
                on_event("status", f"precision audit: {item.ref.name} in float32")
                audit = float32_reference(
                    item,
                    device,
                    pending[: options.precision_audit],
                    lambda reference, subset: scored_records(reference, subset, spec, run_id, options),
                    dtype_name(dtype),
                )
            on_event("status", f"loading {item.ref.name}")
            loaded = load_weights(item, device, dtype, attention, options.device_map)
            memory, engine, results = score_samples(loaded, pending, spec, options)
            settings = {
                **options.as_manifest(),
                **memory.as_manifest(),
                "kv_bytes_per_token": kv_bytes_per_token(loaded.model),
            }
            if store is not None:
                store.register_model(loaded.entry)
                store.record_engine(loaded.entry.name, settings)
            on_event("model", f"{loaded.entry.name} ({loaded.entry.variant}, {dtype_name(dtype)}, {device})")
            for sample, scored, seconds in results:
                record = record_for(loaded, sample, spec, run_id, scored, seconds)
                if ranks.world == 1 and store is not None:
                    store.append(record)
                else:
                    files.append_to_shard(ranks.rank, record)
                new += 1
                on_event("done", record)
                if audit is not None:
                    audit.observe(record.sample_id, record.answer_logprob, record.correct)
            if store is not None:  # the cost table's throughput: this session's forward passes
                checked = {"precision_audit": audit.as_manifest()} if audit is not None else {}
                store.record_engine(loaded.entry.name, {**settings, **engine.prefill_rate(), **checked})
            del loaded, engine, results
            gc.collect()
            if device.type == "cuda":  # hand the freed weights and caches back before the next model loads
                import torch

                torch.cuda.empty_cache()
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
