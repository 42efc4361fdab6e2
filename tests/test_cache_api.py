"""The guard on transformers' KV-cache API: a renamed or dropped cache argument cannot pass silently.

When a model is handed its cache under a name it no longer reads, it builds a fresh cache of its own:
each chunk then attends to itself only and positions restart, and nothing fails. So for every variant
(Llama, DiffLlama V1, Diff V2, DEX) and every cache kind the engine uses (transformers' DynamicCache,
diffbench's ReservedCache, a ReservedCache fanned out to a batch), this file asserts each layer's cache
length after every chunk and that chunked logits equal the full pass. It also asserts that diffbench's
own cache calls raise no deprecation warning on the transformers installed, and that the cache survives
``generate()``.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from test_dex import randomise
from test_diff_attention import VOCAB, build_model, tiny_config

from diffbench.attention.dex import attach_dex
from diffbench.cache_api import (
    cache_keyword,
    forward_with_cache,
    generate_with_cache,
    new_dynamic_cache,
    output_cache,
    pop_layer_cache,
)
from diffbench.engine.kv_cache import reserved_cache_for
from diffbench.engine.teacher_forcing import greedy_continuation, score_and_generate

VARIANTS = ["llama", "diff_v1", "diff_v2", "dex"]
CACHE_KINDS = ["dynamic", "reserved", "reserved_fan_out"]
LENGTH = 40
CHUNKS = [(0, 7), (7, 8), (8, 23), (23, 40)]  # uneven, one single-token chunk
TOLERANCE = 1e-5


def variant_model(variant: str) -> Any:
    """A tiny random model of ``variant``; DEX sits on a Llama with nonzero W_D and λ."""
    config = tiny_config("llama" if variant == "dex" else variant)
    config._attn_implementation = "sdpa"
    model = build_model("llama" if variant == "dex" else variant, config)
    if variant == "dex":
        attach_dex(model, [[0, 2], [1]])
        randomise(model, lam=0.4, seed=3)
    return model


def token_ids(batch: int) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, LENGTH), generator=torch.Generator().manual_seed(7))


def layer_lengths(cache: Any) -> list[int]:
    return [layer.get_seq_length() for layer in cache.layers]


def make_cache(model: Any, kind: str, batch: int) -> Any:
    if kind == "dynamic":
        return new_dynamic_cache(model)
    cache = reserved_cache_for(model, LENGTH)
    if kind == "reserved_fan_out":
        trunk = reserved_cache_for(model, LENGTH)
        cache.fan_out(trunk, batch)  # an empty trunk: the branch cache starts at length 0, batch-wide
    return cache


@pytest.mark.parametrize("cache_kind", CACHE_KINDS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_chunk_lands_in_the_cache_and_chunked_equals_full(variant: str, cache_kind: str) -> None:
    model = variant_model(variant)
    batch = 2 if cache_kind == "reserved_fan_out" else 1
    ids = token_ids(batch)
    with torch.inference_mode():
        full = model(input_ids=ids, use_cache=False).logits
        cache = make_cache(model, cache_kind, batch)
        parts = []
        for start, stop in CHUNKS:
            with warnings.catch_warnings():
                warnings.simplefilter("error", FutureWarning)
                output = forward_with_cache(model, ids[:, start:stop], cache)
            assert layer_lengths(cache) == [stop] * model.config.num_hidden_layers, (
                f"after tokens {start}:{stop} the cache does not hold {stop} tokens in every layer"
            )
            assert cache.get_seq_length() == stop
            parts.append(output.logits)
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=TOLERANCE, rtol=0.0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_returned_cache_is_the_one_given(variant: str) -> None:
    model = variant_model(variant)
    cache = new_dynamic_cache(model)
    with torch.inference_mode():
        output = forward_with_cache(model, token_ids(1)[:, :5], cache)
    assert output_cache(output) is cache


@pytest.mark.parametrize("variant", VARIANTS)
def test_generate_continues_the_cache_and_matches_recompute(variant: str) -> None:
    """greedy_continuation hands generate() a cache holding all but the last prompt token."""
    model = variant_model(variant)
    prompt = token_ids(1)[:, :20]
    steps = 6
    sequence = prompt[0].tolist()
    with torch.inference_mode():
        for _ in range(steps):
            logits = model(input_ids=torch.tensor([sequence]), use_cache=False).logits
            sequence.append(int(logits[0, -1].argmax()))
        cache = new_dynamic_cache(model)
        forward_with_cache(model, prompt, cache)
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)
            generated = greedy_continuation(model, prompt, cache, steps, eos_token_id=None)
    assert generated == sequence[20:]
    # generate() appended to the cache it was given: 19 prompt tokens, the last one, 5 fed-back tokens
    assert cache.get_seq_length() == 20 + steps - 1


def test_score_and_generate_raises_no_cache_deprecation() -> None:
    model = variant_model("diff_v2")
    ids = token_ids(1)[0].tolist()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        score = score_and_generate(model, ids[:30], ids[30:33], max_new_tokens=3, eos_token_id=None)
    assert len(score.token_greedy) == 3


def test_generate_with_cache_names_the_cache_as_forward_does() -> None:
    model = variant_model("llama")
    prompt = token_ids(1)[:, :10]
    cache = new_dynamic_cache(model)
    with torch.inference_mode():
        forward_with_cache(model, prompt[:, :-1], cache)
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)
            mask = torch.ones_like(prompt)
            out = generate_with_cache(
                model, prompt, cache, attention_mask=mask, max_new_tokens=2, do_sample=False
            )
    assert out.shape == (1, 12)
    assert cache.get_seq_length() == 11
    assert cache_keyword(model) in ("cache", "past_key_values")


def test_pop_layer_cache_takes_any_spelling_and_leaves_none_behind() -> None:
    marker = object()
    for name in ("cache", "past_key_values", "past_key_value"):
        kwargs = {name: marker, "position_ids": 1}
        assert pop_layer_cache(kwargs) is marker
        assert kwargs == {"position_ids": 1}
    assert pop_layer_cache({}) is None
