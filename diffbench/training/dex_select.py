"""Which heads get DEX: a calibration pass over built-in prose scores every head of every layer.

The DEX paper selects heads by calibration but its exact score is unpublished; diffbench offers:

- ``entropy``: the heads whose attention is most spread out (highest mean entropy of each query's
  attention distribution), the ones a differential correction should sharpen. Needs the attention
  maps, so it runs the eager kernel for the calibration pass only.
- ``importance``: the heads that matter least to the layer's output (lowest mean L2 norm of the head's
  contribution through o_proj, O_h W_hᵀ), where a change costs the pretrained function least.
- ``all``: every head.

Ties are broken by head index, so selection is deterministic for a given model, text and seed.
"""

from __future__ import annotations

import re
from typing import Any

from diffbench.attention.dex import attention_modules, head_geometry
from diffbench.errors import UsageError

SELECT_CHOICES = ("entropy", "importance", "all")
CALIBRATION_SEQUENCES = 4
CALIBRATION_LENGTH = 256


def parse_heads_per_layer(text: str, num_heads: int) -> int:
    """'0.5' is a fraction of the heads (rounded half up, at least 1); '3' is a count."""
    value = text.strip()
    if re.fullmatch(r"\d+", value):
        count = int(value)
        if not 1 <= count <= num_heads:
            raise UsageError(
                f"--heads-per-layer {text!r}: a count must be between 1 and the model's {num_heads} heads "
                "(or pass a fraction in (0, 1] such as 0.5)"
            )
        return count
    try:
        fraction = float(value)
    except ValueError:
        raise UsageError(
            f"--heads-per-layer {text!r} is neither a fraction in (0, 1] nor a head count"
        ) from None
    if not 0.0 < fraction <= 1.0:
        raise UsageError(f"--heads-per-layer {text!r}: a fraction must lie in (0, 1]")
    return max(1, min(num_heads, int(fraction * num_heads + 0.5)))


def head_scores(model: Any, batches: Any, rule: str) -> list[list[float]]:
    """Per layer, per head: mean attention entropy (nats) or mean contribution norm, over the batches."""
    batches = batches.to(next(model.parameters()).device)
    if rule == "entropy":
        return _entropy_scores(model, batches)
    if rule == "importance":
        return _importance_scores(model, batches)
    _, num_heads, _ = head_geometry(model)
    return [[0.0] * num_heads for _ in attention_modules(model)]


def _entropy_scores(model: Any, batches: Any) -> list[list[float]]:
    import torch

    layers = len(attention_modules(model))
    totals: list[Any] = [0.0] * layers
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.inference_mode():
            for row in batches:
                output = model(input_ids=row[None], output_attentions=True, use_cache=False, logits_to_keep=1)
                for layer, attention in enumerate(output.attentions):  # [1, H, L, L], rows sum to 1
                    probs = attention[0].float()
                    entropy = -torch.special.xlogy(probs, probs).sum(-1)  # [H, L]
                    totals[layer] = totals[layer] + entropy.mean(-1)
    finally:
        model.set_attn_implementation(previous)
    return [[float(v) / len(batches) for v in total] for total in totals]


def _importance_scores(model: Any, batches: Any) -> list[list[float]]:
    import torch

    modules = attention_modules(model)
    _, num_heads, head_dim = head_geometry(model)
    totals: list[Any] = [0.0] * len(modules)
    handles = []

    def recorder(layer: int, o_proj: Any) -> Any:
        def hook(module: Any, args: tuple[Any, ...]) -> None:
            x = args[0].float().reshape(-1, num_heads, head_dim)  # [tokens, H, d]
            weight = o_proj.weight.float().view(-1, num_heads, head_dim)  # [d_model, H, d]
            contribution = torch.einsum("thd,mhd->thm", x, weight)  # [tokens, H, d_model]
            totals[layer] = totals[layer] + contribution.norm(dim=-1).mean(0)

        return hook

    for layer, attention in enumerate(modules):
        handles.append(attention.o_proj.register_forward_pre_hook(recorder(layer, attention.o_proj)))
    try:
        with torch.inference_mode():
            for row in batches:
                model(input_ids=row[None], use_cache=False, logits_to_keep=1)
    finally:
        for handle in handles:
            handle.remove()
    return [[float(v) / len(batches) for v in total] for total in totals]


def pick_heads(scores: list[list[float]], count: int, rule: str) -> list[list[int]]:
    """The ``count`` heads per layer the rule prefers (highest entropy, lowest importance), sorted."""
    if rule not in SELECT_CHOICES:
        raise UsageError(f"unknown --select {rule!r}: use {', '.join(SELECT_CHOICES)}")
    picked = []
    for layer_scores in scores:
        order = range(len(layer_scores))
        if rule == "entropy":
            ranked = sorted(order, key=lambda h: (-layer_scores[h], h))
        else:  # importance: least important first; "all": every score is equal, so index order
            ranked = sorted(order, key=lambda h: (layer_scores[h], h))
        picked.append(sorted(ranked[:count]))
    return picked
