"""A quick check of the Triton FlashAttention backward on a GPU: gradients against float64
autograd, then forward+backward time beside PyTorch's FlashAttention-2 and cuDNN kernels.

    python3 scripts/gpu_flash_backward.py            # on the device machine
    python3 scripts/gpu_flash_backward.py --tma-only # N = 384 only (the Hopper TMA forward)

Prints; records nothing (the `attention_timing` experiment is the recorded measurement).
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from workbook import attention as A  # noqa: E402
from workbook.profiling import time_ms  # noqa: E402


def check_gradients(lengths: tuple[int, ...] = (333, 384)) -> None:
    for dtype, head_dim, causal, n in itertools.product(
            ("float16", "bfloat16"), (64, 128), (False, True), lengths):  # 384: TMA forward
        gen = torch.Generator(device="cuda").manual_seed(0)
        q, k, v, dout = (torch.randn((2, 3, n, head_dim), generator=gen,
                                     device="cuda").to(A.DTYPES[dtype]) for _ in range(4))
        leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
        out = A.attention(*leaves, variant="triton", causal=causal)
        out.backward(dout)
        ref = [t.double().requires_grad_(True) for t in (q, k, v)]
        ref_out = torch.nn.functional.scaled_dot_product_attention(*ref, is_causal=causal)
        ref_out.backward(dout.double())
        errs = [A.relative_error(out, ref_out)] + [A.relative_error(g.grad, w.grad)
                                                   for g, w in zip(leaves, ref, strict=True)]
        ok = errs[0] < A.TOLERANCE[dtype] and max(errs) < 2 * A.TOLERANCE[dtype]
        print(f"{dtype} hd={head_dim} causal={causal} N={n}: "
              + " ".join(f"{name} {e:.1e}" for name, e in zip(("out", "dq", "dk", "dv"), errs,
                                                               strict=True))
              + ("" if ok else "  FAIL"), flush=True)


def time_fwd_bwd(seq_len: int, causal: bool, head_dim: int = 128) -> None:
    batch, heads = 4, 16
    q, k, v, dout = (torch.randn(batch, heads, seq_len, head_dim, device="cuda",
                                 dtype=torch.bfloat16, requires_grad=i < 3) for i in range(4))
    flops = 4 * batch * heads * seq_len**2 * head_dim * (0.5 if causal else 1) * 3.5
    for variant in ("sdpa_flash", "sdpa_cudnn", "triton"):
        def step(variant: str = variant) -> None:
            out = A.attention(q, k, v, variant=variant, causal=causal)
            out.backward(dout)
        try:
            ms = time_ms(step)
        except Exception as exc:  # noqa: BLE001 - a variant missing here is a line, not a stop
            print(f"N={seq_len} causal={causal} {variant}: {type(exc).__name__}: {exc}"[:160])
            continue
        print(f"N={seq_len} causal={causal} {variant:11s} fwd+bwd {ms:8.2f} ms "
              f"{flops / ms / 1e9:6.0f} TFLOP/s", flush=True)


if __name__ == "__main__":
    print(torch.cuda.get_device_name(0), "torch", torch.__version__, flush=True)
    if sys.argv[1:] == ["--tma-only"]:   # the lengths the TMA forward takes, no timing
        check_gradients((384,))
        sys.exit(0)
    check_gradients()
    for n in (4096, 16384):
        time_fwd_bwd(n, causal=False)
