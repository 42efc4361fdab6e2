"""One options model per task, used by the command line and task files alike, and the words each
front end uses for an option in its messages.

``NiahOptions`` declares niah's options once (their types, defaults and joint checks) and resolves them
into ``NiahSpec``s: `diffbench niah` and `attn` build it from their flags, a ``task = "niah"`` file from
its fields (``taskfile.NiahFields`` adds the file's own keys), so both build identical specs. A check
words its message through a ``Spelling`` (``--answer-budget`` on the command line, ``answer_budget``
in a file), passed as pydantic's validation context; nothing below the front ends knows which one
asked.
"""

from __future__ import annotations

import contextlib
import reprlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from diffbench.errors import UsageError
from diffbench.lengths import MAX_GRID, parse_depths, parse_lengths, parse_token_count
from diffbench.specs import HallucSpec, NeedleKind, NeedleSpec, NiahSpec

T = TypeVar("T")
OptionsT = TypeVar("OptionsT", bound=BaseModel)

# What a custom needle's instruction is unless the [needle] table (or nothing, on the command line) sets it.
CUSTOM_NEEDLE_INSTRUCTION = (
    "A long document follows. Read it carefully: you will be asked about it afterwards."
)

_short = reprlib.Repr()
_short.maxstring = _short.maxother = 60
_short.maxlevel = 2
_short.maxlist = _short.maxdict = 4


def quote(value: object) -> str:
    """A value as it appears in a message: repr-quoted, on one line, at most about 60 characters."""
    return _short.repr(value)


@dataclass(frozen=True)
class Spelling:
    """How a front end names an option in a message: ``--answer-budget`` on the command line,
    ``answer_budget`` in a task file (whose messages also say which field they are about)."""

    flags: bool

    def name(self, field: str) -> str:
        return "--" + field.replace("_", "-") if self.flags else field

    def about(self, field: str) -> str:
        """What starts a message about ``field``: nothing for a flag (the message names it), the field
        for a file."""
        return "" if self.flags else f"field {quote(field)}: "

    def context(self) -> dict[str, Any]:
        return {"spelling": self}


COMMAND_LINE = Spelling(flags=True)
TASK_FILE = Spelling(flags=False)


def spelling_of(info: ValidationInfo) -> Spelling:
    context = info.context or {}
    spelling = context.get("spelling", TASK_FILE)
    assert isinstance(spelling, Spelling)
    return spelling


# ----------------------------------------------------------------------------- lengths and depths


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _usage_to_value_error(parse: Callable[[str], T], text: str) -> T:
    """Run a command-line parser; its UsageError becomes the ValueError pydantic attaches a field to."""
    try:
        return parse(text)
    except UsageError as error:
        raise ValueError(str(error)) from None


def grid_lengths(value: Any, info: ValidationInfo) -> list[int]:
    """lengths = "8k-64k" (the --lengths grammar), a single number, or a list of lengths [8192, "16k"]."""
    if isinstance(value, str) and spelling_of(info).flags:
        return parse_lengths(value)  # --lengths: the parser's own messages name the flag
    if isinstance(value, str):
        if not value.strip():
            raise ValueError('is empty: use e.g. "8k-64k" (doubling), "8k:64k:8k" or [4096, "12k"]')
        return _usage_to_value_error(parse_lengths, value)
    if _is_number(value):
        _usage_to_value_error(parse_token_count, str(value))
        return _usage_to_value_error(parse_lengths, str(value))
    if isinstance(value, list):
        if not value:
            raise ValueError("is an empty list: give at least one length, e.g. [4096, 8192]")
        if len(value) > MAX_GRID:
            raise ValueError(f"holds {len(value)} lengths: at most {MAX_GRID}")
        texts = []
        for item in value:
            if not (_is_number(item) or isinstance(item, str)):
                raise ValueError(f'item {quote(item)} is neither a number nor a length such as "8k"')
            _usage_to_value_error(parse_token_count, str(item))  # one length per item, never a range
            texts.append(str(item).strip())
        return _usage_to_value_error(parse_lengths, ",".join(texts))
    raise ValueError(f'should be a text such as "8k-64k" or a list of lengths, got {quote(value)}')


def grid_depths(value: Any, info: ValidationInfo) -> list[float]:
    """depths = 5 (a count), "0,50,100" (the --depths grammar) or [0, 12.5, 100] (percentages)."""
    if isinstance(value, str) and spelling_of(info).flags:
        return parse_depths(value)  # --depths: the parser's own messages name the flag
    if isinstance(value, str):
        if not value.strip():
            raise ValueError("is empty: use a count such as 5, or percentages such as [0, 50, 100]")
        return _usage_to_value_error(parse_depths, value)
    if isinstance(value, int) and not isinstance(value, bool):
        return _usage_to_value_error(parse_depths, str(value))
    if isinstance(value, float):
        raise ValueError(
            f"{quote(value)} is no count: a single number counts depths (e.g. 5); "
            "list percentages as [0, 12.5, 100]"
        )
    if isinstance(value, list):
        if not value:
            raise ValueError("is an empty list: give at least one percentage, e.g. [0, 50, 100]")
        for item in value:
            if not _is_number(item):
                raise ValueError(f"item {quote(item)} is not a number: list percentages, e.g. [0, 50, 100]")
            if not 0 <= item <= 100:  # also refuses nan
                raise ValueError(f"item {quote(item)} is outside 0..100: depths are percentages")
        # '%' marks every item a percentage, so [5] is depth 5%, not a count of 5 depths.
        return _usage_to_value_error(parse_depths, ",".join(f"{item!r}%" for item in value))
    raise ValueError(
        f'should be a count, a text such as "0,50,100" or a list of percentages, got {quote(value)}'
    )


def grid_probes(value: Any) -> str:
    """probes = "factsum,p2" (the --probes grammar) or a list of names ["factsum", "p2"] → --probes text."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        if not value:
            raise ValueError('is an empty list: name at least one probe, e.g. ["factsum", "factqa"]')
        for item in value:
            if not isinstance(item, str):
                raise ValueError(f'item {quote(item)} is not a probe name such as "factqa" or "p2"')
        return ",".join(value)
    raise ValueError(f'should be a text such as "factsum,p2" or a list of probe names, got {quote(value)}')


GridLengths = Annotated[list[int], BeforeValidator(grid_lengths)]
GridDepths = Annotated[list[float], BeforeValidator(grid_depths)]
GridProbes = Annotated[str, BeforeValidator(grid_probes)]


class _Strict(BaseModel):
    """Values arrive typed (TOML's, Typer's): no coercion ("5" is no integer), no unknown fields."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class NeedleOptions(_Strict):
    """The needle: NeedleSpec's fields (--needle/--question/--answer/--answer-prefix, or a file's [needle]).
    Setting ``needle`` defines a custom needle: it needs ``question`` and ``answer`` (which must occur in
    it), and ``answer_prefix`` and ``instruction`` then default to "" and a neutral instruction instead
    of the magic-number ones."""

    needle: str | None = None
    question: str | None = None
    answer: str | None = None
    answer_prefix: str | None = None
    instruction: str | None = None

    @model_validator(mode="after")
    def _custom_needle_is_complete(self, info: ValidationInfo) -> NeedleOptions:
        spelt = spelling_of(info)
        custom = {"needle": self.needle, "question": self.question, "answer": self.answer}
        given = [name for name, value in custom.items() if value is not None]
        if given and len(given) < 3:
            missing = " and ".join(spelt.name(name) for name in custom if custom[name] is None)
            every = f"{spelt.name('needle')}, {spelt.name('question')} and {spelt.name('answer')}"
            raise ValueError(f"a custom needle needs {every}: add {missing}")
        blank = [spelt.name(k) for k, value in custom.items() if value is not None and not value.strip()]
        if blank:
            verb = "is" if len(blank) == 1 else "are"
            raise ValueError(f"{' and '.join(blank)} {verb} empty; a custom needle needs text in all three")
        if self.needle is not None and self.answer is not None and self.answer not in self.needle:
            raise ValueError(
                f"{spelt.name('answer')} {quote(self.answer)} does not occur in {spelt.name('needle')}; "
                "the needle must contain the answer"
            )
        return self

    def to_spec(self) -> NeedleSpec:
        set_fields = {name: value for name, value in self.model_dump().items() if value is not None}
        if self.needle is not None:
            set_fields = {"answer_prefix": "", "instruction": CUSTOM_NEEDLE_INSTRUCTION, **set_fields}
        return NeedleSpec(**set_fields)


class NiahOptions(_Strict):
    """The options of a NIAH run: NiahSpec's fields before their defaults are resolved (lengths and
    depths in the command line's grammar too; ``needles`` may list several N, one run each)."""

    lengths: GridLengths
    depths: GridDepths
    samples_per_cell: int = Field(default=1, ge=1)
    seed: int = 0
    haystack: str = "prose"
    haystack_per_sample: bool = False
    needle: NeedleOptions = NeedleOptions()
    chat_template: Literal["auto", "on", "off"] = "auto"
    answer_budget: int | None = Field(default=None, ge=1)  # default: 32 per asked needle (64 for uuids)
    generate: bool | None = None  # default: greedy decoding decides when several values are asked
    rope_scaling: Literal["none", "dynamic", "yarn"] = "none"
    # a list sweeps N: one run per value; None: 1, or CHARACTERS (one asked, the rest decoys) for characters
    needles: int | Annotated[list[int], Field(min_length=1)] | None = None
    queries: int | None = None  # in a sweep, capped at each N (the Diff paper's "R = 2 except N = 1")
    kind: Literal["multikey", "multivalue", "multiquery", "vartrack"] | None = None
    values: Literal["numbers", "words", "uuids"] = "numbers"
    hops: int | None = None  # vartrack only: assignments after each chain's first (default 4, RULER's)
    needle_style: Literal["magic", "literal", "nonliteral"] = "magic"
    distractor: bool = False  # character needles only

    @model_validator(mode="after")
    def _resolves(self, info: ValidationInfo) -> NiahOptions:
        self.to_specs(spelling_of(info))  # N, R, kind and values together, and room for a prompt
        return self

    def to_specs(self, spelling: Spelling = TASK_FILE) -> list[NiahSpec]:
        """One spec, or one per N of a ``needles`` sweep, each checked; problems worded by ``spelling``."""
        from diffbench.tasks.character_needles import CHARACTERS
        from diffbench.tasks.multi_needle import needle_for_values, scored_by_generation
        from diffbench.tasks.variable_tracking import DEFAULT_CHAINS

        self._check_needle_style(spelling)
        default = 1 if self.needle_style == "magic" else CHARACTERS
        if self.kind == "vartrack":
            default = DEFAULT_CHAINS
        needles = default if self.needles is None else self.needles
        counts = needles if isinstance(needles, list) else [needles]
        specs = []
        for count in counts:
            queries = self.queries
            if isinstance(needles, list) and queries is not None:
                queries = min(queries, count)
            needle = self.needle.to_spec()
            try:
                queries, kind, hops, per_query = self._kind_of(count, queries, needle, spelling)
            except UsageError as error:
                raise ValueError(f"{spelling.about('needles')}{error}") from None
            budget = self.answer_budget or per_query * queries
            if self.lengths[0] <= budget:
                raise ValueError(
                    f"{spelling.about('lengths')}length {self.lengths[0]} leaves no room for a prompt after "
                    f"{spelling.name('answer_budget')} {budget}; use longer {spelling.name('lengths')} or a "
                    f"smaller {spelling.name('answer_budget')}"
                )
            specs.append(
                NiahSpec(
                    lengths=self.lengths,
                    depths=self.depths,
                    samples_per_cell=self.samples_per_cell,
                    seed=self.seed,
                    haystack=self.haystack,
                    haystack_per_sample=self.haystack_per_sample,
                    needle=needle_for_values(needle, self.values),
                    chat_template=self.chat_template,
                    answer_budget=budget,
                    generate=scored_by_generation(self.generate, queries),
                    rope_scaling=self.rope_scaling,
                    needles=count,
                    queries=queries,
                    kind=kind,
                    values=self.values,
                    needle_style=self.needle_style,
                    distractor=self.distractor,
                    hops=hops,
                )
            )
        return specs

    def _kind_of(
        self, count: int, queries: int | None, needle: NeedleSpec, spelling: Spelling
    ) -> tuple[int, NeedleKind, int, int]:
        """N needles' resolved (queries, kind, hops, answer tokens per asked value); a problem raises."""
        from diffbench.tasks.multi_needle import answer_budget_per_query, needle_options
        from diffbench.tasks.variable_tracking import DEFAULT_HOPS, TOKENS_PER_VARIABLE, chain_options

        hops = DEFAULT_HOPS if self.hops is None else self.hops
        if self.kind == "vartrack":
            asked = chain_options(count, queries, self.values, needle, hops, spelling.name)
            return asked, "vartrack", hops, TOKENS_PER_VARIABLE
        if self.hops is not None:
            kind = spelling.name("kind")
            raise UsageError(
                f"{spelling.name('hops')} sets the chain length of {kind} vartrack: add {kind} vartrack, "
                f"or leave out {spelling.name('hops')}"
            )
        asked, resolved = needle_options(count, queries, self.kind, self.values, needle, spelling.name)
        return asked, resolved, hops, answer_budget_per_query(self.values)

    def _check_needle_style(self, spelling: Spelling) -> None:
        """Character needles are diffbench's own, one asked among ``needles`` characters: no custom needle,
        no other multi-needle option."""
        if self.needle_style == "magic":
            if self.distractor:
                raise ValueError(
                    f"{spelling.about('distractor')}{spelling.name('distractor')} names a character needle's "
                    f"key: add {spelling.name('needle_style')} literal or nonliteral"
                )
            return
        style = f"{spelling.name('needle_style')} {self.needle_style}"
        custom = [name for name, value in self.needle.model_dump().items() if value is not None]
        from diffbench.tasks.character_needles import NAMES

        counts = self.needles if isinstance(self.needles, list) else [self.needles or 1]
        if max(counts) > len(NAMES):
            raise ValueError(
                f"{spelling.about('needles')}{spelling.name('needles')} {max(counts)} is more than the "
                f"{len(NAMES)} characters diffbench has"
            )
        multi = {
            "queries": self.queries is not None,
            "kind": self.kind is not None,
            "values": self.values != "numbers",
            "hops": self.hops is not None,
        }
        clashes = [spelling.name(name) for name in custom] + [
            spelling.name(name) for name, given in multi.items() if given
        ]
        if clashes:
            listed = ", ".join(clashes[:-1]) + (" and " if len(clashes) > 1 else "") + clashes[-1]
            raise ValueError(
                f"{spelling.about('needle_style')}{style} hides character needles of its own, which "
                f"{listed} would change: leave {'it' if len(clashes) == 1 else 'them'} out, "
                f"or use {spelling.name('needle_style')} magic"
            )

    def to_spec(self, spelling: Spelling = TASK_FILE) -> NiahSpec:
        return self.to_specs(spelling)[0]


@contextlib.contextmanager
def worded_for(spelling: Spelling, field: str) -> Iterator[None]:
    """A check whose message names its flag (``--dataset ...``), worded for a file's field instead."""
    try:
        yield
    except UsageError as error:
        if spelling.flags:
            raise
        raise UsageError(spelling.about(field) + str(error).replace(f"--{field}", field)) from None


class HallucOptions(_Strict):
    """The options of a hallucination-probe run (`diffbench halluc`, a ``task = "halluc"`` file), with the
    command's defaults: all five probes at 4K, 100 items each."""

    probes: GridProbes | None = None  # None: the five, P1-P5
    lengths: GridLengths = [4096]
    depths: GridDepths = [0.0, 25.0, 50.0, 75.0, 100.0]
    samples_per_cell: int = Field(default=100, ge=1)
    seed: int = 0
    mode: Literal["generate", "forced", "both"] = "both"
    haystack: str = "prose"
    chat_template: Literal["auto", "on", "off"] = "auto"
    rope_scaling: Literal["none", "dynamic", "yarn"] = "none"
    dataset: str | None = None  # a JSONL path, relative to where diffbench runs
    judge: str | None = None  # "rule" or "nli:PATH"
    fewshot: int = 0  # worked examples before the QA probes' prompts (0-8)

    def to_spec(self, spelling: Spelling = TASK_FILE) -> HallucSpec:
        """The HallucSpec, every check worded by ``spelling``; the dataset is read and the judge found here,
        before any model loads."""
        from pathlib import Path

        from diffbench.specs import parse_judge
        from diffbench.tasks.probes import PROBE_NAMES, parse_probes
        from diffbench.tasks.probes.core import MAX_FEWSHOT

        with worded_for(spelling, "probes"):
            names = parse_probes(",".join(PROBE_NAMES) if self.probes is None else self.probes)
        if not 0 <= self.fewshot <= MAX_FEWSHOT:
            raise UsageError(
                f"{spelling.about('fewshot')}{spelling.name('fewshot')} {self.fewshot} is out of range: "
                f"use 0 (none) to {MAX_FEWSHOT} worked examples"
            )
        dataset, fingerprint = None, ""
        if self.dataset is not None:
            from diffbench.tasks.probes.dataset import dataset_fingerprint, read_dataset

            path = Path(self.dataset)
            with worded_for(spelling, "dataset"):
                read_dataset(path)  # a missing file or a malformed line fails here, before any model loads
            dataset, fingerprint, names = str(path.resolve()), dataset_fingerprint(path), ["dataset"]
        judge = self.judge
        if judge is not None:
            with worded_for(spelling, "judge"):
                judge = parse_judge(judge)
        return HallucSpec(
            probes=names,
            lengths=self.lengths,
            depths=self.depths,
            samples_per_cell=self.samples_per_cell,
            seed=self.seed,
            mode=self.mode,
            haystack=self.haystack,
            chat_template=self.chat_template,
            rope_scaling=self.rope_scaling,
            dataset=dataset,
            dataset_fingerprint=fingerprint,
            judge=judge,
            fewshot=self.fewshot,
        )


def command_line_options(model: type[OptionsT], values: dict[str, Any]) -> OptionsT:
    """An options model built from a command's flags; a problem is one usage error naming the flag."""
    try:
        return model.model_validate(values, context=COMMAND_LINE.context())
    except ValidationError as error:
        raise UsageError(describe_flags(error)) from None


def describe_flags(error: ValidationError) -> str:
    """A validation error as the command line words it: the check's own message, or the flag and what
    it should be (``unknown --kind 'multiset': use multikey, multivalue or multiquery``)."""
    first = error.errors(include_url=False)[0]
    fields = [str(part) for part in first["loc"] if isinstance(part, str)]
    flag = COMMAND_LINE.name(fields[-1]) if fields else ""
    if first["type"] == "value_error":
        reason = str(first.get("ctx", {}).get("error", first["msg"]))
        return f"{flag} {reason}" if flag and reason.startswith(("is ", "should ", "holds ")) else reason
    if first["type"] == "literal_error":
        choices = str(first.get("ctx", {}).get("expected", "")).replace("'", "")
        return f"unknown {flag} {quote(first['input'])}: use {choices}"
    message = first["msg"]
    message = message[len("Input ") :] if message.startswith("Input ") else message
    return f"{flag} {message}, got {quote(first['input'])}"
