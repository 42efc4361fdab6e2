"""Plain-torch oracles of the differential attention operators, from docs/design/methods.md, for tests.

One head pair at a time, one formula per line, no transformers helpers: when these agree with
transformers' DiffLlama and with ``diff_v2.DiffV2Attention`` to float32 precision, the layouts the docs
state (which heads pair up, which KV heads a pair reads, which layer index λ_init uses) are the ones
the models run. Causal self-attention over a whole sequence only: no cache, no padding.

Weights use nn.Linear's layout, (out_features, in_features).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

# (attention module, hidden states (B, T, d_model), (cos, sin)) → attention output (B, T, d_model)
AttentionFn = Callable[[Any, torch.Tensor, tuple[torch.Tensor, torch.Tensor]], torch.Tensor]


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return x @ weight.T if bias is None else x @ weight.T + bias


def _projections(module: Any) -> dict[str, torch.Tensor | None]:
    """q/k/v/o weights and biases of an attention module with Llama's projection names."""
    found: dict[str, torch.Tensor | None] = {}
    for name in ("q", "k", "v", "o"):
        linear = getattr(module, f"{name}_proj")
        found[name] = linear.weight.detach()
        found[f"{name}_bias"] = None if linear.bias is None else linear.bias.detach()
    return found


def _rotated_qkv(
    w: Any, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """Per-head queries and keys (rotated) and values: lists of (B, T, d)."""
    q = [rope(h, cos, sin) for h in _heads(_linear(x, w.q, w.q_bias), w.head_dim)]
    k = [rope(h, cos, sin) for h in _heads(_linear(x, w.k, w.k_bias), w.head_dim)]
    return q, k, _heads(_linear(x, w.v, w.v_bias), w.head_dim)


def _heads(x: torch.Tensor, head_dim: int) -> list[torch.Tensor]:
    """(B, T, n·d) → n tensors of (B, T, d)."""
    return list(x.split(head_dim, dim=-1))


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding in Llama's layout (the two halves of each head rotate together); x: (B, T, d)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


def causal_softmax(q: torch.Tensor, k: torch.Tensor, scale: float) -> torch.Tensor:
    """softmax(q kᵀ · scale) with future positions masked, in float32; q, k: (B, T, d) → (B, T, T)."""
    scores = (q.float() @ k.float().transpose(-1, -2)) * scale
    length = q.shape[1]
    future = torch.ones(length, length, dtype=torch.bool, device=q.device).triu(1)
    return scores.masked_fill(future, float("-inf")).softmax(dim=-1)


def lambda_init(layer_index: int) -> float:
    """λ_init = 0.8 − 0.6·exp(−0.3·(l−1)) for the 1-based layer l, i.e. 0.8 − 0.6·exp(−0.3·layer_index)."""
    return 0.8 - 0.6 * math.exp(-0.3 * layer_index)


def v1_lambda(attention: Any) -> torch.Tensor:
    """A DiffLlama attention module's λ = exp(λq1·λk1) − exp(λq2·λk2) + λ_init (a scalar, float32)."""
    return (
        torch.exp((attention.lambda_q1 * attention.lambda_k1).sum(dtype=torch.float32))
        - torch.exp((attention.lambda_q2 * attention.lambda_k2).sum(dtype=torch.float32))
        + attention.lambda_init
    )


def v1_lambdas(model: Any) -> list[float]:
    """Each layer's λ of a DiffLlama model: above 1 the net attention mass Σ(A1 − λ·A2) is negative."""
    return [round(float(v1_lambda(layer.self_attn).detach()), 5) for layer in model.model.layers]


@dataclass(frozen=True)
class DiffV1Weights:
    """One Diff V1 layer in transformers' DiffLlama layout: H = 2 × (Diff heads) heads of width d."""

    q: torch.Tensor  # (H·d, d_model)
    k: torch.Tensor  # (H_kv·d, d_model)
    v: torch.Tensor  # (H_kv·d, d_model)
    o: torch.Tensor  # (d_model, H·d)
    q_bias: torch.Tensor | None
    k_bias: torch.Tensor | None
    v_bias: torch.Tensor | None
    o_bias: torch.Tensor | None
    lambda_q1: torch.Tensor  # (d,)
    lambda_k1: torch.Tensor
    lambda_q2: torch.Tensor
    lambda_k2: torch.Tensor
    num_heads: int  # H
    num_kv_heads: int  # H_kv
    head_dim: int  # d
    layer_index: int  # 0-based
    eps: float  # of the per-head RMSNorm

    @classmethod
    def from_module(cls, module: Any) -> DiffV1Weights:
        """The weights of a transformers DiffLlamaAttention (shapes and layer index from its config)."""
        config = module.config
        return cls(
            **_projections(module),  # type: ignore[arg-type]
            lambda_q1=module.lambda_q1.detach(),
            lambda_k1=module.lambda_k1.detach(),
            lambda_q2=module.lambda_q2.detach(),
            lambda_k2=module.lambda_k2.detach(),
            num_heads=config.num_attention_heads,
            num_kv_heads=config.num_key_value_heads,
            head_dim=module.head_dim,
            layer_index=module.layer_idx,
            eps=config.rms_norm_eps,
        )


def diff_v1_attention(
    w: DiffV1Weights, x: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor]
) -> torch.Tensor:
    """Diff V1 (paper eqs. 1–3) on x: (B, T, d_model) → (B, T, d_model).

    Diff head j (0 ≤ j < H/2) takes its positive query from head j and its negative query from head
    j + H/2. With m = j // (H/H_kv) its KV heads are m (K1) and m + H_kv/2 (K2), and its value of width
    2d is the concatenation of value heads m and m + H_kv/2: with H_kv = H (no GQA), heads j and j + H/2.
    """
    cos, sin = position_embeddings
    group = w.num_heads // w.num_kv_heads
    diff_heads, kv_half = w.num_heads // 2, w.num_kv_heads // 2
    q, k, v = _rotated_qkv(w, x, cos, sin)
    init = lambda_init(w.layer_index)
    lam = (
        torch.exp((w.lambda_q1 * w.lambda_k1).sum()) - torch.exp((w.lambda_q2 * w.lambda_k2).sum()) + init
    )  # one scalar, shared by the layer's heads
    scale = w.head_dim**-0.5
    heads = []
    for j in range(diff_heads):
        m = j // group
        a1 = causal_softmax(q[j], k[m], scale)  # (B, T, T)
        a2 = causal_softmax(q[j + diff_heads], k[m + kv_half], scale)
        value = torch.cat([v[m], v[m + kv_half]], dim=-1)  # (B, T, 2d)
        head = (a1 - lam * a2) @ value  # (B, T, 2d)
        head = head * torch.rsqrt(head.pow(2).mean(dim=-1, keepdim=True) + w.eps)  # RMSNorm, no scale
        heads.append((1 - init) * head)
    return _linear(torch.cat(heads, dim=-1), w.o, w.o_bias)


def diff_v1_reference(
    module: Any, x: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor]
) -> torch.Tensor:
    """``diff_v1_attention`` with the weights of a DiffLlamaAttention module."""
    return diff_v1_attention(DiffV1Weights.from_module(module), x, position_embeddings)


@dataclass(frozen=True)
class DiffV2Weights:
    """One Diff V2 layer: 2h query heads, h_kv KV heads, h output heads of width d."""

    q: torch.Tensor  # (2h·d, d_model)
    k: torch.Tensor  # (h_kv·d, d_model)
    v: torch.Tensor  # (h_kv·d, d_model)
    o: torch.Tensor  # (d_model, h·d)
    q_bias: torch.Tensor | None
    k_bias: torch.Tensor | None
    v_bias: torch.Tensor | None
    o_bias: torch.Tensor | None
    lambda_proj: torch.Tensor  # (h, d_model)
    num_heads: int  # h
    num_kv_heads: int  # h_kv
    head_dim: int  # d

    @classmethod
    def from_module(cls, module: Any) -> DiffV2Weights:
        """The weights of a ``diff_v2.DiffV2Attention``."""
        return cls(
            **_projections(module),  # type: ignore[arg-type]
            lambda_proj=module.lambda_proj.weight.detach(),
            num_heads=module.num_heads,
            num_kv_heads=module.num_kv_heads,
            head_dim=module.head_dim,
        )


def diff_v2_attention(
    w: DiffV2Weights, x: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor]
) -> torch.Tensor:
    """Diff V2 on x: (B, T, d_model) → (B, T, d_model).

    Output head i subtracts query head 2i + 1's map from query head 2i's, both over KV head
    i // (h/h_kv), the negative one scaled per query token by λ_t = sigmoid(x_t · W_λ[i]).
    """
    cos, sin = position_embeddings
    group = w.num_heads // w.num_kv_heads
    q, k, v = _rotated_qkv(w, x, cos, sin)
    lam = torch.sigmoid(x @ w.lambda_proj.T)  # (B, T, h)
    scale = w.head_dim**-0.5
    heads = []
    for i in range(w.num_heads):
        m = i // group
        a1 = causal_softmax(q[2 * i], k[m], scale)  # (B, T, T)
        a2 = causal_softmax(q[2 * i + 1], k[m], scale)
        heads.append((a1 - lam[..., i, None] * a2) @ v[m])  # row t of a2 scaled by λ_t; (B, T, d)
    return _linear(torch.cat(heads, dim=-1), w.o, w.o_bias)


def diff_v2_reference(
    module: Any, x: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor]
) -> torch.Tensor:
    """``diff_v2_attention`` with the weights of a DiffV2Attention module."""
    return diff_v2_attention(DiffV2Weights.from_module(module), x, position_embeddings)


def llama_style_logits(model: Any, input_ids: torch.Tensor, attention: AttentionFn) -> torch.Tensor:
    """Logits of a Llama-shaped causal LM (Llama, DiffLlama, DiffV2) with ``attention`` as its attention.

    The model's embeddings, norms, MLPs and rotary tables are reused; only the attention operator is
    the oracle's, so agreement with ``model(input_ids).logits`` checks the whole stack around it.
    """
    body = model.model
    x = body.embed_tokens(input_ids)  # (B, T, d_model)
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)[None]
    position_embeddings = body.rotary_emb(x, positions)
    for layer in body.layers:
        x = x + attention(layer.self_attn, layer.input_layernorm(x), position_embeddings)
        x = x + layer.mlp(layer.post_attention_layernorm(x))
    return model.lm_head(body.norm(x))
