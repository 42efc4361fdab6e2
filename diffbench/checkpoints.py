"""Resumable training state on disk: one atomically replaced checkpoint file and an append-only log.

Shared by `dex adapt` and `zoo train`. A kill at any moment leaves either the previous checkpoint or
the new one, never half of one; log lines written after the checkpoint a resume starts from are
dropped and redone, so the log of a resumed run equals the log of an uninterrupted one.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from diffbench.errors import DiffbenchError
from diffbench.store import atomic_write_bytes, atomic_write_text, decode_json

RESUME_FILE = "resume.pt"  # the training state a rerun continues from
LOG_FILE = "train_log.jsonl"  # one JSON row per step


def atomic_torch_save(payload: Any, path: Path) -> None:
    """``torch.save`` written like every other run file (``atomic_write_bytes``: temporary, fsync, rename)."""
    import torch

    buffer = io.BytesIO()
    torch.save(payload, buffer)
    try:
        atomic_write_bytes(path, buffer.getvalue())
    except DiffbenchError as error:
        raise DiffbenchError(f"{error}; the previous checkpoint is kept, free space and rerun") from None


def append_log(path: Path, row: dict[str, Any]) -> None:
    """One fsynced log row: a kill right after a checkpoint never loses the row it logged."""
    from diffbench.store import append_durably

    append_durably(path, json.dumps(row) + "\n")


def read_log(path: Path) -> list[dict[str, Any]]:
    """The log's rows; a line cut by a kill, or otherwise damaged, is skipped."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_bytes().splitlines():
        try:
            row = decode_json(line)
        except ValueError:
            continue
        if isinstance(row, dict):  # a damaged line (another type, bytes that are not UTF-8) is skipped too
            rows.append(row)
    return rows


def trim_log(path: Path, last_step: int) -> None:
    """Keep only log lines up to the checkpoint a resume starts from (later ones are redone)."""
    if not path.exists():
        return
    kept = [
        json.dumps(row) + "\n"
        for row in read_log(path)
        if (step := row.get("step", 0)) < last_step
        or (step == last_step and "loss" in row)
        or (step == 0 and "eval_loss" in row)
    ]
    atomic_write_text(path, "".join(kept))
