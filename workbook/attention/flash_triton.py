"""The workbook's FlashAttention forward, written in Triton.

One program (a thread block) owns ``BLOCK_M`` query rows of one (batch, head). It loads its
Q tile into SRAM once, then streams K and V through SRAM in tiles of ``BLOCK_N`` rows, keeping
a running row maximum ``m``, a running sum ``l`` and an unnormalised output ``acc`` in
registers (the *online softmax*). The N×N score matrix never exists in HBM: what goes out is
O (N×d) and the log-sum-exp per row (N numbers), which the backward uses to recompute P.

This is the same algorithm as :func:`workbook.attention.tiled.tiled_attention_forward`, which
runs on a CPU and is the version to read first.

The backward is FlashAttention-2's, in three kernels, mirroring the PyTorch
:func:`workbook.attention.tiled.tiled_attention_backward` (read that first):

1. ``_attn_bwd_delta``: D = rowsum(dO ∘ O), one number per query row;
2. ``_attn_bwd_dkdv``: one program per K/V tile; it streams the query tiles through SRAM,
   rebuilds Pᵀ from Q, K and the saved log-sum-exp, and accumulates dV += Pᵀ dO and
   dK += dSᵀ Q with dS = P ∘ (dO Vᵀ − D);
3. ``_attn_bwd_dq``: one program per query tile; it streams the K/V tiles and accumulates
   dQ += dS K. A separate pass instead of atomics: every dQ row has one writer.

Nothing N×N is stored in either direction: P is recomputed, which costs a second Q Kᵀ but
saves reading and writing the N² probabilities.

Triton is optional (GPU machines have it; ``make test`` installs it on Linux x86-64 for the
interpreter). ``TRITON_INTERPRET=1`` runs the kernel on a CPU through Triton's interpreter,
slowly, which is how the tests check it without a GPU (CI included).
"""

from __future__ import annotations

import importlib.util

import torch

from workbook.config import WorkbookError
from workbook.profiling import interpreter_numpy_fix, interpreting, triton_available

HEAD_DIMS: tuple[int, ...] = (64, 128)
DTYPES: tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16)
LOG2_E = 1.4426950408889634  # exp(x) = exp2(x * log2(e)); exp2 is the GPU's native op


def why_not(q: torch.Tensor) -> str | None:
    """None if the kernel can run on ``q``'s device here, else the reason in one line."""
    if not triton_available():
        return "the Triton kernel needs the 'triton' package (pip install triton; GPU machines)"
    if q.device.type != "cuda" and not interpreting():
        return ("the Triton kernel needs a CUDA tensor (or TRITON_INTERPRET=1 to run it slowly "
                "on a CPU)")
    return None


def check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """Bad input becomes a one-line WorkbookError, never a dead kernel."""
    if q.dim() != 4 or q.shape != k.shape or q.shape != v.shape:
        raise WorkbookError(f"q, k, v must share one shape (batch, n_heads, seq_len, head_dim); "
                            f"got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if q.shape[-1] not in HEAD_DIMS:
        raise WorkbookError(f"head_dim={q.shape[-1]} is not supported by the Triton kernel; "
                            f"allowed: {', '.join(map(str, HEAD_DIMS))}")
    # The interpreter computes in NumPy: float32 there checks the algorithm itself (to ~1e-7),
    # without half precision's rounding.
    allowed = DTYPES + ((torch.float32,) if interpreting() else ())
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in allowed:
        raise WorkbookError(f"dtype {q.dtype} has no Triton kernel here; allowed: float16, "
                            "bfloat16 (use variant 'sdpa_math' or 'tiled' for float32)")
    reason = why_not(q)
    if reason:
        raise WorkbookError(reason)


if triton_available():
    import triton
    import triton.language as tl

    @triton.jit
    def _tile_loop(acc, l_i, m_i, q, k_ptrs, v_ptrs, stride_kn, stride_vn, offs_m, offs_n,
                   lo, hi, seq_len, qk_scale,
                   BLOCK_N: tl.constexpr, CAUSAL_MASK: tl.constexpr, EDGE_MASK: tl.constexpr):
        """Stream K, V tiles [lo, hi) through SRAM, updating the online softmax state.

        acc: (BLOCK_M, HEAD_DIM) fp32, unnormalised output; l_i, m_i: (BLOCK_M,) running
        sum and max, in log2 units. Masks are compile-time flags so the bulk of the tiles
        (fully visible, fully inside the sequence) pays for none.
        """
        k_ptrs += lo * stride_kn
        v_ptrs += lo * stride_vn
        for start_n in range(lo, hi, BLOCK_N):
            cols = start_n + offs_n
            if EDGE_MASK:  # the last, partial tile of a sequence that BLOCK_N does not divide
                k = tl.load(k_ptrs, mask=cols[None, :] < seq_len, other=0.0)
            else:
                k = tl.load(k_ptrs)                                   # (HEAD_DIM, BLOCK_N)
            s = tl.dot(q, k) * qk_scale                               # (BLOCK_M, BLOCK_N)
            if CAUSAL_MASK:
                s = tl.where(offs_m[:, None] >= cols[None, :], s, float("-inf"))
            if EDGE_MASK:
                s = tl.where(cols[None, :] < seq_len, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            p = tl.math.exp2(s - m_new[:, None])
            alpha = tl.math.exp2(m_i - m_new)                         # rescales the old state
            l_i = l_i * alpha + tl.sum(p, 1)
            if EDGE_MASK:
                v = tl.load(v_ptrs, mask=cols[:, None] < seq_len, other=0.0)
            else:
                v = tl.load(v_ptrs)                                   # (BLOCK_N, HEAD_DIM)
            acc = acc * alpha[:, None]
            acc = tl.dot(p.to(v.dtype), v, acc)
            m_i = m_new
            k_ptrs += BLOCK_N * stride_kn
            v_ptrs += BLOCK_N * stride_vn
        return acc, l_i, m_i

    @triton.jit
    def _attn_fwd(Q, K, V, Out, LSE, qk_scale,
                  stride_qb, stride_qh, stride_qm, stride_qd,
                  stride_kb, stride_kh, stride_kn, stride_kd,
                  stride_vb, stride_vh, stride_vn, stride_vd,
                  stride_ob, stride_oh, stride_om, stride_od,
                  n_heads, seq_len,
                  HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                  CAUSAL: tl.constexpr, STORE_LSE: tl.constexpr):
        """O = softmax(Q Kᵀ · scale) V for one tile of BLOCK_M query rows of one head."""
        start_m = tl.program_id(0)
        off_bh = tl.program_id(1)
        off_b, off_h = off_bh // n_heads, off_bh % n_heads
        offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, HEAD_DIM)
        q_ptrs = (Q + off_b * stride_qb + off_h * stride_qh
                  + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd)
        # K is read transposed, (HEAD_DIM, BLOCK_N), so that Q @ Kᵀ is a plain tl.dot.
        k_ptrs = (K + off_b * stride_kb + off_h * stride_kh
                  + offs_n[None, :] * stride_kn + offs_d[:, None] * stride_kd)
        v_ptrs = (V + off_b * stride_vb + off_h * stride_vh
                  + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd)

        q = tl.load(q_ptrs, mask=offs_m[:, None] < seq_len, other=0.0)  # HBM -> SRAM, once
        m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)

        # Tiles strictly left of the diagonal (causal) or all full tiles (not causal) need no
        # mask; the diagonal tiles need the causal mask; a partial last tile the edge mask.
        if CAUSAL:
            full_end = start_m * BLOCK_M
        else:
            full_end = (seq_len // BLOCK_N) * BLOCK_N
        acc, l_i, m_i = _tile_loop(acc, l_i, m_i, q, k_ptrs, v_ptrs, stride_kn, stride_vn,
                                   offs_m, offs_n, 0, full_end, seq_len, qk_scale,
                                   BLOCK_N, False, False)
        if CAUSAL:
            diag_end = tl.minimum((start_m + 1) * BLOCK_M, seq_len)
            acc, l_i, m_i = _tile_loop(acc, l_i, m_i, q, k_ptrs, v_ptrs, stride_kn, stride_vn,
                                       offs_m, offs_n, full_end, diag_end, seq_len, qk_scale,
                                       BLOCK_N, True, True)
        else:
            acc, l_i, m_i = _tile_loop(acc, l_i, m_i, q, k_ptrs, v_ptrs, stride_kn, stride_vn,
                                       offs_m, offs_n, full_end, seq_len, seq_len, qk_scale,
                                       BLOCK_N, False, True)

        acc = acc / l_i[:, None]
        o_ptrs = (Out + off_b * stride_ob + off_h * stride_oh
                  + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od)
        tl.store(o_ptrs, acc.to(Out.dtype.element_ty), mask=offs_m[:, None] < seq_len)
        if STORE_LSE:  # natural-log log-sum-exp per row: all the backward needs to rebuild P
            lse = (m_i + tl.math.log2(l_i)) / 1.4426950408889634
            tl.store(LSE + off_bh * seq_len + offs_m, lse, mask=offs_m < seq_len)

    # A few configurations that suit Hopper/Ampere; the autotuner times them once per
    # (seq_len, head_dim, causal, dtype) and caches the winner on disk. One that does not fit
    # in SRAM (128x128 tiles, hd 128, 3 stages) is skipped by the autotuner, not fatal.
    FORWARD_CONFIGS = [
        triton.Config({"BLOCK_M": 128, "BLOCK_N": 128}, num_warps=8, num_stages=3),
        triton.Config({"BLOCK_M": 128, "BLOCK_N": 64}, num_warps=8, num_stages=3),
        triton.Config({"BLOCK_M": 128, "BLOCK_N": 64}, num_warps=4, num_stages=3),
    ]
    _attn_fwd_tuned = triton.autotune(
        FORWARD_CONFIGS, key=["seq_len", "HEAD_DIM", "CAUSAL"], cache_results=True)(_attn_fwd)


    # ------------------------------------------------- the forward on Hopper, through TMA
    # The same algorithm, with two Hopper habits (scripts/gpu_flash_forward_tuning.py has the
    # measurements): K and V tiles are fetched by the Tensor Memory Accelerator from host-side
    # tensor descriptors (one instruction per tile, asynchronous, which lets Triton pipeline
    # the loads under the wgmma matmuls), and the softmax scale is folded into the exponent
    # (one FMA per score instead of a multiply and a subtract). Used when the GPU is Hopper or
    # newer and the sequence splits into whole 128-row tiles (a TMA tile must not straddle two
    # heads); the kernel above covers everything else.
    @triton.jit
    def _tma_tiles(acc, l_i, m_i, q, desc_k, desc_v, row0, offs_m, offs_n, lo, hi, qk_scale,
                   BLOCK_N: tl.constexpr, CAUSAL_MASK: tl.constexpr):
        for start_n in tl.range(lo, hi, BLOCK_N):
            k = desc_k.load([row0 + start_n, 0])                   # (BLOCK_N, HEAD_DIM), TMA
            s = tl.dot(q, k.T)                                     # unscaled scores
            if CAUSAL_MASK:
                s = tl.where(offs_m[:, None] >= (start_n + offs_n)[None, :], s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)
            p = tl.math.exp2(s * qk_scale - m_new[:, None])        # scale folded: one FMA
            alpha = tl.math.exp2(m_i - m_new)
            l_i = l_i * alpha + tl.sum(p, 1)
            v = desc_v.load([row0 + start_n, 0])
            acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
            m_i = m_new
        return acc, l_i, m_i

    @triton.jit
    def _attn_fwd_tma(desc_q, desc_k, desc_v, desc_o, LSE, qk_scale, seq_len,
                      HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                      CAUSAL: tl.constexpr, STORE_LSE: tl.constexpr):
        """:func:`_attn_fwd` on (batch·heads·seq_len, HEAD_DIM) views fetched by TMA."""
        start_m = tl.program_id(0)
        off_bh = tl.program_id(1)
        row0 = off_bh * seq_len                                    # this head's first row
        offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = tl.arange(0, BLOCK_N)
        q = desc_q.load([row0 + start_m * BLOCK_M, 0])
        m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
        full_end = start_m * BLOCK_M if CAUSAL else seq_len
        acc, l_i, m_i = _tma_tiles(acc, l_i, m_i, q, desc_k, desc_v, row0, offs_m, offs_n,
                                   0, full_end, qk_scale, BLOCK_N, False)
        if CAUSAL:
            acc, l_i, m_i = _tma_tiles(acc, l_i, m_i, q, desc_k, desc_v, row0, offs_m, offs_n,
                                       full_end, (start_m + 1) * BLOCK_M, qk_scale, BLOCK_N,
                                       True)
        desc_o.store([row0 + start_m * BLOCK_M, 0], (acc / l_i[:, None]).to(desc_o.dtype))
        if STORE_LSE:
            tl.store(LSE + off_bh * seq_len + offs_m,
                     (m_i + tl.math.log2(l_i)) / 1.4426950408889634)

    def _tma_blocks(nargs: dict) -> None:
        """Autotuner pre-hook: the descriptors' tile shapes follow the configuration."""
        bm, bn, d = nargs["BLOCK_M"], nargs["BLOCK_N"], nargs["HEAD_DIM"]
        nargs["desc_q"].block_shape = nargs["desc_o"].block_shape = [bm, d]
        nargs["desc_k"].block_shape = nargs["desc_v"].block_shape = [bn, d]

    # The winners of a wider search on an H200 (B4 H16 bf16, N 1k-16k, d 64 and 128). BLOCK_M
    # must be a multiple of BLOCK_N: the causal split at start_m·BLOCK_M must fall on a K/V
    # tile's edge, or the unmasked loop reads keys from the future (64×128, picked at d = 64,
    # gave wrong causal outputs on the H200: it is not offered).
    FORWARD_TMA_CONFIGS = [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=st,
                      pre_hook=_tma_blocks)
        for bm, bn, w, st in ((128, 64, 4, 2), (128, 128, 8, 3), (64, 64, 4, 3),
                              (128, 64, 8, 3), (128, 128, 8, 2))]
    _attn_fwd_tma_tuned = triton.autotune(
        FORWARD_TMA_CONFIGS, key=["seq_len", "HEAD_DIM", "CAUSAL"],
        cache_results=True)(_attn_fwd_tma)


    # ------------------------------------------------------------------ the backward
    @triton.jit
    def _attn_bwd_delta(Out, DO, DELTA, stride_b, stride_h, stride_n, n_heads, seq_len,
                        HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr):
        """D = rowsum(dO ∘ O) for BLOCK_M rows of one head, in float32."""
        start_m = tl.program_id(0) * BLOCK_M
        off_bh = tl.program_id(1)
        base = (off_bh // n_heads) * stride_b + (off_bh % n_heads) * stride_h
        rows = start_m + tl.arange(0, BLOCK_M)
        offs = base + rows[:, None] * stride_n + tl.arange(0, HEAD_DIM)[None, :]
        o = tl.load(Out + offs, mask=rows[:, None] < seq_len, other=0.0).to(tl.float32)
        do = tl.load(DO + offs, mask=rows[:, None] < seq_len, other=0.0).to(tl.float32)
        tl.store(DELTA + off_bh * seq_len + rows, tl.sum(o * do, 1), mask=rows < seq_len)

    @triton.jit
    def _dkdv_tiles(dk, dv, k, v, q_ptrs, do_ptrs, lse_ptr, delta_ptr, stride_n, offs_m,
                    cols, lo, hi, seq_len, qk_scale,
                    BLOCK_M: tl.constexpr, CAUSAL_MASK: tl.constexpr, EDGE_MASK: tl.constexpr):
        """For one K/V tile (k, v in SRAM; ``cols`` its key positions), stream the query
        tiles [lo, hi): rebuild Pᵀ, then dV += Pᵀ dO and dK += dSᵀ Q (scaled by the caller).

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
        return dk, dv

    @triton.jit
    def _attn_bwd_dkdv(Q, K, V, DO, LSE2, DELTA, DK, DV, qk_scale, sm_scale,
                       stride_b, stride_h, stride_n, n_heads, seq_len,
                       HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                       CAUSAL: tl.constexpr):
        """dK and dV for BLOCK_N keys of one head (BLOCK_N a multiple of BLOCK_M)."""
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

        # Query tiles: those crossing the diagonal (causal) need the causal mask, the partial
        # last one the edge mask, the bulk in between none. Causal keys see only later rows.
        full_end = (seq_len // BLOCK_M) * BLOCK_M
        if CAUSAL:
            diag_end = start_n + BLOCK_N
            dk, dv = _dkdv_tiles(dk, dv, k, v, q_ptrs, do_ptrs, lse_ptr, delta_ptr, stride_n,
                                 offs_m, cols, start_n, tl.minimum(diag_end, seq_len), seq_len,
                                 qk_scale, BLOCK_M, True, True)
            dk, dv = _dkdv_tiles(dk, dv, k, v, q_ptrs, do_ptrs, lse_ptr, delta_ptr, stride_n,
                                 offs_m, cols, diag_end, full_end, seq_len, qk_scale,
                                 BLOCK_M, False, False)
            dk, dv = _dkdv_tiles(dk, dv, k, v, q_ptrs, do_ptrs, lse_ptr, delta_ptr, stride_n,
                                 offs_m, cols, tl.maximum(full_end, diag_end), seq_len, seq_len,
                                 qk_scale, BLOCK_M, False, True)
        else:
            dk, dv = _dkdv_tiles(dk, dv, k, v, q_ptrs, do_ptrs, lse_ptr, delta_ptr, stride_n,
                                 offs_m, cols, 0, full_end, seq_len, qk_scale,
                                 BLOCK_M, False, False)
            dk, dv = _dkdv_tiles(dk, dv, k, v, q_ptrs, do_ptrs, lse_ptr, delta_ptr, stride_n,
                                 offs_m, cols, full_end, seq_len, seq_len, qk_scale,
                                 BLOCK_M, False, True)
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
    # registers, so its query tiles are small; the dQ kernel the other way round.
    DKDV_CONFIGS = [
        triton.Config({"BLOCK_M": 32, "BLOCK_N": 128}, num_warps=8, num_stages=3),
        triton.Config({"BLOCK_M": 64, "BLOCK_N": 128}, num_warps=8, num_stages=2),
        triton.Config({"BLOCK_M": 32, "BLOCK_N": 64}, num_warps=4, num_stages=3),
    ]
    DQ_CONFIGS = [
        triton.Config({"BLOCK_M": 128, "BLOCK_N": 32}, num_warps=8, num_stages=3),
        triton.Config({"BLOCK_M": 128, "BLOCK_N": 64}, num_warps=8, num_stages=2),
        triton.Config({"BLOCK_M": 64, "BLOCK_N": 32}, num_warps=4, num_stages=3),
    ]
    _attn_bwd_dkdv_tuned = triton.autotune(
        DKDV_CONFIGS, key=["seq_len", "HEAD_DIM", "CAUSAL"], cache_results=True)(_attn_bwd_dkdv)
    _attn_bwd_dq_tuned = triton.autotune(
        DQ_CONFIGS, key=["seq_len", "HEAD_DIM", "CAUSAL"], cache_results=True)(_attn_bwd_dq)


def tma_applies(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    """The TMA forward applies: Hopper or newer, whole 128-row tiles, contiguous tensors."""
    if interpreting() or q.device.type != "cuda":
        return False
    if torch.cuda.get_device_capability(q.device)[0] < 9:
        return False
    if importlib.util.find_spec("triton.tools.tensor_descriptor") is None:
        return False
    return q.shape[2] % 128 == 0 and all(t.is_contiguous() for t in (q, k, v))


def _flash_forward_tma(q, k, v, out, lse, scale: float, causal: bool, store_lse: bool):
    from triton.tools.tensor_descriptor import TensorDescriptor

    batch, n_heads, seq_len, head_dim = q.shape
    rows = batch * n_heads * seq_len
    descs = [TensorDescriptor(t.view(rows, head_dim), [rows, head_dim], [head_dim, 1],
                              [1, head_dim]) for t in (q, k, v, out)]  # tiles set per config

    def grid(meta: dict) -> tuple[int, int]:
        return (seq_len // meta["BLOCK_M"], batch * n_heads)

    _attn_fwd_tma_tuned[grid](*descs, lse, scale * LOG2_E, seq_len, HEAD_DIM=head_dim,
                              CAUSAL=causal, STORE_LSE=store_lse)
    return out, (lse if store_lse else None)


# One configuration per kernel for runs that check numbers rather than time them
# (``flash_attention(tuned=False)``): the smallest tiles of each autotune list, which fit any
# GPU the lists do. The autotuner compiles and times every configuration once per shape key;
# a numerical check over 8 keys (dtype x head_dim x causal) paid ~70 compiles for nothing.
FIXED_FORWARD = {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 4, "num_stages": 3}
FIXED_BACKWARD = (32, 64, 64, 32)   # flash_backward's tiles: dK/dV (M, N), dQ (M, N)
FIXED_BACKWARD_LAUNCH = {"num_warps": 4, "num_stages": 3}


def flash_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False,
                  scale: float | None = None, store_lse: bool = True,
                  block_m: int | None = None, block_n: int | None = None,
                  use_tma: bool = True, launch: dict | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run the kernel: (O, log-sum-exp per row or None). Shapes (batch, n_heads, seq_len, d).

    ``block_m``/``block_n`` fix the tile sizes (the interpreter and the tests use small ones);
    left out, the autotuner picks among :data:`FORWARD_CONFIGS`, or, on Hopper when the
    sequence is whole 128-row tiles, the TMA kernel (:data:`FORWARD_TMA_CONFIGS`);
    ``use_tma=False`` keeps the portable kernel there too (to compare the two). ``launch``
    (``num_warps``, ``num_stages``) goes with fixed tiles to the launch.
    """
    check_inputs(q, k, v)
    batch, n_heads, seq_len, head_dim = q.shape
    scale = head_dim ** -0.5 if scale is None else scale
    out = torch.empty_like(q)
    lse = torch.empty((batch, n_heads, seq_len), device=q.device, dtype=torch.float32) \
        if store_lse else torch.empty(1, device=q.device, dtype=torch.float32)
    args = (q, k, v, out, lse, scale * LOG2_E,
            *q.stride(), *k.stride(), *v.stride(), *out.stride(), n_heads, seq_len)
    if interpreting():
        interpreter_numpy_fix()
    if block_m is None and interpreting():
        block_m, block_n = 32, 16  # tl.dot needs tiles of at least 16; small is fast here
    if block_m is None and use_tma and tma_applies(q, k, v):
        return _flash_forward_tma(q, k, v, out, lse, scale, causal, store_lse)
    if block_m is not None:
        block_n = block_n or block_m
        if block_m % block_n:
            raise WorkbookError(f"block_m={block_m} must be a multiple of block_n={block_n}")
        grid = (triton.cdiv(seq_len, block_m), batch * n_heads)
        _attn_fwd[grid](*args, HEAD_DIM=head_dim, BLOCK_M=block_m, BLOCK_N=block_n,
                        CAUSAL=causal, STORE_LSE=store_lse, **(launch or {}))
    else:
        def grid(meta: dict) -> tuple[int, int]:
            return (triton.cdiv(seq_len, meta["BLOCK_M"]), batch * n_heads)

        _attn_fwd_tuned[grid](*args, HEAD_DIM=head_dim, CAUSAL=causal, STORE_LSE=store_lse)
    return out, (lse if store_lse else None)


def flash_backward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
                   lse: torch.Tensor, grad_out: torch.Tensor, *, causal: bool = False,
                   scale: float | None = None, tiles: tuple[int, int, int, int] | None = None,
                   launch: dict | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dQ, dK, dV) by the three backward kernels, from the forward's O and log-sum-exp.

    ``tiles`` = (dK/dV kernel's BLOCK_M, BLOCK_N, dQ kernel's BLOCK_M, BLOCK_N) fixes the tile
    sizes (the interpreter and the tests use small ones); left out, the autotuner picks.
    ``launch`` (``num_warps``, ``num_stages``) goes with fixed tiles to both launches.
    """
    check_inputs(q, k, v)
    batch, n_heads, seq_len, head_dim = q.shape
    scale = head_dim ** -0.5 if scale is None else scale
    # One layout for all five (B, H, N, d) tensors: the kernels take one set of strides.
    q, k, v, out, grad_out = (t.contiguous() for t in (q, k, v, out, grad_out))
    lse2 = (lse.float() * LOG2_E).contiguous()   # log2 units, as the kernels' exp2 wants
    delta = torch.empty_like(lse2)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    strides = (q.stride(0), q.stride(1), q.stride(2), n_heads, seq_len)
    if interpreting():
        interpreter_numpy_fix()
        tiles = tiles or (16, 32, 32, 16)  # tl.dot needs tiles of at least 16
    _attn_bwd_delta[(triton.cdiv(seq_len, 64), batch * n_heads)](
        out, grad_out, delta, *strides, HEAD_DIM=head_dim, BLOCK_M=64)
    common = (q, k, v, grad_out, lse2, delta)
    if tiles is not None:
        m1, n1, m2, n2 = tiles
        if n1 % m1 or m2 % n2:
            raise WorkbookError(f"tiles={tiles}: the dK/dV tile's BLOCK_N must be a multiple of "
                                "its BLOCK_M, and the dQ tile's BLOCK_M of its BLOCK_N")
        _attn_bwd_dkdv[(triton.cdiv(seq_len, n1), batch * n_heads)](
            *common, dk, dv, scale * LOG2_E, scale, *strides, HEAD_DIM=head_dim,
            BLOCK_M=m1, BLOCK_N=n1, CAUSAL=causal, **(launch or {}))
        _attn_bwd_dq[(triton.cdiv(seq_len, m2), batch * n_heads)](
            *common, dq, scale * LOG2_E, scale, *strides, HEAD_DIM=head_dim,
            BLOCK_M=m2, BLOCK_N=n2, CAUSAL=causal, **(launch or {}))
    else:
        _attn_bwd_dkdv_tuned[lambda meta: (triton.cdiv(seq_len, meta["BLOCK_N"]),
                                           batch * n_heads)](
            *common, dk, dv, scale * LOG2_E, scale, *strides, HEAD_DIM=head_dim, CAUSAL=causal)
        _attn_bwd_dq_tuned[lambda meta: (triton.cdiv(seq_len, meta["BLOCK_M"]),
                                         batch * n_heads)](
            *common, dq, scale * LOG2_E, scale, *strides, HEAD_DIM=head_dim, CAUSAL=causal)
    return dq, dk, dv


class FlashTritonFunction(torch.autograd.Function):
    """Forward: the Triton kernel (saves O and the log-sum-exp, never P).
    Backward: the Triton backward kernels, which recompute P from the log-sum-exp."""

    @staticmethod
    def forward(ctx, q, k, v, causal: bool, scale: float, tuned: bool = True):  # noqa: D102
        out, lse = flash_forward(q, k, v, causal=causal, scale=scale, store_lse=True,
                                 **_fixed_forward(tuned))
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


def _fixed_forward(tuned: bool) -> dict:
    """flash_forward's arguments for :data:`FIXED_FORWARD` (none when tuned, or in the
    interpreter, which has small tiles of its own)."""
    if tuned or interpreting():
        return {}
    tiles = {k: v for k, v in FIXED_FORWARD.items() if k.startswith("BLOCK")}
    return {"block_m": tiles["BLOCK_M"], "block_n": tiles["BLOCK_N"],
            "launch": {k: v for k, v in FIXED_FORWARD.items() if k not in tiles}}


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
                             **_fixed_forward(tuned))[0]
    return FlashTritonFunction.apply(q, k, v, causal, scale, tuned)
