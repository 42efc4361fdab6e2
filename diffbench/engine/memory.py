"""Memory budget: how many tokens one prefill chunk may hold, from the model and --max-memory.

Peak memory of a run is weights + one KV cache as long as the longest prompt + one chunk's
activations (with what the attention kernel holds for the chunk against the cache: see
``attention_workspace``). The first two are fixed by the model and the grid; the chunk size is the
only lever, so ``--max-memory`` sets it. Without a budget the chunk is DEFAULT_CHUNK_TOKENS, the
smallest size that ran at full speed on a 2-core CPU (benchmarks/README.md): smaller chunks only add
per-call overhead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from diffbench.errors import UsageError

DEFAULT_CHUNK_TOKENS = 4096
MIN_CHUNK_TOKENS = 64
# Activation tensors alive at once in a decoder layer, in units of hidden / intermediate width per
# token (residual, norms, q/k/v, attention output and its float32 merge, MLP gate/up/product), with
# a margin for allocator slack. Checked against measured peaks in tests/test_engine_memory.py.
_HIDDEN_WIDTHS = 16
_INTERMEDIATE_WIDTHS = 4
_SLACK = 2.0

_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def parse_memory(text: str) -> int:
    """'24GB', '1.5g', '512MiB', '800m' → bytes (binary units: a GB here is 2**30 bytes)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if not match or float(match.group(1)) <= 0:
        raise UsageError(f"--max-memory {text!r} is not a memory size: use e.g. 8GB, 1.5g or 512MiB")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def format_bytes(count: float) -> str:
    """GiB with two decimals, or MiB with one below a GiB (so 1.0 and 1.4 MiB never both read '1 MiB')."""
    return f"{count / 2**30:.2f} GiB" if count >= 2**30 else f"{count / 2**20:.1f} MiB"


def weight_bytes(model: Any) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def kv_bytes_per_token(model: Any) -> int:
    """Bytes the KV cache gains per token: every k_proj and v_proj output, in the model's dtype."""
    element = next(model.parameters()).element_size()
    widths = [m.out_features for name, m in model.named_modules() if name.endswith(("k_proj", "v_proj"))]
    if widths:
        return sum(widths) * element
    config = model.config.get_text_config(decoder=True)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    return 2 * int(config.num_hidden_layers) * kv_heads * head_dim * element


def activation_bytes_per_token(model: Any) -> int:
    """Bytes one chunk token costs while a layer runs (layers run one at a time)."""
    config = model.config.get_text_config(decoder=True)
    element = next(model.parameters()).element_size()
    intermediate = getattr(config, "intermediate_size", None) or 4 * config.hidden_size
    widths = _HIDDEN_WIDTHS * config.hidden_size + _INTERMEDIATE_WIDTHS * intermediate
    return int(widths * max(element, 4) * _SLACK)


def attention_workspace(model: Any, cache_tokens: int) -> tuple[int, int]:
    """What the attention kernel itself holds while one layer attends from a chunk to the cache:
    (fixed bytes, bytes per chunk token).

    flash-attention and diffbench_sdpa read the cache as it is and build no mask: nothing. transformers'
    SDPA and eager paths copy K and V for every query head when heads share them (``repeat_kv``: one
    layer's cache × the group size), build a chunk × cache mask (counted as float32: measured so on
    CPU's SDPA), and eager also keeps the float32 attention probabilities, heads × chunk × cache.
    """
    from diffbench.attention.chunked import CHUNKED_ATTENTION

    kernel = getattr(model.config, "_attn_implementation", None) or "sdpa"
    if kernel.startswith("flash") or kernel == CHUNKED_ATTENTION:
        return 0, 0
    config = model.config.get_text_config(decoder=True)
    element = next(model.parameters()).element_size()
    heads = int(config.num_attention_heads) * (2 if config.model_type == "diffbench_diff_v2" else 1)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or config.num_attention_heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)
    repeated = 2 * cache_tokens * heads * head_dim * element if kv_heads < heads else 0
    per_token = cache_tokens * max(element, 4)  # the mask row of one chunk token (float on CPU's SDPA)
    if kernel == "eager":
        per_token += cache_tokens * heads * 4  # its probabilities, in float32
    return int(repeated * _SLACK), int(per_token * _SLACK)  # the same allocator margin as activations


@dataclass(frozen=True)
class MemoryPlan:
    """The chunk size chosen and what the fixed parts of the budget cost, for the manifest."""

    chunk_tokens: int
    weights_bytes: int
    kv_cache_bytes: int
    chunk_activation_bytes: int
    budget_bytes: int | None
    batch_size: int = 1

    def as_manifest(self) -> dict[str, object]:
        return {
            "chunk_tokens": self.chunk_tokens,
            "batch_size": self.batch_size,
            "weights_mb": round(self.weights_bytes / 2**20, 1),
            "kv_cache_mb": round(self.kv_cache_bytes / 2**20, 1),
            "chunk_activation_mb": round(self.chunk_activation_bytes / 2**20, 1),
            "max_memory_mb": None if self.budget_bytes is None else round(self.budget_bytes / 2**20, 1),
        }


def plan_memory(
    model: Any, cache_tokens: int, budget: int | None, chunk_tokens: int | None = None
) -> MemoryPlan:
    """Pick the chunk size: ``chunk_tokens`` if given, else the default capped by what the budget leaves."""
    weights = weight_bytes(model)
    kv_cache = kv_bytes_per_token(model) * cache_tokens
    workspace, workspace_per_token = attention_workspace(model, cache_tokens)
    per_token = activation_bytes_per_token(model) + workspace_per_token
    chunk = chunk_tokens or DEFAULT_CHUNK_TOKENS
    if budget is not None and chunk_tokens is None:
        room = budget - weights - kv_cache - workspace
        fitting = room // per_token if room > 0 else 0
        if fitting < MIN_CHUNK_TOKENS:
            need = weights + kv_cache + workspace + MIN_CHUNK_TOKENS * per_token
            raise UsageError(
                f"--max-memory {format_bytes(budget)} is too small: weights take {format_bytes(weights)} and "
                f"a KV cache of {cache_tokens} tokens {format_bytes(kv_cache)}; raise it to at least "
                f"{format_bytes(need)} or run shorter --lengths"
            )
        chunk = min(chunk, int(fitting) // MIN_CHUNK_TOKENS * MIN_CHUNK_TOKENS)
    chunk = min(chunk, max(cache_tokens, 1))
    return MemoryPlan(chunk, weights, kv_cache, workspace + chunk * per_token, budget)


MAX_AUTO_BATCH = 8


def auto_batch_size(device: Any, plan: MemoryPlan) -> int:
    """Rows per batch: 1 on CPU (one sequence fills its cores); on CUDA as many as memory holds, up to 8.

    One row runs on the trunk's own KV cache. A batch of B ≥ 2 rows runs on B copies of it beside the
    trunk's, so it holds B + 1 caches and B chunks of activations. The room is the --max-memory budget
    when given, else 80% of the device's free memory after loading weights.
    """
    return batch_rows_within(plan, None if device.type != "cuda" else _free_cuda_bytes(device))


def _free_cuda_bytes(device: Any) -> int:
    import torch

    return int(torch.cuda.mem_get_info(device)[0])


def batch_rows_within(plan: MemoryPlan, free_device_bytes: int | None) -> int:
    """The largest B ≤ 8 whose B + 1 caches and B chunks fit (1 on CPU, where free_device_bytes is None)."""
    if free_device_bytes is None:
        return 1
    per_row = plan.kv_cache_bytes + plan.chunk_activation_bytes
    if plan.budget_bytes is not None:
        room = plan.budget_bytes - plan.weights_bytes - plan.kv_cache_bytes  # the trunk's cache
    else:
        room = int(0.8 * free_device_bytes) - plan.kv_cache_bytes  # weights are already loaded
    rows = room // max(per_row, 1)
    return int(min(MAX_AUTO_BATCH, rows)) if rows >= 2 else 1  # one row needs no copy of the trunk cache
