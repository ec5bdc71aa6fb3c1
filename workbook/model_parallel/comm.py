"""Who talks to whom, and what it costs: the ranks, their devices and clocks, and every message
between them counted as it is sent (:class:`CommLog`).

A worker runs one process per rank (``workbook.runner.call_distributed``: NCCL on GPUs, gloo
on a CPU). Tensor, pipeline and expert parallelism (:mod:`.tensor`, :mod:`.pipeline`,
:mod:`.expert`) all send through here.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.distributed as dist

from workbook.profiling import time_ms

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}


def ring_allreduce_bytes(payload_bytes: float, n: int) -> float:
    """Bytes each rank sends in a ring all-reduce: ``2(n-1)/n`` of the payload."""
    return 0.0 if n <= 1 else 2 * (n - 1) / n * payload_bytes


class CommLog:
    """Every collective and point-to-point call a worker makes goes through here, so the
    communication is counted as it happens (calls, bytes and wall milliseconds), not inferred
    afterwards. ``group``: the process group its all-reduces run in (None: every rank), so one
    log per dimension of a 3D layout counts that dimension alone."""

    def __init__(self, group=None) -> None:
        self.calls: list[tuple[str, int]] = []
        self.times_ms: list[float] = []
        self.enabled = True
        self.group = group

    def _note(self, op: str, n_bytes: int, ms: float = 0.0) -> None:
        if self.enabled:
            self.calls.append((op, int(n_bytes)))
            self.times_ms.append(ms)

    def all_reduce(self, t: torch.Tensor, group=None) -> torch.Tensor:
        group = group if group is not None else self.group
        if not self.enabled:  # timed elsewhere: no synchronisation added to the step
            dist.all_reduce(t, group=group)
            return t
        t0 = _tick(t.device)
        dist.all_reduce(t, group=group)
        self._note("all_reduce", t.numel() * t.element_size(), _tock(t0, t.device))
        return t

    def exchange(self, send: list[tuple[torch.Tensor, int]],
                 recv: list[tuple[torch.Tensor, int]]) -> None:
        """Point-to-point: send each ``(tensor, peer)`` and fill each ``(buffer, peer)``, all
        posted at once (``batch_isend_irecv``) and waited for, so two neighbours that send to
        each other cannot deadlock. Counts the bytes this rank sends."""
        if not send and not recv:
            return
        ops = [dist.P2POp(dist.isend, t, peer) for t, peer in send]
        ops += [dist.P2POp(dist.irecv, t, peer) for t, peer in recv]
        device = (send or recv)[0][0].device
        t0 = _tick(device)
        for work in dist.batch_isend_irecv(ops):
            work.wait()
        ms = _tock(t0, device)
        self._note("p2p", sum(t.numel() * t.element_size() for t, _ in send), ms)

    def milliseconds(self, op: str) -> float:
        return sum(ms for (o, _), ms in zip(self.calls, self.times_ms, strict=True) if o == op)

    def all_to_all(self, out: torch.Tensor, inp: torch.Tensor, out_splits: list[int],
                   in_splits: list[int]) -> None:
        rank = dist.get_rank()
        row = inp[0].numel() * inp.element_size() if inp.numel() else 0
        # bytes that leave this rank (the share kept locally never touches the network)
        self._note("all_to_all", row * (sum(in_splits) - in_splits[rank]))
        dist.all_to_all_single(out, inp, out_splits, in_splits)

    def count(self, op: str) -> int:
        return sum(1 for o, _ in self.calls if o == op)

    def bytes(self, op: str) -> int:
        return sum(b for o, b in self.calls if o == op)

    def reset(self) -> None:
        self.calls.clear()
        self.times_ms.clear()


def _tick(device: torch.device) -> float:
    sync(device)
    return time.perf_counter()


def _tock(t0: float, device: torch.device) -> float:
    sync(device)
    return (time.perf_counter() - t0) * 1e3


# Megatron-LM's two conjugate operators (Shoeybi et al. 2019, Sec. 3): the whole of tensor
# parallelism's communication. Each is an autograd function, and each one's backward is the
# other's forward: f all-reduces only gradients, g only activations.


class CopyToTP(torch.autograd.Function):
    """Megatron's ``f``: identity forward; all-reduce of the input gradient backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, log: CommLog) -> torch.Tensor:
        ctx.log = log
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return ctx.log.all_reduce(grad.clone(memory_format=torch.contiguous_format)), None


class ReduceFromTP(torch.autograd.Function):
    """Megatron's ``g``: all-reduce of the partial sums forward; identity backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, log: CommLog) -> torch.Tensor:
        return log.all_reduce(x.clone(memory_format=torch.contiguous_format))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


def f(x: torch.Tensor, log: CommLog) -> torch.Tensor:
    """Megatron's ``f``, before a column-parallel layer: identity forward, all-reduce backward."""
    return CopyToTP.apply(x, log)


def g(x: torch.Tensor, log: CommLog) -> torch.Tensor:
    """Megatron's ``g``, after a row-parallel layer: all-reduce forward, identity backward."""
    return ReduceFromTP.apply(x, log)


def rank_world() -> tuple[int, int]:
    """(this rank, world size); (0, 1) outside a distributed run."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def rank_device() -> torch.device:
    """This rank's device: its own GPU (``cuda:<local rank>``) under NCCL, else the CPU (gloo
    ranks stay on the CPU even where a GPU is present)."""
    if torch.cuda.is_available() and dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def sync(device: torch.device) -> None:
    """Wait for the GPU's queued work (nothing to wait for on a CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median milliseconds of ``fn`` after two warm-up calls (``profiling.time_ms``)."""
    return time_ms(fn, warmup=2, repeats=repeats, device=device)


class Clock:
    """Busy intervals of one stage.

    On a GPU: CUDA events (they time what the GPU did, not when Python asked). On a CPU: wall
    time (``perf_counter``) and, beside it, the thread's own CPU time, which does not grow while
    the OS has parked the process to run someone else - the only duration that stays honest on
    a machine shared with other jobs.
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.marks: list[tuple[object, object]] = []
        self.cpu_ms: list[float] = []
        self._cpu0 = 0.0

    def now(self) -> object:
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return time.perf_counter()

    def begin(self) -> object:
        self._cpu0 = time.thread_time()
        return self.now()

    def end(self, start: object) -> None:
        self.marks.append((start, self.now()))
        self.cpu_ms.append((time.thread_time() - self._cpu0) * 1e3)

    def ms(self, a: object, b: object) -> float:
        if self.cuda:
            return a.elapsed_time(b)  # type: ignore[union-attr]
        return (b - a) * 1e3  # type: ignore[operator]

    def durations_ms(self) -> list[float]:
        """Per-op durations in schedule order: GPU time on a GPU, thread CPU time on a CPU."""
        return [self.ms(a, b) for a, b in self.marks] if self.cuda else list(self.cpu_ms)

    def busy_ms(self) -> float:
        return sum(self.ms(a, b) for a, b in self.marks)
