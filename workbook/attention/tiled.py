"""Attention by its definition, the standard way, and FlashAttention's tiled way: plain PyTorch.

:func:`tiled_attention_forward` is FlashAttention's algorithm tile by tile with the online
softmax; it runs on a CPU and is the one to read (the Triton kernel in ``flash_triton.py`` is
the same algorithm on a GPU). :func:`tiled_attention_backward` rebuilds P from the saved
log-sum-exp instead of storing it. Shapes everywhere: (batch, n_heads, seq_len, head_dim).
"""

from __future__ import annotations

import torch

from workbook.config import check_flag, check_range

__all__ = ["reference_attention", "causal_mask", "vanilla_attention", "tiled_attention_forward",
           "overlapped_attention_forward", "tiled_attention_backward", "TiledAttentionFunction",
           "tiled_attention"]


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
        s = s.masked_fill(causal_mask(q.shape[-2], q.device), float("-inf"))
    return torch.softmax(s, dim=-1) @ v


def causal_mask(seq_len: int, device: torch.device) -> torch.Tensor:
    """True where a query would see a later key (to be masked out)."""
    return torch.ones(seq_len, seq_len, dtype=torch.bool, device=device).triu(1)


def vanilla_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                      causal: bool = False, scale: float | None = None) -> torch.Tensor:
    """Standard attention: S = QKᵀ and P = softmax(S) are full N×N tensors in HBM."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    s = (q * scale) @ k.transpose(-2, -1)                     # (B, H, N, N): written to HBM
    if causal:
        s = s.masked_fill(causal_mask(q.shape[-2], q.device), float("-inf"))
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


def _scores(q_tile: torch.Tensor, k: torch.Tensor, rows: torch.Tensor, n0: int, block_n: int,
            causal: bool) -> torch.Tensor:
    """One tile's scores in float64, the future masked out when causal."""
    s = q_tile @ k[..., n0:n0 + block_n, :].double().transpose(-2, -1)
    cols = torch.arange(n0, n0 + s.shape[-1], device=k.device)
    return s.masked_fill(cols[None, :] > rows[:, None], float("-inf")) if causal else s


def overlapped_attention_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                                 causal: bool = False, block_m: int = 64, block_n: int = 64
                                 ) -> torch.Tensor:
    """:func:`tiled_attention_forward` in the order FlashAttention-3's consumer runs it
    (:mod:`.flash_gluon`): the scores of tile j are ready before the product P·V of tile j−1
    is added, so a GPU computes both on its tensor cores while the softmax of tile j runs.

    The price is one step of bookkeeping: O holds the tiles before j−1 in the units of row
    max m_(j−1); P_(j−1)·V_(j−1) is added in those same units, and only then is the sum
    rescaled by alpha_j = exp(m_(j−1) − m_j). Same result, other order (a test checks it)."""
    check_flag("causal", causal)
    check_range("block_m", block_m, 1, 4096)
    check_range("block_n", block_n, 1, 4096)
    seq_len, head_dim = q.shape[-2:]
    out = torch.empty_like(q)
    for m0 in range(0, seq_len, block_m):
        q_tile = q[..., m0:m0 + block_m, :].double() * head_dim ** -0.5
        rows = torch.arange(m0, m0 + q_tile.shape[-2], device=q.device)
        starts = list(range(0, min(seq_len, m0 + block_m) if causal else seq_len, block_n))
        s = _scores(q_tile, k, rows, starts[0], block_n, causal)   # tile 0, before the loop
        row_max = s.amax(dim=-1)
        p = torch.exp(s - row_max[..., None])
        row_sum = p.sum(dim=-1)
        acc = torch.zeros_like(q_tile)
        for prev, n0 in zip(starts, starts[1:], strict=False):
            s = _scores(q_tile, k, rows, n0, block_n, causal)  # S_j, issued first
            acc = acc + p @ v[..., prev:prev + block_n, :].double()   # O += P_(j-1)·V_(j-1)
            m_new = torch.maximum(row_max, s.amax(dim=-1))      # softmax of tile j
            p = torch.exp(s - m_new[..., None])
            alpha = torch.exp(row_max - m_new)
            row_sum = row_sum * alpha + p.sum(dim=-1)
            acc = acc * alpha[..., None]                        # then O in m_j's units
            row_max = m_new
        acc = acc + p @ v[..., starts[-1]:starts[-1] + block_n, :].double()
        out[..., m0:m0 + block_m, :] = (acc / row_sum[..., None]).to(q.dtype)
    return out


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

