"""Prefill time of DEX unfolded (linear, and with --norm rms), folded into o_proj, and the baseline.

DEX runs as a pre-forward hook on o_proj: per selected head it adds a d × d matmul (d = head width) and,
with --norm rms, two RMS reductions. Folding writes a linear DEX into o_proj, so the folded model *is*
a baseline-shaped model and should cost exactly the baseline. This measures how much the unfolded
hook costs in practice.

Setup: one model loaded once in float32 with SDPA (diffbench's CPU choice); DEX attached to the first
``--heads-per-layer`` of the heads in every layer (which heads does not change the cost) with random
W_D and λ = 0.3, on one copy with the linear operator and on another with --norm rms; the folded copy
is the linear one after ``fold_dex``. Each timed call is diffbench's prefill,
``model(input_ids, use_cache=False, logits_to_keep=1)``. Per length, one untimed warm-up per variant,
then the variants run round-robin ``--repeats`` times so load from other processes spreads over all
of them. Reported: median, min–max range, and the ratio of medians to the baseline (see
benchmarks/timing.py).

Usage: python benchmarks/dex_overhead.py [--model smollm2] [--lengths 1k,2k,4k] [--repeats 3]
       [--heads-per-layer 0.5] [--out benchmarks/results/dex_overhead.json]
"""

from __future__ import annotations

import json
from typing import Any

import timing

LABELS = {"baseline": "baseline", **timing.DEX_LABELS}


def build_models(model_text: str, max_length: int, count_text: str) -> tuple[dict[str, Any], int, int]:
    """The baseline and its DEX variants (keyed and ordered as LABELS), DEX heads per layer, heads."""
    from diffbench.attention.dex import head_geometry
    from diffbench.training.dex_convert import load_for_dex
    from diffbench.training.dex_select import parse_heads_per_layer

    baseline = load_for_dex(model_text, max_length).model
    _, num_heads, _ = head_geometry(baseline)
    count = parse_heads_per_layer(count_text, num_heads)
    models = {"baseline": baseline, **timing.dex_variants(baseline, count)}
    return {name: models[name] for name in LABELS}, count, num_heads


def main() -> None:
    parser = timing.argument_parser(__doc__, "1k,2k,4k", 3)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--heads-per-layer", default="0.5")
    args = parser.parse_args()

    from diffbench.lengths import parse_lengths

    lengths = parse_lengths(args.lengths)
    models, count, num_heads = build_models(args.model, max(lengths), args.heads_per_layer)
    vocab = int(models["baseline"].config.vocab_size)
    with timing.process_usage() as usage:
        rows = timing.measure(
            models,
            lengths,
            args.repeats,
            (100, min(vocab, 30000)),
            key="variant",
            on_row=lambda row: print(json.dumps(row), flush=True),
        )
    print(timing.markdown_table(rows, LABELS, key="variant"))
    payload = {
        "model": args.model,
        "heads_per_layer": f"{count} of {num_heads}",
        "machine": timing.machine_info(),
        **usage,
        "repeats": args.repeats,
        "rows": rows,
    }
    timing.write_result(args.out, payload)


if __name__ == "__main__":
    main()
