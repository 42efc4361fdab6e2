"""`diffbench halluc`: the hallucination probes P1-P5 (docs: probes) and --dataset runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from diffbench.cli.common import attention_pass, engine_options, print_attention
from diffbench.cli.console import print_renderables, stderr, stdout, user_errors
from diffbench.cli.options import (
    DEFAULT_MODELS,
    AttnOption,
    ChatTemplateOption,
    DepthsOption,
    DeviceOption,
    DtypeOption,
    HaystackOption,
    JsonOption,
    ModelsOption,
    ResultsDirOption,
    RopeScalingOption,
    SeedOption,
)

if TYPE_CHECKING:
    from diffbench.engine.loop import EngineOptions

DEFAULT_PROBES = "factsum,factqa,unanswerable,counterfactual,contrastive"


def halluc(
    model: ModelsOption = None,
    probes: Annotated[
        str,
        typer.Option(
            help="Comma-separated: factsum, factqa, unanswerable, counterfactual, contrastive (p1-p5)."
        ),
    ] = DEFAULT_PROBES,
    lengths: Annotated[
        str, typer.Option(help="Document lengths in the model's tokens: '4k', '1k-4k', '2048'.")
    ] = "4k",
    depths: DepthsOption = "5",
    samples: Annotated[int, typer.Option(min=1, help="Items per probe and length (the paper: 100).")] = 100,
    seed: SeedOption = 0,
    mode: Annotated[
        str, typer.Option(help="generate (greedy text, exact checks) | forced (candidates' log-probs) | both")
    ] = "both",
    dataset: Annotated[
        Path | None,
        typer.Option(help="Your own JSONL (context, question, answer) instead of the synthetic probes."),
    ] = None,
    judge: Annotated[
        str | None, typer.Option(help="'rule' or 'nli:PATH' (a local NLI checkpoint): an extra column.")
    ] = None,
    fewshot: Annotated[
        int,
        typer.Option(
            help="Worked examples (0-8) opening the QA probes' prompts, for base models: factqa, "
            "unanswerable (half abstain), counterfactual."
        ),
    ] = 0,
    haystack: HaystackOption = "prose",
    chat_template: ChatTemplateOption = "auto",
    rope_scaling: RopeScalingOption = "none",
    out: Annotated[
        Path | None, typer.Option(help="Run directory (default: results/<time>_halluc_<model>).")
    ] = None,
    results_dir: ResultsDirOption = Path("results"),
    device: DeviceOption = "auto",
    dtype: DtypeOption = "auto",
    json_output: JsonOption = False,
    max_memory: Annotated[
        str | None, typer.Option(help="Budget for weights + KV cache + activations, e.g. 8GB.")
    ] = None,
    chunk_tokens: Annotated[int | None, typer.Option(min=1, help="Tokens per prefill chunk.")] = None,
    attn: AttnOption = False,
) -> None:
    """Contextual hallucination probes: summaries, QA with distractors, abstention, counterfactual needles,
    contrastive likelihoods; Wilson intervals per model and paired tests between models."""
    with user_errors():
        from diffbench.tasks.options import COMMAND_LINE, HallucOptions, command_line_options

        flags = {
            "probes": probes,
            "lengths": lengths,
            "depths": depths,
            "samples_per_cell": samples,
            "seed": seed,
            "mode": mode,
            "haystack": haystack,
            "chat_template": chat_template,
            "rope_scaling": rope_scaling,
            "dataset": None if dataset is None else str(dataset),
            "judge": judge,
            "fewshot": fewshot,
        }
        spec = command_line_options(HallucOptions, flags).to_spec(COMMAND_LINE)
        options = engine_options(True, max_memory, chunk_tokens, None, None)
        execute_halluc(
            spec, model or DEFAULT_MODELS, out, results_dir, device, dtype, json_output, options, attn
        )


def execute_halluc(
    spec: Any,
    models: list[str],
    out: Path | None,
    results_dir: Path,
    device: str,
    dtype: str,
    json_output: bool,
    options: EngineOptions,
    attn: bool = False,
) -> None:
    """Run the probes with a progress bar on stderr, then write and show the summary: the one path of
    `halluc` and of `run` on a ``task = "halluc"`` file. ``attn`` adds the attention pass (RUN/attention)."""
    from diffbench.engine.distributed import launched_rank
    from diffbench.engine.registry import run_spec
    from diffbench.events import ignore
    from diffbench.progress import sample_progress
    from diffbench.report.halluc import summarize, summary_renderables
    from diffbench.store import RECORDS, SUMMARY, iter_record_lines, write_json

    if launched_rank() != 0:  # torchrun's other ranks score their share silently; rank 0 reports
        shard = run_spec(spec, models, out, results_dir, device, dtype, sys.argv, ignore, options)
        if attn:
            from diffbench.analysis.halluc_attention import HALLUC_TASK

            attention_pass(HALLUC_TASK, shard.directory, models, device, dtype, options)
        return
    if attn:  # a model the attention cannot read is refused before the probes run, not after them
        from diffbench.analysis.attention_run import prepare_supported

        prepare_supported(spec, models, ignore)
    with sample_progress(stderr, "halluc") as on_event:
        outcome = run_spec(spec, models, out, results_dir, device, dtype, sys.argv, on_event, options)
    attention = None
    if attn:
        from diffbench.analysis.halluc_attention import HALLUC_TASK

        attention = attention_pass(HALLUC_TASK, outcome.directory, models, device, dtype, options)
    payload = summarize(list(iter_record_lines(outcome.directory / RECORDS)))
    write_json(outcome.directory / SUMMARY, {"run_id": outcome.directory.name, **payload.as_json()})
    if outcome.resumed_records:
        stderr.print(f"resumed: {outcome.resumed_records} finished records kept, {outcome.new_records} new")
    if json_output:
        shown = {**payload.as_json(), "directory": str(outcome.directory)}
        if attention is not None:
            shown["attention"] = attention
        sys.stdout.write(json.dumps(shown, indent=2) + "\n")
        return
    print_renderables(summary_renderables(payload))
    if attention is not None:
        print_attention(attention)
    stdout.print(f"results: {outcome.directory}", markup=False, highlight=False)
