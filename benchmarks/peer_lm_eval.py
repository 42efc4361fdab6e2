"""lm-evaluation-harness's RULER ``niah_single_1`` against ``diffbench niah`` on one model, one length.

One run, the same model directory and the same target length for every tool, each tool in its own
process (so wall time and peak RSS are its own):
- **lm-eval**: ``lm_eval run --model hf --tasks niah_single_1 --metadata {"max_seq_lengths":[L]}
  --limit N --device cpu`` in float32, offline, from its own venv (``--lm-eval-venv``, default
  ``.venv-lmeval`` in the repository; created with the pinned CPU recipe when missing). It decodes
  greedily up to 128 tokens per sample with RULER's own prompt (no chat template) and scores with
  RULER's ``string_match_all``.
- **diffbench**: ``diffbench niah --lengths L --depths N --samples 1 --haystack noise`` (N depths,
  one sample each: N samples), teacher-forced scoring, its default.
- **diffbench --generate**: the same samples, also decoded greedily (up to the 32-token answer budget)
  and scored with RULER's ``all`` rule, as lm-eval does.

Measured per tool: wall seconds of the whole process, the tool's own scoring seconds (lm-eval: the
``generate_until`` phase, timed here from the moment its progress bar appears to the moment it reaches
N/N, cross-checked with tqdm's own average; diffbench: the ``seconds`` of its records), start-up =
wall − scoring, peak RSS of the child (``os.wait4``), accuracy, samples, prompt tokens, and the load
average sampled every few seconds during the run. Ratios are lm-eval / diffbench.

Usage: python benchmarks/peer_lm_eval.py --length 4096 --samples 5 --out benchmarks/results/peer_lm_eval.json
       [--model smollm2] [--lm-eval-venv .venv-lmeval] [--work-dir DIR] [--setup-only]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import machine_info

REPO = Path(__file__).resolve().parent.parent
LM_EVAL_VERSION = "0.4.13"
TORCH_PIN = "torch==2.13.0"  # never unpinned: a bare `torch` pulls a multi-GB CUDA build
LM_EVAL_REQUIREMENT = f"lm-eval[hf,ruler]=={LM_EVAL_VERSION}"
TASK = "niah_single_1"
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
LOAD_SAMPLE_SECONDS = 5.0
GENERATE_BAR = "Running generate_until requests"
# tqdm: "Running generate_until requests:  40%|████      | 2/5 [04:33<06:40, 133.63s/it]"
BAR_RE = re.compile(GENERATE_BAR + r":.*?\|\s*(\d+)/(\d+) \[([\d:]+)<[^,]*,\s*(?:([\d.]+)(s/it|it/s)|\?it/s)")


@dataclass
class ChildRun:
    """One child process: its command, exit code, wall seconds, peak RSS and timestamped output."""

    command: list[str]
    returncode: int
    wall_seconds: float
    peak_rss_mb: float
    load: dict[str, Any]
    events: list[tuple[float, str]] = field(default_factory=list)  # (seconds since start, segment)


@contextmanager
def load_sampler() -> Iterator[dict[str, Any]]:
    """Samples os.getloadavg() every few seconds during the block; fills the dict on exit."""
    samples: list[tuple[float, float, float]] = [os.getloadavg()]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(LOAD_SAMPLE_SECONDS):
            samples.append(os.getloadavg())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    result: dict[str, Any] = {}
    try:
        yield result
    finally:
        stop.set()
        thread.join()
        samples.append(os.getloadavg())
        one_minute = [s[0] for s in samples]
        result.update(
            start=[round(x, 2) for x in samples[0]],
            end=[round(x, 2) for x in samples[-1]],
            one_minute_min=round(min(one_minute), 2),
            one_minute_mean=round(statistics.fmean(one_minute), 2),
            one_minute_max=round(max(one_minute), 2),
            n_samples=len(samples),
        )


def run_child(command: list[str], env: dict[str, str], log: Path, watch: bool, echo: str = "") -> ChildRun:
    """Run ``command`` to completion; peak RSS from ``os.wait4`` (this child and its descendants only).

    ``watch``: stdout and stderr share one pipe read here as it comes, each segment between ``\\r`` or
    ``\\n`` timestamped by the arrival of its last byte (tqdm flushes every update), all of it copied to
    ``log``; segments containing ``echo`` are also printed. Otherwise stdout goes to ``log`` and stderr
    to ``log.err``.
    """
    print("$ " + " ".join(command), flush=True)
    events: list[tuple[float, str]] = []
    with load_sampler() as load, log.open("wb") as out:
        started = time.perf_counter()
        if watch:
            proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            assert proc.stdout is not None
            fd, pending, pending_at = proc.stdout.fileno(), b"", 0.0

            def emit() -> None:
                text = pending.decode("utf-8", "replace").strip()
                if text:
                    events.append((pending_at, text))
                    if echo and echo in text:
                        print(f"  [{pending_at:7.1f} s] {text}", flush=True)

            while chunk := os.read(fd, 65536):
                now = time.perf_counter() - started
                out.write(chunk)
                # tqdm starts each update with \r: a segment's time is when its last byte came, not
                # when the separator after it (the next update) did
                for index, piece in enumerate(re.split(rb"([\r\n])", chunk)):
                    if index % 2:
                        emit()
                        pending = b""
                    elif piece:
                        pending, pending_at = pending + piece, now
            emit()
        else:
            with log.with_suffix(log.suffix + ".err").open("wb") as err:
                proc = subprocess.Popen(command, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4: tell Popen
    if proc.stdout is not None:
        proc.stdout.close()
    return ChildRun(command, proc.returncode, round(wall, 2), round(usage.ru_maxrss / 1024, 1), load, events)


# ---------------------------------------------------------------------------------------------- lm-eval


def venv_versions(python: Path) -> dict[str, str] | None:
    """Versions of lm_eval, torch, transformers, datasets in a venv, or None when lm_eval is missing."""
    code = (
        "import importlib.metadata as m, json, sys\n"
        "out = {'python': sys.version.split()[0]}\n"
        "for name in ('lm_eval', 'torch', 'transformers', 'datasets'):\n"
        "    out[name] = m.version(name)\n"
        "import lm_eval, torch\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    if done.returncode != 0:
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def ensure_lm_eval_venv(venv: Path) -> dict[str, str]:
    """The lm-eval venv's versions, creating or completing the venv with the pinned recipe first."""
    python = venv / "bin" / "python"
    versions = venv_versions(python) if python.exists() else None
    if versions is not None:
        print(f"lm-eval venv {venv}: lm_eval {versions['lm_eval']}, torch {versions['torch']}", flush=True)
        if versions["lm_eval"] != LM_EVAL_VERSION:
            print(f"  note: this script was written against lm_eval {LM_EVAL_VERSION}", flush=True)
        return versions
    steps = []
    if not python.exists():
        steps.append([sys.executable, "-m", "venv", str(venv)])
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install"]
    steps.append([*pip, TORCH_PIN])  # the pinned CPU build first, so lm-eval's deps never pull another
    steps.append([*pip, LM_EVAL_REQUIREMENT, TORCH_PIN])
    action = "creating it" if not python.exists() else "lm_eval does not import, installing"
    print(f"lm-eval venv {venv}: {action} with the pinned CPU recipe", flush=True)
    for step in steps:
        print("$ " + " ".join(step), flush=True)
        subprocess.run(step, check=True)
    versions = venv_versions(python)
    if versions is None:
        raise SystemExit(f"lm_eval still does not import in {venv}")
    print(f"lm-eval venv ready: lm_eval {versions['lm_eval']}, torch {versions['torch']}", flush=True)
    return versions


def clock_seconds(text: str) -> int:
    """tqdm's elapsed 'MM:SS' or 'H:MM:SS' in seconds."""
    seconds = 0
    for part in text.split(":"):
        seconds = seconds * 60 + int(part)
    return seconds


def generate_phase(events: list[tuple[float, str]], n: int) -> dict[str, Any]:
    """lm-eval's generation timing from its progress bar: our arrival timestamps and tqdm's own figures.

    Start: the first bar update (0/n), printed just before the first request. Each later k/n update
    arrives when request k finishes; lm-eval sorts requests (longest first), so the per-sample list is
    in processing order, not doc order. tqdm's closing line gives its average s/it over the phase.
    """
    bars = [(t, match) for t, text in events if (match := BAR_RE.search(text))]
    if not bars:
        return {}
    start = bars[0][0]
    arrivals: dict[int, float] = {}
    for t, match in bars:
        arrivals.setdefault(int(match[1]), t)  # first appearance of k/n (the close line repeats n/n)
    done = [arrivals[k] for k in sorted(arrivals) if k > 0]
    per_sample = [round(b - a, 2) for a, b in zip([start, *done], done, strict=False)]
    last = bars[-1][1]
    rate = float(last[4]) if last[4] else None
    tqdm_per_sample = None if not rate else rate if last[5] == "s/it" else 1 / rate
    return {
        "phase_start_s": round(start, 2),
        "phase_seconds": round(done[-1] - start, 2) if done else None,
        "arrival_seconds": [round(t, 2) for t in done],
        "per_sample_seconds_processing_order": per_sample,
        "tqdm_elapsed_s": clock_seconds(last[3]),
        "tqdm_mean_s_per_sample": round(tqdm_per_sample, 2) if tqdm_per_sample else None,
        "samples_completed": int(last[1]),
        "all_completed": int(last[1]) == n,
    }


def lm_eval_row(args: argparse.Namespace, model_dir: Path, venv: Path, work: Path, tokenizer: Any) -> dict:
    out = work / "lm_eval_out"
    command = [
        str(venv / "bin" / "lm_eval"),
        "run",
        "--model",
        "hf",
        "--model_args",
        f"pretrained={model_dir},dtype=float32",
        "--tasks",
        TASK,
        "--metadata",
        json.dumps({"max_seq_lengths": [args.length]}),
        "--limit",
        str(args.samples),
        "--device",
        "cpu",
        "--output_path",
        str(out),
        "--log_samples",
    ]
    env = {**os.environ, **OFFLINE, "PYTHONUNBUFFERED": "1"}
    env.pop("VIRTUAL_ENV", None)
    print(f"\n== lm-eval {TASK} (log: {work / 'lm_eval.log'})", flush=True)
    child = run_child(command, env, work / "lm_eval.log", watch=True, echo=GENERATE_BAR)
    row: dict[str, Any] = {
        "tool": "lm-eval",
        "label": f"lm-eval {TASK}",
        "command": child.command,
        "returncode": child.returncode,
        "wall_seconds": child.wall_seconds,
        "peak_rss_mb": child.peak_rss_mb,
        "load_average": child.load,
    }
    if child.returncode != 0:
        tail = [text for _, text in child.events[-15:]]
        row["error"] = "\n".join(tail)
        print("lm-eval failed:\n" + row["error"], flush=True)
        return row
    phase = generate_phase(child.events, args.samples)
    samples_files = sorted(out.rglob(f"samples_{TASK}_*.jsonl"))
    results_files = sorted(out.rglob("results_*.json"))
    key = str(args.length)
    logged = (
        [json.loads(line) for line in samples_files[-1].read_text().splitlines()] if samples_files else []
    )
    scores = [float(s[key]) for s in logged if key in s]
    results = json.loads(results_files[-1].read_text()) if results_files else {}
    reported = results.get("results", {}).get(TASK, {}).get(f"{key},none")
    scoring = phase.get("phase_seconds")
    n = len(scores)
    row.update(
        n=n,
        accuracy=round(statistics.fmean(scores), 4) if scores else reported,
        accuracy_reported=reported,
        scoring_seconds=scoring,
        per_sample_seconds=round(scoring / n, 2) if scoring is not None and n else None,
        startup_seconds=round(child.wall_seconds - scoring, 2) if scoring is not None else None,
        timing=phase,
        timing_source=(
            "scoring = lm-eval's generate_until phase, from the arrival of its progress bar's 0/N update "
            "to its N/N update on the child's output pipe (tqdm flushes each update); tqdm's own average "
            "is kept as a cross-check; startup = wall - scoring: imports, model load, building RULER's "
            "500 synthetic samples (all 500 are made before --limit applies), and saving results"
        ),
        total_evaluation_time_seconds=float(results.get("total_evaluation_time_seconds") or "nan"),
        prompt_tokens=[
            len(tokenizer(s["arguments"]["gen_args_0"]["arg_0"], add_special_tokens=False)["input_ids"])
            for s in logged
        ],
        # RULER's own count: its input's tokens without the answer prefix, plus the 128 to generate
        ruler_length_field=[s["doc"].get("length") for s in logged],
        generated_tokens=[
            len(tokenizer(s["resps"][0][0], add_special_tokens=False)["input_ids"]) for s in logged
        ],
        needle_depth_percent=[needle_depth(s) for s in logged],
        gen_kwargs=logged[0]["arguments"]["gen_args_0"].get("arg_1") if logged else None,
        output_dir=str(out),
    )
    return row


def needle_depth(sample: dict[str, Any]) -> float | None:
    """Where RULER put the needle, as a percentage of the prompt's characters (approximate)."""
    text = sample["doc"]["input"]
    answer = sample["doc"]["outputs"][0]
    position = text.find(answer)
    return round(100 * position / len(text), 1) if position >= 0 else None


# -------------------------------------------------------------------------------------------- diffbench


def diffbench_command() -> list[str]:
    script = Path(sys.executable).with_name("diffbench")
    return [str(script)] if script.exists() else [sys.executable, "-m", "diffbench"]


def diffbench_row(
    args: argparse.Namespace, model_dir: Path, work: Path, tokenizer: Any, generate: bool
) -> dict:
    name = "diffbench_generate" if generate else "diffbench"
    out = work / name
    command = [
        *diffbench_command(),
        "niah",
        "--model",
        str(model_dir),
        "--lengths",
        str(args.length),
        "--depths",
        str(args.samples),
        "--samples",
        "1",
        "--haystack",
        "noise",
        "--device",
        "cpu",
        "--dtype",
        "float32",
        "--out",
        str(out),
        "--json",
        *(["--generate"] if generate else []),
        *args.diffbench_arg,
    ]
    env = {**os.environ, **OFFLINE}
    label = "diffbench --generate" if generate else "diffbench"
    print(f"\n== {label} (log: {work / (name + '.log')})", flush=True)
    child = run_child(command, env, work / f"{name}.log", watch=False)
    row: dict[str, Any] = {
        "tool": "diffbench",
        "label": label,
        "command": child.command,
        "returncode": child.returncode,
        "wall_seconds": child.wall_seconds,
        "peak_rss_mb": child.peak_rss_mb,
        "load_average": child.load,
    }
    if child.returncode != 0:
        row["error"] = (work / f"{name}.log.err").read_text()[-3000:]
        print(f"{label} failed:\n" + row["error"], flush=True)
        return row
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines() if line]
    manifest = json.loads((out / "manifest.json").read_text())
    seconds = [float(r["seconds"]) for r in records]
    scoring = sum(seconds)
    row.update(
        n=len(records),
        accuracy=round(statistics.fmean(float(r["correct"]) for r in records), 4),
        scoring=records[0]["scoring"] if records else None,
        accuracy_teacher_forced=round(statistics.fmean(float(r["greedy_exact"]) for r in records), 4),
        scoring_seconds=round(scoring, 2),
        per_sample_seconds=round(scoring / len(records), 2),
        startup_seconds=round(child.wall_seconds - scoring, 2),
        timing={
            "per_sample_seconds": [round(s, 2) for s in seconds],
            "run_wall_seconds": manifest.get("wall_seconds"),
            "run_peak_memory_mb": manifest.get("peak_memory_mb"),
        },
        timing_source=(
            "scoring = sum of diffbench's per-record seconds (prefill, scoring and, with --generate, "
            "decoding; a prefix shared by several samples is charged to the first that uses it); "
            "startup = wall - scoring: imports, model load, building samples, writing the run directory"
        ),
        prompt_tokens=[int(r["prompt_tokens"]) for r in records],
        generated_tokens=(
            [len(tokenizer(r["prediction"] or "", add_special_tokens=False)["input_ids"]) for r in records]
            if generate
            else None
        ),
        needle_depth_percent=[float(r["depth"]) for r in records],
        engine=manifest.get("engine"),
        output_dir=str(out),
    )
    return row


# ---------------------------------------------------------------------------------------------- report


def ratio(a: Any, b: Any) -> float | None:
    return round(a / b, 2) if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None


def ratios(peer: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    keys = ("wall_seconds", "per_sample_seconds", "startup_seconds", "peak_rss_mb")
    return {row["label"]: {k: ratio(peer.get(k), row.get(k)) for k in keys} for row in rows}


def table(rows: list[dict[str, Any]]) -> str:
    def cell(value: Any, fmt: str) -> str:
        return format(value, fmt) if isinstance(value, (int, float)) else "–"

    def tokens(row: dict[str, Any]) -> str:
        found = row.get("prompt_tokens") or []
        return f"{min(found)}–{max(found)}" if found else "–"

    head = "| tool | n | accuracy | wall s | per-sample s | startup s | peak RSS MB | prompt tokens |"
    head += " load 1m |"
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        load = row["load_average"]
        lines.append(
            f"| {row['label']} | {row.get('n', '–')} | {cell(row.get('accuracy'), '.2f')} "
            f"| {cell(row['wall_seconds'], '.1f')} | {cell(row.get('per_sample_seconds'), '.2f')} "
            f"| {cell(row.get('startup_seconds'), '.1f')} | {cell(row['peak_rss_mb'], '.0f')} "
            f"| {tokens(row)} | {load['one_minute_mean']:.1f} ({load['one_minute_min']:.1f}–"
            f"{load['one_minute_max']:.1f}) |"
        )
    return "\n".join(lines)


def differences(length: int, rows: list[dict[str, Any]]) -> list[str]:
    notes = [
        "lm-eval decodes greedily up to 128 new tokens per sample (gen_kwargs max_gen_toks 128, until [], "
        "so it stops only at EOS); diffbench scores by teacher forcing (one forward pass, no decoding) "
        "and with --generate decodes greedily up to its 32-token answer budget. Samples where SmolLM2 "
        "does not stop after the number cost lm-eval all 128 decoding steps.",
        f"Prompt lengths differ: RULER fits its prompt to max_seq_length {length} minus the 128 tokens to "
        "generate, counting its input without the answer prefix (its 'length' field is that count + 128); "
        "the prompt tokens shown for lm-eval are its logged prompt, answer prefix included, re-tokenised "
        "with the model's tokenizer. diffbench's prompt (chat template and answer prefix included) is "
        "exactly length − 32 tokens, so at equal length diffbench's prompts are the longer ones.",
        "Prompts differ: lm-eval uses RULER's template without a chat template (it warns that the model "
        "is an instruct model) and ends with RULER's answer prefix; diffbench applies the model's chat "
        "template (--chat-template auto), its own instruction, question and answer prefix.",
        "Haystacks are alike, not identical: RULER's 'repeat' haystack repeats one line of five "
        "sentences; diffbench's 'noise' haystack repeats a few bland sentences. RULER draws a word-pair "
        "key and a 7-digit value per sample and a needle depth at random; diffbench puts the N samples "
        "at N evenly spaced depths (0–100%) with seeded keys and values.",
        "Scoring: lm-eval uses RULER's string_match_all on the decoded text; diffbench's default row is "
        "'would greedy decoding emit the answer exactly' by teacher forcing, its --generate row RULER's "
        "'all' rule on the decoded text.",
        "Start-up differs in kind: lm-eval builds all 500 RULER samples for the length before --limit "
        "applies; diffbench builds only the N samples it runs.",
        "diffbench shares the prefill of a prefix common to several prompts (--prefix-sharing, its "
        "default); per-sample seconds are its records' seconds, the shared prefix charged once.",
        "Both run on CPU in float32 with torch's default thread count; the load average (1 minute, "
        "sampled every 5 s while each tool ran) is recorded per row: on a shared machine the "
        "figures move with it.",
    ]
    if any(row.get("error") for row in rows):
        notes.append("At least one tool failed; its row carries the error and no figures.")
    return notes


def parse_length(text: str) -> int:
    from diffbench.lengths import parse_lengths

    lengths = parse_lengths(text)
    if len(lengths) != 1:
        raise argparse.ArgumentTypeError("one length, e.g. 4096 or 4k")
    return lengths[0]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2", help="model for both tools (default smollm2)")
    parser.add_argument("--length", type=parse_length, default=4096, help="target length (default 4096)")
    parser.add_argument("--samples", type=int, default=5, help="samples per tool (default 5)")
    parser.add_argument(
        "--lm-eval-venv",
        type=Path,
        default=REPO / ".venv-lmeval",
        help="venv holding lm-eval (created when missing; default .venv-lmeval in the repository)",
    )
    parser.add_argument("--work-dir", type=Path, default=None, help="logs and outputs (default: a temp dir)")
    parser.add_argument(
        "--diffbench-arg",
        action="append",
        default=[],
        help="extra argument for both diffbench runs, e.g. --diffbench-arg=--no-prefix-sharing",
    )
    parser.add_argument("--out", type=Path, default=None, help="write the result as JSON here")
    parser.add_argument("--setup-only", action="store_true", help="ensure the lm-eval venv, then exit")
    args = parser.parse_args()
    if args.samples < 1:
        parser.error("--samples must be at least 1")

    venv = args.lm_eval_venv.resolve()
    lm_eval_versions = ensure_lm_eval_venv(venv)
    if args.setup_only:
        return

    from transformers import AutoTokenizer

    import diffbench
    from diffbench.models.load import materialize, resolve_model_ref

    model_dir = Path(materialize(resolve_model_ref(args.model))).resolve()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    work = (args.work_dir or Path(tempfile.mkdtemp(prefix="peer_lm_eval_"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    print(f"model {args.model}: {model_dir}\nwork dir {work}")
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    if load[0] > 2.5:
        print("  note: the machine is busy (1-minute load > 2.5); timings will carry that load", flush=True)
    machine = machine_info()
    started = dt.datetime.now(dt.UTC)

    peer = lm_eval_row(args, model_dir, venv, work, tokenizer)
    ours = [diffbench_row(args, model_dir, work, tokenizer, generate) for generate in (False, True)]
    rows = [peer, *ours]

    print("\n" + table(rows))
    payload = {
        "benchmark": "peer_lm_eval",
        "started_at": started.isoformat(timespec="seconds"),
        "model": {"ref": args.model, "path": str(model_dir)},
        "length": args.length,
        "samples": args.samples,
        "machine": machine,
        "versions": {
            "diffbench": diffbench.__version__,
            "diffbench_python": sys.version.split()[0],
            "lm_eval_venv": {"path": str(venv), **lm_eval_versions},
        },
        "rows": rows,
        "ratios_lm_eval_over_diffbench": ratios(peer, ours),
        "differences": differences(args.length, rows),
        "work_dir": str(work),
    }
    print("\nlm-eval / diffbench:")
    for label, values in payload["ratios_lm_eval_over_diffbench"].items():
        shown = ", ".join(f"{k} ×{v}" for k, v in values.items() if v is not None)
        print(f"  vs {label}: {shown}")
    print("\nWhat differs:\n" + "\n".join(f"- {note}" for note in payload["differences"]))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
        print(f"\nwrote {args.out}")
    if any(row["returncode"] != 0 for row in rows):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
