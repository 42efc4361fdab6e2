"""`diffbench run`: a task file (tasks/*.toml) run as `niah` or `halluc` would run it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from diffbench.cli.common import engine_options
from diffbench.cli.console import user_errors
from diffbench.cli.options import AttnOption, DeviceOption, DtypeOption, JsonOption, ResultsDirOption
from diffbench.errors import UsageError


def run(
    task_file: Annotated[
        Path,
        typer.Argument(help="A task file, e.g. tasks/niah-8k-64k.toml or tasks/halluc-probes.toml."),
    ],
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            "-m",
            help="Checkpoint directory, .gguf file, hub id, or 'smollm2' (default: the file's).",
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Run directory (default: results/<time>_<task>_<model>).")
    ] = None,
    results_dir: ResultsDirOption = Path("results"),
    device: DeviceOption = "auto",
    dtype: DtypeOption = "auto",
    json_output: JsonOption = False,
    prefix_sharing: Annotated[
        bool | None,
        typer.Option(
            "--prefix-sharing/--no-prefix-sharing", help="Overrides the file's engine.prefix_sharing."
        ),
    ] = None,
    max_memory: Annotated[
        str | None, typer.Option(help="Memory budget, e.g. 8GB (replaces the file's chunk size setting).")
    ] = None,
    chunk_tokens: Annotated[
        int | None,
        typer.Option(min=1, help="Tokens per prefill chunk (replaces the file's chunk size setting)."),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Equal-length prompts per batch (overrides the file's).")
    ] = None,
    device_map: Annotated[
        str | None, typer.Option(help="'auto': spread each model over all visible GPUs with accelerate.")
    ] = None,
    attn: AttnOption = False,
) -> None:
    """Run a task file (tasks/*.toml): its sample set and scoring, on --model or the file's models."""
    with user_errors():
        from diffbench.taskfile import load_task_file

        task = load_task_file(task_file)
        attn = attn or task.attn
        models = model or list(task.models)
        if not models:
            raise UsageError(
                f"{task.source}: names no models: pass --model (repeat it to compare) "
                "or add models = [...] to the file"
            )
        engine = task.engine
        if max_memory is None and chunk_tokens is None:  # either on the command line replaces both
            max_memory, chunk_tokens = engine.max_memory, engine.chunk_tokens
        options = engine_options(
            engine.prefix_sharing if prefix_sharing is None else prefix_sharing,
            max_memory,
            chunk_tokens,
            engine.batch_size if batch_size is None else batch_size,
            device_map,
        )
        if task.task == "halluc":  # the probes run as `diffbench halluc` runs them
            from diffbench.cli.halluc import execute_halluc

            execute_halluc(task.spec, models, out, results_dir, device, dtype, json_output, options, attn)
            return
        from diffbench.cli.niah import execute_niah, sweep_directory

        runs = task.runs()
        for label, spec in runs:
            target = sweep_directory(spec, label, models, out, results_dir) if len(runs) > 1 else out
            execute_niah(spec, models, target, results_dir, device, dtype, json_output, options, attn)
