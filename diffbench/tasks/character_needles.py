"""Character needles: retrieval with and without a literal match between question and needle (NoLiMa's idea).

A magic-number needle shares its key with the question word for word, so a model can find it by
matching strings, which attention does well. NoLiMa (Modarressi et al., 2025) showed that scores fall
once the question and the needle share no words. Here every needle says that a character did
something at a landmark ("Yuki lives next to the Semper Opera House."), and two questions can ask
for the character:

- ``literal``: names the landmark and the act in the needle's own words ("Which character lives next
  to the Semper Opera House?");
- ``nonliteral``: names only the landmark's city ("Which character has been to Dresden?"). No word
  of that question occurs in the needle, so the model has to know the landmark is in Dresden and
  connect the two.

With ``distractor``, a second sentence names the question's key without any character ("Somebody at
the next table kept talking about Dresden."): a literal match that answers nothing, as NoLiMa's
distractors. A model that follows string matches may attend there instead of to the needle.

Every prompt holds ``CHARACTERS`` characters by default: the asked one and decoys, other names at
landmarks of other cities, so the question, not "the one name in the document", picks the character.

Both styles draw the same characters, landmarks, wordings and placements for a given seed and cell, so
two runs that differ only in the style are paired sample by sample: the literal run is the
non-literal run's control. A name, landmark or city that the haystack mentions is never drawn,
because a second mention would make the needle ambiguous or the city a literal distractor (a landmark
counts as mentioned by the distinctive part of its name too, ``LANDMARK_ALIASES``). Which
words the haystack mentions is read from its text, not from tokens, so every tokenizer gets the same
needles. The bank below was written for diffbench; none of it comes from NoLiMa's data.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, TypeVar

from diffbench.errors import HaystackError
from diffbench.haystack.sources import HaystackSource, Unit
from diffbench.seeding import rng_for

T = TypeVar("T")
CharacterStyle = Literal["literal", "nonliteral"]
STYLES: tuple[str, ...] = ("magic", "literal", "nonliteral")

# (landmark, its city). Each landmark stands in one city only, and no word of the city is in its name.
LANDMARKS: tuple[tuple[str, str], ...] = (
    ("the Semper Opera House", "Dresden"), ("the Sagrada Familia", "Barcelona"),
    ("the Kiyomizu-dera temple", "Kyoto"), ("the Hagia Sophia", "Istanbul"),
    ("the Brandenburg Gate", "Berlin"), ("the Colosseum", "Rome"),
    ("the Golden Gate Bridge", "San Francisco"), ("the Louvre", "Paris"),
    ("the Acropolis", "Athens"), ("the Alhambra", "Granada"), ("the Rijksmuseum", "Amsterdam"),
    ("the Atomium", "Brussels"), ("the Little Mermaid statue", "Copenhagen"),
    ("the Hermitage Museum", "Saint Petersburg"), ("the Prado Museum", "Madrid"),
    ("the Ponte Vecchio", "Florence"), ("the Rialto Bridge", "Venice"), ("the Charles Bridge", "Prague"),
    ("the Hofburg Palace", "Vienna"), ("the CN Tower", "Toronto"),
    ("the Christ the Redeemer statue", "Rio de Janeiro"), ("the Forbidden City", "Beijing"),
    ("the Petronas Towers", "Kuala Lumpur"), ("the Burj Khalifa", "Dubai"),
    ("the Gateway of India", "Mumbai"), ("the Taj Mahal", "Agra"), ("the Wawel Castle", "Krakow"),
    ("the Kremlin", "Moscow"), ("Table Mountain", "Cape Town"), ("the Hollywood sign", "Los Angeles"),
    ("the Senso-ji temple", "Tokyo"), ("the Marina Bay Sands hotel", "Singapore"),
    ("the Wat Arun temple", "Bangkok"), ("the Fisherman's Bastion", "Budapest"),
    ("the Belem Tower", "Lisbon"), ("the Vasa Museum", "Stockholm"), ("the Eiffel Tower", "Paris"),
    ("the Statue of Liberty", "New York"), ("the Alamo", "San Antonio"),
    ("the Cloud Gate sculpture", "Chicago"), ("Big Ben", "London"), ("the Blue Mosque", "Istanbul"),
    ("the Trevi Fountain", "Rome"), ("the Parthenon", "Athens"), ("the Manneken Pis", "Brussels"),
    ("the Sforza Castle", "Milan"), ("the Mole Antonelliana", "Turin"),
    ("the Shwedagon Pagoda", "Yangon"), ("Bondi Beach", "Sydney"), ("the Sky Tower", "Auckland"),
    ("the Obelisco", "Buenos Aires"), ("the Chapultepec Castle", "Mexico City"),
)  # fmt: skip
# The distinctive part of a landmark's name, which a haystack may use alone ("Hollywood", "the Prado"):
# a landmark whose name or alias the haystack mentions is never drawn.
LANDMARK_ALIASES: dict[str, tuple[str, ...]] = {
    "the Semper Opera House": ("Semperoper", "Semper Opera"), "the Kiyomizu-dera temple": ("Kiyomizu",),
    "the Brandenburg Gate": ("Brandenburg",), "the Golden Gate Bridge": ("Golden Gate",),
    "the Little Mermaid statue": ("Little Mermaid",), "the Hermitage Museum": ("Hermitage",),
    "the Prado Museum": ("Prado",), "the Ponte Vecchio": ("Vecchio",), "the Rialto Bridge": ("Rialto",),
    "the Hofburg Palace": ("Hofburg",), "the Christ the Redeemer statue": ("Christ the Redeemer",),
    "the Petronas Towers": ("Petronas",), "the Wawel Castle": ("Wawel",),
    "the Hollywood sign": ("Hollywood",),
    "the Senso-ji temple": ("Senso-ji", "Sensoji"), "the Marina Bay Sands hotel": ("Marina Bay",),
    "the Wat Arun temple": ("Wat Arun",), "the Fisherman's Bastion": ("Fishermen's Bastion",),
    "the Belem Tower": ("Belem",), "the Vasa Museum": ("Vasa",), "the Eiffel Tower": ("Eiffel",),
    "the Cloud Gate sculpture": ("Cloud Gate",), "the Trevi Fountain": ("Trevi",),
    "the Sforza Castle": ("Sforza",), "the Mole Antonelliana": ("Antonelliana",),
    "the Shwedagon Pagoda": ("Shwedagon",), "the Chapultepec Castle": ("Chapultepec",),
}  # fmt: skip
NAMES: tuple[str, ...] = (
    "Yuki", "Stuart", "Katie", "Veronica", "Gary", "Megan", "Calvin", "Mandy", "Diana", "Caleb",
    "Teresa", "Kevin", "Rachel", "Hassan", "Nadia", "Arjun", "Ingrid", "Tobias", "Leonie", "Mateo",
    "Priya", "Oskar", "Elena", "Dmitri", "Fatima", "Hugo", "Aiko", "Bruno", "Carmen", "Felix",
    "Wendy", "Jasper", "Lucia", "Omar", "Greta", "Ravi", "Sofia", "Victor", "Helga", "Malik",
)  # fmt: skip


# What a character did at a landmark: "{name} <act>." is the needle, "Which character <act>?" the literal
# question, the act word for word.
ACTS: tuple[str, ...] = (
    "lives next to {landmark}",
    "once took a photograph in front of {landmark}",
    "spent a whole afternoon sketching {landmark}",
    "waited for an old friend outside {landmark}",
)
NONLITERAL_ACT = "has been to {city}"
# Literal distractors (NoLiMa's): the question's own key, and no character, so they match the question
# word for word and answer nothing.
DISTRACTORS: tuple[str, ...] = (
    "A faded postcard from {key} was still pinned above the kitchen sink.",
    "Somebody at the next table kept talking about {key}.",
    "An old guidebook to {key} lay open on a shelf by the door.",
    "The radio ran a long story about {key} that evening.",
)
MIN_DISTRACTOR_GAP = 10.0  # percentage points between the needle's depth and the distractor's
# Characters per prompt by default: the asked one and three decoys at landmarks of other cities. With the
# asked character alone, "the one name in the document" answers any question about it, no association
# needed (SmolLM2 at 256 tokens answered 3 of 20 non-literal questions right while knowing none of
# those 3 landmarks' cities).
CHARACTERS = 4
# The haystack's people are roles ("the stallholder"); the needle's character is the one with a name.
INSTRUCTION = (
    "A long document follows. One character in it is mentioned by name. Read it carefully: afterwards "
    "you will be asked which character it was, and answering may take a reasonable inference from what "
    "the document says."
)
# Haystack text read for mentions: this many characters per token of the longest prompt (no tokenizer
# averages more), and never less than a 128K-token prompt's worth, so runs up to 128K draw alike.
CHARACTERS_PER_TOKEN_BOUND = 16
MIN_SCANNED_TOKENS = 131_072
_MAX_DRAWS = 1000


@dataclass(frozen=True)
class CharacterNeedle:
    """One sample's needle and the texts that ask for it, in one style."""

    name: str
    landmark: str
    city: str
    needle: str
    question: str
    answer_prefix: str
    key: str  # what the question names: the landmark (literal) or the city (nonliteral)
    distractor: tuple[str, float] | None = None  # a sentence naming the key and no character, its depth
    decoys: tuple[Decoy, ...] = ()  # the other characters, never asked


@dataclass(frozen=True)
class Decoy:
    """Another character at a landmark of another city: a name the question must tell apart."""

    name: str
    landmark: str
    needle: str
    depth: float


def draw_character(
    seed: int,
    cell: str,
    style: CharacterStyle,
    mentioned: frozenset[str],
    depth: float,
    distractor: bool,
    characters: int = CHARACTERS,
) -> CharacterNeedle:
    """The needle of one cell and sample index (``cell``), the same for both styles, any number of
    characters and with or without a distractor; nothing the haystack mentions is drawn. The
    ``characters − 1`` decoys have other names and landmarks of other cities, at seeded depths. The
    distractor names the question's key at a depth drawn at least ``MIN_DISTRACTOR_GAP`` points from
    the needle's. Each draws from its own stream, so adding one never changes another."""
    rng = rng_for(seed, "character-needle", cell)
    name = _draw(rng, NAMES, lambda n: n not in mentioned, "character names")
    landmark, city = _draw(
        rng, LANDMARKS, lambda pair: not mentioned.intersection(pair), "landmarks or their cities"
    )
    act = rng.choice(ACTS).replace("{landmark}", landmark)
    asked = act if style == "literal" else NONLITERAL_ACT.replace("{city}", city)
    key = landmark if style == "literal" else city
    decoys = _draw_decoys(seed, cell, characters - 1, mentioned, name, city)
    placed = None
    if distractor:
        own = rng_for(seed, "character-distractor", cell)  # its own stream: the needle draws stay as they are
        text = own.choice(DISTRACTORS).replace("{key}", key)
        at = round(own.uniform(0.0, 100.0), 2)
        while abs(at - depth) < MIN_DISTRACTOR_GAP:
            at = round(own.uniform(0.0, 100.0), 2)
        placed = (text, at)
    return CharacterNeedle(
        name=name,
        landmark=landmark,
        city=city,
        needle=f"{name} {act}.",
        question=f"Which character {asked}?",
        answer_prefix=f"The character who {asked} is",
        key=key,
        distractor=placed,
        decoys=decoys,
    )


def _draw_decoys(
    seed: int, cell: str, count: int, mentioned: frozenset[str], name: str, city: str
) -> tuple[Decoy, ...]:
    """``count`` other characters: distinct names, each at a landmark whose city is neither the asked
    one's nor another decoy's, so "has been to <city>" fits the asked character alone."""
    rng = rng_for(seed, "character-decoys", cell)
    names = [n for n in NAMES if n != name and n not in mentioned]
    cities = {city}
    decoys = []
    for _ in range(count):
        if not names:
            raise HaystackError(
                "the haystack mentions too many of diffbench's character names for this many decoys: "
                "use fewer --needles or another --haystack"
            )
        decoy_name = names.pop(rng.randrange(len(names)))
        landmark, decoy_city = _draw(
            rng,
            LANDMARKS,
            lambda pair: pair[1] not in cities and not mentioned.intersection(pair),
            "landmarks or their cities for the decoys",
        )
        cities.add(decoy_city)
        act = rng.choice(ACTS).replace("{landmark}", landmark)
        decoys.append(Decoy(decoy_name, landmark, f"{decoy_name} {act}.", round(rng.uniform(0.0, 100.0), 2)))
    return tuple(decoys)


def association_in(needle_text: str) -> tuple[str, str] | None:
    """The (landmark, city) a character needle names, read back from its text; None for other needles."""
    found = [pair for pair in LANDMARKS if pair[0] in needle_text]
    return max(found, key=lambda pair: len(pair[0])) if found else None


def knowledge_question(landmark: str) -> tuple[str, str]:
    """The closed-book question whether a model knows a landmark's city, and its answer prefix: the
    association a non-literal question relies on, asked with no document (NoLiMa keeps only needles
    whose association the model knows; diffbench records it per sample instead)."""
    return f"In which city is {landmark}?", f"{landmark[0].upper()}{landmark[1:]} is in"


def _draw(rng: random.Random, pool: tuple[T, ...], usable: Callable[[T], bool], what: str) -> T:
    """A uniform draw from ``pool`` that skips unusable items (rejection keeps every other draw as it was)."""
    if not any(usable(item) for item in pool):
        raise HaystackError(
            f"the haystack mentions every one of diffbench's {len(pool)} {what}, so no character needle "
            "is unambiguous in it: use another --haystack or --needle-style magic"
        )
    for _ in range(_MAX_DRAWS):
        item = rng.choice(pool)
        if usable(item):
            return item
    usable_items = [item for item in pool if usable(item)]
    return rng.choice(usable_items)


def mentioned_terms(source: HaystackSource, sample_index: int, longest_prompt: int) -> frozenset[str]:
    """The names, landmarks and cities of the bank that the haystack stream of ``sample_index`` mentions,
    as whole words; a file haystack is read whole, a generated one far enough for any prompt length."""
    if source.paragraphs is not None:
        return _mentioned_in(source, 0, 0)  # every index reads the same text, rotated
    limit = CHARACTERS_PER_TOKEN_BOUND * max(longest_prompt, MIN_SCANNED_TOKENS)
    return _mentioned_in(source, sample_index, limit)


@functools.lru_cache(maxsize=32)
def _mentioned_in(source: HaystackSource, sample_index: int, characters: int) -> frozenset[str]:
    """``mentioned_terms``, once per stream: every tokenizer of a run, and every run of a process, reads
    the same text."""
    if source.paragraphs is not None:
        text = "\n".join(" ".join(paragraph) for paragraph in source.paragraphs)
    else:
        text = _text_of(source.units(sample_index), characters)
    phrases: dict[str, tuple[str, ...]] = {term: (term,) for term in (*NAMES, *(c for _, c in LANDMARKS))}
    phrases |= {
        landmark: (landmark.removeprefix("the "), *LANDMARK_ALIASES.get(landmark, ()))
        for landmark, _ in LANDMARKS
    }
    return frozenset(_mentioned(text, phrases))


def _text_of(units: Iterable[Unit], characters: int) -> str:
    parts: list[str] = []
    total = 0
    for unit in units:
        if total >= characters:
            break
        parts.append(unit.sentence)
        total += len(unit.sentence) + 1
    return " ".join(parts)


def _mentioned(text: str, phrases: dict[str, tuple[str, ...]]) -> set[str]:
    """The terms any of whose phrases occurs in ``text`` as whole words, case and apostrophe style aside.
    Only a phrase whose every word occurs somewhere is searched for."""
    lowered = text.lower().replace("\u2019", "'")
    words = set(re.findall(r"\w+", lowered))
    found = set()
    for term, own in phrases.items():
        for phrase in (p.lower() for p in own):
            if not all(word in words for word in re.findall(r"\w+", phrase)):
                continue
            if re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", lowered):
                found.add(term)
                break
    return found
