"""Seconds of an attention pass over a niah grid (``diffbench attn``, ``niah --attn``): the pass's
shared context against the naive way, in one process on the same samples.

- ``fresh``: the naive way (and diffbench's before issue 18): every sample prefills its whole context
  into a new cache, in the grid's order.
- ``shared``: diffbench's: the samples in the order that shares most context (lexicographic in their
  tokens), one cache carried from sample to sample, each prefilling only what follows the prefix it
  shares with the one before (analysis/attention_mass.SharedContext).

Both must give every sample the same head records (shares to 1e-5) and verdicts, or the script fails.
The two ways alternate which goes first over ``--repeats`` rounds; the table gives the median seconds.

Usage: python benchmarks/attention_pass.py --model zoo:baseline --lengths 1k-16k --depths 3
       --out benchmarks/results/attention_pass_zoo.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import timing


def run(loaded: Any, samples: list[Any], shared: bool) -> tuple[float, dict[str, Any], int]:
    """One pass: seconds, each sample's result, and the tokens prefilled."""
    from diffbench.analysis.attention_mass import SharedContext, shared_order
    from diffbench.analysis.attention_run import AttentionOptions, analyse_niah_sample, niah_sequence

    options = AttentionOptions()
    capacity = max(len(niah_sequence(sample)) for sample in samples)
    context = SharedContext(loaded.model, capacity, options.prefill_chunk) if shared else None
    order = shared_order(samples, niah_sequence) if shared else samples
    results, prefilled = {}, 0
    started = time.perf_counter()
    for sample in order:
        results[sample.sample_id] = analyse_niah_sample(loaded, sample, options, context)
        if context is None:
            prefilled += len(sample.input_ids) - 1
    seconds = time.perf_counter() - started
    return seconds, results, context.prefilled if context is not None else prefilled


def agree(one: dict[str, Any], other: dict[str, Any]) -> None:
    for sample_id, mine in one.items():
        theirs = other[sample_id]
        assert mine.verdict["greedy_exact"] == theirs.verdict["greedy_exact"], sample_id
        assert abs(mine.verdict["answer_logprob"] - theirs.verdict["answer_logprob"]) <= 1e-4, sample_id
        for a, b in zip(mine.records, theirs.records, strict=True):
            for key, value in a.items():
                if isinstance(value, float):
                    assert abs(value - b[key]) <= 1e-5, (sample_id, key, value, b[key])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="zoo:baseline")
    parser.add_argument("--lengths", default="1k-16k")
    parser.add_argument("--depths", default="3")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import torch

    from diffbench.haystack.sources import load_source
    from diffbench.lengths import parse_depths, parse_lengths
    from diffbench.models.device import resolve_device, resolve_dtype
    from diffbench.models.load import load_weights, prepare_model, resolve_model_ref
    from diffbench.specs import NiahSpec
    from diffbench.tasks.niah import generate_samples

    lengths = parse_lengths(args.lengths)
    spec = NiahSpec(lengths=lengths, depths=parse_depths(args.depths))
    device = resolve_device("cpu")
    prepared = prepare_model(resolve_model_ref(args.model), "none", max(lengths))
    loaded = load_weights(prepared, device, resolve_dtype("float32", device), "sdpa")
    samples = generate_samples(spec, prepared.tokenizer, load_source(spec.haystack, spec.seed))
    seconds: dict[str, list[float]] = {"fresh": [], "shared": []}
    tokens: dict[str, int] = {}
    for round_index in range(args.repeats):
        outcomes = {}
        for way in ("fresh", "shared") if round_index % 2 == 0 else ("shared", "fresh"):
            taken, results, prefilled = run(loaded, samples, way == "shared")
            seconds[way].append(taken)
            tokens[way] = prefilled
            outcomes[way] = results
        agree(outcomes["fresh"], outcomes["shared"])
    median = {way: statistics.median(values) for way, values in seconds.items()}
    payload = {
        "model": args.model,
        "lengths": lengths,
        "depths": spec.depths,
        "samples": len(samples),
        "seconds": seconds,
        "median_seconds": median,
        "tokens_prefilled": tokens,
        "ratio_fresh_over_shared": median["fresh"] / median["shared"],
        "torch_threads": torch.get_num_threads(),
        "machine": timing.machine_info(),
    }
    print(json.dumps({k: v for k, v in payload.items() if k != "machine"}, indent=2))
    if args.out:
        args.out.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
