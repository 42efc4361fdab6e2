"""Score an answer in one forward pass instead of decoding it.

Greedy decoding emits the answer exactly iff every answer token is the argmax given the prompt and
the answer tokens before it, so one forward pass over prompt + answer, keeping logits for the last
len(answer) + 1 positions only, gives the verdict, the answer's log-probability and the token greedy
decoding would emit after the answer (which must not extend it: see ``scoring.answer_ends``). No
length × vocabulary tensor is ever built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from diffbench.cache_api import forward_with_cache, generate_with_cache, new_dynamic_cache


@dataclass(frozen=True)
class AnswerScore:
    """The teacher-forced result and, when asked for, the greedy generation."""

    answer_logprob: float
    greedy_exact: bool
    generated_ids: list[int] | None = None
    # Per answer token, so a multi-needle answer can be scored value by value (connectors left out):
    token_logprobs: tuple[float, ...] = ()
    token_greedy: tuple[bool, ...] = ()
    # The argmax after prompt + answer[:k] for k = 0 .. len(answer): entry k is what greedy decoding
    # emits after the first k answer tokens, so entry `end` of a value span is the token that follows it.
    predicted_ids: tuple[int, ...] = ()

    def span(self, start: int, end: int) -> tuple[float, bool]:
        """Log-prob and greedy verdict of answer tokens [start, end), e.g. one asked value."""
        return sum(self.token_logprobs[start:end]), all(self.token_greedy[start:end])

    def following(self, end: int) -> int | None:
        """The greedy token after answer tokens [.., end); None for scores made without that row."""
        return self.predicted_ids[end] if end < len(self.predicted_ids) else None


def answer_stats(logits: Any, answer_ids: list[int]) -> tuple[float, bool]:
    """Sum of answer log-probs and whether each answer token is the argmax; logits: [len(answer), vocab]."""
    score = answer_score(logits, answer_ids)
    return score.answer_logprob, score.greedy_exact


def answer_score(logits: Any, answer_ids: list[int], generated_ids: list[int] | None = None) -> AnswerScore:
    """The AnswerScore of logits at the answer positions, [len(answer), vocab], or [len(answer) + 1, vocab]
    with the row after the answer too (the engine's), with per-token figures."""
    import torch

    logits = logits.float()
    count = len(answer_ids)
    targets = torch.tensor(answer_ids, device=logits.device)
    logprobs = torch.log_softmax(logits[:count], dim=-1).gather(-1, targets[:, None]).squeeze(-1)
    predicted = logits.argmax(dim=-1)
    hits = predicted[:count] == targets
    return AnswerScore(
        answer_logprob=float(logprobs.sum()),
        greedy_exact=bool(hits.all()),
        generated_ids=generated_ids,
        token_logprobs=tuple(float(v) for v in logprobs.tolist()),
        token_greedy=tuple(bool(v) for v in hits.tolist()),
        predicted_ids=tuple(int(v) for v in predicted.tolist()),
    )


def score_answer(model: Any, input_ids: list[int], answer_ids: list[int]) -> AnswerScore:
    """One forward pass over prompt + answer with logits for the answer positions and the one after."""
    import torch

    device = next(model.parameters()).device
    sequence = torch.tensor([input_ids + answer_ids], device=device)
    with torch.inference_mode():
        logits = model(input_ids=sequence, use_cache=False, logits_to_keep=len(answer_ids) + 1).logits[0]
    return answer_score(logits, answer_ids)


def score_and_generate(
    model: Any, input_ids: list[int], answer_ids: list[int], max_new_tokens: int, eos_token_id: Any
) -> AnswerScore:
    """Teacher-forced scoring and greedy generation sharing a single prefill of the prompt.

    The prompt is prefilled once into a KV cache; the answer is teacher-forced on top of it; the cache
    is then cropped back to all but the last prompt token and handed to ``generate()``.
    """
    import torch

    device = next(model.parameters()).device
    prompt = torch.tensor([input_ids], device=device)
    cache = new_dynamic_cache(model)
    with torch.inference_mode():
        first = forward_with_cache(model, prompt, cache, logits_to_keep=1).logits[0]
        rest = forward_with_cache(model, torch.tensor([answer_ids], device=device), cache).logits[0]
        logits = torch.cat([first, rest], dim=0)
        generated = greedy_continuation(model, prompt, cache, max_new_tokens, eos_token_id)
    return answer_score(logits, answer_ids, generated)


def greedy_continuation(
    model: Any, prompt: Any, cache: Any, max_new_tokens: int, eos_token_id: Any
) -> list[int]:
    """Greedy decoding after a prompt whose tokens (and possibly more) are already in ``cache``.

    The cache is cut to all but the last prompt token, which generate() feeds itself. (crop() takes a
    negative count of tokens to drop; a cache covering the whole prompt would duplicate it.)
    """
    import torch

    cache.crop(prompt.shape[1] - 1 - cache.get_seq_length())
    with torch.inference_mode():
        output = generate_with_cache(
            model,
            prompt,
            cache,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            eos_token_id=eos_token_id,
            pad_token_id=eos_token_id if isinstance(eos_token_id, int) else None,
        )
    return list(output[0, prompt.shape[1] :].tolist())
