"""`diffbench dex convert` and `diffbench dex fold`: whole-checkpoint operations around the DEX operator.

convert: calibrate on built-in prose, select heads, add DEX parameters that start as the exact identity
(W_D = 0 and λ = 0 at step 0), save a checkpoint directory that loads through --model as variant "dex".
fold: write a trained linear DEX into o_proj (zero inference overhead) and save that as a checkpoint.

Both write into a staging directory beside --out and rename it into place, so --out is either absent
or complete, never half-written.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffbench.attention.dex import (
    SHARE_CHOICES,
    BaseModelInfo,
    DexManifest,
    attach_dex,
    fold_dex,
    head_geometry,
    lambda_init,
    lambdas,
    read_dex_manifest,
    save_checkpoint,
    set_schedule,
)
from diffbench.errors import UsageError
from diffbench.store import now_iso
from diffbench.training.dex_select import (
    CALIBRATION_LENGTH,
    CALIBRATION_SEQUENCES,
    SELECT_CHOICES,
    head_scores,
    parse_heads_per_layer,
    pick_heads,
)

DEFAULT_FRACTION = "0.5"


@dataclass(frozen=True)
class ConvertOutcome:
    directory: Path
    selected_heads: list[list[int]]
    num_heads: int
    scores: list[list[float]] | None


@dataclass(frozen=True)
class FoldOutcome:
    directory: Path
    final_lambda: list[float | None]


def load_for_dex(model_text: str, max_length: int, device_choice: str = "auto") -> Any:
    """A --model loaded in float32 (DEX's own code path: convert, adapt, fold, tests), variant applied."""
    import torch

    from diffbench.models.device import resolve_device
    from diffbench.models.load import load_weights, prepare_model, resolve_model_ref

    prepared = prepare_model(resolve_model_ref(model_text), "none", max_length)
    return load_weights(prepared, resolve_device(device_choice), torch.float32, "sdpa")


def check_new_output(out: Path) -> None:
    """--out must not exist yet, or be an empty directory: convert and fold never overwrite."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"--out {str(out)!r} already exists and is not empty; pick a new directory")


@contextmanager
def staged_directory(out: Path) -> Iterator[Path]:
    """A staging directory beside ``out``, renamed to ``out`` when the block finishes without error."""
    check_new_output(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp's private 0700 would outlive the rename
    try:
        yield staging
        if out.exists():
            out.rmdir()
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def convert(
    model_text: str,
    out: Path,
    heads_per_layer: str | None = None,
    select: str = "entropy",
    share: str = "layer",
    seed: int = 0,
    command: list[str] | None = None,
) -> ConvertOutcome:
    """Select heads by calibration and save the model with identity-initialised DEX parameters."""
    from diffbench import __version__
    from diffbench.training.dex_data import prose_blocks

    if select not in SELECT_CHOICES:
        raise UsageError(f"unknown --select {select!r}: use {', '.join(SELECT_CHOICES)}")
    if share not in SHARE_CHOICES:
        raise UsageError(f"unknown --share {share!r}: use {', '.join(SHARE_CHOICES)}")
    if select == "all" and heads_per_layer is not None:
        raise UsageError("--select all takes every head of every layer: drop --heads-per-layer")
    check_new_output(out)
    loaded = load_for_dex(model_text, CALIBRATION_LENGTH)
    existing = read_dex_manifest(loaded.entry.path)
    if existing is not None and existing.kind == "dex":
        raise UsageError(f"model {model_text!r} is a DEX checkpoint already; convert its base model instead")
    model, tokenizer = loaded.model, loaded.tokenizer
    num_layers, num_heads, head_dim = head_geometry(model)
    count = (
        num_heads
        if select == "all"
        else parse_heads_per_layer(heads_per_layer or DEFAULT_FRACTION, num_heads)
    )
    length = min(CALIBRATION_LENGTH, loaded.entry.context_window)
    batches = prose_blocks(tokenizer, seed, "calibration", CALIBRATION_SEQUENCES, length)
    scores = head_scores(model, batches, select) if select != "all" else None
    selected = pick_heads(scores or [[0.0] * num_heads] * num_layers, count, select)
    attach_dex(model, selected, share, "none")
    set_schedule(model, 0, None)
    manifest = DexManifest(
        kind="dex",
        base_model=BaseModelInfo(source=model_text, name=loaded.entry.name, path=loaded.entry.path),
        num_layers=num_layers,
        num_heads=num_heads,
        head_dim=head_dim,
        selected_heads=selected,
        select=select,
        heads_per_layer="all" if select == "all" else heads_per_layer or DEFAULT_FRACTION,
        share=share,
        norm="none",
        calibration={
            "text": "builtin prose",
            "seed": seed,
            "sequences": CALIBRATION_SEQUENCES,
            "length": length,
            "score": {
                "entropy": "mean attention entropy (nats), highest chosen",
                "importance": "mean |O_h W_hᵀ|, lowest chosen",
                "all": None,
            }[select],
            "scores": [[round(v, 6) for v in layer] for layer in scores] if scores else None,
        },
        lambda_init=[lambda_init(layer) for layer in range(num_layers)],
        final_lambda=lambdas(model),
        diffbench_version=__version__,
        created_at=now_iso(),
        commands=[command or sys.argv],
    )
    with staged_directory(out) as staging:
        save_checkpoint(model, tokenizer, staging, manifest)
    return ConvertOutcome(out, selected, num_heads, scores)


def fold(model_text: str, out: Path, command: list[str] | None = None) -> FoldOutcome:
    """Fold a trained linear DEX into o_proj; refuse, with the reason, when it has the RMS norm."""
    from diffbench.models.load import resolve_model_ref

    check_new_output(out)
    ref = resolve_model_ref(model_text)
    manifest = read_dex_manifest(ref.location) if ref.kind in ("local", "zoo") else None
    if manifest is None or manifest.kind != "dex":
        raise UsageError(f"model {model_text!r} is not a DEX checkpoint (no diffbench.json of kind 'dex')")
    if manifest.folded:
        raise UsageError(f"model {model_text!r} is folded already: it has no DEX parameters left to fold")
    if manifest.norm != "none":
        raise UsageError(
            f"cannot fold {model_text!r}: it was adapted with --norm {manifest.norm}, a per-head RMS "
            "rescaling after the subtraction that depends on each token's O_h (non-linear), so it is not "
            "a reparameterisation of o_proj; only a linear f_D (--norm none) folds"
        )
    loaded = load_for_dex(model_text, 1)
    final = lambdas(loaded.model)
    fold_dex(loaded.model)
    folded = manifest.model_copy(
        update={
            "folded": True,
            "folded_from": str(Path(ref.location)),
            "final_lambda": final,
            "created_at": now_iso(),
            "commands": [*manifest.commands, command or sys.argv],
        }
    )
    with staged_directory(out) as staging:
        save_checkpoint(loaded.model, loaded.tokenizer, staging, folded)
    return FoldOutcome(out, final)
