"""The judge interface: items to judge, verdicts, and the rule-based default.

A judge answers "is this response supported by this context?" for a batch of items. Verdicts carry
a score when the judge has one and the spans it objects to; ``supported=None`` means the judge could
not decide (an empty response, an unparseable judge output).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from diffbench.tasks.probes.metrics import extract_numbers, k_precision


@dataclass(frozen=True)
class JudgeItem:
    task: Literal["summarization", "qa"]
    context: str
    response: str
    question: str | None = None
    reference: str | None = None  # fact-table rendering or dataset gold


@dataclass(frozen=True)
class JudgeVerdict:
    supported: bool | None  # None = unparseable / abstained
    score: float | None = None  # e.g. P(consistent)
    problematic_spans: tuple[str, ...] = ()
    raw: str | None = None


class Judge(Protocol):
    name: str  # recorded with the verdicts

    def judge(self, items: Sequence[JudgeItem]) -> list[JudgeVerdict]: ...


class RuleJudge:
    """The checks that hold on any text: every number in the response occurs in the context or question.

    Its score is K-Precision (the share of response tokens found in the context). Names need the
    probes' lexicon, so the probes' own checks (metrics.py) are stricter than this judge.
    """

    name = "rule"

    def judge(self, items: Sequence[JudgeItem]) -> list[JudgeVerdict]:
        verdicts = []
        for item in items:
            if not item.response.strip():
                verdicts.append(JudgeVerdict(None))
                continue
            allowed = extract_numbers(item.context) | extract_numbers(item.question or "")
            unsupported = sorted(extract_numbers(item.response) - allowed)
            verdicts.append(
                JudgeVerdict(not unsupported, k_precision(item.response, item.context), tuple(unsupported))
            )
        return verdicts


def judge_item(judge: Judge, item: Any, response: str) -> dict[str, Any]:
    """One probe item's judge column for its record."""
    task: Literal["summarization", "qa"] = "qa" if item.question else "summarization"
    verdict = judge.judge(
        [JudgeItem(task, item.context, response, question=item.question, reference=item.answer or None)]
    )[0]
    return {
        "name": judge.name,
        "supported": verdict.supported,
        "score": None if verdict.score is None else round(verdict.score, 6),
        "problematic_spans": list(verdict.problematic_spans),
    }
