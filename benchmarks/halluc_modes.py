"""Time of the hallucination probes in `--mode both`: one prefill per item (its forced-choice candidates
and its greedy text share the prompt's trunk) against one prefill per mode (diffbench before issue 18).

Both ways run in this process on the same items, item by item, alternating which goes first; every
item's outputs must agree (candidates' log-probs to 1e-4 nat, greedy token ids exactly), else the script
fails.

Usage: python benchmarks/halluc_modes.py --model smollm2 --lengths 1k --samples 4
       --out benchmarks/results/halluc_modes_smollm2.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any


def agree(one: dict[str, Any], other: dict[str, Any]) -> None:
    """The two ways' outputs of one item are the same results."""
    if "forced" in one:
        a, b = one["forced"], other["forced"]
        first, second = a.logprobs + (a.closed_logprobs or []), b.logprobs + (b.closed_logprobs or [])
        pairs = list(zip(first, second, strict=True))
        assert all(abs(x - y) <= 1e-4 for x, y in pairs), pairs
        assert a.gold_greedy == b.gold_greedy
    if "generate" in one:
        (text_a, gold_a), (text_b, gold_b) = one["generate"], other["generate"]
        assert text_a.ids == text_b.ids and text_a.closed_text == text_b.closed_text
        assert abs(gold_a.answer_logprob - gold_b.answer_logprob) <= 1e-4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--lengths", default="1k")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    import torch

    from diffbench.engine.halluc_runner import ProbeEngine
    from diffbench.engine.memory import plan_memory
    from diffbench.haystack.sources import load_source
    from diffbench.models.load import load_weights, prepare_model, resolve_model_ref
    from diffbench.tasks.options import HallucOptions
    from diffbench.tasks.probes import generate_items
    from diffbench.tasks.probes.registry import modes_of

    spec = HallucOptions(lengths=args.lengths, samples_per_cell=args.samples, mode="both").to_spec()
    prepared = prepare_model(resolve_model_ref(args.model), "none", max(spec.lengths))
    loaded = load_weights(prepared, torch.device("cpu"), torch.float32, "sdpa")
    items = generate_items(spec, loaded.tokenizer, load_source(spec.haystack, spec.seed))
    capacity = max(len(i.input_ids) + max(i.max_new_tokens, 1) for i in items)
    chunk = plan_memory(loaded.model, capacity, None, None).chunk_tokens
    engine = ProbeEngine(loaded.model, loaded.tokenizer, chunk)
    engine.score(items[0], modes_of(items[0].probe, spec.mode))  # warm-up

    seconds: dict[str, dict[str, float]] = {}
    for index, item in enumerate(items):
        modes = modes_of(item.probe, spec.mode)
        ways = ["shared", "per_mode"] if index % 2 == 0 else ["per_mode", "shared"]
        outputs: dict[str, dict[str, Any]] = {}
        for way in ways:
            started = time.perf_counter()
            if way == "shared":
                outputs[way] = engine.score(item, modes)
            else:
                outputs[way] = {mode: engine.score(item, [mode])[mode] for mode in modes}
            row = seconds.setdefault(item.probe, {"shared": 0.0, "per_mode": 0.0, "items": 0})
            row[way] += time.perf_counter() - started
        seconds[item.probe]["items"] += 1
        agree(outputs["shared"], outputs["per_mode"])
    total = {way: sum(row[way] for row in seconds.values()) for way in ("shared", "per_mode")}
    result = {
        "model": args.model,
        "lengths": spec.lengths,
        "samples": args.samples,
        "items": len(items),
        "per_probe": seconds,
        "total": total,
        "speedup": total["per_mode"] / total["shared"],
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "date": time.strftime("%Y-%m-%d"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'probe':<16}{'items':>6}{'per mode s':>12}{'shared s':>10}{'ratio':>8}")
    for probe, row in seconds.items():
        ratio = row["per_mode"] / row["shared"]
        print(f"{probe:<16}{int(row['items']):>6}{row['per_mode']:>12.2f}{row['shared']:>10.2f}{ratio:>8.2f}")
    print(
        f"{'all':<16}{len(items):>6}{total['per_mode']:>12.2f}{total['shared']:>10.2f}{result['speedup']:>8.2f}"
    )


if __name__ == "__main__":
    main()
