"""Can a chunked online-softmax (flash-style) attention on bfloat16 matmuls beat CPU SDPA?

SDPA's causal kernel runs at ~105-125 GFLOP/s on this CPU in fp32 and bf16 alike, while a bf16
matmul reaches ~400 GFLOP/s. This script asks whether attention built from bf16 ``torch.bmm`` calls
(fp32 accumulation inside the GEMM, fp32 softmax state) can turn that matmul speed into a faster
attention at 16K-64K tokens, at tiny-Llama (4 heads x 64) and SmolLM2 (9 heads x 64) shapes.

Two cases, both batch 1, one head of K/V per query head:
- ``causal``: q_len == k_len, ``is_causal=True`` (a full prefill);
- ``cache``: a 4096-row query chunk against ``L - 4096`` cached keys, no mask (the cross part of a
  chunked prefill; the in-chunk causal part is a separate small call).

Kernels (inputs prepared in the kernel's dtype before timing; outputs compared in fp32):
- ``sdpa_fp32`` / ``sdpa_bf16``: ``F.scaled_dot_product_attention`` (the reference is sdpa_fp32);
- ``flash_cpu_fp32`` / ``flash_cpu_bf16``: ``aten._scaled_dot_product_flash_attention_for_cpu``;
- ``online_q{Q}_k{K}``: flash-style loop, Q query rows x K key columns per block, bf16 QK^T and PV
  GEMMs, running max / sum / output in fp32, fully masked blocks skipped, in-place exp;
- ``online_compiled_q{Q}_k{K}``: the same loop with the per-block softmax update fused by
  ``torch.compile`` (inductor's C++ backend; needs a local compiler, no network);
- ``*_py2``: the same, the query blocks split over two Python threads with one torch thread each
  (no OpenMP barrier per small op; see ``blocked``);
- ``rowblock_q{Q}``: two passes per Q-row block over all visible keys at once: bf16 scores, one fused
  ``torch.softmax`` (fp32 math, bf16 in/out), one bf16 PV GEMM. No online rescaling at all.

torch 2.13 on CPU has no bf16 x bf16 -> fp32 GEMM (``mm(..., out_dtype=)`` and ``out=`` in fp32 are
CUDA-only), so every bf16 GEMM here rounds its fp32 accumulator to bf16 on output: the scores are
bf16 before the fp32 softmax. The error column shows what that costs.

Timing: per (case, length) every kernel gets one untimed warm-up at a short length (allocations,
compilation), then the kernels run round-robin ``--repeats`` times at the full length, so load from
other processes spreads over all of them; reported is the minimum wall time. GFLOP/s counts
2·L²·H·d for causal (QK^T and PV over the causal half) and 4·Lq·Lk·H·d for the cache case.

Usage: python benchmarks/attention_kernels.py [--lengths 16k,32k,64k] [--heads 4,9] [--repeats 2]
       [--cases causal,cache] [--kernels REGEX] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import json
import math
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import timing
import torch
import torch.nn.functional as F

HEAD_DIM = 64
CHUNK = 4096  # query rows of the "cache" case
WARMUP_LENGTH = 8192
Kernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, bool], torch.Tensor]


# --- reference kernels -------------------------------------------------------------------------


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


def flash_cpu(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    """The kernel SDPA dispatches to on CPU, called directly (it also returns the log-sum-exp)."""
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, causal)[0]


# --- bf16 kernels ------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def diagonal_mask(rows: int, cols: int, offset: int) -> torch.Tensor:
    """True where key column c of a block is after query row r: (j0 + c) > (i0 + r), offset = i0 - j0."""
    return torch.ones(rows, cols, dtype=torch.bool).triu_(offset + 1)


def _prepare(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(B, H, L, d) bf16 -> q pre-scaled by 1/sqrt(d) (a power of two: exact), K transposed, batch folded."""
    b, h, lq, d = q.shape
    scale = 1.0 / math.sqrt(d)
    qs = (q * scale).reshape(b * h, lq, d)
    kt = k.reshape(b * h, -1, d).transpose(1, 2).contiguous()
    return qs, kt, v.reshape(b * h, -1, d)


def _update(
    s: torch.Tensor, m: torch.Tensor, l_sum: torch.Tensor, acc: torch.Tensor, v: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One online-softmax step in eager ops: fold bf16 block scores ``s`` into fp32 (m, l, acc).

    Few passes over the block: max over bf16, one subtraction that writes fp32, exp in place, sum,
    one conversion to bf16 for the PV GEMM.
    """
    m_new = torch.maximum(m, s.amax(-1, keepdim=True))
    p = torch.sub(s, m_new).exp_()  # fp32
    alpha = torch.exp(m - m_new)
    l_sum = l_sum.mul_(alpha).add_(p.sum(-1, keepdim=True))
    acc = acc.mul_(alpha).add_(torch.bmm(p.to(torch.bfloat16), v))
    return m_new, l_sum, acc


def _update_functional(
    s: torch.Tensor, m: torch.Tensor, l_sum: torch.Tensor, acc: torch.Tensor, v: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``_update`` without in-place ops, the form inductor fuses (max; exp, sum and bf16 cast)."""
    m_new = torch.maximum(m, s.amax(-1, keepdim=True).float())
    p = torch.exp(s.float() - m_new)
    alpha = torch.exp(m - m_new)
    l_sum = l_sum * alpha + p.sum(-1, keepdim=True)
    acc = acc * alpha + torch.bmm(p.to(torch.bfloat16), v)
    return m_new, l_sum, acc


def _update_functional_1t(
    s: torch.Tensor, m: torch.Tensor, l_sum: torch.Tensor, acc: torch.Tensor, v: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The same step under its own code object, so dynamo caches a separate one-thread build."""
    return _update_functional(s, m, l_sum, acc, v)


@functools.cache
def compiled_update(workers: int) -> Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The update through inductor, dynamic shapes (edge blocks vary in width).

    Inductor fixes a kernel's OpenMP thread count when it compiles it, so the two-worker kernel gets
    its own build, made on its first call inside a worker (1 torch thread).
    """
    return torch.compile(_update_functional if workers == 1 else _update_functional_1t, dynamic=True)


def _online_rows(
    qs: torch.Tensor,
    kt: torch.Tensor,
    vf: torch.Tensor,
    out: torch.Tensor,
    rows: tuple[int, int],
    past: int | None,
    block_k: int,
    update: Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
) -> None:
    """Query rows i0:i1 by streaming key blocks; ``past`` None: no mask, else query i sees keys <= i + past.

    Key blocks entirely after the diagonal are never computed; only blocks crossing it are masked.
    """
    i0, i1 = rows
    bh, d = qs.shape[0], qs.shape[-1]
    qb = qs[:, i0:i1]
    m = torch.full((bh, i1 - i0, 1), -math.inf)
    l_sum = torch.zeros(bh, i1 - i0, 1)
    acc = torch.zeros(bh, i1 - i0, d)
    end = kt.shape[-1] if past is None else min(i1 + past, kt.shape[-1])
    for j0 in range(0, end, block_k):
        j1 = min(j0 + block_k, end)
        s = torch.bmm(qb, kt[:, :, j0:j1])  # bf16 out, fp32 accumulation inside
        if past is not None and j1 - 1 > i0 + past:  # the block crosses the diagonal
            s.masked_fill_(diagonal_mask(i1 - i0, j1 - j0, i0 + past - j0), -math.inf)
        m, l_sum, acc = update(s, m, l_sum, acc, vf[:, j0:j1])
    torch.div(acc, l_sum, out=out[:, i0:i1])


def _rowblock_rows(
    qs: torch.Tensor,
    kt: torch.Tensor,
    vf: torch.Tensor,
    out: torch.Tensor,
    rows: tuple[int, int],
    past: int | None,
) -> None:
    """Query rows i0:i1 against all their visible keys at once: scores, one fused softmax, one PV GEMM."""
    i0, i1 = rows
    end = kt.shape[-1] if past is None else min(i1 + past, kt.shape[-1])
    s = torch.bmm(qs[:, i0:i1], kt[:, :, :end])
    if past is not None:
        j0 = i0 + past  # the square block on the diagonal holds every masked entry
        s[:, :, j0:end].masked_fill_(diagonal_mask(i1 - i0, end - j0, 0), -math.inf)
    p = torch.softmax(s, -1)  # bf16 in and out, fp32 arithmetic inside
    torch.bmm(p, vf[:, :end], out=out[:, i0:i1])


def blocked(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool,
    method: str,
    block_q: int,
    block_k: int = 0,
    compiled: bool = False,
    workers: int = 1,
) -> torch.Tensor:
    """Attention over query blocks of ``block_q`` rows with ``method`` "online" or "rowblock".

    ``workers`` 2: the query blocks go, largest first, to two Python threads running torch with one
    intra-op thread each, instead of one Python thread whose every small op is split over 2 OpenMP
    threads (one barrier per op, and each barrier stalls if another process holds a core).
    """
    qs, kt, vf = _prepare(q, k, v)
    bh, lq, d = qs.shape
    past = kt.shape[-1] - lq if causal else None
    out = torch.empty(bh, lq, d, dtype=torch.float32 if method == "online" else torch.bfloat16)

    update = compiled_update(workers) if compiled else _update

    def run(rows: tuple[int, int]) -> None:
        with torch.inference_mode():  # thread-local: the worker threads need it too
            run_rows(rows)

    def run_rows(rows: tuple[int, int]) -> None:
        if method == "online":
            _online_rows(qs, kt, vf, out, rows, past, block_k, update)
        else:
            _rowblock_rows(qs, kt, vf, out, rows, past)

    blocks = [(i0, min(i0 + block_q, lq)) for i0 in range(0, lq, block_q)][::-1]
    if workers == 1:
        for rows in blocks:
            run(rows)
    else:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # process-wide: restored below
        try:
            with concurrent.futures.ThreadPoolExecutor(workers) as pool:
                list(pool.map(run, blocks))
        finally:
            torch.set_num_threads(threads)
    return out.reshape(q.shape)


def kernels(blocks_online: list[tuple[int, int]], blocks_row: list[int]) -> dict[str, tuple[Kernel, Any]]:
    """Every kernel by name, with the dtype its inputs are given in."""
    table: dict[str, tuple[Kernel, Any]] = {
        "sdpa_fp32": (sdpa, torch.float32),
        "sdpa_bf16": (sdpa, torch.bfloat16),
        "flash_cpu_fp32": (flash_cpu, torch.float32),
        "flash_cpu_bf16": (flash_cpu, torch.bfloat16),
    }
    bf16 = torch.bfloat16
    for bq, bk in blocks_online:
        online = functools.partial(blocked, method="online", block_q=bq, block_k=bk)
        table[f"online_q{bq}_k{bk}"] = (online, bf16)
        table[f"online_q{bq}_k{bk}_py2"] = (functools.partial(online, workers=2), bf16)
        table[f"online_compiled_q{bq}_k{bk}"] = (functools.partial(online, compiled=True), bf16)
        compiled_py2 = functools.partial(online, compiled=True, workers=2)
        table[f"online_compiled_q{bq}_k{bk}_py2"] = (compiled_py2, bf16)
    for bq in blocks_row:
        rowblock = functools.partial(blocked, method="rowblock", block_q=bq)
        table[f"rowblock_q{bq}"] = (rowblock, bf16)
        table[f"rowblock_q{bq}_py2"] = (functools.partial(rowblock, workers=2), bf16)
    return table


# --- measurement -------------------------------------------------------------------------------


def inputs(heads: int, q_len: int, k_len: int, seed: int) -> tuple[torch.Tensor, ...]:
    """Random N(0, 1) q, k, v of shape (1, heads, len, 64) in fp32."""
    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(1, heads, q_len, HEAD_DIM, generator=generator)
    k = torch.randn(1, heads, k_len, HEAD_DIM, generator=generator)
    v = torch.randn(1, heads, k_len, HEAD_DIM, generator=generator)
    return q, k, v


def shapes(case: str, length: int) -> tuple[int, int, bool]:
    """(q_len, k_len, causal) of a case at a length."""
    if case == "causal":
        return length, length, True
    return CHUNK, length - CHUNK, False


def gflop(case: str, length: int, heads: int) -> float:
    q_len, k_len, causal = shapes(case, length)
    pairs = q_len * k_len / 2 if causal else q_len * k_len
    return 4 * pairs * heads * HEAD_DIM / 1e9


def timed(kernel: Kernel, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> tuple:
    started = time.perf_counter()
    with torch.inference_mode():
        out = kernel(q, k, v, causal)
    return time.perf_counter() - started, out


def measure_point(
    case: str, length: int, heads: int, table: dict[str, tuple[Kernel, Any]], repeats: int
) -> list[dict[str, Any]]:
    """All kernels at one (case, length, heads): warm-up at a short length, then round-robin repeats.

    The error of each kernel is its first timed output against sdpa_fp32's (the first kernel run),
    max |difference|; the 1-minute load average before and after shows contention from other work.
    """
    load_before = os.getloadavg()[0]
    q_len, k_len, causal = shapes(case, length)
    warm = inputs(heads, *shapes(case, WARMUP_LENGTH)[:2], seed=1)
    full = inputs(heads, q_len, k_len, seed=length)
    by_dtype = {dtype: tuple(t.to(dtype) for t in full) for dtype in {dt for _, dt in table.values()}}
    for kernel, dtype in table.values():
        timed(kernel, *(t.to(dtype) for t in warm), causal)
    # fp32 SDPA on the bf16-rounded inputs: separates a kernel's own error from the input rounding
    _, reference_bf16_inputs = timed(sdpa, *(t.float() for t in by_dtype[torch.bfloat16]), causal)
    reference = None
    times: dict[str, list[float]] = {name: [] for name in table}
    errors: dict[str, float] = {}
    own_errors: dict[str, float] = {}
    for _ in range(repeats):
        for name, (kernel, dtype) in table.items():
            seconds, out = timed(kernel, *by_dtype[dtype], causal)
            times[name].append(seconds)
            if reference is None:
                reference = out  # sdpa_fp32, first in the table
            if name not in errors:
                errors[name] = (out.float() - reference).abs().max().item()
                own_errors[name] = (out.float() - reference_bf16_inputs).abs().max().item()
            del out
    assert reference is not None
    scale = reference.abs().max().item()
    load = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    work = gflop(case, length, heads)
    rows = []
    for name, seconds in times.items():
        best = min(seconds)
        rows.append(
            {
                "case": case,
                "length": length,
                "q_len": q_len,
                "k_len": k_len,
                "heads": heads,
                "kernel": name,
                "min_s": round(best, 4),
                "all_s": [round(s, 4) for s in seconds],
                "gflops": round(work / best, 1),
                "max_abs_err": float(f"{errors[name]:.3g}"),
                "max_abs_err_vs_bf16_inputs": float(f"{own_errors[name]:.3g}"),
                "ref_max_abs": round(scale, 4),
                "load_avg_1min": load,
            }
        )
    base = next(r["min_s"] for r in rows if r["kernel"] == "sdpa_fp32")
    for row in rows:
        row["speedup_vs_sdpa_fp32"] = round(base / row["min_s"], 3)
    return rows


def table_text(rows: list[dict[str, Any]]) -> str:
    """A markdown table: case, length, heads, kernel, seconds, GFLOP/s, speed-up, max error."""
    lines = [
        "| case | L | heads | kernel | min s | GFLOP/s | vs sdpa_fp32 | max abs err | own err |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['length'] // 1024}K | {r['heads']} | {r['kernel']} | {r['min_s']:.3f} "
            f"| {r['gflops']:.0f} | ×{r['speedup_vs_sdpa_fp32']:.2f} | {r['max_abs_err']:.1e} "
            f"| {r['max_abs_err_vs_bf16_inputs']:.1e} |"
        )
    return "\n".join(lines)


def parse_sizes(text: str) -> list[int]:
    return [int(x[:-1]) * 1024 if x.lower().endswith("k") else int(x) for x in text.split(",") if x]


def parse_blocks(text: str) -> list[tuple[int, int]]:
    return [tuple(parse_sizes(pair.replace("x", ","))) for pair in text.split(";") if pair]  # type: ignore[misc]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lengths", default="16k,32k,64k", help="total lengths (default 16k,32k,64k)")
    parser.add_argument("--heads", default="4,9", help="query heads, each of width 64 (default 4,9)")
    parser.add_argument("--cases", default="causal,cache", help="causal and/or cache (default both)")
    parser.add_argument("--repeats", type=int, default=2, help="timed rounds (default 2)")
    parser.add_argument("--online-blocks", default="256x1k;512x512", help="QxK;... for online_*")
    parser.add_argument("--row-blocks", default="128", help="query rows for rowblock_*")
    parser.add_argument("--kernels", default=".", help="regex: run only the kernels it matches")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/attention_kernels.json"))
    parser.add_argument(
        "--append", action="store_true", help="keep --out's other rows (runs split by heads or case)"
    )
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    every = kernels(parse_blocks(args.online_blocks), parse_sizes(args.row_blocks))
    table = {"sdpa_fp32": every["sdpa_fp32"]}  # first: its output is the reference
    table |= {n: kv for n, kv in every.items() if re.search(args.kernels, n)}
    machine = timing.machine_info()
    print(f"machine: {machine}", flush=True)
    rows: list[dict[str, Any]] = []
    with timing.process_usage() as usage:
        for case in args.cases.split(","):
            for heads in parse_sizes(args.heads):
                for length in parse_sizes(args.lengths):
                    point = measure_point(case, length, heads, table, args.repeats)
                    print(table_text(point), flush=True)
                    rows.extend(point)
    machine["load_average_after"] = timing.machine_info()["load_average"]
    print(table_text(rows))
    run = {"command": vars(args) | {"out": str(args.out)}, "machine": machine, "usage": usage}
    runs, kept = [run], []
    if args.append and args.out.exists():
        previous = json.loads(args.out.read_text())
        runs = previous["runs"] + runs
        new = {(r["case"], r["length"], r["heads"], r["kernel"]) for r in rows}
        kept = [r for r in previous["rows"] if (r["case"], r["length"], r["heads"], r["kernel"]) not in new]
    timing.write_result(args.out, {"runs": runs, "rows": kept + rows})


if __name__ == "__main__":
    main()
