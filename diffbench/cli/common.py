"""What several commands share: the NIAH spec they build from flags, the engine options they map to, and
the attention pass (`--attn`) with its printout."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffbench.cli.console import stderr, stdout
from diffbench.errors import UsageError

if TYPE_CHECKING:
    from diffbench.engine.loop import EngineOptions
    from diffbench.specs import NiahSpec


def niah_spec(
    needle: str | None, question: str | None, answer: str | None, answer_prefix: str | None, **options: Any
) -> NiahSpec:
    """The NiahSpec of `niah` or `attn` flags, built through NiahOptions (the model task files use too),
    every problem one usage error naming its flag."""
    from diffbench.tasks.options import COMMAND_LINE, NiahOptions, command_line_options

    flags = {"needle": needle, "question": question, "answer": answer, "answer_prefix": answer_prefix}
    return command_line_options(NiahOptions, {**options, "needle": flags}).to_spec(COMMAND_LINE)


def engine_options(
    prefix_sharing: bool,
    max_memory: str | None,
    chunk_tokens: int | None,
    batch_size: int | None,
    device_map: str | None,
) -> EngineOptions:
    """How samples run, from the engine options of `niah` and `run` (which may take them from a task file)."""
    import os

    from diffbench.engine.loop import EngineOptions
    from diffbench.engine.memory import parse_memory

    if device_map not in (None, "auto"):
        raise UsageError(f"unknown --device-map {device_map!r}: the one placement offered is 'auto'")
    if device_map is not None and max_memory is not None:
        raise UsageError(
            "--max-memory budgets one device; with --device-map auto accelerate places the model by each "
            "GPU's free memory: pass only one"
        )
    if device_map is not None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UsageError(
            "--device-map auto spreads one model over all GPUs, and under torchrun every rank would place "
            "its own copy on all of them: use one or the other"
        )
    if max_memory is not None and chunk_tokens is not None:
        raise UsageError("--max-memory and --chunk-tokens both set the chunk size: pass only one")
    return EngineOptions(
        prefix_sharing=prefix_sharing,
        max_memory_bytes=None if max_memory is None else parse_memory(max_memory),
        chunk_tokens=chunk_tokens,
        batch_size=batch_size,
        device_map=device_map,
    )


def attention_pass(
    task: Any, directory: Path, models: list[str], device: str, dtype: str, options: EngineOptions
) -> dict[str, Any] | None:
    """A finished run's attention pass (niah --attn, halluc --attn) with its own progress bar; its summary,
    or None on torchrun ranks other than 0, which analyse their share silently."""
    from diffbench.analysis.attention_run import AttentionOptions, attach_attention
    from diffbench.engine.distributed import launched_rank
    from diffbench.events import ignore
    from diffbench.progress import sample_progress

    attention_options = AttentionOptions(
        prefill_chunk=options.chunk_tokens or AttentionOptions.prefill_chunk, device_map=options.device_map
    )
    if launched_rank() != 0:
        attach_attention(directory, models, device, dtype, sys.argv, ignore, task, attention_options)
        return None
    with sample_progress(stderr, "attn") as on_event:
        outcome = attach_attention(
            directory, models, device, dtype, sys.argv, on_event, task, attention_options
        )
    return outcome.summary if outcome is not None else None


def print_attention(summary: dict[str, Any]) -> None:
    """The Table 3 view of an attention summary, a line per model, and the time and memory it took."""
    from diffbench.analysis.attention_plots import table3

    stdout.print(table3(summary))
    for row in summary["models"]:
        extra = (
            f", negative share {row['negative_share']:.3f}" if row.get("negative_share") is not None else ""
        )
        if row.get("answer_over_net") is not None:
            extra += f", answer over net mass {row['answer_over_net']:.3f}"
        if row.get("distractor") is not None:
            extra += f", distractor {row['distractor']:.3f}"
        if row.get("dex_relative_norm") is not None:
            extra += f", DEX value term {row['dex_relative_norm']:.3f} of ||O||"
        verdicts = f"over {row['samples']} samples"
        if row.get("teacher_forced_accuracy") is not None:
            verdicts = f"teacher-forced accuracy {row['teacher_forced_accuracy']:.2f} {verdicts}"
        stdout.print(
            f"{row['model']} ({row['variant']}): answer {_optional(row.get('answer'))}, needle "
            f"{_optional(row.get('needle'))}, noise {row['noise']:.3f}, sink {row['sink']:.3f}, question "
            f"{row['question']:.3f}{extra}; redundancy {_optional(row.get('redundancy'))}; {verdicts}",
            highlight=False,
        )
    if summary.get("lookback"):
        from diffbench.report.halluc import LOOKBACK_CAPTION, LOOKBACK_TITLE, lookback_cells
        from diffbench.report.tables import rich_table

        stdout.print(rich_table(*lookback_cells(summary["lookback"]), LOOKBACK_TITLE, LOOKBACK_CAPTION))
    stdout.print(
        f"attention: time {summary['wall_seconds']:.1f} s, peak memory {summary['peak_memory_mb']:.0f} MiB",
        highlight=False,
    )


def _optional(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"
