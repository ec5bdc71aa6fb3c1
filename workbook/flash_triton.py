"""The workbook's FlashAttention forward, written in Triton.

One program (a thread block) owns ``BLOCK_M`` query rows of one (batch, head). It loads its
Q tile into SRAM once, then streams K and V through SRAM in tiles of ``BLOCK_N`` rows, keeping
a running row maximum ``m``, a running sum ``l`` and an unnormalised output ``acc`` in
registers (the *online softmax*). The N×N score matrix never exists in HBM: what goes out is
O (N×d) and the log-sum-exp per row (N numbers), which the backward uses to recompute P.

This is the same algorithm as :func:`workbook.attention.tiled_attention_forward`, which runs
on a CPU and is the version to read first. The backward is not a Triton kernel: it is the
workbook's PyTorch recomputation (:func:`workbook.attention.tiled_attention_backward`), which
rebuilds P from the saved log-sum-exp one query tile at a time.

Triton is optional (GPU machines have it; ``make test`` installs it on Linux x86-64 for the
interpreter). ``TRITON_INTERPRET=1`` runs the kernel on a CPU through Triton's interpreter,
slowly, which is how the tests check it without a GPU (CI included).
"""

from __future__ import annotations

import importlib.util
import os

import torch

from workbook.config import WorkbookError

HEAD_DIMS: tuple[int, ...] = (64, 128)
DTYPES: tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16)
LOG2_E = 1.4426950408889634  # exp(x) = exp2(x * log2(e)); exp2 is the GPU's native op


def triton_available() -> bool:
    """Triton is importable (it does not say a GPU is present)."""
    return importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    """``TRITON_INTERPRET=1``: kernels run on the CPU through Triton's interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


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
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in DTYPES:
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
    _CONFIGS = [
        triton.Config({"BLOCK_M": 128, "BLOCK_N": 128}, num_warps=8, num_stages=3),
        triton.Config({"BLOCK_M": 128, "BLOCK_N": 64}, num_warps=8, num_stages=3),
        triton.Config({"BLOCK_M": 128, "BLOCK_N": 64}, num_warps=4, num_stages=3),
    ]
    _attn_fwd_tuned = triton.autotune(
        _CONFIGS, key=["seq_len", "HEAD_DIM", "CAUSAL"], cache_results=True)(_attn_fwd)


def _interpreter_numpy_fix() -> None:
    """Triton 3.6's interpreter turns a loop bound into ``int(array([x]))``, which NumPy >= 2.4
    refuses (only 0-d arrays convert). Patch its tensor ``__index__`` to take the one element.
    Interpreter only; compiled kernels never see this."""
    from triton.runtime import interpreter

    original = interpreter._patch_lang_tensor
    if getattr(original, "_workbook_fixed", False):
        return

    def patched(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    patched._workbook_fixed = True
    interpreter._patch_lang_tensor = patched


def flash_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False,
                  scale: float | None = None, store_lse: bool = True,
                  block_m: int | None = None, block_n: int | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run the kernel: (O, log-sum-exp per row or None). Shapes (batch, n_heads, seq_len, d).

    ``block_m``/``block_n`` fix the tile sizes (the interpreter and the tests use small ones);
    left out, the autotuner picks among :data:`_CONFIGS`.
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
        _interpreter_numpy_fix()
    if block_m is None and interpreting():
        block_m, block_n = 32, 16  # tl.dot needs tiles of at least 16; small is fast here
    if block_m is not None:
        block_n = block_n or block_m
        if block_m % block_n:
            raise WorkbookError(f"block_m={block_m} must be a multiple of block_n={block_n}")
        grid = (triton.cdiv(seq_len, block_m), batch * n_heads)
        _attn_fwd[grid](*args, HEAD_DIM=head_dim, BLOCK_M=block_m, BLOCK_N=block_n,
                        CAUSAL=causal, STORE_LSE=store_lse)
    else:
        def grid(meta: dict) -> tuple[int, int]:
            return (triton.cdiv(seq_len, meta["BLOCK_M"]), batch * n_heads)

        _attn_fwd_tuned[grid](*args, HEAD_DIM=head_dim, CAUSAL=causal, STORE_LSE=store_lse)
    return out, (lse if store_lse else None)


class FlashTritonFunction(torch.autograd.Function):
    """Forward: the Triton kernel (saves O and the log-sum-exp, never P).
    Backward: the workbook's PyTorch recomputation of P from the log-sum-exp, tile by tile."""

    @staticmethod
    def forward(ctx, q, k, v, causal: bool, scale: float):  # noqa: D102
        out, lse = flash_forward(q, k, v, causal=causal, scale=scale, store_lse=True)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.causal, ctx.scale = causal, scale
        return out

    @staticmethod
    def backward(ctx, grad_out):  # noqa: D102
        from workbook.attention import tiled_attention_backward

        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = tiled_attention_backward(q, k, v, out, lse, grad_out,
                                              causal=ctx.causal, scale=ctx.scale)
        return dq, dk, dv, None, None


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False,
                    scale: float | None = None) -> torch.Tensor:
    """Differentiable attention through the Triton forward (see module docstring)."""
    check_inputs(q, k, v)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if not (q.requires_grad or k.requires_grad or v.requires_grad):
        return flash_forward(q, k, v, causal=causal, scale=scale, store_lse=False)[0]
    return FlashTritonFunction.apply(q, k, v, causal, scale)
