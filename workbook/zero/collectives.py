"""Counting communication: every ``torch.distributed`` collective a rank makes (DDP's,
DeepSpeed's) passes through a wrapper that adds its payload to the open counter.

Each collective's payload in the paper's accounting: an all-reduce of S bytes counts 2S (it
is a reduce-scatter plus an all-gather); reduce-scatter counts its input, all-gather its
output, a broadcast its tensor.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch.distributed as dist
import torch.distributed.distributed_c10d as c10d


def _nbytes(t: Any) -> int:
    return int(t.numel() * t.element_size()) if hasattr(t, "numel") else 0


def _arg(args: tuple, kwargs: dict, index: int, *names: str) -> Any:
    for name in names:
        if name in kwargs:
            return kwargs[name]
    return args[index] if len(args) > index else None


def _measure(name: str, args: tuple, kwargs: dict, world: int) -> tuple[str, int]:
    if name in ("all_reduce",):
        return "all_reduce", 2 * _nbytes(_arg(args, kwargs, 0, "tensor"))
    if name in ("all_reduce_coalesced",):
        tensors = _arg(args, kwargs, 0, "tensors") or []
        return "all_reduce", 2 * sum(_nbytes(t) for t in tensors)
    if name in ("reduce_scatter_tensor", "_reduce_scatter_base"):
        return "reduce_scatter", _nbytes(_arg(args, kwargs, 1, "input", "input_tensor"))
    if name == "reduce_scatter":
        inputs = _arg(args, kwargs, 1, "input_list") or []
        return "reduce_scatter", sum(_nbytes(t) for t in inputs)
    if name in ("all_gather_into_tensor", "_all_gather_base"):
        return "all_gather", _nbytes(_arg(args, kwargs, 0, "output_tensor", "output"))
    if name == "all_gather":
        return "all_gather", world * _nbytes(_arg(args, kwargs, 1, "tensor"))
    if name in ("broadcast", "reduce"):
        return name, _nbytes(_arg(args, kwargs, 0, "tensor"))
    return name, 0


_WRAPPED = ("all_reduce", "all_reduce_coalesced", "reduce_scatter_tensor", "_reduce_scatter_base",
            "reduce_scatter", "all_gather_into_tensor", "_all_gather_base", "all_gather",
            "broadcast", "reduce")


@dataclass
class CommCounter:
    """Bytes per collective kind, from wrappers around ``torch.distributed``'s functions."""

    bytes: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    active: bool = False


_COUNTERS: list[CommCounter] = []   # the innermost open count_collectives() counts
_DEPTH = [0]                        # a wrapped collective calling another counts once


def _wrap(name: str, fn: Callable) -> Callable:
    def counted(*args: Any, **kwargs: Any) -> Any:
        if _COUNTERS and _COUNTERS[-1].active and _DEPTH[0] == 0:
            kind, n = _measure(name, args, kwargs, dist.get_world_size())
            _COUNTERS[-1].bytes[kind] += n
            _COUNTERS[-1].calls[kind] += 1
        _DEPTH[0] += 1
        try:
            return fn(*args, **kwargs)
        finally:
            _DEPTH[0] -= 1
    counted._workbook_counted = True  # type: ignore[attr-defined]
    return counted


def install_counting() -> None:
    """Wrap ``torch.distributed``'s collectives, once per process (idempotent).

    The wrappers stay for the life of the (fresh, per-run) process: DeepSpeed looks some of
    these functions up once when it starts, so they must be in place before and stay after.
    Outside :func:`count_collectives` they only pass calls through.
    """
    for module in (dist, c10d):
        for name in _WRAPPED:
            fn = getattr(module, name, None)
            if fn is not None and not getattr(fn, "_workbook_counted", False):
                setattr(module, name, _wrap(name, fn))


@contextmanager
def count_collectives() -> Iterator[CommCounter]:
    """Count the payload bytes of every ``torch.distributed`` collective while ``active``."""
    install_counting()
    counter = CommCounter()
    _COUNTERS.append(counter)
    try:
        yield counter
    finally:
        _COUNTERS.remove(counter)

