"""The attention experiments: configs, ``run_*`` and :data:`EXPERIMENTS` (notebook 07)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

import pandas as pd
import torch

from workbook.attention.io_model import MODES, RECOMPUTES, flops
from workbook.attention.measure import (
    Case,
    failure_rows,
    free_memory,
    make_inputs,
    measure_cases,
    measure_hbm,
    predicted_hbm_rows,
    row,
    saved_bytes,
    warm_triton,
)
from workbook.attention.tiled import reference_attention
from workbook.attention.variants import DTYPES, TOLERANCE, VARIANTS, attention, relative_error
from workbook.config import MAY_BE_EMPTY, check_choice, check_range
from workbook.registry import Experiment

__all__ = ["ExactnessConfig", "exactness_cases", "run_exactness", "check_sweep", "TrafficConfig",
           "traffic_cases", "run_traffic", "TimingConfig", "timing_cases", "run_timing",
           "Gpt2Config", "gpt2_cases", "run_gpt2_medium", "gpt2_flops_rows", "RecomputeConfig",
           "recompute_cases", "run_recompute", "EXPERIMENTS"]


@dataclass(frozen=True)
class ExactnessConfig:
    variants: tuple[str, ...]
    dtypes: tuple[str, ...]
    head_dims: tuple[int, ...]
    seq_len: int
    batch: int = 2
    n_heads: int = 4

    def __post_init__(self) -> None:
        for v in self.variants:
            check_choice("variant", v, VARIANTS)
        for d in self.dtypes:
            check_choice("dtype", d, DTYPES)
        for head_dim in self.head_dims:
            check_range("head_dim", head_dim, 8, 256)
        check_range("seq_len", self.seq_len, 1, 8192)
        check_range("batch", self.batch, 1, 512)
        check_range("n_heads", self.n_heads, 1, 256)


def exactness_cases(cfg: ExactnessConfig) -> list[Case]:
    """The cases :func:`run_exactness` runs forward and backward, as a sweep would list them."""
    return [Case(v, cfg.seq_len, d, cfg.batch, cfg.n_heads, dtype, causal, "fwd+bwd")
            for dtype, d, causal in itertools.product(cfg.dtypes, cfg.head_dims, (False, True))
            for v in cfg.variants]


def run_exactness(cfg: ExactnessConfig, seed: int) -> pd.DataFrame:
    """‖out − ref‖/‖ref‖ (and the same for the gradients) against float64, per variant."""
    rows: list[dict] = []
    for dtype, head_dim, causal in itertools.product(cfg.dtypes, cfg.head_dims, (False, True)):
        base = Case("vanilla", cfg.seq_len, head_dim, cfg.batch, cfg.n_heads, dtype, causal)
        q, k, v, dout = make_inputs(base, seed)
        ref = reference_attention(q, k, v, causal=causal)
        qd, kd, vd = (t.double().requires_grad_(True) for t in (q, k, v))
        reference_attention(qd, kd, vd, causal=causal).backward(dout.double())
        ref_grad = torch.cat([t.grad.flatten() for t in (qd, kd, vd)])
        for variant in cfg.variants:
            case = Case(variant, cfg.seq_len, head_dim, cfg.batch, cfg.n_heads, dtype, causal)
            try:
                qi, ki, vi = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
                # fixed tiles: the check is of the numbers; autotuning would compile and
                # time every tile configuration per shape key (~60 s on an H200) for nothing
                out = attention(qi, ki, vi, variant=variant, causal=causal, tuned=False)
                out.backward(dout)
                grad = torch.cat([t.grad.flatten() for t in (qi, ki, vi)])
                rows += [row(case, "rel_error", relative_error(out.detach(), ref),
                              band=TOLERANCE[dtype]),
                         row(case, "rel_error_grad", relative_error(grad, ref_grad),
                              band=TOLERANCE[dtype])]
            except Exception as exc:  # noqa: BLE001 - a failed case is a row
                rows += [{**r, "band": TOLERANCE[dtype]}
                         for r in failure_rows(case, ("rel_error", "rel_error_grad"), exc)]
        free_memory()
    return pd.DataFrame(rows)


def check_sweep(variants: Sequence[str], seq_lens: Sequence[int], head_dims: Sequence[int],
                batch: int, n_heads: int, dtype: str, repeats: int = 1) -> None:
    """The checks every attention sweep's config shares: known variants, lengths and head sizes
    in range, one dtype. One line naming the field and its range, before anything runs."""
    for v in variants:
        check_choice("variant", v, VARIANTS)
    for n in seq_lens:
        check_range("seq_len", n, 16, 65536)
    for head_dim in head_dims:
        check_range("head_dim", head_dim, 8, 256)
    check_range("batch", batch, 1, 512)
    check_range("n_heads", n_heads, 1, 256)
    check_choice("dtype", dtype, DTYPES)
    check_range("repeats", repeats, 1, 1000)


@dataclass(frozen=True)
class TrafficConfig:
    variants: tuple[str, ...]
    seq_lens: tuple[int, ...]
    head_dim: int
    batch: int
    n_heads: int
    dtype: str = "bfloat16"
    modes: tuple[str, ...] = MODES
    # Forward only: the math backend materialises S and P as vanilla does (and moves several
    # times vanilla's bytes: 07's traffic plot). Triton's backward is a fused kernel since
    # 7121e58, so it is measured both ways.
    fwd_only: Annotated[tuple[str, ...], MAY_BE_EMPTY] = ("sdpa_math",)

    def __post_init__(self) -> None:
        check_sweep(self.variants + self.fwd_only, self.seq_lens, (self.head_dim,), self.batch,
                    self.n_heads, self.dtype)
        for mode in self.modes:
            check_choice("mode", mode, MODES)


def traffic_cases(cfg: TrafficConfig) -> list[Case]:
    return [Case(v, n, cfg.head_dim, cfg.batch, cfg.n_heads, cfg.dtype, False, mode)
            for mode in cfg.modes for n in cfg.seq_lens for v in cfg.variants
            if not (mode == "fwd+bwd" and v in cfg.fwd_only)]


def run_traffic(cfg: TrafficConfig, seed: int) -> pd.DataFrame:
    """HBM bytes per variant vs seq_len (ncu), beside the analytic model's bytes."""
    cases = traffic_cases(cfg)
    rows = measure_hbm(cases, seed)
    for mode, n in itertools.product(cfg.modes, cfg.seq_lens):
        rows += predicted_hbm_rows(Case("vanilla", n, cfg.head_dim, cfg.batch, cfg.n_heads,
                                        cfg.dtype, False, mode))
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class TimingConfig:
    variants: tuple[str, ...]
    seq_lens: tuple[int, ...]
    head_dim: int
    batch: int
    n_heads: int
    dtype: str
    repeats: int
    target_variants: tuple[str, ...] = ("sdpa_flash", "triton")
    target_seq_len: int = 4096
    target_head_dims: tuple[int, ...] = (64, 128)
    # Variants timed forward only. Empty (the default): every variant with its backward too,
    # the Triton kernel's fused backward included.
    fwd_only: Annotated[tuple[str, ...], MAY_BE_EMPTY] = ()

    def __post_init__(self) -> None:
        check_sweep(self.variants + self.target_variants + self.fwd_only,
                    self.seq_lens + (self.target_seq_len,),
                    (self.head_dim, *self.target_head_dims), self.batch, self.n_heads,
                    self.dtype, self.repeats)


def timing_cases(cfg: TimingConfig) -> list[Case]:
    sweep = [Case(v, n, cfg.head_dim, cfg.batch, cfg.n_heads, cfg.dtype, False, mode)
             for mode in MODES for n in cfg.seq_lens for v in cfg.variants
             if not (mode == "fwd+bwd" and v in cfg.fwd_only)]
    targets = [Case(v, cfg.target_seq_len, d, cfg.batch, cfg.n_heads, cfg.dtype, causal, "fwd")
               for d in cfg.target_head_dims for causal in (False, True)
               for v in cfg.target_variants]
    return list(dict.fromkeys(sweep + targets))


def run_timing(cfg: TimingConfig, seed: int) -> pd.DataFrame:
    """Median time, TFLOP/s and extra peak memory per variant, mode and seq_len."""
    return pd.DataFrame(measure_cases(timing_cases(cfg), seed, cfg.repeats))


@dataclass(frozen=True)
class Gpt2Config:
    variants: tuple[str, ...]
    batch: int = 64
    n_heads: int = 16
    seq_len: int = 1024
    head_dim: int = 64
    dtype: str = "float16"
    repeats: int = 10

    def __post_init__(self) -> None:
        check_range("seq_len", self.seq_len, 16, 16384)
        check_sweep(self.variants, (self.seq_len,), (self.head_dim,), self.batch, self.n_heads,
                    self.dtype, self.repeats)


def gpt2_cases(cfg: Gpt2Config) -> list[Case]:
    """The paper's shape, forward + backward, once per variant."""
    return [Case(v, cfg.seq_len, cfg.head_dim, cfg.batch, cfg.n_heads, cfg.dtype, False,
                 "fwd+bwd") for v in cfg.variants]


def run_gpt2_medium(cfg: Gpt2Config, seed: int) -> pd.DataFrame:
    """The paper's Figure 2 (left) on this GPU: HBM GB, runtime and GFLOPs, fwd+bwd."""
    cases = gpt2_cases(cfg)
    rows = measure_cases(cases, seed, cfg.repeats) + measure_hbm(cases, seed)
    return pd.DataFrame(rows + gpt2_flops_rows(cases))


def gpt2_flops_rows(cases: list[Case]) -> list[dict]:
    """The FLOP model's GFLOPs per variant (predicted rows): the forward's two matmuls, and a
    backward of five where it recomputes P (FlashAttention-2's 2.5×, the recomputed Q Kᵀ
    included), of four where P was stored (vanilla, sdpa_math: 2×)."""
    return [row(case, "flops", flops(case.seq_len, case.head_dim, batch=case.batch,
                                     n_heads=case.n_heads, mode="fwd+bwd",
                                     recompute=RECOMPUTES.get(case.variant, True)) / 1e9,
                source="predicted") for case in cases]


@dataclass(frozen=True)
class RecomputeConfig:
    variants: tuple[str, ...]
    seq_lens: tuple[int, ...]
    head_dim: int
    batch: int
    n_heads: int
    dtype: str
    repeats: int

    def __post_init__(self) -> None:
        check_sweep(self.variants, self.seq_lens, (self.head_dim,), self.batch, self.n_heads,
                    self.dtype, self.repeats)


def recompute_cases(cfg: RecomputeConfig) -> list[Case]:
    """Every variant at every length, forward + backward."""
    return [Case(v, n, cfg.head_dim, cfg.batch, cfg.n_heads, cfg.dtype, False, "fwd+bwd")
            for n in cfg.seq_lens for v in cfg.variants]


def run_recompute(cfg: RecomputeConfig, seed: int) -> pd.DataFrame:
    """Backward memory with P saved (vanilla) vs P recomputed from the log-sum-exp."""
    rows: list[dict] = []
    cases = recompute_cases(cfg)
    for case in cases:
        try:
            rows.append(row(case, "saved_bytes", saved_bytes(case, seed) / 1e6))
        except Exception as exc:  # noqa: BLE001 - a failed case is a row, not a lost sweep
            rows += failure_rows(case, ("saved_bytes",), exc)
        free_memory()
        size, heads = DTYPES[case.dtype].itemsize, case.batch * case.n_heads
        n, d = case.seq_len, case.head_dim
        p_saved = heads * (n * n + n * d) * size      # P and Q·scale
        lse_saved = heads * (n * d * size + n * 4)    # O and the log-sum-exp
        rows.append(row(case, "saved_bytes",
                         (p_saved if case.variant in ("vanilla", "sdpa_math") else lse_saved)
                         / 1e6, source="predicted"))
    if torch.cuda.is_available():
        rows += measure_cases(cases, seed, cfg.repeats)
    return pd.DataFrame(rows)


_CPU_VARIANTS = ("vanilla", "sdpa_math", "sdpa_flash", "tiled")
_GPU_VARIANTS = ("vanilla", "sdpa_math", "sdpa_efficient", "sdpa_flash", "sdpa_cudnn",
                 "flash_attn", "triton")

EXPERIMENTS = [
    Experiment(
        name="attention_exactness",
        summary="every attention variant vs a float64 reference: ‖out−ref‖/‖ref‖ and grads",
        notebook="07_flash_attention", run=run_exactness,
        presets={"small": ExactnessConfig(_CPU_VARIANTS + ("triton",), ("float32", "bfloat16"),
                                          (64,), seq_len=70, batch=1, n_heads=2),
                 "full": ExactnessConfig(_GPU_VARIANTS + ("tiled",),
                                         ("float16", "bfloat16", "float32"), (64, 128),
                                         seq_len=1000, batch=2, n_heads=4)},
        min_gpus={"small": 0, "full": 1}, timeout_s=300,
        # fixed tiles, as the check runs them (tuned=False)
        warm_up=lambda cfg: warm_triton(exactness_cases(cfg), tuned=False)),
    Experiment(
        name="attention_traffic",
        summary="HBM bytes (ncu) per variant vs seq_len, fwd and fwd+bwd, beside the IO model",
        notebook="07_flash_attention", run=run_traffic,
        presets={"small": TrafficConfig(("vanilla", "sdpa_flash"), (256, 512, 1024), 64, 1, 4),
                 "full": TrafficConfig(("vanilla", "sdpa_math", "sdpa_efficient", "sdpa_flash",
                                        "sdpa_cudnn", "triton"),
                                       (512, 1024, 2048, 4096, 8192, 16384), 128, 2, 16)},
        min_gpus={"small": 0, "full": 1}, timeout_s=600,
        warm_up=lambda cfg: warm_triton(traffic_cases(cfg))),
    Experiment(
        name="attention_timing",
        summary="median ms, TFLOP/s, extra peak memory per variant vs seq_len; Triton vs FA2",
        notebook="07_flash_attention", run=run_timing,
        presets={"small": TimingConfig(("vanilla", "sdpa_flash", "tiled"), (64, 128), 64, 1, 2,
                                       "float32", 2, target_variants=("tiled",),
                                       target_seq_len=128, target_head_dims=(64,)),
                 "full": TimingConfig(("vanilla", "sdpa_math", "sdpa_efficient", "sdpa_flash",
                                       "sdpa_cudnn", "flash_attn", "triton"),
                                      (512, 1024, 2048, 4096, 8192, 16384), 128, 4, 16,
                                      "bfloat16", 10)},
        min_gpus={"small": 0, "full": 1}, timeout_s=600,
        # full: 92 cases in one process; 07's H200 Run All took 69.2 s for this and
        # attention_gpt2_medium together (its slowest cell)
        typical_s={"full": 60},
        # the panel's first Run: eager against FlashAttention at 4096 tokens, head_dim 128,
        # forward and forward + backward, and the one target (flash, fwd) at head_dim 128
        panel_start={"full": {"variants": ("vanilla", "sdpa_flash"), "seq_lens": (4096,),
                              "target_variants": ("sdpa_flash",), "target_head_dims": (128,)}},
        panel_s={"full": 10}, warm_up=lambda cfg: warm_triton(timing_cases(cfg))),
    Experiment(
        name="attention_gpt2_medium",
        summary="FlashAttention paper Fig. 2 on this GPU: GPT-2 medium attention fwd+bwd",
        notebook="07_flash_attention", run=run_gpt2_medium,
        presets={"small": Gpt2Config(("vanilla", "tiled"), batch=2, n_heads=2, seq_len=128,
                                     dtype="float32", repeats=2),
                 "full": Gpt2Config(("vanilla", "sdpa_flash", "triton"))},
        min_gpus={"small": 0, "full": 1}, timeout_s=400,
        warm_up=lambda cfg: warm_triton(gpt2_cases(cfg))),
    Experiment(
        name="attention_recompute",
        summary="backward memory: P saved (vanilla) vs recomputed from the log-sum-exp",
        notebook="07_flash_attention", run=run_recompute,
        presets={"small": RecomputeConfig(("vanilla", "tiled", "sdpa_flash"), (128, 256, 512),
                                          64, 1, 2, "float32", 2),
                 "full": RecomputeConfig(("vanilla", "sdpa_flash", "triton"),
                                         (1024, 2048, 4096, 8192, 16384), 64, 4, 16,
                                         "bfloat16", 5)},
        min_gpus={"small": 0, "full": 1}, timeout_s=400,
        warm_up=lambda cfg: warm_triton(recompute_cases(cfg))),
]

