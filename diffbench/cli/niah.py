"""`diffbench niah`: the needle-in-a-haystack grid, and the one path every NIAH run takes to its report."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from diffbench.cli.common import attention_pass, engine_options, niah_spec, print_attention
from diffbench.cli.console import stderr, stdout, user_errors
from diffbench.cli.options import (
    NIAH_DEPTHS,
    NIAH_LENGTHS,
    NIAH_MODELS,
    AnswerOption,
    AnswerPrefixOption,
    AttnOption,
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
from diffbench.errors import UsageError

if TYPE_CHECKING:
    from diffbench.engine.loop import EngineOptions


def niah(
    model: ModelsOption = None,
    lengths: LengthsOption = NIAH_LENGTHS,
    depths: DepthsOption = NIAH_DEPTHS,
    samples: SamplesOption = 1,
    seed: SeedOption = 0,
    haystack: HaystackOption = "prose",
    needle: NeedleOption = None,
    question: QuestionOption = None,
    answer: AnswerOption = None,
    answer_prefix: AnswerPrefixOption = None,
    needle_style: NeedleStyleOption = "magic",
    distractor: DistractorOption = False,
    answer_budget: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Tokens reserved for the answer; the prompt is length minus this "
            "(default: 32 per asked needle, 64 with --values uuids).",
        ),
    ] = None,
    needles: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Needles per prompt (N); the first asked one sits at each depth (default 1; with "
            "--needle-style literal/nonliteral 4 characters, one asked, three decoys; with --kind "
            "vartrack 2 chains, one asked, one decoy).",
        ),
    ] = None,
    queries: Annotated[
        int | None,
        typer.Option(min=1, help="Needles asked (R ≤ N; default 1, all N with --kind multivalue)."),
    ] = None,
    kind: Annotated[
        str | None,
        typer.Option(
            help="multikey | multiquery | multivalue | vartrack (RULER); default from --queries. "
            "vartrack: follow chains of assignments (VAR B = VAR A) hop by hop."
        ),
    ] = None,
    hops: Annotated[
        int | None,
        typer.Option(
            min=1, help="--kind vartrack: assignments after each chain's first (default 4, RULER's)."
        ),
    ] = None,
    values: Annotated[
        str, typer.Option(help="Needle values: numbers (7 digits) | words | uuids.")
    ] = "numbers",
    generate: Annotated[
        bool | None,
        typer.Option(
            "--generate/--teacher-forced",
            help="Score greedily decoded text (RULER's all/part at word bounds) or the teacher-forced "
            "answer; default: decoded when several values are asked (--queries > 1), else teacher-forced.",
        ),
    ] = None,
    chat_template: ChatTemplateOption = "auto",
    rope_scaling: RopeScalingOption = "none",
    out: Annotated[
        Path | None, typer.Option(help="Run directory (default: results/<time>_niah_<model>).")
    ] = None,
    results_dir: ResultsDirOption = Path("results"),
    device: DeviceOption = "auto",
    dtype: DtypeOption = "auto",
    json_output: JsonOption = False,
    haystack_per_sample: Annotated[
        bool,
        typer.Option(
            "--haystack-per-sample",
            help="Give each sample index its own haystack text (default: one haystack for all, as RULER).",
        ),
    ] = False,
    prefix_sharing: Annotated[
        bool,
        typer.Option(
            "--prefix-sharing/--no-prefix-sharing",
            help="Prefill the haystack shared by many prompts once (same verdicts, less work).",
        ),
    ] = True,
    max_memory: Annotated[
        str | None,
        typer.Option(help="Budget for weights + KV cache + activations, e.g. 8GB; sets the chunk size."),
    ] = None,
    device_map: Annotated[
        str | None,
        typer.Option(
            help="'auto': spread each model over all visible GPUs with accelerate (too big for one)."
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(min=1, help="Equal-length prompts per batch (default: 1 on CPU, what fits on CUDA)."),
    ] = None,
    chunk_tokens: Annotated[
        int | None,
        typer.Option(min=1, help="Tokens per prefill chunk (default 4096, or what --max-memory allows)."),
    ] = None,
    attn: AttnOption = False,
    family: Annotated[
        list[str] | None,
        typer.Option(
            help="NAME=MODEL,MODEL,...: one variant's seeds, run and reported together as the variant "
            "(repeat per variant; adds its models to --model).",
        ),
    ] = None,
    precision_audit: Annotated[
        int,
        typer.Option(
            min=0,
            help="In bf16/fp16, also score each model's first N samples from float32 weights and report "
            "the log-prob drift and flipped verdicts (0: off).",
        ),
    ] = 8,
) -> None:
    """Needle-in-a-haystack over a depth × length grid, token-exact in each model's tokenizer."""
    with user_errors():
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
            generate=generate,
            haystack_per_sample=haystack_per_sample,
            needles=needles,
            queries=queries,
            kind=kind,
            hops=hops,
            values=values,
            needle_style=needle_style,
            distractor=distractor,
        )
        options = engine_options(prefix_sharing, max_memory, chunk_tokens, batch_size, device_map)
        options = dataclasses.replace(options, precision_audit=precision_audit)
        models, families = family_models(model, family or [])
        execute_niah(spec, models, out, results_dir, device, dtype, json_output, options, attn, families)


def family_models(model: list[str] | None, families: list[str]) -> tuple[list[str], list[str]]:
    """--model plus every --family member (the default models only when neither is given), and the
    families as report options naming each member by its name in the run."""
    from diffbench.engine.loop import resolve_named_refs
    from diffbench.report.families import parse_family

    parsed = [parse_family(text) for text in families]
    models = list(model or ([] if parsed else NIAH_MODELS))
    models += [m for _, members in parsed for m in members if m not in models]
    if not parsed:
        return models, []
    names = dict(zip(models, (ref.name for ref in resolve_named_refs(models)), strict=True))
    return models, [f"{name}={','.join(names[m] for m in members)}" for name, members in parsed]


def sweep_directory(spec: Any, label: str, models: list[str], out: Path | None, results_dir: Path) -> Path:
    """Where one run of a needles sweep goes: OUT/n4-r2 with --out, else an unfinished run of the
    same spec (to resume) or a new directory named after the run (runs of one second never collide)."""
    from diffbench.engine.loop import default_run_directory
    from diffbench.store import find_resumable

    if out is not None:
        return out / label
    found = find_resumable(results_dir, spec, models)
    return found or default_run_directory(results_dir, f"{spec.task}-{label}", models)


def execute_niah(
    spec: Any,
    models: list[str],
    out: Path | None,
    results_dir: Path,
    device: str,
    dtype: str,
    json_output: bool,
    options: EngineOptions,
    attn: bool = False,
    families: list[str] | None = None,
) -> None:
    """Run with a progress bar on stderr, then write and show the reports (``families``: --family
    options over the run's model names)."""
    from diffbench.engine.distributed import launched_rank
    from diffbench.engine.precision import audit_warning
    from diffbench.engine.registry import run_spec
    from diffbench.events import ignore
    from diffbench.progress import sample_progress
    from diffbench.report.run_report import write_run_report
    from diffbench.report.summary import grid
    from diffbench.report.tables import grid_table

    if options.device_map and device != "auto":
        raise UsageError(
            f"--device {device} and --device-map auto both place the model: --device-map chooses the "
            "GPUs itself (limit them with CUDA_VISIBLE_DEVICES); leave --device at auto"
        )
    if launched_rank() != 0:  # torchrun's other ranks score their share silently; rank 0 reports
        shard = run_spec(spec, models, out, results_dir, device, dtype, sys.argv, ignore, options)
        if attn:
            from diffbench.analysis.attention_run import NIAH_TASK

            attention_pass(NIAH_TASK, shard.directory, models, device, dtype, options)
        return
    if attn:  # a model the attention cannot read is refused before the niah run, not after it
        from diffbench.analysis.attention_run import prepare_supported

        prepare_supported(spec, models, ignore)
    with sample_progress(stderr) as on_event:
        outcome = run_spec(spec, models, out, results_dir, device, dtype, sys.argv, on_event, options)
    attention = None
    if attn:
        from diffbench.analysis.attention_run import NIAH_TASK

        attention = attention_pass(NIAH_TASK, outcome.directory, models, device, dtype, options)
    report = write_run_report(outcome.directory)
    if outcome.resumed_records:
        stderr.print(f"resumed: {outcome.resumed_records} finished records kept, {outcome.new_records} new")
    models_in_run = list(report.cells["model"].unique())
    if json_output:
        payload = {**report.summary, "directory": str(outcome.directory)}
        if attention is not None:
            payload["attention"] = attention
        if len(models_in_run) > 1:
            from diffbench.report.compare import build_report

            grouped = build_report([outcome.directory], None, None, families).families
            if grouped is not None:
                payload["families"] = grouped.payload()
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        return
    comparison = None
    if len(models_in_run) > 1:  # several models: the comparison report (differences, Δ with intervals)
        from diffbench.report.compare import build_report, terminal_tables

        comparison = build_report([outcome.directory], None, None, families)
        for table in terminal_tables(comparison):
            stdout.print(table)
        files = len(comparison.files)
        stderr.print(f"report: {comparison.out} ({files} files)", markup=False, highlight=False)
    else:
        for name in models_in_run:
            stdout.print(grid_table(grid(report.cells, name), f"{name}: accuracy by depth × length"))
    for row in report.summary["models"]:
        recall = f", recall {row['recall']:.3f}" if row.get("recall") is not None else ""
        forced = ""
        if row.get("teacher_forced_agreement") is not None:
            forced = (
                f" (greedy decoding; teacher-forced {row['teacher_forced_accuracy']:.3f}, "
                f"verdicts agree on {row['teacher_forced_agreement']:.0%})"
            )
        stdout.print(
            f"{row['model']} ({row['variant']}): accuracy {row['accuracy']:.3f}{recall} "
            f"over {row['n']} samples{forced}"
        )
        if row.get("association_known") is not None:
            where = row.get("accuracy_where_known")
            there = f", accuracy {where:.3f} on those" if where is not None and where == where else ""
            stdout.print(
                f"  {row['model']} names the landmark's city with no document for "
                f"{row['association_known']:.0%} of the needles{there}",
                highlight=False,
            )
        if row.get("wrong_variable_rate") is not None:
            stdout.print(
                f"  {row['model']} names a variable of a decoy chain in {row['wrong_variable_rate']:.0%} "
                "of its answers (recall does not count them)",
                highlight=False,
            )
        if row.get("recall_by_hop"):
            hops = ", ".join(f"{share:.2f}" for share in row["recall_by_hop"])
            stdout.print(f"  {row['model']} finds the chain's variables, hop by hop: {hops}", highlight=False)
        audit = report.summary.get("precision_audit", {}).get(row["model"])
        warning = audit_warning(row["model"], audit) if audit else None
        if warning:
            stderr.print(f"warning: {warning}", markup=False, highlight=False)
        if row.get("nonfinite_logprobs"):
            stderr.print(
                f"warning: {row['model']} has {row['nonfinite_logprobs']} NaN or infinite answer log-probs "
                f"(low-precision overflow?); means leave them out: rerun with --dtype float32 to compare",
                markup=False,
                highlight=False,
            )
    if comparison is not None and comparison.families is not None:  # the variants, over their seeds
        from diffbench.report.families import family_lines

        for line in family_lines(comparison.families):
            stdout.print(line, markup=False, highlight=False)
    if attention is not None:
        print_attention(attention)
    stdout.print(f"results: {outcome.directory}", markup=False, highlight=False)
