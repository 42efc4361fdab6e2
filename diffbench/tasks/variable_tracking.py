"""Variable tracking (RULER's ``vt``): follow a chain of assignments through the haystack, hop by hop.

A chain is ``hops + 1`` statements hidden in the document: "VAR QWERT = 48213." gives the first
variable a value, and each later one copies the one before ("VAR ASDFG = VAR QWERT."). The question
names the value and asks for every variable that holds it, in the order they are assigned: one
statement's variable is the key of the next, so each answer needs the previous one, which is the
multi-hop retrieval that single-needle NIAH never asks for. ``needles`` counts chains; the first is
asked and every other, with a value of its own, is a decoy: with one chain, "list every variable the
document assigns" would answer the question without tracking anything, and a record lists the decoy
variables a decoded answer names (``details.wrong_variables``).

Placement: the asked chain's first statement sits at the cell's depth and its later statements at
seeded depths between it and the end, in chain order, so the depth axis is where the chain starts.
Decoy chains are spread over the whole document, each in its own order. Every name and value comes
from the run seed and the sample id.

In the stored sample each statement is a needle whose ``key`` is what it is read from (the value,
or the previous variable) and whose ``value`` is the variable it assigns, the thing retrieved, so
records, recall and the attention regions read it as they read any multi-needle sample.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass

from diffbench.errors import UsageError
from diffbench.haystack.fit import assemble_needles
from diffbench.seeding import rng_for
from diffbench.specs import NeedleSpec, NiahSpec, PlacedNeedle, Sample
from diffbench.tasks.cell import GridCell
from diffbench.tasks.multi_needle import command_line_flag
from diffbench.tasks.prompt import prompt_frame

DEFAULT_HOPS = 4  # RULER's vt default: chains of five variables
DEFAULT_CHAINS = 2  # the asked chain and one decoy
MAX_CHAINS = 64
NAME_LETTERS = 5
INSTRUCTION = (
    "A long document follows. Hidden in it are variable assignments: a statement such as "
    '"VAR XXXXX = 1234." gives a variable a value, and one such as "VAR YYYYY = VAR XXXXX." gives '
    "the second variable the value of the first. Read it carefully: you will be asked which variables "
    "hold a given value."
)
QUESTION = (
    "Which variables are assigned the value {value}, directly or through other variables? "
    "List them in the order they are assigned."
)
ANSWER_PREFIX = "The variables assigned the value {value} are:"
SEPARATOR = ","
TOKENS_PER_VARIABLE = 12  # a five-letter name is up to five tokens, and a separator one


@dataclass(frozen=True)
class Statement:
    """One assignment: ``variable`` takes ``source`` (a number, or another variable as "VAR NAME")."""

    variable: str
    source: str
    depth: float

    @property
    def text(self) -> str:
        return f"VAR {self.variable} = {self.source}."


@dataclass(frozen=True)
class Chain:
    value: str
    statements: tuple[Statement, ...]


def chain_options(
    needles: int,
    queries: int | None,
    values: str,
    needle: NeedleSpec,
    hops: int,
    name: Callable[[str], str] = command_line_flag,
) -> int:
    """Check the options of kind vartrack (``needles`` chains of ``hops`` hops); the values asked. ``name``
    words an option as the front end that asked spells it.

    Every variable of the one asked chain is asked, so the chain's length stands for ``queries``.
    """
    kind = f"{name('kind')} vartrack"
    if queries is not None:
        raise UsageError(
            f"{kind} asks every variable of one chain: leave out {name('queries')} "
            f"({name('hops')} sets how many there are)"
        )
    if values != "numbers":
        raise UsageError(f"{kind} assigns numbers of its own: leave out {name('values')}")
    if needle != NeedleSpec():
        custom = ", ".join(name(field) for field in ("needle", "question", "answer", "answer_prefix"))
        raise UsageError(f"{kind} hides assignment statements of its own: leave out {custom}")
    if not 1 <= needles <= MAX_CHAINS:
        raise UsageError(
            f"{name('needles')} {needles} is out of range for {kind}: use 1 to {MAX_CHAINS} chains"
        )
    if hops < 1:
        raise UsageError(f"{name('hops')} {hops} must be 1 or more")
    return hops + 1


def draw_chains(spec: NiahSpec, sample_id: str, depth: float) -> list[Chain]:
    """The sample's chains from the run seed: the asked one first, starting at ``depth``."""
    rng = rng_for(spec.seed, "chains", sample_id)
    links = spec.hops + 1
    names: list[str] = []
    taken = {"XXXXX", "YYYYY"}  # the instruction's examples
    while len(names) < spec.needles * links:
        name = "".join(rng.choices(string.ascii_uppercase, k=NAME_LETTERS))
        if name not in taken:
            taken.add(name)
            names.append(name)
    values = [str(v) for v in rng.sample(range(10_000, 100_000), spec.needles)]
    chains = []
    for index, value in enumerate(values):
        if index == 0:
            depths = [depth, *sorted(round(rng.uniform(depth, 100.0), 2) for _ in range(links - 1))]
        else:
            depths = sorted(round(rng.uniform(0.0, 100.0), 2) for _ in range(links))
        own = names[index * links : (index + 1) * links]
        sources = [value] + [f"VAR {name}" for name in own[:-1]]
        chains.append(
            Chain(value, tuple(Statement(v, s, d) for v, s, d in zip(own, sources, depths, strict=True)))
        )
    return chains


def build_chain_sample(cell: GridCell) -> Sample:
    """One variable-tracking sample, token-exact; the answer lists the asked chain's variables in order."""
    spec, encoder = cell.spec, cell.encoder
    chains = draw_chains(spec, cell.sample_id, cell.depth)
    asked = chains[0]
    question = QUESTION.format(value=asked.value)
    prefix_text = ANSWER_PREFIX.format(value=asked.value)
    prefix, suffix = prompt_frame(cell.tokenizer, encoder, INSTRUCTION, question, prefix_text, cell.chat)
    # (asked turn or None, statement): the asked chain's statements first, in chain order
    statements = [
        (position if chain_index == 0 else None, statement)
        for chain_index, chain in enumerate(chains)
        for position, statement in enumerate(chain.statements)
    ]
    placements = [(statement.text, statement.depth) for _, statement in statements]
    built = assemble_needles(prefix, suffix, cell.haystack, placements, cell.prompt_budget)
    answer_ids: list[int] = []
    value_spans: list[tuple[int, int]] = []
    for turn, statement in enumerate(asked.statements):
        if turn:
            answer_ids += encoder.encode(SEPARATOR)
        name_ids = encoder.encode(" " + statement.variable)
        value_spans.append((len(answer_ids), len(answer_ids) + len(name_ids)))
        answer_ids += name_ids
    if len(answer_ids) > spec.answer_budget:
        raise UsageError(
            f"the {len(asked.statements)} variables of the asked chain take {len(answer_ids)} tokens, more "
            f"than --answer-budget {spec.answer_budget}; raise --answer-budget"
        )
    placed = [
        PlacedNeedle(
            key=statement.source.removeprefix("VAR "),
            value=statement.variable,
            span=span,
            depth=statement.depth,
            query=turn,
        )
        for (turn, statement), span in zip(statements, built.needle_spans, strict=True)
    ]
    return cell.sample(
        built,
        key=asked.value,
        answer=", ".join(s.variable for s in asked.statements),
        needle_text=asked.statements[0].text,
        question=question,
        answer_ids=answer_ids,
        needles=placed,
        answers=[s.variable for s in asked.statements],
        answer_value_spans=value_spans,
    )


def wrong_variables(prediction: str, sample: Sample) -> list[str]:
    """The decoy chains' variables that a decoded answer names: variables that do not hold the value."""
    from diffbench.scoring import contains_answer

    return [
        needle.value
        for needle in sample.needles or []
        if needle.query is None and contains_answer(prediction, needle.value)
    ]
