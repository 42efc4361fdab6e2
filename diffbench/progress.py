"""Progress bars on stderr for long jobs. Engines only report events; this module draws them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from diffbench.events import Event, EventHook, ModelStarted, Planned, Status, UnitDone


def progress_bar(console: Console) -> Progress:
    """One look for every long job: description, bar, done/total, a free text field, elapsed, time left."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
        console=console,
    )


@contextlib.contextmanager
def sample_progress(console: Console, label: str = "niah") -> Iterator[EventHook]:
    """The event hook of a run over samples (Status, Planned, ModelStarted, UnitDone).

    The bar starts only once the run knows its size, so an input error before that prints nothing
    but its own line.
    """
    progress = progress_bar(console)
    state: dict[str, Any] = {"task": None, "description": label}

    def on_event(event: Event) -> None:
        if isinstance(event, Status | ModelStarted):
            state["description"] = f"{label} · {event.text if isinstance(event, Status) else event.label}"
            if state["task"] is not None:
                progress.update(state["task"], description=state["description"])
        elif isinstance(event, Planned):
            progress.start()
            state["task"] = progress.add_task(state["description"], total=event.total, info="")
        elif isinstance(event, UnitDone) and state["task"] is not None:
            task = progress.tasks[0]
            rate = f"{task.speed:.2f} samples/s" if task.speed else ""
            progress.update(state["task"], advance=1, info=rate)

    try:
        yield on_event
    finally:
        if state["task"] is not None:
            progress.stop()
