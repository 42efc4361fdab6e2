"""Device, dtype and attention-kernel choice: the same code path on CPU and CUDA.

``auto`` picks CUDA when present. On CUDA the default dtype is bfloat16 (float16 where bf16 is
unsupported) and the attention kernel is flash-attention-2 when it is installed, else SDPA. On CPU
the default is float32: PyTorch's CPU attention kernel runs no faster in bfloat16 and float16
matmuls are orders of magnitude slower there.
"""

from __future__ import annotations

from typing import Any

from diffbench.errors import UsageError

DEVICE_CHOICES = ("auto", "cpu", "cuda")
DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")


def resolve_device(choice: str) -> Any:
    """A torch.device for --device; asking for CUDA where there is none is a usage error."""
    import torch

    if choice not in DEVICE_CHOICES and not choice.startswith("cuda:"):
        raise UsageError(f"unknown --device {choice!r}: use auto, cpu, cuda or cuda:N")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda, but no CUDA device is available; use --device cpu or auto")
    return torch.device(choice)


def resolve_dtype(choice: str, device: Any) -> Any:
    """A torch dtype for --dtype on this device."""
    import torch

    if choice not in DTYPE_CHOICES:
        raise UsageError(f"unknown --dtype {choice!r}: use one of {', '.join(DTYPE_CHOICES)}")
    if choice == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[choice]


def attention_implementation(device: Any, dtype: Any, config: Any = None) -> str:
    """flash-attention-2 on CUDA in bf16/fp16 when installed (never imported on CPU machines), else SDPA.

    flash-attention-2 has no float32 kernel, so --dtype float32 on CUDA runs SDPA. On CPU, a model of
    plain causal layers (``config`` given) gets ``diffbench_sdpa``: SDPA's kernel without the explicit
    mask that makes chunks against a KV cache twice as slow there (see attention/chunked.py).
    """
    import torch

    if device.type == "cuda" and dtype in (torch.bfloat16, torch.float16):
        from transformers.utils import is_flash_attn_2_available

        if is_flash_attn_2_available():
            return "flash_attention_2"
    if device.type == "cpu" and config is not None:
        from diffbench.attention.chunked import register_chunked_attention, supports_chunked_attention

        if supports_chunked_attention(config):
            return register_chunked_attention()
    return "sdpa"


def dtype_name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")
