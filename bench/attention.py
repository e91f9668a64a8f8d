"""Forward+backward time and peak memory of one LLaMA-7B-shaped attention layer.

Rows, per sequence length N (batch 1, 32 heads x 128 head_dim, hidden 4096):
  vanilla, slack, exact  the project's `CocaAttention` (q/k/v/o projections, `coca_query_key`,
                         torch SDPA through transformers' attention interface), O(N) memory.
  nxn-scores             the reference code's N x N path: slack scores materialised as a
                         (B, H, N, N) matrix, additive causal mask, fp32 softmax, @ V.
                         The reference code contracts its einsum with opt_einsum, which
                         multiplies q * RoPE(q) first, so the score matrix is all it stores.
  nxn-einsum             the same scores written as one 3-operand `torch.einsum`. Without
                         opt_einsum, torch contracts left to right and the first pair keeps d,
                         so it materialises a (B, H, N, N, d) tensor; with opt_einsum it is
                         nxn-scores. The row's label says which path this torch takes.

Each length runs in a fresh subprocess holding one set of weights. There, every variant takes
one warm-up step, then the variants run in interleaved rounds: a shared 2-core VM drifts by 2x
in speed over minutes, which separate runs would read as a difference between variants. "vs
vanilla" is the median of per-round ratios, by wall time and by process CPU time (which other
processes on the machine inflate less). Peak memory is what one step adds above the weights and their
.grad: on CUDA max_memory_allocated; on CPU the tensor allocations recorded by torch's profiler
in the warm-up step (the same quantity), and beside it the step's peak RSS.

This file runs the workers and prints the table; the layer and its inputs are in
bench/attention_layer.py, a worker's measurement in bench/attention_worker.py, the memory
accounting in bench/step_memory.py.

    python bench/attention.py                       # N = 1K, 2K, 4K, 8K; all rows
    python bench/attention.py --lengths 256,512 --variants vanilla,nxn-einsum
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.attention_layer import (  # noqa: E402
    BATCH, HEAD_DIM, HEADS, HIDDEN, VARIANTS, einsum_contracts_left_to_right, estimate_peak_bytes,
)
from bench.attention_worker import measure_length  # noqa: E402
from bench.step_memory import GIB, MIB, available_bytes  # noqa: E402

# Left for the OS, the parent process and allocator slack when deciding what fits.
HEADROOM = 0.85


@dataclass
class Row:
    variant: str
    n: int
    ms: float | None = None
    ratio: float | None = None
    cpu_ratio: float | None = None
    steps: int = 0
    peak_bytes: int | None = None
    rss_bytes: int | None = None
    wall_ms: tuple[int, ...] = ()
    note: str = ""


def run_worker(args: argparse.Namespace, variants: list[str], n: int) -> list[Row]:
    command = [
        sys.executable, os.path.abspath(__file__), "--worker",
        "--variants", ",".join(variants), "--lengths", str(n), "--repeats", str(args.repeats),
        "--seconds-per-length", str(args.seconds_per_length), "--device", args.device, "--dtype", args.dtype,
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        # The kernel's OOM killer sends SIGKILL and leaves no traceback: say so.
        reason = "killed (out of memory?)" if done.returncode == -9 else f"exit {done.returncode}"
        tail = (done.stderr.strip().splitlines() or [""])[-1][:100]
        return [Row(v, n, note=f"failed: {reason} {tail}".strip()) for v in variants]
    rows = []
    for result in json.loads(done.stdout.strip().splitlines()[-1]):
        wall_ms = tuple(result.get("wall_ms", ()))
        rows.append(
            Row(
                result["variant"], n, result.get("ms"), result.get("ratio"), result.get("cpu_ratio"),
                len(wall_ms), result.get("peak_bytes"), result.get("rss_bytes"), wall_ms, result["note"],
            )
        )
    return rows


def variant_label(variant: str) -> str:
    if variant == "nxn-einsum":
        return "nxn-einsum (N,N,d)" if einsum_contracts_left_to_right() else "nxn-einsum (opt_einsum)"
    return variant


def markdown_table(rows: list[Row]) -> str:
    peaks = {(r.variant, r.n): r.peak_bytes for r in rows if r.peak_bytes}
    header = [
        "N", "variant", "ms fwd+bwd (median)", "vs vanilla (wall)", "vs vanilla (CPU time)", "timed steps",
        "peak MiB", "peak RSS MiB", "MiB per 1K tokens added from N/2",
    ]

    def mib(value: int | None) -> str:
        return "n/a" if value is None else f"{value / MIB:.0f}"

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [str(r.n), variant_label(r.variant)]
        if r.ms is None:
            cells.append(r.note)
        else:
            half = peaks.get((r.variant, r.n // 2))
            cells += [
                f"{r.ms:.0f}" + (f" ({r.note})" if r.note else ""),
                f"{r.ratio:.2f}x" if r.ratio is not None else "n/a",
                f"{r.cpu_ratio:.2f}x" if r.cpu_ratio is not None else "n/a",
                str(r.steps),
                mib(r.peak_bytes),
                mib(r.rss_bytes),
                # The slope from N/2 to N: flat for memory linear in N, doubling for N x N.
                f"{(r.peak_bytes - half) / MIB / (r.n / 2 / 1024):.0f}" if r.peak_bytes and half else "",
            ]
        cells += [""] * (len(header) - len(cells))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def resolve(args: argparse.Namespace) -> tuple[torch.device, torch.dtype]:
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(auto if args.device == "auto" else args.device)
    if args.dtype == "auto":
        # bf16 is what training uses on GPU; CPU bf16 matmuls are emulated on many hosts.
        return device, torch.bfloat16 if device.type == "cuda" else torch.float32
    return device, getattr(torch, args.dtype)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", default="1024,2048,4096,8192", help="comma-separated sequence lengths")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated: {', '.join(VARIANTS)}")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per length, after 1 warm-up")
    parser.add_argument(
        "--seconds-per-length", type=float, default=150.0,
        help="stop adding rounds at a length once the next would pass this (at least 1 round); 0: no limit",
    )
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.lengths = [int(x) for x in args.lengths.split(",") if x]
    # Table order, whatever the command-line order: vanilla first, the ratio's reference.
    requested = {v for v in args.variants.split(",") if v}
    unknown = sorted(requested - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    args.variant_list = [v for v in VARIANTS if v in requested]
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device, dtype = resolve(args)
    if args.worker:
        results = measure_length(
            args.variant_list, args.lengths[0], device, dtype, args.repeats, args.seconds_per_length
        )
        print(json.dumps(results))
        return

    print_setup(args, device, dtype)
    rows, loads = [], []
    for n in args.lengths:
        load_before = os.getloadavg()[0]
        rows += measure(args, n, device, dtype)
        loads.append(f"{n}: {load_before:.1f} -> {os.getloadavg()[0]:.1f}")
    print(markdown_table(rows))
    # Other processes on the machine show in wall time, which the reader should be able to see.
    print(
        f"\nLoad average (1 min) before -> after each length, on {os.cpu_count()} CPUs: {'; '.join(loads)}. "
        "Above the CPU count, other processes shared the machine and wall-time ratios are noisy."
    )


def print_setup(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> None:
    memory = (
        "CUDA max_memory_allocated above the pre-step level, over the timed steps"
        if device.type == "cuda"
        else "tensor allocations (torch profiler) and RSS (VmHWM) above the pre-step level, warm-up step"
    )
    print(
        f"One attention layer, B={BATCH}, {HEADS} heads x {HEAD_DIM}, hidden {HIDDEN}; device={device}, "
        f"dtype={str(dtype).removeprefix('torch.')}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads.\n"
        f"Time: median of up to {args.repeats} interleaved rounds (budget {args.seconds_per_length:.0f} s per "
        f"length) after 1 warm-up step per variant; 'vs vanilla': median of per-round ratios.\n"
        f"Memory: {memory}; the weights and their .grad are excluded.\n",
        flush=True,
    )
    if "vanilla" not in args.variant_list:
        print("note: without the vanilla row there is no 'vs vanilla' ratio", file=sys.stderr)


def measure(args: argparse.Namespace, n: int, device: torch.device, dtype: torch.dtype) -> list[Row]:
    """One row per requested variant at length n, in a worker, or a note saying why not."""
    fits, skipped = split_by_fit(args.variant_list, n, device, dtype)
    measured = {r.variant: r for r in run_worker(args, fits, n)} if fits else {}
    rows = []
    for variant in args.variant_list:
        row = measured.get(variant) or Row(variant, n, note=skipped[variant])
        rows.append(row)
        peak = "n/a" if row.peak_bytes is None else f"{row.peak_bytes / MIB:.0f} MiB"
        shown = row.note if row.ms is None else f"steps {list(row.wall_ms)} ms, peak {peak}"
        print(f"  N={n} {variant}: {shown}", file=sys.stderr, flush=True)
    return rows


def split_by_fit(
    variants: list[str], n: int, device: torch.device, dtype: torch.dtype
) -> tuple[list[str], dict[str, str]]:
    """(the variants whose estimated peak fits in free memory, {variant: why skipped} for the rest)."""
    fits, skipped = [], {}
    for variant in variants:
        need, free = estimate_peak_bytes(variant, n, dtype), available_bytes(device)
        if need > HEADROOM * free:
            skipped[variant] = f"skipped: needs ~{need / GIB:.0f} GiB ({free / GIB:.0f} GiB free)"
        else:
            fits.append(variant)
    return fits, skipped


if __name__ == "__main__":
    main()
