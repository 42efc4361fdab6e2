"""Every CUDA path of diffbench in one run of about 10 minutes on one GPU (torchrun too, with two or more).

Usage, from the repository root on a machine with an NVIDIA GPU:

    make gpu-check        # = make setup TORCH=torch, then .venv/bin/python benchmarks/gpu/gpu_check.py
    .venv/bin/python benchmarks/gpu/gpu_check.py [--budget 540] [--out benchmarks/results/gpu_check.json]

Each step is a real diffbench command (or the engine benchmark) in its own process with its own time
limit; a failing step is recorded with its last stderr lines and the next one runs, so one call shows
everything that works and everything that does not. Steps:

- the suite's CUDA tests (DIFFBENCH_TEST_CUDA=1 pytest -m cuda: flash-attention-2 against SDPA for
  Diff V1/V2, niah on CUDA in bf16 and fp32, CUDA float32 logits against the CPU's);
- niah on the three zoo variants (Llama, DiffLlama = Diff V1, DEX) in bfloat16, float16 and float32,
  8K-16K, 2 samples per cell so equal-length prompts batch; each bf16/fp16 run includes the precision
  audit (float32 drift of the first samples, engine/precision.py);
- niah on a Diff V2 checkpoint (a random-init DiffV2ForCausalLM saved here: speed and paths, not skill);
- niah on SmolLM2-135M in bf16 (flash-attention-2 when flash-attn is installed, else SDPA);
- attn (attention allocation), halluc (two probes), report and check on the runs above;
- torchrun --nproc-per-node 2 on niah when two or more GPUs are visible;
- benchmarks/engine.py on SmolLM2 4K-8K: the grid's speed against per-sample generate() on the GPU.

It records, per step, pass/fail and wall time, and per model the prefill tokens/s, KV bytes per token,
batch size and precision audit from each run's manifest; writes the JSON to --out and appends a
Markdown section to benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ZOO = ["zoo:baseline", "zoo:diff", "zoo:dex"]
TABLE_COLUMNS = (
    "run",
    "model",
    "variant",
    "dtype",
    "kernel",
    "batch_size",
    "prefill_tokens_per_second",
    "kv_bytes_per_token",
    "max_drift",
    "verdict_flips",
)


def diffbench(*args: str) -> list[str]:
    return [sys.executable, "-m", "diffbench", *args]


def run_step(
    name: str, command: list[str], limit: float, log: list[dict[str, Any]], env: dict[str, str] | None = None
) -> bool:
    """One step in its own process, at most ``limit`` seconds; its outcome appended to ``log``."""
    started = time.perf_counter()
    try:
        environment = {**os.environ, **(env or {})}
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=max(limit, 5), cwd=ROOT, env=environment
        )
        ok, tail = done.returncode == 0, (done.stderr or done.stdout)[-1500:]
        code: int | str = done.returncode
    except subprocess.TimeoutExpired as expired:
        ok, code = False, "timeout"
        tail = (expired.stderr or b"")[-1500:].decode(errors="replace") if expired.stderr else ""
    seconds = round(time.perf_counter() - started, 1)
    log.append(
        {"step": name, "ok": ok, "exit": code, "seconds": seconds, "command": command[2:], "tail": tail}
    )
    print(f"{'ok  ' if ok else 'FAIL'} {name:<34} {seconds:7.1f} s  (exit {code})", flush=True)
    return ok


def manifest_rows(directory: Path) -> list[dict[str, Any]]:
    """Per model of a run: variant, dtype, kernel, batch size, prefill tokens/s, KV bytes, audit."""
    path = directory / "manifest.json"
    if not path.is_file():
        return []
    manifest = json.loads(path.read_text())
    rows = []
    for entry in manifest.get("models", []):
        engine = manifest.get("engine", {}).get(entry["name"], {})
        audit = engine.get("precision_audit") or {}
        rows.append(
            {
                "run": directory.name,
                "model": entry["name"],
                "variant": entry["variant"]
                + (f" {entry['variant_version']}" if entry.get("variant_version") else ""),
                "dtype": entry["dtype"],
                "kernel": entry["attn_implementation"],
                "batch_size": engine.get("batch_size"),
                "prefill_tokens_per_second": engine.get("prefill_tokens_per_second"),
                "kv_bytes_per_token": engine.get("kv_bytes_per_token"),
                "max_drift": audit.get("max_abs_logprob_drift"),
                "verdict_flips": audit.get("verdict_flips"),
                "peak_memory_mb": manifest.get("peak_memory_mb"),
            }
        )
    return rows


def diff_v2_checkpoint(directory: Path) -> Path:
    """A random-init Diff V2 with SmolLM2's tokenizer: exercises the V2 paths (speed, kernels), not skill."""
    from transformers import AutoTokenizer

    from diffbench.attention.diff_v2 import DiffV2Config, DiffV2ForCausalLM
    from diffbench.models.load import materialize, resolve_model_ref

    tokenizer = AutoTokenizer.from_pretrained(materialize(resolve_model_ref("smollm2")))
    config = DiffV2Config(
        vocab_size=len(tokenizer), hidden_size=512, intermediate_size=1536, num_hidden_layers=8,
        num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=32768,
    )  # fmt: skip
    DiffV2ForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"## GPU check, {report['date']}: {report['device']}",
        "",
        f"`python benchmarks/gpu/gpu_check.py` (torch {report['torch']}, "
        f"transformers {report['transformers']}, flash-attn {report['flash_attn'] or 'not installed'}, "
        f"{report['gpus']} GPU(s)); {sum(s['ok'] for s in report['steps'])} of {len(report['steps'])} "
        "steps passed.",
        "",
        "| step | result | seconds |",
        "|---|---|---:|",
    ]
    lines += [
        f"| {s['step']} | {'ok' if s['ok'] else 'FAIL (' + str(s['exit']) + ')'} | {s['seconds']} |"
        for s in report["steps"]
    ]
    lines += [
        "",
        "| run | model | variant | dtype | kernel | batch | prefill tok/s | KV B/token | drift | flips |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in report["models"]:
        cells = [row[k] for k in TABLE_COLUMNS]
        lines.append("| " + " | ".join("–" if c is None else str(c) for c in cells) + " |")
    engine = report.get("engine_benchmark")
    if engine:
        lines += ["", "Grid against per-sample generate() (benchmarks/engine.py on SmolLM2, 4K-8K):", ""]
        lines += ["```json", json.dumps(engine, indent=2)[:2000], "```"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=540.0, help="seconds for all steps together")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu_check.json")
    parser.add_argument("--no-readme", action="store_true", help="do not append to benchmarks/README.md")
    args = parser.parse_args()
    import torch
    import transformers

    if not torch.cuda.is_available():
        sys.exit("no CUDA device: this script checks the GPU paths (run the test suite for the CPU ones)")
    gpus = torch.cuda.device_count()
    deadline = time.perf_counter() + args.budget
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    steps: list[dict[str, Any]] = []

    def left(share: float) -> float:
        return max(5.0, min(share, deadline - time.perf_counter()))

    pytest = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", "tests"]
    run_step("pytest -m cuda", pytest, left(90), steps, env={"DIFFBENCH_TEST_CUDA": "1"})
    grid = ["--lengths", "8k,16k", "--depths", "0,50,100", "--samples", "2"]
    runs: list[Path] = []
    for dtype in ("bfloat16", "float16", "float32"):
        out = work / f"zoo-{dtype}"
        models = [arg for name in ZOO for arg in ("--model", name)]
        if run_step(
            f"niah zoo {dtype}",
            diffbench("niah", *models, *grid, "--dtype", dtype, "--out", str(out)),
            left(120),
            steps,
        ):
            runs.append(out)
    v2 = diff_v2_checkpoint(work / "diff-v2")
    out = work / "diff-v2-bf16"
    if run_step(
        "niah Diff V2 bf16", diffbench("niah", "--model", str(v2), *grid, "--out", str(out)), left(60), steps
    ):
        runs.append(out)
    out = work / "smollm2-bf16"
    smol = [
        "--model",
        "smollm2",
        "--lengths",
        "4k,8k",
        "--depths",
        "0,50,100",
        "--samples",
        "2",
        "--out",
        str(out),
    ]
    if run_step("niah SmolLM2 bf16", diffbench("niah", *smol), left(90), steps):
        runs.append(out)
    zoo = [arg for name in ZOO for arg in ("--model", name)]
    attn = diffbench("attn", *zoo, "--lengths", "8k", "--depths", "50", "--out", str(work / "attn"))
    run_step("attn zoo bf16", attn, left(60), steps)
    probes = ["--lengths", "1k", "--samples", "5", "--probes", "factqa,unanswerable"]
    run_step("halluc zoo bf16", diffbench("halluc", *probes, "--out", str(work / "halluc")), left(90), steps)
    if runs:
        run_step(
            "report",
            diffbench("report", *[str(r) for r in runs[:2]], "--out", str(work / "report")),
            left(30),
            steps,
        )
        single = work / "smollm2-bf16" if (work / "smollm2-bf16") in runs else runs[0]
        check = diffbench("check", "--baseline", str(single), "--candidate", str(single))
        run_step("check (a run against itself)", check, left(30), steps)
    if gpus >= 2:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
        torchrun = [*launcher, "-m", "diffbench", "niah", "--model", "zoo:baseline", *grid]
        torchrun += ["--out", str(work / "torchrun")]
        if run_step("torchrun 2 ranks niah", torchrun, left(90), steps):
            runs.append(work / "torchrun")
    engine_out = work / "engine.json"
    engine_cmd = [sys.executable, str(ROOT / "benchmarks" / "engine.py"), "--model", "smollm2"]
    engine_cmd += ["--lengths", "4k,8k", "--depths", "3", "--samples", "2", "--dtype", "bfloat16"]
    engine_cmd += ["--device", "cuda", "--out", str(engine_out)]
    run_step("engine vs generate (SmolLM2)", engine_cmd, left(120), steps)

    try:
        import flash_attn

        flash: str | None = flash_attn.__version__
    except ImportError:
        flash = None
    report = {
        "date": dt.date.today().isoformat(),
        "device": torch.cuda.get_device_name(0),
        "gpus": gpus,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "flash_attn": flash,
        "steps": steps,
        "models": [row for run in runs for row in manifest_rows(run)],
        "engine_benchmark": json.loads(engine_out.read_text()) if engine_out.is_file() else None,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    if not args.no_readme:
        with (ROOT / "benchmarks" / "README.md").open("a", encoding="utf-8") as readme:
            readme.write("\n" + markdown(report))
    shutil.rmtree(work, ignore_errors=True)
    print(f"{sum(s['ok'] for s in steps)} of {len(steps)} steps passed; results: {args.out}")
    sys.exit(0 if all(s["ok"] for s in steps) else 1)


if __name__ == "__main__":
    main()
