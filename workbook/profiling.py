"""Timing and memory measurement helpers shared by every experiment.

GPU work is asynchronous: time with CUDA events after a warm-up and take the median of
repeats. On a CPU, a monotonic clock does the same job.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def time_ms(fn: Callable[[], object], *, warmup: int = 3, repeats: int = 10,
            device: torch.device | str | None = None) -> float:
    """Median wall time of ``fn()`` in milliseconds, warm-up excluded."""
    device = torch.device(device) if device is not None else (
        torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
    for _ in range(warmup):
        fn()
    samples = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end))
    else:
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(samples)


def _on_cuda(device: torch.device | str | None) -> bool:
    """A CUDA device is asked about (None: the current one, if there is a GPU)."""
    if not torch.cuda.is_available():
        return False
    return device is None or torch.device(device).type == "cuda"


def reset_peak(device: torch.device | str | None = None) -> None:
    """Start a new peak-memory window (nothing to do for a CPU device)."""
    if _on_cuda(device):
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_bytes(device: torch.device | str | None = None) -> int:
    """Peak bytes held by PyTorch's allocator since the last :func:`reset_peak` (0 on CPU)."""
    if not _on_cuda(device):
        return 0
    torch.cuda.synchronize(device)
    return int(torch.cuda.max_memory_allocated(device))


def allocated_bytes(device: torch.device | str | None = None) -> int:
    if not _on_cuda(device):
        return 0
    torch.cuda.synchronize(device)
    return int(torch.cuda.memory_allocated(device))
