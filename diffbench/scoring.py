"""Scorers: RULER's substring rules for generated text, and the answer-boundary rule verdicts obey.

The boundary rule: an answer only counts when it ends. A gold string found inside a longer word or
number ("3943425" in "39434255552222") is not an answer, and a teacher-forced answer whose next
greedy token would extend it (the model goes on "…425" → "5") is not emitted by greedy decoding.
Runs made before the rule (their spec has ``answer_boundary`` false) keep RULER's plain substring.
"""

from __future__ import annotations

from typing import Any


def _extends(left: str, right: str) -> bool:
    """Whether ``right`` glued to ``left`` continues its last word: both sides letters or digits."""
    return bool(left) and bool(right) and left[-1].isalnum() and right[0].isalnum()


def contains_answer(text: str, answer: str, boundary: bool = True) -> bool:
    """Case-insensitive containment; with ``boundary`` only where no letter or digit glues onto it."""
    text, answer = text.lower(), answer.lower()
    if not boundary or not answer:
        return answer in text
    start = text.find(answer)
    while start >= 0:
        end = start + len(answer)
        if not _extends(text[:start], answer) and not _extends(answer, text[end:]):
            return True
        start = text.find(answer, start + 1)
    return False


def ruler_all(prediction: str, answers: list[str], boundary: bool = True) -> float:
    """RULER ``string_match_all``: the fraction of gold strings found in the output, case-insensitive."""
    if not answers:
        return 0.0
    return sum(contains_answer(prediction, answer, boundary) for answer in answers) / len(answers)


def ruler_part(prediction: str, answers: list[str], boundary: bool = True) -> float:
    """RULER ``string_match_part``: 1.0 when any gold string is in the output, case-insensitive."""
    return float(any(contains_answer(prediction, answer, boundary) for answer in answers))


def answer_ends(tokenizer: Any, answer_ids: list[int], next_id: int) -> bool:
    """Whether greedy decoding's next token after ``answer_ids`` leaves the answer ended.

    Decoded in context, so tokenizers that mark a leading space on the token (SentencePiece's ▁,
    byte-level BPE's Ġ) are read right; an end-of-sequence or other special token ends the answer.
    """
    answer = tokenizer.decode(answer_ids, skip_special_tokens=True)
    joined = tokenizer.decode([*answer_ids, next_id], skip_special_tokens=True)
    following = joined[len(answer) :] if joined.startswith(answer) else tokenizer.decode([next_id])
    return not _extends(answer, following)
