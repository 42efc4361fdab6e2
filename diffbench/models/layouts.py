"""Differential checkpoints in layouts transformers cannot load, converted once into ones it can.

Microsoft's official code (microsoft/unilm, Diff-Transformer/) trains models diffbench cannot run as
they are: its attention modules differ from transformers' DiffLlama and from diffbench's Diff V2 in
layout, not in function. A checkpoint directory in either official layout (config.json with Llama's
fields, weights with Llama's module names except the attention module's own) is detected from its
weight names, converted exactly, cached like a GGUF file, and recorded as variant + layout.

``unilm-diff-v1`` (multihead_diffattn.py, MultiheadDiffAttn), with N = num_attention_heads Diff heads:
    q_proj (2N·d rows): query heads 2j / 2j+1 are Diff head j's positive / negative maps (adjacent pairs);
    k_proj: 2·N_kv heads of width d, repeated over the queries (query head i reads key head i // (N/N_kv));
    v_proj: N_kv heads of width 2d; out_proj; lambda_q1/k1/q2/k2 (d,); subln.weight (2d,), a learnable
    per-head RMSNorm gain; RoPE rotates interleaved pairs (dims 2i, 2i+1); d = hidden_size / N / 2.
  → DiffLlama: H = 2N heads, positive j, negative j + N; its RMSNorm has no gain, so the gain is folded
    into o_proj's columns (exact: a diagonal scale before a linear map); q and k rows are permuted per
    head from interleaved to half-split RoPE (exact: q·k is unchanged when both are permuted alike).
    DiffLlama reads key heads m and m + H_kv/2 for Diff head j (m = j // (H/H_kv)); official GQA pairs
    do not always fit that, so key/value heads are copied until every Diff head finds its own (the
    KV cache may grow; the conversion note says by how much).

``unilm-diff-v2`` (Diff-Transformer-V2/multihead_flashdiffv2.py, MultiheadFlashDiffV2):
    2h query heads paired 0::2 / 1::2, h_kv KV heads, lambda_proj (h, d_model), λ = sigmoid(x W_λ),
    interleaved RoPE.
  → diffbench's Diff V2 (the same operator, half-split RoPE): q and k rows permuted, nothing else.

λ_init follows the paper, 0.8 − 0.6·exp(−0.3·(l − 1)) for the 1-based layer l, which is the official
module's ``depth`` argument as the 0-based layer index, and DiffLlama's.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffbench.errors import ModelLoadError
from diffbench.store import read_json_object

LAYOUT_NOTE = "diffbench_layout.json"  # in a converted directory: which layout it came from, and how
_ATTENTION = re.compile(r"^(?:model\.)?layers\.(\d+)\.self_attn\.(.+)$")
V1_NAMES = {"q_proj.weight", "k_proj.weight", "v_proj.weight", "out_proj.weight", "subln.weight"}
V1_LAMBDAS = {"lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2"}
V2_NAMES = {"q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight", "lambda_proj.weight"}
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
    "generation_config.json",
)


@dataclass(frozen=True)
class Layout:
    """A foreign checkpoint layout: its name, the variant version it runs as, and the official source."""

    name: str
    variant_version: str
    source: str


UNILM_V1 = Layout("unilm-diff-v1", "v1", "microsoft/unilm Diff-Transformer/multihead_diffattn.py")
UNILM_V2 = Layout("unilm-diff-v2", "v2", "microsoft/unilm Diff-Transformer-V2/multihead_flashdiffv2.py")


def read_config(directory: Path) -> dict[str, Any]:
    # A damaged one is not ours to judge: transformers' config reader gives its own one-line error.
    return read_json_object(directory / "config.json") or {}


def weight_files(directory: Path) -> list[Path]:
    """The checkpoint's weight files: one or sharded safetensors, else PyTorch .bin files."""
    for pattern in ("*.safetensors", "pytorch_model*.bin"):
        found = sorted(p for p in directory.glob(pattern) if p.is_file())
        if found:
            return found
    return []


def weight_names(directory: Path) -> set[str]:
    """Every tensor name, read from safetensors headers only (no weights are loaded to decide)."""
    from safetensors import SafetensorError, safe_open

    names: set[str] = set()
    for path in weight_files(directory):
        if path.suffix != ".safetensors":
            return set(load_state_dict([path]))
        try:
            with safe_open(str(path), framework="pt") as handle:
                names.update(handle.keys())
        except (SafetensorError, OSError):
            return set()  # damaged: transformers' loader reports it in one line
    return names


def attention_names(names: set[str]) -> set[str]:
    """The attention module's own parameter names in layer 0 ("q_proj.weight", "subln.weight", ...)."""
    found = set()
    for name in names:
        match = _ATTENTION.match(name)
        if match and match.group(1) == "0":
            found.add(match.group(2))
    return found


def detect_layout(directory: Path) -> Layout | None:
    """The official layout a checkpoint directory holds, or None for one transformers loads as it is."""
    config = read_config(directory)
    model_type = config.get("model_type")
    if model_type in ("diffllama", "diffbench_diff_v2"):
        return None  # already a layout diffbench runs
    own = attention_names(weight_names(directory))
    if own >= V1_NAMES | V1_LAMBDAS:
        return UNILM_V1
    if own >= V2_NAMES:
        return UNILM_V2
    if model_type == "diff_llama" and "num_kv_heads" in config and "o_proj.weight" in own:
        raise ModelLoadError(
            f"model directory '{directory}' is a community 'diff_llama' (DiffLLaMAConfig with num_kv_heads) "
            "whose attention subtracts neighbouring key columns of one score matrix before a single "
            "softmax, without a causal mask: it is not the Differential Transformer's operator, and "
            "diffbench does not run it as a Diff model"
        )
    if model_type == "diff_llama":
        found = ", ".join(sorted(own)) or "none"
        raise ModelLoadError(
            f"model directory '{directory}' has model_type 'diff_llama' but its attention weights ({found}) "
            "match no layout diffbench converts (unilm Diff V1: q_proj, k_proj, v_proj, out_proj, "
            "subln, lambda_q1..k2; unilm Diff V2: q_proj, k_proj, v_proj, o_proj, lambda_proj)"
        )
    return None


def load_state_dict(paths: list[Path]) -> dict[str, Any]:
    import torch
    from safetensors.torch import load_file

    state: dict[str, Any] = {}
    for path in paths:
        if path.suffix == ".safetensors":
            state.update(load_file(str(path)))
        else:
            state.update(torch.load(path, map_location="cpu", weights_only=True))
    return state


def halves_order(head_dim: int) -> list[int]:
    """Row order that turns interleaved RoPE pairs (2i, 2i+1) into Llama's halves (i, i + d/2)."""
    return list(range(0, head_dim, 2)) + list(range(1, head_dim, 2))


def to_half_split(weight: Any, heads: int, head_dim: int) -> Any:
    """A q or k projection (heads·d, in) with each head's rows reordered from interleaved to halves."""
    order = halves_order(head_dim)
    return weight.view(heads, head_dim, -1)[:, order, :].reshape(heads * head_dim, -1)


def fitting_kv_heads(key_of: list[tuple[int, int]], value_of: list[int]) -> int:
    """The fewest DiffLlama KV heads (H_kv) under which every Diff head j reads its own official heads.

    ``key_of[j]`` is (positive, negative) official key head of Diff head j, ``value_of[j]`` its official
    value head. DiffLlama gives Diff heads j of one group g = j // (N / (H_kv/2)) the key heads g and
    g + H_kv/2 and the value halves of g and g + H_kv/2, so a group must agree on all three.
    """
    diff_heads = len(key_of)
    for groups in range(1, diff_heads + 1):
        if diff_heads % groups:
            continue
        size = diff_heads // groups
        if all(
            len({(key_of[j], value_of[j]) for j in range(g * size, (g + 1) * size)}) == 1
            for g in range(groups)
        ):
            return 2 * groups
    return 2 * diff_heads


def convert_v1_layer(state: dict[str, Any], prefix: str, config: dict[str, Any]) -> dict[str, Any]:
    """One layer's unilm Diff V1 attention as DiffLlama weights (see the module docstring)."""
    import torch

    diff_heads = int(config["num_attention_heads"])
    official_kv = int(config.get("num_key_value_heads") or diff_heads)
    head_dim = int(config["hidden_size"]) // diff_heads // 2
    repeat = diff_heads // official_kv  # the official n_rep: query head i reads key head i // repeat
    key_of = [((2 * j) // repeat, (2 * j + 1) // repeat) for j in range(diff_heads)]
    value_of = [j // repeat for j in range(diff_heads)]
    kv_heads = fitting_kv_heads(key_of, value_of)
    half, size = kv_heads // 2, diff_heads // (kv_heads // 2)

    q = to_half_split(state[f"{prefix}q_proj.weight"], 2 * diff_heads, head_dim).view(
        diff_heads, 2, head_dim, -1
    )
    k = to_half_split(state[f"{prefix}k_proj.weight"], 2 * official_kv, head_dim).view(
        2 * official_kv, head_dim, -1
    )
    v = state[f"{prefix}v_proj.weight"].view(official_kv, 2, head_dim, -1)
    representative = [g * size for g in range(half)]  # the first Diff head of each group
    keys = [k[key_of[j][0]] for j in representative] + [k[key_of[j][1]] for j in representative]
    values = [v[value_of[j], 0] for j in representative] + [v[value_of[j], 1] for j in representative]
    gain = state[f"{prefix}subln.weight"].to(state[f"{prefix}out_proj.weight"].dtype)
    out = state[f"{prefix}out_proj.weight"].view(-1, diff_heads, 2 * head_dim) * gain
    return {
        f"{prefix}q_proj.weight": torch.cat([q[:, 0], q[:, 1]]).reshape(2 * diff_heads * head_dim, -1),
        f"{prefix}k_proj.weight": torch.stack(keys).reshape(kv_heads * head_dim, -1),
        f"{prefix}v_proj.weight": torch.stack(values).reshape(kv_heads * head_dim, -1),
        f"{prefix}o_proj.weight": out.reshape(out.shape[0], -1),
        **{f"{prefix}{name}": state[f"{prefix}{name}"] for name in sorted(V1_LAMBDAS)},
    }


def convert_v1(state: dict[str, Any], config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], str]:
    """unilm Diff V1 weights and config as DiffLlama's, and a one-line note on what changed."""
    diff_heads = int(config["num_attention_heads"])
    head_dim = int(config["hidden_size"]) // diff_heads // 2
    converted = {k: v for k, v in state.items() if not _ATTENTION.match(k)}
    prefixes = {name.split("self_attn.")[0] for name in state if _ATTENTION.match(name)}
    for prefix in sorted(prefixes):
        converted.update(convert_v1_layer(state, f"{prefix}self_attn.", config))
    kv_heads = next(converted[f"{p}self_attn.k_proj.weight"] for p in prefixes).shape[0] // head_dim
    official_kv = int(config.get("num_key_value_heads") or diff_heads)
    new_config = {
        **config,
        "model_type": "diffllama",
        "architectures": ["DiffLlamaForCausalLM"],
        "num_attention_heads": 2 * diff_heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
    }
    note = (
        f"unilm Diff V1 → DiffLlama: {diff_heads} Diff heads (adjacent pairs) → heads j / j+{diff_heads}, "
        "interleaved RoPE → halves, subln gain folded into o_proj, "
        f"KV heads {2 * official_kv} × {head_dim} keys and {official_kv} × {2 * head_dim} values "
        f"→ {kv_heads} × {head_dim} each"
    )
    return converted, new_config, note


def convert_v2(state: dict[str, Any], config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], str]:
    """unilm Diff V2 weights and config as diffbench's Diff V2: only RoPE's row order changes."""
    from diffbench.attention.model_types import DIFF_V2_MODEL_TYPE

    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or int(config["hidden_size"]) // heads)
    converted = dict(state)
    for name in state:
        match = _ATTENTION.match(name)
        if match and match.group(2) == "q_proj.weight":
            converted[name] = to_half_split(state[name], 2 * heads, head_dim)
        elif match and match.group(2) == "k_proj.weight":
            converted[name] = to_half_split(state[name], kv_heads, head_dim)
    new_config = {
        **config,
        "model_type": DIFF_V2_MODEL_TYPE,
        "architectures": ["DiffV2ForCausalLM"],
        "head_dim": head_dim,
    }
    return converted, new_config, "unilm Diff V2 → diffbench Diff V2: interleaved RoPE → halves"


def convert_directory(source: Path, layout: Layout, target: Path) -> None:
    """Write the converted checkpoint (config, safetensors, tokenizer files, layout note) to ``target``."""
    from safetensors.torch import save_file

    config = read_config(source)
    state = load_state_dict(weight_files(source))
    try:
        converter = convert_v1 if layout is UNILM_V1 else convert_v2
        converted, new_config, note = converter(state, config)
    except (KeyError, RuntimeError, ValueError, TypeError, ZeroDivisionError) as error:
        raise ModelLoadError(
            f"cannot convert '{source}' from layout {layout.name}: {type(error).__name__}: {error} "
            "(config.json needs hidden_size, num_attention_heads and num_key_value_heads as the official "
            "module's arguments)"
        ) from None
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))
    try:
        save_file({k: v.contiguous() for k, v in converted.items()}, str(staging / "model.safetensors"))
        (staging / "config.json").write_text(json.dumps(new_config, indent=2) + "\n", encoding="utf-8")
        for name in TOKENIZER_FILES:
            if (source / name).is_file():
                shutil.copy2(source / name, staging / name)
        facts = {"layout": layout.name, "source": layout.source, "from": str(source), "conversion": note}
        (staging / LAYOUT_NOTE).write_text(json.dumps(facts, indent=2) + "\n", encoding="utf-8")
        from diffbench.store import publish_directory

        publish_directory(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def layout_of(location: str) -> str | None:
    """The layout a (converted) checkpoint came from, for the manifest; None for a native one."""
    note = Path(location) / LAYOUT_NOTE
    if not note.is_file():
        return None
    try:
        return str(json.loads(note.read_text(encoding="utf-8"))["layout"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
