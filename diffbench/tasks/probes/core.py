"""The shared generator core of the hallucination probes (docs: docs/design/probes.md §core).

Why synthetic: when every name and number in a context is drawn here, every claim a model makes
about it can be checked by code, exactly and offline. A ``FactWorld`` holds fictional companies
(with their people, cities and products) built from fixed syllable lists, and numbers that are
unique, non-round and never a substring of one another, so "4372" in an output points at exactly
one fact. Documents are fitted to a token budget in the evaluated model's own tokenizer, with the
gold material at a requested depth between filler sentences (the generated prose, which holds no
digits and no names).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict

from diffbench.errors import UsageError
from diffbench.haystack.fit import MIN_HAYSTACK_TOKENS, SegmentEncoder, TokenizedHaystack, nearest_boundary
from diffbench.tasks.probes.registry import PROBES
from diffbench.tasks.prompt import prompt_sha256

# ----------------------------------------------------------------------------- names

ONSETS = (
    "Vel", "Tor", "Kas", "Mir", "Zan", "Quo", "Bre", "Dro", "Fen", "Gal", "Har", "Jor", "Lum", "Nor",
    "Pra", "Ris", "Sol", "Tav", "Ulm", "Vex", "Wyn", "Yor", "Zel", "Cor", "Dav", "Esk", "Fal", "Gri",
    "Hol", "Isk", "Kel", "Mav", "Nev", "Orl", "Pel", "Qua", "Rov", "Sav", "Tes", "Vor",
)  # fmt: skip
MIDDLES = ("a", "e", "i", "o", "u", "ar", "en", "or", "il", "an", "ev", "os")
ENDINGS = (
    "trix", "dor", "vane", "ling", "sor", "mont", "ric", "dell", "wick", "ston", "nar", "vel", "quin",
    "rath", "zen", "bury", "holm", "gard", "lis", "mere", "thos", "drin", "kast", "lune",
)  # fmt: skip
FIRST_ENDINGS = ("a", "o", "i", "el", "an", "is", "ea", "en", "ia", "or")
COMPANY_SUFFIXES = ("Labs", "Systems", "Dynamics", "Industries", "Works", "Foods", "Motors", "Logistics")


@dataclass(frozen=True)
class Entity:
    """A fictional name and the shorter forms an output may use for it (aliases include the name)."""

    name: str
    kind: str
    aliases: tuple[str, ...]


class NameMaker:
    """Draws fictional names with no alias shared between two entities of one world (or its decoys)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = set()

    def _word(self, endings: Sequence[str]) -> str:
        return self.rng.choice(ONSETS) + self.rng.choice(MIDDLES) + self.rng.choice(endings)

    def _fresh(self, build: Any) -> Entity:
        for _ in range(1000):
            entity: Entity = build()
            lowered = {alias.lower() for alias in entity.aliases}
            clash = any(a == u or a in u.split() or u in a.split() for a in lowered for u in self.used)
            if not clash and len(lowered) == len(entity.aliases):
                self.used |= lowered
                return entity
        raise RuntimeError("name space exhausted")  # 40*12*24 stems: unreachable for worlds of ~30 names

    def company(self) -> Entity:
        def build() -> Entity:
            stem = self._word(ENDINGS)
            return Entity(f"{stem} {self.rng.choice(COMPANY_SUFFIXES)}", "company", ())

        def with_aliases() -> Entity:
            made = build()
            return Entity(made.name, "company", (made.name, made.name.split()[0]))

        return self._fresh(with_aliases)

    def person(self) -> Entity:
        def build() -> Entity:
            first = self.rng.choice(ONSETS) + self.rng.choice(FIRST_ENDINGS)
            last = self._word(ENDINGS)
            return Entity(f"{first} {last}", "person", (f"{first} {last}", last))

        return self._fresh(build)

    def single(self, kind: str) -> Entity:
        def build() -> Entity:
            word = self._word(ENDINGS)
            return Entity(word, kind, (word,))

        return self._fresh(build)

    def make(self, kind: str) -> Entity:
        if kind == "company":
            return self.company()
        if kind == "person":
            return self.person()
        return self.single(kind)


# ----------------------------------------------------------------------------- numbers

NUMERIC_KINDS = {
    "founded_year": "year",
    "launch_year": "year",
    "employees": "count",
    "revenue_musd": "decimal",
    "growth_pct": "percent",
}
ENTITY_ATTRIBUTES = {"hq_city": "city", "ceo": "person", "product": "product"}
ATTRIBUTES = (
    "founded_year",
    "employees",
    "hq_city",
    "ceo",
    "product",
    "revenue_musd",
    "growth_pct",
    "launch_year",
)


def digits(value: str) -> str:
    return re.sub(r"\D", "", value)


class NumberMaker:
    """Unique, non-round numbers, none a digit-substring of another (no 12 beside 1912)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: list[str] = []

    def _ok(self, text: str) -> bool:
        d = digits(text)
        return all(d not in other and other not in d for other in (digits(u) for u in self.used))

    def make(self, kind: str) -> str:
        """Canonical value text: '1923', '4372', '482.7', '13.6' (kind: year, count, decimal, percent)."""
        for _ in range(10_000):
            if kind == "year":
                text = str(self.rng.randint(1850, 2019))
            elif kind == "count":
                n = self.rng.randint(101, 9999)
                if n % 10 == 0:
                    continue
                text = str(n)
            elif kind == "decimal":
                text = f"{self.rng.randint(101, 989)}.{self.rng.randint(1, 9)}"
            else:
                text = f"{self.rng.randint(11, 89)}.{self.rng.randint(1, 9)}"
            if kind != "decimal" and kind != "percent" and text.endswith("0"):
                continue
            if self._ok(text):
                self.used.append(text)
                return text
        raise RuntimeError("number space exhausted")


def render_value(attribute: str, value: str) -> str:
    """The one canonical rendering of a value in documents (counts get a thousands comma)."""
    if NUMERIC_KINDS.get(attribute) == "count" and len(value) > 3:
        return f"{int(value):,}"
    return value


# ----------------------------------------------------------------------------- worlds


@dataclass(frozen=True)
class Fact:
    subject: str  # the company's name
    attribute: str
    value: str  # canonical value (number text or entity name)


@dataclass
class Company:
    entity: Entity
    values: dict[str, str]  # attribute → canonical value
    related: dict[str, Entity] = field(default_factory=dict)  # hq_city, ceo, product entities


@dataclass
class FactWorld:
    """The companies of one item (the first is focal), their facts, and decoy names never placed."""

    companies: list[Company]
    decoys: list[Entity]
    numbers: NumberMaker
    names: NameMaker

    @property
    def focal(self) -> Company:
        return self.companies[0]

    def facts(self, company: Company) -> list[Fact]:
        return [Fact(company.entity.name, a, company.values[a]) for a in ATTRIBUTES if a in company.values]

    def entities(self) -> list[Entity]:
        found = []
        for company in self.companies:
            found.append(company.entity)
            found += list(company.related.values())
        return found

    def lexicon(self) -> dict[str, str]:
        """Alias → canonical name for every entity of the world and every decoy."""
        table: dict[str, str] = {}
        for entity in [*self.entities(), *self.decoys]:
            for alias in entity.aliases:
                table[alias] = entity.name
        return table

    def owners(self) -> dict[str, str]:
        """Canonical name → its company, so a company's person, city and product own its numbers too."""
        table = {}
        for company in self.companies:
            table[company.entity.name] = company.entity.name
            for entity in company.related.values():
                table[entity.name] = company.entity.name
        return table


def make_world(
    rng: random.Random, companies: int, focal_attributes: Sequence[str], other_attributes: Sequence[str]
) -> FactWorld:
    """``companies`` companies: the focal one with ``focal_attributes``, the others ``other_attributes``."""
    names, numbers = NameMaker(rng), NumberMaker(rng)
    built: list[Company] = []
    for index in range(companies):
        attributes = focal_attributes if index == 0 else other_attributes
        company = Company(names.company(), {})
        for attribute in ATTRIBUTES:
            if attribute not in attributes:
                continue
            if attribute == "launch_year" and "product" not in attributes:
                continue
            if attribute in ENTITY_ATTRIBUTES:
                entity = names.make(ENTITY_ATTRIBUTES[attribute])
                company.related[attribute] = entity
                company.values[attribute] = entity.name
            else:
                company.values[attribute] = numbers.make(NUMERIC_KINDS[attribute])
        built.append(company)
    decoys = [names.make(kind) for kind in ("company", "person", "city", "product")]
    return FactWorld(built, decoys, numbers, names)


# ----------------------------------------------------------------------------- rendering

TEMPLATES: dict[str, tuple[str, ...]] = {
    "founded_year": (
        "{c} was founded in {v}.",
        "{c} was established in {v}.",
        "The founding of {c} dates back to {v}.",
    ),
    "employees": (
        "{c} employs {v} people.",
        "{c} has a workforce of {v} employees.",
        "The staff of {c} numbers {v} people.",
    ),
    "hq_city": (
        "{c} is headquartered in {v}.",
        "The headquarters of {c} are in {v}.",
        "{c} has its main office in {v}.",
    ),
    "ceo": (
        "{c} is led by chief executive {v}.",
        "The chief executive of {c} is {v}.",
        "{v} serves as the chief executive of {c}.",
    ),
    "product": (
        "The best-known product of {c} is the {v}.",
        "{c} is known for making the {v}.",
        "The {v} is the flagship product of {c}.",
    ),
    "revenue_musd": (
        "{c} reported revenue of {v} million dollars.",
        "Annual revenue at {c} reached {v} million dollars.",
        "{c} earned {v} million dollars in revenue last year.",
    ),
    "growth_pct": (
        "{c} grew by {v} percent last year.",
        "Sales at {c} rose {v} percent over the year.",
        "{c} posted growth of {v} percent.",
    ),
    "launch_year": (
        "{c} launched the {p} in {v}.",
        "The {p} from {c} first appeared in {v}.",
        "{c} brought the {p} to market in {v}.",
    ),
}

QUESTIONS = {
    "founded_year": "In what year was {c} founded?",
    "employees": "How many people does {c} employ?",
    "hq_city": "In which city is {c} headquartered?",
    "ceo": "Who is the chief executive of {c}?",
    "product": "What is the best-known product of {c}?",
    "revenue_musd": "What revenue did {c} report, in million dollars?",
    "growth_pct": "By what percentage did {c} grow last year?",
    "launch_year": "In what year did {c} launch the {p}?",
}
BRIDGE_QUESTIONS = {
    "hq_city": "In which city is the company led by {ceo} headquartered?",
    "founded_year": "In what year was the company led by {ceo} founded?",
    "employees": "How many people does the company led by {ceo} employ?",
    "revenue_musd": "What revenue did the company led by {ceo} report, in million dollars?",
}


def render_fact(company: Company, attribute: str, variant: int = 0) -> str:
    """One sentence stating a fact; ``variant`` picks the paraphrase (0 is the reference wording)."""
    templates = TEMPLATES[attribute]
    value = render_value(attribute, company.values[attribute])
    product = company.values.get("product", "")
    return templates[variant % len(templates)].format(c=company.entity.name, v=value, p=product)


def question_for(company: Company, attribute: str) -> str:
    return QUESTIONS[attribute].format(c=company.entity.name, p=company.values.get("product", ""))


# ----------------------------------------------------------------------------- items


class ProbeItem(BaseModel):
    """One token-exact probe prompt and everything its checks need (stored per tokenizer, like Sample)."""

    model_config = ConfigDict(extra="forbid")

    item_id: str
    probe: str
    variant: str
    target_length: int
    depth: float
    sample_index: int
    input_ids: list[int]
    prompt_tokens: int
    gold_span: tuple[int, int]
    prompt_sha256: str
    context: str  # the document as the model sees it (decoded from the prompt's ids)
    template_text: str  # instruction and question: numbers there are no hallucination
    question: str | None = None
    answer: str  # gold value, or the reference summary
    fact_sentences: list[str] = []  # sentences of facts in the document (the rest is filler)
    key_facts: list[tuple[str, str]] = []  # (subject, canonical value) the summary should carry
    owners: dict[str, str] = {}  # canonical entity → its company
    ownership: dict[str, str] = {}  # canonical number → the company whose fact it is
    lexicon: dict[str, str] = {}  # alias → canonical name (world + decoys)
    candidates: list[str] = []  # forced choice; candidates[0] is the gold answer
    candidate_kinds: list[str] = []  # gold | distractor | novel | abstain | negative op name
    candidate_ids: list[list[int]] = []
    closed_book_ids: list[int] | None = None  # the prompt without the document (P4, P5)
    answerable: bool = True
    max_new_tokens: int = 64
    answer_prefix: bool = True  # candidates follow an answer prefix (leading space)
    extra: dict[str, Any] = {}
    # Token regions for `halluc --attn` (None/empty in items stored before they were recorded):
    document_span: tuple[int, int] | None = None  # the document between the frame's prefix and suffix
    evidence_spans: list[tuple[int, int]] = []  # sentences that carry the gold answer (the needles)
    answer_spans: list[tuple[int, int]] = []  # tokens spelling the answer in them; [] when not in context
    response_start: int | None = None  # where the response header (chat turn, answer prefix) starts


@dataclass(frozen=True)
class Insert:
    """Text placed in the document at ``depth`` percent (nearest sentence boundary)."""

    depth: float
    text: str
    gold: bool = False
    separator: str = " "


@dataclass(frozen=True)
class Document:
    input_ids: list[int]
    gold_span: tuple[int, int]
    context: str
    span: tuple[int, int]  # the document (filler and inserts) within input_ids
    insert_spans: list[tuple[int, int]]  # each insert's tokens, in the order the inserts were given


def fit_document(
    tokenizer: Any,
    encoder: SegmentEncoder,
    prefix_ids: list[int],
    suffix_ids: list[int],
    haystack: TokenizedHaystack,
    inserts: Sequence[Insert],
    prompt_tokens: int,
) -> Document:
    """prefix + filler with the inserts at their depths + suffix, exactly ``prompt_tokens`` ids.

    Like haystack.fit.assemble, but with several inserts (facts, distractors, article headers): the
    filler gets what the inserts leave, cut at its end, and each insert goes in at the whole-sentence
    boundary nearest its depth, inserts at one boundary keeping their given order.
    """
    encoded = encoder.encode_many([insert.separator + insert.text for insert in inserts])
    fixed = len(prefix_ids) + len(suffix_ids) + sum(len(ids) for ids in encoded)
    budget = prompt_tokens - fixed
    if budget < MIN_HAYSTACK_TOKENS:
        raise UsageError(
            f"length {prompt_tokens} tokens is too short: template, question and facts alone take {fixed} "
            f"tokens, leaving {max(budget, 0)} for the filler (need at least {MIN_HAYSTACK_TOKENS}); "
            "use longer --lengths"
        )
    haystack.ensure(budget)
    boundaries, position = [0], 0
    for ids in haystack.unit_ids:
        position += len(ids)
        if position > budget:
            break
        boundaries.append(position)
    flat: list[int] = []
    for ids in haystack.unit_ids:
        if len(flat) >= budget:
            break
        flat.extend(ids)
    filler = flat[:budget]
    placed = sorted(
        (
            (nearest_boundary(boundaries, insert.depth / 100.0 * budget), order)
            for order, insert in enumerate(inserts)
        ),
    )
    body: list[int] = []
    cursor = 0
    spans: list[tuple[int, int]] = [(0, 0)] * len(inserts)
    for boundary, order in placed:
        body.extend(filler[cursor:boundary])
        cursor = boundary
        start = len(prefix_ids) + len(body)
        body.extend(encoded[order])
        spans[order] = (start, start + len(encoded[order]))
    body.extend(filler[cursor:])
    input_ids = prefix_ids + body + suffix_ids
    context = tokenizer.decode(body, skip_special_tokens=True)
    gold_span = next((span for span, insert in zip(spans, inserts, strict=True) if insert.gold), (0, 0))
    document = (len(prefix_ids), len(prefix_ids) + len(body))
    return Document(input_ids, gold_span, context, document, spans)


def evidence_regions(
    tokenizer: Any, document: Document, inserts: Sequence[Insert], answer: str, whole_gold: bool
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """The sentences that carry the gold answer, and the answer's own tokens in them.

    A value answer (a year, a name) is spelled by the inserts that contain it; a two-hop item's gold
    bridge sentence is evidence too. A summary answer (``whole_gold``) is the gold sentences whole.
    An answer in no insert (an unanswerable question) has no answer tokens: its attention cannot be
    split into answer and noise, and the analysis says so instead of counting it as zero.
    """
    from diffbench.haystack.fit import answer_span

    evidence, answers = [], []
    for insert, span in zip(inserts, document.insert_spans, strict=True):
        spelled = bool(answer) and not whole_gold and answer in insert.text
        if insert.gold or spelled:
            evidence.append(span)
        if spelled:
            answers.append(answer_span(document.input_ids, span, answer, tokenizer))
        elif whole_gold and insert.gold:
            answers.append(span)
    return evidence, answers


def response_header_start(tokenizer: Any, input_ids: list[int], header: str) -> int:
    """Where the response header (the chat's assistant turn, the answer prefix) begins in the prompt.

    Lookback Lens counts everything before the header as context and the header with the generated
    tokens as new; the header is the shortest run of final tokens whose text contains it.
    """
    wanted = header.strip()
    if not wanted:
        return len(input_ids)
    for count in range(1, len(input_ids) + 1):
        if wanted in tokenizer.decode(input_ids[-count:], skip_special_tokens=False):
            return len(input_ids) - count
    return len(input_ids)


def build_frame(
    tokenizer: Any, encoder: SegmentEncoder, instruction: str, question: str, answer_prefix: str, chat: bool
) -> tuple[list[int], list[int]]:
    """Token ids before and after the document: niah's prompt frame (template, instruction, question)."""
    from diffbench.tasks.prompt import prompt_frame

    return prompt_frame(tokenizer, encoder, instruction, question, answer_prefix, chat)


def response_header(tokenizer: Any, answer_prefix: str, chat: bool) -> str:
    """The text that opens the response: the chat template's assistant turn, then the answer prefix."""
    if not chat:
        return answer_prefix
    from diffbench.tasks.prompt import chat_turn

    return chat_turn(tokenizer)[1] + answer_prefix


def candidate_ids(encoder: SegmentEncoder, candidates: Iterable[str], after_prefix: bool) -> list[list[int]]:
    texts = [(" " if after_prefix else "") + text for text in candidates]
    return encoder.encode_many(texts) if texts else []


def closed_book(
    tokenizer: Any, encoder: SegmentEncoder, instruction: str, question: str, answer_prefix: str, chat: bool
) -> list[int]:
    """The same prompt with no document at all (closed-book runs, context_gain)."""
    prefix, suffix = build_frame(tokenizer, encoder, instruction, question, answer_prefix, chat)
    return prefix + suffix


# ----------------------------------------------------------------------------- prompts

QASPER_INSTRUCTION = (
    "You are given a scientific article and a question. Answer the question as concisely as you can, "
    "using a single phrase or sentence if possible. If the question cannot be answered based on the "
    'information in the article, write "unanswerable". If the question is a yes/no question, answer '
    '"yes", "no", or "unanswerable". Do not provide any explanation.\n\nArticle:'
)
QASPER_QUESTION = (
    "Answer the question based on the above article as concisely as you can, using a single phrase or "
    "sentence if possible. If the question cannot be answered based on the information in the article, write "
    '"unanswerable". If the question is a yes/no question, answer "yes", "no", or "unanswerable". Do not '
    "provide any explanation.\n\nQuestion: {question}"
)
HOTPOT_INSTRUCTION = (
    "Answer the question based on the given passages. Only give me the answer and do not output any "
    "other words.\n\nThe following are given passages."
)
HOTPOT_QUESTION = (
    "Answer the question based on the given passages. Only give me the answer and do not output any "
    "other words.\n\nQuestion: {question}"
)
ANSWER_PREFIX = "Answer:"
SUMMARY_INSTRUCTIONS = {
    "xsum": "You are given a document. Summarize the document in one sentence.\n#Document#:",
    "cnndm": "You are given a document. Summarize the document in three sentences.\n#Document#:",
    "multinews": "You are given several news passages. Write a one-page summary of all news.\n\nNews:",
}
SUMMARY_QUESTIONS = {
    "xsum": "Summarize the document above in one sentence.",
    "cnndm": "Summarize the document above in three sentences.",
    "multinews": "Now, write a one-page summary of all the news.",
}
SUMMARY_PREFIX = {"xsum": "#Summary#:", "cnndm": "#Summary#:", "multinews": "Summary:"}
# Lookback-Lens stop words: the model starting another document or turn ends its summary.
STOP_MARKERS = ("#Document#", "#Summary#", "\n\n\n", "<|im_end|>", "\nQuestion:", "\nArticle:")


def cut_at_stop(text: str, single_line: bool = False) -> str:
    """Generated text up to the first stop marker (QA answers: up to the first line break)."""
    text = text.strip()
    for marker in STOP_MARKERS:
        position = text.find(marker)
        if position >= 0:
            text = text[:position]
    if single_line:
        text = text.split("\n", 1)[0]
    return text.strip()


def seeded_depths(rng: random.Random, count: int, exclude: float | None = None) -> list[float]:
    """Depths for distractor sentences, spread over the document but away from the gold depth."""
    depths = []
    for _ in range(count):
        for _ in range(20):
            depth = rng.uniform(0, 100)
            if exclude is None or abs(depth - exclude) > 8:
                break
        depths.append(round(depth, 3))
    return depths


# ----------------------------------------------------------------------------- building items


# ----------------------------------------------------------------------------- few-shot demos

MAX_FEWSHOT = 8
DEMO_ATTRIBUTES = ("founded_year", "employees", "hq_city", "revenue_musd", "growth_pct")
DEMO_HEADER = "Here are worked examples of the task, each with its own document.\n\n"
DEMO_FOOTER = "Now the task itself.\n\n"


@dataclass(frozen=True)
class Demos:
    """Worked examples to put before an item's instruction, and the names they use (for the lexicon)."""

    text: str
    lexicon: dict[str, str]


def fewshot_demos(
    seed: int,
    item_id: str,
    count: int,
    abstain: bool,
    taken_names: Iterable[str],
    taken_numbers: Iterable[str],
) -> Demos:
    """``count`` short worked QA examples (document, question, answer) for base models (probe designs).

    Drawn from a stream of their own (``fewshot``, item id), with names and numbers disjoint from the
    item's, so an answer copied from a demo is a value the item's document does not hold (the checks
    count it as unsupported). With ``abstain`` (P3) every second demo asks what its document does not
    say and answers "unanswerable", as docs/design/probes.md's 2 + 2 demos for base models.
    """
    from diffbench.seeding import rng_for

    rng = rng_for(seed, "fewshot", item_id)
    names, numbers = NameMaker(rng), NumberMaker(rng)
    names.used |= {name.lower() for name in taken_names}
    numbers.used += list(taken_numbers)
    blocks, lexicon = [], {}
    for index in range(count):
        entity = names.company()
        stated = rng.sample(DEMO_ATTRIBUTES, 2)  # short: demos share the item's token budget
        company = Company(entity, {})
        for attribute in DEMO_ATTRIBUTES:
            if attribute == "hq_city":
                city = names.make("city")
                company.related[attribute], company.values[attribute] = city, city.name
            else:
                company.values[attribute] = numbers.make(NUMERIC_KINDS[attribute])
        unasked = abstain and index % 2 == 1
        asked = rng.choice([a for a in DEMO_ATTRIBUTES if a not in stated] if unasked else stated)
        answer = "unanswerable" if unasked else render_value(asked, company.values[asked])
        document = " ".join(render_fact(company, attribute, rng.randrange(3)) for attribute in stated)
        blocks.append(f"Document: {document}\nQuestion: {question_for(company, asked)}\nAnswer: {answer}")
        for named in (entity, *company.related.values()):
            lexicon.update({alias: named.name for alias in named.aliases})
    return Demos(DEMO_HEADER + "\n\n".join(blocks) + "\n\n" + DEMO_FOOTER, lexicon)


@dataclass
class Builder:
    """What every probe generator needs: the tokenizer, its segment encoder, the template mode, filler,
    and how many worked examples the QA probes' prompts open with (``fewshot``)."""

    tokenizer: Any
    seed: int
    chat: bool
    source: Any  # a HaystackSource (the generated prose: no digits, no names)
    fewshot: int = 0
    encoder: SegmentEncoder = field(init=False)

    def __post_init__(self) -> None:
        self.encoder = SegmentEncoder(self.tokenizer)

    def filler(self, item_id: str) -> TokenizedHaystack:
        from diffbench.seeding import derive_seed

        return TokenizedHaystack(self.encoder, self.source.units(derive_seed(self.seed, "filler", item_id)))

    def item(
        self,
        *,
        item_id: str,
        probe: str,
        variant: str,
        length: int,
        depth: float,
        index: int,
        instruction: str,
        question_text: str,
        answer_prefix: str,
        inserts: Sequence[Insert],
        whole_gold_answer: bool = False,
        **fields: Any,
    ) -> ProbeItem:
        """Fit the document and wrap it with everything the checks need; ``fields`` go to ProbeItem.

        ``whole_gold_answer``: the answer is a summary of the gold sentences, not a value spelled in them.
        With ``fewshot``, a QA probe's worked examples open the prompt; they are not part of the
        template the checks read (``template_text``), so a value copied from them is not supported.
        """
        opening = instruction
        if self.fewshot and PROBES[probe].qa:  # the QA probes: an answer after "Answer:"
            demos = fewshot_demos(
                self.seed,
                item_id,
                self.fewshot,
                probe == "unanswerable",
                fields.get("lexicon", {}),
                [*fields.get("ownership", {}), *(c for c in fields.get("candidates", []) if digits(c))],
            )
            opening = demos.text + instruction
            fields["lexicon"] = {**demos.lexicon, **fields.get("lexicon", {})}
        prefix_ids, suffix_ids = build_frame(
            self.tokenizer, self.encoder, opening, question_text, answer_prefix, self.chat
        )
        budget = length - fields.get("max_new_tokens", 64)
        try:
            document = fit_document(
                self.tokenizer, self.encoder, prefix_ids, suffix_ids, self.filler(item_id), inserts, budget
            )
        except UsageError as error:
            if opening is instruction:
                raise
            raise UsageError(f"{error} or fewer --fewshot examples (they take part of the length)") from None
        candidates = fields.pop("candidates", [])
        evidence, answers = evidence_regions(
            self.tokenizer, document, inserts, fields.get("answer", ""), whole_gold_answer
        )
        header = response_header(self.tokenizer, answer_prefix, self.chat)
        return ProbeItem(
            item_id=item_id,
            probe=probe,
            variant=variant,
            target_length=length,
            depth=depth,
            sample_index=index,
            input_ids=document.input_ids,
            prompt_tokens=len(document.input_ids),
            gold_span=document.gold_span,
            prompt_sha256=prompt_sha256(document.input_ids),
            context=document.context,
            template_text=f"{instruction}\n{question_text}\n{answer_prefix}",
            candidates=candidates,
            candidate_ids=candidate_ids(self.encoder, candidates, bool(answer_prefix)),
            answer_prefix=bool(answer_prefix),
            document_span=document.span,
            evidence_spans=evidence,
            answer_spans=answers,
            response_start=response_header_start(self.tokenizer, document.input_ids, header),
            **fields,
        )

    def closed_book(self, instruction: str, question_text: str, answer_prefix: str) -> list[int]:
        return closed_book(self.tokenizer, self.encoder, instruction, question_text, answer_prefix, self.chat)


def numeric_ownership(world: FactWorld) -> dict[str, str]:
    """Canonical number → the company whose fact it is."""
    from diffbench.tasks.probes.metrics import canonical_number

    table = {}
    for company in world.companies:
        for attribute, value in company.values.items():
            if attribute in NUMERIC_KINDS:
                whole, _, fraction = value.partition(".")
                table[canonical_number(whole, fraction or None)] = company.entity.name
    return table
