"""What long jobs report while they run, as typed events: runs over samples (niah, halluc, the attention
pass) and training (zoo train, dex adapt) emit them, and the command line draws them (progress.py).
Nothing that emits an event prints."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Status:
    """What the job is doing now ("loading zoo-diff", "held-out loss before")."""

    text: str


@dataclass(frozen=True)
class Planned:
    """The job's size is known: ``total`` units (samples, or training steps), ``done`` of them already."""

    total: int
    done: int = 0


@dataclass(frozen=True)
class ModelStarted:
    """A model is loaded and starts on its units; ``label`` names it, its variant, dtype and device."""

    label: str


@dataclass(frozen=True)
class UnitDone:
    """One unit finished: its record (a sample's or item's, or an attention sample's verdict)."""

    result: Any


@dataclass(frozen=True)
class StepDone:
    """One training step finished, with its loss and whatever else the trainer measures at it."""

    step: int
    loss: float
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Evaluated:
    """A held-out loss, ``when`` "before" or "after" training."""

    when: str
    loss: float


@dataclass(frozen=True)
class CheckpointSaved:
    step: int


Event = Status | Planned | ModelStarted | UnitDone | StepDone | Evaluated | CheckpointSaved
EventHook = Callable[[Event], None]


def ignore(event: Event) -> None:
    """The hook of a job nobody watches (torchrun's other ranks, checks run before a job)."""
