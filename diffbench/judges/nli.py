"""NLIJudge: any local AutoModelForSequenceClassification NLI checkpoint, scored SummaC-ZS style.

Score = mean over response sentences of the max over context chunks of P(entail) − P(contradict);
the response is supported when the score exceeds ``threshold``. Label indices come from the
checkpoint's ``config.id2label`` (SummaC hard-codes them per model). Weights load from the given
directory only, with the hub switched off, and verdicts are cached by a hash of config and item.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from diffbench.errors import UsageError
from diffbench.judges.base import JudgeItem, JudgeVerdict
from diffbench.tasks.probes.metrics import split_sentences

CHUNK_WORDS = 300


def label_index(id2label: dict[Any, str], wanted: str) -> int:
    """The index whose label starts like ``wanted`` ('entail' matches ENTAILMENT, entailment, ...)."""
    for index, label in id2label.items():
        if str(label).lower().startswith(wanted[:6].lower()):
            return int(index)
    labels = ", ".join(str(label) for label in id2label.values())
    raise UsageError(f"the NLI checkpoint's labels ({labels}) have no {wanted!r} label; pass an NLI model")


def context_chunks(context: str, words: int = CHUNK_WORDS) -> list[str]:
    """Whole sentences grouped into chunks of about ``words`` words (SummaC's document blocks)."""
    chunks: list[str] = []
    current: list[str] = []
    count = 0
    for sentence in split_sentences(context):
        current.append(sentence)
        count += len(sentence.split())
        if count >= words:
            chunks.append(" ".join(current))
            current, count = [], 0
    if current:
        chunks.append(" ".join(current))
    return chunks or [""]


class NLIJudge:
    def __init__(
        self,
        path: str,
        entail_label: str = "entailment",
        contradiction_label: str = "contradiction",
        threshold: float = 0.5,
        granularity: str = "sentence",
    ) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if not Path(path).is_dir():
            raise UsageError(f"no NLI checkpoint directory at {path!r}; pass a local directory")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            self.model = AutoModelForSequenceClassification.from_pretrained(
                path, local_files_only=True
            ).eval()
        except (OSError, ValueError) as error:
            raise UsageError(
                f"cannot load the NLI checkpoint at {path!r}: {str(error).splitlines()[0]}"
            ) from None
        id2label = dict(self.model.config.id2label)
        self.entail = label_index(id2label, entail_label)
        self.contradict = label_index(id2label, contradiction_label)
        self.threshold = threshold
        self.granularity = granularity
        self.name = f"nli:{Path(path).name}"
        self.config = {"path": str(Path(path).resolve()), "threshold": threshold, "granularity": granularity}
        self.cache: dict[str, JudgeVerdict] = {}
        limit = getattr(self.model.config, "max_position_embeddings", 512) or 512
        self.max_length = min(int(getattr(self.tokenizer, "model_max_length", limit) or limit), int(limit))

    def pair_scores(self, premises: list[str], hypotheses: list[str]) -> list[float]:
        """P(entail) − P(contradict) per pair; the premise is the context, the hypothesis the response."""
        import torch

        batch = self.tokenizer(
            premises,
            hypotheses,
            truncation="only_first",
            max_length=self.max_length,
            padding=True,
            return_tensors="pt",
        )
        with torch.inference_mode():
            probs = torch.softmax(self.model(**batch).logits.float(), dim=-1)
        return (probs[:, self.entail] - probs[:, self.contradict]).tolist()

    def _one(self, item: JudgeItem) -> JudgeVerdict:
        sentences = split_sentences(item.response) if self.granularity == "sentence" else [item.response]
        if not sentences:
            return JudgeVerdict(None)
        chunks = context_chunks(item.context)
        premises = [chunk for _ in sentences for chunk in chunks]
        hypotheses = [sentence for sentence in sentences for _ in chunks]
        scores = self.pair_scores(premises, hypotheses)
        per_sentence = [max(scores[i * len(chunks) : (i + 1) * len(chunks)]) for i in range(len(sentences))]
        score = sum(per_sentence) / len(per_sentence)
        spans = tuple(s for s, value in zip(sentences, per_sentence, strict=True) if value <= self.threshold)
        return JudgeVerdict(score > self.threshold, score, spans)

    def judge(self, items: Sequence[JudgeItem]) -> list[JudgeVerdict]:
        verdicts = []
        for item in items:
            key = hashlib.sha256(json.dumps([self.config, asdict(item)], sort_keys=True).encode()).hexdigest()
            if key not in self.cache:
                self.cache[key] = self._one(item)
            verdicts.append(self.cache[key])
        return verdicts
