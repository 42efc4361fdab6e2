"""Plain-torch ports of Microsoft's official Diff V1 and V2 attention (microsoft/unilm, Diff-Transformer/),
written from the official modules' equations, over a whole Llama-shaped model, for the layout tests.

Everything is computed from the official checkpoint's own tensors and config, with interleaved RoPE
built here: nothing of transformers or of diffbench's converters is used, so agreement with a
converted model checks the conversion, not a shared helper. Also builds tiny random checkpoints in
the official layouts.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    normed = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return normed if weight is None else normed * weight


def interleaved_rope(x: torch.Tensor, theta: float) -> torch.Tensor:
    """flash-attn's interleaved RoPE: dims (2i, 2i+1) rotate by t·θ^(−2i/d); x: (B, T, n, d)."""
    length, dim = x.shape[1], x.shape[-1]
    inv = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    angles = torch.arange(length, dtype=torch.float32)[:, None] * inv[None]  # (T, d/2)
    cos, sin = angles.cos()[None, :, None], angles.sin()[None, :, None]
    even, odd = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = even * cos - odd * sin
    out[..., 1::2] = odd * cos + even * sin
    return out


def causal_softmax(q: torch.Tensor, k: torch.Tensor, scale: float) -> torch.Tensor:
    """(B, n, T, d) × (B, n, T, d) → (B, n, T, T), future masked, softmax in fp32."""
    scores = (q @ k.transpose(-1, -2)) * scale
    length = q.shape[2]
    future = torch.ones(length, length, dtype=torch.bool).triu(1)
    return scores.masked_fill(future, float("-inf")).softmax(-1)


def repeat_heads(x: torch.Tensor, times: int) -> torch.Tensor:
    """The official repeat_kv: each head repeated in place; (B, n, T, d) → (B, n·times, T, d)."""
    return x.repeat_interleave(times, dim=1)


def unilm_v1_attention(
    w: dict[str, torch.Tensor], x: torch.Tensor, depth: int, c: dict[str, Any]
) -> torch.Tensor:
    """MultiheadDiffAttn.forward: adjacent query pairs, V of width 2d, learnable subln, (1 − λ_init)."""
    batch, length, embed = x.shape
    heads = c["num_attention_heads"]
    kv_heads = c.get("num_key_value_heads") or heads
    repeat = heads // kv_heads
    d = embed // heads // 2
    q = (x @ w["q_proj.weight"].T).view(batch, length, 2 * heads, d)
    k = (x @ w["k_proj.weight"].T).view(batch, length, 2 * kv_heads, d)
    v = (x @ w["v_proj.weight"].T).view(batch, length, kv_heads, 2 * d)
    q, k = interleaved_rope(q, c["rope_theta"]), interleaved_rope(k, c["rope_theta"])
    q, k, v = (
        q.transpose(1, 2),
        repeat_heads(k.transpose(1, 2), repeat),
        repeat_heads(v.transpose(1, 2), repeat),
    )
    attn = causal_softmax(q, k, d**-0.5)  # (B, 2N, T, T)
    init = 0.8 - 0.6 * math.exp(-0.3 * depth)
    lam1 = torch.exp((w["lambda_q1"] * w["lambda_k1"]).sum())
    lam2 = torch.exp((w["lambda_q2"] * w["lambda_k2"]).sum())
    attn = attn.view(batch, heads, 2, length, length)
    attn = attn[:, :, 0] - (lam1 - lam2 + init) * attn[:, :, 1]
    out = rms_norm(attn @ v, w["subln.weight"], 1e-5) * (1 - init)  # (B, N, T, 2d)
    return out.transpose(1, 2).reshape(batch, length, heads * 2 * d) @ w["out_proj.weight"].T


def unilm_v2_attention(
    w: dict[str, torch.Tensor], x: torch.Tensor, depth: int, c: dict[str, Any]
) -> torch.Tensor:
    """MultiheadFlashDiffV2.forward (use_diff_v2): 2h query heads, pairs 0::2 / 1::2, λ = sigmoid(x W_λ)."""
    batch, length, _ = x.shape
    heads = c["num_attention_heads"]
    kv_heads = c.get("num_key_value_heads") or heads
    d = c["head_dim"]
    q = interleaved_rope((x @ w["q_proj.weight"].T).view(batch, length, 2 * heads, d), c["rope_theta"])
    k = interleaved_rope((x @ w["k_proj.weight"].T).view(batch, length, kv_heads, d), c["rope_theta"])
    v = (x @ w["v_proj.weight"].T).view(batch, length, kv_heads, d)
    group = 2 * heads // kv_heads  # flash-attn GQA: query head i reads KV head i // group
    q, k, v = (
        q.transpose(1, 2),
        repeat_heads(k.transpose(1, 2), group),
        repeat_heads(v.transpose(1, 2), group),
    )
    attn = (causal_softmax(q, k, d**-0.5) @ v).transpose(1, 2)  # (B, T, 2h, d)
    lam = torch.sigmoid(x @ w["lambda_proj.weight"].T)  # (B, T, h)
    out = attn[:, :, 0::2] - lam.unsqueeze(-1) * attn[:, :, 1::2]
    return out.reshape(batch, length, heads * d) @ w["o_proj.weight"].T


def official_logits(directory: Path, input_ids: torch.Tensor) -> torch.Tensor:
    """The official model's logits: Llama's embeddings, norms and MLPs around the official attention."""
    c = json.loads((directory / "config.json").read_text())
    state = load_file(str(directory / "model.safetensors"))
    attention = unilm_v1_attention if "model.layers.0.self_attn.subln.weight" in state else unilm_v2_attention
    eps = c["rms_norm_eps"]
    x = state["model.embed_tokens.weight"][input_ids]
    for layer in range(c["num_hidden_layers"]):
        w = {k.split(f"layers.{layer}.")[1]: v for k, v in state.items() if f".layers.{layer}." in k}
        attn = {k.removeprefix("self_attn."): v for k, v in w.items() if k.startswith("self_attn.")}
        x = x + attention(attn, rms_norm(x, w["input_layernorm.weight"], eps), layer, c)
        h = rms_norm(x, w["post_attention_layernorm.weight"], eps)
        gate, up = h @ w["mlp.gate_proj.weight"].T, h @ w["mlp.up_proj.weight"].T
        x = x + (torch.nn.functional.silu(gate) * up) @ w["mlp.down_proj.weight"].T
    head = state.get("lm_head.weight", state["model.embed_tokens.weight"])
    return rms_norm(x, state["model.norm.weight"], eps) @ head.T


def write_official_checkpoint(
    directory: Path, version: str, tokenizer_dir: Path, heads: int, kv_heads: int, seed: int = 0,
    model_type: str = "diff_transformer",
) -> Path:  # fmt: skip
    """A tiny random checkpoint in the official V1 or V2 layout: Llama's names, the official attention's."""
    vocab = json.loads((tokenizer_dir / "tokenizer.json").read_text())["model"]["vocab"]
    hidden, layers, inter = 64, 2, 96
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape: int, std: float = 0.08) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * std

    vocab_size = len(vocab) + 8
    state = {
        "model.embed_tokens.weight": rand(vocab_size, hidden, std=0.5),
        "model.norm.weight": 1 + rand(hidden),
    }
    state["lm_head.weight"] = rand(vocab_size, hidden, std=0.3)
    if version == "v1":
        d = hidden // heads // 2
        config_extra: dict[str, Any] = {}
    else:
        d = 16
        config_extra = {"head_dim": d}
    for layer in range(layers):
        p = f"model.layers.{layer}."
        state[p + "input_layernorm.weight"] = 1 + rand(hidden)
        state[p + "post_attention_layernorm.weight"] = 1 + rand(hidden)
        state[p + "mlp.gate_proj.weight"] = rand(inter, hidden)
        state[p + "mlp.up_proj.weight"] = rand(inter, hidden)
        state[p + "mlp.down_proj.weight"] = rand(hidden, inter)
        a = p + "self_attn."
        if version == "v1":
            state[a + "q_proj.weight"] = rand(2 * heads * d, hidden, std=0.3)
            state[a + "k_proj.weight"] = rand(2 * kv_heads * d, hidden, std=0.3)
            state[a + "v_proj.weight"] = rand(2 * kv_heads * d, hidden)
            state[a + "out_proj.weight"] = rand(hidden, 2 * heads * d)
            for name in ("lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2"):
                state[a + name] = rand(d, std=0.3)
            state[a + "subln.weight"] = 1 + rand(2 * d, std=0.3)
        else:
            state[a + "q_proj.weight"] = rand(2 * heads * d, hidden, std=0.3)
            state[a + "k_proj.weight"] = rand(kv_heads * d, hidden, std=0.3)
            state[a + "v_proj.weight"] = rand(kv_heads * d, hidden)
            state[a + "o_proj.weight"] = rand(hidden, heads * d)
            state[a + "lambda_proj.weight"] = rand(heads, hidden, std=0.3)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(state, str(directory / "model.safetensors"))
    config = {
        "model_type": model_type, "vocab_size": vocab_size, "hidden_size": hidden, "intermediate_size": inter,
        "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv_heads,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 4096,
        "tie_word_embeddings": False, "hidden_act": "silu", **config_extra,
    }  # fmt: skip
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tokenizer_dir / name).is_file() and tokenizer_dir.resolve() != directory.resolve():
            shutil.copy2(tokenizer_dir / name, directory / name)
    return directory


def write_community_diff_llama(directory: Path, tokenizer_dir: Path) -> Path:
    """A checkpoint shaped like the community DiffLLaMAConfig (model_type diff_llama, num_kv_heads, o_proj,
    no subln gain), whose attention computes another function than the official one."""
    write_official_checkpoint(directory, "v1", tokenizer_dir, 2, 2, model_type="diff_llama")
    state = load_file(str(directory / "model.safetensors"))
    state = {k.replace("out_proj", "o_proj"): v for k, v in state.items() if "subln" not in k}
    save_file(state, str(directory / "model.safetensors"))
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "num_kv_heads": 2}))
    return directory
