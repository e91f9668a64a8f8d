"""What one step adds to memory, on CUDA and on CPU (bench/attention.py, bench/tiling.py).

CUDA: max_memory_allocated above the level before the step (`CudaPeak`). CPU: the tensor
allocations torch's profiler records, the same quantity, and beside it the step's peak RSS
(`cpu_step_memory`); glibc's malloc is tuned so that RSS reflects the step rather than the heap
left by earlier ones (`set_malloc_thresholds`).
"""
from __future__ import annotations

import ctypes
import re
from typing import Callable

import torch

MIB = 2**20
GIB = 2**30
# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


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


def set_malloc_thresholds(mmap_bytes: int) -> None:
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


def is_out_of_memory(error: Exception) -> bool:
    return isinstance(error, torch.cuda.OutOfMemoryError) or "can't allocate memory" in str(error)
