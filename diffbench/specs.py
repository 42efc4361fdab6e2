"""Typed records for everything diffbench stores or plots.

A run is ``NiahSpec`` + models → ``Sample`` (per tokenizer) → ``Record`` (per model and sample),
described by a ``RunManifest``. All of them are plain JSON on disk, so
``pandas.read_json("records.jsonl", lines=True)`` reads results without importing diffbench.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from diffbench.errors import UsageError

SCHEMA_VERSION = 1

ChatTemplateMode = Literal["auto", "on", "off"]
RopeScaling = Literal["none", "dynamic", "yarn"]
RunStatus = Literal["running", "complete", "failed", "interrupted"]
NeedleKind = Literal["multikey", "multivalue", "multiquery", "vartrack"]
NeedleValues = Literal["numbers", "words", "uuids"]
NeedleStyle = Literal["magic", "literal", "nonliteral"]
# Fields added after the first runs, with the defaults that keep the first runs' samples: left out of
# the fingerprint at these values, so a spec keeps the fingerprint it had before they existed (old runs
# still resume).
LATER_FIELD_DEFAULTS: dict[str, object] = {
    "needles": 1,
    "queries": 1,
    "kind": "multikey",
    "values": "numbers",
    "needle_style": "magic",
    "distractor": False,
    "hops": 4,
}


class NeedleSpec(BaseModel):
    """What is hidden and asked. ``{key}`` and ``{value}`` are filled per sample when present."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    needle: str = "The special magic number for {key} is {value}."
    question: str = "What is the special magic number for {key} mentioned in the document?"
    answer: str = "{value}"
    answer_prefix: str = "The special magic number for {key} mentioned in the document is"
    instruction: str = (
        "A long document follows. Hidden in it is a special magic number. "
        "Read it carefully: you will be asked for the number afterwards."
    )


class NiahSpec(BaseModel):
    """Everything that decides which samples a needle-in-a-haystack run contains and how they are scored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task: Literal["niah"] = "niah"
    lengths: list[int]
    depths: list[float]
    samples_per_cell: int = Field(1, ge=1)
    seed: int = 0
    haystack: str = "prose"
    haystack_fingerprint: str = ""
    haystack_per_sample: bool = False
    needle: NeedleSpec = NeedleSpec()
    chat_template: ChatTemplateMode = "auto"
    answer_budget: int = Field(32, ge=1)
    generate: bool = False
    rope_scaling: RopeScaling = "none"
    needles: int = Field(default=1, ge=1)  # N needles in each prompt (the Diff paper's N)
    queries: int = Field(default=1, ge=1)  # R of them asked (the Diff paper's R)
    # RULER's variant: distinct keys (multikey/multiquery), one key (multivalue), or chains of
    # assignments to follow (vartrack: ``needles`` chains, one asked, of ``hops`` hops; queries = hops + 1)
    kind: NeedleKind = "multikey"
    values: NeedleValues = "numbers"  # 7-digit numbers, words or UUIDs
    # magic-number needles, or a character at a landmark asked literally or through the landmark's city
    # (tasks/character_needles.py)
    needle_style: NeedleStyle = "magic"
    distractor: bool = False  # character needles: also a sentence naming the question's key, no character
    hops: int = Field(default=4, ge=1)  # vartrack: assignments after a chain's first (other kinds: unused)
    # An answer counts only when it ends (scoring.py): the token after it must not extend it, and a
    # gold string inside a longer word or number is not found. Runs stored before the rule read False.
    answer_boundary: bool = True

    @property
    def multi_needle(self) -> bool:
        """Whether samples leave the single-needle path (whose samples predate these fields)."""
        if self.needle_style != "magic":  # N character needles: one asked, the others its decoys
            return False
        several = self.needles > 1 or self.queries > 1 or self.values != "numbers"
        return several or self.kind in ("multivalue", "vartrack")

    def fingerprint(self) -> str:
        """A short hash that identifies the sample set and scoring; a resumed run must match it."""
        payload = self.model_dump(mode="json")
        for name, default in LATER_FIELD_DEFAULTS.items():
            if payload[name] == default:
                del payload[name]
        if not payload["answer_boundary"]:  # a run stored before the rule keeps its fingerprint
            del payload["answer_boundary"]
        return stable_hash(payload)[:16]


HallucMode = Literal["generate", "forced", "both"]


class HallucSpec(BaseModel):
    """Everything that decides the items of a hallucination-probe run (`diffbench halluc`) and their scoring.

    Same field names as NiahSpec where the meaning is the same (lengths, depths, samples_per_cell, seed,
    haystack), so reports that describe a run read either kind.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    task: Literal["halluc"] = "halluc"
    probes: list[str]
    lengths: list[int]
    depths: list[float] = [0.0, 25.0, 50.0, 75.0, 100.0]
    samples_per_cell: int = Field(100, ge=1)  # items per probe and length; depths cycle over them
    seed: int = 0
    mode: HallucMode = "both"
    haystack: str = "prose"
    haystack_fingerprint: str = ""
    chat_template: ChatTemplateMode = "auto"
    rope_scaling: RopeScaling = "none"
    dataset: str | None = None
    dataset_fingerprint: str = ""
    judge: str | None = None
    fewshot: int = Field(0, ge=0, le=8)  # worked examples before the QA probes' prompts (base models)

    def fingerprint(self) -> str:
        """A short hash that identifies the item set and scoring; a resumed run must match it.

        ``fewshot`` = 0 is left out, so runs made before the field existed keep their fingerprint.
        """
        fields = self.model_dump(mode="json")
        if not fields["fewshot"]:
            del fields["fewshot"]
        return stable_hash(fields)[:16]


TaskSpec = Annotated[NiahSpec | HallucSpec, Field(discriminator="task")]


def _null_as_nan(value: Any) -> Any:
    return float("nan") if value is None else value


# A float that may be NaN or ±inf (fp16/bf16 overflow in a log-prob). Written as the JSON constants NaN and
# Infinity, which Python's json and pandas read back; the null that earlier diffbench versions wrote for them
# reads back as NaN, so such runs stay readable.
MaybeFiniteFloat = Annotated[float, BeforeValidator(_null_as_nan)]


class PlacedNeedle(BaseModel):
    """One needle of a multi-needle prompt: what it says, where it is, and in which turn it is asked."""

    model_config = ConfigDict(extra="forbid")

    key: str
    value: str
    span: tuple[int, int]  # [start, end) token indices in the prompt
    depth: float  # the depth it was placed at (the answer needle: the cell's depth; others: seeded)
    query: int | None = None  # its position in the asked order (0 = the answer needle); None: a distractor


class NeedleResult(BaseModel):
    """One needle in a record: its placement plus, when asked, whether and how surely it was retrieved."""

    model_config = ConfigDict(extra="forbid")

    key: str
    value: str
    span: tuple[int, int]
    depth: float
    query: int | None = None
    retrieved: bool | None = None  # asked needles: greedy-exact (teacher-forced) or found in the text
    logprob: float | None = None  # asked needles, teacher-forced: log-prob of the value's tokens


class Sample(BaseModel):
    """One token-exact prompt, fitted to one tokenizer. Spans are [start, end) token indices."""

    model_config = ConfigDict(extra="forbid")

    sample_id: str
    task: str
    target_length: int
    depth: float
    sample_index: int
    key: str
    answer: str
    needle_text: str
    question: str
    input_ids: list[int]
    answer_ids: list[int]
    prompt_tokens: int
    needle_span: tuple[int, int]
    haystack_span: tuple[int, int]
    chat_template: bool
    prompt_sha256: str
    # Multi-needle samples only (None on single-needle ones, and on samples of older runs):
    needles: list[PlacedNeedle] | None = None
    answers: list[str] | None = None  # the asked needles' gold answers, in the asked order
    answer_value_spans: list[tuple[int, int]] | None = None  # each asked value's [start, end) in answer_ids


class Record(BaseModel):
    """One model's result on one sample: one line of records.jsonl."""

    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")

    schema_version: int = SCHEMA_VERSION
    run_id: str
    sample_id: str
    task: str
    model: str
    variant: str
    target_length: int
    prompt_tokens: int
    depth: float
    sample_index: int
    needle_span: tuple[int, int]
    answer: str
    prediction: str | None
    correct: bool
    score: MaybeFiniteFloat
    scoring: Literal["teacher_forced", "generate"]
    greedy_exact: bool  # the teacher-forced verdict (under the boundary rule: every value also ended)
    answer_logprob: MaybeFiniteFloat
    answer_tokens: int
    ruler_all: float | None
    ruler_part: float | None
    prompt_sha256: str
    device: str
    dtype: str
    seconds: float
    # Multi-needle records only (absent in older runs, None on single-needle records):
    recall: float | None = None  # fraction of the asked needles retrieved; `correct` needs all of them
    needles: list[NeedleResult] | None = None
    # The answer-boundary rule: whether the greedy token after the answer leaves it ended (None: a run
    # scored before the rule, or a task without it).
    answer_ended: bool | None = None
    details: dict[str, Any] | None = None  # a task's own fields (halluc probes: checks, candidates, judge)


class ModelEntry(BaseModel):
    """How one model of a run was resolved and loaded."""

    model_config = ConfigDict(extra="forbid")

    name: str
    source: str
    kind: str
    path: str
    variant: str
    variant_version: str | None = None
    layout: str | None = None  # the official layout a checkpoint was converted from (models/layouts.py)
    architecture: str
    parameters: int
    context_window: int
    device: str
    dtype: str
    attn_implementation: str
    tokenizer_fingerprint: str
    rope_scaling: dict[str, object] | None = None
    device_map: dict[str, str] | None = None


class RunManifest(BaseModel):
    """The provenance and status of a run directory."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    run_id: str
    task: str
    spec: TaskSpec
    spec_fingerprint: str
    seed: int
    status: RunStatus = "running"
    created_at: str
    updated_at: str
    requested_models: list[str] = []
    models: list[ModelEntry] = []
    versions: dict[str, str] = {}
    command: list[str] = []
    peak_memory_mb: float | None = None
    wall_seconds: float = 0.0
    engine: dict[str, dict[str, object]] = {}
    # `niah --attn`: where the attention allocation of the run's samples is (RUN/attention) and its
    # status; None when the run has none. Not part of the spec: adding it never changes the sample set.
    attention: dict[str, Any] | None = None
    # Records per model when the run last completed: reports refuse a complete run that has fewer since.
    complete_records: dict[str, int] | None = None

    @model_validator(mode="before")
    @classmethod
    def _scored_before_boundary_rule(cls, data: Any) -> Any:
        """A niah spec stored before the answer-boundary rule was scored without it: say so."""
        if isinstance(data, dict) and isinstance(data.get("spec"), dict):
            spec = data["spec"]
            if spec.get("task", "niah") == "niah" and "answer_boundary" not in spec:
                return {**data, "spec": {**spec, "answer_boundary": False}}
        return data


class AttentionManifest(RunManifest):
    """A ``diffbench attn`` run's attention_manifest.json: a run manifest plus how its rows were computed.

    Being a RunManifest (spec, fingerprint, models, status) lets reports and the leaderboard treat a
    standalone attention run like a niah run that has attention data and no records.
    """

    kind: Literal["attention"] = "attention"
    options: dict[str, Any] = {}


def spec_difference(first: BaseModel, second: BaseModel) -> list[str]:
    """Names of the spec fields that differ (empty when the specs are equal)."""
    a, b = first.model_dump(mode="json"), second.model_dump(mode="json")
    return [key for key in sorted(set(a) | set(b)) if a.get(key) != b.get(key)]


def stable_hash(payload: object) -> str:
    """sha256 of canonical JSON: the same content always gives the same hash."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def parse_judge(text: str) -> str:
    """Validate --judge without loading anything: 'rule' or 'nli:PATH' (an existing directory)."""
    if text == "rule":
        return text
    kind, _, path = text.partition(":")
    if kind != "nli" or not path:
        raise UsageError(
            f"unknown --judge {text!r}: use 'rule' or 'nli:PATH' (a local NLI checkpoint directory)"
        )
    if not Path(path).is_dir():
        raise UsageError(
            f"--judge {text!r}: no checkpoint directory at {path!r}; pass the local directory of an "
            "AutoModelForSequenceClassification NLI model"
        )
    return f"nli:{Path(path).resolve()}"
