"""Training episodes for the zoo: generated prose with needles hidden in it, then a question about each.

An episode is laid out exactly like a diffbench NIAH prompt in a tokenizer without chat template
(BOS + instruction, a haystack opening with a paragraph break, needles between sentences, a blank
line, the question, the answer prefix) followed by the answer and EOS, so what the models learn is
the task the benchmark asks, on prose the benchmark never shows them (training streams are seeded
apart from evaluation streams). One to ``max_needles`` needles with distinct keys go in at random
sentence boundaries, so a model cannot pass by copying the only number in sight: it has to match
the key. Every needle is then asked in turn, in a random order (the first question and answer are
exactly the benchmark's prompt end): copying is the one skill a tiny model must learn here, and one
answer per 512 tokens proved too rare a signal for it to emerge within the recipe's budget.

Batches are a pure function of (seed, step), which is what makes a resumed training run see exactly
the batches an uninterrupted one would have.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from diffbench.haystack.fit import SegmentEncoder
from diffbench.haystack.prose import iter_prose_paragraphs
from diffbench.haystack.sources import PARAGRAPH_BREAK
from diffbench.seeding import derive_seed, rng_for
from diffbench.specs import NeedleSpec
from diffbench.tasks.niah import KEY_ADJECTIVES, KEY_NOUNS


@dataclass(frozen=True)
class Episode:
    """One training row: ids, the answer spans that carry answer loss, and where the questions start."""

    input_ids: list[int]
    answer_spans: tuple[tuple[int, int], ...]  # [start, end) of each answer, its EOS included
    question_start: int  # first token after the haystack (blank line + the first question)
    needle_ends: tuple[int, ...]


class EpisodeMaker:
    """Builds token-exact episodes of ``length`` tokens in one tokenizer."""

    def __init__(self, tokenizer: Any, length: int, max_needles: int) -> None:
        self.tokenizer = tokenizer
        self.encoder = SegmentEncoder(tokenizer)
        self.length = length
        self.max_needles = max_needles
        self.needle = NeedleSpec()
        instruction = tokenizer(self.needle.instruction, add_special_tokens=False)["input_ids"]
        self.prefix = self.encoder.special_prefix() + list(instruction)
        self.eos = [tokenizer.eos_token_id]

    def episode(self, seed: int, step: int, row: int) -> Episode:
        rng = rng_for(seed, "zoo-episode", step, row)
        count = rng.randint(1, self.max_needles)
        keys: list[str] = []
        while len(keys) < count:
            key = f"{rng.choice(KEY_ADJECTIVES)}-{rng.choice(KEY_NOUNS)}"
            if key not in keys:
                keys.append(key)
        values = [str(rng.randint(1_000_000, 9_999_999)) for _ in keys]
        asked = list(range(count))
        rng.shuffle(asked)

        def fill(template: str, index: int) -> str:
            return template.replace("{key}", keys[index]).replace("{value}", values[index])

        needles = self.encoder.encode_many([" " + fill(self.needle.needle, i) for i in range(count)])
        questions = self.encoder.encode_many(
            [
                "\n\n" + fill(self.needle.question, i) + "\n\n" + fill(self.needle.answer_prefix, i)
                for i in asked
            ]
        )
        answers = [self.encoder.encode(" " + values[i]) + self.eos for i in asked]
        fixed = len(self.prefix) + sum(map(len, needles)) + sum(map(len, questions)) + sum(map(len, answers))
        budget = self.length - fixed
        if budget < 16:
            raise ValueError(f"episodes of {self.length} tokens leave no room for a haystack")
        units, boundaries = self._haystack(derive_seed(seed, "zoo-haystack", step, row), budget)
        slots = sorted(rng.sample(boundaries, min(count, len(boundaries))))
        order = list(range(count))
        rng.shuffle(order)
        ids = list(self.prefix)
        needle_ends: list[int] = []
        cursor = 0
        for slot, index in zip(slots, order, strict=False):
            ids.extend(units[cursor:slot])
            ids.extend(needles[index])
            needle_ends.append(len(ids))
            cursor = slot
        ids.extend(units[cursor:])
        question_start = len(ids)
        spans: list[tuple[int, int]] = []
        for question, answer in zip(questions, answers, strict=True):
            ids.extend(question)
            spans.append((len(ids), len(ids) + len(answer)))
            ids.extend(answer)
        return Episode(ids, tuple(spans), question_start, tuple(needle_ends))

    def _haystack(self, seed: int, budget: int) -> tuple[list[int], list[int]]:
        """``budget`` ids of prose (cut at the end) and the sentence boundaries inside it."""
        ids: list[int] = []
        boundaries = [0]
        for paragraph in iter_prose_paragraphs(seed):
            texts = [(PARAGRAPH_BREAK if i == 0 else " ") + s for i, s in enumerate(paragraph)]
            for piece in self.encoder.encode_many(texts):
                ids.extend(piece)
                if len(ids) >= budget:
                    return ids[:budget], boundaries
                boundaries.append(len(ids))
        raise AssertionError("the prose generator is endless")  # pragma: no cover

    def batch(self, seed: int, step: int, rows: int) -> tuple[Any, Any, Any]:
        """(input_ids [rows, length], answer mask [rows, length], episodes) for one training step."""
        import torch

        episodes = [self.episode(seed, step, row) for row in range(rows)]
        input_ids = torch.tensor([e.input_ids for e in episodes], dtype=torch.long)
        answer_mask = torch.zeros_like(input_ids, dtype=torch.bool)
        for index, episode in enumerate(episodes):
            for start, end in episode.answer_spans:
                answer_mask[index, start:end] = True
        return input_ids, answer_mask, episodes


def skipped_positions(
    episodes: list[Episode], length: int, max_position: int, seed: int, step: int, skip_share: float
) -> Any:
    """PoSE-style position ids: a random jump before the question lets short rows span long distances.

    RoPE attention depends only on the distance between two positions, so a model trained on rows of
    ``length`` tokens has never seen the distance between a needle and a question 64K tokens later.
    For ``skip_share`` of the rows, every position from a random point before the question on is
    shifted by a random amount up to ``max_position - length``: the tokens stay contiguous on both
    sides (local patterns keep their distance 1) while the needle-to-question distance covers the
    whole target window (Zhu et al., 2023, "PoSE").
    """
    import torch

    positions = torch.arange(length).repeat(len(episodes), 1)
    for row, episode in enumerate(episodes):
        rng = rng_for(seed, "zoo-positions", step, row)
        if rng.random() >= skip_share:
            continue
        split = rng.randint(1, episode.question_start)
        positions[row, split:] += rng.randint(0, max_position - length)
    return positions
