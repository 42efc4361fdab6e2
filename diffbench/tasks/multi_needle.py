"""Multi-needle samples: the Differential Transformer paper's N needles / R queries, and RULER's variants.

Every prompt holds N needles "The special magic number for <city> is <value>." (the spec's needle
template, filled per needle). R of them are asked. The answer needle (the first one asked) sits at the
cell's depth; every other needle (asked or distractor) at a depth drawn from the run seed and the
sample id, so a cell's samples differ and a rerun is identical.

Kinds (RULER): ``multikey`` N distinct keys, one asked; ``multiquery`` N distinct keys, R ≥ 2 asked;
``multivalue`` one key with N values, all asked.

The answer is teacher-forced as one string: for each asked needle, in the asked order, its answer
prefix ("The special magic number for Oskarvik mentioned in the document is") and its value, joined
by ". ". The first prefix ends the prompt (as in single-needle NIAH); the later ones are given
tokens inside the answer. Only the values' tokens are scored, so every value is judged right after
its own key was named, never on whether the model would phrase the connectors alike, and each
value's log-probability and greedy verdict are well defined on their own (a value is retrieved iff
each of its tokens is the argmax given the prompt and the correct answer before it). For
``multivalue`` the one key has several values, which are listed in the order they appear in the
document, and the question says so.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from diffbench.errors import UsageError
from diffbench.haystack.fit import assemble_needles
from diffbench.seeding import rng_for
from diffbench.specs import NeedleKind, NeedleSpec, NiahSpec, PlacedNeedle, Sample
from diffbench.tasks.cell import GridCell

# Invented city names (no real place, so no model knows a "magic number" for one from training).
CITIES = (
    "Aldermoor", "Brackenfell", "Caldrith", "Dunmarrow", "Elvenshaw", "Farrowick", "Glenhallow",
    "Harrowmere", "Ironvale", "Jorvastad", "Kestrelburg", "Lindenport", "Marrowfield", "Northwyn",
    "Oskarvik", "Pellinore", "Quillhaven", "Ravenscar", "Saltmarch", "Thornbury", "Umberlee",
    "Valdoria", "Westerhold", "Yarrowdale", "Zennorth", "Ambleton", "Briarcliff", "Coldwater Bay",
    "Dovermere", "Emberfall", "Foxhollow", "Greywick", "Hollowmere", "Ivorydale", "Juniper Cross",
    "Kingsfold", "Larkspur", "Mistral Point", "Netherby", "Oakenshaw", "Pinecrest", "Queensreach",
    "Redhaven", "Silverlake", "Tamberlin", "Upton Vale", "Verdanche", "Willowmere", "Amberwick",
    "Blackmoor", "Cinderford", "Driftwood", "Eastmarch", "Fallowfield", "Goldcrest", "Heatherly",
    "Inverlocke", "Kelpie Sound", "Lowenstad", "Moonridge", "Novaport", "Orchid Bay", "Stonehallow",
    "Tidewater",
)  # fmt: skip
# Concrete nouns for --values words: one token or two in common tokenizers, never a city.
WORD_VALUES = (
    "apple", "anchor", "badger", "banjo", "biscuit", "blanket", "bottle", "bucket", "cabbage", "camel",
    "candle", "carpet", "castle", "cherry", "chimney", "cobalt", "compass", "copper", "cricket", "dolphin",
    "donkey", "dragon", "feather", "fiddle", "garlic", "giraffe", "guitar", "hammer", "harp", "helmet",
    "honey", "iceberg", "jacket", "jasmine", "kettle", "kitten", "ladder", "lemon", "lobster", "magnet",
    "mango", "marble", "meadow", "mirror", "monkey", "mustard", "napkin", "needle", "nutmeg", "oyster",
    "paddle", "panther", "parrot", "peanut", "pencil", "pepper", "pillow", "pirate", "pocket", "potato",
    "puzzle", "rabbit", "radish", "ribbon", "rocket", "saddle", "salmon", "sandal", "scarf", "shovel",
    "spider", "spoon", "squirrel", "statue", "tiger", "tomato", "trumpet", "tulip", "turnip", "velvet",
    "violin", "walnut", "walrus", "whistle", "window", "zebra",
)  # fmt: skip
KINDS = ("multikey", "multivalue", "multiquery")
VALUE_KINDS = ("numbers", "words", "uuids")
MULTIQUERY_NOTE = "Answer each question, in this order."
MULTIVALUE_NOTE = (
    "The document gives {count} different answers to this: give every one, in the order they appear."
)


def command_line_flag(field: str) -> str:
    return f"--{field}"


def needle_options(
    needles: int,
    queries: int | None,
    kind: str | None,
    values: str,
    needle: NeedleSpec,
    name: Callable[[str], str] = command_line_flag,
) -> tuple[int, NeedleKind]:
    """Check N, R, kind and values together; the resolved (queries, kind). ``name`` words an option as
    the front end that asked spells it (``tasks.options.Spelling``).

    Left out, ``queries`` is N for multivalue and 1 otherwise, and ``kind`` is multiquery when several
    keys are asked, else multikey.
    """
    n_opt, r_opt, kind_opt, values_opt = (name(field) for field in ("needles", "queries", "kind", "values"))
    if kind is not None and kind not in KINDS:
        raise UsageError(f"unknown {kind_opt} {kind!r}: use multikey, multivalue or multiquery")
    if values not in VALUE_KINDS:
        raise UsageError(f"unknown {values_opt} {values!r}: use numbers, words or uuids")
    if needles < 1:
        raise UsageError(f"{n_opt} {needles} must be 1 or more")
    pool = len(WORD_VALUES) if values == "words" else len(CITIES)
    if needles > pool:
        raise UsageError(f"{n_opt} {needles} is more than the {pool} distinct needles diffbench has")
    if queries is None:
        queries = needles if kind == "multivalue" else 1
    if queries < 1:
        raise UsageError(f"{r_opt} {queries} must be 1 or more")
    if queries > needles:
        raise UsageError(
            f"{r_opt} {queries} is more than {n_opt} {needles}: at most every needle can be asked"
        )
    if kind is None:
        kind = "multiquery" if queries > 1 else "multikey"
    if kind == "multikey" and queries != 1:
        raise UsageError(
            f"{kind_opt} multikey asks one needle, not {queries}: use {kind_opt} multiquery to ask several"
        )
    if kind == "multiquery" and queries < 2:
        raise UsageError(f"{kind_opt} multiquery asks several keys: set {r_opt} 2 or more")
    if kind == "multivalue" and (needles < 2 or queries != needles):
        raise UsageError(
            f"{kind_opt} multivalue gives one key {n_opt} values and asks all of them: "
            f"use {n_opt} 2 or more and leave out {r_opt} (or set it to {n_opt})"
        )
    several = needles > 1 or values != "numbers"
    if several and not ("{key}" in needle.needle and "{value}" in needle.needle):
        raise UsageError(
            f"{n_opt} {needles} / {values_opt} {values} need a needle with {{key}} and {{value}} "
            "placeholders, which tell the needles apart"
        )
    return queries, cast(NeedleKind, kind)  # one of KINDS, checked above


VALUE_NOUNS = {"numbers": "number", "words": "word", "uuids": "UUID"}


def scored_by_generation(generate: bool | None, queries: int) -> bool:
    """Whether verdicts come from greedy decoding: asked, or by default when several values are asked.

    Teacher forcing supplies the text between asked values (the next key's answer prefix), which free
    greedy decoding may phrase otherwise or never reach, so with R > 1 the two disagree both ways; the
    default then reports what greedy decoding answers, and records keep the teacher-forced verdict
    beside it (``greedy_exact``) for the agreement rate.
    """
    return queries > 1 if generate is None else generate


def answer_budget_per_query(values: str) -> int:
    """Tokens reserved for one asked needle's answer sentence: UUIDs take about 25 tokens alone."""
    return 64 if values == "uuids" else 32


def needle_for_values(needle: NeedleSpec, values: str) -> NeedleSpec:
    """The default needle says "magic number"; for words and UUIDs it says "magic word" / "magic UUID"
    (as RULER's needles do). A custom needle is the user's own and stays as it is."""
    if needle != NeedleSpec() or values == "numbers":
        return needle
    noun = VALUE_NOUNS[values]
    return NeedleSpec(
        **{
            name: text.replace("magic number", f"magic {noun}").replace("the number", f"the {noun}")
            for name, text in needle.model_dump().items()
        }
    )


@dataclass(frozen=True)
class DrawnNeedle:
    key: str
    value: str
    depth: float


def draw_needles(spec: NiahSpec, sample_id: str, depth: float) -> list[DrawnNeedle]:
    """The sample's needles from the run seed: needle 0 at ``depth``, the others at seeded depths."""
    rng = rng_for(spec.seed, "needles", sample_id)
    count = spec.needles
    keys = [rng.choice(CITIES)] * count if spec.kind == "multivalue" else rng.sample(CITIES, count)
    if spec.values == "words":
        values = rng.sample(WORD_VALUES, count)
    elif spec.values == "uuids":
        values = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(count)]
    else:
        values = [str(v) for v in rng.sample(range(1_000_000, 10_000_000), count)]
    depths = [depth] + [round(rng.uniform(0.0, 100.0), 2) for _ in range(count - 1)]
    return [DrawnNeedle(k, v, d) for k, v, d in zip(keys, values, depths, strict=True)]


def multi_sample_id(spec: NiahSpec, length: int, depth: float, index: int) -> str:
    return f"niah-{spec.kind}-n{spec.needles}-r{spec.queries}-{spec.values}/{length}/{depth:g}/{index}"


def build_multi(cell: GridCell) -> Sample:
    """One multi-needle sample, token-exact; the asked order decides the question and the answer."""
    from diffbench.tasks.prompt import prompt_frame

    spec, encoder = cell.spec, cell.encoder
    template = spec.needle
    drawn = draw_needles(spec, cell.sample_id, cell.depth)

    def fill(text: str, needle: DrawnNeedle) -> str:
        return text.replace("{key}", needle.key).replace("{value}", needle.value)

    first = drawn[0]
    if spec.kind == "multivalue":
        question = fill(template.question, first) + " " + MULTIVALUE_NOTE.format(count=spec.needles)
    elif spec.queries > 1:
        asked_questions = [fill(template.question, needle) for needle in drawn[: spec.queries]]
        question = " ".join(asked_questions) + " " + MULTIQUERY_NOTE
    else:
        question = fill(template.question, first)
    prefix_text = fill(template.answer_prefix, first)
    prefix, suffix = prompt_frame(
        cell.tokenizer, encoder, fill(template.instruction, first), question, prefix_text, cell.chat
    )
    placements = [(fill(template.needle, n), n.depth) for n in drawn]
    built = assemble_needles(prefix, suffix, cell.haystack, placements, cell.prompt_budget)
    if spec.kind == "multivalue":  # one key: its values in document order
        asked = sorted(range(len(drawn)), key=lambda i: built.needle_spans[i][0])
    else:
        asked = list(range(spec.queries))
    answer_ids: list[int] = []
    value_spans: list[tuple[int, int]] = []
    answer_text = ""
    for turn, position in enumerate(asked):
        needle = drawn[position]
        if turn:
            own_prefix = fill(template.answer_prefix, needle)
            connector = "." + (" " + own_prefix if own_prefix else "")
            answer_ids += encoder.encode(connector)
            answer_text += connector
        value_text = (" " if turn or prefix_text else "") + fill(template.answer, needle)
        value_ids = encoder.encode(value_text)
        value_spans.append((len(answer_ids), len(answer_ids) + len(value_ids)))
        answer_ids += value_ids
        answer_text += value_text
    if len(answer_ids) > spec.answer_budget:
        what = (
            f"the answer {answer_text.strip()!r}"
            if len(asked) == 1
            else f"the answers to {len(asked)} questions (their values and the answer prefixes between them)"
        )
        raise UsageError(
            f"{what} take{'s' if len(asked) == 1 else ''} {len(answer_ids)} tokens, more than "
            f"--answer-budget {spec.answer_budget}; raise --answer-budget"
        )
    turns = {position: turn for turn, position in enumerate(asked)}
    placed = [
        PlacedNeedle(key=n.key, value=n.value, span=span, depth=n.depth, query=turns.get(position))
        for position, (n, span) in enumerate(zip(drawn, built.needle_spans, strict=True))
    ]
    return cell.sample(
        built,
        key=first.key,
        answer=answer_text.strip(),
        needle_text=fill(template.needle, first),
        question=question,
        answer_ids=answer_ids,
        needles=placed,
        answers=[fill(template.answer, drawn[position]) for position in asked],
        answer_value_spans=value_spans,
    )
