"""Hallucination probes P1-P5 (docs/design/probes.md): seeded token-exact item generators, a module each.

``generate_items`` builds a run's items for one tokenizer: per probe, per length, ``samples`` items
whose gold material cycles over the depths. Same spec + same tokenizer gives identical items.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from diffbench.errors import UsageError
from diffbench.tasks.probes.core import Builder, ProbeItem

PROBE_NAMES = ("factsum", "factqa", "unanswerable", "counterfactual", "contrastive")
ALIASES = {"p1": "factsum", "p2": "factqa", "p3": "unanswerable", "p4": "counterfactual", "p5": "contrastive"}


def parse_probes(text: str) -> list[str]:
    """'factsum,p2' → ['factsum', 'factqa']: names or P1-P5, in the given order, each once."""
    names: list[str] = []
    for part in text.split(","):
        name = ALIASES.get(part.strip().lower(), part.strip().lower())
        if name not in PROBE_NAMES:
            raise UsageError(
                f"unknown probe {part.strip()!r} in --probes: use {', '.join(PROBE_NAMES)} (or p1-p5)"
            )
        if name not in names:
            names.append(name)
    return names


def builder_of(name: str) -> Callable[[Builder, int, float, int], ProbeItem]:
    from importlib import import_module

    module: Any = import_module(f"diffbench.tasks.probes.{name}")
    build: Callable[[Builder, int, float, int], ProbeItem] = module.build
    return build


def generate_items(spec: Any, tokenizer: Any, source: Any) -> list[ProbeItem]:
    """Every item of a HallucSpec in one tokenizer, ordered by probe, length and index."""
    from diffbench.tasks.niah import use_chat_template

    chat = use_chat_template(tokenizer, spec.chat_template)
    builder = Builder(tokenizer, spec.seed, chat, source, fewshot=spec.fewshot)
    items = []
    for name in spec.probes:
        build = builder_of(name)
        for length in spec.lengths:
            for index in range(spec.samples_per_cell):
                depth = spec.depths[index % len(spec.depths)]
                items.append(build(builder, length, depth, index))
    return items
