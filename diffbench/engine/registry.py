"""The tasks the run loop knows, by the ``task`` their spec names: every command, task file and
`check --candidate-model` runs a spec through ``run_spec``, whatever its kind."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from diffbench.engine.halluc_runner import HallucTask
from diffbench.engine.loop import EngineOptions, RunOutcome, Task, run_task
from diffbench.engine.runner import NiahTask
from diffbench.events import EventHook

TASKS: dict[str, Callable[[Any], Task]] = {
    "niah": NiahTask.from_spec,
    "halluc": HallucTask.from_spec,
}


def task_for(spec: Any) -> Task:
    """The task that runs ``spec`` (a NiahSpec or HallucSpec), its haystack or filler loaded."""
    return TASKS[spec.task](spec)


def run_spec(
    spec: Any,
    model_texts: list[str],
    out: Path | None,
    results_root: Path,
    device: str,
    dtype: str,
    command: list[str],
    on_event: EventHook,
    options: EngineOptions | None = None,
) -> RunOutcome:
    """Run every model on the spec's units into a (possibly resumed) run directory: the one loop."""
    task = task_for(spec)
    return run_task(task, model_texts, out, results_root, device, dtype, command, on_event, options)
