"""The backward of the workbook's Triton FlashAttention, and the autograd Function that pairs
it with the forward of :mod:`workbook.attention.flash_triton`.

FlashAttention-2's algorithm in three kernels, mirroring the PyTorch
:func:`workbook.attention.tiled.tiled_attention_backward` (read that first):

1. ``_attn_bwd_delta``: D = rowsum(dO ∘ O), one number per query row;
2. ``_attn_bwd_dkdv``: one program per K/V tile; it streams the query tiles through SRAM,
   rebuilds Pᵀ from Q, K and the saved log-sum-exp, and accumulates dV += Pᵀ dO and
   dK += dSᵀ Q with dS = P ∘ (dO Vᵀ − D);
3. ``_attn_bwd_dq``: one program per query tile; it streams the K/V tiles and accumulates
   dQ += dS K. A separate pass instead of atomics: every dQ row has one writer.

Nothing N×N is stored in either direction: P is recomputed, which costs a second Q Kᵀ but
saves reading and writing the N² probabilities. ``TRITON_INTERPRET=1`` runs it on a CPU.

On Hopper, when the sequence is whole 128-row tiles, kernels 2 and 3 run as
``_attn_bwd_dkdv_tma`` and ``_attn_bwd_dq_tma``: the same arithmetic, their streamed tiles
fetched by the Tensor Memory Accelerator (as the forward's are).
"""

from __future__ import annotations

import functools

import torch

from workbook.attention.flash_triton import (
    LOG2_E,
    check_inputs,
    check_launch,
    fixed_forward_args,
    flash_forward,
)
from workbook.attention.flash_triton_hopper import launch_kwargs, tma_applies
from workbook.config import WorkbookError
from workbook.profiling import interpreter_numpy_fix, interpreting, triton_available

if triton_available():
    import triton
    import triton.language as tl

    @triton.jit
    def _attn_bwd_delta(Out, DO, DELTA, LSE, LSE2, stride_b, stride_h, stride_n, n_heads,
                        seq_len, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr):
        """D = rowsum(dO ∘ O) for BLOCK_M rows of one head, in float32; and the forward's
        log-sum-exp in log2 units (LSE2 = LSE·log2 e), as the other kernels' exp2 wants it
        (here rather than by a separate multiply in PyTorch: one launch fewer per call)."""
        start_m = tl.program_id(0) * BLOCK_M
        off_bh = tl.program_id(1)
        base = (off_bh // n_heads) * stride_b + (off_bh % n_heads) * stride_h
        rows = start_m + tl.arange(0, BLOCK_M)
        offs = base + rows[:, None] * stride_n + tl.arange(0, HEAD_DIM)[None, :]
        o = tl.load(Out + offs, mask=rows[:, None] < seq_len, other=0.0).to(tl.float32)
        do = tl.load(DO + offs, mask=rows[:, None] < seq_len, other=0.0).to(tl.float32)
        tl.store(DELTA + off_bh * seq_len + rows, tl.sum(o * do, 1), mask=rows < seq_len)
        lse = tl.load(LSE + off_bh * seq_len + rows, mask=rows < seq_len, other=0.0)
        tl.store(LSE2 + off_bh * seq_len + rows, lse * 1.4426950408889634, mask=rows < seq_len)

    @triton.jit
    def _dkdv_tiles(dk, dv, k, v, q_ptrs, do_ptrs, lse_ptr, delta_ptr, dq_ptrs, stride_n,
                    offs_m, cols, lo, hi, seq_len, qk_scale,
                    BLOCK_M: tl.constexpr, CAUSAL_MASK: tl.constexpr, EDGE_MASK: tl.constexpr,
                    WITH_DQ: tl.constexpr):
        """For one K/V tile (k, v in SRAM; ``cols`` its key positions), stream the query
        tiles [lo, hi): rebuild Pᵀ, then dV += Pᵀ dO and dK += dSᵀ Q (scaled by the caller).
        ``WITH_DQ``: also add this tile's dS K to the float32 dQ rows in HBM by atomics
        (FlashAttention-2's way: 5 products per tile pair instead of 5 here + 2 more in a
        separate dQ pass, paid for in atomic traffic).

        Everything is transposed (keys along rows) so that each product is a plain tl.dot;
        lse is in log2 units, as the forward's exp2 is.
        """
        for start_m in range(lo, hi, BLOCK_M):
            rows = start_m + offs_m
            if EDGE_MASK:  # the last, partial query tile
                q = tl.load(q_ptrs + start_m * stride_n, mask=rows[:, None] < seq_len, other=0.0)
                do = tl.load(do_ptrs + start_m * stride_n, mask=rows[:, None] < seq_len,
                             other=0.0)
                lse = tl.load(lse_ptr + rows, mask=rows < seq_len, other=0.0)
                delta = tl.load(delta_ptr + rows, mask=rows < seq_len, other=0.0)
            else:
                q = tl.load(q_ptrs + start_m * stride_n)                 # (BLOCK_M, HEAD_DIM)
                do = tl.load(do_ptrs + start_m * stride_n)
                lse = tl.load(lse_ptr + rows)
                delta = tl.load(delta_ptr + rows)
            s_t = tl.dot(k, tl.trans(q)) * qk_scale                      # Sᵀ: (BLOCK_N, BLOCK_M)
            p_t = tl.math.exp2(s_t - lse[None, :])                       # Pᵀ, recomputed exactly
            if CAUSAL_MASK:
                p_t = tl.where(rows[None, :] >= cols[:, None], p_t, 0.0)
            if EDGE_MASK:
                p_t = tl.where(rows[None, :] < seq_len, p_t, 0.0)
            dv = tl.dot(p_t.to(do.dtype), do, dv)                        # dV += Pᵀ dO
            dp_t = tl.dot(v, tl.trans(do))                               # (dO Vᵀ)ᵀ
            ds_t = p_t * (dp_t - delta[None, :])                         # dSᵀ, before the scale
            dk = tl.dot(ds_t.to(q.dtype), q, dk)                         # dK += dSᵀ Q
            if WITH_DQ:                                                  # dQ += dS K
                dq = tl.dot(tl.trans(ds_t.to(k.dtype)), k)
                tl.atomic_add(dq_ptrs + start_m * stride_n, dq, mask=rows[:, None] < seq_len)
        return dk, dv

    @triton.jit
    def _attn_bwd_dkdv(Q, K, V, DO, LSE2, DELTA, DK, DV, DQ_ACC, qk_scale, sm_scale,
                       stride_b, stride_h, stride_n, n_heads, seq_len,
                       HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                       CAUSAL: tl.constexpr, WITH_DQ: tl.constexpr):
        """dK and dV for BLOCK_N keys of one head (BLOCK_N a multiple of BLOCK_M); with
        ``WITH_DQ`` also its share of dQ, added to the float32 ``DQ_ACC`` (unscaled)."""
        start_n = tl.program_id(0) * BLOCK_N
        off_bh = tl.program_id(1)
        base = (off_bh // n_heads) * stride_b + (off_bh % n_heads) * stride_h
        cols = start_n + tl.arange(0, BLOCK_N)
        offs_m = tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, HEAD_DIM)
        kv_offs = base + cols[:, None] * stride_n + offs_d[None, :]
        k = tl.load(K + kv_offs, mask=cols[:, None] < seq_len, other=0.0)   # HBM -> SRAM, once
        v = tl.load(V + kv_offs, mask=cols[:, None] < seq_len, other=0.0)
        dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
        dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
        q_ptrs = Q + base + offs_m[:, None] * stride_n + offs_d[None, :]
        do_ptrs = DO + base + offs_m[:, None] * stride_n + offs_d[None, :]
        lse_ptr, delta_ptr = LSE2 + off_bh * seq_len, DELTA + off_bh * seq_len
        dq_ptrs = DQ_ACC + base + offs_m[:, None] * stride_n + offs_d[None, :]

        # Query tiles: those crossing the diagonal (causal) need the causal mask, the partial
        # last one the edge mask, the bulk in between none. Causal keys see only later rows.
        full_end = (seq_len // BLOCK_M) * BLOCK_M
        if CAUSAL:
            diag_end = start_n + BLOCK_N
            dk, dv = _dkdv_tiles(dk, dv, k, v, q_ptrs, do_ptrs, lse_ptr, delta_ptr, dq_ptrs,
                                 stride_n, offs_m, cols, start_n, tl.minimum(diag_end, seq_len),
                                 seq_len, qk_scale, BLOCK_M, True, True, WITH_DQ)
            dk, dv = _dkdv_tiles(dk, dv, k, v, q_ptrs, do_ptrs, lse_ptr, delta_ptr, dq_ptrs,
                                 stride_n, offs_m, cols, diag_end, full_end, seq_len, qk_scale,
                                 BLOCK_M, False, False, WITH_DQ)
            dk, dv = _dkdv_tiles(dk, dv, k, v, q_ptrs, do_ptrs, lse_ptr, delta_ptr, dq_ptrs,
                                 stride_n, offs_m, cols, tl.maximum(full_end, diag_end), seq_len,
                                 seq_len, qk_scale, BLOCK_M, False, True, WITH_DQ)
        else:
            dk, dv = _dkdv_tiles(dk, dv, k, v, q_ptrs, do_ptrs, lse_ptr, delta_ptr, dq_ptrs,
                                 stride_n, offs_m, cols, 0, full_end, seq_len, qk_scale,
                                 BLOCK_M, False, False, WITH_DQ)
            dk, dv = _dkdv_tiles(dk, dv, k, v, q_ptrs, do_ptrs, lse_ptr, delta_ptr, dq_ptrs,
                                 stride_n, offs_m, cols, full_end, seq_len, seq_len, qk_scale,
                                 BLOCK_M, False, True, WITH_DQ)
        tl.store(DK + kv_offs, (dk * sm_scale).to(DK.dtype.element_ty),
                 mask=cols[:, None] < seq_len)
        tl.store(DV + kv_offs, dv.to(DV.dtype.element_ty), mask=cols[:, None] < seq_len)

    @triton.jit
    def _dq_tiles(dq, q, do, lse, delta, k_ptrs, v_ptrs, stride_n, rows, offs_n,
                  lo, hi, seq_len, qk_scale,
                  BLOCK_N: tl.constexpr, CAUSAL_MASK: tl.constexpr, EDGE_MASK: tl.constexpr):
        """For one query tile (q, dO in SRAM), stream the K/V tiles [lo, hi): rebuild P, then
        dQ += dS K (scaled by the caller)."""
        for start_n in range(lo, hi, BLOCK_N):
            cols = start_n + offs_n
            if EDGE_MASK:  # the last, partial key tile
                k = tl.load(k_ptrs + start_n * stride_n, mask=cols[:, None] < seq_len, other=0.0)
                v = tl.load(v_ptrs + start_n * stride_n, mask=cols[:, None] < seq_len, other=0.0)
            else:
                k = tl.load(k_ptrs + start_n * stride_n)                 # (BLOCK_N, HEAD_DIM)
                v = tl.load(v_ptrs + start_n * stride_n)
            s = tl.dot(q, tl.trans(k)) * qk_scale                        # (BLOCK_M, BLOCK_N)
            p = tl.math.exp2(s - lse[:, None])
            if CAUSAL_MASK:
                p = tl.where(rows[:, None] >= cols[None, :], p, 0.0)
            if EDGE_MASK:
                p = tl.where(cols[None, :] < seq_len, p, 0.0)
            dp = tl.dot(do, tl.trans(v))                                 # dO Vᵀ
            ds = p * (dp - delta[:, None])
            dq = tl.dot(ds.to(k.dtype), k, dq)                           # dQ += dS K
        return dq

    @triton.jit
    def _attn_bwd_dq(Q, K, V, DO, LSE2, DELTA, DQ, qk_scale, sm_scale,
                     stride_b, stride_h, stride_n, n_heads, seq_len,
                     HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                     CAUSAL: tl.constexpr):
        """dQ for BLOCK_M query rows of one head (BLOCK_M a multiple of BLOCK_N)."""
        start_m = tl.program_id(0) * BLOCK_M
        off_bh = tl.program_id(1)
        base = (off_bh // n_heads) * stride_b + (off_bh % n_heads) * stride_h
        rows = start_m + tl.arange(0, BLOCK_M)
        offs_n = tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, HEAD_DIM)
        q_offs = base + rows[:, None] * stride_n + offs_d[None, :]
        q = tl.load(Q + q_offs, mask=rows[:, None] < seq_len, other=0.0)
        do = tl.load(DO + q_offs, mask=rows[:, None] < seq_len, other=0.0)
        lse = tl.load(LSE2 + off_bh * seq_len + rows, mask=rows < seq_len, other=0.0)
        delta = tl.load(DELTA + off_bh * seq_len + rows, mask=rows < seq_len, other=0.0)
        dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
        k_ptrs = K + base + offs_n[:, None] * stride_n + offs_d[None, :]
        v_ptrs = V + base + offs_n[:, None] * stride_n + offs_d[None, :]

        # The same split as the forward: unmasked bulk, then the diagonal or the partial tile.
        if CAUSAL:
            dq = _dq_tiles(dq, q, do, lse, delta, k_ptrs, v_ptrs, stride_n, rows, offs_n,
                           0, start_m, seq_len, qk_scale, BLOCK_N, False, False)
            dq = _dq_tiles(dq, q, do, lse, delta, k_ptrs, v_ptrs, stride_n, rows, offs_n,
                           start_m, tl.minimum(start_m + BLOCK_M, seq_len), seq_len, qk_scale,
                           BLOCK_N, True, True)
        else:
            full_end = (seq_len // BLOCK_N) * BLOCK_N
            dq = _dq_tiles(dq, q, do, lse, delta, k_ptrs, v_ptrs, stride_n, rows, offs_n,
                           0, full_end, seq_len, qk_scale, BLOCK_N, False, False)
            dq = _dq_tiles(dq, q, do, lse, delta, k_ptrs, v_ptrs, stride_n, rows, offs_n,
                           full_end, seq_len, seq_len, qk_scale, BLOCK_N, False, True)
        tl.store(DQ + q_offs, (dq * sm_scale).to(DQ.dtype.element_ty),
                 mask=rows[:, None] < seq_len)

    # Tiles for the backward: the K/V-tile kernel keeps two BLOCK_N×d accumulators in
    # registers, so its query tiles are small; the dQ kernel the other way round. Chosen by
    # `scripts/gpu_flash_forward_tuning.py --sweep` on the H200 (72ad24de8360, B4 H16 d128
    # bf16, each kernel timed alone by the profiler, ms at N = 16384 / 4096):
    # dK/dV 32x64 w4 s2 34.1 / 2.40, 64x64 w4 s2 36.3 / 2.19, 64x128 w8 s3 37.1 / 2.30
    # (the earlier list's pick: 38.2 / 2.48); dQ 128x64 w8 s3 19.4 / 1.26, 128x128 w8 s2
    # 21.4 / 1.44, 64x64 w4 s2 22.3 / 1.39 (earlier: 21.8 / 1.67).
    DKDV_CONFIGS = [
        triton.Config({"BLOCK_M": 32, "BLOCK_N": 64}, num_warps=4, num_stages=2),
        triton.Config({"BLOCK_M": 64, "BLOCK_N": 64}, num_warps=4, num_stages=2),
        triton.Config({"BLOCK_M": 64, "BLOCK_N": 128}, num_warps=8, num_stages=3),
    ]
    DQ_CONFIGS = [
        triton.Config({"BLOCK_M": 128, "BLOCK_N": 64}, num_warps=8, num_stages=3),
        triton.Config({"BLOCK_M": 128, "BLOCK_N": 128}, num_warps=8, num_stages=2),
        triton.Config({"BLOCK_M": 64, "BLOCK_N": 64}, num_warps=4, num_stages=2),
    ]
    # WITH_DQ's atomics add into DQ_ACC: each timed trial starts it from zero again
    _attn_bwd_dkdv_tuned = triton.autotune(
        DKDV_CONFIGS, key=["seq_len", "HEAD_DIM", "CAUSAL", "WITH_DQ"], cache_results=True,
        reset_to_zero=["DQ_ACC"])(_attn_bwd_dkdv)
    _attn_bwd_dq_tuned = triton.autotune(
        DQ_CONFIGS, key=["seq_len", "HEAD_DIM", "CAUSAL"], cache_results=True)(_attn_bwd_dq)


    # ------------------------------------------------- the backward on Hopper, through TMA
    # The same two kernels, with their Q/dO (dK/dV kernel) and K/V (dQ kernel) tiles fetched
    # by the Tensor Memory Accelerator, as the forward's are: one asynchronous instruction per
    # tile, which Triton pipelines under the matmuls. Used on Hopper or newer when the
    # sequence is whole 128-row tiles (a tile must not straddle two heads) and dQ has its own
    # pass; the kernels above cover everything else.
    @triton.jit
    def _dkdv_tiles_tma(dk, dv, k, v, desc_q, desc_do, lse_ptr, delta_ptr, row0, offs_m, cols,
                        lo, hi, qk_scale, BLOCK_M: tl.constexpr, CAUSAL_MASK: tl.constexpr):
        """:func:`_dkdv_tiles` for whole tiles, Q and dO fetched by TMA."""
        for start_m in tl.range(lo, hi, BLOCK_M):
            rows = start_m + offs_m
            q = desc_q.load([row0 + start_m, 0])
            do = desc_do.load([row0 + start_m, 0])
            lse = tl.load(lse_ptr + rows)
            p_t = tl.math.exp2(tl.dot(k, tl.trans(q)) * qk_scale - lse[None, :])  # Pᵀ
            if CAUSAL_MASK:
                p_t = tl.where(rows[None, :] >= cols[:, None], p_t, 0.0)
            dv = tl.dot(p_t.to(do.dtype), do, dv)
            ds_t = p_t * (tl.dot(v, tl.trans(do)) - tl.load(delta_ptr + rows)[None, :])
            dk = tl.dot(ds_t.to(q.dtype), q, dk)
        return dk, dv

    @triton.jit
    def _attn_bwd_dkdv_tma(desc_q, desc_k, desc_v, desc_do, LSE2, DELTA, desc_dk, desc_dv,
                           qk_scale, sm_scale, seq_len, HEAD_DIM: tl.constexpr,
                           BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr):
        """:func:`_attn_bwd_dkdv` on (batch·heads·seq_len, HEAD_DIM) views, through TMA."""
        start_n = tl.program_id(0) * BLOCK_N
        off_bh = tl.program_id(1)
        row0 = off_bh * seq_len
        cols = start_n + tl.arange(0, BLOCK_N)
        offs_m = tl.arange(0, BLOCK_M)
        k = desc_k.load([row0 + start_n, 0])
        v = desc_v.load([row0 + start_n, 0])
        dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
        dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
        lse_ptr, delta_ptr = LSE2 + row0, DELTA + row0
        if CAUSAL:  # keys see only later rows: the diagonal tiles masked, the rest not
            dk, dv = _dkdv_tiles_tma(dk, dv, k, v, desc_q, desc_do, lse_ptr, delta_ptr, row0,
                                     offs_m, cols, start_n, start_n + BLOCK_N, qk_scale,
                                     BLOCK_M, True)
            dk, dv = _dkdv_tiles_tma(dk, dv, k, v, desc_q, desc_do, lse_ptr, delta_ptr, row0,
                                     offs_m, cols, start_n + BLOCK_N, seq_len, qk_scale,
                                     BLOCK_M, False)
        else:
            dk, dv = _dkdv_tiles_tma(dk, dv, k, v, desc_q, desc_do, lse_ptr, delta_ptr, row0,
                                     offs_m, cols, 0, seq_len, qk_scale, BLOCK_M, False)
        desc_dk.store([row0 + start_n, 0], (dk * sm_scale).to(desc_dk.dtype))
        desc_dv.store([row0 + start_n, 0], dv.to(desc_dv.dtype))

    @triton.jit
    def _dq_tiles_tma(dq, q, do, lse, delta, desc_k, desc_v, row0, rows, offs_n, lo, hi,
                      qk_scale, BLOCK_N: tl.constexpr, CAUSAL_MASK: tl.constexpr):
        """:func:`_dq_tiles` for whole tiles, K and V fetched by TMA."""
        for start_n in tl.range(lo, hi, BLOCK_N):
            k = desc_k.load([row0 + start_n, 0])
            v = desc_v.load([row0 + start_n, 0])
            p = tl.math.exp2(tl.dot(q, tl.trans(k)) * qk_scale - lse[:, None])
            if CAUSAL_MASK:
                p = tl.where(rows[:, None] >= (start_n + offs_n)[None, :], p, 0.0)
            ds = p * (tl.dot(do, tl.trans(v)) - delta[:, None])
            dq = tl.dot(ds.to(k.dtype), k, dq)
        return dq

    @triton.jit
    def _attn_bwd_dq_tma(desc_q, desc_k, desc_v, desc_do, LSE2, DELTA, desc_dq, qk_scale,
                         sm_scale, seq_len, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
                         BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr):
        """:func:`_attn_bwd_dq` on (batch·heads·seq_len, HEAD_DIM) views, through TMA."""
        start_m = tl.program_id(0) * BLOCK_M
        off_bh = tl.program_id(1)
        row0 = off_bh * seq_len
        rows = start_m + tl.arange(0, BLOCK_M)
        offs_n = tl.arange(0, BLOCK_N)
        q = desc_q.load([row0 + start_m, 0])
        do = desc_do.load([row0 + start_m, 0])
        lse = tl.load(LSE2 + row0 + rows)
        delta = tl.load(DELTA + row0 + rows)
        dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
        if CAUSAL:
            dq = _dq_tiles_tma(dq, q, do, lse, delta, desc_k, desc_v, row0, rows, offs_n,
                               0, start_m, qk_scale, BLOCK_N, False)
            dq = _dq_tiles_tma(dq, q, do, lse, delta, desc_k, desc_v, row0, rows, offs_n,
                               start_m, start_m + BLOCK_M, qk_scale, BLOCK_N, True)
        else:
            dq = _dq_tiles_tma(dq, q, do, lse, delta, desc_k, desc_v, row0, rows, offs_n,
                               0, seq_len, qk_scale, BLOCK_N, False)
        desc_dq.store([row0 + start_m, 0], (dq * sm_scale).to(desc_dq.dtype))

    def _bwd_blocks(nargs: dict) -> None:
        """Autotuner pre-hook: the descriptors' tile shapes follow the configuration (rows
        tiled by BLOCK_M: Q, dO, dQ; by BLOCK_N: K, V, dK, dV)."""
        bm, bn, d = nargs["BLOCK_M"], nargs["BLOCK_N"], nargs["HEAD_DIM"]
        for name, rows in (("desc_q", bm), ("desc_do", bm), ("desc_dq", bm), ("desc_k", bn),
                           ("desc_v", bn), ("desc_dk", bn), ("desc_dv", bn)):
            if name in nargs:
                nargs[name].block_shape = [rows, d]

    # The winners of `scripts/gpu_flash_forward_tuning.py --bwd` on the H200 (749ffca, B4 H16
    # d128 bf16, each kernel alone by the profiler, ms at N = 16384 / 4096 / 16384 causal):
    # dK/dV 64x64 w4 s2 30.4 / 1.82 / 14.8, 32x64 w4 s3 33.0 / 2.14 / 21.1, 64x128 w8 s2
    # 35.8 / 2.20 / 19.0 (the portable kernel, autotuned: 36.6 / 2.21 / 18.2); dQ 128x64 w8 s3
    # 18.0 / 1.20 / 9.4 (portable 19.1 / 1.28 / 10.5), every other dQ tiling slower at all
    # three, so the autotuner, whose own timing once picked a slower one (20.3 ms), gets one
    # alternative only. Tilings of 128 keys at 4 warps spilled (90-134 ms).
    DKDV_TMA_CONFIGS = [
        triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=st,
                      pre_hook=_bwd_blocks)
        for m, n, w, st in ((64, 64, 4, 2), (32, 64, 4, 3), (64, 128, 8, 2))]
    DQ_TMA_CONFIGS = [
        triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=st,
                      pre_hook=_bwd_blocks)
        for m, n, w, st in ((128, 64, 8, 3), (64, 64, 4, 2))]
    # The kernels themselves, for tools that compile them apart from a launch
    # (scripts/sm90_resources)
    TMA_BACKWARD_KERNELS = {"dK/dV": _attn_bwd_dkdv_tma, "dQ": _attn_bwd_dq_tma}

    @functools.cache
    def tuned_backward_tma(dtype: torch.dtype) -> tuple:
        """The two autotuned kernels (dK/dV, dQ) for one element type: one autotuner per type,
        as flash_triton_hopper's forward has (a tensor descriptor has no dtype for Triton's
        autotuner to key its picks on)."""
        return (triton.autotune(DKDV_TMA_CONFIGS, key=["seq_len", "HEAD_DIM", "CAUSAL"],
                                cache_results=True)(_attn_bwd_dkdv_tma),
                triton.autotune(DQ_TMA_CONFIGS, key=["seq_len", "HEAD_DIM", "CAUSAL"],
                                cache_results=True)(_attn_bwd_dq_tma))


# The autotuner's picks per shape (dK/dV's, dQ's), remembered so that later calls launch the
# two kernels directly, as the forward does (flash_triton_hopper._TUNED_TMA).
TUNED_BACKWARD: dict[tuple, tuple[dict, dict]] = {}


def _backward_tma(q, k, v, do, lse2, delta, dq, dk, dv, scale: float, causal: bool,
                  tiles: tuple[int, int, int, int] | None, launch: dict | None) -> None:
    """The two TMA kernels into dq, dk, dv: autotuned, or with fixed ``tiles``/``launch``."""
    from triton.tools.tensor_descriptor import TensorDescriptor

    batch, n_heads, seq_len, head_dim = q.shape
    rows = batch * n_heads * seq_len
    desc = {name: TensorDescriptor(t.view(rows, head_dim), [rows, head_dim], [head_dim, 1],
                                   [1, head_dim])  # tile shapes set per configuration
            for name, t in (("desc_q", q), ("desc_k", k), ("desc_v", v), ("desc_do", do),
                            ("desc_dq", dq), ("desc_dk", dk), ("desc_dv", dv))}
    common = (desc["desc_q"], desc["desc_k"], desc["desc_v"], desc["desc_do"], lse2, delta)
    dkdv_args = (*common, desc["desc_dk"], desc["desc_dv"], scale * LOG2_E, scale, seq_len)
    dq_args = (*common, desc["desc_dq"], scale * LOG2_E, scale, seq_len)
    bh = batch * n_heads
    key = (seq_len, head_dim, causal, q.dtype, q.device)
    if tiles is None and key not in TUNED_BACKWARD:
        tuned_dkdv, tuned_dq = tuned_backward_tma(q.dtype)
        tuned_dkdv[lambda meta: (seq_len // meta["BLOCK_N"], bh)](
            *dkdv_args, HEAD_DIM=head_dim, CAUSAL=causal)
        tuned_dq[lambda meta: (seq_len // meta["BLOCK_M"], bh)](
            *dq_args, HEAD_DIM=head_dim, CAUSAL=causal)
        if not interpreting():
            TUNED_BACKWARD[key] = (launch_kwargs(tuned_dkdv.best_config),
                                   launch_kwargs(tuned_dq.best_config))
        return
    if tiles is None:
        dkdv, dq_cfg = TUNED_BACKWARD[key]
    else:
        m1, n1, m2, n2 = tiles
        dkdv = {"BLOCK_M": m1, "BLOCK_N": n1, **(launch or {})}
        dq_cfg = {"BLOCK_M": m2, "BLOCK_N": n2, **(launch or {})}
    _bwd_blocks({**desc, **dkdv, "HEAD_DIM": head_dim})
    _attn_bwd_dkdv_tma[(seq_len // dkdv["BLOCK_N"], bh)](*dkdv_args, HEAD_DIM=head_dim,
                                                          CAUSAL=causal, **dkdv)
    _bwd_blocks({**desc, **dq_cfg, "HEAD_DIM": head_dim})
    _attn_bwd_dq_tma[(seq_len // dq_cfg["BLOCK_M"], bh)](*dq_args, HEAD_DIM=head_dim,
                                                         CAUSAL=causal, **dq_cfg)


# One configuration per kernel for runs that check numbers rather than time them
# (``flash_attention(tuned=False)``), as flash_triton.FIXED_FORWARD is for the forward.
FIXED_BACKWARD = (32, 64, 64, 64)   # flash_backward's tiles: dK/dV (M, N), dQ (M, N)
FIXED_BACKWARD_LAUNCH = {"num_warps": 4, "num_stages": 2}


def flash_backward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
                   lse: torch.Tensor, grad_out: torch.Tensor, *, causal: bool = False,
                   scale: float | None = None, tiles: tuple[int, int, int, int] | None = None,
                   launch: dict | None = None, dq_mode: str = "pass",
                   use_tma: bool | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dQ, dK, dV) by the backward kernels, from the forward's O and log-sum-exp.

    ``tiles`` = (dK/dV kernel's BLOCK_M, BLOCK_N, dQ kernel's BLOCK_M, BLOCK_N) fixes the tile
    sizes (the interpreter and the tests use small ones); left out, the autotuner picks.
    ``launch`` (``num_warps``, ``num_stages``) goes with fixed tiles to both launches.
    ``dq_mode``: "pass" (default) computes dQ in its own kernel, one writer per row, which
    recomputes P and dP; "atomic" adds each K/V tile's dS K into a float32 dQ from inside the
    dK/dV kernel (FlashAttention-2's way: two products fewer per tile pair, atomic traffic
    instead). "pass" is the default because it is faster: on an H200 (2026-12-03, 3c073cf4ea6e,
    `scripts/gpu_flash_forward_tuning.py --dq`, B4 H16 bf16, forward + backward, one run each)
    pass 73.8 ms against atomic 153.6 ms at N = 16384, d 128 (cuDNN 54.6, FA2 95.1); 5.35
    against 9.71 ms at N = 4096; 41.0 against 76.8 ms at d 64. Each program of keys adds its
    share into every query row's dQ, so dQ (N·d float32 per head) is read and written once per
    key tile, N / BLOCK_N times (256 times at N = 16384 with 64-key tiles); the two products
    it saves cost less than that traffic.

    ``use_tma``: left out, the TMA kernels run where they apply (Hopper or newer, whole
    128-row tiles, dq_mode "pass") when the tiles are autotuned; True asks for them with fixed
    tiles too (to tune them), False keeps the portable kernels (to compare the two).
    """
    check_inputs(q, k, v)
    if dq_mode not in ("pass", "atomic"):
        raise WorkbookError(f"dq_mode={dq_mode!r}; allowed: 'pass', 'atomic'")
    check_launch(launch, tma=False, fixed_tiles=tiles is not None)
    if tiles is not None and (tiles[1] % tiles[0] or tiles[2] % tiles[3]):
        raise WorkbookError(f"tiles={tiles}: the dK/dV tile's BLOCK_N must be a multiple of "
                            "its BLOCK_M, and the dQ tile's BLOCK_M of its BLOCK_N")
    batch, n_heads, seq_len, head_dim = q.shape
    scale = head_dim ** -0.5 if scale is None else scale
    # One layout for all five (B, H, N, d) tensors: the kernels take one set of strides.
    q, k, v, out, grad_out = (t.contiguous() for t in (q, k, v, out, grad_out))
    lse = lse.float().contiguous()     # the forward's own (float32, contiguous): no copy
    lse2, delta = torch.empty_like(lse), torch.empty_like(lse)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    strides = (q.stride(0), q.stride(1), q.stride(2), n_heads, seq_len)
    if interpreting():
        interpreter_numpy_fix()
        tiles = tiles or (16, 32, 32, 16)  # tl.dot needs tiles of at least 16
    tma = tma_applies(q, k, v) and dq_mode == "pass"
    if use_tma and (not tma or (tiles and any(seq_len % t for t in tiles))):
        raise WorkbookError(f"use_tma=True: the TMA backward needs a Hopper GPU (or the "
                            f"interpreter), dq_mode 'pass' and seq_len a multiple of 128 and of "
                            f"every tile; got seq_len={seq_len}, dq_mode={dq_mode!r}")
    _attn_bwd_delta[(triton.cdiv(seq_len, 64), batch * n_heads)](
        out, grad_out, delta, lse, lse2, *strides, HEAD_DIM=head_dim, BLOCK_M=64)
    if use_tma or (use_tma is None and tiles is None and tma):
        _backward_tma(q, k, v, grad_out, lse2, delta, dq, dk, dv, scale, causal, tiles, launch)
        return dq, dk, dv
    common = (q, k, v, grad_out, lse2, delta)
    fused = dq_mode == "atomic"
    # float32 for the atomics (same layout as q: the kernels share one set of strides); a
    # one-element stand-in where the dK/dV kernel does not touch it
    dq_acc = torch.zeros(q.shape if fused else (1,), dtype=torch.float32, device=q.device)
    if tiles is not None:
        m1, n1, m2, n2 = tiles
        _attn_bwd_dkdv[(triton.cdiv(seq_len, n1), batch * n_heads)](
            *common, dk, dv, dq_acc, scale * LOG2_E, scale, *strides, HEAD_DIM=head_dim,
            BLOCK_M=m1, BLOCK_N=n1, CAUSAL=causal, WITH_DQ=fused, **(launch or {}))
        if not fused:
            _attn_bwd_dq[(triton.cdiv(seq_len, m2), batch * n_heads)](
                *common, dq, scale * LOG2_E, scale, *strides, HEAD_DIM=head_dim,
                BLOCK_M=m2, BLOCK_N=n2, CAUSAL=causal, **(launch or {}))
    else:
        _attn_bwd_dkdv_tuned[lambda meta: (triton.cdiv(seq_len, meta["BLOCK_N"]),
                                           batch * n_heads)](
            *common, dk, dv, dq_acc, scale * LOG2_E, scale, *strides, HEAD_DIM=head_dim,
            CAUSAL=causal, WITH_DQ=fused)
        if not fused:
            _attn_bwd_dq_tuned[lambda meta: (triton.cdiv(seq_len, meta["BLOCK_M"]),
                                             batch * n_heads)](
                *common, dq, scale * LOG2_E, scale, *strides, HEAD_DIM=head_dim, CAUSAL=causal)
    if fused:
        dq = (dq_acc * scale).to(q.dtype)
    return dq, dk, dv


class FlashTritonFunction(torch.autograd.Function):
    """Forward: the Triton kernel (saves O and the log-sum-exp, never P).
    Backward: the Triton backward kernels, which recompute P from the log-sum-exp."""

    @staticmethod
    def forward(ctx, q, k, v, causal: bool, scale: float, tuned: bool = True):  # noqa: D102
        out, lse = flash_forward(q, k, v, causal=causal, scale=scale, store_lse=True,
                                 **fixed_forward_args(tuned))
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.causal, ctx.scale, ctx.tuned = causal, scale, tuned
        return out

    @staticmethod
    def backward(ctx, grad_out):  # noqa: D102
        q, k, v, out, lse = ctx.saved_tensors
        fixed = {} if ctx.tuned or interpreting() else {"tiles": FIXED_BACKWARD,
                                                         "launch": FIXED_BACKWARD_LAUNCH}
        dq, dk, dv = flash_backward(q, k, v, out, lse, grad_out, causal=ctx.causal,
                                    scale=ctx.scale, **fixed)
        return dq, dk, dv, None, None, None


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False,
                    scale: float | None = None, tuned: bool = True) -> torch.Tensor:
    """Differentiable attention through the Triton forward (see module docstring).

    ``tuned=False`` runs one fixed tile configuration per kernel (:data:`FIXED_FORWARD`,
    :data:`FIXED_BACKWARD`) instead of autotuning: the same algorithm, for checks of its
    numbers, which gain nothing from a search for speed."""
    check_inputs(q, k, v)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if not (q.requires_grad or k.requires_grad or v.requires_grad):
        return flash_forward(q, k, v, causal=causal, scale=scale, store_lse=False,
                             **fixed_forward_args(tuned))[0]
    return FlashTritonFunction.apply(q, k, v, causal, scale, tuned)
