"""Pluggable judges of whether a response is supported by its context (PROBES.md, judge interface).

The rule-based checks stay the headline; a judge adds its own column, never mixed into it.
"""

from __future__ import annotations

from pathlib import Path

from diffbench.errors import UsageError
from diffbench.judges.base import Judge, JudgeItem, JudgeVerdict, RuleJudge

__all__ = ["Judge", "JudgeItem", "JudgeVerdict", "RuleJudge", "load_judge", "parse_judge"]


def parse_judge(text: str) -> str:
    """Validate --judge without loading anything: 'rule' or 'nli:PATH' (an existing directory)."""
    if text == "rule":
        return text
    kind, _, path = text.partition(":")
    if kind != "nli" or not path:
        raise UsageError(
            f"unknown --judge {text!r}: use 'rule' or 'nli:PATH' (a local NLI checkpoint directory)"
        )
    if not Path(path).is_dir():
        raise UsageError(
            f"--judge {text!r}: no checkpoint directory at {path!r}; pass the local directory of an "
            "AutoModelForSequenceClassification NLI model"
        )
    return f"nli:{Path(path).resolve()}"


def load_judge(text: str) -> Judge:
    """The judge a --judge value names, loaded (weights from local files only)."""
    text = parse_judge(text)
    if text == "rule":
        return RuleJudge()
    from diffbench.judges.nli import NLIJudge

    return NLIJudge(text.partition(":")[2])
