"""Run hallucination-probe items over models into a run directory (same store, manifest and resume as niah).

Each item is one prompt: its candidates are teacher-forced on top of one prefill of the prompt (the
engine's shared-prefix planner puts them on one trunk), and generation decodes greedily after a
teacher-forced pass of the gold answer. Nothing builds a length × vocabulary logits tensor. A record
is written per (model, item, mode) as soon as it is finished; a rerun resumes.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffbench.engine.runner import (
    EngineOptions,
    RunOutcome,
    default_run_directory,
    peak_memory_mb,
    resolve_named_refs,
)
from diffbench.engine.teacher_forcing import AnswerScore
from diffbench.specs import HallucSpec, Record
from diffbench.store import RunStore, atomic_write_text, find_resumable, iter_record_lines
from diffbench.tasks.probes.core import ProbeItem
from diffbench.tasks.probes.scoring import (
    ForcedOutputs,
    GeneratedOutputs,
    Verdict,
    has_forced,
    has_generate,
    run_lexicon,
    score_forced,
    score_generated,
)

MODE_SUFFIX = {"generate": "gen", "forced": "fc"}
JUDGED_PROBES = ("factsum", "factqa", "unanswerable", "dataset")


def item_modes(spec: HallucSpec, probe: str) -> list[str]:
    """The modes an item runs in: --mode, except that P1 only generates and P5 only scores likelihoods."""
    wanted = ["generate", "forced"] if spec.mode == "both" else [spec.mode]
    modes = [m for m in wanted if (has_generate(probe) if m == "generate" else has_forced(probe))]
    if not modes:
        modes = ["generate"] if has_generate(probe) else ["forced"]
    return modes


def items_path(store: RunStore, fingerprint: str) -> Path:
    return store.directory / "samples" / f"{fingerprint}.probes.jsonl"


def items_for(store: RunStore, spec: HallucSpec, prepared: Any, source: Any) -> list[ProbeItem]:
    """The run's items in this tokenizer: stored ones on resume, else generated and stored first."""
    path = items_path(store, prepared.tokenizer_fingerprint)
    if path.exists():
        return [ProbeItem.model_validate(payload) for payload in iter_record_lines(path)]
    if spec.dataset is not None:
        from diffbench.tasks.probes.dataset import dataset_items

        items = dataset_items(spec, prepared.tokenizer)
    else:
        from diffbench.tasks.probes import generate_items

        items = generate_items(spec, prepared.tokenizer, source)
    path.parent.mkdir(exist_ok=True)
    atomic_write_text(path, "".join(item.model_dump_json() + "\n" for item in items))
    return items


@dataclass
class ProbeEngine:
    """One loaded model's scoring of probe items through the shared-prefix engine."""

    model: Any
    tokenizer: Any
    chunk_tokens: int

    def _run(self, jobs: list[Any], generation: Any = None) -> list[Any]:
        from diffbench.engine.shared_prefill import SharedPrefixEngine

        engine = SharedPrefixEngine(self.model, self.chunk_tokens, True, 1)
        scores: list[Any] = [None] * len(jobs)
        for done in engine.run(jobs, generation):
            scores[done.position] = done.score
        return scores

    def forced(self, item: ProbeItem) -> ForcedOutputs:
        """Every candidate teacher-forced after the prompt (one prefill), and after the closed-book prompt."""
        from diffbench.engine.shared_prefill import PromptJob

        prompt = item.input_ids
        jobs = [PromptJob(prompt, ids, len(prompt) - 1) for ids in item.candidate_ids]
        closed_count = {"counterfactual": 2, "contrastive": 1}.get(item.probe, 0)
        closed = item.closed_book_ids
        if closed is not None and closed_count:
            jobs += [PromptJob(closed, ids, len(closed) - 1) for ids in item.candidate_ids[:closed_count]]
        scores = self._run(jobs)
        count = len(item.candidate_ids)
        logprobs = [s.answer_logprob for s in scores]
        return ForcedOutputs(
            logprobs=logprobs[:count],
            tokens=[len(ids) for ids in item.candidate_ids],
            closed_logprobs=logprobs[count:] or None,
            gold_greedy=bool(scores[0].greedy_exact) if scores else False,
        )

    def generate(self, item: ProbeItem) -> tuple[GeneratedOutputs, Any]:
        """Greedy text after the prompt (and after the closed-book prompt for P4), with the gold's score."""
        from diffbench.engine.shared_prefill import Generation, PromptJob

        gold = item.candidate_ids[0] if item.candidate_ids else self._answer_ids(item)
        jobs = [PromptJob(item.input_ids, gold, len(item.input_ids) - 1)]
        if item.probe == "counterfactual" and item.closed_book_ids is not None:
            jobs.append(PromptJob(item.closed_book_ids, gold, len(item.closed_book_ids) - 1))
        eos = self.model.generation_config.eos_token_id
        generation = Generation(item.max_new_tokens, self.tokenizer.eos_token_id if eos is None else eos)
        scores = self._run(jobs, generation)
        texts = [self.tokenizer.decode(s.generated_ids or [], skip_special_tokens=True) for s in scores]
        outputs = GeneratedOutputs(
            texts[0], texts[1] if len(texts) > 1 else None, list(scores[0].generated_ids or [])
        )
        return outputs, scores[0]

    def _answer_ids(self, item: ProbeItem) -> list[int]:
        from diffbench.haystack.fit import SegmentEncoder

        text = (" " if item.answer_prefix else "") + (item.answer or "unanswerable")
        return SegmentEncoder(self.tokenizer).encode(text)


def make_record(
    loaded: Any, item: ProbeItem, mode: str, run_id: str, verdict: Verdict, answer_score: Any, seconds: float
) -> Record:
    entry = loaded.entry
    gold_tokens = len(item.candidate_ids[0]) if item.candidate_ids else 0
    logprob = answer_score.answer_logprob if answer_score is not None else 0.0
    return Record(
        run_id=run_id,
        sample_id=f"{item.item_id}#{MODE_SUFFIX[mode]}",
        task=f"halluc/{item.probe}",
        model=entry.name,
        variant=entry.variant,
        target_length=item.target_length,
        prompt_tokens=item.prompt_tokens,
        depth=item.depth,
        sample_index=item.sample_index,
        needle_span=item.gold_span,
        answer=item.answer,
        prediction=verdict.prediction,
        correct=verdict.correct,
        score=round(verdict.score, 6),
        scoring="generate" if mode == "generate" else "teacher_forced",
        greedy_exact=bool(answer_score.greedy_exact) if answer_score is not None else False,
        answer_logprob=round(logprob, 6),
        answer_tokens=gold_tokens,
        ruler_all=None,
        ruler_part=None,
        prompt_sha256=item.prompt_sha256,
        device=entry.device,
        dtype=entry.dtype,
        seconds=round(seconds, 4),
        details=verdict.details,
    )


def score_unit(
    engine: ProbeEngine, item: ProbeItem, mode: str, lexicon: Any, judge: Any
) -> tuple[Verdict, Any]:
    """One item in one mode: its verdict and the teacher-forced score of its gold answer."""
    if mode == "forced":
        outputs = engine.forced(item)
        verdict = score_forced(item, outputs)
        return verdict, AnswerScore(outputs.logprobs[0] if outputs.logprobs else 0.0, outputs.gold_greedy)
    generated, gold_score = engine.generate(item)
    if item.probe == "dataset":
        from diffbench.tasks.probes.dataset import score_dataset

        verdict = score_dataset(item, generated.text)
    else:
        verdict = score_generated(item, generated, lexicon.get(item))
    verdict.details["output_ids"] = generated.ids  # the exact tokens, for halluc --attn
    if judge is not None and item.probe in JUDGED_PROBES:
        from diffbench.judges.base import judge_item

        verdict.details["judge"] = judge_item(judge, item, verdict.prediction or "")
    return verdict, gold_score


class LexiconCache:
    """The run's lexicon with each item's own names winning, built once per item."""

    def __init__(self, items: list[ProbeItem]) -> None:
        self.items = items
        self.table: dict[str, str] = {}
        for item in items:
            for alias, name in item.lexicon.items():
                self.table.setdefault(alias, name)

    def get(self, item: ProbeItem) -> Any:
        return run_lexicon([], {**self.table, **item.lexicon})


def run_halluc(
    spec: HallucSpec,
    model_texts: list[str],
    out: Path | None,
    results_root: Path,
    device_choice: str,
    dtype_choice: str,
    command: list[str],
    on_event: Callable[[str, Any], None],
    options: EngineOptions | None = None,
) -> RunOutcome:
    """Run every model on the spec's items; ``on_event`` gets niah's events ("plan", "model", "done", ...)."""
    from diffbench.engine.memory import plan_memory
    from diffbench.haystack.sources import load_source
    from diffbench.models.device import attention_implementation, dtype_name, resolve_device, resolve_dtype
    from diffbench.models.load import load_weights, prepare_model

    options = options or EngineOptions()
    source = load_source(spec.haystack, spec.seed)
    spec = spec.model_copy(update={"haystack_fingerprint": source.fingerprint})
    judge = None
    if spec.judge is not None:
        from diffbench.judges import load_judge

        judge = load_judge(spec.judge)
    refs = resolve_named_refs(model_texts)
    device = resolve_device(device_choice)
    dtype = resolve_dtype(dtype_choice, device)
    on_event("status", f"preparing {len(refs)} model(s)")
    prepared = [prepare_model(ref, spec.rope_scaling, max(spec.lengths)) for ref in refs]
    directory = out or find_resumable(results_root, spec, model_texts)
    directory = directory or default_run_directory(results_root, "halluc", [p.ref.name for p in prepared])
    run_id = directory.name
    store = RunStore.open(directory, spec, run_id, model_texts, command)
    started = time.perf_counter()
    resumed = new = 0
    status = "failed"
    try:
        work = []
        for item in prepared:
            on_event("status", f"building items for {item.ref.name}")
            items = items_for(store, spec, item, source)
            done = store.completed(item.ref.name)
            units = [(i, m) for i in items for m in item_modes(spec, i.probe)]
            pending = [(i, m) for i, m in units if f"{i.item_id}#{MODE_SUFFIX[m]}" not in done]
            resumed += len(units) - len(pending)
            work.append((item, items, pending))
        for item, _, pending in work:  # every model with work, before any loads
            if pending:
                attention = attention_implementation(device, dtype, item.config)
                store.refuse_mixed_settings(item.ref.name, str(device), dtype_name(dtype), attention)
        on_event("plan", sum(len(pending) for _, _, pending in work))
        for item, items, pending in work:
            if not pending:
                continue
            attention = attention_implementation(device, dtype, item.config)
            on_event("status", f"loading {item.ref.name}")
            loaded = load_weights(item, device, dtype, attention, options.device_map)
            capacity = max(len(i.input_ids) + max(i.max_new_tokens, 1) for i, _ in pending)
            memory = plan_memory(loaded.model, capacity, options.max_memory_bytes, options.chunk_tokens)
            store.register_model(loaded.entry)
            store.record_engine(loaded.entry.name, {**options.as_manifest(), **memory.as_manifest()})
            on_event("model", f"{loaded.entry.name} ({loaded.entry.variant}, {dtype_name(dtype)}, {device})")
            engine = ProbeEngine(loaded.model, loaded.tokenizer, memory.chunk_tokens)
            lexicon = LexiconCache(items)
            for probe_item, mode in pending:
                began = time.perf_counter()
                verdict, gold = score_unit(engine, probe_item, mode, lexicon, judge)
                record = make_record(
                    loaded, probe_item, mode, run_id, verdict, gold, time.perf_counter() - began
                )
                store.append(record)
                new += 1
                on_event("done", record)
            del loaded, engine
            gc.collect()
        status = "complete"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        store.finish(status, time.perf_counter() - started, peak_memory_mb(device))
        store.close()
    return RunOutcome(directory=directory, resumed_records=resumed, new_records=new)
