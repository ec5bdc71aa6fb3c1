"""Pipeline parallelism (GPipe, Huang et al. 2019): consecutive layers on consecutive ranks,
the batch cut into ``m`` micro-batches; every stage idles for ``(p-1)/(m+p-1)`` of a step (the
bubble). The schedule (:func:`gpipe_step`) is written out with send/recv: it is the idea.
:func:`pp_worker` measures it beside 1F1B through the one executor of :mod:`.schedules`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from workbook.config import check_range
from workbook.model_parallel.comm import DTYPES, Clock, rank_device, rank_world, sync
from workbook.model_parallel.schedules import (
    in_flight,
    pipeline_step,
    replay_schedule,
    schedule_order,
)
from workbook.profiling import peak_bytes, reset_peak


def bubble_fraction(p: int, m: int) -> float:
    """GPipe's idle share of a step: ``(p-1)/(m+p-1)`` for ``p`` stages and ``m`` micro-batches.

    Each stage computes ``m`` slots forward and ``m`` backward; filling and draining the pipe
    costs ``p-1`` slots of each, during which the stage waits.
    """
    check_range("p (pipeline stages)", p, 1, 4096)
    check_range("m (micro-batches)", m, 1, 1_000_000)
    return (p - 1) / (m + p - 1)


class MLPLayer(nn.Module):
    """A residual GELU MLP: a pipeline stage is a stack of these (compute-bound matmuls)."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(d_model)
        self.fc1, self.fc2 = nn.Linear(d_model, 4 * d_model), nn.Linear(4 * d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(F.gelu(self.fc1(self.ln(x))))


def build_pipeline_model(n_layers: int, d_model: int, seed: int) -> nn.Sequential:
    """The whole model, drawn from ``seed``: every rank builds it and keeps its own stage."""
    torch.manual_seed(seed)
    return nn.Sequential(*[MLPLayer(d_model) for _ in range(n_layers)])


def stage_layers(n_layers: int, p: int, stage: int) -> range:
    """Layers of ``stage`` when ``n_layers`` are cut into ``p`` contiguous, near-equal parts."""
    bounds = [round(i * n_layers / p) for i in range(p + 1)]
    return range(bounds[stage], bounds[stage + 1])


def gpipe_step(stage: nn.Module, batch: torch.Tensor | None, m: int, shape: tuple[int, ...],
               device: torch.device, dtype: torch.dtype) -> dict:
    """One GPipe training step of this rank's stage: all ``m`` forwards, then all backwards.

    ``batch`` (only on the first stage) has ``m`` micro-batches along dim 0. Activations go
    forward with send/recv, their gradients come back the same way. Returns this stage's busy
    and span milliseconds (span runs from a common start to a common end: all ranks meet in an
    all-reduce on both sides) and each op's duration, forwards then backwards.
    """
    rank, p = rank_world()
    clock, flag = Clock(device), torch.zeros(1, device=device)
    sends: list = []
    inputs: list[torch.Tensor] = []
    outputs: list[torch.Tensor] = []
    if p > 1:
        dist.all_reduce(flag)
    start = clock.now()
    for i in range(m):
        if rank == 0:
            x = batch[i]  # type: ignore[index]
        else:
            x = torch.empty(shape, device=device, dtype=dtype)
            dist.recv(x, src=rank - 1)
            x.requires_grad_()
        t0 = clock.begin()
        y = stage(x)
        clock.end(t0)
        if rank < p - 1:
            sends.append(dist.isend(y.detach().contiguous(), dst=rank + 1))
        inputs.append(x)
        outputs.append(y)
    for i in reversed(range(m)):
        if rank == p - 1:
            t0 = clock.begin()
            outputs[i].float().square().mean().backward()
        else:
            grad = torch.empty(shape, device=device, dtype=dtype)
            dist.recv(grad, src=rank + 1)
            t0 = clock.begin()
            outputs[i].backward(grad)
        clock.end(t0)
        if rank > 0:
            sends.append(dist.isend(inputs[i].grad.contiguous(), dst=rank - 1))
    for work in sends:
        work.wait()
    if p > 1:
        dist.all_reduce(flag)
    end = clock.now()
    sync(device)
    return {"busy_ms": clock.busy_ms(), "span_ms": clock.ms(start, end),
            "durations_ms": clock.durations_ms()}


def replay_gpipe(durations: Sequence[Sequence[float]]) -> list[float]:
    """Idle fraction of each stage when its measured ops are placed as early as GPipe allows.

    ``durations[s]`` lists stage ``s``'s ``m`` forward then ``m`` backward durations (backwards
    in the order run: last micro-batch first). Forward ``i`` on stage ``s`` waits for forward
    ``i`` on ``s-1``; backward ``i`` waits for backward ``i`` on ``s+1``; a stage runs one op at
    a time. Communication is taken as free. With equal durations this is exactly
    ``(p-1)/(m+p-1)``; with measured ones it shows what unequal stages or slow backwards do.
    """
    p, m = len(durations), len(durations[0]) // 2
    f_end = [[0.0] * m for _ in range(p)]
    b_end = [[0.0] * m for _ in range(p)]
    for s in range(p):
        t = 0.0
        for i in range(m):
            t = max(t, f_end[s - 1][i] if s else 0.0) + durations[s][i]
            f_end[s][i] = t
    for s in reversed(range(p)):
        t = f_end[s][m - 1]
        for j, i in enumerate(reversed(range(m))):
            t = max(t, b_end[s + 1][i] if s < p - 1 else 0.0) + durations[s][m + j]
            b_end[s][i] = t
    span = max(b_end[s][0] for s in range(p))
    return [1 - sum(durations[s]) / span for s in range(p)]


def _gather_durations(durations: list[float], device: torch.device) -> list[list[float]]:
    _, p = rank_world()
    mine = torch.tensor(durations, dtype=torch.float64, device=device)
    if p == 1:
        return [durations]
    every = [torch.empty_like(mine) for _ in range(p)]
    dist.all_gather(every, mine)
    return [t.tolist() for t in every]


def _median(values: Sequence[float]) -> float:
    return sorted(values)[len(values) // 2]


def pp_worker(n_layers: int, d_model: int, micro_batch: int, seq_len: int,
              n_microbatches: list[int], steps: int, dtype: str, seed: int,
              schedules: Sequence[str] = ("gpipe",)) -> pd.DataFrame:
    """One pipeline stage (this rank): idle fraction and activations held, per schedule and
    ``m``, beside the bubble formula and the schedule's count of micro-batches in flight.

    Two measured idle fractions: ``idle_fraction`` from wall clocks (CUDA events on a GPU), and
    ``idle_fraction_replay`` from each op's own duration placed by the schedule's dependencies.
    Activations: ``peak_in_flight`` (micro-batches held), ``peak_activation_bytes`` (bytes
    autograd saved for them, counted as saved) and on a GPU ``peak_memory_above_start``
    (``max_memory_allocated`` over the step minus what was allocated before it).
    """
    rank, p = rank_world()
    device, dt = rank_device(), DTYPES[dtype]
    model = build_pipeline_model(n_layers, d_model, seed)
    stage = nn.Sequential(*[model[i] for i in stage_layers(n_layers, p, rank)]).to(device, dt)
    del model
    shape = (micro_batch, seq_len, d_model)
    gen = torch.Generator().manual_seed(seed + 1)
    rows = []
    for schedule, m in [(s, m) for m in n_microbatches for s in schedules]:
        batch = torch.randn((m, *shape), generator=gen).to(device, dt) if rank == 0 else None
        samples, replays, above = [], [], []
        for step in range(steps + 1):  # step 0 warms up (allocator, NCCL channels)
            stage.zero_grad(set_to_none=True)
            before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
            reset_peak(device)
            try:
                out = pipeline_step(stage, batch, m, shape, device, dt, schedule)
            except torch.OutOfMemoryError:
                if p > 1:  # the other stages wait on this one: let the runner's timeout act
                    raise
                break
            every = _gather_durations(out["durations_ms"], device)  # all stages' ops
            if step:
                samples.append(out)
                replays.append(every)
                above.append(peak_bytes(device) - before if device.type == "cuda" else 0)
        base = {"schedule": schedule, "p": p, "m": m, "n_layers": n_layers,
                "d_model": d_model, "micro_batch": micro_batch, "seq_len": seq_len,
                "dtype": dtype}
        if len(samples) < steps:  # one stage holds all m micro-batches' activations: OOM
            rows.append({**base, "metric": "idle_fraction", "value": math.nan, "unit": "",
                         "source": "measured", "status": "oom"})
            batch = None
            torch.cuda.empty_cache()
            continue
        rows += [{**base, "metric": k, "value": float(v), "unit": u, "source": src}
                 for k, v, u, src in _pp_values(samples, replays, p, m, rank, schedule, len(stage))]
        if device.type == "cuda":
            rows += [{**base, "metric": "peak_memory", "value": peak_bytes(device) / 2**30,
                      "unit": "GiB", "source": "measured"},
                     {**base, "metric": "peak_memory_above_start", "value": max(above) / 2**30,
                      "unit": "GiB", "source": "measured"}]
    return pd.DataFrame(rows)


def _pp_values(samples: list[dict], replays: list[list[list[float]]], p: int, m: int, rank: int,
               schedule: str, n_stage_layers: int) -> list[tuple[str, float, str, str]]:
    durs = [d for s in samples for d in s["durations_ms"]]
    order = schedule_order(schedule, p, rank, m)
    fwd = [d for s in samples for (k, _), d in zip(order, s["durations_ms"], strict=True)
           if k == "F"]
    bwd = [d for s in samples for (k, _), d in zip(order, s["durations_ms"], strict=True)
           if k == "B"]
    held = in_flight(order)
    # each op's median over the steps, then one replay: one slow step (another job on the
    # core) moves a median, not the schedule
    typical = [[_median(col) for col in zip(*[r[s] for r in replays], strict=True)]
               for s in range(p)]
    one = _median([s["microbatch_activation_bytes"] for s in samples])
    return [
        ("idle_fraction", _median([1 - s["busy_ms"] / s["span_ms"] for s in samples]), "",
         "measured"),
        ("idle_fraction", bubble_fraction(p, m), "", "predicted"),
        ("idle_fraction_replay", replay_schedule(typical, schedule)[rank], "", "measured"),
        ("busy_ms", _median([s["busy_ms"] for s in samples]), "ms", "measured"),
        ("step_ms", _median([s["span_ms"] for s in samples]), "ms", "measured"),
        ("forward_ms", _median(fwd), "ms", "measured"),
        ("backward_ms", _median(bwd), "ms", "measured"),
        ("op_ms_spread", (max(durs) - min(durs)) / _median(durs), "", "measured"),
        # CPU: thread CPU time over wall time of the same ops; below 1 means the OS parked
        # this rank mid-op (other jobs on the cores). GPU: 1 by construction.
        ("cpu_share_of_busy", _median([sum(s["durations_ms"]) / s["busy_ms"]
                                       for s in samples]), "", "measured"),
        ("stage_layers", n_stage_layers, "", "measured"),
        ("peak_in_flight", max(s["peak_in_flight"] for s in samples), "", "measured"),
        ("peak_in_flight", held, "", "predicted"),
        ("peak_activation_bytes", max(s["peak_activation_bytes"] for s in samples), "B",
         "measured"),
        # the schedule's count times one micro-batch's measured bytes
        ("peak_activation_bytes", held * one, "B", "predicted"),
    ]


def pipeline_reference_grads(n_layers: int, d_model: int, batch: torch.Tensor,
                             seed: int) -> list[torch.Tensor]:
    """Single-device gradients of the loss GPipe computes (sum over micro-batches)."""
    model = build_pipeline_model(n_layers, d_model, seed).to(batch.dtype)
    for micro in batch:
        model(micro).float().square().mean().backward()
    return [p.grad for p in model.parameters()]


def _torch_gpipe_grads(stage: nn.Module, batch: torch.Tensor) -> list[torch.Tensor]:
    """The same step through PyTorch's own ``torch.distributed.pipelining.ScheduleGPipe``."""
    # here, not at the top: a second of imports that only this cross-check needs
    from torch.distributed.pipelining import PipelineStage, ScheduleGPipe

    rank, p = rank_world()
    m = batch.shape[0]
    pipe_stage = PipelineStage(stage, rank, p, batch.device)
    # the schedule divides gradients by m (a mean over micro-batches); ours sums, so scale back
    sched = ScheduleGPipe(pipe_stage, n_microbatches=m,
                          loss_fn=lambda out, _target: out.float().square().mean() * m)
    whole = batch.reshape(-1, *batch.shape[2:])          # (m * micro_batch, seq_len, d_model)
    if rank == 0 and p == 1:
        sched.step(whole, target=torch.zeros_like(whole))
    elif rank == 0:
        sched.step(whole)
    elif rank == p - 1:
        sched.step(target=torch.zeros_like(whole))
    else:
        sched.step()
    return [q.grad for q in stage.parameters()]


def pp_grad_check_worker(n_layers: int, d_model: int, micro_batch: int, seq_len: int, m: int,
                         seed: int) -> pd.DataFrame:
    """GPipe and 1F1B across the ranks must give one device's gradients, and GPipe PyTorch's
    GPipe's."""
    rank, p = rank_world()
    model = build_pipeline_model(n_layers, d_model, seed)
    mine = list(stage_layers(n_layers, p, rank))
    stage = nn.Sequential(*[model[i] for i in mine])
    twin, ofob = copy.deepcopy(stage), copy.deepcopy(stage)
    gen = torch.Generator().manual_seed(seed + 1)
    batch = torch.randn(m, micro_batch, seq_len, d_model, generator=gen)
    gpipe_step(stage, batch if rank == 0 else None, m, tuple(batch.shape[1:]),
               torch.device("cpu"), torch.float32)
    ref = pipeline_reference_grads(n_layers, d_model, batch, seed)
    per_layer = len(list(model[0].parameters()))
    ref_mine = ref[mine[0] * per_layer:(mine[-1] + 1) * per_layer] if mine else []
    ours = [q.grad for q in stage.parameters()]

    def gap(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
        return max((float((x - y).abs().max()) for x, y in zip(a, b, strict=True)), default=0.0)

    pipeline_step(ofob, batch if rank == 0 else None, m, tuple(batch.shape[1:]),
                  torch.device("cpu"), torch.float32, "1f1b")
    rows = [("max_abs_err_grad", gap(ours, ref_mine)),
            ("max_abs_err_grad_1f1b", gap([q.grad for q in ofob.parameters()], ref_mine)),
            ("max_abs_err_vs_torch_pipelining", gap(ours, _torch_gpipe_grads(twin, batch)))]
    return pd.DataFrame([{"p": p, "m": m, "metric": k, "value": v, "unit": "",
                          "source": "measured"} for k, v in rows])
