"""One NIAH grid on one model, four ways: what the engine saves, against peers and the hardware limit.

(a) ``generate``: one ``model.generate()`` per sample on SDPA, greedy for the answer budget, scored by
    RULER's string match: what RULER's and lm-evaluation-harness's Hugging Face paths do;
(b) ``independent``: ``diffbench niah`` with --no-prefix-sharing (chunked, teacher-forced prefill of
    every prompt on its own);
(c) ``shared``: ``diffbench niah`` as run by default (the haystack prefilled once, branches on top);
(c') ``shared_all_rows``: (c) with the last layer attending for every row, as before diffbench ran it
    only for the rows whose logits it keeps (``attention.chunked.last_layer_rows``);
(d) the lower bound: the FLOPs each way must do, divided by this machine's matmul rate, measured here.

(b) and (c) run through the same ``run_spec`` the CLI calls, so their wall time includes building
the token-exact contexts, scoring and writing records; the model's forward passes are timed
separately so the share of everything else is known. Every way runs in its own process, so peak
RSS is its own. Same model, same samples (same spec and tokenizer), one run.

Usage: python benchmarks/engine.py --model tiny --lengths 8k-64k --depths 5 --samples 5
       [--ways generate,independent,shared] [--dtype float32] --out benchmarks/results/engine_tiny.json
``--model tiny`` is a seeded random Llama (hidden 128, 2 layers, 2 heads of 64) with SmolLM2's
tokenizer, saved once under the diffbench cache; any diffbench --model works too (e.g. smollm2).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

WAYS = ("generate", "independent", "shared", "shared_all_rows")
TINY = {
    "hidden_size": 128,
    "intermediate_size": 512,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "max_position_embeddings": 65536 + 512,
    "rope_theta": 1_000_000.0,
}


def rss_mb() -> float:
    """This worker's own peak RSS (VmHWM; ru_maxrss would include the parent's size at fork)."""
    import torch

    from diffbench.engine.loop import peak_memory_mb

    return peak_memory_mb(torch.device("cpu"))


def current_rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def tiny_model_dir() -> str:
    """A seeded random Llama with SmolLM2's tokenizer, saved once (weights are random: speed only)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from diffbench.models.load import cache_root, materialize, resolve_model_ref

    directory = cache_root() / "benchmark-models" / "tiny-llama-128x2"
    if (directory / "config.json").exists():
        return str(directory)
    tokenizer = AutoTokenizer.from_pretrained(materialize(resolve_model_ref("smollm2")))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
        **TINY,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


def build_spec(args: argparse.Namespace) -> Any:
    from diffbench.lengths import parse_depths, parse_lengths
    from diffbench.specs import NiahSpec

    return NiahSpec(
        lengths=parse_lengths(args.lengths),
        depths=parse_depths(args.depths),
        samples_per_cell=args.samples,
        seed=args.seed,
        rope_scaling=args.rope_scaling,
    )


def matmul_gflops(dtype_name: str, size: int = 2048, repeats: int = 5, device: str = "cpu") -> float:
    """This machine's dense matmul rate in the run's dtype on ``device`` (best of ``repeats``)."""
    import torch

    dtype = getattr(torch, dtype_name)
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def forward_flops(
    model_config: Any, parameters: int, start: int, end: int, skip_last_layer: bool = False
) -> float:
    """FLOPs of feeding positions [start, end) on top of ``start`` cached tokens (lm_head excluded);
    ``skip_last_layer``: without the last layer's attention (diffbench runs it for the answer rows
    only, a few dozen per prompt, left out here)."""
    config = model_config.get_text_config(decoder=True)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    embedding = config.vocab_size * config.hidden_size
    linear = 2 * (parameters - embedding * (1 if config.tie_word_embeddings else 2)) * (end - start)
    # a query at position p attends p + 1 keys: QKᵀ and PV cost 2·d each per key and head
    layers = config.num_hidden_layers - (1 if skip_last_layer else 0)
    attention = 4 * config.num_attention_heads * head_dim * layers
    attention *= (end * (end + 1) - start * (start + 1)) / 2
    return float(linear + attention)


def grid_flops(model_dir: str, spec: Any) -> dict[str, float]:
    """FLOPs of the grid done independently (a, b) and with the shared-prefix plan (c)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from diffbench.engine.prefix_plan import plan_trunks
    from diffbench.haystack.sources import load_source
    from diffbench.models.load import prepare_model, resolve_model_ref
    from diffbench.tasks.niah import generate_samples

    prepared = prepare_model(resolve_model_ref(model_dir), spec.rope_scaling, max(spec.lengths))
    samples = generate_samples(spec, prepared.tokenizer, load_source(spec.haystack, spec.seed))
    config = AutoConfig.from_pretrained(prepared.location)
    with torch.device("meta"):
        parameters = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
    lengths = [len(s.input_ids) + len(s.answer_ids) - 1 for s in samples]
    # (b) runs through the same engine, so its last layer also attends for the kept rows only
    independent = sum(forward_flops(config, parameters, 0, n, skip_last_layer=True) for n in lengths)
    trunks = plan_trunks([s.input_ids for s in samples], [s.needle_span[0] for s in samples])
    shared = {False: 0.0, True: 0.0}
    for skip in shared:
        for trunk in trunks:
            shared[skip] += forward_flops(config, parameters, 0, max(b.fork for b in trunk.branches), skip)
            shared[skip] += sum(
                forward_flops(config, parameters, b.fork, lengths[b.position], skip) for b in trunk.branches
            )
    longest = max(lengths)
    return {
        "independent": independent,
        "shared": shared[True],
        "shared_all_rows": shared[False],
        "one_longest_prefill": forward_flops(config, parameters, 0, longest, skip_last_layer=True),
        "longest_tokens": longest,
    }


def run_generate(model_dir: str, spec: Any, dtype_name: str, device_name: str = "cpu") -> dict[str, Any]:
    """Way (a): every sample through model.generate(), as peer harnesses do."""
    import torch

    from diffbench.haystack.sources import load_source
    from diffbench.models.device import resolve_device, resolve_dtype
    from diffbench.models.load import load_weights, prepare_model, resolve_model_ref
    from diffbench.scoring import ruler_all
    from diffbench.tasks.niah import generate_samples

    device = resolve_device(device_name)
    prepared = prepare_model(resolve_model_ref(model_dir), spec.rope_scaling, max(spec.lengths))
    samples = generate_samples(spec, prepared.tokenizer, load_source(spec.haystack, spec.seed))
    baseline = current_rss_mb()
    loaded = load_weights(prepared, device, resolve_dtype(dtype_name, device), "sdpa")
    tokenizer, model = loaded.tokenizer, loaded.model
    eos = model.generation_config.eos_token_id or tokenizer.eos_token_id
    verdicts, per_length = {}, {}
    started = time.perf_counter()
    for sample in samples:
        begun = time.perf_counter()
        prompt = torch.tensor([sample.input_ids], device=device)
        with torch.inference_mode():
            output = model.generate(
                input_ids=prompt,
                attention_mask=torch.ones_like(prompt),
                max_new_tokens=spec.answer_budget,
                do_sample=False,
                eos_token_id=eos,
                pad_token_id=eos,
            )
        text = tokenizer.decode(output[0, prompt.shape[1] :], skip_special_tokens=True)
        verdicts[sample.sample_id] = ruler_all(text, [sample.answer]) == 1.0
        per_length.setdefault(sample.target_length, []).append(time.perf_counter() - begun)
    return {
        "wall_seconds": round(time.perf_counter() - started, 2),
        "forward_seconds": None,
        "peak_rss_mb": round(rss_mb(), 1),
        "rss_before_weights_mb": round(baseline, 1),
        "verdicts": verdicts,
        "seconds_per_sample_by_length": {k: round(sum(v) / len(v), 3) for k, v in per_length.items()},
    }


def run_diffbench(
    model_dir: str, spec: Any, dtype_name: str, share: bool, device_name: str = "cpu", all_rows: bool = False
) -> dict[str, Any]:
    """Ways (b) and (c): run_spec exactly as `diffbench niah` calls it, forward passes timed apart."""
    from diffbench.engine import shared_prefill
    from diffbench.engine.loop import EngineOptions
    from diffbench.engine.registry import run_spec
    from diffbench.store import iter_record_lines

    forward = {"seconds": 0.0}
    original = shared_prefill.SharedPrefixEngine._feed

    def timed_feed(self: Any, *args: Any, **kwargs: Any) -> Any:
        begun = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            forward["seconds"] += time.perf_counter() - begun

    shared_prefill.SharedPrefixEngine._feed = timed_feed  # type: ignore[method-assign]
    events: dict[str, float] = {}

    def on_event(event: Any) -> None:
        from diffbench.events import ModelStarted, Status

        if isinstance(event, Status) and event.text.startswith("loading"):
            events["load_started"] = time.perf_counter()
            events["rss_before_weights_mb"] = current_rss_mb()
        elif isinstance(event, ModelStarted):
            events["load_seconds"] = time.perf_counter() - events["load_started"]

    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "run"
        started = time.perf_counter()
        run_spec(
            spec,
            [model_dir],
            out,
            Path(scratch),
            device_name,
            dtype_name,
            ["benchmark"],
            on_event,
            EngineOptions(prefix_sharing=share, last_layer_rows=not all_rows),
        )
        wall = time.perf_counter() - started
        records = list(iter_record_lines(out / "records.jsonl"))
        manifest = json.loads((out / "manifest.json").read_text())
    per_length: dict[int, list[float]] = {}
    for record in records:
        per_length.setdefault(record["target_length"], []).append(record["seconds"])
    outside = wall - events["load_seconds"] - forward["seconds"]
    return {
        "wall_seconds": round(wall, 2),
        "load_seconds": round(events["load_seconds"], 2),
        "forward_seconds": round(forward["seconds"], 2),
        "outside_forward_seconds": round(outside, 2),
        "outside_forward_share": round(outside / wall, 4),
        "peak_rss_mb": round(rss_mb(), 1),
        "rss_before_weights_mb": round(events["rss_before_weights_mb"], 1),
        "engine": next(iter(manifest["engine"].values())),
        "verdicts": {r["sample_id"]: r["correct"] for r in records},
        "logprobs": {r["sample_id"]: r["answer_logprob"] for r in records},
        "seconds_per_sample_by_length": {k: round(sum(v) / len(v), 3) for k, v in per_length.items()},
    }


def worker(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    spec = build_spec(args)
    if args.worker == "generate":
        result = run_generate(args.model_dir, spec, args.dtype, args.device)
    else:
        share = args.worker.startswith("shared")
        all_rows = args.worker == "shared_all_rows"
        result = run_diffbench(args.model_dir, spec, args.dtype, share, args.device, all_rows)
    # CPU seconds of the whole worker (start-up and loading included): less sensitive than wall time
    # to other processes sharing the cores.
    result["cpu_seconds"] = round(sum(os.times()[:2]), 1)
    result["matmul_gflops"] = round(
        matmul_gflops(args.dtype, device=args.device), 1
    )  # again after the run: the best is the machine's
    result["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result))


def compare(results: dict[str, dict[str, Any]], flops: dict[str, float], rate: float) -> dict[str, Any]:
    """Ratios, verdict agreement and the hardware bound, from the ways' raw results."""
    summary: dict[str, Any] = {"matmul_gflops": round(rate, 1)}
    ways = ("independent", "shared", "shared_all_rows")
    bound = {way: flops[way] / rate / 1e9 for way in ways}
    summary["bound_seconds"] = {k: round(v, 2) for k, v in bound.items()}
    summary["grid_tflops"] = {k: round(flops[k] / 1e12, 3) for k in ways}
    reference = results.get("generate") or results.get("independent")
    for way, result in results.items():
        row = summary.setdefault(way, {})
        row["wall_seconds"] = result["wall_seconds"]
        row["cpu_seconds"] = result["cpu_seconds"]
        row["model_seconds"] = result["forward_seconds"] or result["wall_seconds"]
        row["outside_forward_share"] = result.get("outside_forward_share")
        row["peak_rss_mb"] = result["peak_rss_mb"]
        if reference is not None:
            if "generate" in results:
                naive = results["generate"]
                row["speedup_vs_generate"] = round(naive["wall_seconds"] / result["wall_seconds"], 3)
                row["cpu_speedup_vs_generate"] = round(naive["cpu_seconds"] / result["cpu_seconds"], 3)
            agree = sum(result["verdicts"][k] == reference["verdicts"][k] for k in reference["verdicts"])
            row["verdict_agreement"] = f"{agree}/{len(reference['verdicts'])}"
            row["correct"] = sum(result["verdicts"].values())
        own = way if way in bound else "independent"
        row["bound_ratio"] = round(result["wall_seconds"] / bound[own], 2)
        row["achieved_gflops"] = round(flops[own] / row["model_seconds"] / 1e9, 1)
        row["share_of_matmul_rate"] = round(row["achieved_gflops"] / rate, 3)
    if "independent" in results and "shared" in results:
        a, b = results["independent"]["logprobs"], results["shared"]["logprobs"]
        summary["shared_vs_independent_max_logprob_diff"] = max(abs(a[k] - b[k]) for k in a)
        summary["shared_speedup_vs_independent"] = round(
            results["independent"]["wall_seconds"] / results["shared"]["wall_seconds"], 3
        )
    if "shared_all_rows" in results and "shared" in results:
        a, b = results["shared_all_rows"]["logprobs"], results["shared"]["logprobs"]
        summary["last_rows_vs_all_rows_max_logprob_diff"] = max(abs(a[k] - b[k]) for k in a)
        summary["last_rows_speedup_vs_all_rows"] = round(
            results["shared_all_rows"]["wall_seconds"] / results["shared"]["wall_seconds"], 3
        )
    longest = str(max(int(k) for k in next(iter(results.values()))["seconds_per_sample_by_length"]))
    if "independent" in results:
        seconds = results["independent"]["seconds_per_sample_by_length"][longest]
        achieved = flops["one_longest_prefill"] / seconds / 1e9
        summary["longest_prefill"] = {
            "tokens": int(flops["longest_tokens"]),
            "seconds": seconds,
            "gflops": round(achieved, 1),
            "share_of_matmul_rate": round(achieved / rate, 3),
        }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", default="tiny", help="'tiny' (random, speed only) or any diffbench --model"
    )
    parser.add_argument("--lengths", default="8k-64k")
    parser.add_argument("--depths", default="5")
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rope-scaling", default="none")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (benchmarks/gpu/gpu_check.py)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ways", default=",".join(WAYS))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--merge", action="store_true", help="keep --out's results of the ways not rerun (same spec)"
    )
    parser.add_argument("--worker", choices=WAYS, help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    import torch

    torch.set_num_threads(args.threads)
    if args.model == "tiny":
        model_dir = tiny_model_dir()
    else:
        from diffbench.models.load import materialize, resolve_model_ref

        model_dir = materialize(resolve_model_ref(args.model))
    spec = build_spec(args)
    flops = grid_flops(model_dir, spec)
    rate = matmul_gflops(args.dtype, device=args.device)
    print(
        f"matmul {rate:.0f} GFLOP/s ({args.dtype}); grid {flops['independent'] / 1e12:.2f} TFLOP "
        f"independent, {flops['shared'] / 1e12:.2f} TFLOP shared",
        flush=True,
    )
    results: dict[str, dict[str, Any]] = {}
    if args.merge and args.out is not None and args.out.exists():
        previous = json.loads(args.out.read_text())
        if previous["spec"] != spec.model_dump(mode="json"):
            sys.exit(f"--merge: {args.out} holds another spec")
        results.update(previous["results"])
    common = [
        "--lengths",
        args.lengths,
        "--depths",
        args.depths,
        "--samples",
        str(args.samples),
        "--seed",
        str(args.seed),
        "--rope-scaling",
        args.rope_scaling,
        "--dtype",
        args.dtype,
        "--device",
        args.device,
        "--threads",
        str(args.threads),
        "--model-dir",
        model_dir,
    ]
    for way in args.ways.split(","):
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, __file__, "--worker", way, *common], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            sys.exit(f"{way} failed:\n{done.stderr[-3000:]}")
        results[way] = json.loads(done.stdout.strip().splitlines()[-1])
        print(
            f"{way:<12} {results[way]['wall_seconds']:9.1f} s wall "
            f"({time.perf_counter() - started:.0f} s with start-up), "
            f"peak RSS {results[way]['peak_rss_mb']:.0f} MB",
            flush=True,
        )
    from timing import machine_info, write_result

    rate = max([rate, *(r.get("matmul_gflops", 0.0) for r in results.values())])
    summary = compare(results, flops, rate)
    print(json.dumps(summary, indent=2))
    write_result(
        args.out,
        {
            "benchmark": "engine",
            "model": args.model,
            "model_config": TINY if args.model == "tiny" else None,
            "spec": spec.model_dump(mode="json"),
            "machine": machine_info(),
            "flops": flops,
            "summary": summary,
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
