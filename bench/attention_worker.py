"""What bench/attention.py's worker subprocess measures at one sequence length.

Each length runs in a fresh subprocess holding one set of weights. There, every variant takes
one warm-up step, then the variants run in interleaved rounds: a shared 2-core VM drifts by 2x
in speed over minutes, which separate runs would read as a difference between variants.
"""
from __future__ import annotations

import statistics
import time
from functools import partial
from typing import Callable

import torch

from bench.attention_layer import build_layers, make_inputs, run_step
from bench.step_memory import MIB, CudaPeak, cpu_step_memory, is_out_of_memory, set_malloc_thresholds


def measure_length(
    variants: list[str], n: int, device: torch.device, dtype: torch.dtype, repeats: int, budget_s: float
) -> list[dict]:
    """Time and peak memory of every variant at length n.

    One warm-up step per variant, then timed rounds: round r runs each variant once (order
    rotated by r), so a slow spell of the machine hits all variants of a round alike, and the
    ratio to vanilla is taken within each round. On CPU, memory comes from the warm-up step
    (profiled, so untimed); on CUDA from the timed steps, after one-time workspace allocations.
    """
    length = Length(variants, n, device, dtype)
    length.warm_up()
    length.run_rounds(repeats, budget_s)
    return length.results()


def rotated(variants: list[str], r: int) -> list[str]:
    return variants[r % len(variants) :] + variants[: r % len(variants)]


def median_ratio_to_vanilla(times: dict[str, list[float]], variant: str) -> float | None:
    # Per-round ratios: the machine's drift between rounds cancels.
    ratios = [t / v for t, v in zip(times[variant], times.get("vanilla", [])) if v > 0]
    return statistics.median(ratios) if ratios else None


class Length:
    """The layers and inputs at one length, and what each variant's steps have measured so far."""

    def __init__(self, variants: list[str], n: int, device: torch.device, dtype: torch.dtype):
        torch.manual_seed(0)
        self.variants, self.n, self.device, self.dtype = variants, n, device, dtype
        self.layers, self.rotary = build_layers(device, dtype, n)
        # Gradients of the weights exist from the start, so no step's peak includes them.
        for p in self.layers["slack"].parameters():
            p.grad = torch.zeros_like(p)
        self.x = make_inputs(self.rotary, n, device, dtype)
        self.on_cuda = device.type == "cuda"
        self.cuda_peak = CudaPeak(device) if self.on_cuda else None
        self.failed: dict[str, str] = {}
        self.memory: dict[str, tuple[int | None, int | None]] = {v: (None, None) for v in variants}
        self.wall: dict[str, list[float]] = {v: [] for v in variants}
        self.cpu: dict[str, list[float]] = {v: [] for v in variants}

    def guarded(self, variant: str, step: Callable[[], object]) -> object | None:
        """step()'s result, or None after recording that `variant` ran out of memory."""
        # Only out-of-memory is an expected outcome; anything else is a bug and raises.
        self.x.hidden.grad = None  # the previous step's dX is not part of this step's baseline
        try:
            return step()
        except (torch.cuda.OutOfMemoryError, RuntimeError) as error:
            if not is_out_of_memory(error):
                raise
            self.failed[variant] = "failed: out of memory"
            if self.on_cuda:
                torch.cuda.empty_cache()
            return None

    def warm_up(self) -> None:
        """One untimed step per variant; on CPU, the step whose memory is reported."""
        if not self.on_cuda:
            set_malloc_thresholds(64 * 1024)
        self.warm_up_libraries()
        for variant in self.variants:
            step = partial(run_step, variant, self.layers, self.x)
            if self.on_cuda:
                self.guarded(variant, step)
            else:
                self.memory[variant] = self.guarded(variant, partial(cpu_step_memory, step)) or (None, None)
        if not self.on_cuda:
            set_malloc_thresholds(32 * MIB)

    def warm_up_libraries(self) -> None:
        # A 16-token step first: the libraries' one-time allocations stay out of the first
        # variant's peak.
        run_step(self.variants[0], self.layers, make_inputs(self.rotary, 16, self.device, self.dtype))

    def run_rounds(self, repeats: int, budget_s: float) -> None:
        start = time.perf_counter()
        for r in range(repeats):
            for variant in rotated(self.variants, r):
                if variant not in self.failed:
                    self.record_step(variant)
            elapsed = time.perf_counter() - start
            # Stop early when one more round would overrun the budget (always keep one round).
            if budget_s and elapsed * (r + 2) / (r + 1) > budget_s:
                break

    def record_step(self, variant: str) -> None:
        spent = self.guarded(variant, partial(self.timed_step, variant))
        if spent is not None:
            self.wall[variant].append(spent[0])
            self.cpu[variant].append(spent[1])

    def timed_step(self, variant: str) -> tuple[float, float]:
        """(wall, process CPU) seconds of one step; on CUDA, its peak memory is kept too."""
        if self.cuda_peak:
            self.cuda_peak.reset()
        began, began_cpu = time.perf_counter(), time.process_time()
        run_step(variant, self.layers, self.x)
        if self.on_cuda:
            torch.cuda.synchronize(self.device)
        spent = time.perf_counter() - began, time.process_time() - began_cpu
        if self.cuda_peak:
            self.memory[variant] = (max(self.memory[variant][0] or 0, self.cuda_peak.peak()), None)
        return spent

    def results(self) -> list[dict]:
        """One dict per variant, as the worker prints them for bench/attention.py's table."""
        results = []
        for variant in self.variants:
            result = {"variant": variant, "n": self.n, "note": self.failed.get(variant, "")}
            if self.wall[variant]:
                result.update(
                    ms=1000 * statistics.median(self.wall[variant]),
                    wall_ms=[round(1000 * t) for t in self.wall[variant]],
                    ratio=median_ratio_to_vanilla(self.wall, variant),
                    # On CUDA the host mostly waits in synchronize: its CPU time says nothing.
                    cpu_ratio=None if self.on_cuda else median_ratio_to_vanilla(self.cpu, variant),
                    peak_bytes=self.memory[variant][0],
                    rss_bytes=self.memory[variant][1],
                )
            results.append(result)
        return results
