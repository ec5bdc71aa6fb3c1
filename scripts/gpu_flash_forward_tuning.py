"""Trying forward variants of the Triton FlashAttention kernel on a Hopper GPU (issue 22).

    python3 scripts/gpu_flash_forward_tuning.py      # on the device machine; prints only

Three forwards side by side with cuDNN and FlashAttention-2 (SDPA), B4 H16 bf16:
``current`` (workbook.flash_triton), ``tma``: K/V tiles fetched by Hopper's Tensor Memory
Accelerator (host-side tensor descriptors), the softmax scale folded into one FMA, and a wider
autotuning space. The winner moves into flash_triton; this script is the evidence.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from workbook import flash_triton as FT  # noqa: E402
from workbook.profiling import time_ms  # noqa: E402


@triton.jit
def _tma_tiles(acc, l_i, m_i, q, desc_k, desc_v, row0, offs_m, offs_n, lo, hi, qk_scale,
               BLOCK_N: tl.constexpr, CAUSAL_MASK: tl.constexpr):
    for start_n in tl.range(lo, hi, BLOCK_N):
        k = desc_k.load([row0 + start_n, 0])                       # (BLOCK_N, HEAD_DIM), TMA
        s = tl.dot(q, k.T)
        if CAUSAL_MASK:
            s = tl.where(offs_m[:, None] >= (start_n + offs_n)[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)
        p = tl.math.exp2(s * qk_scale - m_new[:, None])            # one FMA per score
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = desc_v.load([row0 + start_n, 0])
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _attn_fwd_tma(desc_q, desc_k, desc_v, desc_o, LSE, qk_scale, seq_len,
                  HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                  CAUSAL: tl.constexpr):
    start_m = tl.program_id(0)
    off_bh = tl.program_id(1)
    row0 = off_bh * seq_len                                        # this head's first row
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
                                   full_end, (start_m + 1) * BLOCK_M, qk_scale, BLOCK_N, True)
    desc_o.store([row0 + start_m * BLOCK_M, 0], (acc / l_i[:, None]).to(desc_o.dtype))
    lse = (m_i + tl.math.log2(l_i)) / 1.4426950408889634
    tl.store(LSE + off_bh * seq_len + offs_m, lse)


def _set_blocks(nargs):
    bm, bn, d = nargs["BLOCK_M"], nargs["BLOCK_N"], nargs["HEAD_DIM"]
    nargs["desc_q"].block_shape = [bm, d]
    nargs["desc_o"].block_shape = [bm, d]
    nargs["desc_k"].block_shape = [bn, d]
    nargs["desc_v"].block_shape = [bn, d]


CONFIGS = [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s,
                         pre_hook=_set_blocks)
           for bm in (64, 128) for bn in (64, 128) for w in (4, 8) for s in (2, 3, 4)
           if not (bm == 64 and w == 8)]
_tuned = triton.autotune(CONFIGS, key=["seq_len", "HEAD_DIM", "CAUSAL"])(_attn_fwd_tma)


def tma_forward(q, k, v, causal=False):
    batch, heads, n, d = q.shape
    assert n % 128 == 0 and q.is_contiguous() and k.is_contiguous() and v.is_contiguous()
    out = torch.empty_like(q)
    lse = torch.empty((batch, heads, n), device=q.device, dtype=torch.float32)
    dummy = [1, d]
    descs = [TensorDescriptor(t.view(-1, d), [batch * heads * n, d], [d, 1], dummy)
             for t in (q, k, v, out)]
    grid = lambda meta: (n // meta["BLOCK_M"], batch * heads)  # noqa: E731
    _tuned[grid](*descs, lse, d ** -0.5 * FT.LOG2_E, n, HEAD_DIM=d, CAUSAL=causal)
    return out, lse


def bench_case(d: int, n: int, causal: bool) -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    sdpa = torch.nn.functional.scaled_dot_product_attention
    q, k, v = (torch.randn(4, 16, n, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    ref = sdpa(q, k, v, is_causal=causal)
    flops = 4 * 4 * 16 * n * n * d * (0.5 if causal else 1)

    def backend(be):
        def run():
            with sdpa_kernel(be):
                return sdpa(q, k, v, is_causal=causal)
        return run

    runs = {"current": lambda: FT.flash_forward(q, k, v, causal=causal)[0],
            "tma": lambda: tma_forward(q, k, v, causal)[0],
            "cudnn": backend(SDPBackend.CUDNN_ATTENTION),
            "fa2": backend(SDPBackend.FLASH_ATTENTION)}
    line = [f"d={d} N={n} causal={causal}:"]
    for name, fn in runs.items():
        try:
            err = (fn().float() - ref.float()).abs().max().item()
            ms = time_ms(fn)
            line.append(f"{name} {ms:.3f} ms {flops / ms / 1e9:.0f} TF/s (err {err:.1e})")
        except Exception as exc:  # noqa: BLE001 - a failing variant is a line, not a stop
            line.append(f"{name}: {type(exc).__name__}: {str(exc)[:300]}")
    print(" | ".join(line), flush=True)
    print("   tma best config:", getattr(_tuned, "best_config", None), flush=True)


def main() -> None:
    print(torch.cuda.get_device_name(0), "torch", torch.__version__, "triton",
          triton.__version__, flush=True)
    for d, n, causal in [(128, 4096, False), (128, 8192, False), (128, 16384, False),
                         (128, 16384, True), (64, 8192, False), (128, 1024, False)]:
        bench_case(d, n, causal)


if __name__ == "__main__":
    main()
