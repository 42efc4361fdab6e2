"""What diffbench knows about each hallucination probe, in one table: its name and alias, the modes it runs
in, what its forced-choice and generated scoring add (closed-book candidates, the judge column, worked
examples), so the generators, the runner and the checks read one entry instead of each keeping a list.

The probes' own logic stays in their modules (``factqa.py`` builds factqa's items) and in the scoring
and report functions that branch on it; this table holds the facts those places share.
"""

from __future__ import annotations

from dataclasses import dataclass

from diffbench.errors import UsageError


@dataclass(frozen=True)
class Probe:
    name: str
    alias: str | None  # p1-p5, as docs/design/probes.md numbers them; None for --dataset items
    generates: bool  # greedy text checked against the fact table (generate mode)
    forced: bool  # candidates' log-probs compared (forced mode)
    qa: bool  # a short answer after "Answer:": one line of text, and worked examples with --fewshot
    judged: bool  # --judge adds its column on the generated answers
    closed_book_candidates: int = 0  # forced mode also scores the first N candidates without the document
    closed_book_text: bool = False  # generate mode also decodes without the document


PROBES: dict[str, Probe] = {
    probe.name: probe
    for probe in (
        # name, alias, generates, forced
        Probe("factsum", "p1", True, False, qa=False, judged=True),
        Probe("factqa", "p2", True, True, qa=True, judged=True),
        Probe("unanswerable", "p3", True, True, qa=True, judged=True),
        Probe("counterfactual", "p4", True, True, qa=True, judged=False, closed_book_candidates=2,
              closed_book_text=True),
        Probe("contrastive", "p5", False, True, qa=False, judged=False, closed_book_candidates=1),
        Probe("dataset", None, True, False, qa=False, judged=True),
    )
}  # fmt: skip
PROBE_NAMES = tuple(name for name, probe in PROBES.items() if probe.alias is not None)  # the synthetic P1-P5
ALIASES = {probe.alias: name for name, probe in PROBES.items() if probe.alias is not None}


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


def modes_of(probe_name: str, mode: str) -> list[str]:
    """The modes an item runs in under --mode: those asked that the probe has (P1 only generates, P5
    only scores likelihoods); a probe with none of them runs in the one it has."""
    entry = PROBES[probe_name]
    wanted = ["generate", "forced"] if mode == "both" else [mode]
    modes = [m for m in wanted if (entry.generates if m == "generate" else entry.forced)]
    return modes or (["generate"] if entry.generates else ["forced"])
