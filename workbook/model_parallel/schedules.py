"""Pipeline schedules: GPipe and 1F1B (PipeDream-flush, Narayanan et al. 2021), one executor.

A schedule is one number per stage: how many forwards it runs before its first backward.
GPipe runs all ``m``; 1F1B runs ``p - stage - 1`` (the pipe's depth below it), then alternates
one forward and one backward, then drains. Both idle ``(p-1)/(m+p-1)`` of a step; GPipe holds
the activations of all ``m`` micro-batches at once, 1F1B at most ``p`` (stage 0).
:func:`pipeline_step` runs either with real point-to-point messages and counts what it holds.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import nn

from workbook.config import check_choice, check_range
from workbook.model_parallel.comm import Clock, CommLog, rank_world, sync

SCHEDULES = ("gpipe", "1f1b")


def warmup_forwards(schedule: str, p: int, stage: int, m: int) -> int:
    """Forwards ``stage`` runs before its first backward: ``m`` (GPipe), ``p-stage-1`` (1F1B)."""
    check_choice("schedule", schedule, SCHEDULES)
    check_range("p (pipeline stages)", p, 1, 4096)
    check_range("stage", stage, 0, p - 1)
    check_range("m (micro-batches)", m, 1, 1_000_000)
    return m if schedule == "gpipe" else min(p - stage - 1, m)


def schedule_order(schedule: str, p: int, stage: int, m: int) -> list[tuple[str, int]]:
    """The ops of ``stage`` in the order it runs them: ``("F", i)`` / ``("B", i)``."""
    w = warmup_forwards(schedule, p, stage, m)
    order = [("F", i) for i in range(w)]
    for i in range(m - w):  # steady state: one forward, one backward
        order += [("F", w + i), ("B", i)]
    return order + [("B", i) for i in range(m - w, m)]


def in_flight(order: Sequence[tuple[str, int]]) -> int:
    """Most micro-batches whose forward ran and backward has not (activations held)."""
    held = peak = 0
    for kind, _ in order:
        held += 1 if kind == "F" else -1
        peak = max(peak, held)
    return peak


def replay_schedule(durations: Sequence[Sequence[float]], schedule: str) -> list[float]:
    """Idle fraction of each stage with its measured op durations placed as early as the
    schedule allows. ``durations[s]`` is stage ``s``'s ops in :func:`schedule_order`. Forward
    ``i`` waits for forward ``i`` upstream, backward ``i`` for backward ``i`` downstream; a
    stage runs its ops in order, one at a time; messages are taken as free. With equal stages
    this is ``(p-1)/(m+p-1)`` for either schedule."""
    p, m = len(durations), len(durations[0]) // 2
    orders = [schedule_order(schedule, p, s, m) for s in range(p)]
    end: dict[tuple[str, int, int], float] = {}
    clock, nxt = [0.0] * p, [0] * p
    while any(nxt[s] < 2 * m for s in range(p)):
        moved = False
        for s in range(p):
            while nxt[s] < 2 * m:
                kind, i = orders[s][nxt[s]]
                dep = ("F", s - 1, i) if kind == "F" else ("B", s + 1, i)
                if (kind == "F" and s == 0) or (kind == "B" and s == p - 1):
                    ready = 0.0
                elif dep in end:
                    ready = end[dep]
                else:
                    break
                clock[s] = max(clock[s], ready) + durations[s][nxt[s]]
                end[(kind, s, i)] = clock[s]
                nxt[s] += 1
                moved = True
        if not moved:
            raise RuntimeError(f"schedule {schedule!r} deadlocks")  # cannot happen for these two
    span = max(clock)
    return [1 - sum(durations[s]) / span for s in range(p)]


class SavedBytes:
    """Bytes of the tensors autograd keeps for one micro-batch's backward (the activations),
    counted as they are saved; a stage's weights are not counted."""

    def __init__(self, stage: nn.Module) -> None:
        self.weights = {q.data_ptr() for q in stage.parameters()}
        self.seen: dict[int, int] = {}   # by address: a view saved twice counts once

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        self.add(t)
        return t

    def add(self, t: torch.Tensor) -> None:
        if t.data_ptr() not in self.weights:
            size = t.numel() * t.element_size()
            self.seen[t.data_ptr()] = max(size, self.seen.get(t.data_ptr(), 0))

    def hooks(self):
        return torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def total(self) -> int:
        return sum(self.seen.values())


def pipeline_step(stage: nn.Module, batch: torch.Tensor | None, m: int, shape: tuple[int, ...],
                  device: torch.device, dtype: torch.dtype, schedule: str = "gpipe", *,
                  ranks: Sequence[int] | None = None, log: CommLog | None = None) -> dict:
    """One training step of this rank's stage under ``schedule`` (GPipe or 1F1B).

    ``ranks``: the global ranks of the pipeline, first stage first (default: every rank).
    ``batch`` (first stage only) holds the ``m`` micro-batches along dim 0. A send and the next
    receive from the same neighbour go out together (Megatron's ``send_forward_recv_backward``),
    so neither side waits on the other. Returns busy and span milliseconds, each op's duration
    (schedule order), the most micro-batches held and the most activation bytes held, and on
    the last stage the loss (sum over micro-batches of the output's mean square).
    """
    ranks = list(ranks) if ranks is not None else list(range(rank_world()[1]))
    p, me = len(ranks), ranks.index(rank_world()[0])
    prev, nxt = (ranks[me - 1] if me else None), (ranks[me + 1] if me < p - 1 else None)
    log = log if log is not None else CommLog()
    clock, flag = Clock(device), torch.zeros(1, device=device)
    inputs: dict[int, torch.Tensor] = {}
    outputs: dict[int, torch.Tensor] = {}
    saved: dict[int, int] = {}
    pending: list[tuple[torch.Tensor, int]] = []   # a send waiting to go out with a receive
    peak_held = peak_bytes = one_bytes = 0
    loss = 0.0
    if dist.is_initialized() and rank_world()[1] > 1:
        dist.all_reduce(flag)                      # a common start for every rank
    start = clock.now()
    for kind, i in schedule_order(schedule, p, me, m):
        peer = prev if kind == "F" else nxt
        buf = torch.empty(shape, device=device, dtype=dtype) if peer is not None else None
        if pending and pending[0][1] != peer:     # a send to the other neighbour goes alone
            log.exchange(pending, [])
            pending = []
        log.exchange(pending, [(buf, peer)] if buf is not None else [])
        pending = []
        if kind == "F":
            x = batch[i] if buf is None else buf.requires_grad_()  # type: ignore[index]
            counter = SavedBytes(stage)
            t0 = clock.begin()
            with counter.hooks():
                y = stage(x)
            clock.end(t0)
            counter.add(x)
            counter.add(y)
            inputs[i], outputs[i], saved[i] = x, y, counter.total()
            one_bytes = max(one_bytes, saved[i])
            peak_held, peak_bytes = max(peak_held, len(saved)), max(peak_bytes,
                                                                    sum(saved.values()))
            if nxt is not None:
                pending = [(y.detach().contiguous(), nxt)]
        else:
            t0 = clock.begin()
            if buf is None:                        # the last stage: the loss starts backward
                step_loss = outputs[i].float().square().mean()
                step_loss.backward()
                loss += float(step_loss.detach())
            else:
                outputs[i].backward(buf)
            clock.end(t0)
            x = inputs.pop(i)
            del outputs[i], saved[i]
            if prev is not None:
                pending = [(x.grad.contiguous(), prev)]
    log.exchange(pending, [])
    if dist.is_initialized() and rank_world()[1] > 1:
        dist.all_reduce(flag)
    end = clock.now()
    sync(device)
    return {"busy_ms": clock.busy_ms(), "span_ms": clock.ms(start, end),
            "durations_ms": clock.durations_ms(), "peak_in_flight": peak_held,
            "peak_activation_bytes": peak_bytes, "microbatch_activation_bytes": one_bytes,
            "loss": loss}
