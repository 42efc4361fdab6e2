"""The diffbench command line. Thin: parse, validate, call one function, map errors to exit codes."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import re
import sys
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup
from typer.exceptions import TyperException

from diffbench import __version__
from diffbench.cli_zoo import zoo_app
from diffbench.errors import DiffbenchError, UsageError

if TYPE_CHECKING:
    from diffbench.engine.runner import EngineOptions

stderr = Console(stderr=True)
stdout = Console()

DEFAULT_MODELS = ["zoo:baseline", "zoo:diff", "zoo:dex"]  # the embedded zoo: all three variants at once
NIAH_LENGTHS = "1k-64k"
NIAH_DEPTHS = "3"


# Options shared by the commands that build a task spec (niah, attn) or run one (run).
ModelsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--model",
        "-m",
        help="Checkpoint directory, .gguf file, hub id, 'smollm2' or zoo:NAME. Repeat to compare "
        "(default: zoo:baseline, zoo:diff and zoo:dex).",
    ),
]
LengthsOption = Annotated[
    str, typer.Option(help="Context lengths: '8k-64k' (doubling), '8k:64k:8k' (steps), '4096,12k'.")
]
DepthsOption = Annotated[
    str, typer.Option(help="A count ('5' → 0,25,50,75,100%) or percentages ('0,50,100').")
]
SamplesOption = Annotated[int, typer.Option(min=1, help="Samples per depth × length cell.")]
SeedOption = Annotated[int, typer.Option(help="Seed of every random choice (recorded in the manifest).")]
HaystackOption = Annotated[
    str,
    typer.Option(help="'prose' (generated), 'noise' (repeated filler), 'essays' (Paul Graham), or a path."),
]
NeedleOption = Annotated[
    str | None, typer.Option(help="A custom needle sentence (with --question, --answer).")
]
QuestionOption = Annotated[str | None, typer.Option(help="The question asked about a custom needle.")]
AnswerOption = Annotated[str | None, typer.Option(help="The expected answer; must occur in the needle.")]
AnswerPrefixOption = Annotated[
    str | None, typer.Option(help="Text the answer turn starts with, e.g. 'The answer is'.")
]
AnswerBudgetOption = Annotated[
    int, typer.Option(min=1, help="Tokens reserved for the answer; the prompt is length minus this.")
]
ChatTemplateOption = Annotated[str, typer.Option(help="auto | on | off")]
RopeScalingOption = Annotated[
    str, typer.Option(help="none | dynamic | yarn: stretch RoPE to run past the model's window.")
]
ResultsDirOption = Annotated[Path, typer.Option(help="Where default run directories go.")]
DeviceOption = Annotated[str, typer.Option(help="auto | cpu | cuda")]
DtypeOption = Annotated[str, typer.Option(help="auto | float32 | bfloat16 | float16")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")]
AttnOption = Annotated[
    bool,
    typer.Option(
        "--attn",
        help="Then record where attention goes at the answer rows of the same samples (RUN/attention; "
        "as `diffbench attn`); on halluc also Lookback Lens's ratio over each generated answer.",
    ),
]


# A full disk, quota or file-size limit, or a read-only filesystem: wherever a write fails that way (a
# heatmap, a checkpoint, a library's own save), the command ends in one line; every earlier write stood.
STORAGE_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """One red line and exit code 2 (usage) or 1 (runtime) for errors a user can act on; no traceback."""
    try:
        yield
    except DiffbenchError as error:
        # Messages quote user input ('--lengths [/x]'), which rich must not read as markup.
        stderr.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)
        raise typer.Exit(error.exit_code) from None
    except KeyboardInterrupt:
        stderr.print("[yellow]interrupted: finished samples are saved; rerun the same command to resume[/]")
        raise typer.Exit(130) from None
    except Exception as error:
        reason = storage_failure(error)
        if reason is None:
            raise
        stderr.print(
            f"[bold red]error:[/] cannot write{escape(reason)}; what finished is saved: free space and rerun "
            "the same command",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1) from None


def storage_failure(error: BaseException) -> str | None:
    """' PATH: reason' when ``error`` is a write that failed for want of space (or a read-only disk),
    as Python reports it (OSError) or as a Rust writer does (safetensors: '... (os error 28)')."""
    if isinstance(error, OSError):
        if error.errno not in STORAGE_FULL:
            return None
        where = f" {str(error.filename)!r}" if error.filename else ""
        return f"{where}: {error.strerror or error}"
    found = re.search(r"\(os error (\d+)\)", str(error))
    if found is None or int(found.group(1)) not in STORAGE_FULL:
        return None
    return f": {os.strerror(int(found.group(1)))}"


@contextlib.contextmanager
def click_errors_in_one_line() -> Iterator[None]:
    """Typer's own usage errors (an unknown option, a value that is no number, a missing argument) as
    the single 'error:' line every other user error gets, instead of a usage banner and a framed
    panel whose message wraps; exit code 2 as before."""
    try:
        yield
    except TyperException as error:
        if type(error).__name__ == "NoArgsIsHelpError":
            raise  # a bare `diffbench` or `diffbench dex` prints its help, as before
        context = getattr(error, "ctx", None)
        hint = f"; see '{context.command_path} --help'" if context is not None else ""
        message = escape(error.format_message().rstrip(".") + hint)
        stderr.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
        raise typer.Exit(error.exit_code) from None


class OneLineErrorsGroup(TyperGroup):
    """The root group: its own parse errors and every subcommand's go through click_errors_in_one_line."""

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        with click_errors_in_one_line():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: Any) -> Any:
        with click_errors_in_one_line():
            return super().invoke(ctx)


app = typer.Typer(
    name="diffbench",
    help="Long-context retrieval and contextual hallucination benchmarks for attention variants.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=OneLineErrorsGroup,
)


def _version(value: bool) -> None:
    if value:
        stdout.print(f"diffbench {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """diffbench: does an attention variant really retrieve better and hallucinate less?"""


def build_needle(
    needle: str | None, question: str | None, answer: str | None, answer_prefix: str | None
) -> Any:
    """The default magic-number needle, or a custom one (needle, question and answer go together)."""
    from diffbench.specs import NeedleSpec
    from diffbench.taskfile import CUSTOM_NEEDLE_INSTRUCTION

    if needle is None:
        if question is not None or answer is not None:
            raise UsageError("--question and --answer need --needle too (all three define a custom needle)")
        return NeedleSpec() if answer_prefix is None else NeedleSpec(answer_prefix=answer_prefix)
    if question is None or answer is None:
        raise UsageError("a custom --needle needs --question and --answer as well")
    given = {"--needle": needle, "--question": question, "--answer": answer}
    blank = [flag for flag, value in given.items() if not value.strip()]
    if blank:
        verb = "is" if len(blank) == 1 else "are"
        raise UsageError(f"{' and '.join(blank)} {verb} empty; a custom needle needs text in all three")
    if answer not in needle:
        raise UsageError(
            f"--answer {answer!r} does not occur in --needle; the needle must contain the answer"
        )
    return NeedleSpec(
        needle=needle,
        question=question,
        answer=answer,
        answer_prefix=answer_prefix or "",
        instruction=CUSTOM_NEEDLE_INSTRUCTION,
    )


@app.command()
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
    answer_budget: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Tokens reserved for the answer; the prompt is length minus this "
            "(default: 32 per asked needle, 64 with --values uuids).",
        ),
    ] = None,
    needles: Annotated[
        int, typer.Option(min=1, help="Needles per prompt (N); the first asked one sits at each depth.")
    ] = 1,
    queries: Annotated[
        int | None,
        typer.Option(min=1, help="Needles asked (R ≤ N; default 1, all N with --kind multivalue)."),
    ] = None,
    kind: Annotated[
        str | None,
        typer.Option(help="multikey | multiquery | multivalue (RULER); default from --queries."),
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
        from diffbench.tasks.niah import build_niah_spec

        spec = build_niah_spec(
            lengths,
            depths,
            samples,
            seed,
            haystack,
            build_needle(needle, question, answer, answer_prefix),
            chat_template,
            answer_budget,
            rope_scaling,
            generate=generate,
            haystack_per_sample=haystack_per_sample,
            needles=needles,
            queries=queries,
            kind=kind,
            values=values,
        )
        options = engine_options(prefix_sharing, max_memory, chunk_tokens, batch_size, device_map)
        options = dataclasses.replace(options, precision_audit=precision_audit)
        execute_niah(
            spec, model or DEFAULT_MODELS, out, results_dir, device, dtype, json_output, options, attn
        )


def engine_options(
    prefix_sharing: bool,
    max_memory: str | None,
    chunk_tokens: int | None,
    batch_size: int | None,
    device_map: str | None,
) -> EngineOptions:
    """How samples run, from the engine options of `niah` and `run` (which may take them from a task file)."""
    from diffbench.engine.memory import parse_memory
    from diffbench.engine.runner import EngineOptions

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


@app.command()
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
            from diffbench.cli_halluc import execute_halluc

            execute_halluc(task.spec, models, out, results_dir, device, dtype, json_output, options, attn)
            return
        runs = task.runs()
        for label, spec in runs:
            target = sweep_directory(spec, label, models, out, results_dir) if len(runs) > 1 else out
            execute_niah(spec, models, target, results_dir, device, dtype, json_output, options, attn)


def sweep_directory(spec: Any, label: str, models: list[str], out: Path | None, results_dir: Path) -> Path:
    """Where one run of a needles sweep goes: OUT/n4-r2 with --out, else an unfinished run of the
    same spec (to resume) or a new directory named after the run (runs of one second never collide)."""
    from diffbench.engine.runner import default_run_directory
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
) -> None:
    """Run with a progress bar on stderr, then write and show the reports."""
    from diffbench.engine.distributed import launched_rank
    from diffbench.engine.precision import audit_warning
    from diffbench.engine.runner import run_niah
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
        run_niah(spec, models, out, results_dir, device, dtype, sys.argv, lambda kind, payload: None, options)
        return
    if attn:  # a model the attention cannot read is refused before the niah run, not after it
        from diffbench.analysis.attention_run import prepare_supported

        prepare_supported(spec, models, lambda kind, payload: None)
    with sample_progress(stderr) as on_event:
        outcome = run_niah(spec, models, out, results_dir, device, dtype, sys.argv, on_event, options)
    attention = None
    if attn:
        from diffbench.analysis.attention_run import NIAH_TASK

        attention = attention_pass(NIAH_TASK, outcome.directory, models, device, dtype, options)
    report = write_run_report(outcome.directory)
    if outcome.resumed_records:
        stderr.print(f"resumed: {outcome.resumed_records} finished records kept, {outcome.new_records} new")
    if json_output:
        payload = {**report.summary, "directory": str(outcome.directory)}
        if attention is not None:
            payload["attention"] = attention
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        return
    models_in_run = list(report.cells["model"].unique())
    if len(models_in_run) > 1:  # several models: the comparison report (differences, Δ with intervals)
        from diffbench.report.compare import build_report, terminal_tables

        comparison = build_report([outcome.directory], None, None)
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
    if attention is not None:
        print_attention(attention)
    stdout.print(f"results: {outcome.directory}", markup=False, highlight=False)


class TableFormat(str, Enum):
    terminal = "terminal"
    markdown = "markdown"
    csv = "csv"


class CellDisplay(str, Enum):
    changed = "changed"
    all = "all"
    none = "none"


@app.command()
def report(
    run_dirs: Annotated[
        list[Path], typer.Argument(help="Run directories sharing one sample set (same task options).")
    ],
    reference: Annotated[
        str | None,
        typer.Option(
            help="Model that difference heatmaps and Δ columns compare against (default: the first)."
        ),
    ] = None,
    table_format: Annotated[
        TableFormat, typer.Option("--format", "-f", help="How the tables print on stdout.")
    ] = TableFormat.terminal,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Folder for heatmaps and tables (default: RUN_DIR/report; reports/<time> for several)."
        ),
    ] = None,
) -> None:
    """Heatmaps, difference heatmaps, effective lengths and comparison tables across runs; for halluc runs,
    each probe's headline with its interval and paired tests between models."""
    with user_errors():
        from diffbench.report.compare import build_report, report_csv, report_markdown, terminal_tables

        result = build_report(run_dirs, reference, out)
        for note in result.notes:
            stderr.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
        if table_format is TableFormat.csv:
            sys.stdout.write(report_csv(result))
        elif table_format is TableFormat.markdown:
            sys.stdout.write(report_markdown(result))
        else:
            stdout.print(f"[bold]{result.title}[/]", highlight=False, soft_wrap=True)
            print_renderables(terminal_tables(result))
        stderr.print(
            f"report: {result.out} ({len(result.files)} files)", markup=False, highlight=False, soft_wrap=True
        )


def print_renderables(items: list[Any]) -> None:
    """Tables as rich draws them; plain lines as they are (no markup, not cut at the terminal's width)."""
    for item in items:
        if isinstance(item, str):
            stdout.print(item, markup=False, highlight=False, soft_wrap=True)
        else:
            stdout.print(item)


@app.command()
def leaderboard(
    results_dir: Annotated[
        Path, typer.Argument(help="Folder holding run directories (searched recursively).")
    ],
    out: Annotated[Path, typer.Option(help="Folder for index.html and leaderboard.json.")] = Path("site"),
    reference: Annotated[
        str | None,
        typer.Option(help="Model for the difference views (default: the first baseline model of each task)."),
    ] = None,
    title: Annotated[str, typer.Option(help="Page title.")] = "diffbench leaderboard",
) -> None:
    """One static, self-contained HTML page: sortable models × tasks table, heatmaps, provenance."""
    with user_errors():
        from diffbench.report.leaderboard import write_leaderboard

        page, board = write_leaderboard(results_dir, out, reference, title)
        for reason in board.skipped:
            stderr.print(f"[yellow]skipped:[/] {escape(reason)}", highlight=False, soft_wrap=True)
        stdout.print(
            f"leaderboard: {page} ({board.counts()})",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


@app.command()
def check(
    baseline: Annotated[Path, typer.Option(help="The baseline's run directory.")],
    candidate: Annotated[
        Path | None, typer.Option(help="The candidate's run directory (same task options as the baseline).")
    ] = None,
    candidate_model: Annotated[
        str | None,
        typer.Option(help="A checkpoint to run on the baseline's exact samples first, then compare."),
    ] = None,
    max_drop: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="Accuracy drop a regression must exceed (0.02 = 2 points)."),
    ] = 0.02,
    alpha: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Significance level the drop's p-value must be below.")
    ] = 0.05,
    baseline_name: Annotated[
        str | None, typer.Option(help="Model of the baseline run to compare, if it holds several.")
    ] = None,
    candidate_name: Annotated[
        str | None, typer.Option(help="Model of the candidate run to compare, if it holds several.")
    ] = None,
    output: Annotated[
        Path | None, typer.Option(help="Verdict as JSON (default: CANDIDATE_RUN/check.json).")
    ] = None,
    junit: Annotated[Path | None, typer.Option(help="Also write the verdict as JUnit XML here.")] = None,
    cells: Annotated[
        CellDisplay, typer.Option(help="Cells to show: changed (verdict not ok), all, or none.")
    ] = CellDisplay.changed,
    resamples: Annotated[
        int, typer.Option(min=100, help="Bootstrap resamples for partial-credit scores.")
    ] = 2000,
    out: Annotated[
        Path | None, typer.Option(help="With --candidate-model: the candidate's run directory.")
    ] = None,
    results_dir: Annotated[
        Path, typer.Option(help="With --candidate-model: where its default run directory goes.")
    ] = Path("results"),
    device: Annotated[str, typer.Option(help="With --candidate-model: auto | cpu | cuda")] = "auto",
    dtype: Annotated[
        str, typer.Option(help="With --candidate-model: auto | float32 | bfloat16 | float16")
    ] = "auto",
) -> None:
    """Regression gate: exit 0 on pass, 1 on a significant drop above --max-drop, 2 on unusable input."""
    with user_errors():
        from diffbench.progress import sample_progress
        from diffbench.report.check import (
            compare,
            run_candidate,
            verdict_table,
            write_json_report,
            write_junit,
        )
        from diffbench.report.runs import load_run

        if (candidate is None) == (candidate_model is None):
            raise UsageError("pass exactly one of --candidate RUN_DIR or --candidate-model CHECKPOINT")
        if not 0.0 < alpha < 1.0:
            raise UsageError(f"--alpha {alpha:g} must be strictly between 0 and 1, e.g. 0.05")
        baseline_run = load_run(baseline)
        if candidate is not None:
            candidate_dir = candidate
        elif candidate_model is not None:
            if out is not None and out.resolve() == baseline.resolve():
                raise UsageError(
                    "--out is the baseline's run directory; pass a new directory for the candidate"
                )
            with sample_progress(stderr, "candidate") as on_event:
                candidate_dir = run_candidate(
                    baseline_run, candidate_model, out, results_dir, device, dtype, sys.argv, on_event
                )
        candidate_run = load_run(candidate_dir)
        result = compare(
            baseline_run, candidate_run, baseline_name, candidate_name, max_drop, alpha, resamples
        )
        stdout.print(verdict_table(result, cells.value))
        for note in result.notes:
            stderr.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
        json_path = output or candidate_dir / "check.json"
        write_json_report(result, json_path)
        if junit is not None:
            write_junit(result, junit)
        written = escape(f" (verdict: {json_path}" + (f", {junit})" if junit else ")"))
        if result.passed:
            stdout.print(
                f"[bold green]PASS[/]: no significant drop above {max_drop:g}{written}",
                highlight=False,
                soft_wrap=True,
            )
            return
        names = escape(", ".join(f"{row.level} {row.name}" for row in result.regressions))
        stdout.print(f"[bold red]REGRESSION[/] in {names}{written}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


@app.command()
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
        from diffbench.progress import sample_progress
        from diffbench.tasks.niah import build_niah_spec

        spec = build_niah_spec(
            lengths,
            depths,
            samples,
            seed,
            haystack,
            build_needle(needle, question, answer, answer_prefix),
            chat_template,
            answer_budget,
            rope_scaling,
        )
        options = AttentionOptions(key_chunk=key_chunk, prefill_chunk=chunk_tokens)
        with sample_progress(stderr, "attn") as on_event:
            outcome = run_attention(
                spec, model or DEFAULT_MODELS, out, results_dir, device, dtype, sys.argv, on_event, options
            )
        if json_output:
            payload = {**outcome.summary, "directory": str(outcome.directory)}
            sys.stdout.write(json.dumps(payload, indent=2) + "\n")
            return
        print_attention(outcome.summary)
        stdout.print(f"results: {outcome.directory}", markup=False, highlight=False)


def attention_pass(
    task: Any, directory: Path, models: list[str], device: str, dtype: str, options: EngineOptions
) -> dict[str, Any]:
    """A finished run's attention pass (niah --attn, halluc --attn) with its own progress bar."""
    from diffbench.analysis.attention_run import AttentionOptions, attach_attention
    from diffbench.progress import sample_progress

    attention_options = AttentionOptions(
        prefill_chunk=options.chunk_tokens or AttentionOptions.prefill_chunk, device_map=options.device_map
    )
    with sample_progress(stderr, "attn") as on_event:
        outcome = attach_attention(
            directory, models, device, dtype, sys.argv, on_event, task, attention_options
        )
    summary: dict[str, Any] = outcome.summary
    return summary


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


dex_app = typer.Typer(
    name="dex",
    help="DEX, reconstructed: convert a pretrained model, adapt it briefly, fold it into o_proj.",
    no_args_is_help=True,
)
app.add_typer(dex_app, name="dex")
app.add_typer(zoo_app, name="zoo")


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
        from diffbench.attention.dex_convert import convert

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
        from diffbench.attention.dex_adapt import AdaptOptions, adapt

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
    from diffbench.progress import progress_bar

    progress = progress_bar(stderr)
    task_id = progress.add_task("dex adapt", total=None, info="")

    def on_event(kind: str, payload: Any) -> None:
        if kind == "status":
            progress.update(task_id, description=f"dex adapt · {payload}")
        elif kind == "plan":
            progress.update(task_id, total=payload["steps"], completed=payload["start"])
            progress.update(task_id, description="dex adapt")
        elif kind == "step":
            info = f"loss {payload['loss']:.4f}"
            if payload["lambda"] is not None:
                info += f"  λ̄ {payload['lambda']:.3f}"
            progress.update(task_id, completed=payload["step"], info=info)
        elif kind == "eval":
            progress.console.print(f"held-out loss {payload['when']}: {payload['loss']:.4f}", highlight=False)
        elif kind == "checkpoint":
            progress.update(task_id, description=f"dex adapt (saved step {payload})")

    with progress:
        return adapt(options, on_event)


@dex_app.command("fold")
def dex_fold(
    model: Annotated[str, typer.Option("--model", "-m", help="An adapted DEX checkpoint (--norm none).")],
    out: Annotated[Path, typer.Option(help="New checkpoint directory to write.")],
) -> None:
    """Fold a linear DEX into o_proj: same outputs, zero inference overhead."""
    with user_errors():
        from diffbench.attention.dex_convert import fold

        outcome = fold(model, out, sys.argv)
        stdout.print(f"folded DEX into o_proj: {outcome.directory}", markup=False, highlight=False)


from diffbench.cli_halluc import halluc  # noqa: E402  (it imports this module's shared options)

app.command()(halluc)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
