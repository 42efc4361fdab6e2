"""Causal attention for a chunk of queries against a KV cache, without an explicit mask.

Feeding a long context in chunks (bounded memory, shared prefixes) makes every chunk after the first
attend to cached keys. transformers then builds a [chunk × cache] boolean mask and PyTorch's CPU SDPA
runs its slow masked path: on a 2-core Zen 4, 32K in 4K chunks takes twice as long as one full
prefill. The mask is only ever "all cached keys, causal within the chunk", so we compute the two
parts separately, each on the fast unmasked kernel that also returns the log-sum-exp, and merge them
exactly by their log-sum-exps (the flash-attention identity). Equal to masked SDPA up to rounding.

Scoring needs the last layer's output only at the rows whose logits it keeps (the answer), while the
KV cache needs only that layer's keys and values, computed before attention. So under
:func:`last_layer_rows` the last layer attends for those rows alone and leaves the others zero:
exact for the kept logits, and it drops the last layer's whole attention over the haystack (half the
attention of a 2-layer model, 1/30 of a 30-layer one).

It registers as the attention implementation ``diffbench_sdpa`` with a mask function that builds no
mask for unpadded causal input. It is a CPU kernel: on CUDA, flash-attention-2 and SDPA already
handle a chunk against a cache well. Models with sliding windows or soft-capping keep ``sdpa`` (see
``supports_chunked_attention``): this kernel knows only full causal attention.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

CHUNKED_ATTENTION = "diffbench_sdpa"

# (index of the last layer, query rows it must attend for) while a scoring forward pass runs.
_LAST_LAYER_ROWS: ContextVar[tuple[int, int] | None] = ContextVar("diffbench_last_layer_rows", default=None)


@contextmanager
def last_layer_rows(model: Any, rows: int) -> Iterator[None]:
    """Forward passes under this need the last layer's output for their last ``rows`` positions only
    (0: none, e.g. a trunk whose logits nobody reads); every layer's KV cache is still filled."""
    layers = model.config.get_text_config(decoder=True).num_hidden_layers
    token = _LAST_LAYER_ROWS.set((int(layers) - 1, rows))
    try:
        yield
    finally:
        _LAST_LAYER_ROWS.reset(token)


def _attend(query: Any, key: Any, value: Any, causal: bool, scale: float | None) -> tuple[Any, Any]:
    """Output [B, H, q, d] and float32 log-sum-exp [B, H, q] of one unmasked CPU attention call."""
    import torch

    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        query, key, value, 0.0, causal, scale=scale
    )


def merge_by_logsumexp(first: tuple[Any, Any], second: tuple[Any, Any]) -> Any:
    """softmax over the union of two key sets, from each set's normalised output and log-sum-exp."""
    import torch

    (out_a, lse_a), (out_b, lse_b) = first, second
    total = torch.logaddexp(lse_a, lse_b)
    weight_a = torch.exp(lse_a - total).unsqueeze(-1)
    weight_b = torch.exp(lse_b - total).unsqueeze(-1)
    return (out_a.float() * weight_a + out_b.float() * weight_b).to(out_a.dtype)


def causal_chunk_attention(query: Any, key: Any, value: Any, scale: float | None) -> Any:
    """Queries are the last q_len of k_len positions: all earlier keys unmasked, causal among themselves."""
    q_len, k_len = query.shape[2], key.shape[2]
    if q_len == k_len:
        return _attend(query, key, value, True, scale)[0]
    if q_len == 1:
        return _attend(query, key, value, False, scale)[0]
    past = k_len - q_len
    cached = _attend(query, key[:, :, :past], value[:, :, :past], False, scale)
    own = _attend(query, key[:, :, past:], value[:, :, past:], True, scale)
    return merge_by_logsumexp(cached, own)


def grouped_attention(query: Any, key: Any, value: Any, scale: float | None) -> Any:
    """Causal chunk attention with fewer KV heads than query heads, without copying the cache per head.

    Unmasked attention treats query rows independently, so the n query heads that share a KV head can
    be stacked as n × q rows against that one head: the cached part needs no repeat_kv. Only the
    chunk's own keys (chunk-sized) are repeated for the causal part.
    """
    from transformers.integrations.sdpa_attention import repeat_kv

    batch, heads, q_len, dim = query.shape
    kv_heads, k_len = key.shape[1], key.shape[2]
    repeats = heads // kv_heads
    if repeats == 1:
        return causal_chunk_attention(query, key, value, scale)
    if q_len == k_len:
        return _attend(query, repeat_kv(key, repeats), repeat_kv(value, repeats), True, scale)[0]
    past = k_len if q_len == 1 else k_len - q_len  # a single query sees every key, itself included
    stacked = query.reshape(batch, kv_heads, repeats * q_len, dim)
    out, lse = _attend(stacked, key[:, :, :past], value[:, :, :past], False, scale)
    cached = (out.reshape(batch, heads, q_len, -1), lse.reshape(batch, heads, q_len))
    if q_len == 1:
        return cached[0]
    own_key, own_value = repeat_kv(key[:, :, past:], repeats), repeat_kv(value[:, :, past:], repeats)
    own = _attend(query, own_key, own_value, True, scale)
    return merge_by_logsumexp(cached, own)


def chunked_attention_forward(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """transformers attention-interface entry: [B, H, q, d] inputs, [B, q, H, d] output."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if attention_mask is not None or dropout > 0.0 or kwargs.get("output_attentions"):
        # Padding or training: the general masked path is the right one.
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    limit = _LAST_LAYER_ROWS.get()
    if limit is not None and getattr(module, "layer_idx", None) == limit[0] and limit[1] < query.shape[2]:
        return last_rows_attention(query, key, value, scaling, limit[1]), None
    output = grouped_attention(query, key, value, scaling)
    return output.transpose(1, 2).contiguous(), None


def last_rows_attention(query: Any, key: Any, value: Any, scale: float | None, rows: int) -> Any:
    """[B, q, H, d] output with only the last ``rows`` query rows attended (the queries are still the
    last q of k positions); the other rows are zero, for a layer whose output there nobody reads."""
    batch, heads, q_len, _ = query.shape
    output = query.new_zeros(batch, q_len, heads, value.shape[-1])
    if rows > 0:
        output[:, q_len - rows :] = grouped_attention(
            query[:, :, q_len - rows :], key, value, scale
        ).transpose(1, 2)
    return output


def no_mask_unless_padded(*args: Any, **kwargs: Any) -> Any:
    """Mask function for ``diffbench_sdpa``: causality is implicit; padded batches get SDPA's mask."""
    from transformers.masking_utils import sdpa_mask

    padding = kwargs.get("attention_mask")
    if padding is None or bool(padding.all()):
        return None
    return sdpa_mask(*args, **kwargs)


def register_chunked_attention() -> str:
    """Register ``diffbench_sdpa`` with transformers' attention and mask registries (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(CHUNKED_ATTENTION, chunked_attention_forward)
    AttentionMaskInterface.register(CHUNKED_ATTENTION, no_mask_unless_padded)
    return CHUNKED_ATTENTION


def supports_chunked_attention(config: Any) -> bool:
    """True when every layer is plain full causal attention, which is all the chunked kernel knows."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    layer_types = getattr(text, "layer_types", None) or []
    if any(kind != "full_attention" for kind in layer_types):
        return False
    if getattr(text, "use_sliding_window", True) and getattr(text, "sliding_window", None):
        return False
    return not any(getattr(text, name, None) for name in ("attn_logit_softcapping", "attention_chunk_size"))
