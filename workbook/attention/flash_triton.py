"""The workbook's FlashAttention forward, written in Triton.

One program (a thread block) owns ``BLOCK_M`` query rows of one (batch, head). It loads its
Q tile into SRAM once, then streams K and V through SRAM in tiles of ``BLOCK_N`` rows, keeping
a running row maximum ``m``, a running sum ``l`` and an unnormalised output ``acc`` in
registers (the *online softmax*). The N×N score matrix never exists in HBM: what goes out is
O (N×d) and the log-sum-exp per row (N numbers), which the backward uses to recompute P.

This is the same algorithm as :func:`workbook.attention.tiled.tiled_attention_forward`, which
runs on a CPU and is the version to read first.

On Hopper and newer GPUs :func:`flash_forward` runs the same algorithm arranged as
FlashAttention-3 arranges it, in Gluon (:mod:`workbook.attention.flash_gluon`: a producer warp
and two consumer warpgroups), where Triton has Gluon and the shapes fit it; else with its
tiles fetched by the Tensor Memory Accelerator (:mod:`workbook.attention.flash_triton_hopper`).
The backward, and the autograd Function that pairs the two, are in
:mod:`workbook.attention.flash_triton_backward`.

Triton is optional (GPU machines have it; ``make test`` installs it on Linux x86-64 for the
interpreter). ``TRITON_INTERPRET=1`` runs the kernel on a CPU through Triton's interpreter,
slowly, which is how the tests check it without a GPU (CI included).
"""

from __future__ import annotations

import torch

from workbook.attention import flash_gluon
from workbook.attention.flash_triton_hopper import flash_forward_tma, tma_applies
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


# Launch options: every kernel takes these two; the TMA forward also the rest (what each does:
# workbook.attention.flash_triton_hopper). LAZY and EXP16 change PAIR's plain loop only.
LAUNCH_OPTIONS: tuple[str, ...] = ("num_warps", "num_stages")
TMA_LAUNCH_OPTIONS: tuple[str, ...] = ("WARP_SPEC", "OVERLAP", "PERSISTENT", "PAIR", "LAZY",
                                       "EXP16")


def check_launch(launch: dict | None, tma: bool, fixed_tiles: bool) -> None:
    """A launch option that the kernel would not take, or would silently ignore, is a one-line
    WorkbookError (a timing of an option that did not run would read as that option's).
    Options go with fixed tiles only: the autotuner's pick brings its own."""
    launch = launch or {}
    if launch and not fixed_tiles:
        raise WorkbookError("launch options go with fixed tiles: give the tiles too, or leave "
                            "launch out for the autotuner's pick")
    allowed = LAUNCH_OPTIONS + (TMA_LAUNCH_OPTIONS if tma else ())
    unknown = sorted(set(launch) - set(allowed))
    if unknown:
        raise WorkbookError(f"launch options {unknown} are not taken here; allowed: "
                            f"{', '.join(allowed)}" + ("" if tma else
                                                       " (the rest need the TMA forward)"))
    for option in ("LAZY", "EXP16"):
        if launch.get(option) and (not launch.get("PAIR") or launch.get("OVERLAP")):
            raise WorkbookError(f"launch option {option} changes PAIR's plain loop only; "
                                f"allowed with 'PAIR': True and without 'OVERLAP'")
    if launch.get("EXP16") and interpreting():
        raise WorkbookError("launch option EXP16 is PTX inline assembly: on an NVIDIA GPU "
                            "only, not in Triton's interpreter")


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


# One configuration per kernel for runs that check numbers rather than time them
# (``flash_attention(tuned=False)``): the smallest tiles of each autotune list, which fit any
# GPU the lists do. The autotuner compiles and times every configuration once per shape key;
# a numerical check over 8 keys (dtype x head_dim x causal) paid ~70 compiles for nothing.
FIXED_FORWARD = {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 4, "num_stages": 3}


def flash_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False,
                  scale: float | None = None, store_lse: bool = True,
                  block_m: int | None = None, block_n: int | None = None,
                  use_tma: bool | None = None, launch: dict | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run the kernel: (O, log-sum-exp per row or None). Shapes (batch, n_heads, seq_len, d).

    ``block_m``/``block_n`` fix the tile sizes (the interpreter and the tests use small ones);
    left out, the autotuner picks among :data:`FORWARD_CONFIGS`, or, on Hopper when the
    sequence is whole 128-row tiles, the Gluon kernel (:mod:`.flash_gluon`, FA3's arrangement;
    :func:`forward_kernel` says which runs) where Triton has Gluon, else the TMA kernel
    (:mod:`.flash_triton_hopper`, its ``FORWARD_TMA_CONFIGS``); ``use_tma=True`` picks the TMA
    kernel and ``use_tma=False`` the portable one there too (to compare them); fixed tiles go
    to the portable kernel unless ``use_tma=True`` asks for the TMA one (to tune it).
    ``launch`` (``num_warps``, ``num_stages``, and for TMA ``WARP_SPEC``, ``OVERLAP`` (the
    hand-pipelined loop), ``PERSISTENT`` (k programs per SM looping over the tiles), ``PAIR``
    (a program of two halves of ``block_m`` rows sharing each K/V tile) and, with PAIR,
    ``LAZY`` (the running max moved only when it grows by more than a factor 256) or
    ``EXP16`` (its exponentials in float16, two per instruction;
    GPU only); each explained in :mod:`.flash_triton_hopper`) goes with fixed tiles.
    """
    check_inputs(q, k, v)
    if use_tma is None and block_m is None and launch is None and \
            forward_kernel(q, k, v) == "gluon":   # first: a reader's call waits for the host
        return flash_gluon.flash_forward_gluon(q, k, v, causal=causal, scale=scale,
                                               store_lse=store_lse)
    batch, n_heads, seq_len, head_dim = q.shape
    scale = head_dim ** -0.5 if scale is None else scale
    out = torch.empty_like(q)
    lse = torch.empty((batch, n_heads, seq_len), device=q.device, dtype=torch.float32) \
        if store_lse else torch.empty(1, device=q.device, dtype=torch.float32)
    args = (q, k, v, out, lse, scale * LOG2_E,
            *q.stride(), *k.stride(), *v.stride(), *out.stride(), n_heads, seq_len)
    fixed_tiles = block_m is not None
    if interpreting():
        interpreter_numpy_fix()
    if block_m is None and interpreting():
        block_m, block_n = 32, 16  # tl.dot needs tiles of at least 16; small is fast here
    if block_m is not None:
        block_n = block_n or block_m
        if block_m % block_n:
            raise WorkbookError(f"block_m={block_m} must be a multiple of block_n={block_n}")
        if (launch or {}).get("PAIR") and (block_m // 2) % block_n:
            raise WorkbookError(f"PAIR: half of block_m={block_m} must be a multiple of "
                                f"block_n={block_n}")
    applies = tma_applies(q, k, v)
    if use_tma and (not applies or seq_len % (block_m or 128)):
        raise WorkbookError(f"use_tma=True: the TMA kernel needs a Hopper GPU (or the "
                            f"interpreter), contiguous tensors and seq_len a multiple of 128 "
                            f"and of BLOCK_M; got seq_len={seq_len}")
    tma = bool(use_tma or (use_tma is None and block_m is None and applies))
    check_launch(launch, tma, fixed_tiles)
    if tma:
        config = None if block_m is None else {"BLOCK_M": block_m, "BLOCK_N": block_n,
                                               **(launch or {})}
        return flash_forward_tma(q, k, v, out, lse, scale * LOG2_E, causal, store_lse, config)
    if block_m is not None:
        grid = (triton.cdiv(seq_len, block_m), batch * n_heads)
        _attn_fwd[grid](*args, HEAD_DIM=head_dim, BLOCK_M=block_m, BLOCK_N=block_n,
                        CAUSAL=causal, STORE_LSE=store_lse, **(launch or {}))
    else:
        def grid(meta: dict) -> tuple[int, int]:
            return (triton.cdiv(seq_len, meta["BLOCK_M"]), batch * n_heads)

        _attn_fwd_tuned[grid](*args, HEAD_DIM=head_dim, CAUSAL=causal, STORE_LSE=store_lse)
    return out, (lse if store_lse else None)


def forward_kernel(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> str:
    """Which kernel :func:`flash_forward` runs on these tensors with its tiles left out:
    ``gluon`` (:mod:`.flash_gluon`), ``tma`` (:mod:`.flash_triton_hopper`) or ``portable``
    (also in Triton's interpreter, where flash_forward fixes small tiles of its own)."""
    if flash_gluon.why_not(q, k, v) is None:
        return "gluon"
    return "tma" if tma_applies(q, k, v) and not interpreting() else "portable"


def fixed_forward_args(tuned: bool) -> dict:
    """flash_forward's arguments for :data:`FIXED_FORWARD` (none when tuned, or in the
    interpreter, which has small tiles of its own)."""
    if tuned or interpreting():
        return {}
    tiles = {k: v for k, v in FIXED_FORWARD.items() if k.startswith("BLOCK")}
    return {"block_m": tiles["BLOCK_M"], "block_n": tiles["BLOCK_N"],
            "launch": {k: v for k, v in FIXED_FORWARD.items() if k not in tiles}}
