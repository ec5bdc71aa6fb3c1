"""The Triton FlashAttention forward on a Hopper GPU beside cuDNN and FlashAttention-2 (issue 22).

    python3 scripts/gpu_flash_forward_tuning.py      # on the device machine; prints only

B4 H16 bf16. ``tma``: what ``flash_forward`` runs on Hopper (K/V tiles fetched by the Tensor
Memory Accelerator, the scale folded into one FMA, autotuned tiles); ``pointer``: the portable
kernel, autotuned (``use_tma=False``), which was the workbook's forward before. On the H200
(2026-12-02, triton 3.6, d 128, N = 4k/8k/16k): pointer 408/476/467 TF/s, tma 470/508/518,
cuDNN 589/647/603 (one run each; cuDNN's own numbers moved by up to 9 % between two calls).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import triton

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from workbook.attention import flash_triton as FT  # noqa: E402
from workbook.profiling import time_ms  # noqa: E402


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

    runs = {"tma": lambda: FT.flash_forward(q, k, v, causal=causal)[0],
            "pointer": lambda: FT.flash_forward(q, k, v, causal=causal, use_tma=False)[0],
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


def main() -> None:
    print(torch.cuda.get_device_name(0), "torch", torch.__version__, "triton",
          triton.__version__, "TMA path:", FT.tma_applies(*(torch.empty(1, 1, 128, 128,
                                                                     device="cuda"),) * 3),
          flush=True)
    for d, n, causal in [(128, 4096, False), (128, 8192, False), (128, 16384, False),
                         (128, 16384, True), (64, 8192, False)]:
        bench_case(d, n, causal)


if __name__ == "__main__":
    main()
