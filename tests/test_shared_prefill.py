"""Shared-prefix, chunked prefill gives the verdicts and logits of independent one-pass prefills."""

from __future__ import annotations

import copy
import itertools
from typing import Any

import pytest
import torch

from diffbench.attention.chunked import (
    CHUNKED_ATTENTION,
    grouped_attention,
    register_chunked_attention,
    supports_chunked_attention,
)
from diffbench.engine.kv_cache import ReservedCache
from diffbench.engine.prefix_plan import plan_trunks
from diffbench.engine.shared_prefill import Generation, PromptJob, SharedPrefixEngine, chunk_bounds
from diffbench.engine.teacher_forcing import score_and_generate, score_answer
from diffbench.haystack.sources import load_source
from diffbench.specs import NiahSpec, Sample
from diffbench.tasks.niah import generate_samples

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def samples(tiny_tokenizer: Any) -> list[Sample]:
    spec = NiahSpec(
        lengths=[256, 512, 768], depths=[0.0, 25.0, 50.0, 75.0, 100.0], samples_per_cell=2, seed=5
    )
    return generate_samples(spec, tiny_tokenizer, load_source("prose", 5))


@pytest.fixture(scope="module")
def chunked_llama(tiny_llama: Any) -> Any:
    model = copy.deepcopy(tiny_llama)
    model.config._attn_implementation = register_chunked_attention()
    return model


def jobs_of(samples: list[Sample]) -> list[PromptJob]:
    return [PromptJob(s.input_ids, s.answer_ids, s.needle_span[0]) for s in samples]


@pytest.mark.parametrize(
    ("q_len", "k_len", "heads", "kv_heads"), [(7, 7, 4, 4), (5, 40, 4, 2), (1, 33, 6, 2), (16, 16, 4, 1)]
)
def test_chunk_attention_equals_masked_sdpa(q_len: int, k_len: int, heads: int, kv_heads: int) -> None:
    generator = torch.Generator().manual_seed(q_len * k_len)
    query = torch.randn(1, heads, q_len, 16, generator=generator)
    key = torch.randn(1, kv_heads, k_len, 16, generator=generator)
    value = torch.randn(1, kv_heads, k_len, 16, generator=generator)
    mask = torch.ones(q_len, k_len, dtype=torch.bool).tril(diagonal=k_len - q_len)
    expected = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=mask, enable_gqa=heads != kv_heads
    )
    torch.testing.assert_close(grouped_attention(query, key, value, None), expected, atol=1e-6, rtol=1e-5)


def test_chunk_bounds_keep_every_kept_position_in_the_last_chunk() -> None:
    assert chunk_bounds(10, 4, 1) == [(0, 4), (4, 8), (8, 10)]
    assert chunk_bounds(10, 4, 3) == [(0, 4), (4, 10)]
    assert chunk_bounds(3, 4, 3) == [(0, 3)]
    assert chunk_bounds(10, 1, 4) == [*((n, n + 1) for n in range(6)), (6, 10)]  # chunk < answer
    for total, chunk in itertools.product(range(1, 40), (1, 2, 8)):
        for keep in range(1, min(total, 9) + 1):
            bounds = chunk_bounds(total, chunk, keep)
            assert bounds[0][0] == 0 and bounds[-1][1] == total
            assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
            assert bounds[-1][1] - bounds[-1][0] >= keep


def test_plan_puts_every_prompt_of_one_haystack_on_one_trunk(samples: list[Sample]) -> None:
    trunks = plan_trunks([s.input_ids for s in samples], [s.needle_span[0] for s in samples])
    assert len(trunks) == 1
    trunk = trunks[0]
    assert sorted(b.position for b in trunk.branches) == list(range(len(samples)))
    forks = [b.fork for b in trunk.branches]
    assert forks == sorted(forks)
    for branch in trunk.branches:
        sample = samples[branch.position]
        assert branch.fork == sample.needle_span[0]
        assert trunk.tokens[: branch.fork] == sample.input_ids[: branch.fork]
    fed = max(forks) + sum(len(s.input_ids) for s in samples) - sum(forks)
    assert fed < 0.7 * sum(len(s.input_ids) for s in samples)


def test_plan_separates_prompts_that_do_not_share_their_prefix() -> None:
    prompts = [[1, 2, 3, 4, 5], [1, 2, 9, 9, 9], [1, 2, 3, 7, 7], [4, 4, 4, 4]]
    trunks = plan_trunks(prompts, [3, 3, 4, 2])
    groups = sorted(sorted(b.position for b in t.branches) for t in trunks)
    assert groups == [[0, 2], [1], [3]]
    for trunk in trunks:
        for branch in trunk.branches:
            assert trunk.tokens[: branch.fork] == prompts[branch.position][: branch.fork]
    unshared = plan_trunks(prompts, [3, 3, 4, 2], share=False)
    assert [(t.tokens, [b.fork for b in t.branches]) for t in unshared] == [([], [0, 0, 0, 0])]


@pytest.mark.parametrize("share", [True, False])
@pytest.mark.parametrize("chunk", [64, 100_000])
def test_engine_equals_independent_prefill(
    tiny_llama: Any, chunked_llama: Any, samples: list[Sample], share: bool, chunk: int
) -> None:
    expected = [score_answer(tiny_llama, s.input_ids, s.answer_ids) for s in samples]
    engine = SharedPrefixEngine(chunked_llama, chunk_tokens=chunk, share=share)
    results = list(engine.run(jobs_of(samples)))
    assert sorted(r.position for r in results) == list(range(len(samples)))
    for result in results:
        want = expected[result.position]
        assert result.score.greedy_exact == want.greedy_exact
        assert result.score.answer_logprob == pytest.approx(want.answer_logprob, abs=1e-4)
    if share:
        assert engine.fed_tokens < 0.7 * sum(len(s.input_ids) + len(s.answer_ids) - 1 for s in samples)


def test_engine_through_plain_sdpa_masks_equals_independent_prefill(
    tiny_llama: Any, samples: list[Sample]
) -> None:
    """The engine is correct on any attention implementation; the chunked kernel only makes it fast."""
    subset = samples[::3]
    engine = SharedPrefixEngine(tiny_llama, chunk_tokens=96)
    for result in engine.run(jobs_of(subset)):
        want = score_answer(tiny_llama, subset[result.position].input_ids, subset[result.position].answer_ids)
        assert result.score.answer_logprob == pytest.approx(want.answer_logprob, abs=1e-4)


def test_engine_generation_equals_one_prompt_generation(
    chunked_llama: Any, tiny_llama: Any, samples: list[Sample]
) -> None:
    subset = samples[:4] + samples[-3:]
    engine = SharedPrefixEngine(chunked_llama, chunk_tokens=128)
    results = list(engine.run(jobs_of(subset), Generation(max_new_tokens=6, eos_token_id=None)))
    for result in results:
        sample = subset[result.position]
        alone = score_and_generate(tiny_llama, sample.input_ids, sample.answer_ids, 6, None)
        assert result.score.generated_ids == alone.generated_ids
        assert result.score.greedy_exact == alone.greedy_exact
        assert result.score.answer_logprob == pytest.approx(alone.answer_logprob, abs=1e-4)


def test_reserved_cache_grows_in_place_and_crops_without_copying() -> None:
    cache = ReservedCache(num_layers=1, capacity=10)
    layer = cache.layers[0]
    first = torch.arange(4.0).reshape(1, 1, 4, 1)
    keys, _ = cache.update(first, first, 0)
    buffer = layer.key_buffer.data_ptr()
    cache.update(torch.full((1, 1, 3, 1), 9.0), torch.full((1, 1, 3, 1), 9.0), 0)
    cache.truncate(4)
    assert cache.get_seq_length() == 4
    keys, _ = cache.update(torch.full((1, 1, 2, 1), 5.0), torch.full((1, 1, 2, 1), 5.0), 0)
    assert keys.flatten().tolist() == [0.0, 1.0, 2.0, 3.0, 5.0, 5.0]
    assert layer.key_buffer.data_ptr() == buffer
    cache.truncate(6)  # keeping what is there is a no-op, not a wipe
    assert cache.get_seq_length() == 6
    with pytest.raises(RuntimeError, match="holds 10 tokens"):
        cache.update(torch.zeros(1, 1, 5, 1), torch.zeros(1, 1, 5, 1), 0)


def test_chunked_attention_only_for_plain_causal_configs() -> None:
    from transformers import LlamaConfig, MistralConfig, Qwen2Config

    assert supports_chunked_attention(LlamaConfig())
    assert supports_chunked_attention(Qwen2Config(use_sliding_window=False))
    assert not supports_chunked_attention(MistralConfig(sliding_window=4096))
    assert CHUNKED_ATTENTION == "diffbench_sdpa"


@pytest.mark.parametrize("share", [True, False])
def test_batched_branches_equal_one_at_a_time(chunked_llama: Any, tiny_tokenizer: Any, share: bool) -> None:
    spec = NiahSpec(lengths=[300, 400], depths=[0.0, 50.0, 100.0], samples_per_cell=4, seed=8)
    cell_samples = generate_samples(spec, tiny_tokenizer, load_source("noise", 8))
    single = {
        r.position: r.score for r in SharedPrefixEngine(chunked_llama, 64, share).run(jobs_of(cell_samples))
    }
    engine = SharedPrefixEngine(chunked_llama, 64, share, batch_size=3)
    batched = {r.position: r.score for r in engine.run(jobs_of(cell_samples))}
    assert engine.batched_rows >= 6  # batches really formed
    assert batched.keys() == single.keys()
    for position, score in batched.items():
        assert score.greedy_exact == single[position].greedy_exact
        assert score.answer_logprob == pytest.approx(single[position].answer_logprob, abs=1e-4)


def test_batches_form_across_depth_cells_of_one_sample_each(chunked_llama: Any, tiny_tokenizer: Any) -> None:
    """A default-like grid (one sample per cell): neighbouring depths, whose forks lie within one chunk,
    run as batches, and every score equals the one-at-a-time score."""
    spec = NiahSpec(lengths=[400], depths=[float(d) for d in range(0, 101, 10)], samples_per_cell=1, seed=3)
    samples = generate_samples(spec, tiny_tokenizer, load_source("noise", 3))
    single = {r.position: r.score for r in SharedPrefixEngine(chunked_llama, 64, True).run(jobs_of(samples))}
    engine = SharedPrefixEngine(chunked_llama, 64, True, batch_size=4)
    batched = {r.position: r.score for r in engine.run(jobs_of(samples))}
    assert engine.batched_rows >= 4  # depths 36 tokens apart: at least two rows share a batch twice
    assert batched.keys() == single.keys()
    for position, score in batched.items():
        assert score.predicted_ids == single[position].predicted_ids
        assert score.answer_logprob == pytest.approx(single[position].answer_logprob, abs=1e-4)
