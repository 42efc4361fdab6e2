"""The NIAH task: its samples (one per depth × length × index, token-exact in each tokenizer) and how a
loaded model scores them through the shared-prefix engine. ``engine/loop.py`` runs it.

Every model runs the same logical samples; each tokenizer gets its own token-exact copy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from diffbench.engine.loop import EngineOptions, StoredTask
from diffbench.engine.memory import MemoryPlan, auto_batch_size, kv_bytes_per_token, plan_memory
from diffbench.engine.shared_prefill import Generation, PromptJob, SharedPrefixEngine
from diffbench.engine.teacher_forcing import AnswerScore
from diffbench.errors import RunDirectoryError
from diffbench.haystack.sources import load_source
from diffbench.models.load import LoadedModel, PreparedModel
from diffbench.scoring import answer_ends, contains_answer, ruler_all, ruler_part
from diffbench.specs import NeedleResult, NiahSpec, Record, Sample
from diffbench.store import RunFiles
from diffbench.tasks.niah import generate_samples, sample_ids


def value_ended(tokenizer: Any, sample: Sample, scored: AnswerScore, start: int, end: int) -> bool:
    """Whether the greedy token after answer tokens [start, end) leaves the value ended (not 3943425…5)."""
    following = scored.following(end)
    return following is None or answer_ends(tokenizer, list(sample.answer_ids[start:end]), following)


def record_for(
    loaded: LoadedModel,
    sample: Sample,
    spec: NiahSpec,
    run_id: str,
    scored: AnswerScore,
    seconds: float,
    details: dict[str, Any] | None = None,
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
        if spec.multi_needle:  # recall over the asked values; a character needle is one value: none
            recall = sum(found) / len(found)
            if prediction is None:
                all_score, part_score = recall, float(any(found))
        if spec.kind == "vartrack" and prediction is not None:  # precision: the decoy chains' variables named
            from diffbench.tasks.variable_tracking import wrong_variables

            details = {**(details or {}), "wrong_variables": wrong_variables(prediction, sample)}
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
        details=details,
    )


ASSOCIATION_INSTRUCTION = "Answer briefly."


def association_knowledge(
    loaded: LoadedModel, samples: list[Sample], spec: NiahSpec
) -> dict[str, dict[str, Any]]:
    """Per landmark of the character needles in ``samples``: whether the model names its city with no
    document (teacher-forced, every token the argmax) and the city's log-prob, in the run's frame.

    A non-literal question needs that association; where the model lacks it, a miss says nothing about
    retrieval. NoLiMa keeps only needles whose associations the model knows; diffbench keeps every
    needle and records this beside each verdict (``details.association``), so reports can split on it.
    """
    from diffbench.engine.teacher_forcing import score_answer
    from diffbench.haystack.fit import SegmentEncoder
    from diffbench.tasks.character_needles import association_in, knowledge_question
    from diffbench.tasks.prompt import prompt_frame, use_chat_template

    encoder = SegmentEncoder(loaded.tokenizer)
    chat = use_chat_template(loaded.tokenizer, spec.chat_template)
    known: dict[str, dict[str, Any]] = {}
    for sample in samples:
        pair = association_in(sample.needle_text)
        if pair is None or pair[0] in known:
            continue
        landmark, city = pair
        question, answer_prefix = knowledge_question(landmark)
        prefix, suffix = prompt_frame(
            loaded.tokenizer, encoder, ASSOCIATION_INSTRUCTION, question, answer_prefix, chat
        )
        scored = score_answer(loaded.model, prefix + suffix, encoder.encode(" " + city))
        known[landmark] = {
            "landmark": landmark,
            "city": city,
            "known": scored.greedy_exact,
            "logprob": round(scored.answer_logprob, 6),
        }
    return known


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
    engine = SharedPrefixEngine(
        loaded.model, memory.chunk_tokens, options.prefix_sharing, batch, options.last_layer_rows
    )
    jobs = [PromptJob(s.input_ids, s.answer_ids, fork_hint(s)) for s in samples]

    def results() -> Iterator[tuple[Sample, AnswerScore, float]]:
        for done in engine.run(jobs, generation):
            yield samples[done.position], done.score, done.seconds

    return memory, engine, results()


def samples_for(store: RunFiles, spec: NiahSpec, prepared: PreparedModel, source: Any) -> list[Sample]:
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


@dataclass
class NiahScoring:
    """One loaded model's samples through the shared-prefix engine, as records."""

    loaded: LoadedModel
    spec: NiahSpec
    run_id: str
    engine: SharedPrefixEngine
    results: Iterator[tuple[Sample, AnswerScore, float]]
    settings: dict[str, object]
    associations: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # character needles

    def records(self) -> Iterator[Record]:
        from diffbench.tasks.character_needles import association_in

        for sample, scored, seconds in self.results:
            pair = association_in(sample.needle_text) if self.associations else None
            details = {"association": self.associations[pair[0]]} if pair else None
            yield record_for(self.loaded, sample, self.spec, self.run_id, scored, seconds, details)

    def throughput(self) -> dict[str, object]:
        return dict(self.engine.prefill_rate())


@dataclass
class NiahTask(StoredTask):
    """Needle-in-a-haystack: a sample per depth × length × index, scored teacher-forced or decoded."""

    spec: NiahSpec
    source: Any  # the haystack text source
    label: str = "niah"
    precision_audit: bool = True

    @classmethod
    def from_spec(cls, spec: NiahSpec) -> NiahTask:
        """The task with its haystack loaded and fingerprinted into the spec."""
        source = load_source(spec.haystack, spec.seed)
        return cls(spec.model_copy(update={"haystack_fingerprint": source.fingerprint}), source, spec.task)

    def build_units(self, store: RunFiles, prepared: PreparedModel) -> None:
        samples_for(store, self.spec, prepared, self.source)

    def units(self, files: RunFiles, prepared: PreparedModel) -> list[Sample]:
        return files.load_samples(prepared.tokenizer_fingerprint) or []

    def unit_id(self, unit: Sample) -> str:
        return unit.sample_id

    def scoring(
        self, loaded: LoadedModel, pending: list[Sample], run_id: str, options: EngineOptions
    ) -> NiahScoring:
        associations = {}
        if self.spec.needle_style != "magic":  # before the grid: a few dozen short prompts
            associations = association_knowledge(loaded, pending, self.spec)
        memory, engine, results = score_samples(loaded, pending, self.spec, options)
        settings = {**memory.as_manifest(), "kv_bytes_per_token": kv_bytes_per_token(loaded.model)}
        return NiahScoring(loaded, self.spec, run_id, engine, results, settings, associations)
