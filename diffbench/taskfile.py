"""Task files: a TOML file → a validated task spec, plus the file's default models and engine settings.

A task file holds what decides the sample set and scoring (for ``task = "niah"``, the fields of
:class:`~diffbench.specs.NiahSpec`), optional default ``models`` and an optional ``[engine]`` table
(how samples run: it never changes results beyond float rounding, nor the spec fingerprint)::

    format = 1                 # the file format's version; this diffbench reads 1
    task = "niah"              # the task kind: a key of TASK_KINDS
    models = ["smollm2"]       # optional: what --model defaults to
    lengths = "8k-64k"         # the --lengths grammar, or a list: [8192, "16k"]
    depths = 5                 # a count, the --depths grammar ("0,50,100"), or percentages: [0, 50, 100]
    samples_per_cell = 5
    [needle]                   # optional: needle, question, answer, answer_prefix, instruction
    [engine]                   # optional: prefix_sharing, max_memory, chunk_tokens, batch_size
    attn = true                # optional: then the attention pass, as --attn (RUN/attention)

A niah file's fields are ``tasks.options.NiahOptions``, the model `diffbench niah` builds from its flags,
so a file and the command line accept the same values (lengths and depths in the ``--lengths`` and
``--depths`` grammar too) and build identical specs. Every problem (a missing or unreadable file,
TOML syntax, an unknown field, a wrong type or value, an unsupported ``format``, an unknown ``task``)
is one :class:`UsageError` line that starts with the file's path and names the field. A new task kind
is a new fields model in ``TASK_KINDS``: ``task = "niah"`` (NiahSpec, multi-needle included) and
``task = "halluc"`` (the hallucination probes' HallucSpec, built by the same function as
``diffbench halluc``'s options).
"""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from diffbench.errors import UsageError
from diffbench.specs import HallucSpec, NiahSpec
from diffbench.tasks.options import HallucOptions, NiahOptions, quote

FORMAT_VERSION = 1


def _models(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


ModelName = Annotated[str, Field(min_length=1)]


# ----------------------------------------------------------------------------- the file's fields


class _Strict(BaseModel):
    """TOML values are typed already: no coercion ("5" is no integer), no unknown fields."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class EngineTable(_Strict):
    """[engine]: how samples run (same results to float rounding); the command line overrides it."""

    prefix_sharing: bool = True
    max_memory: str | None = None
    chunk_tokens: int | None = Field(default=None, ge=1)
    batch_size: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _one_chunk_size(self) -> EngineTable:
        from diffbench.engine.memory import parse_memory

        if self.max_memory is not None:
            try:
                parse_memory(self.max_memory)
            except UsageError:
                raise ValueError(
                    f"max_memory {quote(self.max_memory)} is not a memory size: "
                    'use e.g. "8GB", "1.5g" or "512MiB"'
                ) from None
            if self.chunk_tokens is not None:
                raise ValueError("max_memory and chunk_tokens both set the chunk size: keep only one")
        return self


class TaskFields(_Strict):
    """The keys every task file has; a task kind adds its own fields."""

    format: int
    task: str
    models: Annotated[list[ModelName], BeforeValidator(_models)] = []
    engine: EngineTable = EngineTable()
    attn: bool = False  # the attention pass after the run (not part of the spec: it adds, never changes)

    def to_spec(self) -> Any:
        raise NotImplementedError


class NiahFields(NiahOptions, TaskFields):
    """task = "niah": the options of `diffbench niah` (NiahOptions, one declaration for both)."""

    task: Literal["niah"]


class HallucFields(HallucOptions, TaskFields):
    """task = "halluc": the options of `diffbench halluc` (HallucOptions, one declaration for both)."""

    task: Literal["halluc"]


# The task kinds a file may name.
TASK_KINDS: dict[str, type[TaskFields]] = {"niah": NiahFields, "halluc": HallucFields}


# ----------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class TaskFile:
    """A validated task file: the spec that decides samples and scoring, and the file's run defaults."""

    source: str
    task: str
    spec: NiahSpec | HallucSpec
    models: tuple[str, ...]
    engine: EngineTable
    sweep: tuple[NiahSpec, ...] = ()  # a niah file whose ``needles`` is a list: one spec per N
    attn: bool = False  # run the attention pass after the run (as --attn)

    def runs(self) -> list[tuple[str, NiahSpec | HallucSpec]]:
        """(label, spec) of each run the file asks for: one, or one per N of a needles sweep."""
        if not self.sweep:
            return [("", self.spec)]
        return [(f"n{spec.needles}-r{spec.queries}", spec) for spec in self.sweep]


def load_task_file(path: Path | str) -> TaskFile:
    """Read and validate a task file; every problem is one UsageError line naming the file (and field)."""
    source = str(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise UsageError(
            f"{source}: no such task file; pass the path of a .toml task file, e.g. tasks/smoke.toml"
        ) from None
    except IsADirectoryError:
        raise UsageError(f"{source}: is a directory; pass one .toml task file in it") from None
    except OSError as error:
        raise UsageError(f"{source}: cannot read the task file: {error.strerror or error}") from None
    return parse_task_file(data, source)


def parse_task_file(data: bytes | str, source: str) -> TaskFile:
    """Validate the text of a task file; ``source`` names it in messages."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise UsageError(
                f"{source}: is not UTF-8 text (byte {error.start}); save the task file as UTF-8"
            ) from None
    document = _toml(data, source)
    fields_model = _task_kind(document, source)
    try:
        fields = fields_model.model_validate(document)
    except ValidationError as error:
        raise UsageError(f"{source}: {_describe(error, fields_model)}") from None
    try:
        spec = fields.to_spec()
    except UsageError as error:  # a halluc file's probes, dataset or judge: the message names the field
        raise UsageError(f"{source}: {error}") from None
    except (ValidationError, ValueError) as error:  # not reached: the fields were checked above
        raise UsageError(f"{source}: {error}".splitlines()[0]) from None
    sweep: tuple[NiahSpec, ...] = ()
    if isinstance(fields, NiahFields) and isinstance(fields.needles, list):
        sweep = tuple(fields.to_specs())
    return TaskFile(source, document["task"], spec, tuple(fields.models), fields.engine, sweep, fields.attn)


def _toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        message = str(error)
        where = "at the end of the file" if message.endswith("(at end of document)") else ""
        if "(at line " in message:
            message, _, position = message.rpartition(" (at ")
            where = "at " + position.rstrip(")")
        message = message.removesuffix(" (at end of document)")
        raise UsageError(f"{source}: TOML syntax error {where}: {message[:1].lower()}{message[1:]}") from None
    except RecursionError:
        raise UsageError(f"{source}: TOML syntax error: arrays or tables nested too deeply") from None
    except ValueError as error:  # e.g. an integer of more than 4300 digits
        raise UsageError(f"{source}: TOML syntax error: {str(error).splitlines()[0]}") from None


def _task_kind(document: dict[str, Any], source: str) -> type[TaskFields]:
    """Check `format` and `task` first: the rest of the file is read by the task kind's fields."""
    kinds = ", ".join(repr(name) for name in TASK_KINDS)
    version = document.get("format")
    if "format" not in document:
        raise UsageError(
            f"{source}: field 'format' is missing: start the file with format = {FORMAT_VERSION}"
        )
    if not isinstance(version, int) or isinstance(version, bool):
        raise UsageError(
            f"{source}: field 'format' should be a whole number such as {FORMAT_VERSION}, "
            f"got {quote(version)}"
        )
    if version != FORMAT_VERSION:
        raise UsageError(
            f"{source}: field 'format': format {version} is not supported; this diffbench reads task files "
            f"of format {FORMAT_VERSION}: use the diffbench version the file was written for, or rewrite it"
        )
    if "task" not in document:
        raise UsageError(f"{source}: field 'task' is missing: name the task kind, one of {kinds}")
    kind = document["task"]
    if not isinstance(kind, str):
        raise UsageError(f"{source}: field 'task' should be a string, one of {kinds}; got {quote(kind)}")
    if kind not in TASK_KINDS:
        raise UsageError(
            f"{source}: field 'task': unknown task kind {quote(kind)}"
            f"{_did_you_mean(kind, list(TASK_KINDS))}; the kinds available are {kinds}"
        )
    return TASK_KINDS[kind]


def _did_you_mean(name: str, choices: list[str]) -> str:
    normal = name.strip().lower().replace("-", "_").replace(" ", "_")
    if normal in choices and normal != name:
        return f" (did you mean {normal!r}?)"
    close = difflib.get_close_matches(normal, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _location(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _fields_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The field names allowed in the table at ``loc`` (for 'did you mean')."""
    for part in loc:
        annotation = model.model_fields[str(part)].annotation if str(part) in model.model_fields else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def _describe(error: ValidationError, model: type[BaseModel]) -> str:
    """The first problem (unknown fields first: a misspelt field is also reported missing) as one line."""
    problems = sorted(error.errors(include_url=False), key=lambda e: e["type"] != "extra_forbidden")
    first = problems[0]
    loc = tuple(first["loc"])
    where = _location(loc)
    kind = first["type"]
    if kind == "extra_forbidden":
        parent, name = loc[:-1], str(loc[-1])
        hint = _did_you_mean(name, _fields_at(model, parent))
        if not hint and not parent and name in EngineTable.model_fields:
            hint = f" (engine settings go in the [engine] table: [engine] {name} = ...)"
        text = f"unknown field {quote(where)}{hint}"
    elif kind == "missing":
        example = {"lengths": 'lengths = "8k-64k"', "depths": "depths = 5"}.get(where, f"{where} = ...")
        text = f"field {quote(where)} is missing: add e.g. {example}"
    elif kind == "value_error":
        reason = str(first.get("ctx", {}).get("error", first["msg"]))
        joint = " " if reason.startswith(("is ", "should ", "holds ")) else ": "
        text = reason if reason.startswith("field ") or not where else f"field {quote(where)}{joint}{reason}"
    elif kind in ("model_type", "dict_type"):
        table = f"[{where}] and key = value lines"
        text = f"field {quote(where)} should be a table ({table}), got {quote(first['input'])}"
    else:
        message = first["msg"]
        if message.startswith("Input should"):
            message = " should" + message[len("Input should") :]
        else:
            message = ": " + message[:1].lower() + message[1:]
        text = f"field {quote(where)}{message}, got {quote(first['input'])}"
    more = len(problems) - 1
    if more:
        text += f" (and {more} more problem{'s' if more > 1 else ''})"
    return " ".join(text.splitlines())
