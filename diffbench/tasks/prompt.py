"""The frame around every prompt's context: chat template or not, instruction before the haystack,
question and answer prefix after it. niah, multi-needle samples and the probes share it, so a model
sees the same frame in every task."""

from __future__ import annotations

import hashlib
import struct
from typing import Any

from diffbench.errors import UsageError
from diffbench.haystack.fit import SegmentEncoder

PLACEHOLDER = "\u2063DIFFBENCH-CONTENT\u2063"


def use_chat_template(tokenizer: Any, mode: str) -> bool:
    """Resolve --chat-template: auto uses the tokenizer's template when it has one."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if mode == "on" and not has_template:
        raise UsageError(
            "--chat-template on, but the model's tokenizer has no chat template; use 'off' or 'auto'"
        )
    return has_template if mode == "auto" else mode == "on"


def chat_turn(tokenizer: Any) -> tuple[str, str]:
    """The chat template's text before and after one user message (the latter opens the reply)."""
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": PLACEHOLDER}], tokenize=False, add_generation_prompt=True
    )
    before, after = rendered.split(PLACEHOLDER)
    return before, after


def prompt_frame(
    tokenizer: Any, encoder: SegmentEncoder, instruction: str, question: str, answer_prefix: str, chat: bool
) -> tuple[list[int], list[int]]:
    """Token ids before and after the haystack: template, instruction / question, answer prefix."""
    if chat:
        before, after = chat_turn(tokenizer)
        prefix = list(tokenizer(before + instruction, add_special_tokens=False)["input_ids"])
        suffix = encoder.encode("\n\n" + question + after + answer_prefix)
    else:
        prefix = encoder.special_prefix() + list(
            tokenizer(instruction, add_special_tokens=False)["input_ids"]
        )
        suffix = encoder.encode("\n\n" + question + "\n\n" + answer_prefix)
    return prefix, suffix


def prompt_sha256(input_ids: list[int]) -> str:
    """The prompt's identity across models (``Sample.prompt_sha256``): sha256 over its ids as int64."""
    return hashlib.sha256(struct.pack(f"<{len(input_ids)}q", *input_ids)).hexdigest()
