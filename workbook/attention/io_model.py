"""The analytic model: FLOPs of attention and the HBM bytes each algorithm must move.

Standard attention writes S and P (N×N) to HBM and reads them back, kernel after kernel
(:func:`vanilla_io_steps`); FlashAttention streams K and V through SRAM once per query tile
(:func:`io_bytes`); :func:`memory_hierarchy` and :func:`s_matrix_vs_memory` say why S does not
fit on chip.
"""

from __future__ import annotations

import math

import pandas as pd

from workbook.config import WorkbookError, check_choice, check_flag, check_range
from workbook.hardware import DATASHEET, datasheet

__all__ = ["MODES", "BACKWARD_FACTOR", "BACKWARD_FACTOR_STORED", "RECOMPUTES", "flops",
           "vanilla_io_steps", "io_bytes", "memory_hierarchy", "s_matrix_vs_memory"]

MODES: tuple[str, ...] = ("fwd", "fwd+bwd")
# Backward FLOPs over forward FLOPs, counting the N²·d matmuls (the forward has two: Q Kᵀ, P V).
# A backward that recomputes P does five: Q Kᵀ again, dV = Pᵀ dO, dP = dO Vᵀ, dQ = dS K,
# dK = dSᵀ Q: 2.5× the forward, FlashAttention-2's convention. One that stored P (vanilla,
# sdpa_math) does the last four: 2×. Softmax, mask and dropout (elementwise, N² each) are not
# counted. The FlashAttention paper's GFLOPs are on a basis it does not state (at its shape
# they are an order of magnitude below this count): only ratios compare (views.flops_note).
BACKWARD_FACTOR = 2.5
BACKWARD_FACTOR_STORED = 2.0
RECOMPUTES: dict[str, bool] = {"vanilla": False, "sdpa_math": False}  # every other: True


def flops(seq_len: int, head_dim: int, *, batch: int = 1, n_heads: int = 1,
          causal: bool = False, mode: str = "fwd", recompute: bool = True) -> float:
    """4·N²·d per head forward (two matmuls), halved when causal; the backward 2.5× the
    forward where it recomputes P (FlashAttention-2's count, which the timing sweep uses for
    every variant) and 2× where P was stored (``recompute=False``: vanilla's own work)."""
    check_choice("mode", mode, MODES)
    check_flag("recompute", recompute)
    fwd = 4.0 * seq_len**2 * head_dim * batch * n_heads / (2 if causal else 1)
    factor = BACKWARD_FACTOR if recompute else BACKWARD_FACTOR_STORED
    return fwd * (1 + factor) if mode == "fwd+bwd" else fwd


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
    """HBM vs on-chip SRAM of a GPU, from the datasheet table in ``workbook.hardware``, all in
    one unit, MiB (2²⁰ bytes): the datasheet's HBM GB are decimal (10⁹ bytes), its L2 MB and
    shared-memory KB binary, as NVIDIA counts caches."""
    peaks = datasheet(device_name)
    if peaks is None:
        known = ", ".join(key for key, _ in DATASHEET)
        raise WorkbookError(f"no datasheet entry for {device_name!r}; known: {known}")
    sram_mib = peaks.n_sm * peaks.smem_per_sm_kb / 1024
    # The datasheet gives HBM's bandwidth only: a dash, not NaN, for L2 and SRAM.
    rows = [(f"HBM (GPU memory, {peaks.memory_gb:g} GB)", peaks.memory_gb * 1e9 / 2**20,
             peaks.hbm_gb_s),
            ("L2 cache", peaks.l2_mb, "–"),
            (f"SRAM (shared memory, {peaks.n_sm} SMs × {peaks.smem_per_sm_kb} KiB)", sram_mib,
             "–")]
    frame = pd.DataFrame(rows, columns=["memory", "size (MiB)", "bandwidth (GB/s)"])
    frame["times SRAM"] = frame["size (MiB)"] / sram_mib
    frame["device"] = peaks.name
    return frame


def s_matrix_vs_memory(seq_len: int, head_dim: int, batch: int, n_heads: int, block: int,
                       *, dtype_bytes: int = 2, device_name: str = "H100") -> dict[str, float]:
    """What the sliders show: the size of S (MiB) against SRAM and HBM (the same unit, from
    :func:`memory_hierarchy`), and one tile's footprint against one SM's shared memory (KiB)."""
    check_range("seq_len", seq_len, 16, 1 << 20)
    check_range("head_dim", head_dim, 16, 512)
    check_range("block", block, 16, 1024)
    hier = memory_hierarchy(device_name)["size (MiB)"]
    sram_mib, hbm_mib = float(hier.iloc[2]), float(hier.iloc[0])
    s_mib = batch * n_heads * seq_len**2 * dtype_bytes / 2**20
    # One program holds a Q tile, a K tile, a V tile (block × d each) and S/P for the tile.
    tile_kib = (3 * block * head_dim * dtype_bytes + block * block * 4) / 1024
    return {"s_mib": s_mib, "s_over_sram": s_mib / sram_mib, "s_over_hbm": s_mib / hbm_mib,
            "tile_kib": tile_kib, "sram_per_sm_kib": sram_mib * 1024 / _n_sm(device_name),
            "vanilla_gb": io_bytes("vanilla", seq_len, head_dim, batch=batch, n_heads=n_heads,
                                   dtype_bytes=dtype_bytes) / 1e9,
            "minimum_gb": io_bytes("minimum", seq_len, head_dim, batch=batch, n_heads=n_heads,
                                   dtype_bytes=dtype_bytes) / 1e9,
            "flash_no_l2_gb": io_bytes("flash_no_l2", seq_len, head_dim, batch=batch,
                                       n_heads=n_heads, dtype_bytes=dtype_bytes,
                                       block_m=block) / 1e9}


def _n_sm(device_name: str) -> int:
    peaks = datasheet(device_name)
    return peaks.n_sm if peaks else 1
