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

    python bench/attention.py                       # N = 1K, 2K, 4K, 8K; all rows
    python bench/attention.py --lengths 256,512 --variants vanilla,nxn-einsum
"""
from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

# LLaMA-7B's attention. Batch 1 is the long-context fine-tuning setting.
BATCH = 1
HIDDEN = 4096
HEADS = 32
HEAD_DIM = HIDDEN // HEADS
LAYER_VARIANTS = ("vanilla", "slack", "exact")
NXN_VARIANTS = ("nxn-scores", "nxn-einsum")
VARIANTS = LAYER_VARIANTS + NXN_VARIANTS
MIB = 2**20
GIB = 2**30
# Left for the OS, the parent process and allocator slack when deciding what fits.
HEADROOM = 0.85
# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


# ---------------------------------------------------------------- the layer under test


def build_layers(device: torch.device, dtype: torch.dtype, max_positions: int, hidden: int = HIDDEN,
                 heads: int = HEADS, attn_implementation: str = "sdpa"):
    """Real `CocaAttention` layers, one per variant, sharing one set of projections.

    A 1-layer LLaMA model is converted by the project's `convert_to_coca`; every variant (and
    the nxn-* rows, through the slack layer) then runs the same weights. Returns
    ({variant: layer}, the model's LlamaRotaryEmbedding). bench/gpu_check.py asks for other
    shapes and kernels.
    """
    from transformers import LlamaConfig, LlamaModel

    from train.coca import CocaAttention, convert_to_coca

    config = LlamaConfig(
        hidden_size=hidden,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        num_hidden_layers=1,
        # The MLP and the embedding never run: tiny, so the resident baseline is attention.
        intermediate_size=8,
        vocab_size=8,
        max_position_embeddings=max(max_positions, 4096),
        attn_implementation=attn_implementation,
    )
    model = LlamaModel(config)
    convert_to_coca(model, variant="slack")
    model = model.to(device=device, dtype=dtype).train()
    slack = model.layers[0].self_attn
    layers = {v: slack if v == "slack" else CocaAttention(slack, v) for v in LAYER_VARIANTS}
    return layers, model.rotary_emb


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # The reference code's rotate_half RoPE: dim j pairs with dim j + d/2 (HF layout).
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


def einsum_contracts_left_to_right() -> bool:
    """True when a 3-operand torch.einsum will materialise the (B, H, N, N, d) pair product."""
    return not (torch.backends.opt_einsum.is_available() and torch.backends.opt_einsum.enabled)


def reference_nxn_attention(
    attention: nn.Module,
    hidden: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    contraction: str = "einsum",
) -> torch.Tensor:
    """Slack CoCA the way the reference code computes it: the full N x N score matrix.

    hidden (B, N, hidden); cos, sin (B, N, d). contraction="einsum" is the reference's
    3-operand einsum as torch runs it; "scores" multiplies q * RoPE(q) first, which is the
    path opt_einsum picks for the reference code. Returns the layer output (B, N, hidden).
    """
    b, n, _ = hidden.shape
    d = attention.head_dim
    half = d // 2
    shape = (b, n, -1, d)
    q = attention.q_proj(hidden).view(shape).transpose(1, 2)  # (B, H, N, d)
    t = attention.k_proj(hidden).view(shape).transpose(1, 2)  # (B, H, N, d); k_proj holds W_t
    v = attention.v_proj(hidden).view(shape).transpose(1, 2)  # (B, H, N, d)

    c = F.relu((t[..., :half] + t[..., half:]) / 2)  # (B, H, N, d/2)
    cos, sin = cos[:, None], sin[:, None]  # (B, 1, N, d)
    key = _rope(torch.cat((c, c), dim=-1), cos, sin)  # (B, H, N, d)
    q_rot = _rope(q, cos, sin)  # (B, H, N, d)
    if contraction == "einsum":
        # Left to right, the first pair keeps d for the third operand: (B, H, N, N, d).
        scores = torch.einsum("bhmd,bhnd,bhmd->bhmn", q, key, q_rot)  # (B, H, N, N)
    elif contraction == "scores":
        scores = torch.einsum("bhmd,bhnd->bhmn", q * q_rot, key)  # (B, H, N, N)
    else:
        raise ValueError(f"contraction={contraction!r}: choose einsum or scores")
    scores = scores / math.sqrt(d)

    # Additive mask and a softmax upcast to fp32 (never down), as the reference code does.
    mask = torch.full((n, n), torch.finfo(scores.dtype).min, device=hidden.device, dtype=scores.dtype)
    mask = mask.triu(1)  # (N, N)
    softmax_dtype = torch.promote_types(scores.dtype, torch.float32)
    probs = F.softmax(scores + mask, dim=-1, dtype=softmax_dtype).to(q.dtype)  # (B, H, N, N)
    out = probs @ v  # (B, H, N, d)
    return attention.o_proj(out.transpose(1, 2).reshape(b, n, -1))


# ---------------------------------------------------------------- memory accounting


class CudaPeak:
    """Peak bytes allocated above the level at `reset()` (live tensors, not the cache)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.base = 0

    def reset(self) -> None:
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self.base = torch.cuda.memory_allocated(self.device)

    def peak(self) -> int:
        torch.cuda.synchronize(self.device)
        return torch.cuda.max_memory_allocated(self.device) - self.base


def cpu_step_memory(step: Callable[[], None]) -> tuple[int | None, int | None]:
    """(allocator peak, RSS peak) in bytes that `step` adds above the level before it.

    Allocator: the running total of tensor allocations, as torch's profiler records it: the
    CPU counterpart of CUDA's max_memory_allocated, exact and independent of malloc's heap.
    RSS: VmHWM, reset through /proc/self/clear_refs (Linux), after returning glibc's free heap
    to the OS; it adds what the allocator does not see (BLAS scratch, fragmentation).
    Either is None where this torch or OS cannot provide it.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        # Inside the profiler, so that its own start-up buffers are part of the baseline.
        _release_free_heap()
        rss_base = _reset_rss_peak()
        step()
        rss_peak = None if rss_base is None else max(_proc_status_kib("VmHWM") * 1024 - rss_base, 0)
    return _allocator_peak(prof), rss_peak


def _allocator_peak(prof) -> int | None:
    try:
        from torch._C._profiler import _EventType

        stack, allocations = list(prof.profiler.kineto_results.experimental_event_tree()), []
        while stack:
            event = stack.pop()
            stack.extend(event.children)
            if event.tag == _EventType.Allocation:
                allocations.append(event)
    except (AttributeError, ImportError):
        return None  # the profiler's event tree is not public API: it may move
    if not allocations:
        return None
    allocations.sort(key=lambda e: e.start_time_ns)
    # total_allocated is the running total after each event; alloc_size < 0 for a free.
    first = allocations[0].extra_fields
    level = first.total_allocated - first.alloc_size
    return max(max(e.extra_fields.total_allocated for e in allocations) - level, 0)


def _reset_rss_peak() -> int | None:
    try:
        # "5" resets VmHWM to the current RSS (Linux >= 4.0): the high-water mark is the step's.
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _proc_status_kib("VmRSS") * 1024
    except (OSError, RuntimeError):
        return None  # ru_maxrss cannot be reset, so it would report the setup's peak


def _proc_status_kib(field: str) -> int:
    try:
        with open("/proc/self/status") as f:
            match = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.MULTILINE)
    except OSError:
        match = None
    if match is None:
        raise RuntimeError(f"no {field} in /proc/self/status: peak RSS needs Linux")
    return int(match.group(1))


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def _release_free_heap() -> None:
    # glibc keeps freed blocks resident for reuse; returning them makes RSS start from live data.
    if (libc := _glibc()) is not None:
        libc.malloc_trim(0)


def _set_malloc_thresholds(mmap_bytes: int) -> None:
    """Blocks from mmap_bytes up get their own mapping, returned to the OS when freed.

    glibc raises this threshold as large blocks are freed (up to 32 MiB), after which freed
    tensors stay in the heap: RSS then depends on what ran before. A small fixed threshold
    makes a step's peak RSS its own; 32 MiB is the state glibc settles in, for timing.
    """
    if (libc := _glibc()) is not None:
        libc.mallopt(M_MMAP_THRESHOLD, mmap_bytes)
        libc.mallopt(M_TRIM_THRESHOLD, 2 * mmap_bytes)  # glibc's own ratio


def available_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free
    with open("/proc/meminfo") as f:
        match = re.search(r"^MemAvailable:\s+(\d+) kB", f.read(), re.MULTILINE)
    return int(match.group(1)) * 1024 if match else 0


def estimate_peak_bytes(variant: str, n: int, dtype: torch.dtype) -> int:
    """Rough peak of one step above the weights and their gradients, to skip what cannot fit.

    In tensors alive at the peak, as measured on CPU in fp32 (bench/RESULTS.md): the O(N)
    layers hold 9-12 of size (B, N, hidden), counted as 16 here; nxn-scores adds 3 of size
    (B, H, N, N); a left-to-right nxn-einsum adds 3 of size (B, H, N, N, d) (the saved pair
    product and two of its size in the backward).
    """
    elem = torch.finfo(dtype).bits // 8
    linear = 16 * BATCH * n * HIDDEN * elem
    if variant in LAYER_VARIANTS:
        return linear
    # The softmax runs in fp32 whatever the dtype: score-sized tensors count 4 bytes or more.
    square = 3 * BATCH * HEADS * n * n * max(elem, 4)
    if variant == "nxn-einsum" and einsum_contracts_left_to_right():
        square += 3 * BATCH * HEADS * n * n * HEAD_DIM * elem
    return linear + square


# ---------------------------------------------------------------- one length (worker)


@dataclass
class Inputs:
    hidden: torch.Tensor  # (B, N, hidden), requires grad
    grad_out: torch.Tensor  # (B, N, hidden)
    cos: torch.Tensor  # (B, N, d)
    sin: torch.Tensor  # (B, N, d)


def make_inputs(rotary: nn.Module, n: int, device: torch.device, dtype: torch.dtype, width: int = HIDDEN) -> Inputs:
    hidden = torch.randn(BATCH, n, width, device=device, dtype=dtype, requires_grad=True)  # (B, N, hidden)
    grad_out = torch.randn(BATCH, n, width, device=device, dtype=dtype)  # (B, N, hidden)
    positions = torch.arange(n, device=device)[None].expand(BATCH, -1)  # (B, N)
    # The model computes the rotary tables once for all layers: not a per-layer cost.
    with torch.no_grad():
        cos, sin = rotary(hidden, positions)  # (B, N, d) each, from fp32 angles
    return Inputs(hidden, grad_out, cos, sin)


def run_step(variant: str, layers: dict[str, nn.Module], x: Inputs) -> None:
    # A layer inside a stack also sends a gradient to its input: dX counts in the step.
    x.hidden.grad = None
    if variant in LAYER_VARIANTS:
        out, _ = layers[variant](x.hidden, position_embeddings=(x.cos, x.sin), attention_mask=None)
    else:
        contraction = "scores" if variant == "nxn-scores" else "einsum"
        out = reference_nxn_attention(layers["slack"], x.hidden, x.cos, x.sin, contraction)
    out.backward(x.grad_out)  # (B, N, hidden)


def _is_out_of_memory(error: Exception) -> bool:
    return isinstance(error, torch.cuda.OutOfMemoryError) or "can't allocate memory" in str(error)


def measure_length(
    variants: list[str], n: int, device: torch.device, dtype: torch.dtype, repeats: int, budget_s: float
) -> list[dict]:
    """Time and peak memory of every variant at length n.

    One warm-up step per variant, then timed rounds: round r runs each variant once (order
    rotated by r), so a slow spell of the machine hits all variants of a round alike, and the
    ratio to vanilla is taken within each round. On CPU, memory comes from the warm-up step
    (profiled, so untimed); on CUDA from the timed steps, after one-time workspace allocations.
    """
    torch.manual_seed(0)
    layers, rotary = build_layers(device, dtype, n)
    # Gradients of the weights exist from the start, so no step's peak includes them.
    for p in layers["slack"].parameters():
        p.grad = torch.zeros_like(p)
    x = make_inputs(rotary, n, device, dtype)
    on_cuda = device.type == "cuda"
    failed: dict[str, str] = {}
    memory: dict[str, tuple[int | None, int | None]] = {v: (None, None) for v in variants}
    wall: dict[str, list[float]] = {v: [] for v in variants}
    cpu: dict[str, list[float]] = {v: [] for v in variants}

    def guarded(variant: str, step: Callable[[], object]) -> object | None:
        # Only out-of-memory is an expected outcome; anything else is a bug and raises.
        x.hidden.grad = None  # the previous step's dX is not part of this step's baseline
        try:
            return step()
        except (torch.cuda.OutOfMemoryError, RuntimeError) as error:
            if not _is_out_of_memory(error):
                raise
            failed[variant] = "failed: out of memory"
            if on_cuda:
                torch.cuda.empty_cache()
            return None

    if not on_cuda:
        _set_malloc_thresholds(64 * 1024)
    # A 16-token step first: the libraries' one-time allocations stay out of the first
    # variant's peak.
    run_step(variants[0], layers, make_inputs(rotary, 16, device, dtype))
    for variant in variants:
        if on_cuda:
            guarded(variant, lambda: run_step(variant, layers, x))
        else:
            measured = guarded(variant, lambda: cpu_step_memory(lambda: run_step(variant, layers, x)))
            memory[variant] = measured or (None, None)
    if not on_cuda:
        _set_malloc_thresholds(32 * MIB)

    cuda_peak = CudaPeak(device) if on_cuda else None

    def timed(variant: str) -> tuple[float, float]:
        if cuda_peak:
            cuda_peak.reset()
        began, began_cpu = time.perf_counter(), time.process_time()
        run_step(variant, layers, x)
        if on_cuda:
            torch.cuda.synchronize(device)
        spent = time.perf_counter() - began, time.process_time() - began_cpu
        if cuda_peak:
            memory[variant] = (max(memory[variant][0] or 0, cuda_peak.peak()), None)
        return spent

    start = time.perf_counter()
    for r in range(repeats):
        for variant in variants[r % len(variants) :] + variants[: r % len(variants)]:
            if variant in failed:
                continue
            spent = guarded(variant, lambda: timed(variant))
            if spent is not None:
                wall[variant].append(spent[0])
                cpu[variant].append(spent[1])
        elapsed = time.perf_counter() - start
        # Stop early when one more round would overrun the budget (always keep one round).
        if budget_s and elapsed * (r + 2) / (r + 1) > budget_s:
            break

    def ratio_to_vanilla(times: dict[str, list[float]], variant: str) -> float | None:
        ratios = [t / v for t, v in zip(times[variant], times.get("vanilla", [])) if v > 0]
        return statistics.median(ratios) if ratios else None

    results = []
    for variant in variants:
        result = {"variant": variant, "n": n, "note": failed.get(variant, "")}
        if wall[variant]:
            result.update(
                ms=1000 * statistics.median(wall[variant]),
                wall_ms=[round(1000 * t) for t in wall[variant]],
                ratio=ratio_to_vanilla(wall, variant),
                # On CUDA the host mostly waits in synchronize: its CPU time says nothing.
                cpu_ratio=None if on_cuda else ratio_to_vanilla(cpu, variant),
                peak_bytes=memory[variant][0],
                rss_bytes=memory[variant][1],
            )
        results.append(result)
    return results


# ---------------------------------------------------------------- driver and table


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
    rows, loads = [], []
    for n in args.lengths:
        load_before = os.getloadavg()[0]
        fits, skipped = [], {}
        for variant in args.variant_list:
            need, free = estimate_peak_bytes(variant, n, dtype), available_bytes(device)
            if need > HEADROOM * free:
                skipped[variant] = f"skipped: needs ~{need / GIB:.0f} GiB ({free / GIB:.0f} GiB free)"
            else:
                fits.append(variant)
        measured = {r.variant: r for r in run_worker(args, fits, n)} if fits else {}
        loads.append(f"{n}: {load_before:.1f} -> {os.getloadavg()[0]:.1f}")
        for variant in args.variant_list:
            row = measured.get(variant) or Row(variant, n, note=skipped[variant])
            rows.append(row)
            peak = "n/a" if row.peak_bytes is None else f"{row.peak_bytes / MIB:.0f} MiB"
            shown = row.note if row.ms is None else f"steps {list(row.wall_ms)} ms, peak {peak}"
            print(f"  N={n} {variant}: {shown}", file=sys.stderr, flush=True)
    print(markdown_table(rows))
    # Other processes on the machine show in wall time, which the reader should be able to see.
    print(
        f"\nLoad average (1 min) before -> after each length, on {os.cpu_count()} CPUs: {'; '.join(loads)}. "
        "Above the CPU count, other processes shared the machine and wall-time ratios are noisy."
    )


if __name__ == "__main__":
    main()
