"""Notebook 06's experiments: each launches its worker on every rank present (every GPU with
NCCL, or ``n_ranks`` gloo processes on a CPU) and returns the ranks' rows."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
import torch

from workbook import runner
from workbook.config import WorkbookError, check_choice, check_range
from workbook.model_parallel.comm import DTYPES
from workbook.model_parallel.schedules import SCHEDULES
from workbook.registry import Experiment


def world_size(n_ranks: int) -> tuple[int, str]:
    """(ranks, backend): every GPU present with NCCL, else ``n_ranks`` gloo CPU processes.

    ``n_ranks=0`` means "all that is present" (2 on a CPU). More ranks than this machine has
    GPUs run as gloo processes on its CPU (the rows say ``backend='gloo'``): the distributed
    logic is the same, only the device differs.
    """
    check_range("n_ranks", n_ranks, 0, 1024)
    if not float(n_ranks).is_integer():
        raise WorkbookError(f"n_ranks={n_ranks!r} must be a whole number: 0 (all) or more")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus and n_ranks <= gpus:
        return (n_ranks or gpus), "nccl"
    return (n_ranks or 2), "gloo"


def degrees(world: int, divides: int | None = None) -> list[int]:
    """1, 2, 4, ... up to ``world``, and ``world`` itself; only those dividing ``divides``."""
    out = sorted({2**i for i in range(world.bit_length()) if 2**i <= world} | {world})
    return [d for d in out if divides is None or divides % d == 0]


def _launch(func: str, kwargs: dict, nprocs: int, backend: str, timeout_s: int) -> pd.DataFrame:
    """``func`` (``module:function`` inside this package) on ``nprocs`` ranks."""
    rows = runner.call_distributed(f"workbook.model_parallel.{func}", kwargs, nprocs=nprocs,
                                   backend=backend, timeout_s=timeout_s)
    return rows.assign(world=nprocs, backend=backend)


@dataclass(frozen=True)
class TPConfig:
    d_model: int
    n_heads: int
    d_ff: int
    batch: int
    seq_len: int
    dtype: str
    repeats: int
    n_ranks: int = 0             # 0: every GPU present (2 gloo ranks on a CPU)
    all_degrees: bool = True     # also run tp = 1, 2, 4, ... below the world size

    def __post_init__(self) -> None:
        check_range("d_model", self.d_model, 16, 32768)
        check_range("n_heads", self.n_heads, 1, 256)
        check_range("d_ff", self.d_ff, 16, 131072)
        check_range("batch", self.batch, 1, 256)
        check_range("seq_len", self.seq_len, 1, 32768)
        check_choice("dtype", self.dtype, list(DTYPES))
        check_range("repeats", self.repeats, 0, 100)
        check_range("n_ranks", self.n_ranks, 0, 64)
        if self.d_model % self.n_heads:
            raise WorkbookError(f"n_heads={self.n_heads} must divide d_model={self.d_model}")


def run_tp(cfg: TPConfig, seed: int) -> pd.DataFrame:
    world, backend = world_size(cfg.n_ranks)
    kwargs = {k: getattr(cfg, k) for k in ("d_model", "n_heads", "d_ff", "batch", "seq_len",
                                           "dtype", "repeats")}
    usable = degrees(world, math.gcd(cfg.n_heads, cfg.d_ff))
    if cfg.n_ranks and world not in usable:
        raise WorkbookError(f"tensor parallelism over {world} ranks needs n_heads and d_ff "
                            f"divisible by {world}; allowed n_ranks: {usable}")
    # with all GPUs (n_ranks=0) on an odd count, the largest degree that divides the heads
    tps = usable if cfg.all_degrees else usable[-1:]
    frames = [_launch("tensor:tp_worker", {**kwargs, "seed": seed}, t, backend, 300) for t in tps]
    return pd.concat(frames, ignore_index=True)


@dataclass(frozen=True)
class PPConfig:
    n_layers: int
    d_model: int
    micro_batch: int
    seq_len: int
    n_microbatches: tuple[int, ...]
    steps: int
    dtype: str
    n_ranks: int = 0
    all_degrees: bool = True     # also p = 2, 4, ... below the world size
    grad_check: bool = True      # one run checking GPipe's gradients against one device
    schedules: tuple[str, ...] = SCHEDULES  # GPipe and 1F1B, same p and m

    def __post_init__(self) -> None:
        check_range("n_layers", self.n_layers, 1, 512)
        check_range("d_model", self.d_model, 8, 32768)
        check_range("micro_batch", self.micro_batch, 1, 1024)
        check_range("seq_len", self.seq_len, 1, 32768)
        for m in self.n_microbatches:
            check_range("n_microbatches", m, 1, 1024)
        check_range("steps", self.steps, 1, 100)
        check_choice("dtype", self.dtype, list(DTYPES))
        check_range("n_ranks", self.n_ranks, 0, 64)
        if not self.schedules:
            raise WorkbookError(f"schedules=() measures nothing; allowed: any of {SCHEDULES}")
        for sched in self.schedules:
            check_choice("schedule", sched, SCHEDULES)


def run_pp(cfg: PPConfig, seed: int) -> pd.DataFrame:
    world, backend = world_size(cfg.n_ranks)
    if cfg.n_layers < world:
        raise WorkbookError(f"n_layers={cfg.n_layers} cannot fill {world} stages; allowed: "
                            f">= {world}")
    kwargs = {"n_layers": cfg.n_layers, "d_model": cfg.d_model, "micro_batch": cfg.micro_batch,
              "seq_len": cfg.seq_len, "n_microbatches": list(cfg.n_microbatches),
              "steps": cfg.steps, "dtype": cfg.dtype, "seed": seed,
              "schedules": list(cfg.schedules)}
    ps = [p for p in degrees(world) if p > 1 or world == 1] if cfg.all_degrees else [world]
    frames = [_launch("pipeline:pp_worker", kwargs, p, backend, 300) for p in ps]
    if cfg.grad_check and backend == "gloo":
        check = {"n_layers": cfg.n_layers, "d_model": cfg.d_model, "micro_batch": 2,
                 "seq_len": 4, "m": 3, "seed": seed}
        frames.append(_launch("pipeline:pp_grad_check_worker", check, world, backend, 300))
    return pd.concat(frames, ignore_index=True)


@dataclass(frozen=True)
class EPConfig:
    experts_per_rank: int
    d_model: int
    d_ff: int
    tokens_per_rank: int
    top_k: int
    capacity_factors: tuple[float, ...]
    skews: tuple[float, ...]
    dtype: str
    repeats: int
    n_ranks: int = 0

    def __post_init__(self) -> None:
        check_range("experts_per_rank", self.experts_per_rank, 1, 64)
        check_range("d_model", self.d_model, 8, 32768)
        check_range("d_ff", self.d_ff, 8, 131072)
        check_range("tokens_per_rank", self.tokens_per_rank, 1, 1_000_000)
        check_range("top_k", self.top_k, 1, 8)
        for cf in self.capacity_factors:
            check_range("capacity_factor", cf, 0.1, 64.0)
        for s in self.skews:
            check_range("skew", s, 0.0, 20.0)
        check_choice("dtype", self.dtype, list(DTYPES))
        check_range("repeats", self.repeats, 0, 100)
        check_range("n_ranks", self.n_ranks, 0, 64)


def run_ep(cfg: EPConfig, seed: int) -> pd.DataFrame:
    world, backend = world_size(cfg.n_ranks)
    kwargs = {"experts_per_rank": cfg.experts_per_rank, "d_model": cfg.d_model,
              "d_ff": cfg.d_ff, "tokens_per_rank": cfg.tokens_per_rank, "top_k": cfg.top_k,
              "capacity_factors": list(cfg.capacity_factors), "skews": list(cfg.skews),
              "dtype": cfg.dtype, "seed": seed, "repeats": cfg.repeats}
    return _launch("expert:ep_worker", kwargs, world, backend, 300)


def parse_layout(text: str) -> tuple[int, int, int]:
    """``"2x2x2"`` -> (dp, tp, pp); one line naming the form otherwise."""
    parts = str(text).lower().replace("×", "x").split("x")
    if len(parts) != 3 or not all(p.isdigit() and 1 <= int(p) <= 64 for p in parts):
        raise WorkbookError(f"layout={text!r} is not allowed; allowed: 'DPxTPxPP', each 1 to "
                            "64, e.g. '1x2x2'")
    dp, tp, pp = (int(p) for p in parts)
    return dp, tp, pp


@dataclass(frozen=True)
class ComposedConfig:
    layouts: tuple[str, ...]     # 'DPxTPxPP', all with the same product (the world size)
    n_layers: int
    d_model: int
    micro_batch: int
    seq_len: int
    m: int
    schedule: str
    dtype: str
    steps: int = 2               # the last step is the one reported (the first connects)

    def __post_init__(self) -> None:
        if not self.layouts:
            raise WorkbookError("layouts=() measures nothing; allowed: e.g. ('1x2x2',)")
        worlds = {math.prod(parse_layout(t)) for t in self.layouts}
        if len(worlds) != 1 or max(worlds) > 64:
            raise WorkbookError(f"layouts={self.layouts} must share one world size of at most "
                                "64 ranks; allowed: e.g. ('1x2x2', '2x1x2')")
        check_range("n_layers", self.n_layers, 1, 256)
        check_range("d_model", self.d_model, 8, 16384)
        check_range("micro_batch", self.micro_batch, 1, 256)
        check_range("seq_len", self.seq_len, 1, 16384)
        check_range("m", self.m, 1, 256)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("dtype", self.dtype, list(DTYPES))
        check_range("steps", self.steps, 1, 20)
        for t in self.layouts:
            if self.n_layers < parse_layout(t)[2]:
                raise WorkbookError(f"n_layers={self.n_layers} cannot fill the {t} layout's "
                                    f"stages; allowed: >= {parse_layout(t)[2]}")


def run_composed(cfg: ComposedConfig, seed: int) -> pd.DataFrame:
    """Every layout on ``dp·tp·pp`` ranks: NCCL where this machine has that many GPUs, else
    gloo processes on its CPU (the rows' ``backend`` says which)."""
    world = math.prod(parse_layout(cfg.layouts[0]))
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    backend = "nccl" if gpus >= world else "gloo"
    kwargs = {"layouts": [list(parse_layout(t)) for t in cfg.layouts],
              "n_layers": cfg.n_layers, "d_model": cfg.d_model, "micro_batch": cfg.micro_batch,
              "seq_len": cfg.seq_len, "m": cfg.m, "schedule": cfg.schedule, "dtype": cfg.dtype,
              "seed": seed, "steps": cfg.steps}
    return _launch("composed:composed_worker", kwargs, world, backend, 600)


TP_PRESETS = {
    "small": TPConfig(d_model=64, n_heads=4, d_ff=256, batch=2, seq_len=16, dtype="fp32",
                      repeats=3, n_ranks=2, all_degrees=False),
    "full": TPConfig(d_model=4096, n_heads=32, d_ff=16384, batch=4, seq_len=2048,
                     dtype="bf16", repeats=10),
}
PP_PRESETS = {
    # sized so one micro-batch forward takes a few ms on one CPU thread: compute dominates
    # send/recv and the Python overhead, so the measured idle share follows the formula
    "small": PPConfig(n_layers=2, d_model=256, micro_batch=4, seq_len=64,
                      n_microbatches=(1, 2, 4, 8), steps=3, dtype="fp32", n_ranks=2,
                      grad_check=False),  # tests/test_model_parallel.py checks gradients
    # 16 layers of d_model 2048: ~0.4 ms per layer per micro-batch forward on an H100, so even
    # at p=8 (2 layers a stage) an op is far longer than a send; m=16 fits one 80 GB GPU at p=1
    "full": PPConfig(n_layers=16, d_model=2048, micro_batch=4, seq_len=1024,
                     n_microbatches=(1, 2, 4, 8, 16), steps=4, dtype="bf16",
                     grad_check=False),
}
EP_PRESETS = {
    "small": EPConfig(experts_per_rank=2, d_model=32, d_ff=64, tokens_per_rank=512, top_k=2,
                      capacity_factors=(0.5, 1.0, 1.25, 2.0), skews=(0.0, 2.0), dtype="fp32",
                      repeats=0, n_ranks=2),
    "full": EPConfig(experts_per_rank=4, d_model=2048, d_ff=4096, tokens_per_rank=16384,
                     top_k=2, capacity_factors=(0.5, 1.0, 1.25, 2.0),
                     skews=(0.0, 1.0, 2.0, 4.0), dtype="bf16", repeats=5),
}

COMPOSED_PRESETS = {
    # 4 gloo ranks: each pair of dimensions composed (a 2x2x2 grid needs 8 processes)
    "small": ComposedConfig(layouts=("1x2x2", "2x2x1", "2x1x2"), n_layers=4, d_model=32,
                            micro_batch=2, seq_len=8, m=4, schedule="1f1b", dtype="fp32"),
    # 8 ranks, all three at once: NCCL on an 8-GPU machine, else 8 gloo CPU processes
    "full": ComposedConfig(layouts=("2x2x2", "1x2x4", "2x4x1", "4x1x2"), n_layers=8,
                           d_model=256, micro_batch=2, seq_len=128, m=8, schedule="1f1b",
                           dtype="fp32"),
}

EXPERIMENTS = [
    Experiment(name="tensor_parallel", notebook="06_model_parallel", dispatches=True, run=run_tp,
               summary="Megatron column/row-parallel block: equality, all-reduces, step time",
               presets=TP_PRESETS, min_gpus={"small": 0, "full": 1}, timeout_s=1200),
    Experiment(name="pipeline_bubble", notebook="06_model_parallel", dispatches=True, run=run_pp,
               summary="GPipe and 1F1B: idle fraction vs (p-1)/(m+p-1), activations held",
               presets=PP_PRESETS, min_gpus={"small": 0, "full": 1}, timeout_s=1200,
               # full: 06's H200 Run All ran all five m in 18.5 s with GPipe alone; 1F1B
               # beside it doubles the steps
               typical_s={"full": 35},
               panel_start={"full": {"n_microbatches": (4,)}}, panel_s={"full": 12}),
    Experiment(name="expert_parallel", notebook="06_model_parallel", dispatches=True, run=run_ep,
               summary="MoE all-to-all: tokens per expert, imbalance, capacity drops, bytes",
               presets=EP_PRESETS, min_gpus={"small": 0, "full": 1}, timeout_s=900),
    Experiment(name="parallel_3d", notebook="06_model_parallel", dispatches=True, run=run_composed,
               summary="DP x TP x PP on one grid: equal to one process, bytes per dimension",
               presets=COMPOSED_PRESETS, min_gpus={"small": 0, "full": 1}, timeout_s=900,
               typical_s={"small": 20, "full": 60}),
]
