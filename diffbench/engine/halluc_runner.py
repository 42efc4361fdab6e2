"""The halluc task: hallucination-probe items (one unit per item × mode) and how a loaded model scores
them; ``engine/loop.py`` runs it, with niah's store, manifest, resume and torchrun sharding.

Each item is one prompt: its candidates are teacher-forced on top of one prefill of the prompt (the
engine's shared-prefix planner puts them on one trunk), and generation decodes greedily after a
teacher-forced pass of the gold answer. Nothing builds a length × vocabulary logits tensor. A record
is written per (model, item, mode) as soon as it is finished; a rerun resumes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffbench.engine.loop import EngineOptions, StoredTask
from diffbench.engine.shared_prefill import PromptJob
from diffbench.engine.teacher_forcing import AnswerScore
from diffbench.specs import HallucSpec, Record
from diffbench.store import RunFiles, RunStore, atomic_write_text, iter_record_lines
from diffbench.tasks.probes.core import ProbeItem
from diffbench.tasks.probes.registry import PROBES, modes_of
from diffbench.tasks.probes.scoring import (
    ForcedOutputs,
    GeneratedOutputs,
    Verdict,
    run_lexicon,
    score_forced,
    score_generated,
)

MODE_SUFFIX = {"generate": "gen", "forced": "fc"}


def items_path(files: RunFiles, fingerprint: str) -> Path:
    return files.directory / "samples" / f"{fingerprint}.probes.jsonl"


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

    def score(self, item: ProbeItem, modes: list[str]) -> dict[str, Any]:
        """The item in each of ``modes``, on one prefill of its prompt: forced-choice candidates (and the
        closed-book prompt's) teacher-forced, and the greedy text (with the gold's score) after it.

        Both modes' branches sit on one trunk, so `--mode both` prefills each prompt once, not twice.
        """
        from diffbench.engine.shared_prefill import Generation, SharedPrefixEngine

        forced = self._forced_jobs(item) if "forced" in modes else []
        generated = self._generate_jobs(item) if "generate" in modes else []
        jobs = forced + generated
        generation = None
        if generated:
            eos = self.model.generation_config.eos_token_id
            generation = Generation(item.max_new_tokens, self.tokenizer.eos_token_id if eos is None else eos)
        engine = SharedPrefixEngine(self.model, self.chunk_tokens, True, 1)
        scores: list[Any] = [None] * len(jobs)
        for done in engine.run(jobs, generation):
            scores[done.position] = done.score
        outputs: dict[str, Any] = {}
        if forced:
            outputs["forced"] = self._forced_outputs(item, scores[: len(forced)])
        if generated:
            outputs["generate"] = self._generated_outputs(scores[len(forced) :])
        return outputs

    def _forced_jobs(self, item: ProbeItem) -> list[PromptJob]:
        """Every candidate after the prompt, and the first ones after the closed-book prompt (P4, P5)."""
        prompt = item.input_ids
        jobs = [PromptJob(prompt, ids, len(prompt) - 1, decode=False) for ids in item.candidate_ids]
        closed_count = PROBES[item.probe].closed_book_candidates
        closed = item.closed_book_ids
        if closed is not None and closed_count:
            asked = item.candidate_ids[:closed_count]
            jobs += [PromptJob(closed, ids, len(closed) - 1, decode=False) for ids in asked]
        return jobs

    def _forced_outputs(self, item: ProbeItem, scores: list[Any]) -> ForcedOutputs:
        count = len(item.candidate_ids)
        logprobs = [s.answer_logprob for s in scores]
        return ForcedOutputs(
            logprobs=logprobs[:count],
            tokens=[len(ids) for ids in item.candidate_ids],
            closed_logprobs=logprobs[count:] or None,
            gold_greedy=bool(scores[0].greedy_exact) if scores else False,
        )

    def _generate_jobs(self, item: ProbeItem) -> list[PromptJob]:
        """Greedy text after the prompt (and after the closed-book prompt for P4), the gold teacher-forced."""
        gold = item.candidate_ids[0] if item.candidate_ids else self._answer_ids(item)
        jobs = [PromptJob(item.input_ids, gold, len(item.input_ids) - 1)]
        if PROBES[item.probe].closed_book_text and item.closed_book_ids is not None:
            jobs.append(PromptJob(item.closed_book_ids, gold, len(item.closed_book_ids) - 1))
        return jobs

    def _generated_outputs(self, scores: list[Any]) -> tuple[GeneratedOutputs, Any]:
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


def score_item(
    engine: ProbeEngine, item: ProbeItem, modes: list[str], lexicon: Any, judge: Any
) -> dict[str, tuple[Verdict, Any]]:
    """The item in each of ``modes``: its verdict and the teacher-forced score of its gold answer."""
    outputs = engine.score(item, modes)
    results: dict[str, tuple[Verdict, Any]] = {}
    if "forced" in outputs:
        forced = outputs["forced"]
        gold = AnswerScore(forced.logprobs[0] if forced.logprobs else 0.0, forced.gold_greedy)
        results["forced"] = (score_forced(item, forced), gold)
    if "generate" in outputs:
        generated, gold_score = outputs["generate"]
        if item.probe == "dataset":
            from diffbench.tasks.probes.dataset import score_dataset

            verdict = score_dataset(item, generated.text)
        else:
            verdict = score_generated(item, generated, lexicon.get(item))
        verdict.details["output_ids"] = generated.ids  # the exact tokens, for halluc --attn
        if judge is not None and PROBES[item.probe].judged:
            from diffbench.judges.base import judge_item

            verdict.details["judge"] = judge_item(judge, item, verdict.prediction or "")
        results["generate"] = (verdict, gold_score)
    return results


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


Unit = tuple[ProbeItem, str]  # an item in one mode


@dataclass
class HallucScoring:
    """One loaded model's pending item × mode units, as records."""

    loaded: Any
    pending: list[Unit]
    run_id: str
    engine: ProbeEngine
    lexicon: LexiconCache
    judge: Any
    settings: dict[str, object]

    def records(self) -> Iterator[Record]:
        """An item's pending modes scored together (one prefill), a record per mode."""
        modes: dict[str, list[str]] = {}
        items: dict[str, ProbeItem] = {}
        for item, mode in self.pending:
            modes.setdefault(item.item_id, []).append(mode)
            items[item.item_id] = item
        for item_id, wanted in modes.items():
            item = items[item_id]
            began = time.perf_counter()
            results = score_item(self.engine, item, wanted, self.lexicon, self.judge)
            seconds = (time.perf_counter() - began) / len(wanted)
            for mode in wanted:
                verdict, gold = results[mode]
                yield make_record(self.loaded, item, mode, self.run_id, verdict, gold, seconds)

    def throughput(self) -> dict[str, object]:
        return {}


@dataclass
class HallucTask(StoredTask):
    """The hallucination probes (or a --dataset): every item in each of its modes."""

    spec: HallucSpec
    source: Any  # the filler text source
    judge: Any = None
    label: str = "halluc"
    precision_audit: bool = False
    items: dict[str, list[ProbeItem]] = field(default_factory=dict)  # per tokenizer, as loaded

    @classmethod
    def from_spec(cls, spec: HallucSpec) -> HallucTask:
        """The task with its filler loaded and fingerprinted into the spec, and its judge loaded."""
        from diffbench.haystack.sources import load_source

        source = load_source(spec.haystack, spec.seed)
        judge = None
        if spec.judge is not None:
            from diffbench.judges import load_judge

            judge = load_judge(spec.judge)
        return cls(spec.model_copy(update={"haystack_fingerprint": source.fingerprint}), source, judge)

    def build_units(self, store: RunStore, prepared: Any) -> None:
        items_for(store, self.spec, prepared, self.source)

    def units(self, files: RunFiles, prepared: Any) -> list[Unit]:
        path = items_path(files, prepared.tokenizer_fingerprint)
        items = [ProbeItem.model_validate(payload) for payload in iter_record_lines(path)]
        self.items[prepared.tokenizer_fingerprint] = items
        return [(item, mode) for item in items for mode in modes_of(item.probe, self.spec.mode)]

    def unit_id(self, unit: Unit) -> str:
        item, mode = unit
        return f"{item.item_id}#{MODE_SUFFIX[mode]}"

    def scoring(self, loaded: Any, pending: list[Unit], run_id: str, options: EngineOptions) -> HallucScoring:
        from diffbench.engine.memory import plan_memory

        capacity = max(len(i.input_ids) + max(i.max_new_tokens, 1) for i, _ in pending)
        memory = plan_memory(loaded.model, capacity, options.max_memory_bytes, options.chunk_tokens)
        engine = ProbeEngine(loaded.model, loaded.tokenizer, memory.chunk_tokens)
        # the lexicon spans every item of this tokenizer, not only the pending ones, as before a resume
        items = self.items.get(loaded.entry.tokenizer_fingerprint) or [i for i, _ in pending]
        return HallucScoring(
            loaded, pending, run_id, engine, LexiconCache(items), self.judge, memory.as_manifest()
        )
