"""Turn one item's model outputs into the probe's verdict and the record's details; no model needed.

Generated text goes through the exact checks of metrics.py; forced choice compares candidates'
log-probabilities. The headline verdict of each probe (docs/design/probes.md) becomes the record's
``correct``, so every report that reads records (accuracy, McNemar, bootstraps) reads probe runs unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from diffbench.tasks.probes.core import ProbeItem, cut_at_stop
from diffbench.tasks.probes.metrics import (
    Lexicon,
    check_abstention,
    check_answer,
    check_choice,
    check_conflict,
    check_summary,
    pairwise_preferences,
    value_present,
)
from diffbench.tasks.probes.registry import PROBES


@dataclass(frozen=True)
class Verdict:
    correct: bool
    score: float
    prediction: str | None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ForcedOutputs:
    """Sum log-probs (and token counts) of each candidate with the document, and without it if asked."""

    logprobs: list[float]
    tokens: list[int]
    closed_logprobs: list[float] | None = None
    gold_greedy: bool = False  # greedy decoding would emit candidates[0] exactly


@dataclass(frozen=True)
class GeneratedOutputs:
    text: str
    closed_text: str | None = None
    ids: list[int] = field(default_factory=list)  # the generated tokens (for halluc --attn)


def others_of(item: ProbeItem, gold_index: int) -> list[tuple[str, str]]:
    return [
        (value, kind)
        for i, (value, kind) in enumerate(zip(item.candidates, item.candidate_kinds, strict=True))
        if i != gold_index and kind != "abstain"
    ]


def score_generated(item: ProbeItem, outputs: GeneratedOutputs, lexicon: Lexicon) -> Verdict:
    """The generate-and-check verdict: P1 hallucination-free, P2 correct ∧ grounded, P3 balanced parts,
    P4 follows the context (magic control: exact value)."""
    text = cut_at_stop(outputs.text, single_line=PROBES[item.probe].qa)
    base = {"probe": item.probe, "variant": item.variant, "mode": "generate", "raw_output": outputs.text}
    if item.probe == "factsum":
        summary = check_summary(
            text,
            item.context,
            item.template_text,
            lexicon,
            [tuple(pair) for pair in item.key_facts],  # type: ignore[misc]
            item.owners,
            item.ownership,
            item.fact_sentences,
        )
        return Verdict(
            summary.hallucination_free, float(summary.hallucination_free), text, {**base, **summary.as_dict()}
        )
    if item.probe == "factqa":
        answer = check_answer(
            text, item.candidates[0], others_of(item, 0), item.context, item.template_text, lexicon
        )
        return Verdict(answer.hallucination_free, answer.token_f1, text, {**base, **answer.as_dict()})
    if item.probe == "unanswerable":
        gold_index = 0 if item.answerable else item.candidate_kinds.index("removed")
        check = check_abstention(
            text,
            item.answerable,
            item.candidates[gold_index],
            others_of(item, gold_index),
            item.context,
            item.template_text,
            lexicon,
        )
        return Verdict(check.verdict, float(check.verdict), text, {**base, **check.as_dict()})
    if item.probe == "counterfactual":
        if item.variant == "magic":
            exact = value_present(item.candidates[0], text)
            return Verdict(exact, float(exact), text, {**base, "exact": exact})
        closed = None if outputs.closed_text is None else cut_at_stop(outputs.closed_text, single_line=True)
        conflict = check_conflict(text, item.extra["original"], item.extra["substitute"], closed)
        details = {**base, **conflict.as_dict(), "closed_book_output": closed}
        return Verdict(conflict.follow, float(conflict.follow), text, details)
    raise ValueError(f"probe {item.probe!r} has no generate-and-check mode")


def score_forced(item: ProbeItem, outputs: ForcedOutputs) -> Verdict:
    """The forced-choice verdict from candidates' log-probabilities (candidates[0] is always right)."""
    logprobs, kinds = outputs.logprobs, item.candidate_kinds
    base: dict[str, Any] = {
        "probe": item.probe,
        "variant": item.variant,
        "mode": "forced",
        "candidates": item.candidates if item.probe != "contrastive" else kinds,
        "logprobs": [round(lp, 6) for lp in logprobs],
        "tokens": outputs.tokens,
    }
    if item.probe == "contrastive":
        negatives = {kind: lp for kind, lp in zip(kinds[1:], logprobs[1:], strict=True)}
        wins = pairwise_preferences(logprobs[0], negatives)
        means = [lp / max(n, 1) for lp, n in zip(logprobs, outputs.tokens, strict=True)]
        wins_mean = pairwise_preferences(means[0], dict(zip(kinds[1:], means[1:], strict=True)))
        details = {**base, "wins": wins, "wins_per_token": wins_mean}
        if outputs.closed_logprobs is not None:
            details["context_gain"] = round(logprobs[0] - outputs.closed_logprobs[0], 6)
        share = sum(wins.values()) / len(wins)
        return Verdict(all(wins.values()), share, None, details)
    choice = check_choice(logprobs, kinds)
    prediction = item.candidates[choice.choice]
    details = {**base, **choice.as_dict()}
    if item.probe == "counterfactual" and item.variant == "conflict":
        delta = logprobs[0] - logprobs[1]  # log P(s) − log P(o)
        details["delta"] = round(delta, 6)
        if outputs.closed_logprobs is not None:
            delta0 = outputs.closed_logprobs[0] - outputs.closed_logprobs[1]
            details |= {
                "delta0": round(delta0, 6),
                "shift": round(delta - delta0, 6),
                "closed_book_known": delta0 < 0,
            }
        details |= {"follow": delta > 0, "parametric": delta < 0}
        return Verdict(delta > 0, float(delta > 0), prediction, details)
    if item.probe == "unanswerable":
        details["answerable"] = item.answerable
        verdict = choice.correct if item.answerable else choice.abstained
        return Verdict(verdict, float(verdict), prediction, details)
    return Verdict(choice.correct, float(choice.correct), prediction, details)


def run_lexicon(items: list[ProbeItem], own: Mapping[str, str] | None = None) -> Lexicon:
    """The run's global lexicon: every item's names and decoys (an item's own names win on a clash)."""
    table: dict[str, str] = {}
    for item in items:
        for alias, name in item.lexicon.items():
            table.setdefault(alias, name)
    if own:
        table.update(own)
    return Lexicon(table)
