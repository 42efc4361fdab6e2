"""`diffbench dex adapt`: a short, resumable causal-LM adaptation of a DEX checkpoint (or the o_proj control).

Modes (``--train``):
- ``dex``: only DEX's parameters (W_D and λ_learn per layer) train;
- ``dex+attn``: also every layer's q/k/v/o projections (at ``--base-lr``);
- ``oproj``: no DEX at all, only o_proj trains: the control that says whether DEX beats a plain fine-tune
  of the very weights a linear DEX reparameterises, on the same tokens.

λ follows the annealing schedule of dex.py: step t of T gives λ(t), so training starts at exactly the
pretrained model; the final checkpoint stores the step and inference uses λ there (λ_learn when t ≥ T,
which the default T = half the steps guarantees).

Why it resumes exactly: batches are a pure function of (data, seed, step), there is no dropout or
sampling, and a checkpoint (trainable tensors + AdamW state + step, one file renamed into place) is
written every ``checkpoint_every`` steps; rerunning the same command continues from it and reaches the
same parameters as an uninterrupted run. A different command in the same --out is refused.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from diffbench.attention.dex import (
    DEX_MANIFEST,
    NORM_CHOICES,
    BaseModelInfo,
    DexManifest,
    ScheduleState,
    TrainingInfo,
    dex_modules,
    head_geometry,
    lambdas,
    read_dex_manifest,
    remove_dex,
    save_checkpoint,
    set_schedule,
    use_rms_norm,
)
from diffbench.checkpoints import LOG_FILE, RESUME_FILE, append_log, atomic_torch_save, trim_log
from diffbench.errors import DiffbenchError, UsageError
from diffbench.events import CheckpointSaved, Evaluated, EventHook, Planned, Status, StepDone, ignore
from diffbench.store import LOCK, acquire_lock, now_iso
from diffbench.training.dex_data import adaptation_blocks, blocks_fingerprint, resolve_data

TRAIN_CHOICES = ("dex", "dex+attn", "oproj")
DEFAULT_TOKENS = 200_000
DEFAULT_LR = 1e-3  # DEX parameters (W_D starts at zero)
DEFAULT_BASE_LR = 1e-4  # pretrained weights: o_proj in the control, q/k/v/o in dex+attn
GRAD_CLIP = 1.0
# AdamW moves each parameter by about lr per step: above 1 training can only diverge, and near 1e38
# its step size overflows float32 (a RuntimeError deep in torch), so --lr and --base-lr stop here.
MAX_LR = 1.0


@dataclass(frozen=True)
class AdaptOptions:
    """What defines an adaptation run; all but out/device/checkpoint_every/command enter its fingerprint."""

    model: str
    out: Path
    tokens: int = DEFAULT_TOKENS
    data: str = "builtin"
    lr: float | None = None
    base_lr: float | None = None
    anneal_steps: int | None = None
    train: str = "dex"
    norm: str = "none"
    seq_len: int = 256
    batch_size: int = 4
    seed: int = 0
    checkpoint_every: int = 20
    eval_sequences: int = 8
    device: str = "auto"
    command: list[str] = field(default_factory=list)

    @property
    def steps(self) -> int:
        return self.tokens // (self.seq_len * self.batch_size)

    @property
    def resolved_lr(self) -> float:
        return self.lr if self.lr is not None else (DEFAULT_BASE_LR if self.train == "oproj" else DEFAULT_LR)

    @property
    def resolved_base_lr(self) -> float:
        return self.base_lr if self.base_lr is not None else DEFAULT_BASE_LR

    @property
    def resolved_anneal_steps(self) -> int:
        return self.anneal_steps if self.anneal_steps is not None else max(1, self.steps // 2)


@dataclass(frozen=True)
class AdaptOutcome:
    directory: Path
    manifest: DexManifest
    resumed_from: int  # the step a checkpoint let this run start at (0: a fresh run)
    already_complete: bool


def validate(options: AdaptOptions) -> None:
    """Usage errors a user can fix before anything loads."""
    if options.train not in TRAIN_CHOICES:
        raise UsageError(f"unknown --train {options.train!r}: use {', '.join(TRAIN_CHOICES)}")
    if options.norm not in NORM_CHOICES:
        raise UsageError(f"unknown --norm {options.norm!r}: use {', '.join(NORM_CHOICES)}")
    if options.train == "oproj" and options.norm != "none":
        raise UsageError("--train oproj is the no-DEX control: --norm applies to DEX only")
    if options.train == "oproj" and options.anneal_steps is not None:
        raise UsageError("--train oproj is the no-DEX control: --anneal-steps applies to DEX only")
    if options.seq_len < 2 or options.batch_size < 1 or options.eval_sequences < 1:
        raise UsageError("--seq-len must be at least 2, --batch-size and --eval-sequences at least 1")
    if options.steps < 1:
        raise UsageError(
            f"--tokens {options.tokens} is less than one step of --batch-size {options.batch_size} × "
            f"--seq-len {options.seq_len} = {options.batch_size * options.seq_len} tokens"
        )
    if options.anneal_steps is not None and not 1 <= options.anneal_steps <= options.steps:
        raise UsageError(
            f"--anneal-steps {options.anneal_steps} must lie in 1..{options.steps} (the steps --tokens "
            "gives), so that λ = λ_learn by the end and the saved model is what training reached"
        )
    for name, value, default in (
        ("--lr", options.lr, DEFAULT_LR),
        ("--base-lr", options.base_lr, DEFAULT_BASE_LR),
    ):
        if value is not None and not value > 0:
            raise UsageError(f"{name} must be positive")
        if value is not None and value > MAX_LR:
            raise UsageError(
                f"{name} {value:g} is too large: AdamW moves each weight by about {name} per step, so "
                f"rates above {MAX_LR:g} only diverge; use e.g. {default:g}"
            )
    if options.checkpoint_every < 1:
        raise UsageError("--checkpoint-every must be at least 1")


def fingerprint(options: AdaptOptions, source_identity: str, data_fingerprint: str) -> str:
    from diffbench.specs import stable_hash

    payload = {
        k: v for k, v in asdict(options).items() if k not in ("out", "device", "checkpoint_every", "command")
    }
    payload.update(
        lr=options.resolved_lr,
        base_lr=options.resolved_base_lr,
        anneal_steps=options.resolved_anneal_steps if options.train != "oproj" else None,
        source=source_identity,
        data=data_fingerprint,
    )
    return stable_hash(payload)[:16]


def held_out_loss(model: Any, blocks: Any, batch_size: int) -> float:
    """Mean next-token loss (nats per predicted token) over held-out blocks."""
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(blocks), batch_size):
            batch = blocks[start : start + batch_size]
            loss = model(input_ids=batch, labels=batch, use_cache=False).loss
            predicted = batch.numel() - batch.shape[0]
            total += float(loss) * predicted
            count += predicted
    return total / count


def trainable_parameters(model: Any, train: str) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
    """(DEX parameters, pretrained parameters) that this mode trains; everything else is frozen."""
    from diffbench.attention.dex import attention_modules

    for parameter in model.parameters():
        parameter.requires_grad_(False)
    dex = [(n, p) for n, p in model.named_parameters() if ".dex." in f".{n}"]
    projections = {"oproj": ("o_proj",), "dex+attn": ("q_proj", "k_proj", "v_proj", "o_proj")}.get(train, ())
    base_ids: set[int] = set()
    for attention in attention_modules(model):
        for name in projections:
            base_ids.update(id(p) for p in getattr(attention, name).parameters())
    base = [(n, p) for n, p in model.named_parameters() if id(p) in base_ids]
    if train == "oproj":
        dex = []
    for _, parameter in dex + base:
        parameter.requires_grad_(True)
    return dex, base


def _check_output(out: Path, fingerprint_value: str) -> str:
    """'fresh', 'resume' or 'complete' for --out; another run's directory is refused."""
    manifest_path = out / DEX_MANIFEST
    if manifest_path.is_file():
        manifest = read_dex_manifest(out)
        training = manifest.training if manifest else None
        if training is not None and training.options_fingerprint == fingerprint_value:
            return "complete" if not (out / RESUME_FILE).exists() else "resume"
        raise UsageError(
            f"--out {str(out)!r} holds another checkpoint or adaptation run; pass another --out, or repeat "
            "that run's exact options to resume it"
        )
    if (out / RESUME_FILE).exists():
        return "resume"
    foreign = [p.name for p in out.iterdir() if p.name not in (LOG_FILE, LOCK)] if out.is_dir() else []
    if foreign:
        raise UsageError(
            f"--out {str(out)!r} is not empty and holds no adaptation run "
            f"({', '.join(sorted(foreign)[:3])}); pick a new directory"
        )
    return "fresh"


def adapt(options: AdaptOptions, on_event: EventHook | None = None) -> AdaptOutcome:
    """Train (or resume training) and save a checkpoint that loads through --model."""
    from diffbench.models.load import prepare_model, resolve_model_ref

    emit = on_event or ignore
    validate(options)
    ref = resolve_model_ref(options.model)
    source = read_dex_manifest(ref.location) if ref.kind in ("local", "zoo") else None
    source_is_dex = source is not None and source.kind == "dex"
    if options.train != "oproj" and not source_is_dex:
        raise UsageError(
            f"--train {options.train} needs a DEX checkpoint and {options.model!r} is not one: run "
            f"'diffbench dex convert --model {options.model} --out DIR' and pass --model DIR"
        )
    if source is not None and source_is_dex and (source.folded or source.tokens_seen):
        raise UsageError(
            f"{options.model!r} is an adapted{' and folded' if source.folded else ''} DEX checkpoint; "
            "adapt the checkpoint `dex convert` wrote, into a new --out"
        )
    data = resolve_data(options.data, options.seed)
    emit(Status("tokenising"))
    prepared = prepare_model(ref, "none", options.seq_len)
    train_blocks, eval_blocks = adaptation_blocks(
        prepared.tokenizer,
        data,
        options.seed,
        options.steps * options.batch_size,
        options.eval_sequences,
        options.seq_len,
    )
    source_identity = ref.location + (f"#{source.created_at}" if source is not None else "")
    run_fingerprint = fingerprint(options, source_identity, blocks_fingerprint(train_blocks, eval_blocks))

    out = options.out
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {str(out)!r} is a file; pass a directory")
    state = _check_output(out, run_fingerprint) if out.exists() else "fresh"
    if state == "complete":
        manifest = read_dex_manifest(out)
        assert manifest is not None  # _check_output read it
        return AdaptOutcome(out, manifest, manifest.schedule.step, already_complete=True)
    out.mkdir(parents=True, exist_ok=True)
    lock = acquire_lock(out)
    try:
        blocks = (train_blocks, eval_blocks)
        return _train(options, out, state, run_fingerprint, prepared, source, data.name, blocks, emit)
    finally:
        lock.close()


def _train(
    options: AdaptOptions,
    out: Path,
    state: str,
    run_fingerprint: str,
    prepared: Any,
    source: DexManifest | None,
    data_name: str,
    blocks: tuple[Any, Any],
    emit: EventHook,
) -> AdaptOutcome:
    """The training loop proper, from step 0 or from the checkpoint in ``out``."""
    import torch

    from diffbench import __version__
    from diffbench.models.device import resolve_device
    from diffbench.models.load import load_weights

    emit(Status("loading model"))
    loaded = load_weights(prepared, resolve_device(options.device), torch.float32, "sdpa")
    model, tokenizer = loaded.model, loaded.tokenizer
    if options.train == "oproj":
        remove_dex(model)
    elif options.norm == "rms":
        use_rms_norm(model)
    dex_params, base_params = trainable_parameters(model, options.train)
    groups = []
    if dex_params:
        groups.append({"params": [p for _, p in dex_params], "lr": options.resolved_lr})
    if base_params:
        lr = options.resolved_lr if options.train == "oproj" else options.resolved_base_lr
        groups.append({"params": [p for _, p in base_params], "lr": lr})
    optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
    named = dict(dex_params + base_params)
    device = next(model.parameters()).device
    train_blocks, eval_blocks = blocks[0].to(device), blocks[1].to(device)
    total_steps, anneal = options.steps, options.resolved_anneal_steps
    log_path = out / LOG_FILE

    start, seconds, first_loss = 0, 0.0, None
    if state == "resume":
        payload = torch.load(out / RESUME_FILE, map_location=device, weights_only=True)
        if payload.get("fingerprint") != run_fingerprint:
            raise UsageError(
                f"--out {str(out)!r} holds an adaptation run with different options; pass another --out, "
                "or repeat that run's exact options to resume it"
            )
        with torch.no_grad():
            for name, tensor in payload["trainable"].items():
                named[name].copy_(tensor)
        optimizer.load_state_dict(payload["optimizer"])
        start, seconds = int(payload["step"]), float(payload["seconds"])
        loss_before, first_loss = float(payload["loss_before"]), payload.get("train_loss_first")
        trim_log(log_path, start)
        emit(Status(f"resumed at step {start}"))
    else:
        log_path.unlink(missing_ok=True)
        set_schedule(model, 0, anneal)
        emit(Status("held-out loss before"))
        loss_before = held_out_loss(model, eval_blocks, options.batch_size)
        append_log(log_path, {"step": 0, "tokens": 0, "eval_loss": loss_before})
    emit(Evaluated("before", loss_before))
    emit(Planned(total_steps, start))

    def save_resume(step: int) -> None:
        atomic_torch_save(
            {
                "fingerprint": run_fingerprint,
                "step": step,
                "trainable": {n: p.detach().cpu() for n, p in named.items()},
                "optimizer": optimizer.state_dict(),
                "loss_before": loss_before,
                "train_loss_first": first_loss,
                "seconds": seconds,
            },
            out / RESUME_FILE,
        )

    tokens_per_step = options.batch_size * options.seq_len
    loss_value = float("nan")
    for step in range(start, total_steps):
        began = time.perf_counter()
        model.train()
        set_schedule(model, step, anneal)
        batch = train_blocks[step * options.batch_size : (step + 1) * options.batch_size]
        loss = model(input_ids=batch, labels=batch, use_cache=False).loss
        if not torch.isfinite(loss):
            raise DiffbenchError(
                f"the training loss became {float(loss.detach())} at step {step + 1}; lower --lr"
            )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(named.values()), GRAD_CLIP)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seconds += time.perf_counter() - began
        loss_value = float(loss.detach())
        first_loss = loss_value if first_loss is None else first_loss
        mean_lambda = _mean_lambda(model)
        row = {"step": step + 1, "tokens": (step + 1) * tokens_per_step, "loss": round(loss_value, 6)}
        if mean_lambda is not None:
            row["lambda_mean"] = round(mean_lambda, 6)
        append_log(log_path, row)
        emit(StepDone(step + 1, loss_value, {"lambda": mean_lambda}))
        if (step + 1) % options.checkpoint_every == 0 and step + 1 < total_steps:
            save_resume(step + 1)
            emit(CheckpointSaved(step + 1))

    if start < total_steps:
        save_resume(total_steps)  # a failure while evaluating or saving must not cost the training
    set_schedule(model, total_steps, anneal)
    emit(Status("held-out loss after"))
    loss_after = held_out_loss(model, eval_blocks, options.batch_size)
    append_log(
        log_path, {"step": total_steps, "tokens": total_steps * tokens_per_step, "eval_loss": loss_after}
    )
    emit(Evaluated("after", loss_after))
    last_loss = loss_value if start < total_steps else _last_train_loss(log_path)

    training = TrainingInfo(
        train=options.train,
        data=data_name,
        data_fingerprint=blocks_fingerprint(train_blocks.cpu(), eval_blocks.cpu()),
        tokens_budget=options.tokens,
        steps=total_steps,
        seq_len=options.seq_len,
        batch_size=options.batch_size,
        lr=options.resolved_lr,
        base_lr=options.resolved_base_lr,
        seed=options.seed,
        status="complete",
        options_fingerprint=run_fingerprint,
        loss_before=round(loss_before, 6),
        loss_after=round(loss_after, 6),
        train_loss_first=first_loss,
        train_loss_last=last_loss,
        eval_tokens=int(eval_blocks.numel()),
        seconds=round(seconds, 2),
        source=options.model,
    )
    manifest = _output_manifest(options, source, loaded, model, training, total_steps, anneal, __version__)
    emit(Status("saving"))
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    save_checkpoint(model, tokenizer, out, manifest)
    (out / RESUME_FILE).unlink(missing_ok=True)
    return AdaptOutcome(out, manifest, start, already_complete=False)


def _mean_lambda(model: Any) -> float | None:
    values = [v for v in lambdas(model) if v is not None] if dex_modules(model) else []
    return sum(values) / len(values) if values else None


def _last_train_loss(log_path: Path) -> float | None:
    rows = [json.loads(line) for line in log_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    losses = [row["loss"] for row in rows if "loss" in row]
    return losses[-1] if losses else None


def _output_manifest(
    options: AdaptOptions,
    source: DexManifest | None,
    loaded: Any,
    model: Any,
    training: TrainingInfo,
    steps: int,
    anneal: int,
    version: str,
) -> DexManifest:
    tokens = steps * options.batch_size * options.seq_len
    command = options.command or sys.argv
    if options.train != "oproj":
        assert source is not None  # adapt() refuses DEX training without a DEX source
        return source.model_copy(
            update={
                "norm": options.norm,
                "schedule": ScheduleState(step=steps, anneal_steps=anneal),
                "final_lambda": lambdas(model),
                "tokens_seen": tokens,
                "training": training,
                "created_at": now_iso(),
                "commands": [*source.commands, command],
            }
        )
    num_layers, num_heads, head_dim = head_geometry(model)
    base = (
        source.base_model
        if source is not None
        else BaseModelInfo(source=options.model, name=loaded.entry.name, path=loaded.entry.path)
    )
    return DexManifest(
        kind="oproj-control",
        base_model=base,
        num_layers=num_layers,
        num_heads=num_heads,
        head_dim=head_dim,
        selected_heads=[],
        lambda_init=[],
        final_lambda=[],
        tokens_seen=tokens,
        training=training,
        diffbench_version=version,
        created_at=now_iso(),
        commands=[*(source.commands if source is not None else []), command],
    )
