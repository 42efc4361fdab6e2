"""Score a list of prompts with shared-prefix prefill, in chunks, in bounded memory.

For each trunk of the plan (see ``prefix_plan``) one reserved KV cache is filled with the trunk up to
the next fork point; the branch (the prompt's remaining tokens + the answer, teacher-forced) runs on
top of it in chunks, logits are kept for the answer positions only, and the cache is cut back to the
fork. Memory is one full-length KV cache plus one chunk's activations, whatever the grid.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from diffbench.engine.kv_cache import ReservedCache, reserved_cache_for
from diffbench.engine.prefix_plan import plan_trunks
from diffbench.engine.teacher_forcing import AnswerScore, answer_stats, greedy_continuation


@dataclass(frozen=True)
class PromptJob:
    """One prompt to score; ``fork_hint`` is where it may stop sharing tokens with others (the needle)."""

    input_ids: list[int]
    answer_ids: list[int]
    fork_hint: int


@dataclass(frozen=True)
class Generation:
    """Greedy decoding after the teacher-forced pass, for tasks scored on text."""

    max_new_tokens: int
    eos_token_id: Any


@dataclass(frozen=True)
class ScoredJob:
    position: int
    score: AnswerScore
    seconds: float
    fork: int


def chunk_bounds(total: int, chunk: int, keep: int) -> list[tuple[int, int]]:
    """[start, end) chunks of at most ``chunk`` tokens, but the last holds all ``keep`` kept positions."""
    bounds = [(start, min(start + chunk, total)) for start in range(0, total, chunk)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < keep:
        start = bounds[-2][0]
        bounds[-2:] = [(start, total)]
    return bounds


class SharedPrefixEngine:
    """Runs PromptJobs on one model; yields each result as soon as it is finished."""

    def __init__(self, model: Any, chunk_tokens: int, share: bool = True) -> None:
        if chunk_tokens < 1:
            raise ValueError("chunk_tokens must be positive")
        self.model = model
        self.chunk_tokens = chunk_tokens
        self.share = share
        self.device = next(model.parameters()).device
        self.fed_tokens = 0

    def _feed(self, cache: ReservedCache, tokens: list[int], keep: int) -> Any:
        """Append ``tokens`` to the cache in chunks; logits [keep, vocab] for the last ``keep`` positions."""
        import torch

        logits = None
        for start, end in chunk_bounds(len(tokens), self.chunk_tokens, keep):
            last = end == len(tokens)
            piece = torch.tensor([tokens[start:end]], device=self.device)
            output = self.model(
                input_ids=piece, past_key_values=cache, use_cache=True, logits_to_keep=keep if last else 1
            )
            if last:
                logits = output.logits[0]
        self.fed_tokens += len(tokens)
        return logits

    def run(self, jobs: list[PromptJob], generation: Generation | None = None) -> Iterator[ScoredJob]:
        """Score every job (trunk by trunk, branches in ascending fork order)."""
        import torch

        if not jobs:
            return
        trunks = plan_trunks([j.input_ids for j in jobs], [j.fork_hint for j in jobs], self.share)
        extra = generation.max_new_tokens if generation else 0
        capacity = max(len(j.input_ids) + max(len(j.answer_ids), extra) for j in jobs)
        cache = reserved_cache_for(self.model, capacity)
        with torch.inference_mode():
            for trunk in trunks:
                cache.truncate(0)
                cached = 0
                for branch in trunk.branches:
                    started = time.perf_counter()
                    job = jobs[branch.position]
                    if branch.fork > cached:
                        self._feed(cache, trunk.tokens[cached : branch.fork], keep=1)
                        cached = branch.fork
                    score = self._score_branch(cache, job, branch.fork, generation)
                    cache.truncate(cached)
                    yield ScoredJob(branch.position, score, time.perf_counter() - started, branch.fork)

    def _score_branch(
        self, cache: ReservedCache, job: PromptJob, fork: int, generation: Generation | None
    ) -> AnswerScore:
        import torch

        answer = job.answer_ids
        if generation is None:
            logits = self._feed(cache, job.input_ids[fork:] + answer[:-1], keep=len(answer))
            logprob, greedy = answer_stats(logits, answer)
            return AnswerScore(answer_logprob=logprob, greedy_exact=greedy)
        parts = [self._feed(cache, job.input_ids[fork:], keep=1)]
        if len(answer) > 1:
            parts.append(self._feed(cache, answer[:-1], keep=len(answer) - 1))
        logprob, greedy = answer_stats(torch.cat(parts, dim=0), answer)
        prompt = torch.tensor([job.input_ids], device=self.device)
        generated = greedy_continuation(
            self.model, prompt, cache, generation.max_new_tokens, generation.eos_token_id
        )
        return AnswerScore(answer_logprob=logprob, greedy_exact=greedy, generated_ids=generated)
