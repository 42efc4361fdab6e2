"""Score a list of prompts with shared-prefix prefill, in chunks, in bounded memory.

For each trunk of the plan (see ``prefix_plan``) one reserved KV cache is filled with the trunk up to
the next fork point; the branch (the prompt's remaining tokens + the answer, teacher-forced) runs on
top of it in chunks, logits are kept for the answer positions and the one after the answer only, and
the cache is cut back to the fork. Memory is one full-length KV cache plus one chunk's activations,
whatever the grid.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

from diffbench.attention.chunked import last_layer_rows
from diffbench.cache_api import forward_with_cache
from diffbench.engine.kv_cache import ReservedCache, reserved_cache_for
from diffbench.engine.prefix_plan import Branch, Trunk, plan_trunks
from diffbench.engine.teacher_forcing import AnswerScore, answer_score, greedy_continuation


@dataclass(frozen=True)
class PromptJob:
    """One prompt to score; ``fork_hint`` is where it may stop sharing tokens with others (the needle)."""

    input_ids: list[int]
    answer_ids: list[int]
    fork_hint: int
    decode: bool = True  # when the run decodes (a Generation), whether this job does; else scored only


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
    while len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < keep:  # chunks shorter than the answer too
        bounds[-2:] = [(bounds[-2][0], total)]
    return bounds


class SharedPrefixEngine:
    """Runs PromptJobs on one model; yields each result as soon as it is finished.

    With ``batch_size`` > 1, branches of the same length whose fork points lie within one chunk (the
    samples of a cell, and neighbouring depth cells) run as one batch on copies of the trunk's cache:
    worth it on a GPU, where one short sequence leaves the device idle; on a 2-core CPU one sequence
    already fills it.
    """

    def __init__(
        self,
        model: Any,
        chunk_tokens: int,
        share: bool = True,
        batch_size: int = 1,
        last_rows_only: bool = True,
    ) -> None:
        if chunk_tokens < 1 or batch_size < 1:
            raise ValueError("chunk_tokens and batch_size must be positive")
        self.model = model
        self.chunk_tokens = chunk_tokens
        self.share = share
        self.batch_size = batch_size
        self.last_rows_only = last_rows_only
        self.device = next(model.parameters()).device
        self.fed_tokens = 0
        self.feed_seconds = 0.0  # wall time of the forward passes alone (decoding and scoring excluded)
        self.batched_rows = 0

    def prefill_rate(self) -> dict[str, object]:
        """Tokens fed per second of forward passes, for the run's cost table (prefill + forced answers)."""
        rate = self.fed_tokens / self.feed_seconds if self.feed_seconds > 0 else None
        return {
            "prefill_tokens": self.fed_tokens,
            "prefill_seconds": round(self.feed_seconds, 3),
            "prefill_tokens_per_second": None if rate is None else round(rate, 1),
        }

    def _feed(self, cache: ReservedCache, rows: list[list[int]], keep: int, read: bool = True) -> Any:
        """Append equal-length ``rows`` in chunks; logits [rows, keep, vocab] of the last ``keep`` tokens
        (``read=False``: a trunk, whose logits nobody reads). Only the chunk whose logits are read runs
        the last layer's attention, and only for the kept rows (``chunked.last_layer_rows``)."""
        import torch

        logits = None
        total = len(rows[0])
        started = time.perf_counter()
        for start, end in chunk_bounds(total, self.chunk_tokens, keep):
            last = end == total
            piece = torch.tensor([row[start:end] for row in rows], device=self.device)
            needed = keep if last and read else 0
            with last_layer_rows(self.model, needed) if self.last_rows_only else nullcontext():
                output = forward_with_cache(self.model, piece, cache, logits_to_keep=keep if last else 1)
            if last:
                logits = output.logits
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # kernels run asynchronously: time their end
        self.feed_seconds += time.perf_counter() - started
        self.fed_tokens += total * len(rows)
        return logits

    def _groups(self, trunk: Trunk, jobs: list[PromptJob], batching: bool) -> Iterator[list[Branch]]:
        """Branches to run together, in ascending order of the fork the group starts from.

        Without batching, each branch alone. With it, up to ``batch_size`` branches of one prompt and
        answer length whose forks lie within one chunk of the group's first: groups form across depth
        cells (a default grid has one sample per cell), and each row recomputes at most one chunk of
        the trunk it would otherwise share (rows start at the group's first fork).
        """
        ordered = sorted(trunk.branches, key=lambda b: (b.fork, b.position))
        if not batching:
            yield from ([branch] for branch in ordered)
            return
        forming: dict[tuple[int, int], list[Branch]] = {}
        groups: list[list[Branch]] = []
        for branch in ordered:
            job = jobs[branch.position]
            shape = (len(job.input_ids), len(job.answer_ids))
            group = forming.get(shape)
            if group and (len(group) == self.batch_size or branch.fork - group[0].fork > self.chunk_tokens):
                groups.append(group)
                group = None
            if group is None:
                group = forming[shape] = []
            group.append(branch)
        groups += forming.values()
        yield from sorted(groups, key=lambda g: (g[0].fork, g[0].position))

    def run(self, jobs: list[PromptJob], generation: Generation | None = None) -> Iterator[ScoredJob]:
        """Score every job (trunk by trunk, branches in ascending fork order)."""
        import torch

        if not jobs:
            return
        trunks = plan_trunks([j.input_ids for j in jobs], [j.fork_hint for j in jobs], self.share)
        extra = generation.max_new_tokens if generation else 0
        capacity = max(len(j.input_ids) + max(len(j.answer_ids), extra) for j in jobs)
        cache = reserved_cache_for(self.model, capacity)
        batching = self.batch_size > 1 and generation is None
        batch_cache = reserved_cache_for(self.model, capacity) if batching else None
        with torch.inference_mode():
            for trunk in trunks:
                cache.truncate(0)
                cached = 0
                for group in self._groups(trunk, jobs, batching):
                    started = time.perf_counter()
                    fork = group[0].fork
                    if fork > cached:
                        self._feed(cache, [trunk.tokens[cached:fork]], keep=1, read=False)
                        cached = fork
                    if len(group) == 1:
                        job = jobs[group[0].position]
                        scores = [self._score_branch(cache, job, fork, generation if job.decode else None)]
                        cache.truncate(cached)
                    else:
                        assert batch_cache is not None  # batching is on whenever a group has several
                        scores = self._score_batch(
                            batch_cache, cache, [jobs[b.position] for b in group], fork
                        )
                    seconds = (time.perf_counter() - started) / len(group)
                    for branch, score in zip(group, scores, strict=True):
                        yield ScoredJob(branch.position, score, seconds, branch.fork)

    def _score_batch(
        self, batch_cache: ReservedCache, trunk_cache: ReservedCache, group: list[PromptJob], fork: int
    ) -> list[AnswerScore]:
        batch_cache.fan_out(trunk_cache, len(group))
        keep = len(group[0].answer_ids) + 1  # the answer positions and the one after the answer
        logits = self._feed(batch_cache, [job.input_ids[fork:] + job.answer_ids for job in group], keep)
        self.batched_rows += len(group)
        return [answer_score(row, job.answer_ids) for row, job in zip(logits, group, strict=True)]

    def _score_branch(
        self, cache: ReservedCache, job: PromptJob, fork: int, generation: Generation | None
    ) -> AnswerScore:
        import torch

        answer = job.answer_ids
        if generation is None:
            logits = self._feed(cache, [job.input_ids[fork:] + answer], keep=len(answer) + 1)[0]
            return answer_score(logits, answer)
        first = self._feed(cache, [job.input_ids[fork:]], keep=1)[0]
        logits = torch.cat([first, self._feed(cache, [answer], keep=len(answer))[0]], dim=0)
        prompt = torch.tensor([job.input_ids], device=self.device)
        generated = greedy_continuation(
            self.model, prompt, cache, generation.max_new_tokens, generation.eos_token_id
        )
        return answer_score(logits, answer, generated)
