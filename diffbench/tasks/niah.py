"""Needle-in-a-haystack samples over a depth × length grid (multi-needle ones: tasks/multi_needle.py).

All samples read one haystack stream from its start, as RULER and the original NIAH do: depth,
length and the needle are the only things that vary along the grid, and every prompt's text before
its needle is a prefix of one trunk, which the engine prefills once. ``haystack_per_sample`` gives
each sample index its own stream instead (more haystack variety, one trunk per index). The
needle's key and value are drawn per sample from the run seed. Same spec + same tokenizer gives
byte-identical samples.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

from diffbench.errors import UsageError
from diffbench.haystack.fit import SegmentEncoder, TokenizedHaystack, assemble
from diffbench.haystack.sources import HaystackSource
from diffbench.seeding import rng_for
from diffbench.specs import NiahSpec, Sample
from diffbench.tasks.multi_needle import (
    build_multi,
    multi_sample_id,
)
from diffbench.tasks.prompt import prompt_frame, use_chat_template

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
    for index in range(spec.samples_per_cell):
        if index == 0 or spec.haystack_per_sample:
            haystack = TokenizedHaystack(encoder, source.units(index))
        for length in spec.lengths:
            for depth in spec.depths:
                sample_id = sample_id_for(spec, length, depth, index)
                build = build_multi if spec.multi_needle else _build
                samples.append(
                    build(spec, tokenizer, encoder, haystack, chat, sample_id, length, depth, index)
                )
    samples.sort(key=lambda s: (s.target_length, s.depth, s.sample_index))
    return samples


def _build(
    spec: NiahSpec,
    tokenizer: Any,
    encoder: SegmentEncoder,
    haystack: TokenizedHaystack,
    chat: bool,
    sample_id: str,
    length: int,
    depth: float,
    index: int,
) -> Sample:
    key, value = draw_needle(spec.seed, sample_id)
    needle = spec.needle

    def fill(template: str) -> str:
        return template.replace("{key}", key).replace("{value}", value)

    question, answer, prefix_text = fill(needle.question), fill(needle.answer), fill(needle.answer_prefix)
    prefix, suffix = prompt_frame(tokenizer, encoder, fill(needle.instruction), question, prefix_text, chat)
    answer_ids = encoder.encode((" " if prefix_text else "") + answer)
    if len(answer_ids) > spec.answer_budget:
        raise UsageError(
            f"the answer {answer!r} takes {len(answer_ids)} tokens, more than --answer-budget "
            f"{spec.answer_budget}; raise --answer-budget"
        )
    prompt_tokens = length - spec.answer_budget
    built = assemble(prefix, suffix, haystack, fill(needle.needle), prompt_tokens, depth)
    digest = hashlib.sha256(struct.pack(f"<{len(built.input_ids)}q", *built.input_ids)).hexdigest()
    return Sample(
        sample_id=sample_id,
        task="niah",
        target_length=length,
        depth=depth,
        sample_index=index,
        key=key,
        answer=answer,
        needle_text=fill(needle.needle),
        question=question,
        input_ids=built.input_ids,
        answer_ids=answer_ids,
        prompt_tokens=len(built.input_ids),
        needle_span=built.needle_span,
        haystack_span=built.haystack_span,
        chat_template=chat,
        prompt_sha256=digest,
    )
