"""The deterministic checks of the hallucination probes (docs/design/probes.md P1–P5), on plain strings.

Every verdict is decided by exact lookups against what the generator placed: numbers are extracted
and normalised ("4,372" = "4372", "12.5 percent" = "12.5%"), names are found case-sensitively at word
boundaries in the run's lexicon (which includes decoys never placed, so an invented name is exact).
Nothing here imports torch; the checks run on stored records too (rescoring without the model).
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

# ----------------------------------------------------------------------------- normalisation


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


_NUMBER = re.compile(r"(?<![\w.,])(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?(?!\d)")
_WORD_UNITS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30,
    "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90,
}  # fmt: skip
_WORD_SCALES = {"hundred": 100, "thousand": 1000, "million": 1_000_000}
_NUMBER_WORD = re.compile(
    r"\b(?:(?:"
    + "|".join(sorted([*_WORD_UNITS, *_WORD_SCALES], key=len, reverse=True))
    + r")\b(?:[\s-]+(?:and[\s-]+)?)?)+",
    re.IGNORECASE,
)
# Number words up to ten are ordinary language ("one of its products"), not claims; they are skipped.
SMALL_WORD_NUMBER = 10


def canonical_number(integer: str, fraction: str | None = None) -> str:
    """'4,372' → '4372'; '12.50' → '12.5'; '7.0' → '7'."""
    whole = integer.replace(",", "").lstrip("0") or "0"
    fraction = (fraction or "").rstrip("0")
    return f"{whole}.{fraction}" if fraction else whole


def _word_number(phrase: str) -> int | None:
    """The value of a run of number words; a scale word alone ("482.7 million") is a unit, no number."""
    total = current = 0
    seen = False
    for word in re.split(r"[\s-]+", phrase.lower()):
        if word in _WORD_UNITS:
            current += _WORD_UNITS[word]
            seen = True
        elif word in _WORD_SCALES and (seen or total):
            scale = _WORD_SCALES[word]
            current = max(current, 1) * scale
            if scale >= 1000:
                total, current = total + current, 0
    return total + current if seen else None


def extract_numbers(text: str) -> set[str]:
    """Canonical numbers in a text: digits (with ',' and '.'; a following %/percent/unit changes nothing)
    and number words above ten ("four thousand three hundred" → '4300')."""
    found = {canonical_number(m.group(1), m.group(2)) for m in _NUMBER.finditer(text)}
    for match in _NUMBER_WORD.finditer(text):
        value = _word_number(match.group(0))
        if value is not None and value > SMALL_WORD_NUMBER:
            found.add(str(value))
    return found


class Lexicon:
    """Case-sensitive, word-boundary lookup of the run's names (aliases map to canonical names)."""

    def __init__(self, aliases: Mapping[str, str]) -> None:
        self.aliases = dict(aliases)
        ordered = sorted(self.aliases, key=len, reverse=True)  # "Velatrix Labs" before "Velatrix"
        self.pattern = (
            re.compile(r"(?<!\w)(" + "|".join(re.escape(a) for a in ordered) + r")(?!\w)")
            if ordered
            else None
        )
        self.words = {word for alias in self.aliases for word in alias.split()}

    def find(self, text: str) -> set[str]:
        if self.pattern is None:
            return set()
        return {self.aliases[m.group(1)] for m in self.pattern.finditer(text)}


_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*|\d[\d,.]*")
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "in",
        "on",
        "at",
        "to",
        "for",
        "by",
        "with",
        "from",
        "and",
        "or",
        "but",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "it",
        "its",
        "this",
        "that",
        "these",
        "those",
        "as",
        "has",
        "have",
        "had",
        "do",
        "does",
        "did",
        "not",
        "no",
        "so",
        "than",
        "then",
        "there",
        "their",
        "they",
        "he",
        "she",
        "his",
        "her",
        "we",
        "you",
        "i",
        "me",
        "my",
        "our",
        "your",
        "which",
        "who",
        "whom",
        "what",
        "when",
        "where",
        "why",
        "how",
        "also",
        "very",
        "can",
        "could",
        "would",
        "should",
        "will",
    ]
)


def split_sentences(text: str) -> list[str]:
    return [part.strip() for part in _SENTENCE_SPLIT.split(text) if part.strip()]


def words(text: str) -> list[str]:
    return [w.lower().rstrip(".,") for w in _WORD.findall(text)]


def content_tokens(text: str) -> list[str]:
    return [w for w in words(text) if w not in STOPWORDS]


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def unknown_capitalised(text: str, lexicon: Lexicon, context: str) -> list[str]:
    """Capitalised words, not sentence-initial, that are neither run names nor in the context.

    A weaker signal than the lexicon (reported apart): it catches names outside the syllable lists,
    and also ordinary proper nouns a model may add.
    """
    context_words = set(_WORD.findall(context))
    found: list[str] = []
    for sentence in split_sentences(text):
        tokens = _WORD.findall(sentence)
        for token in tokens[1:]:
            known = token in lexicon.words or token in context_words or token == "I"
            if token[0].isupper() and not known and token not in found:
                found.append(token)
    return found


def value_present(value: str, text: str) -> bool:
    """Whether an answer value (a number or a name) occurs in a text, after normalisation."""
    value_numbers = extract_numbers(value)
    if value_numbers and normalize_answer(value).replace(" ", "").replace(".", "").isdigit():
        return value_numbers <= extract_numbers(text)
    wanted = normalize_answer(value)
    return (
        bool(wanted) and re.search(rf"(?<!\w){re.escape(wanted)}(?!\w)", normalize_answer(text)) is not None
    )


def token_f1(prediction: str, gold: str) -> float:
    """LongBench's qa_f1_score: token F1 after SQuAD normalisation."""
    predicted, reference = normalize_answer(prediction).split(), normalize_answer(gold).split()
    common = Counter(predicted) & Counter(reference)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(reference)
    return 2 * precision * recall / (precision + recall)


def k_precision(output: str, context: str) -> float | None:
    """Share of the output's normalised tokens that occur in the context (None for an empty output)."""
    tokens = normalize_answer(output).split()
    if not tokens:
        return None
    known = set(normalize_answer(context).split())
    return sum(token in known for token in tokens) / len(tokens)


def novel_ngram_rate(output: str, context: str, n: int = 3) -> float | None:
    grams = ngrams(normalize_answer(output).split(), n)
    if not grams:
        return None
    known = set(ngrams(normalize_answer(context).split(), n))
    return sum(gram not in known for gram in grams) / len(grams)


ABSTAIN_PATTERN = re.compile(
    r"\b(unknown|unanswerable|not (mentioned|stated|given|provided|specified)|no (answer|information)"
    r"|cannot be (answered|determined)|insufficient information|does not (say|mention|specify))\b",
    re.IGNORECASE,
)


# ----------------------------------------------------------------------------- P1 FactSum


@dataclass(frozen=True)
class SummaryCheck:
    """P1's verdict on one summary and the secondaries (docs/design/probes.md P1)."""

    hallucination_free: bool
    unsupported_numbers: list[str]
    unsupported_entities: list[str]
    misattributed: list[tuple[str, str]]
    fact_recall: float
    degenerate: list[str]  # the reasons: short, copied_filler, repetition, no_facts
    number_precision: float | None
    entity_precision: float | None
    k_precision: float | None
    novel_3gram_rate: float | None
    unknown_capitalised: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


MIN_CONTENT_TOKENS = 3
COPIED_FILLER_SHARE = 0.6


def filler_text(context: str, fact_sentences: Iterable[str]) -> str:
    for sentence in fact_sentences:
        context = context.replace(sentence, " ")
    return context


def check_summary(
    output: str,
    context: str,
    template_text: str,
    lexicon: Lexicon,
    key_facts: Sequence[tuple[str, str]],
    owners: Mapping[str, str],
    ownership: Mapping[str, str],
    fact_sentences: Sequence[str] = (),
) -> SummaryCheck:
    """Unsupported numbers and names, misattributed (entity, number) pairs, recall and degeneracy."""
    numbers_out, numbers_doc = extract_numbers(output), extract_numbers(context)
    allowed_numbers = numbers_doc | extract_numbers(template_text)
    names_out, names_doc = lexicon.find(output), lexicon.find(context)
    misattributed: list[tuple[str, str]] = []
    for sentence in split_sentences(output):
        names = lexicon.find(sentence) & names_doc
        companies = {owners[name] for name in names if name in owners}
        for number in sorted(extract_numbers(sentence) & numbers_doc):
            owner = ownership.get(number)
            if owner is not None and owner not in companies:
                misattributed += [(name, number) for name in sorted(names)]
    recalled = sum(
        subject in names_out and (value in numbers_out or value in names_out) for subject, value in key_facts
    )
    recall = recalled / len(key_facts) if key_facts else 0.0
    reasons = degenerate_reasons(output, filler_text(context, fact_sentences))
    if recall == 0.0:
        reasons.append("no_facts")
    unsupported_numbers = sorted(numbers_out - allowed_numbers)
    unsupported_entities = sorted(names_out - names_doc)
    return SummaryCheck(
        hallucination_free=not (unsupported_numbers or unsupported_entities or misattributed or reasons),
        unsupported_numbers=unsupported_numbers,
        unsupported_entities=unsupported_entities,
        misattributed=misattributed,
        fact_recall=round(recall, 6),
        degenerate=reasons,
        number_precision=_share(numbers_out, allowed_numbers),
        entity_precision=_share(names_out, names_doc),
        k_precision=k_precision(output, context),
        novel_3gram_rate=novel_ngram_rate(output, context),
        unknown_capitalised=unknown_capitalised(output, lexicon, context + " " + template_text),
    )


def degenerate_reasons(output: str, filler: str) -> list[str]:
    """Why an output is no summary: too short, mostly copied filler, or one sentence repeated."""
    reasons = []
    if len(content_tokens(output)) < MIN_CONTENT_TOKENS:
        reasons.append("short")
    grams = ngrams(words(output), 8)
    if grams:
        filler_grams = set(ngrams(words(filler), 8))
        if sum(gram in filler_grams for gram in grams) / len(grams) > COPIED_FILLER_SHARE:
            reasons.append("copied_filler")
    sentences = [normalize_answer(s) for s in split_sentences(output)]
    sentences = [s for s in sentences if s]
    if len(sentences) != len(set(sentences)):
        reasons.append("repetition")
    return reasons


def _share(found: set[str], allowed: set[str]) -> float | None:
    return round(len(found & allowed) / len(found), 6) if found else None


# ----------------------------------------------------------------------------- P2 FactQA


@dataclass(frozen=True)
class AnswerCheck:
    """P2's verdict on one answer (docs/design/probes.md P2), and P3's abstention fields."""

    hallucination_free: bool
    correct: bool
    grounded: bool
    token_f1: float
    distractor_confusion: bool
    extrinsic: bool
    abstained: bool
    unsupported_numbers: list[str]
    unsupported_entities: list[str]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_answer(
    output: str,
    gold: str,
    others: Sequence[tuple[str, str]],
    context: str,
    template_text: str,
    lexicon: Lexicon,
) -> AnswerCheck:
    """``others``: (value, kind) of every other candidate; a hedge naming two values is not correct."""
    names_out = lexicon.find(output)

    def present(value: str) -> bool:  # a name also counts when named by an alias ("Kessling")
        return value_present(value, output) or value in names_out

    present_others = [(value, kind) for value, kind in others if present(value)]
    correct = present(gold) and not present_others
    numbers_out = extract_numbers(output)
    allowed_numbers = extract_numbers(context) | extract_numbers(template_text)
    allowed_names = lexicon.find(context) | lexicon.find(template_text)
    unsupported_numbers = sorted(numbers_out - allowed_numbers)
    unsupported_entities = sorted(names_out - allowed_names)
    grounded = not unsupported_numbers and not unsupported_entities
    abstained = (
        bool(ABSTAIN_PATTERN.search(output)) and not value_present(gold, output) and not present_others
    )
    return AnswerCheck(
        hallucination_free=correct and grounded,
        correct=correct,
        grounded=grounded,
        token_f1=round(token_f1(output, gold), 6),
        distractor_confusion=any(kind == "distractor" for _, kind in present_others),
        extrinsic=not grounded or any(kind == "novel" for _, kind in present_others),
        abstained=abstained,
        unsupported_numbers=unsupported_numbers,
        unsupported_entities=unsupported_entities,
    )


# ----------------------------------------------------------------------------- P3 abstention


@dataclass(frozen=True)
class AbstentionCheck:
    """P3 on one item: the verdict (abstain on unanswerable, correct on answerable) and fabrication."""

    answerable: bool
    verdict: bool
    abstained: bool
    fabricated: bool
    fabrication: str | None  # "bait" (an in-context value) or "extrinsic" (a value not in context)
    answer: AnswerCheck

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_abstention(
    output: str,
    answerable: bool,
    gold: str,
    others: Sequence[tuple[str, str]],
    context: str,
    template_text: str,
    lexicon: Lexicon,
) -> AbstentionCheck:
    answer = check_answer(output, gold, others, context, template_text, lexicon)
    if answerable:
        return AbstentionCheck(True, answer.correct, answer.abstained, False, None, answer)
    values = _claimed_values(output, template_text, lexicon)
    fabricated = not answer.abstained and bool(values)
    kind = None
    if fabricated:
        in_context = extract_numbers(context) | lexicon.find(context)
        kind = "bait" if values <= in_context else "extrinsic"
    return AbstentionCheck(False, answer.abstained, answer.abstained, fabricated, kind, answer)


def _claimed_values(output: str, template_text: str, lexicon: Lexicon) -> set[str]:
    """Numbers and names an answer asserts beyond those the question itself names."""
    numbers = extract_numbers(output) - extract_numbers(template_text)
    names = lexicon.find(output) - lexicon.find(template_text)
    return numbers | names


# ----------------------------------------------------------------------------- P4 counterfactual


@dataclass(frozen=True)
class ConflictCheck:
    """P4 on one answer: follows the context (substitute s), parametric (original o), or neither."""

    follow: bool
    parametric: bool
    closed_book_known: bool | None  # the no-context answer names o and not s (None: not run)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_conflict(output: str, original: str, substitute: str, closed_book: str | None) -> ConflictCheck:
    has_s, has_o = value_present(substitute, output), value_present(original, output)
    known = None
    if closed_book is not None:
        known = value_present(original, closed_book) and not value_present(substitute, closed_book)
    return ConflictCheck(follow=has_s and not has_o, parametric=has_o and not has_s, closed_book_known=known)


def memorization_ratio(parametric: int, follow: int) -> float | None:
    """Longpre's MR = p_o / (p_o + p_s); None when neither happened."""
    return parametric / (parametric + follow) if parametric + follow else None


# ----------------------------------------------------------------------------- forced choice


@dataclass(frozen=True)
class ChoiceCheck:
    """A forced choice over candidates' log-probabilities (candidates[0] is gold)."""

    choice: int
    choice_kind: str
    correct: bool
    abstained: bool  # an 'abstain' candidate beat every value
    margin: float  # gold minus the best other candidate

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_choice(logprobs: Sequence[float], kinds: Sequence[str]) -> ChoiceCheck:
    if not logprobs or len(logprobs) != len(kinds):
        raise ValueError("check_choice needs one log-prob per candidate kind")
    best = max(range(len(logprobs)), key=lambda i: (logprobs[i], -i))
    values = [lp for lp, kind in zip(logprobs, kinds, strict=True) if kind != "abstain"]
    abstain = [lp for lp, kind in zip(logprobs, kinds, strict=True) if kind == "abstain"]
    others = [lp for i, lp in enumerate(logprobs) if i != 0]
    return ChoiceCheck(
        choice=best,
        choice_kind=kinds[best],
        correct=best == 0,
        abstained=bool(abstain) and bool(values) and max(abstain) > max(values),
        margin=round(logprobs[0] - max(others), 6) if others else math.inf,
    )


def pairwise_preferences(positive: float, negatives: Mapping[str, float]) -> dict[str, bool]:
    """P5: s(y⁺) > s(y⁻_op) for every perturbation op."""
    return {op: positive > score for op, score in negatives.items()}
