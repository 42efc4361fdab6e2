"""`diffbench attn`: where attention goes at the answer positions, per layer and head."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from diffbench.cli.common import niah_spec, print_attention
from diffbench.cli.console import stderr, stdout, user_errors
from diffbench.cli.options import (
    DEFAULT_MODELS,
    AnswerBudgetOption,
    AnswerOption,
    AnswerPrefixOption,
    ChatTemplateOption,
    DepthsOption,
    DeviceOption,
    DistractorOption,
    DtypeOption,
    HaystackOption,
    JsonOption,
    LengthsOption,
    ModelsOption,
    NeedleOption,
    NeedleStyleOption,
    QuestionOption,
    ResultsDirOption,
    RopeScalingOption,
    SamplesOption,
    SeedOption,
)


def attn(
    model: ModelsOption = None,
    lengths: LengthsOption = "2k",
    depths: DepthsOption = "3",
    samples: SamplesOption = 1,
    seed: SeedOption = 0,
    haystack: HaystackOption = "prose",
    needle: NeedleOption = None,
    question: QuestionOption = None,
    answer: AnswerOption = None,
    answer_prefix: AnswerPrefixOption = None,
    needle_style: NeedleStyleOption = "magic",
    distractor: DistractorOption = False,
    answer_budget: AnswerBudgetOption = 32,
    chat_template: ChatTemplateOption = "auto",
    rope_scaling: RopeScalingOption = "none",
    out: Annotated[
        Path | None, typer.Option(help="A new run directory (default: results/<time>_attn_<model>).")
    ] = None,
    results_dir: ResultsDirOption = Path("results"),
    device: DeviceOption = "auto",
    dtype: DtypeOption = "auto",
    key_chunk: Annotated[
        int, typer.Option(min=1, help="Keys per chunk of the softmax over the context (memory, not results).")
    ] = 8192,
    chunk_tokens: Annotated[
        int, typer.Option(min=1, help="Tokens per prefill chunk (memory, not results).")
    ] = 4096,
    json_output: JsonOption = False,
) -> None:
    """Where attention goes at the answer positions: needle, question, sinks, noise; per layer and head."""
    with user_errors():
        from diffbench.analysis.attention_run import AttentionOptions, run_attention
        from diffbench.engine.distributed import launched_rank
        from diffbench.events import ignore
        from diffbench.progress import sample_progress

        spec = niah_spec(
            needle,
            question,
            answer,
            answer_prefix,
            lengths=lengths,
            depths=depths,
            samples_per_cell=samples,
            seed=seed,
            haystack=haystack,
            chat_template=chat_template,
            answer_budget=answer_budget,
            rope_scaling=rope_scaling,
            needle_style=needle_style,
            distractor=distractor,
        )
        options = AttentionOptions(key_chunk=key_chunk, prefill_chunk=chunk_tokens)
        if launched_rank() != 0:  # torchrun's other ranks analyse their share silently; rank 0 reports
            run_attention(
                spec, model or DEFAULT_MODELS, out, results_dir, device, dtype, sys.argv, ignore, options
            )
            return
        with sample_progress(stderr, "attn") as on_event:
            outcome = run_attention(
                spec, model or DEFAULT_MODELS, out, results_dir, device, dtype, sys.argv, on_event, options
            )
        assert outcome is not None  # rank 0 always has one
        if json_output:
            payload = {**outcome.summary, "directory": str(outcome.directory)}
            sys.stdout.write(json.dumps(payload, indent=2) + "\n")
            return
        print_attention(outcome.summary)
        stdout.print(f"results: {outcome.directory}", markup=False, highlight=False)
