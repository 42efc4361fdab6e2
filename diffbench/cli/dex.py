"""`diffbench dex`: convert a pretrained model to DEX, adapt it briefly, fold it into o_proj."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from diffbench.cli.console import stderr, stdout, user_errors
from diffbench.cli.options import DeviceOption

dex_app = typer.Typer(
    name="dex",
    help="DEX, reconstructed: convert a pretrained model, adapt it briefly, fold it into o_proj.",
    no_args_is_help=True,
)


@dex_app.command("convert")
def dex_convert(
    model: Annotated[
        str, typer.Option("--model", "-m", help="Base model: directory, .gguf, hub id, smollm2.")
    ],
    out: Annotated[Path, typer.Option(help="New checkpoint directory to write.")],
    heads_per_layer: Annotated[
        str | None,
        typer.Option(help="Heads per layer: a fraction in (0, 1] or a count ('3'). Default: 0.5."),
    ] = None,
    select: Annotated[
        str, typer.Option(help="entropy (most diffuse heads) | importance (least important) | all.")
    ] = "entropy",
    share: Annotated[str, typer.Option(help="W_D shared per 'layer' or one per 'head'.")] = "layer",
    seed: Annotated[int, typer.Option(help="Seed of the calibration text.")] = 0,
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
) -> None:
    """Pick heads by calibration and add DEX parameters that start as an exact identity."""
    with user_errors():
        from diffbench.training.dex_convert import convert

        stderr.print(f"dex convert: calibrating {model} ({select})", markup=False, highlight=False)
        outcome = convert(model, out, heads_per_layer, select, share, seed, sys.argv)
        if json_output:
            payload = {"directory": str(outcome.directory), "selected_heads": outcome.selected_heads}
            sys.stdout.write(json.dumps(payload) + "\n")
            return
        counts = {len(heads) for heads in outcome.selected_heads}
        stdout.print(
            f"DEX on {'/'.join(map(str, sorted(counts)))} of {outcome.num_heads} heads in each of "
            f"{len(outcome.selected_heads)} layers ({select}); λ = 0, W_D = 0: identical to the base model"
        )
        stdout.print(f"checkpoint: {outcome.directory}", markup=False, highlight=False)


@dex_app.command("adapt")
def dex_adapt(
    model: Annotated[
        str, typer.Option("--model", "-m", help="A `dex convert` checkpoint (any model: oproj).")
    ],
    out: Annotated[Path, typer.Option(help="Run and checkpoint directory; rerun to resume.")],
    tokens: Annotated[int, typer.Option(min=1, help="Training token budget.")] = 200_000,
    data: Annotated[
        str, typer.Option(help="'builtin' prose, 'essays', or a .txt file / directory.")
    ] = "builtin",
    lr: Annotated[
        float | None, typer.Option(help="LR of the trained parameters (default: 1e-3 DEX, 1e-4 oproj).")
    ] = None,
    base_lr: Annotated[
        float | None, typer.Option(help="LR of q/k/v/o with --train dex+attn (default: 1e-4).")
    ] = None,
    anneal_steps: Annotated[
        int | None, typer.Option(help="Steps T of the λ annealing (default: half the steps).")
    ] = None,
    train: Annotated[str, typer.Option(help="dex | dex+attn | oproj (the no-DEX control).")] = "dex",
    norm: Annotated[
        str, typer.Option(help="none | rms (per-head RMS after subtracting; not foldable).")
    ] = "none",
    seq_len: Annotated[int, typer.Option(min=2, help="Tokens per training sequence.")] = 256,
    batch_size: Annotated[int, typer.Option(min=1, help="Sequences per step.")] = 4,
    seed: Annotated[int, typer.Option(help="Seed of the data order and text.")] = 0,
    checkpoint_every: Annotated[int, typer.Option(min=1, help="Steps between resumable checkpoints.")] = 20,
    eval_sequences: Annotated[int, typer.Option(min=1, help="Held-out sequences for the loss.")] = 8,
    device: DeviceOption = "auto",
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
) -> None:
    """Adapt with λ annealing on a small token budget; progress on stderr, loss log in --out."""
    with user_errors():
        from diffbench.training.dex_adapt import AdaptOptions, adapt

        options = AdaptOptions(
            model=model,
            out=out,
            tokens=tokens,
            data=data,
            lr=lr,
            base_lr=base_lr,
            anneal_steps=anneal_steps,
            train=train,
            norm=norm,
            seq_len=seq_len,
            batch_size=batch_size,
            seed=seed,
            checkpoint_every=checkpoint_every,
            eval_sequences=eval_sequences,
            device=device,
            command=list(sys.argv),
        )
        outcome = _run_adapt(options, adapt)
        training = outcome.manifest.training
        assert training is not None  # adapt always records its training
        if json_output:
            sys.stdout.write(json.dumps(outcome.manifest.model_dump(mode="json")) + "\n")
            return
        if outcome.already_complete:
            stderr.print(
                f"{out} holds this finished run already; nothing to do", markup=False, highlight=False
            )
        stdout.print(
            f"{training.train}: held-out loss {training.loss_before:.4f} → {training.loss_after:.4f} "
            f"after {outcome.manifest.tokens_seen:,} tokens "
            f"({training.steps} steps, {training.seconds:.0f} s)"
        )
        final = [v for v in outcome.manifest.final_lambda if v is not None]
        if final:
            stdout.print(f"final λ per layer: {min(final):.3f} … {max(final):.3f}")
        stdout.print(f"checkpoint: {outcome.directory}", markup=False, highlight=False)


def _run_adapt(options: Any, adapt: Any) -> Any:
    """Run adapt() under a rich progress bar (stderr) showing the step, loss and mean λ."""
    from diffbench.events import CheckpointSaved, Evaluated, Event, Planned, Status, StepDone
    from diffbench.progress import progress_bar

    progress = progress_bar(stderr)
    task_id = progress.add_task("dex adapt", total=None, info="")

    def on_event(event: Event) -> None:
        if isinstance(event, Status):
            progress.update(task_id, description=f"dex adapt · {event.text}")
        elif isinstance(event, Planned):
            progress.update(task_id, total=event.total, completed=event.done)
            progress.update(task_id, description="dex adapt")
        elif isinstance(event, StepDone):
            info = f"loss {event.loss:.4f}"
            if event.metrics.get("lambda") is not None:
                info += f"  λ̄ {event.metrics['lambda']:.3f}"
            progress.update(task_id, completed=event.step, info=info)
        elif isinstance(event, Evaluated):
            progress.console.print(f"held-out loss {event.when}: {event.loss:.4f}", highlight=False)
        elif isinstance(event, CheckpointSaved):
            progress.update(task_id, description=f"dex adapt (saved step {event.step})")

    with progress:
        return adapt(options, on_event)


@dex_app.command("fold")
def dex_fold(
    model: Annotated[str, typer.Option("--model", "-m", help="An adapted DEX checkpoint (--norm none).")],
    out: Annotated[Path, typer.Option(help="New checkpoint directory to write.")],
) -> None:
    """Fold a linear DEX into o_proj: same outputs, zero inference overhead."""
    with user_errors():
        from diffbench.training.dex_convert import fold

        outcome = fold(model, out, sys.argv)
        stdout.print(f"folded DEX into o_proj: {outcome.directory}", markup=False, highlight=False)
