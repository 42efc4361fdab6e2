"""The memory plan: chunk size from --max-memory, one-line refusals, and estimates that hold."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from diffbench.engine.memory import (
    DEFAULT_CHUNK_TOKENS,
    attention_workspace,
    auto_batch_size,
    kv_bytes_per_token,
    parse_memory,
    plan_memory,
)
from diffbench.errors import UsageError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8GB", 8 * 2**30),
        ("1.5g", int(1.5 * 2**30)),
        ("512MiB", 512 * 2**20),
        ("800m", 800 * 2**20),
        ("64k", 2**16),
    ],
)
def test_parse_memory(text: str, expected: int) -> None:
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "-1GB", "0", "5 parsecs", "1e9"])
def test_parse_memory_refuses_what_is_not_a_size(text: str) -> None:
    with pytest.raises(UsageError, match="is not a memory size"):
        parse_memory(text)


def test_kv_bytes_follow_the_kv_heads(tiny_llama: Any) -> None:
    config = tiny_llama.config  # 2 layers, 2 KV heads of 16, float32: 2 × 2 × 2 × 16 × 4 bytes per token
    assert kv_bytes_per_token(tiny_llama) == 2 * config.num_hidden_layers * 2 * 16 * 4


def test_budget_sets_the_chunk_and_too_small_a_budget_is_refused(tiny_llama: Any) -> None:
    free = plan_memory(tiny_llama, 4096, None)
    assert free.chunk_tokens == DEFAULT_CHUNK_TOKENS
    workspace, _ = attention_workspace(tiny_llama, 4096)
    assert workspace > 0  # SDPA repeats the shared K/V heads for every query head
    per_token = (free.chunk_activation_bytes - workspace) // DEFAULT_CHUNK_TOKENS
    fixed = free.weights_bytes + free.kv_cache_bytes + workspace
    tight = plan_memory(tiny_llama, 4096, fixed + 300 * per_token)
    assert tight.chunk_tokens == 256  # 300 tokens fit, rounded down to a multiple of 64
    assert tight.weights_bytes + tight.kv_cache_bytes + tight.chunk_activation_bytes <= tight.budget_bytes
    with pytest.raises(UsageError, match=r"--max-memory .* is too small: weights take"):
        plan_memory(tiny_llama, 4096, free.weights_bytes)
    assert plan_memory(tiny_llama, 100, None).chunk_tokens == 100  # never more than the longest prompt


def test_cpu_runs_one_row_per_batch(tiny_llama: Any) -> None:
    import torch

    assert auto_batch_size(torch.device("cpu"), plan_memory(tiny_llama, 4096, None)) == 1


ESTIMATE_SCRIPT = """
import resource, sys, torch
from transformers import LlamaConfig, LlamaForCausalLM
from diffbench.engine.memory import plan_memory
from diffbench.engine.shared_prefill import PromptJob, SharedPrefixEngine
from diffbench.models.device import attention_implementation
torch.set_num_threads(1)
config = LlamaConfig(vocab_size=1000, hidden_size=256, intermediate_size=1024, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=40000)
kernel = sys.argv[3]
config._attn_implementation = (
    attention_implementation(torch.device("cpu"), torch.float32, config) if kernel == "auto" else kernel
)
model = LlamaForCausalLM(config).eval()
with open("/proc/self/statm") as statm:
    before = int(statm.read().split()[1]) * resource.getpagesize()
length = int(sys.argv[1])
plan = plan_memory(model, length, None, int(sys.argv[2]))
prompt = torch.randint(0, 1000, (length,), generator=torch.Generator().manual_seed(0)).tolist()
list(SharedPrefixEngine(model, plan.chunk_tokens).run([PromptJob(prompt[:-4], prompt[-4:], 0)]))
from diffbench.engine.loop import peak_memory_mb
peak = int(peak_memory_mb(torch.device("cpu")) * 2**20)
print(peak - before, plan.kv_cache_bytes + plan.chunk_activation_bytes)
"""


@pytest.mark.parametrize("kernel", ["auto", "sdpa"])
def test_measured_growth_stays_within_the_plan(subprocess_env: dict[str, str], kernel: str) -> None:
    """Peak RSS growth of a 16K prefill (KV cache + activations) is at most what the plan reserves, on
    diffbench_sdpa (no workspace) and on transformers' SDPA (GQA's repeated K/V and the chunk's mask)."""
    done = subprocess.run(
        [sys.executable, "-c", ESTIMATE_SCRIPT, "16384", "2048", kernel],
        capture_output=True,
        text=True,
        env=subprocess_env,
        check=True,
        timeout=300,
    )
    growth, planned = map(int, done.stdout.split())
    print(f"growth {growth / 2**20:.0f} MiB, planned {planned / 2**20:.0f} MiB")
    assert growth <= planned, f"measured {growth / 2**20:.0f} MiB > planned {planned / 2**20:.0f} MiB"
    assert growth >= 0.5 * planned  # and the plan is not wildly generous either


def test_a_batch_is_budgeted_for_its_copies_and_the_trunks_cache() -> None:
    """B ≥ 2 rows hold B copies of the KV cache beside the trunk's and B chunks: B + 1 caches in all."""
    from diffbench.engine.memory import MAX_AUTO_BATCH, MemoryPlan, batch_rows_within

    def plan(budget: int | None) -> MemoryPlan:
        return MemoryPlan(chunk_tokens=64, weights_bytes=100, kv_cache_bytes=10, chunk_activation_bytes=5,
                          budget_bytes=budget)  # fmt: skip

    assert batch_rows_within(plan(None), None) == 1  # CPU
    exact = 100 + 3 * 10 + 2 * 5  # weights + trunk + 2 copies + 2 chunks
    assert batch_rows_within(plan(exact), 10**9) == 2
    assert batch_rows_within(plan(exact - 1), 10**9) == 1  # one byte short: one row on the trunk's cache
    assert batch_rows_within(plan(10**9), 10**9) == MAX_AUTO_BATCH
    # No budget: 80% of the free device memory (weights already loaded) less the trunk's cache.
    assert batch_rows_within(plan(None), 100) == 4  # (0.8 × 100 − 10) // 15
