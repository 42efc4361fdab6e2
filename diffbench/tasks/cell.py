"""One grid cell's sample being built: what every NIAH sample builder (single needle, multi-needle,
variable tracking) is given, and the Sample fields they all fill the same way."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from diffbench.haystack.fit import AssembledNeedles, SegmentEncoder, TokenizedHaystack
from diffbench.specs import NiahSpec, PlacedNeedle, Sample
from diffbench.tasks.prompt import prompt_sha256


@dataclass(frozen=True)
class GridCell:
    """The run's spec and the model's tokenizer frame, and the cell (length, depth, sample index)."""

    spec: NiahSpec
    tokenizer: Any
    encoder: SegmentEncoder
    haystack: TokenizedHaystack
    chat: bool
    sample_id: str
    length: int
    depth: float
    index: int

    @property
    def prompt_budget(self) -> int:
        """Tokens of the prompt: the length less what is reserved for the answer."""
        return self.length - self.spec.answer_budget

    def sample(
        self,
        built: AssembledNeedles,
        *,
        key: str,
        answer: str,
        needle_text: str,
        question: str,
        answer_ids: list[int],
        needles: list[PlacedNeedle] | None = None,
        answers: list[str] | None = None,
        answer_value_spans: list[tuple[int, int]] | None = None,
    ) -> Sample:
        """The Sample of an assembled prompt; its first needle is the one at the cell's depth."""
        return Sample(
            sample_id=self.sample_id,
            task="niah",
            target_length=self.length,
            depth=self.depth,
            sample_index=self.index,
            key=key,
            answer=answer,
            needle_text=needle_text,
            question=question,
            input_ids=built.input_ids,
            answer_ids=answer_ids,
            prompt_tokens=len(built.input_ids),
            needle_span=built.needle_spans[0],
            haystack_span=built.haystack_span,
            chat_template=self.chat,
            prompt_sha256=prompt_sha256(built.input_ids),
            needles=needles,
            answers=answers,
            answer_value_spans=answer_value_spans,
        )
