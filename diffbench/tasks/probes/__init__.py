"""Hallucination probes P1-P5 (docs/design/probes.md): seeded token-exact item generators, a module each.

``generate_items`` builds a run's items for one tokenizer: per probe, per length, ``samples`` items
whose gold material cycles over the depths. Same spec + same tokenizer gives identical items.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffbench.errors import UsageError
from diffbench.tasks.probes.core import MAX_FEWSHOT, Builder, ProbeItem

if TYPE_CHECKING:
    from diffbench.specs import HallucSpec

PROBE_NAMES = ("factsum", "factqa", "unanswerable", "counterfactual", "contrastive")
ALIASES = {"p1": "factsum", "p2": "factqa", "p3": "unanswerable", "p4": "counterfactual", "p5": "contrastive"}
MODES = ("generate", "forced", "both")


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


@contextlib.contextmanager
def _option(name: str, flag: str) -> Iterator[None]:
    """A check's usage error as the command line words it (``flag`` "--") or naming a task file's field."""
    try:
        yield
    except UsageError as error:
        if flag == "--":
            raise
        raise UsageError(f"field {name!r}: " + str(error).replace(f"--{name}", name)) from None


def build_halluc_spec(
    probes: str | list[str],
    lengths: list[int],
    depths: list[float],
    samples: int,
    seed: int,
    mode: str,
    chat_template: str,
    dataset: Path | None,
    judge: str | None,
    haystack: str = "prose",
    rope_scaling: str = "none",
    fewshot: int = 0,
    flag: str = "--",
) -> HallucSpec:
    """The HallucSpec of `diffbench halluc`'s options and of a ``task = "halluc"`` file: one code path,
    so both build the same spec (fingerprint, items). ``flag`` "" words errors for a file's fields."""
    from diffbench.specs import HallucSpec

    with _option("mode", flag):
        if mode not in MODES:
            raise UsageError(f"unknown --mode {mode!r}: use generate, forced or both")
    with _option("chat_template", flag):
        if chat_template not in ("auto", "on", "off"):
            raise UsageError(f"unknown --chat-template {chat_template!r}: use auto, on or off")
    with _option("rope_scaling", flag):
        if rope_scaling not in ("none", "dynamic", "yarn"):
            raise UsageError(f"unknown --rope-scaling {rope_scaling!r}: use none, dynamic or yarn")
    with _option("probes", flag):
        names = parse_probes(probes if isinstance(probes, str) else ",".join(probes))
    with _option("fewshot", flag):
        if not 0 <= fewshot <= MAX_FEWSHOT:
            raise UsageError(
                f"--fewshot {fewshot} is out of range: use 0 (none) to {MAX_FEWSHOT} worked examples"
            )
    fingerprint = ""
    if dataset is not None:
        from diffbench.tasks.probes.dataset import dataset_fingerprint, read_dataset

        with _option("dataset", flag):
            read_dataset(dataset)  # a missing file or a malformed line fails here, before any model loads
        fingerprint = dataset_fingerprint(dataset)
        names = ["dataset"]
    if judge is not None:
        from diffbench.specs import parse_judge

        with _option("judge", flag):
            judge = parse_judge(judge)
    return HallucSpec(
        probes=names,
        lengths=lengths,
        depths=depths,
        samples_per_cell=samples,
        seed=seed,
        mode=mode,  # type: ignore[arg-type]
        haystack=haystack,
        chat_template=chat_template,  # type: ignore[arg-type]
        rope_scaling=rope_scaling,  # type: ignore[arg-type]
        dataset=None if dataset is None else str(dataset.resolve()),
        dataset_fingerprint=fingerprint,
        judge=judge,
        fewshot=fewshot,
    )


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
