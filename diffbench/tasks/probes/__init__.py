"""Hallucination probes P1-P5 (docs/design/probes.md): seeded token-exact item generators, a module each.

``generate_items`` builds a run's items for one tokenizer: per probe, per length, ``samples`` items
whose gold material cycles over the depths. Same spec + same tokenizer gives identical items.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from diffbench.tasks.probes.core import Builder, ProbeItem
from diffbench.tasks.probes.registry import PROBE_NAMES, parse_probes

__all__ = ["PROBE_NAMES", "builder_of", "generate_items", "parse_probes"]


def builder_of(name: str) -> Callable[[Builder, int, float, int], ProbeItem]:
    from importlib import import_module

    module: Any = import_module(f"diffbench.tasks.probes.{name}")
    build: Callable[[Builder, int, float, int], ProbeItem] = module.build
    return build


def generate_items(spec: Any, tokenizer: Any, source: Any) -> list[ProbeItem]:
    """Every item of a HallucSpec in one tokenizer, ordered by probe, length and index."""
    from diffbench.tasks.prompt import use_chat_template

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
