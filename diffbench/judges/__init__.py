"""Pluggable judges of whether a response is supported by its context (docs/design/probes.md).

The rule-based checks stay the headline; a judge adds its own column, never mixed into it.
"""

from __future__ import annotations

from diffbench.judges.base import Judge, JudgeItem, JudgeVerdict, RuleJudge
from diffbench.specs import parse_judge

__all__ = ["Judge", "JudgeItem", "JudgeVerdict", "RuleJudge", "load_judge", "parse_judge"]


def load_judge(text: str) -> Judge:
    """The judge a --judge value names, loaded (weights from local files only)."""
    text = parse_judge(text)
    if text == "rule":
        return RuleJudge()
    from diffbench.judges.nli import NLIJudge

    return NLIJudge(text.partition(":")[2])
