"""Differential Transformer V2 as a Llama model with one attention module swapped (Microsoft, January 2026).

Per layer, with h output heads, h_kv KV heads and head width d (shapes per token):

    q = x W_q                      (2h, d)    twice the baseline's query heads
    k, v = x W_k, x W_v            (h_kv, d)  unchanged: the KV cache is exactly the baseline's
    a = Attention(q, k, v)         (2h, d)    one ordinary causal call: eager, SDPA or flash-attention-2
    λ = sigmoid(x W_λ)             (h,)       per token and head; W_λ: d_model → h, no bias
    o_i = a[2i] − λ_i · a[2i + 1]  (h, d)     i = 0 .. h−1
    y = concat(o) W_O              (d_model,) W_O: h·d → d_model, the baseline's shape

Query heads 2i and 2i+1 are neighbours and there are 2h/h_kv (an even number) query heads per KV head, so
a pair always lies in one GQA group: both maps attend over the same keys and values. Unlike V1 there is
no per-head RMSNorm and no (1 − λ_init) factor.

Initialisation: W_λ starts at zero, so λ = sigmoid(0) = 0.5 for every token and head; every other weight
is initialised as in Llama. (The official code leaves W_λ to the training framework's default init; a
fixed, input-independent start is easier to reason about and to reproduce.)

Differences from Microsoft's reference module (unilm Diff-Transformer-V2/multihead_flashdiffv2.py), none
of which changes what the operator can express: RoPE rotates halves (Llama) instead of interleaved pairs,
and the attention call goes through transformers' attention registry instead of calling flash-attn.

Load checkpoints through ``diffbench.attention.registry.register_diffbench_models`` and transformers'
Auto classes; the directory's config.json says ``model_type: diffbench_diff_v2``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, LlamaModel
from transformers import initialization as init
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.llama.modeling_llama import (
    LlamaDecoderLayer,
    apply_rotary_pos_emb,
    eager_attention_forward,
)

from diffbench.attention.model_types import DIFF_V2_MODEL_TYPE
from diffbench.cache_api import pop_layer_cache


class DiffV2Config(LlamaConfig):
    """A LlamaConfig whose model_type marks the checkpoint as Diff V2; num_attention_heads is h (outputs)."""

    model_type = DIFF_V2_MODEL_TYPE


class LambdaProjection(nn.Linear):
    """W_λ, a class of its own so that DiffV2Model._init_weights can find it and start it at zero."""


class DiffV2Attention(nn.Module):
    """Diff V2 attention with LlamaAttention's interface, so LlamaDecoderLayer can hold it unchanged."""

    def __init__(self, config: DiffV2Config, layer_idx: int) -> None:
        super().__init__()
        # LlamaConfig fills num_key_value_heads and head_dim in __post_init__; int() tells mypy so.
        self.num_heads = int(config.num_attention_heads)  # h: output heads, one per (positive, negative) pair
        self.num_kv_heads = int(config.num_key_value_heads or self.num_heads)  # h_kv
        self.head_dim = int(config.head_dim or config.hidden_size // self.num_heads)  # d
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"Diff V2 needs num_attention_heads ({self.num_heads}) to be a multiple of "
                f"num_key_value_heads ({self.num_kv_heads}): each head pair must share a KV head"
            )
        self.config = config
        self.layer_idx = layer_idx
        # Read by transformers' eager and SDPA kernels to repeat each KV head over its query heads.
        self.num_key_value_groups = 2 * self.num_heads // self.num_kv_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        self.is_causal = True

        hidden, bias = config.hidden_size, config.attention_bias
        self.q_proj = nn.Linear(hidden, 2 * self.num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(hidden, self.num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(hidden, self.num_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, hidden, bias=bias)
        self.lambda_proj = LambdaProjection(hidden, self.num_heads, bias=False)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        # The decoder layer passes the cache as `cache` (transformers >= 5.24) or `past_key_values`.
        cache = pop_layer_cache(kwargs)
        batch, length, _ = hidden_states.shape  # x: (B, T, d_model)
        q = self.q_proj(hidden_states).view(batch, length, 2 * self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(hidden_states).view(batch, length, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(hidden_states).view(batch, length, self.num_kv_heads, self.head_dim).transpose(1, 2)
        # q: (B, 2h, T, d); k, v: (B, h_kv, T, d)
        cos, sin = position_embeddings
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)  # (B, h_kv, S, d), S = cached + T

        attention: Callable[..., Any] = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn, weights = attention(
            self,
            q,
            k,
            v,
            attention_mask,
            dropout=self.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )  # attn: (B, T, 2h, d); weights (eager only): (B, 2h, T, S), maps 0::2 positive, 1::2 negative

        lam = torch.sigmoid(self.lambda_proj(hidden_states))  # (B, T, h)
        out = attn[:, :, 0::2] - lam.unsqueeze(-1) * attn[:, :, 1::2]  # (B, T, h, d)
        return self.o_proj(out.reshape(batch, length, self.num_heads * self.head_dim)), weights


class DiffV2Model(LlamaModel):
    """LlamaModel with every layer's attention replaced by DiffV2Attention."""

    config_class = DiffV2Config
    _can_record_outputs = {  # noqa: RUF012 (a plain dict attribute in transformers' base class)
        "hidden_states": LlamaDecoderLayer,
        "attentions": DiffV2Attention,
    }

    def __init__(self, config: DiffV2Config) -> None:
        super().__init__(config)
        for index, layer in enumerate(self.layers):
            layer.self_attn = DiffV2Attention(config, index)
        self.post_init()  # initialise the new modules (on the meta device under from_pretrained: free)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        # Matched on W_λ itself: transformers skips parameter-less parents such as DiffV2Attention.
        if isinstance(module, LambdaProjection):
            init.zeros_(module.weight)  # λ = sigmoid(0) = 0.5 everywhere at the start


class DiffV2ForCausalLM(LlamaForCausalLM):
    """LlamaForCausalLM over a DiffV2Model: logits_to_keep, DynamicCache and generate() come from Llama."""

    config_class = DiffV2Config

    def __init__(self, config: DiffV2Config) -> None:
        # Llama's __init__ builds a LlamaModel that is replaced at once: a waste only for random init, since
        # from_pretrained builds on the meta device; subclassing keeps every Llama feature without copying.
        super().__init__(config)
        self.model = DiffV2Model(config)
        self.post_init()  # re-tie lm_head to the new embeddings when tie_word_embeddings is set
