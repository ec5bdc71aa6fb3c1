"""FlashAttention: the same function computed with less HBM traffic, measured by the GPU.

Three layers, kept apart:

* **the algorithms** - :func:`attention` computes softmax(Q Kᵀ/√d) V with one of
  :data:`VARIANTS` (vanilla, PyTorch SDPA with each backend forced, the ``flash_attn`` package,
  the workbook's Triton kernel, and :func:`tiled_attention_forward`: the tiled online-softmax
  algorithm in plain PyTorch, which runs on a CPU and is the one to read);
* **the analytic model** - FLOPs and the HBM bytes each algorithm must move
  (:func:`io_bytes`, :func:`vanilla_io_steps`, :func:`memory_hierarchy`);
* **measurements** - time (CUDA events), extra peak memory, bytes saved for the backward, and
  HBM bytes counted by Nsight Compute (:func:`measure_hbm`), each an experiment in
  :data:`EXPERIMENTS`.

Shapes everywhere: (batch, n_heads, seq_len, head_dim).
"""

from __future__ import annotations

import gc
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

import pandas as pd
import torch

from workbook.config import (
    MAY_BE_EMPTY,
    WorkbookError,
    check_choice,
    check_flag,
    check_range,
    takes_rows,
)
from workbook.registry import Experiment

VARIANTS: tuple[str, ...] = ("vanilla", "sdpa_math", "sdpa_efficient", "sdpa_flash",
                             "sdpa_cudnn", "flash_attn", "tiled", "triton")
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16,
                                  "bfloat16": torch.bfloat16}
# ‖out − ref‖ / ‖ref‖ against a float64 reference: a few units of each dtype's rounding error
# (fp32 2^-24, fp16 2^-11, bf16 2^-8). Anything above means a wrong algorithm, not rounding.
TOLERANCE: dict[str, float] = {"float32": 1e-5, "float16": 2e-3, "bfloat16": 1.6e-2}
MODES: tuple[str, ...] = ("fwd", "fwd+bwd")
BACKWARD_FACTOR = 2.5  # backward FLOPs ≈ 2.5 × forward (FlashAttention-2 paper's convention)

# FlashAttention paper (Dao et al. 2022), Figure 2 left: GPT-2 medium attention, fwd+bwd,
# batch 64, 16 heads, seq 1024, head_dim 64, on an A100.
PAPER_FIG2: dict[str, dict[str, float]] = {
    "standard": {"hbm_gb": 40.3, "runtime_ms": 41.7, "gflops": 66.6},
    "flash": {"hbm_gb": 4.4, "runtime_ms": 7.3, "gflops": 75.2},
}


# ============================================================================ the algorithms


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                        causal: bool = False, scale: float | None = None) -> torch.Tensor:
    """The definition, in float64: what every variant is compared against."""
    check_flag("causal", causal)
    if scale is not None:
        check_range("scale", scale, 1e-6, 1e3)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    q, k, v = q.double(), k.double(), v.double()
    s = q @ k.transpose(-2, -1) * scale                       # (B, H, N, N)
    if causal:
        s = s.masked_fill(_causal_mask(q.shape[-2], q.device), float("-inf"))
    return torch.softmax(s, dim=-1) @ v


def _causal_mask(seq_len: int, device: torch.device) -> torch.Tensor:
    """True where a query would see a later key (to be masked out)."""
    return torch.ones(seq_len, seq_len, dtype=torch.bool, device=device).triu(1)


def vanilla_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                      causal: bool = False, scale: float | None = None) -> torch.Tensor:
    """Standard attention: S = QKᵀ and P = softmax(S) are full N×N tensors in HBM."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    s = (q * scale) @ k.transpose(-2, -1)                     # (B, H, N, N): written to HBM
    if causal:
        s = s.masked_fill(_causal_mask(q.shape[-2], q.device), float("-inf"))
    p = torch.softmax(s, dim=-1)                              # read N², write N² again
    return p @ v                                              # read N² once more


def tiled_attention_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                            causal: bool = False, scale: float | None = None,
                            block_m: int = 64, block_n: int = 64
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """FlashAttention's forward, tile by tile, with the online softmax. Returns (O, lse).

    A GPU kernel keeps one Q tile, one K/V tile and the running statistics in SRAM; here
    those are small tensors. ``row_max`` is the running row max m, ``row_sum`` the running
    sum of exp(s − m): when a new tile raises the max, the old sum and output are rescaled by
    exp(m_old − m_new), so the result is exact without ever holding a whole row of S.
    """
    check_flag("causal", causal)
    if scale is not None:
        check_range("scale", scale, 1e-6, 1e3)
    check_range("block_m", block_m, 1, 4096)
    check_range("block_n", block_n, 1, 4096)
    seq_len, head_dim = q.shape[-2:]
    scale = head_dim ** -0.5 if scale is None else scale
    out = torch.empty_like(q)
    lse = torch.empty(q.shape[:-1], dtype=torch.float32, device=q.device)  # (B, H, N)
    for m0 in range(0, seq_len, block_m):
        q_tile = q[..., m0:m0 + block_m, :].float() * scale            # (B, H, Bm, d)
        rows = torch.arange(m0, m0 + q_tile.shape[-2], device=q.device)
        row_max = torch.full(q_tile.shape[:-1], float("-inf"), device=q.device)  # (B,H,Bm)
        row_sum = torch.zeros_like(row_max)
        acc = torch.zeros_like(q_tile)                                 # (B, H, Bm, d)
        n_end = min(seq_len, m0 + block_m) if causal else seq_len      # causal: skip the future
        for n0 in range(0, n_end, block_n):
            k_tile = k[..., n0:n0 + block_n, :].float()                # (B, H, Bn, d)
            v_tile = v[..., n0:n0 + block_n, :].float()
            s = q_tile @ k_tile.transpose(-2, -1)                      # (B, H, Bm, Bn)
            if causal and n0 + block_n > m0:                           # a diagonal tile
                cols = torch.arange(n0, n0 + k_tile.shape[-2], device=q.device)
                s = s.masked_fill(cols[None, :] > rows[:, None], float("-inf"))
            m_new = torch.maximum(row_max, s.amax(dim=-1))
            p = torch.exp(s - m_new[..., None])
            alpha = torch.exp(row_max - m_new)                               # rescale the old state
            row_sum = row_sum * alpha + p.sum(dim=-1)
            acc = acc * alpha[..., None] + p @ v_tile
            row_max = m_new
        out[..., m0:m0 + block_m, :] = (acc / row_sum[..., None]).to(q.dtype)  # one write of O
        lse[..., m0:m0 + block_m] = row_max + torch.log(row_sum)
    return out, lse


def tiled_attention_backward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                             out: torch.Tensor, lse: torch.Tensor, grad_out: torch.Tensor, *,
                             causal: bool = False, scale: float | None = None,
                             block_m: int = 256
                             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The backward by recomputation: P is rebuilt from the saved log-sum-exp, one tile of
    ``block_m`` query rows at a time, so no N×N tensor is ever stored (extra memory
    O(block_m · N), not O(N²)). Math in float32; returns (dQ, dK, dV) in the input dtype."""
    seq_len, head_dim = q.shape[-2:]
    scale = head_dim ** -0.5 if scale is None else scale
    qf, kf, vf, of, dof = (t.float() for t in (q, k, v, out, grad_out))
    delta = (dof * of).sum(dim=-1)                                     # (B, H, N): rowsum(dO∘O)
    dq, dk, dv = torch.zeros_like(qf), torch.zeros_like(kf), torch.zeros_like(vf)
    for m0 in range(0, seq_len, block_m):
        m1 = min(seq_len, m0 + block_m)
        n_end = m1 if causal else seq_len
        q_t, do_t = qf[..., m0:m1, :], dof[..., m0:m1, :]               # (B, H, Bm, d)
        s = q_t @ kf[..., :n_end, :].transpose(-2, -1) * scale         # (B, H, Bm, n_end)
        if causal:
            rows = torch.arange(m0, m1, device=q.device)
            cols = torch.arange(n_end, device=q.device)
            s = s.masked_fill(cols[None, :] > rows[:, None], float("-inf"))
        p = torch.exp(s - lse[..., m0:m1, None])                       # P, recomputed exactly
        dv[..., :n_end, :] += p.transpose(-2, -1) @ do_t
        dp = do_t @ vf[..., :n_end, :].transpose(-2, -1)
        ds = p * (dp - delta[..., m0:m1, None]) * scale
        dq[..., m0:m1, :] = ds @ kf[..., :n_end, :]
        dk[..., :n_end, :] += ds.transpose(-2, -1) @ q_t
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


class TiledAttentionFunction(torch.autograd.Function):
    """Autograd for the tiled algorithm: saves O and the log-sum-exp, never P."""

    @staticmethod
    def forward(ctx, q, k, v, causal: bool, scale: float):  # noqa: D102
        out, lse = tiled_attention_forward(q, k, v, causal=causal, scale=scale)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.causal, ctx.scale = causal, scale
        return out

    @staticmethod
    def backward(ctx, grad_out):  # noqa: D102
        q, k, v, out, lse = ctx.saved_tensors
        grads = tiled_attention_backward(q, k, v, out, lse, grad_out, causal=ctx.causal,
                                         scale=ctx.scale)
        return (*grads, None, None)


def tiled_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                    causal: bool = False, scale: float | None = None) -> torch.Tensor:
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    return TiledAttentionFunction.apply(q, k, v, causal, scale)


_SDPA_BACKENDS = {"sdpa_math": "MATH", "sdpa_efficient": "EFFICIENT_ATTENTION",
                  "sdpa_flash": "FLASH_ATTENTION", "sdpa_cudnn": "CUDNN_ATTENTION"}


def _sdpa(backend: str) -> Callable[..., torch.Tensor]:
    def run(q, k, v, *, causal=False, scale=None):
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel(getattr(SDPBackend, _SDPA_BACKENDS[backend])):
            try:
                return torch.nn.functional.scaled_dot_product_attention(
                    q, k, v, is_causal=causal, scale=scale)
            except RuntimeError as exc:
                if "No viable backend" in str(exc) or "No available kernel" in str(exc):
                    raise WorkbookError(
                        f"{backend} cannot run {q.dtype} head_dim={q.shape[-1]} on "
                        f"{q.device.type} here; try 'sdpa_math' or 'tiled'") from None
                raise
    return run


def _flash_attn_package(q, k, v, *, causal=False, scale=None):
    from flash_attn import flash_attn_func  # (B, N, H, d) layout

    out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                          causal=causal, softmax_scale=scale)
    return out.transpose(1, 2)


def _triton(q, k, v, *, causal=False, scale=None):
    from workbook.flash_triton import flash_attention

    return flash_attention(q, k, v, causal=causal, scale=scale)


_IMPLEMENTATIONS: dict[str, Callable[..., torch.Tensor]] = {
    "vanilla": vanilla_attention, "tiled": tiled_attention, "triton": _triton,
    "flash_attn": _flash_attn_package, **{name: _sdpa(name) for name in _SDPA_BACKENDS},
}


def unsupported(variant: str, device: str, dtype: str, head_dim: int) -> str | None:
    """Why ``variant`` cannot run here with this dtype/head_dim, or None if it should."""
    import importlib.util

    check_choice("variant", variant, VARIANTS)
    if variant in ("sdpa_efficient", "sdpa_cudnn", "flash_attn") and device != "cuda":
        return f"{variant} runs only on an NVIDIA GPU"
    if variant == "flash_attn" and importlib.util.find_spec("flash_attn") is None:
        return "the optional flash_attn package is not installed"
    if variant in ("flash_attn", "sdpa_cudnn") and dtype == "float32":
        return f"{variant} has no float32 kernel; allowed: float16, bfloat16"
    if variant == "sdpa_flash" and device == "cuda" and dtype == "float32":
        return "sdpa_flash has no float32 kernel on GPUs; allowed: float16, bfloat16"
    if variant == "triton":
        from workbook import flash_triton

        if dtype == "float32":
            return "the Triton kernel has no float32 kernel; allowed: float16, bfloat16"
        if head_dim not in flash_triton.HEAD_DIMS:
            return f"head_dim={head_dim} is not supported by the Triton kernel; allowed: 64, 128"
        if not flash_triton.triton_available():
            return "the Triton kernel needs the 'triton' package (GPU machines)"
        if device != "cuda" and not flash_triton.interpreting():
            return "the Triton kernel needs a GPU (or TRITON_INTERPRET=1, slowly, on a CPU)"
    return None


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, variant: str = "sdpa_flash",
              causal: bool = False, scale: float | None = None) -> torch.Tensor:
    """softmax(Q Kᵀ · scale) V, computed by ``variant``; all variants compute the same function.

    Shapes (batch, n_heads, seq_len, head_dim), q, k, v alike. A variant that cannot run here
    (no GPU, no kernel for this dtype or head_dim) raises a one-line WorkbookError.
    """
    check_choice("variant", variant, VARIANTS)
    if q.dim() != 4 or q.shape != k.shape or q.shape != v.shape:
        raise WorkbookError(f"q, k, v must share one shape (batch, n_heads, seq_len, head_dim); "
                            f"got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise WorkbookError(f"q, k, v must share one dtype; got {q.dtype}, {k.dtype}, {v.dtype}")
    dtype = _dtype_name(q.dtype)
    reason = unsupported(variant, q.device.type, dtype, q.shape[-1])
    if reason:
        raise WorkbookError(reason)
    return _IMPLEMENTATIONS[variant](q, k, v, causal=causal, scale=scale)


def _dtype_name(dtype: torch.dtype) -> str:
    for name, dt in DTYPES.items():
        if dt == dtype:
            return name
    raise WorkbookError(f"dtype {dtype} is not supported; allowed: {', '.join(DTYPES)}")


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """‖out − ref‖ / ‖ref‖ in float64."""
    return float((out.double() - ref.double()).norm() / ref.double().norm())


# ========================================================================= the analytic model


def flops(seq_len: int, head_dim: int, *, batch: int = 1, n_heads: int = 1,
          causal: bool = False, mode: str = "fwd") -> float:
    """4·N²·d per head forward (two matmuls), halved when causal; backward 2.5× forward."""
    check_choice("mode", mode, MODES)
    fwd = 4.0 * seq_len**2 * head_dim * batch * n_heads / (2 if causal else 1)
    return fwd * (1 + BACKWARD_FACTOR) if mode == "fwd+bwd" else fwd


def vanilla_io_steps(seq_len: int, head_dim: int, *, mode: str = "fwd") -> pd.DataFrame:
    """HBM elements each kernel of :func:`vanilla_attention` reads and writes, per head.

    Every step is a separate kernel: its input comes from HBM and its output goes back there.
    Causal masking adds one more N² read and write (not listed; the sweeps are non-causal).
    """
    check_choice("mode", mode, MODES)
    n2, nd = seq_len * seq_len, seq_len * head_dim
    steps = [("Q·scale", nd, nd), ("S = Q Kᵀ", 2 * nd, n2), ("P = softmax(S)", n2, n2),
             ("O = P V", n2 + nd, nd)]
    if mode == "fwd+bwd":
        steps += [("dP = dO Vᵀ", 2 * nd, n2), ("dV = Pᵀ dO", n2 + nd, nd),
                  ("dS = softmax′(P, dP)", 2 * n2, n2), ("dQ = dS K", n2 + nd, nd),
                  ("dK = dSᵀ Q", n2 + nd, nd), ("dQ·scale", nd, nd)]
    return pd.DataFrame(steps, columns=["step", "reads", "writes"])


def io_bytes(algorithm: str, seq_len: int, head_dim: int, *, batch: int = 1, n_heads: int = 1,
             dtype_bytes: int = 2, mode: str = "fwd", block_m: int = 128) -> float:
    """HBM bytes an algorithm moves, by the analytic model.

    * ``minimum``: every input read once, every output written once: 4·N·d forward
      (Q, K, V in; O out), 12·N·d forward+backward (adds Q, K, V, O, dO in; dQ, dK, dV out).
    * ``vanilla``: :func:`vanilla_io_steps`, Θ(N·d + N²).
    * ``flash_no_l2``: FlashAttention with tiles of ``block_m`` query rows and no cache
      between SRAM and HBM: K and V are re-read once per query tile, 2·N·d·⌈N/block_m⌉.
      With block_m ≈ M/(4d) for an SRAM of M elements this is the paper's Θ(N²·d²/M). The
      backward (FA2) re-reads Q and dO and updates dQ once per key tile of the same size.
    """
    check_choice("algorithm", algorithm, ("minimum", "vanilla", "flash_no_l2"))
    check_choice("mode", mode, MODES)
    nd, heads = seq_len * head_dim, batch * n_heads
    if algorithm == "minimum":
        elements = 4 * nd if mode == "fwd" else 12 * nd
    elif algorithm == "vanilla":
        steps = vanilla_io_steps(seq_len, head_dim, mode=mode)
        elements = int(steps["reads"].sum() + steps["writes"].sum())
    else:
        tiles = math.ceil(seq_len / block_m)
        elements = 2 * nd + 2 * nd * tiles
        if mode == "fwd+bwd":
            elements += 2 * nd + 2 * nd + 4 * nd * tiles + 3 * nd  # K,V,dK,dV; Q,dO,dQ r/w
    return float(elements) * dtype_bytes * heads


def memory_hierarchy(device_name: str = "H100") -> pd.DataFrame:
    """HBM vs on-chip SRAM of a GPU, from the datasheet table in ``workbook.hardware``."""
    from workbook.hardware import DATASHEET, datasheet

    peaks = datasheet(device_name)
    if peaks is None:
        known = ", ".join(key for key, _ in DATASHEET)
        raise WorkbookError(f"no datasheet entry for {device_name!r}; known: {known}")
    sram_mb = peaks.n_sm * peaks.smem_per_sm_kb / 1024
    rows = [("HBM (GPU memory)", peaks.memory_gb * 1e3, peaks.hbm_gb_s),
            ("L2 cache", peaks.l2_mb, float("nan")),
            (f"SRAM (shared memory, {peaks.n_sm} SMs × {peaks.smem_per_sm_kb} KB)", sram_mb,
             float("nan"))]
    frame = pd.DataFrame(rows, columns=["memory", "size_mb", "bandwidth_gb_s"])
    frame["times_sram"] = frame["size_mb"] / sram_mb
    frame["device"] = peaks.name
    return frame


def s_matrix_vs_memory(seq_len: int, head_dim: int, batch: int, n_heads: int, block: int,
                       *, dtype_bytes: int = 2, device_name: str = "H100") -> dict[str, float]:
    """What the sliders show: the size of S against SRAM and HBM, and one tile's footprint."""
    check_range("seq_len", seq_len, 16, 1 << 20)
    check_range("head_dim", head_dim, 16, 512)
    check_range("block", block, 16, 1024)
    hier = memory_hierarchy(device_name).set_index("memory")["size_mb"]
    sram_mb, hbm_mb = float(hier.iloc[2]), float(hier.iloc[0])
    s_mb = batch * n_heads * seq_len**2 * dtype_bytes / 1e6
    # One program holds a Q tile, a K tile, a V tile (block × d each) and S/P for the tile.
    tile_kb = (3 * block * head_dim * dtype_bytes + block * block * 4) / 1024
    return {"s_mb": s_mb, "s_over_sram": s_mb / sram_mb, "s_over_hbm": s_mb / hbm_mb,
            "tile_kb": tile_kb, "sram_per_sm_kb": sram_mb * 1024 / _n_sm(device_name),
            "vanilla_gb": io_bytes("vanilla", seq_len, head_dim, batch=batch, n_heads=n_heads,
                                   dtype_bytes=dtype_bytes) / 1e9,
            "minimum_gb": io_bytes("minimum", seq_len, head_dim, batch=batch, n_heads=n_heads,
                                   dtype_bytes=dtype_bytes) / 1e9,
            "flash_no_l2_gb": io_bytes("flash_no_l2", seq_len, head_dim, batch=batch,
                                       n_heads=n_heads, dtype_bytes=dtype_bytes,
                                       block_m=block) / 1e9}


def _n_sm(device_name: str) -> int:
    from workbook.hardware import datasheet

    peaks = datasheet(device_name)
    return peaks.n_sm if peaks else 1


# ============================================================================== measurements


@dataclass(frozen=True)
class Case:
    """One measured configuration."""

    variant: str
    seq_len: int
    head_dim: int = 128
    batch: int = 1
    n_heads: int = 16
    dtype: str = "bfloat16"
    causal: bool = False
    mode: str = "fwd"

    def __post_init__(self) -> None:
        check_choice("variant", self.variant, VARIANTS)
        check_choice("dtype", self.dtype, DTYPES)
        check_choice("mode", self.mode, MODES)
        check_range("seq_len", self.seq_len, 1, 131072)
        check_range("head_dim", self.head_dim, 8, 256)
        check_range("batch", self.batch, 1, 4096)
        check_range("n_heads", self.n_heads, 1, 1024)
        check_choice("causal", self.causal, (False, True))

    @property
    def params(self) -> dict:
        return asdict(self)


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def make_inputs(case: Case, seed: int, device: torch.device | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v and an upstream gradient dO: standard normal, never all zeros."""
    device = device or _device()
    gen = torch.Generator(device=device).manual_seed(seed)
    shape = (case.batch, case.n_heads, case.seq_len, case.head_dim)
    dtype = DTYPES[case.dtype]
    q, k, v, dout = (torch.randn(shape, generator=gen, device=device).to(dtype)
                     for _ in range(4))
    return q, k, v, dout


def make_step(case: Case, seed: int = 0) -> Callable[[], None]:
    """A closure running the case once (forward, or forward+backward) on fresh inputs."""
    q, k, v, dout = make_inputs(case, seed)
    reason = unsupported(case.variant, q.device.type, case.dtype, case.head_dim)
    if reason:
        raise WorkbookError(reason)
    if case.mode == "fwd":
        def step() -> None:
            with torch.no_grad():
                attention(q, k, v, variant=case.variant, causal=case.causal)
        return step
    for t in (q, k, v):
        t.requires_grad_(True)

    def step_bwd() -> None:
        for t in (q, k, v):
            t.grad = None  # fresh gradients each call: no accumulation kernel in the region
        attention(q, k, v, variant=case.variant, causal=case.causal).backward(dout)
    return step_bwd


def saved_bytes(case: Case, seed: int = 0) -> int:
    """Bytes autograd keeps for the backward, beyond the inputs q, k, v themselves.

    Counted with ``saved_tensors_hooks``: each distinct storage once. Vanilla keeps P (N²);
    FlashAttention keeps O and the log-sum-exp (N·d + N).
    """
    q, k, v, _ = make_inputs(case, seed)
    reason = unsupported(case.variant, q.device.type, case.dtype, case.head_dim)
    if reason:
        raise WorkbookError(reason)
    for t in (q, k, v):
        t.requires_grad_(True)
    inputs = {t.untyped_storage().data_ptr() for t in (q, k, v)}
    seen: dict[int, int] = {}
    kept: list[torch.Tensor] = []  # alive until counted, so no address is reused meanwhile

    def pack(t: torch.Tensor) -> None:
        # Return nothing to the graph: a pack hook that hands back an op's own output makes a
        # reference cycle through C++ that the garbage collector cannot free (a leak of P).
        storage = t.untyped_storage()
        if storage.data_ptr() not in inputs:
            seen[storage.data_ptr()] = storage.nbytes()
        kept.append(t)

    def unpack(_: None) -> torch.Tensor:
        raise WorkbookError("saved_bytes only counts; it never runs the backward")

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        out = attention(q, k, v, variant=case.variant, causal=case.causal)
    kept.clear()
    del out
    return int(sum(seen.values()))


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def time_and_memory(case: Case, seed: int, repeats: int) -> dict[str, float]:
    """Median ms (CUDA events), TFLOP/s and extra peak memory (GB above the inputs)."""
    from workbook import profiling

    step = make_step(case, seed)
    step()  # warm-up: compilation, autotuning, cuDNN plans
    profiling.reset_peak()
    before = profiling.allocated_bytes()
    step()
    extra = profiling.peak_bytes() - before
    ms = profiling.time_ms(step, warmup=1, repeats=repeats)
    work = flops(case.seq_len, case.head_dim, batch=case.batch, n_heads=case.n_heads,
                 causal=case.causal, mode=case.mode)
    return {"time": ms, "throughput": work / (ms * 1e-3) / 1e12, "extra_peak_memory": extra / 1e9}


_UNITS = {"time": "ms", "throughput": "TFLOP/s", "extra_peak_memory": "GB", "hbm_bytes": "GB",
          "hbm_read": "GB", "hbm_write": "GB", "saved_bytes": "MB", "flops": "GFLOP",
          "rel_error": "", "rel_error_grad": ""}


def _row(case: Case, metric: str, value: float, *, source: str = "measured",
         status: str = "ok", error: str = "", **extra) -> dict:
    return {**case.params, **extra, "metric": metric, "value": value,
            "unit": _UNITS.get(metric, ""), "source": source, "status": status, "error": error}


def _failure_rows(case: Case, metrics: Iterable[str], exc: BaseException) -> list[dict]:
    if isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower():
        status, error = "oom", "out of memory"
    elif isinstance(exc, WorkbookError):
        status, error = "unsupported", str(exc)
    else:
        status, error = "error", f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
    return [_row(case, m, math.nan, status=status, error=error) for m in metrics]


def measure_cases(cases: Iterable[Case], seed: int, repeats: int) -> list[dict]:
    """Time and memory per case; an OOM or an unsupported variant becomes rows, not a crash."""
    rows: list[dict] = []
    for case in cases:
        try:
            result = time_and_memory(case, seed, repeats)
            rows += [_row(case, metric, value) for metric, value in result.items()]
        except Exception as exc:  # noqa: BLE001 - a failed case is a row, not a lost sweep
            rows += _failure_rows(case, ("time", "throughput", "extra_peak_memory"), exc)
        _free()
    return rows


# --------------------------------------------------------------------- HBM bytes with ncu

_NCU_METRICS = ("dram__bytes_read.sum", "dram__bytes_write.sum")
_MARKER = "spin_kernel"  # torch.cuda._sleep's kernel: separates one case from the next


def ncu_path() -> str | None:
    return shutil.which("ncu") or next(
        (p for p in ("/usr/local/cuda/bin/ncu", "/opt/nvidia/nsight-compute/ncu")
         if os.path.exists(p)), None)


def ncu_unavailable() -> str | None:
    """Why HBM bytes cannot be counted here, or None."""
    if not torch.cuda.is_available():
        return "HBM counters need an NVIDIA GPU with Nsight Compute (ncu); none here"
    if ncu_path() is None:
        return "Nsight Compute (ncu) is not installed; HBM bytes are shown from recorded rows"
    from workbook.hardware import ncu_status

    status = ncu_status()
    return None if status == "present, counters readable" else f"ncu {status}"


def _ncu_child(spec_path: str, out_path: str) -> None:
    """Runs under ncu. Per case: warm up outside the profiled region, then start the profiler
    (process-wide, so the autograd thread's backward kernels are included, which an NVTX range
    pushed on this thread would miss), launch the marker kernel, run the case once, stop."""
    spec = json.loads(Path(spec_path).read_text())
    report = []
    for params in spec["cases"]:
        case, entry = Case(**params), {"profiled": False, "status": "ok", "error": ""}
        try:
            step = make_step(case, spec["seed"])
            step()
            step()
            torch.cuda.synchronize()
            torch.cuda.profiler.start()
            entry["profiled"] = True
            try:
                torch.cuda._sleep(1000)
                step()
                torch.cuda.synchronize()
            finally:
                torch.cuda.profiler.stop()
        except Exception as exc:  # noqa: BLE001 - a failed case is a row, not a lost sweep
            row = _failure_rows(case, ["x"], exc)[0]
            entry.update(status=row["status"], error=row["error"])
        step = None
        _free()
        report.append(entry)
    Path(out_path).write_text(json.dumps(report))


def parse_ncu_csv(text: str) -> list[dict]:
    """Kernels in launch order: [{'name', 'read', 'write'}] from ``ncu --csv`` output."""
    import csv
    import io

    lines = [ln for ln in text.splitlines() if ln.startswith('"')]
    if not lines:
        return []
    kernels: dict[int, dict] = {}
    for rec in csv.DictReader(io.StringIO("\n".join(lines))):
        if not rec.get("ID", "").strip().isdigit():
            continue  # a units row
        kernel = kernels.setdefault(int(rec["ID"]), {"name": rec.get("Kernel Name", ""),
                                                     "read": 0.0, "write": 0.0})
        pairs = ([(rec["Metric Name"], rec["Metric Value"], rec.get("Metric Unit", "byte"))]
                 if "Metric Name" in rec else [(m, rec.get(m, ""), "byte") for m in _NCU_METRICS])
        for name, value, unit in pairs:
            key = {"dram__bytes_read.sum": "read", "dram__bytes_write.sum": "write"}.get(name)
            if key and value:
                kernel[key] += float(value.replace(",", "")) * _unit_scale(unit)
    return [kernels[i] for i in sorted(kernels)]


def _unit_scale(unit: str) -> float:
    unit = (unit or "byte").strip().lower()
    return {"byte": 1, "kbyte": 1e3, "mbyte": 1e6, "gbyte": 1e9, "tbyte": 1e12}.get(unit, 1.0)


def split_by_marker(kernels: list[dict]) -> list[list[dict]]:
    """Kernels after each marker kernel, one list per profiled case."""
    segments: list[list[dict]] = []
    for kernel in kernels:
        if _MARKER in kernel["name"]:
            segments.append([])
        elif segments:
            segments[-1].append(kernel)
    return segments


def measure_hbm(cases: list[Case], seed: int = 0, timeout_s: float = 600) -> list[dict]:
    """HBM bytes read and written per case, counted by ncu in one child process."""
    reason = ncu_unavailable()
    if reason:
        return [r for c in cases for r in _failure_rows(c, ("hbm_bytes",), WorkbookError(reason))]
    with tempfile.TemporaryDirectory(prefix="workbook-ncu-") as tmp:
        spec, out, log = (Path(tmp) / n for n in ("spec.json", "out.json", "ncu.csv"))
        spec.write_text(json.dumps({"seed": seed, "cases": [c.params for c in cases]}))
        cmd = [ncu_path(), "--profile-from-start", "off", "--target-processes", "all",
               "--metrics", ",".join(_NCU_METRICS), "--csv", "--print-units", "base",
               "--log-file", str(log), sys.executable, "-c",
               f"from workbook.attention import _ncu_child; _ncu_child({str(spec)!r}, "
               f"{str(out)!r})"]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (str(Path(__file__).resolve().parent.parent),
                        os.environ.get("PYTHONPATH", "")) if p)}
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
            tail = (proc.stdout + proc.stderr)[-300:]
            stdout = proc.stdout
        except subprocess.TimeoutExpired:
            tail, stdout = f"ncu timed out after {timeout_s:g} s", ""
        report = json.loads(out.read_text()) if out.exists() else None
        text = log.read_text(errors="replace") if log.exists() else ""
        text = text if '"ID"' in text else stdout  # older ncu print results to stdout
    return _hbm_rows(cases, report, parse_ncu_csv(text), text + tail)


def _hbm_rows(cases: list[Case], report: list[dict] | None, kernels: list[dict],
              log: str) -> list[dict]:
    if report is None:
        err = "ncu run produced no report: " + " ".join(log.split())[-200:]
        return [_row(c, "hbm_bytes", math.nan, status="error", error=err) for c in cases]
    segments = iter(split_by_marker(kernels))
    n_profiled = sum(e["profiled"] for e in report)
    counted = len(split_by_marker(kernels)) == n_profiled
    rows: list[dict] = []
    for case, entry in zip(cases, report, strict=True):
        seg = next(segments, None) if entry["profiled"] else None
        if entry["status"] != "ok":
            rows += [_row(case, m, math.nan, status=entry["status"], error=entry["error"])
                     for m in ("hbm_bytes", "hbm_read", "hbm_write")]
            continue
        if not counted or seg is None:
            err = ("ERR_NVGPUCTRPERM: no counter permission" if "ERR_NVGPUCTRPERM" in log else
                   f"ncu returned {len(kernels)} kernels for {n_profiled} profiled cases")
            rows += [_row(case, "hbm_bytes", math.nan, status="error", error=err)]
            continue
        read, write = sum(k["read"] for k in seg), sum(k["write"] for k in seg)
        rows += [_row(case, "hbm_bytes", (read + write) / 1e9, kernels=len(seg)),
                 _row(case, "hbm_read", read / 1e9, kernels=len(seg)),
                 _row(case, "hbm_write", write / 1e9, kernels=len(seg))]
    return rows


def predicted_hbm_rows(case: Case, block_m: int = 128) -> list[dict]:
    """The analytic model's bytes for a case, one row per algorithm, source 'predicted'."""
    size = DTYPES[case.dtype].itemsize
    rows = []
    for algorithm in ("minimum", "vanilla", "flash_no_l2"):
        value = io_bytes(algorithm, case.seq_len, case.head_dim, batch=case.batch,
                         n_heads=case.n_heads, dtype_bytes=size, mode=case.mode, block_m=block_m)
        rows.append({**case.params, "variant": f"model: {algorithm}", "metric": "hbm_bytes",
                     "value": value / 1e9, "unit": "GB", "source": "predicted", "status": "ok",
                     "error": ""})
    return rows


# =============================================================================== experiments


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
                out = attention(qi, ki, vi, variant=variant, causal=causal)
                out.backward(dout)
                grad = torch.cat([t.grad.flatten() for t in (qi, ki, vi)])
                rows += [_row(case, "rel_error", relative_error(out.detach(), ref),
                              band=TOLERANCE[dtype]),
                         _row(case, "rel_error_grad", relative_error(grad, ref_grad),
                              band=TOLERANCE[dtype])]
            except Exception as exc:  # noqa: BLE001 - a failed case is a row
                rows += [{**r, "band": TOLERANCE[dtype]}
                         for r in _failure_rows(case, ("rel_error", "rel_error_grad"), exc)]
        _free()
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
    # Forward only: the math backend moves what vanilla moves (it materialises S and P the same
    # way). Triton's backward is a fused kernel since 7121e58, so it is measured both ways.
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


def run_gpt2_medium(cfg: Gpt2Config, seed: int) -> pd.DataFrame:
    """The paper's Figure 2 (left) on this GPU: HBM GB, runtime and GFLOPs, fwd+bwd."""
    cases = [Case(v, cfg.seq_len, cfg.head_dim, cfg.batch, cfg.n_heads, cfg.dtype, False,
                  "fwd+bwd") for v in cfg.variants]
    rows = measure_cases(cases, seed, cfg.repeats) + measure_hbm(cases, seed)
    for case in cases:
        recompute = case.variant != "vanilla" and case.variant != "sdpa_math"
        work = flops(case.seq_len, case.head_dim, batch=case.batch, n_heads=case.n_heads,
                     mode="fwd+bwd")
        if recompute:  # the backward recomputes S = QKᵀ: one more forward matmul
            work += work / (1 + BACKWARD_FACTOR) / 2
        rows.append(_row(case, "flops", work / 1e9, source="predicted"))
    return pd.DataFrame(rows)


@takes_rows
def gpt2_table(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per variant: measured HBM GB, ms, GFLOPs beside the paper's A100 numbers."""
    ok = rows[rows["status"] == "ok"]
    wide = ok.pivot_table(index="variant", columns="metric", values="value", aggfunc="first")
    wide = wide.reindex(columns=["hbm_bytes", "time", "flops", "extra_peak_memory"])
    wide.columns = ["HBM GB", "runtime ms", "GFLOPs (model)", "extra memory GB"]
    # The paper's FlashAttention is fused forward and backward: so are the SDPA kernels and,
    # since 7121e58, the workbook's triton variant (rows recorded before timed a PyTorch backward).
    paper = {"vanilla": PAPER_FIG2["standard"], "sdpa_math": PAPER_FIG2["standard"],
             **{v: PAPER_FIG2["flash"] for v in ("sdpa_flash", "sdpa_efficient", "sdpa_cudnn",
                                                  "triton")}}
    wide["paper HBM GB (A100)"] = [paper.get(v, {}).get("hbm_gb", math.nan) for v in wide.index]
    wide["paper ms (A100)"] = [paper.get(v, {}).get("runtime_ms", math.nan) for v in wide.index]
    return wide.reset_index()


@takes_rows
def gpt2_limits(rows: pd.DataFrame) -> pd.DataFrame:
    """Which limit each variant of the GPT-2 table runs into on the GPU that measured it: its
    achieved HBM bandwidth (bytes moved / time) and its achieved matmul rate (model FLOPs /
    time), each as a share of that GPU's datasheet peak (fp16, dense)."""
    from workbook.hardware import datasheet

    table = gpt2_table(rows).set_index("variant")
    device = str(rows["device"].dropna().iloc[0]) if "device" in rows and \
        rows["device"].notna().any() else ""
    peaks = datasheet(device) if device else None
    out = pd.DataFrame(index=table.index)
    seconds = table["runtime ms"] / 1e3
    out["HBM GB/s"] = table["HBM GB"] / seconds
    out["TFLOP/s"] = table["GFLOPs (model)"] / 1e3 / seconds
    if peaks is not None:
        out["share of HBM peak"] = out["HBM GB/s"] / peaks.hbm_gb_s
        out["share of fp16 peak"] = out["TFLOP/s"] / peaks.tflops["fp16"]
    out["device"] = peaks.name if peaks is not None else (device or "unknown")
    return out.reset_index()


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


def run_recompute(cfg: RecomputeConfig, seed: int) -> pd.DataFrame:
    """Backward memory with P saved (vanilla) vs P recomputed from the log-sum-exp."""
    rows: list[dict] = []
    cases = [Case(v, n, cfg.head_dim, cfg.batch, cfg.n_heads, cfg.dtype, False, "fwd+bwd")
             for n in cfg.seq_lens for v in cfg.variants]
    for case in cases:
        try:
            rows.append(_row(case, "saved_bytes", saved_bytes(case, seed) / 1e6))
        except Exception as exc:  # noqa: BLE001 - a failed case is a row, not a lost sweep
            rows += _failure_rows(case, ("saved_bytes",), exc)
        _free()
        size, heads = DTYPES[case.dtype].itemsize, case.batch * case.n_heads
        n, d = case.seq_len, case.head_dim
        p_saved = heads * (n * n + n * d) * size      # P and Q·scale
        lse_saved = heads * (n * d * size + n * 4)    # O and the log-sum-exp
        rows.append(_row(case, "saved_bytes",
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
        min_gpus={"small": 0, "full": 1}, timeout_s=300),
    Experiment(
        name="attention_traffic",
        summary="HBM bytes (ncu) per variant vs seq_len, fwd and fwd+bwd, beside the IO model",
        notebook="07_flash_attention", run=run_traffic,
        presets={"small": TrafficConfig(("vanilla", "sdpa_flash"), (256, 512, 1024), 64, 1, 4),
                 "full": TrafficConfig(("vanilla", "sdpa_math", "sdpa_efficient", "sdpa_flash",
                                        "sdpa_cudnn", "triton"),
                                       (512, 1024, 2048, 4096, 8192, 16384), 128, 2, 16)},
        min_gpus={"small": 0, "full": 1}, timeout_s=600),
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
        min_gpus={"small": 0, "full": 1}, timeout_s=600),
    Experiment(
        name="attention_gpt2_medium",
        summary="FlashAttention paper Fig. 2 on this GPU: GPT-2 medium attention fwd+bwd",
        notebook="07_flash_attention", run=run_gpt2_medium,
        presets={"small": Gpt2Config(("vanilla", "tiled"), batch=2, n_heads=2, seq_len=128,
                                     dtype="float32", repeats=2),
                 "full": Gpt2Config(("vanilla", "sdpa_flash", "triton"))},
        min_gpus={"small": 0, "full": 1}, timeout_s=400),
    Experiment(
        name="attention_recompute",
        summary="backward memory: P saved (vanilla) vs recomputed from the log-sum-exp",
        notebook="07_flash_attention", run=run_recompute,
        presets={"small": RecomputeConfig(("vanilla", "tiled", "sdpa_flash"), (128, 256, 512),
                                          64, 1, 2, "float32", 2),
                 "full": RecomputeConfig(("vanilla", "sdpa_flash", "triton"),
                                         (1024, 2048, 4096, 8192, 16384), 64, 4, 16,
                                         "bfloat16", 5)},
        min_gpus={"small": 0, "full": 1}, timeout_s=400),
]


# ========================================================================= notebook helpers


def notebook_rows(name: str, *, live_on_cpu: bool) -> pd.DataFrame:
    """What 07 shows: a GPU runs the full preset live; a CPU shows the recorded GPU rows, and
    runs the small preset live only where that means something on a CPU (``live_on_cpu``)."""
    from workbook import registry, results

    registry.get(name)  # an unknown name: one line listing the experiments
    check_flag("live_on_cpu", live_on_cpu)
    if torch.cuda.is_available():
        return registry.live_or_recorded(name)
    recorded = results.load(name)
    if live_on_cpu or recorded.empty:
        if recorded.empty:
            print(f"{name}: no recorded GPU rows yet; running the small preset on this CPU.")
        live = registry.live_or_recorded(name, "small")
        if "device" not in live.columns:  # live rows carry no provenance until recorded
            from workbook.hardware import detect

            live = live.assign(device=detect().name)
        return pd.concat([live, recorded], ignore_index=True)
    print(f"{name}: no GPU here; showing the rows recorded on a GPU.")
    return recorded


KERNELS = {"forward": ("_tile_loop", "_attn_fwd"),
           "backward": ("_attn_bwd_delta", "_dkdv_tiles", "_attn_bwd_dkdv", "_dq_tiles",
                        "_attn_bwd_dq")}


def kernel_source(part: str = "forward") -> str:
    """The Triton kernels' source text, ``forward`` or ``backward`` (readable without Triton
    installed)."""
    import ast

    check_choice("part", part, tuple(KERNELS))
    path = Path(__file__).with_name("flash_triton.py")
    text = path.read_text()
    lines, found = text.splitlines(), {}
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef) and node.name in KERNELS[part]:
            start = min([d.lineno for d in node.decorator_list] + [node.lineno]) - 1
            found[node.name] = "\n".join(line[4:] for line in lines[start:node.end_lineno])
    if len(found) != len(KERNELS[part]):
        raise WorkbookError(f"the Triton {part} kernels were not found in "
                            "workbook/flash_triton.py")
    return "\n\n\n".join(found[name] for name in KERNELS[part])



def recorded_device(default: str = "H100") -> str:
    """This GPU's name, else the GPU the attention rows were recorded on, else ``default``."""
    from workbook import results

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    rows = results.load("attention_timing")
    return str(rows["device"].iloc[0]) if not rows.empty else default


def size_explorer(device_name: str | None = None):
    """Sliders (seq_len, head_dim, batch, tile rows) over the IO model: HBM bytes vs seq_len,
    and one line comparing the N×N matrix S with this GPU's SRAM and HBM."""
    from workbook import plots, widgets

    device_name = device_name or recorded_device()
    seq_lens = [2**k for k in range(8, 17)]
    fig = plots.figure(f"Attention forward HBM traffic by the IO model ({device_name})",
                       "seq_len", "GB moved (bf16)", log_x=True, log_y=True)
    names = {"vanilla": "vanilla: Θ(Nd + N²)", "flash_no_l2": "flash, no L2: Θ(N²d²/M)",
             "minimum": "minimum: Q, K, V in, O out"}
    for key, name in names.items():  # vanilla keeps its colour from the measured plots
        fig.add_scatter(name=name, mode="lines", line={"color": plots.color_for(key)})

    def draw(fig, seq_len, head_dim, batch, tile):
        facts = s_matrix_vs_memory(seq_len, head_dim, batch, 16, tile,
                                   device_name=device_name)
        for trace, algorithm in zip(fig.data, names, strict=True):
            trace.x, trace.y = seq_lens, [io_bytes(algorithm, n, head_dim, batch=batch,
                                                   n_heads=16, block_m=tile) / 1e9
                                          for n in seq_lens]
        fig.layout.shapes = [{"type": "line", "x0": seq_len, "x1": seq_len, "y0": 0, "y1": 1,
                              "yref": "paper", "line": {"dash": "dot", "color": "#888"}}]
        fits = "fits" if facts["tile_kb"] <= facts["sram_per_sm_kb"] else "does NOT fit"
        return (f"S for batch {batch} × 16 heads at N={seq_len}: {facts['s_mb']:,.0f} MB = "
                f"{facts['s_over_sram']:,.0f}× all SRAM, {facts['s_over_hbm']:.1%} of HBM. "
                f"One tile (Q, K, V {tile}×{head_dim} + S {tile}×{tile} fp32) is "
                f"{facts['tile_kb']:.0f} KB: it {fits} in one SM's "
                f"{facts['sram_per_sm_kb']:.0f} KB.")

    return widgets.Explorer({
        "seq_len": widgets.dropdown("seq_len", seq_lens, 4096),
        "head_dim": widgets.dropdown("head_dim", [64, 128, 256], 128),
        "batch": widgets.slider("batch", 1, 64, 1, 4),
        "tile": widgets.dropdown("tile rows", [16, 32, 64, 128, 256], 128)}, draw, fig)


@takes_rows
def exactness_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Relative error of the output per variant (columns) and dtype, with the band, per device."""
    ok = rows[(rows["status"] == "ok") & (rows["metric"] == "rel_error")]
    table = ok.pivot_table(index=["device", "dtype", "band"], columns="variant", values="value",
                           aggfunc="max")
    return table.map(lambda x: f"{x:.1e}" if x == x else "—")


def _value(rows: pd.DataFrame, **where) -> float:
    hit = rows[rows["status"] == "ok"]
    for key, value in where.items():
        hit = hit[hit[key] == value]
    return float(hit["value"].iloc[0]) if len(hit) else math.nan


def _met(value: float, ok: bool) -> str:
    return "not measured" if value != value else "yes" if ok else "NO"


@takes_rows
def targets(traffic: pd.DataFrame, timing: pd.DataFrame, gpt2: pd.DataFrame) -> pd.DataFrame:
    """The issue's three targets, computed from (recorded) rows."""
    at = {"seq_len": 4096, "head_dim": 128, "mode": "fwd"}
    minimum = _value(traffic, variant="model: minimum", metric="hbm_bytes", **at)
    reads = _value(traffic, variant="triton", metric="hbm_read", **at)
    total = _value(traffic, variant="triton", metric="hbm_bytes", **at)
    rows = [("Triton fwd HBM bytes / minimum (N=4096, d=128, bf16)", "≤ 1.15", total / minimum,
             _met(total, total / minimum <= 1.15)),
            ("  of which reads / minimum reads (Q, K, V once)", "≈ 1", reads / (minimum * 3 / 4),
             _met(reads, reads / (minimum * 3 / 4) <= 1.15))]
    for head_dim, causal in itertools.product((64, 128), (False, True)):
        sel = {"seq_len": 4096, "head_dim": head_dim, "causal": causal, "mode": "fwd",
               "metric": "throughput"}
        ratio = _value(timing, variant="triton", **sel) / _value(timing, variant="sdpa_flash",
                                                                   **sel)
        rows.append((f"Triton / SDPA FA2 fwd TFLOP/s (N=4096, d={head_dim}, causal={causal})",
                     "≥ 0.8", ratio, _met(ratio, ratio >= 0.8)))
    ratio = (_value(gpt2, variant="vanilla", metric="hbm_bytes")
             / _value(gpt2, variant="sdpa_flash", metric="hbm_bytes"))
    paper = PAPER_FIG2["standard"]["hbm_gb"] / PAPER_FIG2["flash"]["hbm_gb"]
    rows.append(("GPT-2 medium fwd+bwd HBM: vanilla / FlashAttention", f"paper {paper:.1f}×",
                 ratio, "reported" if ratio == ratio else "not measured"))
    frame = pd.DataFrame(rows, columns=["target", "wanted", "measured", "met"])
    frame["measured"] = frame["measured"].round(3)
    return frame


@takes_rows
def claims(traffic: pd.DataFrame, timing: pd.DataFrame, gpt2: pd.DataFrame,
           recompute: pd.DataFrame) -> pd.DataFrame:
    """The lecture's claims about FlashAttention, each against a recorded measurement."""
    from workbook.claims import Claim, claims_table
    from workbook.results import provenance_label

    std, fa = PAPER_FIG2["standard"], PAPER_FIG2["flash"]
    gpt = {m: (_value(gpt2, variant="vanilla", metric=m), _value(gpt2, variant="sdpa_flash",
                                                                   metric=m))
           for m in ("hbm_bytes", "time", "flops")}
    where = provenance_label(gpt2[gpt2["source"] == "recorded"]) if (
        gpt2["source"] == "recorded").any() else "this machine"

    def t(variant: str, n: int) -> float:
        return _value(timing, variant=variant, seq_len=n, head_dim=128, mode="fwd+bwd",
                      causal=False, metric="time")

    def mem(variant: str, n: int) -> float:
        return _value(recompute, variant=variant, seq_len=n, metric="extra_peak_memory")

    n_hi = max(recompute.loc[recompute["status"] == "ok", "seq_len"], default=0)
    flash_growth = mem("sdpa_flash", n_hi) / mem("sdpa_flash", n_hi // 2)
    return claims_table([
        Claim("HBM reads+writes ~10× fewer (GPT-2 medium, fwd+bwd)", "paper Fig. 2 / lecture",
              std["hbm_gb"] / fa["hbm_gb"], gpt["hbm_bytes"][0] / gpt["hbm_bytes"][1], "×",
              where),
        Claim("runtime ~5× faster (GPT-2 medium, fwd+bwd)", "paper Fig. 2 / lecture",
              std["runtime_ms"] / fa["runtime_ms"], gpt["time"][0] / gpt["time"][1], "×", where),
        Claim("more FLOPs (recomputation in the backward)", "paper Fig. 2 (ours: FLOP model)",
              fa["gflops"] / std["gflops"], gpt["flops"][1] / gpt["flops"][0], "×", where),
        Claim("extra memory O(N): doubling N doubles it", "lecture", 2.0, flash_growth, "×",
              where),
        Claim("longer sequences gain more: speedup at N=512", "lecture table", 1.7,
              t("vanilla", 512) / t("sdpa_flash", 512), "×", where, rel_tol=0.25),
        Claim("longer sequences gain more: speedup at N=8192", "lecture table", 5.4,
              t("vanilla", 8192) / t("sdpa_flash", 8192), "×", where, rel_tol=0.25),
    ])
