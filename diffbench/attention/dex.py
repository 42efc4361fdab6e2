"""DEX (Differential EXtension), reconstructed: O'_h = O_h − λ_l·f_D(O_h) on selected heads, before o_proj.

Per layer l with H heads of width d, for each selected head h (shapes per token):

    O_h   = softmax(Q_h K_hᵀ / √d) V_h          (d,)    the pretrained head output, unchanged
    O'_h  = O_h − λ_l · O_h W_D                  (d,)    W_D: d × d, zero-initialised; one per layer
                                                         (share="layer") or one per head (share="head")
    [norm="rms"]  O'_h ← O'_h · rms(O_h) / rms(O'_h)      no parameters: the identity whenever λ·f_D = 0
    y     = Concat(O'_h) W_Oᵀ                    (d_model,)  the pretrained o_proj, unchanged

    λ_l(t) = (1 − α)·(t/T)·λ_init,l + α·λ_learn,l,  α = min(1, t/T),  λ_init,l = 0.8 − 0.6·exp(−0.3·(l−1))

Why a pre-forward hook on o_proj: o_proj's input is exactly Concat(O_h) for every attention backend
(eager, SDPA, flash-attention), so transforming it leaves the pretrained attention code, weights and
kernels untouched. DEX's own parameters live in a ``dex`` submodule of each attention module, so they
are in the model's state dict, move with ``.to()`` and train with any optimizer; ``without_dex`` hides
them when the base weights are saved with ``save_pretrained``.

Why the RMS rescaling keeps the *input's* RMS and has no learnable gain: a plain RMSNorm (or a gain)
would change O_h at λ = 0 and break the identity start and the λ = 0 invariant; rescaling O'_h to O_h's
own RMS is exactly the identity at λ = 0 (both RMS values come from bit-identical tensors) yet is
non-linear (the direction comes from O'_h, the length from O_h), so it cannot be folded. Like
transformers' DiffLlama, whose per-head RMSNorm has no learnable scale either.

Linear f_D followed by W_O is linear: without the norm DEX is a reparameterisation of W_O on the
selected heads, and :func:`fold_dex` writes it into o_proj (W_O' = blockdiag(I − λW_D) W_O in the
math convention; in nn.Linear's [out, in] convention the head-h column block becomes W_h (I − λW_D)ᵀ).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from diffbench.errors import ModelLoadError, UsageError
from diffbench.store import read_json_object, read_versioned_json, write_json

DEX_WEIGHTS = "dex.safetensors"
DEX_MANIFEST = "diffbench.json"
FORMAT_VERSION = 1
SHARE_CHOICES = ("layer", "head")
NORM_CHOICES = ("none", "rms")
# Small and positive so that f_D keeps a gradient once the annealing has handed λ over to λ_learn.
LAMBDA_LEARN_INIT = 0.05
RMS_EPS = 1e-6
DIFF_MODEL_TYPES = ("diffllama", "diffbench_diff_v2")


def lambda_init(layer: int) -> float:
    """λ_init of Diff V1 for a 0-based layer index (the formula's l is 1-based: l − 1 = layer)."""
    return 0.8 - 0.6 * math.exp(-0.3 * layer)


class DexHeads(nn.Module):
    """DEX on one layer's selected heads: maps o_proj's input [..., H·d] to the same shape."""

    head_index: torch.Tensor  # the selected heads, a buffer (not saved: diffbench.json lists them)

    def __init__(
        self,
        layer: int,
        num_heads: int,
        head_dim: int,
        heads: list[int],
        share: str = "layer",
        norm: str = "none",
        dtype: torch.dtype | None = None,
        device: torch.device | None = None,
    ) -> None:
        super().__init__()
        if share not in SHARE_CHOICES or norm not in NORM_CHOICES:
            raise UsageError(f"DEX share must be one of {SHARE_CHOICES} and norm one of {NORM_CHOICES}")
        if not heads or len(set(heads)) != len(heads) or not all(0 <= h < num_heads for h in heads):
            raise UsageError(
                f"layer {layer}: selected heads {heads} are not distinct heads of 0..{num_heads - 1}"
            )
        self.layer = layer
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.heads = sorted(heads)
        self.share = share
        self.norm = norm  # "rms": rescale each updated head to its input's RMS (no parameters)
        self.lambda_init = lambda_init(layer)
        self.step = 0  # optimisation steps taken: drives the λ schedule (saved in diffbench.json)
        self.anneal_steps: int | None = None  # T; None before any adaptation
        self.register_buffer("head_index", torch.tensor(self.heads, dtype=torch.long, device=device), False)
        shape = (head_dim, head_dim) if share == "layer" else (len(self.heads), head_dim, head_dim)
        self.w_d = nn.Parameter(torch.zeros(shape, dtype=dtype, device=device))
        self.lambda_learn = nn.Parameter(torch.tensor(LAMBDA_LEARN_INIT, dtype=dtype, device=device))

    def lambda_value(self) -> torch.Tensor:
        """λ at the current step: 0 before adaptation, annealed during it, λ_learn once t ≥ T."""
        t, total = self.step, self.anneal_steps
        if t <= 0:
            return torch.zeros_like(self.lambda_learn)
        if not total or t >= total:
            return self.lambda_learn
        alpha = t / total
        return (1.0 - alpha) * alpha * self.lambda_init + alpha * self.lambda_learn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        per_head = x.reshape(*lead, self.num_heads, self.head_dim)  # [..., H, d]
        head_axis = per_head.dim() - 2
        every_head = len(self.heads) == self.num_heads
        selected = (
            per_head if every_head else per_head.index_select(head_axis, self.head_index)
        )  # [..., n, d]
        w_d = self.w_d.to(x.dtype)
        if self.share == "layer":
            transformed = selected @ w_d
        else:
            transformed = torch.einsum("...nd,nde->...ne", selected, w_d)
        updated = selected - self.lambda_value().to(x.dtype) * transformed
        if self.norm == "rms":
            updated = updated * (_rms(selected) / _rms(updated)).to(x.dtype)
        merged = updated if every_head else per_head.index_copy(head_axis, self.head_index, updated)
        return merged.reshape(x.shape)

    def extra_repr(self) -> str:
        return (
            f"layer={self.layer}, heads={self.heads}, d={self.head_dim}, share={self.share}, norm={self.norm}"
        )


def _rms(x: torch.Tensor) -> torch.Tensor:
    """Per-head RMS over the head width, in float32 (bf16's 8-bit mantissa would make the ratio coarse)."""
    return x.float().pow(2).mean(-1, keepdim=True).add(RMS_EPS).sqrt()


class _DexHook:
    """o_proj's forward pre-hook. A class, not a closure, so ``copy.deepcopy(model)`` rebinds it."""

    def __init__(self, dex: DexHeads) -> None:
        self.dex = dex

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        hidden = args[0]
        if next(self.dex.parameters()).device != hidden.device:
            # A layer placed (or offloaded) by accelerate: the few DEX parameters follow its activations.
            self.dex.to(hidden.device)
        return (self.dex(hidden), *args[1:])


# ---------------------------------------------------------------------------------------------------
# Attaching, inspecting and removing DEX on a loaded model
# ---------------------------------------------------------------------------------------------------


def attention_modules(model: Any) -> list[Any]:
    """Each decoder layer's attention module; DEX needs Llama-style ``layers[i].self_attn.o_proj``."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", "?")
    if model_type in DIFF_MODEL_TYPES:
        raise UsageError(f"model is a {model_type!r} Differential Transformer already; DEX extends baselines")
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    layers = getattr(decoder, "layers", None)
    modules = [getattr(layer, "self_attn", None) for layer in layers] if layers is not None else []
    if not modules or not all(isinstance(getattr(m, "o_proj", None), nn.Linear) for m in modules):
        raise UsageError(
            f"DEX needs Llama-style attention (layers[i].self_attn.o_proj, e.g. Llama, Qwen2, Mistral); "
            f"a {model_type!r} model has none"
        )
    return modules


def head_geometry(model: Any) -> tuple[int, int, int]:
    """(layers, query heads, head width) read from the attention modules themselves."""
    modules = attention_modules(model)
    num_heads = int(model.config.num_attention_heads)
    in_features = int(modules[0].o_proj.in_features)
    if in_features % num_heads:
        raise UsageError(f"o_proj input width {in_features} is not a multiple of the {num_heads} heads")
    return len(modules), num_heads, in_features // num_heads


def attach_dex(model: Any, heads: list[list[int]], share: str = "layer", norm: str = "none") -> None:
    """Add DEX (W_D = 0, λ = 0) on ``heads[l]`` of every layer l; layers with no heads stay untouched."""
    modules = attention_modules(model)
    if dex_modules(model):
        raise UsageError("this model already carries DEX parameters")
    if len(heads) != len(modules):
        raise UsageError(f"selected heads name {len(heads)} layers; the model has {len(modules)}")
    _, num_heads, head_dim = head_geometry(model)
    for layer, (attention, layer_heads) in enumerate(zip(modules, heads, strict=True)):
        if not layer_heads:
            continue
        weight = attention.o_proj.weight
        # An offloaded layer's weight is on "meta" until accelerate loads it: DEX's own live on the host.
        device = weight.device if weight.device.type != "meta" else torch.device("cpu")
        dex = DexHeads(layer, num_heads, head_dim, list(layer_heads), share, norm, weight.dtype, device)
        attention.add_module("dex", dex)
        attention.o_proj.register_forward_pre_hook(_DexHook(dex))


def dex_modules(model: Any) -> list[DexHeads]:
    """The DexHeads of a model, in layer order (empty for a model without DEX)."""
    return [m for m in model.modules() if isinstance(m, DexHeads)]


def remove_dex(model: Any) -> None:
    """Drop DEX entirely: hooks and parameters; the model is the plain baseline again."""
    for attention in attention_modules(model):
        hooks = attention.o_proj._forward_pre_hooks
        for key in [k for k, hook in hooks.items() if isinstance(hook, _DexHook)]:
            del hooks[key]
        if isinstance(getattr(attention, "dex", None), DexHeads):
            del attention.dex


@contextlib.contextmanager
def without_dex(model: Any) -> Iterator[None]:
    """Hide the ``dex`` submodules (not the hooks) so ``state_dict``/``save_pretrained`` see the base only."""
    hidden = []
    for attention in attention_modules(model):
        if "dex" in attention._modules:
            hidden.append((attention, attention._modules.pop("dex")))
    try:
        yield
    finally:
        for attention, dex in hidden:
            attention._modules["dex"] = dex


def set_schedule(model: Any, step: int, anneal_steps: int | None) -> None:
    """Move every layer's λ schedule to ``step`` (of ``anneal_steps``)."""
    for dex in dex_modules(model):
        dex.step, dex.anneal_steps = step, anneal_steps


def use_rms_norm(model: Any) -> None:
    """Switch every layer to the RMS-rescaled (non-linear, unfoldable) operator; it has no parameters."""
    for dex in dex_modules(model):
        dex.norm = "rms"


def lambdas(model: Any) -> list[float | None]:
    """λ per layer at the current step; None for layers without DEX."""
    by_layer = {dex.layer: float(dex.lambda_value().detach()) for dex in dex_modules(model)}
    return [by_layer.get(layer) for layer in range(len(attention_modules(model)))]


def dex_state_dict(model: Any) -> dict[str, torch.Tensor]:
    """DEX's own parameters under their full state-dict names (``model.layers.3.self_attn.dex.w_d``)."""
    return {k: v for k, v in model.state_dict().items() if ".dex." in f".{k}"}


@torch.no_grad()
def fold_dex(model: Any) -> None:
    """Write a linear DEX into o_proj and remove it: zero inference overhead, identical outputs.

    For head h with M_h = I − λ W_D (d × d): y = Σ_h O_h M_h W_hᵀ, where W_h = o_proj.weight[:, h·d:(h+1)·d]
    ([d_model, d], nn.Linear's [out, in] layout), so the folded block is W_h' = W_h M_hᵀ. Computed in
    float64, then cast back.
    """
    modules = dex_modules(model)
    for dex in modules:
        if dex.norm != "none":
            raise UsageError(
                f"cannot fold: layer {dex.layer} uses --norm rms, a per-head RMS rescaling after the "
                "subtraction that depends on each token's O_h (non-linear), so it is no reparameterisation "
                "of o_proj; only a linear f_D (--norm none) folds"
            )
    attentions = attention_modules(model)
    for dex in modules:
        weight = attentions[dex.layer].o_proj.weight
        lam = float(dex.lambda_value())
        identity = torch.eye(dex.head_dim, dtype=torch.float64, device=weight.device)
        for position, head in enumerate(dex.heads):
            w_d = dex.w_d if dex.share == "layer" else dex.w_d[position]  # [d, d]
            mix = identity - lam * w_d.double()
            block = slice(head * dex.head_dim, (head + 1) * dex.head_dim)
            weight[:, block] = (weight[:, block].double() @ mix.T).to(weight.dtype)
    remove_dex(model)


# ---------------------------------------------------------------------------------------------------
# The checkpoint format: save_pretrained of the base + dex.safetensors + diffbench.json
# ---------------------------------------------------------------------------------------------------


class BaseModelInfo(BaseModel):
    """The pretrained model a DEX checkpoint extends."""

    model_config = ConfigDict(extra="forbid")

    source: str  # the --model value given to `dex convert`
    name: str
    path: str  # where its weights were read from


class ScheduleState(BaseModel):
    """Where the λ schedule stands: training resumes here and inference uses λ at this step."""

    model_config = ConfigDict(extra="forbid")

    step: int = 0
    anneal_steps: int | None = None


class TrainingInfo(BaseModel):
    """How `dex adapt` trained the checkpoint (also for the o_proj control)."""

    model_config = ConfigDict(extra="forbid")

    train: str
    data: str
    data_fingerprint: str
    tokens_budget: int
    steps: int
    seq_len: int
    batch_size: int
    lr: float
    base_lr: float
    seed: int
    status: Literal["running", "complete"]
    options_fingerprint: str
    loss_before: float | None = None  # mean held-out loss per token, before and after adaptation
    loss_after: float | None = None
    train_loss_first: float | None = None
    train_loss_last: float | None = None
    eval_tokens: int = 0
    seconds: float = 0.0
    source: str  # the --model given to `dex adapt`


class DexManifest(BaseModel):
    """diffbench.json of a DEX checkpoint or an o_proj control: the variant and its provenance."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["dex", "oproj-control"]
    format_version: int = FORMAT_VERSION
    base_model: BaseModelInfo
    num_layers: int
    num_heads: int
    head_dim: int
    selected_heads: list[list[int]]
    select: str | None = None
    heads_per_layer: str | None = None
    share: str = "layer"
    norm: str = "none"
    calibration: dict[str, Any] | None = None
    schedule: ScheduleState = ScheduleState()
    lambda_init: list[float]
    lambda_learn_init: float = LAMBDA_LEARN_INIT
    final_lambda: list[float | None]
    tokens_seen: int = 0
    training: TrainingInfo | None = None
    folded: bool = False
    folded_from: str | None = None
    diffbench_version: str
    created_at: str
    commands: list[list[str]] = []


def read_dex_manifest(directory: str | Path) -> DexManifest | None:
    """The diffbench.json of a checkpoint directory, or None when it has none (a plain checkpoint)."""
    path = Path(directory) / DEX_MANIFEST
    if not path.is_file():
        return None
    return read_versioned_json(path, DexManifest, "format_version", FORMAT_VERSION, ModelLoadError)


def is_dex_checkpoint(location: str) -> bool:
    """Whether a model location is a local directory whose diffbench.json says kind "dex"."""
    path = Path(location) / DEX_MANIFEST
    if not path.is_file():
        return False
    payload = read_json_object(path)
    return payload is not None and payload.get("kind") == "dex"


def apply_dex_from_dir(model: Any, directory: str | Path) -> None:
    """Give a freshly loaded base model its DEX parameters and λ schedule from a DEX checkpoint directory."""
    manifest = read_dex_manifest(directory)
    if manifest is None or manifest.kind != "dex" or manifest.folded:
        return  # an o_proj control or a folded DEX: the weights already say everything
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    attach_dex(model, manifest.selected_heads, manifest.share, manifest.norm)
    path = Path(directory) / DEX_WEIGHTS
    try:
        tensors = load_file(str(path))
    # A damaged file raises SafetensorError, which is no RuntimeError.
    except (OSError, RuntimeError, SafetensorError) as error:
        raise ModelLoadError(f"cannot read the DEX parameters {str(path)!r}: {error}") from None
    expected = set(dex_state_dict(model))
    if set(tensors) != expected:
        missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
        raise ModelLoadError(
            f"{str(path)!r} does not match diffbench.json (missing {missing[:3]}, unexpected {extra[:3]}); "
            "the checkpoint is corrupt: convert again"
        )
    model.load_state_dict(tensors, strict=False)
    set_schedule(model, manifest.schedule.step, manifest.schedule.anneal_steps)


def save_checkpoint(model: Any, tokenizer: Any, directory: Path, manifest: DexManifest) -> None:
    """A normal checkpoint directory: base weights (save_pretrained), DEX parameters, diffbench.json last."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    with without_dex(model):
        model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    state = {k: v.detach().contiguous().cpu() for k, v in dex_state_dict(model).items()}
    if state:
        save_file(state, str(directory / DEX_WEIGHTS), metadata={"format": "pt"})
    else:
        (directory / DEX_WEIGHTS).unlink(missing_ok=True)
    write_json(directory / DEX_MANIFEST, manifest.model_dump(mode="json"))
