"""Needle-in-a-haystack samples over a depth × length grid (multi-needle ones: tasks/multi_needle.py,
variable tracking: tasks/variable_tracking.py).

All samples read one haystack stream from its start, as RULER and the original NIAH do: depth,
length and the needle are the only things that vary along the grid, and every prompt's text before
its needle is a prefix of one trunk, which the engine prefills once. ``haystack_per_sample`` gives
each sample index its own stream instead (more haystack variety, one trunk per index). The
needle's key and value are drawn per sample from the run seed; a character needle (``needle_style``
literal or nonliteral, tasks/character_needles.py) is drawn the same way. Same spec + same tokenizer
gives byte-identical samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from diffbench.errors import UsageError
from diffbench.haystack.fit import SegmentEncoder, TokenizedHaystack, assemble_needles
from diffbench.haystack.sources import HaystackSource
from diffbench.seeding import rng_for
from diffbench.specs import NiahSpec, PlacedNeedle, Sample
from diffbench.tasks.cell import GridCell
from diffbench.tasks.character_needles import INSTRUCTION as CHARACTER_INSTRUCTION
from diffbench.tasks.character_needles import Decoy, draw_character, mentioned_terms
from diffbench.tasks.multi_needle import (
    build_multi,
    multi_sample_id,
)
from diffbench.tasks.prompt import prompt_frame, use_chat_template
from diffbench.tasks.variable_tracking import build_chain_sample

KEY_ADJECTIVES = (
    "amber", "brisk", "calm", "dusty", "eager", "faint", "gentle", "hollow", "icy", "jolly",
    "keen", "lofty", "mellow", "nimble", "olive", "pale", "quiet", "rapid", "silver", "tidy",
    "upper", "vivid", "wary", "young", "zesty", "bold", "crisp", "deep", "early", "fuzzy",
)  # fmt: skip
KEY_NOUNS = (
    "anchor", "barrel", "candle", "dune", "ember", "falcon", "garden", "harbor", "island", "jacket",
    "kettle", "lantern", "meadow", "needle", "orchard", "pebble", "quarry", "river", "saddle", "tower",
    "umbrella", "valley", "willow", "yarrow", "zephyr", "basket", "cliff", "drum", "forest", "glacier",
)  # fmt: skip


def draw_needle(seed: int, sample_key: str) -> tuple[str, str]:
    """The key ("quiet-harbor") and 7-digit value of one sample, from the run seed."""
    rng = rng_for(seed, "needle", sample_key)
    key = f"{rng.choice(KEY_ADJECTIVES)}-{rng.choice(KEY_NOUNS)}"
    return key, str(rng.randint(1_000_000, 9_999_999))


def sample_id_for(spec: NiahSpec, length: int, depth: float, index: int) -> str:
    if spec.multi_needle:
        return multi_sample_id(spec, length, depth, index)
    if spec.needle_style != "magic":
        distractor = "-distractor" if spec.distractor else ""
        return f"niah-{spec.needle_style}{distractor}/{length}/{depth:g}/{index}"
    return f"niah/{length}/{depth:g}/{index}"


def sample_ids(spec: NiahSpec) -> set[str]:
    """Every sample id the spec's grid has: a record with another id belongs to another run."""
    return {
        sample_id_for(spec, length, depth, index)
        for length in spec.lengths
        for depth in spec.depths
        for index in range(spec.samples_per_cell)
    }


def generate_samples(spec: NiahSpec, tokenizer: Any, source: HaystackSource) -> list[Sample]:
    """All samples of the grid, sorted by length, depth and sample index."""
    encoder = SegmentEncoder(tokenizer)
    chat = use_chat_template(tokenizer, spec.chat_template)
    samples: list[Sample] = []
    mentioned: frozenset[str] = frozenset()
    for index in range(spec.samples_per_cell):
        if index == 0 or spec.haystack_per_sample:
            haystack = TokenizedHaystack(encoder, source.units(index))
            if spec.needle_style != "magic":
                mentioned = mentioned_terms(source, index, max(spec.lengths))
        for length in spec.lengths:
            for depth in spec.depths:
                sample_id = sample_id_for(spec, length, depth, index)
                cell = GridCell(spec, tokenizer, encoder, haystack, chat, sample_id, length, depth, index)
                if spec.kind == "vartrack":
                    sample = build_chain_sample(cell)
                elif spec.multi_needle:
                    sample = build_multi(cell)
                else:
                    place = f"{length}/{depth:g}/{index}"
                    sample = _build(cell, needle_texts(spec, sample_id, place, depth, mentioned))
                samples.append(sample)
    samples.sort(key=lambda s: (s.target_length, s.depth, s.sample_index))
    return samples


@dataclass(frozen=True)
class NeedleTexts:
    """What one single-needle sample hides and asks, filled in."""

    key: str
    needle: str
    question: str
    answer: str
    answer_prefix: str
    instruction: str
    distractor: tuple[str, float] | None = None  # a character needle's distractor and its depth
    decoys: tuple[Decoy, ...] = ()  # the other characters of a character needle's prompt


def needle_texts(
    spec: NiahSpec, sample_id: str, cell: str, depth: float, mentioned: frozenset[str]
) -> NeedleTexts:
    """The spec's needle with this sample's key and value, or its character needle (``cell`` draws it,
    the same in both character styles; ``mentioned``: what the haystack already names)."""
    if spec.needle_style != "magic":
        drawn = draw_character(
            spec.seed, cell, spec.needle_style, mentioned, depth, spec.distractor, spec.needles
        )
        return NeedleTexts(
            drawn.key,
            drawn.needle,
            drawn.question,
            drawn.name,
            drawn.answer_prefix,
            CHARACTER_INSTRUCTION,
            drawn.distractor,
            drawn.decoys,
        )
    key, value = draw_needle(spec.seed, sample_id)
    needle = spec.needle

    def fill(template: str) -> str:
        return template.replace("{key}", key).replace("{value}", value)

    return NeedleTexts(
        key,
        fill(needle.needle),
        fill(needle.question),
        fill(needle.answer),
        fill(needle.answer_prefix),
        fill(needle.instruction),
    )


def _build(cell: GridCell, texts: NeedleTexts) -> Sample:
    spec, encoder, depth = cell.spec, cell.encoder, cell.depth
    prefix, suffix = prompt_frame(
        cell.tokenizer, encoder, texts.instruction, texts.question, texts.answer_prefix, cell.chat
    )
    answer_ids = encoder.encode((" " if texts.answer_prefix else "") + texts.answer)
    if len(answer_ids) > spec.answer_budget:
        raise UsageError(
            f"the answer {texts.answer!r} takes {len(answer_ids)} tokens, more than --answer-budget "
            f"{spec.answer_budget}; raise --answer-budget"
        )
    # The needle, then a character needle's decoys and its distractor, none of them asked: listed as
    # multi-needle samples list theirs (a decoy's value is its name; the distractor has none).
    unasked = [
        (PlacedNeedle(key=d.landmark, value=d.name, span=(0, 0), depth=d.depth), d.needle)
        for d in texts.decoys
    ]
    if texts.distractor:
        text, at = texts.distractor
        unasked.append((PlacedNeedle(key=texts.key, value="", span=(0, 0), depth=at), text))
    placements = [(texts.needle, depth)] + [(text, placed.depth) for placed, text in unasked]
    built = assemble_needles(prefix, suffix, cell.haystack, placements, cell.prompt_budget)
    needles = answer_spans = None
    if unasked:
        asked = PlacedNeedle(
            key=texts.key, value=texts.answer, span=built.needle_spans[0], depth=depth, query=0
        )
        needles = [asked] + [
            placed.model_copy(update={"span": span})
            for (placed, _), span in zip(unasked, built.needle_spans[1:], strict=True)
        ]
        answer_spans = [(0, len(answer_ids))]
    return cell.sample(
        built,
        key=texts.key,
        answer=texts.answer,
        needle_text=texts.needle,
        question=texts.question,
        answer_ids=answer_ids,
        needles=needles,
        answers=None if needles is None else [texts.answer],
        answer_value_spans=answer_spans,
    )
