"""The FLOPs experiments (notebook 02): the MFU benchmark, the width sweep, the loss kernel."""

from __future__ import annotations

import dataclasses
import gc
import itertools
import math
import time
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F

from workbook.config import WorkbookError, check_choice, check_range
from workbook.flops.energy import EnergyMeter, load_nvml
from workbook.flops.formulas import matmul_params, step_flops
from workbook.flops.runs import parse_run
from workbook.flops.step import make_train_step, step_rows
from workbook.hardware import datasheet, torch_device
from workbook.model import ModelConfig
from workbook.profiling import time_ms
from workbook.registry import Experiment

__all__ = ["MfuConfig", "BEST_OPTIONS", "MFU_PRESETS", "QUICK_RUNS", "quick_config",
           "run_mfu_benchmark", "run_seconds_row", "release_previous_run", "FlopsSweepConfig",
           "FLOPS_PRESETS",
           "run_flops_sweep", "LossKernelConfig", "LOSS_KERNEL_PRESETS", "run_loss_kernel",
           "EnergyConfig", "ENERGY_PRESETS", "run_energy_per_token", "EXPERIMENTS"]


@dataclass(frozen=True)
class MfuConfig:
    """One model shape, one training step timed per run ("mode:attention[:options]", see
    :class:`RunSpec`)."""

    n_layers: int
    n_heads: int
    d_model: int
    vocab_size: int
    seq_len: int
    batch_size: int
    runs: tuple[str, ...] = ("eager:sdpa", "compiled:sdpa")
    repeats: int = 10
    breakdown: bool = True       # GPU time per kernel family (torch.profiler), GPU only

    def __post_init__(self) -> None:
        check_range("batch_size", self.batch_size, 1, 1024)
        check_range("repeats", self.repeats, 1, 200)
        if not self.runs:
            raise WorkbookError("runs is empty; give at least one, e.g. ('eager:sdpa',)")
        for run in self.runs:
            parse_run(run)
        self.model()  # range checks of the shape

    def model(self) -> ModelConfig:
        return ModelConfig(vocab_size=self.vocab_size, d_model=self.d_model,
                           n_layers=self.n_layers, n_heads=self.n_heads, seq_len=self.seq_len)


# The options that made the compiled H100 step clearly faster (BF16 weights with FP32 masters, a
# compiled optimizer step, tabulated rotary angles); see data/results/mfu_benchmark.csv. On top:
# "triton_ce" (-0.4 to -0.7 ms) and then "fused_mlp" (-0.1 to -0.4 ms), the ladder's last rungs.
BEST_OPTIONS = "bf16+compiled_opt+rope_table"

MFU_PRESETS = {
    "small": MfuConfig(n_layers=2, n_heads=4, d_model=64, vocab_size=512, seq_len=64,
                       batch_size=4, runs=("eager:sdpa", "eager:causal", "eager:causal:bf16"),
                       repeats=3),
    # nanoGPT's benchmark shape (bench.py): GPT-2 small, 1024 tokens, batch 12, bf16.
    # eager:causal is the control (eager sdpa already skips the mask, so it must match).
    # The runs in the order of the notebook's ladder: each adds one change to the one before.
    "full": MfuConfig(n_layers=12, n_heads=12, d_model=768, vocab_size=50304, seq_len=1024,
                      batch_size=12, runs=(
                          "eager:sdpa", "eager:causal", "compiled:sdpa", "compiled:causal",
                          "compiled:cudnn", "graphs:causal", "compiled:causal:bf16",
                          "graphs:causal:bf16", "graphs:causal:bf16+compiled_opt",
                          "graphs:causal:" + BEST_OPTIONS,
                          "graphs:causal:" + BEST_OPTIONS + "+triton_ce",
                          "graphs:flash:" + BEST_OPTIONS,
                          "graphs_tuned:causal:" + BEST_OPTIONS,
                          "autotune_graphs:causal:" + BEST_OPTIONS,
                          "step_graph:causal:" + BEST_OPTIONS,
                          "step_graph:causal:" + BEST_OPTIONS + "+triton_ce",
                          "step_graph:causal:" + BEST_OPTIONS + "+fused_mlp+triton_ce",
                          "step_graph:flash:" + BEST_OPTIONS + "+fused_mlp+triton_ce",
                          "step_graph:causal:" + BEST_OPTIONS + "+fused_mlp",
                          "step_graph:causal:" + BEST_OPTIONS + "+fused_proj"),
                      repeats=20),
}


# What the notebook's button runs on a GPU: the runs that tell the story in about two minutes
# (max-autotune alone can compile for more than four).
QUICK_RUNS = ("eager:sdpa", "compiled:sdpa", "graphs:causal",
              "step_graph:causal:" + BEST_OPTIONS,
              "step_graph:causal:" + BEST_OPTIONS + "+triton_ce")


def quick_config(preset: str) -> MfuConfig:
    """The preset's shape with :data:`QUICK_RUNS` (the small preset as it is)."""
    check_choice("preset", preset, MFU_PRESETS)
    cfg = MFU_PRESETS[preset]
    return cfg if preset == "small" else dataclasses.replace(cfg, runs=QUICK_RUNS)


def run_mfu_benchmark(cfg: MfuConfig, seed: int) -> pd.DataFrame:
    """Achieved TFLOP/s and MFU of one training step per run, eager next to compiled."""
    frames = []
    for i, run in enumerate(cfg.runs):
        if i:
            release_previous_run()
        start = time.monotonic()
        frame = step_rows(cfg.model(), cfg.batch_size, run, seed, cfg.repeats,
                          count=i == 0, breakdown=cfg.breakdown)
        frames += [frame, run_seconds_row(frame, time.monotonic() - start)]
    return pd.concat(frames, ignore_index=True)


def run_seconds_row(frame: pd.DataFrame, seconds: float) -> pd.DataFrame:
    """The whole run's wall seconds (building, compiling, autotuning, warming up, timing,
    profiling) as a ``run_seconds`` row with the run's columns: which of the benchmark's runs
    its minutes go to (compilation, not the timed steps, is most of them)."""
    first = frame.iloc[0].to_dict()
    return pd.DataFrame([{**first, "metric": "run_seconds", "value": seconds, "unit": "s",
                          "source": "measured", "status": "ok", "error": ""}])


def release_previous_run() -> None:
    """Drop what an earlier run of this process still holds (torch.compile's caches keep its
    model alive, CUDA graphs their pools), so that the next run's peak memory is its own."""
    torch._dynamo.reset()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass(frozen=True)
class FlopsSweepConfig:
    """Several model widths at one depth, eager: how FLOP/s and MFU grow with size."""

    d_models: tuple[int, ...]
    n_layers: int
    head_dim: int
    vocab_size: int
    seq_len: int
    batch_size: int
    repeats: int = 5

    def __post_init__(self) -> None:
        check_range("batch_size", self.batch_size, 1, 1024)
        check_range("repeats", self.repeats, 1, 200)
        check_range("head_dim", self.head_dim, 8, 256)
        check_range("n_layers", self.n_layers, 1, 256)
        check_range("vocab_size", self.vocab_size, 16, 262144)
        check_range("seq_len", self.seq_len, 2, 131072)
        for d in self.d_models:
            check_range("d_model", d, self.head_dim, 16384)
            if d % self.head_dim:
                raise WorkbookError(f"d_model={d} must be a multiple of head_dim={self.head_dim}")

    def shapes(self) -> list[ModelConfig]:
        return [ModelConfig(vocab_size=self.vocab_size, d_model=d, n_layers=self.n_layers,
                            n_heads=d // self.head_dim, seq_len=self.seq_len)
                for d in self.d_models]


FLOPS_PRESETS = {
    "small": FlopsSweepConfig(d_models=(32, 64, 128), n_layers=2, head_dim=16, vocab_size=512,
                              seq_len=64, batch_size=4, repeats=3),
    "full": FlopsSweepConfig(d_models=(256, 512, 768, 1024, 1536), n_layers=12,
                             head_dim=64, vocab_size=50304, seq_len=1024, batch_size=8),
}


def run_flops_sweep(cfg: FlopsSweepConfig, seed: int) -> pd.DataFrame:
    """Predicted vs counted FLOPs and achieved TFLOP/s per model width (eager)."""
    frames = [step_rows(shape, cfg.batch_size, "eager", seed, cfg.repeats)
              for shape in cfg.shapes()]
    return pd.concat(frames, ignore_index=True)


@dataclass(frozen=True)
class LossKernelConfig:
    """The loss alone, forward and backward over a (rows, vocab) block of logits: PyTorch's
    cross-entropy (compiled on a GPU) against workbook.flops.fused_ce's kernel per tile shape."""

    rows: int
    vocab_size: int
    blocks: tuple[int, ...] = (4096, 8192)
    warps: tuple[int, ...] = (16, 32)
    per_sm: tuple[int, ...] = (0, 4)          # programs per SM; 0: one program per row
    evict: tuple[bool, ...] = (False, True)   # L2 eviction hints on the two passes
    repeats: int = 20

    def __post_init__(self) -> None:
        check_range("rows", self.rows, 1, 1 << 20)
        check_range("vocab_size", self.vocab_size, 2, 1 << 20)
        check_range("repeats", self.repeats, 1, 200)
        for block in self.blocks:
            if not (16 <= block <= 65536 and block & (block - 1) == 0):
                raise WorkbookError(f"block={block!r}: allowed powers of two from 16 to 65536")
        for warps in self.warps:
            check_choice("warps", warps, (1, 2, 4, 8, 16, 32))
        for per_sm in self.per_sm:
            check_range("per_sm", per_sm, 0, 64)


LOSS_KERNEL_PRESETS = {
    "small": LossKernelConfig(rows=256, vocab_size=512, blocks=(64, 256), warps=(4,),
                              per_sm=(0,), evict=(False,), repeats=3),
    # nanoGPT's step: 12 x 1024 tokens, 50 304 words, BF16 logits (1.24 GB).
    "full": LossKernelConfig(rows=12 * 1024, vocab_size=50304),
}


def run_loss_kernel(cfg: LossKernelConfig, seed: int) -> pd.DataFrame:
    """Milliseconds of the loss's forward + backward over the logits (the output layer's
    matmuls excluded), next to the bytes each must move: PyTorch's cross-entropy reads the
    logits twice and writes their gradient once; workbook.flops.fused_ce's kernel reads them
    once (its second pass over a row mostly hits L2) and writes the gradient over them."""
    from workbook.flops.fused_ce import (  # imports triton: only here
        softmax_grad_,
        softmax_grad_reference_,
        why_not,
    )

    device = torch_device()
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    gen = torch.Generator(device).manual_seed(seed)
    base = {"rows": cfg.rows, "vocab_size": cfg.vocab_size, "dtype": str(dtype).split(".")[-1]}
    logits_bytes = cfg.rows * cfg.vocab_size * (2 if dtype == torch.bfloat16 else 4)
    try:
        logits = (2 * torch.randn(cfg.rows, cfg.vocab_size, generator=gen, device=device)
                  ).to(dtype)
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        return pd.DataFrame([{**base, "variant": "all", "metric": "ms", "value": math.nan,
                              "unit": "ms", "status": "oom"}])
    targets = torch.randint(0, cfg.vocab_size, (cfg.rows,), generator=gen, device=device)
    n_valid = torch.tensor(cfg.rows, device=device)

    def torch_ce():
        leaf = logits.detach().requires_grad_(True)
        F.cross_entropy(leaf.float(), targets).backward()

    variants = [("torch_ce", {}, 3, torch.compile(torch_ce) if device.type == "cuda"
                 else torch_ce)]
    work = logits.clone()
    if why_not(work) is None:
        for block, warps, per_sm, evict in itertools.product(cfg.blocks, cfg.warps, cfg.per_sm,
                                                             cfg.evict):
            variants.append(("triton_ce", {"block": block, "warps": warps, "per_sm": per_sm,
                                           "evict": evict}, 2,
                             lambda b=block, w=warps, p=per_sm, e=evict: softmax_grad_(
                                 work, targets, n_valid, block=b, num_warps=w, per_sm=p,
                                 evict=e)))
    else:
        variants.append(("pytorch_reference", {}, 2,
                         lambda: softmax_grad_reference_(work, targets, n_valid)))
    rows = []
    for name, knobs, passes, fn in variants:
        row = {**base, "variant": name, "block": knobs.get("block"),
               "warps": knobs.get("warps"), "per_sm": knobs.get("per_sm"),
               "evict": knobs.get("evict"), "passes": passes}
        try:
            ms = time_ms(fn, warmup=3, repeats=cfg.repeats, device=device)
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            rows.append({**row, "metric": "ms", "value": math.nan, "unit": "ms",
                         "status": "oom"})
            continue
        moved = passes * logits_bytes
        rows += [{**row, "metric": "ms", "value": ms, "unit": "ms"},
                 {**row, "metric": "bytes_moved", "value": moved, "unit": "B",
                  "source": "predicted"},
                 {**row, "metric": "achieved_gbps", "value": moved / (ms * 1e-3) / 1e9,
                  "unit": "GB/s"}]
    frame = pd.DataFrame(rows)
    frame["source"] = frame.get("source", pd.Series(index=frame.index)).fillna("measured")
    frame["status"] = frame.get("status", pd.Series(index=frame.index)).fillna("ok")
    return frame


@dataclass(frozen=True)
class EnergyConfig:
    """Training steps run back to back for ``windows`` stretches of ``seconds`` each, the GPU's
    energy read from NVML around every stretch: J per token, average W, tokens/s, MFU."""

    n_layers: int
    n_heads: int
    d_model: int
    vocab_size: int
    seq_len: int
    batch_size: int
    run: str = "eager:causal"
    windows: int = 3
    seconds: float = 10.0     # length of each measured stretch
    idle_s: float = 1.0       # the idle GPU's power is sampled this long first

    def __post_init__(self) -> None:
        check_range("batch_size", self.batch_size, 1, 1024)
        check_range("windows", self.windows, 1, 50)
        check_range("seconds", self.seconds, 0.1, 300.0)
        check_range("idle_s", self.idle_s, 0.0, 60.0)
        parse_run(self.run)
        self.model()

    def model(self) -> ModelConfig:
        return ModelConfig(vocab_size=self.vocab_size, d_model=self.d_model,
                           n_layers=self.n_layers, n_heads=self.n_heads, seq_len=self.seq_len)


ENERGY_PRESETS = {
    "small": EnergyConfig(n_layers=2, n_heads=4, d_model=64, vocab_size=512, seq_len=64,
                          batch_size=4, run="eager:causal", windows=2, seconds=0.5, idle_s=0.0),
    # nanoGPT's shape (the MFU benchmark's), compiled with CUDA graphs and the options that
    # made it fast: a realistic, well-used GPU, whose power and MFU go into the GPT-3 estimate.
    "full": EnergyConfig(n_layers=12, n_heads=12, d_model=768, vocab_size=50304, seq_len=1024,
                         batch_size=12, run="graphs:causal:" + BEST_OPTIONS, windows=3,
                         seconds=15.0, idle_s=2.0),
}

NO_NVML = "no NVML here (no NVIDIA GPU, driver or nvidia-ml-py): tokens/s only"


def run_energy_per_token(cfg: EnergyConfig, seed: int) -> pd.DataFrame:
    """Joules per training token from the GPU's energy counter (NVML), next to tokens/s and
    MFU of the same steps; on a machine without NVML the energy rows say so (``unsupported``)."""
    device = torch_device()
    spec, shape = parse_run(cfg.run), cfg.model()
    base = {**spec.columns(), "n_layers": cfg.n_layers, "n_heads": cfg.n_heads,
            "d_model": cfg.d_model, "vocab_size": cfg.vocab_size, "seq_len": cfg.seq_len,
            "batch_size": cfg.batch_size, "n_params": matmul_params(shape)}
    try:
        step, _ = make_train_step(shape, cfg.batch_size, spec, seed, device)
        for _ in range(3):
            step()   # compile, warm up
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        return pd.DataFrame([{**base, "metric": "joules_per_token", "value": math.nan,
                              "unit": "J/token", "source": "measured", "status": "oom"}])
    cuda = device.type == "cuda"
    nvml = load_nvml() if cuda else None
    meter = EnergyMeter(nvml, index=device.index or 0) if nvml is not None else None
    sheet = datasheet(torch.cuda.get_device_name(device)) if cuda else None
    rows = []
    if meter is not None and cfg.idle_s > 0:
        _sync(device)
        meter.start()
        time.sleep(cfg.idle_s)
        idle = meter.stop()
        rows.append({**base, "window": -1, "method": idle["method"], "metric": "idle_power_w",
                     "value": idle["watts"], "unit": "W"})
    tokens_per_step = cfg.batch_size * cfg.seq_len
    for window in range(cfg.windows):
        _sync(device)
        if meter is not None:
            meter.start()
        start, steps = time.perf_counter(), 0
        while True:
            step()
            steps += 1
            if not cuda or steps % 10 == 0:   # a sync now and then: the GPU never runs dry
                _sync(device)
                if time.perf_counter() - start >= cfg.seconds:
                    break
        seconds = time.perf_counter() - start
        tokens = steps * tokens_per_step
        # the window is part of a row's key, the step count is not (it varies run to run)
        row = {**base, "window": window}
        achieved = step_flops(shape, cfg.batch_size) * steps / seconds / 1e12
        rows += [{**row, "metric": "steps", "value": steps, "unit": "steps"},
                 {**row, "metric": "tokens_per_s", "value": tokens / seconds, "unit": "tokens/s"},
                 {**row, "metric": "achieved_tflops", "value": achieved, "unit": "TFLOP/s"}]
        if sheet is not None:
            rows.append({**row, "metric": "mfu_datasheet",
                         "value": 100 * achieved / sheet.tflops["bf16"], "unit": "%"})
        if meter is None:
            rows.append({**row, "metric": "joules_per_token", "value": math.nan,
                         "unit": "J/token", "status": "unsupported", "error": NO_NVML})
            continue
        used = meter.stop()
        row["method"] = used["method"]
        rows += [{**row, "metric": "joules_per_token", "value": used["joules"] / tokens,
                  "unit": "J/token"},
                 {**row, "metric": "avg_power_w", "value": used["joules"] / seconds,
                  "unit": "W"},
                 {**row, "metric": "energy_j", "value": used["joules"], "unit": "J"}]
    frame = pd.DataFrame(rows)
    frame["source"] = "measured"
    frame["status"] = frame.get("status", pd.Series(index=frame.index)).fillna("ok")
    return frame


def _sync(device: torch.device) -> None:
    """Wait for the GPU's queued work (a no-op on a CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


EXPERIMENTS = [
    Experiment(name="loss_kernel", notebook="02_flops", run=run_loss_kernel,
               summary="the loss's forward+backward over the logits: F.cross_entropy vs a "
                       "Triton kernel that writes the gradient in the forward",
               presets=LOSS_KERNEL_PRESETS, min_gpus={"small": 0, "full": 1}, timeout_s=600),
    Experiment(name="mfu_benchmark", notebook="02_flops", run=run_mfu_benchmark,
               summary="training-step TFLOP/s and MFU at nanoGPT's shape, eager vs compile",
               presets=MFU_PRESETS, min_gpus={"small": 0, "full": 1},
               # the full preset's runs, one after another in one process: each compiles for
               # 30-60 s on an H100 (the ledger's recorded_at steps), max-autotune for minutes
               timeout_s=2400, typical_s={"small": 20, "full": 1200}),
    Experiment(name="flops_sweep", notebook="02_flops", run=run_flops_sweep,
               summary="6ND+attention vs FlopCounterMode vs step time across model widths",
               presets=FLOPS_PRESETS, min_gpus={"small": 0, "full": 1}, timeout_s=600),
    Experiment(name="energy_per_token", notebook="02_flops", run=run_energy_per_token,
               summary="joules per training token from NVML's energy counter, with W, "
                       "tokens/s and MFU of the same steps",
               presets=ENERGY_PRESETS, min_gpus={"small": 0, "full": 1}, timeout_s=600,
               typical_s={"small": 15, "full": 120}),
]

