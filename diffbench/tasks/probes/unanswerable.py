"""P3 Unanswerable: a P2 item with its supporting sentence removed (or about a decoy company).

Half the items are the answerable originals (controls), so abstaining on everything scores 0.5 in
balanced accuracy, not 1. The prompt is LongBench-Qasper's, which asks for "unanswerable".
"""

from __future__ import annotations

from diffbench.tasks.probes.core import Builder, ProbeItem
from diffbench.tasks.probes.factqa import build_qa


def build(builder: Builder, length: int, depth: float, index: int) -> ProbeItem:
    """Even indices: answerable controls; odd: unanswerable, every third of those about a decoy company."""
    if index % 2 == 0:
        return build_qa(builder, "unanswerable", "control", length, depth, index)
    decoy = index % 6 == 5
    variant = "decoy" if decoy else "removed"
    return build_qa(
        builder, "unanswerable", variant, length, depth, index, supported=False, decoy_subject=decoy
    )
