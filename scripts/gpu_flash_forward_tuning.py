"""The Triton FlashAttention forward on a Hopper GPU beside cuDNN and FlashAttention-2 (issue 22).

    python3 scripts/gpu_flash_forward_tuning.py          # on the device machine; prints only
    python3 scripts/gpu_flash_forward_tuning.py --sweep  # every tile/launch option, per kernel,
                                                         # and the backward's dQ by atomics
    python3 scripts/gpu_flash_forward_tuning.py --dq     # only the backward's two dQ modes,
                                                         # fwd+bwd beside cuDNN and FA2 (~1 min)
    python3 scripts/gpu_flash_forward_tuning.py --overlap  # the forward plain, hand-pipelined
                                                         # and persistent, per configuration
    python3 scripts/gpu_flash_forward_tuning.py --pair   # programs of two 128-row halves
    python3 scripts/gpu_flash_forward_tuning.py --lazy   # PAIR with the lazy rescaling
    python3 scripts/gpu_flash_forward_tuning.py --exp16  # PAIR with float16 exponentials
    python3 scripts/gpu_flash_forward_tuning.py --gluon  # the FA3-style Gluon forward
                                                         # (workbook.attention.flash_gluon)
    python3 scripts/gpu_flash_forward_tuning.py --bwd    # the TMA backward's tiles, per kernel
    python3 scripts/gpu_flash_forward_tuning.py --host   # where the host's time per call goes

B4 H16 bf16. ``tma``: what ``flash_forward`` runs on Hopper (K/V tiles fetched by the Tensor
Memory Accelerator, the scale folded into one FMA, autotuned tiles); ``pointer``: the portable
kernel, autotuned (``use_tma=False``), which was the workbook's forward before. On the H200
(2026-12-02, triton 3.6, d 128, N = 4k/8k/16k): pointer 408/476/467 TF/s, tma 470/508/518,
cuDNN 589/647/603 (one run each; cuDNN's own numbers moved by up to 9 % between two calls).
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import torch
import triton

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from workbook.attention import flash_gluon as FG  # noqa: E402
from workbook.attention import flash_triton as FT  # noqa: E402
from workbook.attention import flash_triton_backward as FB  # noqa: E402
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


def kernel_ms(fn, names: tuple[str, ...], repeats: int = 10) -> dict[str, float]:
    """GPU milliseconds per call of each named kernel in ``fn`` (torch.profiler)."""
    fn()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(repeats):
            fn()
        torch.cuda.synchronize()
    out = dict.fromkeys(names, 0.0)
    for event in prof.key_averages():
        for name in names:
            if event.key.startswith(name):
                out[name] += getattr(event, "device_time_total", 0.0) / 1e3 / repeats
    return out


def sweep(n: int = 16384, d: int = 128) -> None:
    """Each forward TMA configuration (tiles, warps, stages, warp specialisation) beside cuDNN,
    timed in turn; then backward tiles per kernel (dK/dV and dQ separately, by the profiler)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q, k, v, do = (torch.randn(4, 16, n, d, device="cuda", dtype=torch.bfloat16)
                   for _ in range(4))
    flops = 4 * 4 * 16 * n * n * d

    def cudnn():
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v)

    ref = cudnn()
    print(f"forward d={d} N={n}: cudnn {flops / time_ms(cudnn) / 1e9:.0f} TF/s, "
          f"autotuned tma {flops / time_ms(lambda: FT.flash_forward(q, k, v)) / 1e9:.0f}",
          flush=True)
    for bn, w, st, ws in itertools.product((64, 128), (4, 8), (2, 3, 4), (False, True)):
        launch = {"num_warps": w, "num_stages": st, "WARP_SPEC": ws}
        try:
            def run(bn=bn, launch=launch):
                return FT.flash_forward(q, k, v, block_m=128, block_n=bn, use_tma=True,
                                        launch=launch)[0]
            err = (run().float() - ref.float()).abs().max().item()
            ms = time_ms(run)
            print(f"  fwd 128x{bn} w{w} s{st} ws={ws}: {flops / ms / 1e9:.0f} TF/s "
                  f"(cudnn {flops / time_ms(cudnn) / 1e9:.0f}) err {err:.1e}", flush=True)
        except Exception as exc:  # noqa: BLE001 - a configuration that fails is a line
            print(f"  fwd 128x{bn} w{w} s{st} ws={ws}: {type(exc).__name__}: "
                  f"{str(exc)[:160]}", flush=True)
    out, lse = FT.flash_forward(q, k, v)
    names = ("_attn_bwd_dkdv", "_attn_bwd_dq", "_attn_bwd_delta")
    tuned = kernel_ms(lambda: FB.flash_backward(q, k, v, out, lse, do), names)
    print("backward autotuned:", {k_: f"{v_:.2f} ms" for k_, v_ in tuned.items()}, flush=True)
    # dQ by atomics inside the dK/dV kernel (FlashAttention-2) against the separate dQ pass,
    # each whole backward timed, and its error against the pass's dQ
    for mode in ("pass", "atomic"):
        try:
            def bwd(mode=mode):
                return FB.flash_backward(q, k, v, out, lse, do, dq_mode=mode)
            err = (bwd()[0].float() - FB.flash_backward(q, k, v, out, lse, do)[0].float()
                   ).abs().max().item()
            ms = time_ms(bwd)
            print(f"  backward dq_mode={mode}: {ms:.2f} ms, {2.5 * flops / ms / 1e9:.0f} TF/s "
                  f"(dQ vs the pass: {err:.1e}); kernels "
                  f"{ {k_: round(v_, 2) for k_, v_ in kernel_ms(bwd, names).items()} }",
                  flush=True)
        except Exception as exc:  # noqa: BLE001 - a mode that fails is a line
            print(f"  backward dq_mode={mode}: {type(exc).__name__}: {str(exc)[:200]}", flush=True)
    dkdv = ((32, 128), (64, 128), (64, 64), (32, 64), (128, 128))
    dq = ((128, 32), (128, 64), (64, 64), (128, 128), (64, 32))
    for (w, st), (m1n1, m2n2) in itertools.product(((4, 2), (4, 3), (8, 2), (8, 3)),
                                                   zip(dkdv, dq, strict=True)):
        tiles = (*m1n1, *m2n2)
        try:
            got = kernel_ms(lambda tiles=tiles, w=w, st=st: FB.flash_backward(
                q, k, v, out, lse, do, tiles=tiles, launch={"num_warps": w, "num_stages": st}),
                names)
            print(f"  bwd w{w} s{st} dkdv {m1n1}: {got['_attn_bwd_dkdv']:.2f} ms, "
                  f"dq {m2n2}: {got['_attn_bwd_dq']:.2f} ms", flush=True)
        except Exception as exc:  # noqa: BLE001
            print(f"  bwd w{w} s{st} tiles {tiles}: {type(exc).__name__}: {str(exc)[:160]}",
                  flush=True)


def bwd_sweep(n: int, d: int = 128, causal: bool = False) -> None:
    """The TMA backward's two kernels per tile/launch option, each timed alone by the
    profiler, beside the portable kernels and the autotuned TMA pick (``--bwd``)."""
    q, k, v, do = (torch.randn(4, 16, n, d, device="cuda", dtype=torch.bfloat16)
                   for _ in range(4))
    out, lse = FT.flash_forward(q, k, v, causal=causal)
    names = ("_attn_bwd_dkdv", "_attn_bwd_dq", "_attn_bwd_delta")
    tma = ("_attn_bwd_dkdv_tma", "_attn_bwd_dq_tma")
    print(f"backward d={d} N={n} causal={causal}: portable autotuned",
          {k_: round(v_, 2) for k_, v_ in kernel_ms(lambda: FB.flash_backward(
              q, k, v, out, lse, do, causal=causal, use_tma=False), names).items()},
          "| TMA autotuned", {k_: round(v_, 2) for k_, v_ in kernel_ms(
              lambda: FB.flash_backward(q, k, v, out, lse, do, causal=causal), tma).items()},
          flush=True)
    for (w, st), (m1n1, m2n2) in itertools.product(
            ((4, 2), (4, 3), (8, 2), (8, 3)),
            zip(((32, 64), (64, 64), (64, 128), (32, 128), (128, 128)),
                ((128, 64), (64, 64), (128, 128), (128, 32), (64, 32)), strict=True)):
        try:
            got = kernel_ms(lambda m1n1=m1n1, m2n2=m2n2, w=w, st=st: FB.flash_backward(
                q, k, v, out, lse, do, causal=causal, tiles=(*m1n1, *m2n2), use_tma=True,
                launch={"num_warps": w, "num_stages": st}), tma)
            print(f"  TMA bwd w{w} s{st} dkdv {m1n1}: {got[tma[0]]:.2f} ms, dq {m2n2}: "
                  f"{got[tma[1]]:.2f} ms", flush=True)
        except Exception as exc:  # noqa: BLE001 - a configuration that fails is a line
            print(f"  TMA bwd w{w} s{st} {m1n1} {m2n2}: {type(exc).__name__}: "
                  f"{str(exc)[:120]}", flush=True)


def dq_modes(d: int, n: int, causal: bool) -> None:
    """Forward + backward with each ``dq_mode`` beside cuDNN's and FlashAttention-2's, one line
    (TF/s counted as 3.5 x the forward's products, the workbook's convention)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q, k, v, do = (torch.randn(4, 16, n, d, device="cuda", dtype=torch.bfloat16,
                               requires_grad=True) for _ in range(4))
    flops = 3.5 * 4 * 4 * 16 * n * n * d * (0.5 if causal else 1)
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def sdpa_step(be):
        def run():
            with sdpa_kernel(be):
                return torch.autograd.grad(sdpa(q, k, v, is_causal=causal), (q, k, v), do)
        return run

    def triton_step(mode, use_tma=None):
        def run():
            out, lse = FT.flash_forward(q, k, v, causal=causal, store_lse=True)
            return FB.flash_backward(q, k, v, out, lse, do, causal=causal, dq_mode=mode,
                                     use_tma=use_tma)
        return run

    ref = sdpa_step(SDPBackend.FLASH_ATTENTION)()
    line = [f"fwd+bwd d={d} N={n} causal={causal}:"]
    for name, fn in (("pass", triton_step("pass")),
                     ("pass portable", triton_step("pass", use_tma=False)),
                     ("atomic", triton_step("atomic")),
                     ("cudnn", sdpa_step(SDPBackend.CUDNN_ATTENTION)),
                     ("fa2", sdpa_step(SDPBackend.FLASH_ATTENTION))):
        try:
            err = max((a.float() - b.float()).abs().max().item()
                      for a, b in zip(fn(), ref, strict=True))
            ms = time_ms(fn)
            line.append(f"{name} {ms:.2f} ms {flops / ms / 1e9:.0f} TF/s (err {err:.1e})")
        except Exception as exc:  # noqa: BLE001 - a failing variant is a line, not a stop
            line.append(f"{name}: {type(exc).__name__}: {str(exc)[:200]}")
    print(" | ".join(line), flush=True)


# Launch variants per mode: (label, BLOCK_M, BLOCK_N, launch options)
OVERLAP_VARIANTS = [
    (f"128x{bn} w{w} s{st} {label}", 128, bn, {"num_warps": w, "num_stages": st, **option})
    for (bn, w, st), (label, option) in itertools.product(
        ((64, 4, 2), (64, 8, 2), (128, 8, 2)),
        {"plain": {}, "OVERLAP": {"OVERLAP": True}, "P1": {"PERSISTENT": 1},
         "P2": {"PERSISTENT": 2}, "P2+OVERLAP": {"PERSISTENT": 2, "OVERLAP": True}}.items())]
# PAIR: one program owns 2 x 128 rows that share each K/V tile (FA3's two warpgroups)
PAIR_VARIANTS = [("128x128 w8 s2 OVERLAP", 128, 128,
                  {"num_warps": 8, "num_stages": 2, "OVERLAP": True}),
                 ("128x64 w4 s3", 128, 64, {"num_warps": 4, "num_stages": 3})] + [
    (f"PAIR 256x{bn} w{w} s{st}{' OVERLAP' if o else ''}", 256, bn,
     {"num_warps": w, "num_stages": st, "PAIR": True, "OVERLAP": o})
    for bn, w, st, o in ((64, 8, 3, False), (64, 8, 4, False), (64, 8, 2, True),
                         (64, 8, 3, True), (32, 8, 3, False), (32, 8, 4, False),
                         (32, 8, 3, True), (64, 16, 3, False))]


# LAZY (with PAIR): the running max moved only when it grows by more than a factor 256
LAZY_VARIANTS = [
    (f"PAIR 256x64 w8 s{st}{' LAZY' if lazy else ''}", 256, 64,
     {"num_warps": 8, "num_stages": st, "PAIR": True, "LAZY": lazy})
    for st, lazy in ((3, False), (3, True), (4, True), (2, True))]
# EXP16 (with PAIR): the exponentials in float16, two per special-function instruction
EXP16_VARIANTS = [
    (f"PAIR 256x64 w8 s{st}{' EXP16' if e16 else ''}", 256, 64,
     {"num_warps": 8, "num_stages": st, "PAIR": True, "EXP16": e16})
    for st, e16 in ((3, False), (3, True), (4, True))]
# GLUON: flash_gluon's warp-specialised forward (a TMA producer warp, two consumer
# warpgroups of 64 rows, S_j and P_(j-1)V_(j-1) in flight under the softmax), per K/V tile
# and ring depth, with and without the warpgroups taking turns (PINGPONG), beside the TMA
# kernel's best plain and PAIR launches
GLUON_VARIANTS = [("128x128 w8 s2 OVERLAP", 128, 128,
                   {"num_warps": 8, "num_stages": 2, "OVERLAP": True}),
                  ("PAIR 256x64 w8 s3", 256, 64, {"num_warps": 8, "num_stages": 3, "PAIR": True})
                  ] + [(f"GLUON 128x{bn} ring {st}{' PINGPONG' if pp else ''}", 128, bn,
                        {"GLUON": True, "stages": st, "pingpong": pp})
                       for bn, st, pp in ((128, 2, False), (128, 3, False), (64, 3, False),
                                          (128, 2, True), (128, 3, True), (64, 3, True))]
TABLES = {"--overlap": OVERLAP_VARIANTS, "--pair": PAIR_VARIANTS, "--lazy": LAZY_VARIANTS,
          "--exp16": EXP16_VARIANTS, "--gluon": GLUON_VARIANTS}


def variants(d: int, n: int, causal: bool, table: list) -> None:
    """The TMA forward under each launch variant of ``table``, beside the autotuned default,
    cuDNN and FlashAttention-2; one line (``--overlap``: the loop as written (``plain``), the
    hand-pipelined one (``OVERLAP``: tile j+1's QKᵀ issued before tile j's softmax, FA3's
    intra-warpgroup overlap) and persistent grids (``P1``/``P2``: 1 or 2 programs per SM
    looping over the tiles); ``--pair``: programs of two 128-row halves (``PAIR``);
    ``--gluon``: :mod:`workbook.attention.flash_gluon` per K/V tile and ring depth).
    Each entry is TF/s timed call by call / queued (``time_ms(queued=True)``: the host's
    launch overhead hidden under the previous call), so the gap of the two is the host's."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q, k, v = (torch.randn(4, 16, n, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    flops = 4 * 4 * 16 * n * n * d * (0.5 if causal else 1)

    def tfs(fn) -> str:
        return "/".join(f"{flops / time_ms(fn, queued=qd) / 1e9:.0f}" for qd in (False, True))

    def backend(be):
        def run():
            with sdpa_kernel(be):
                return torch.nn.functional.scaled_dot_product_attention(q, k, v,
                                                                        is_causal=causal)
        return run

    ref = backend(SDPBackend.CUDNN_ATTENTION)()
    line = [f"fwd d={d} N={n} causal={causal}: cudnn {tfs(backend(SDPBackend.CUDNN_ATTENTION))}",
            f"fa2 {tfs(backend(SDPBackend.FLASH_ATTENTION))}",
            f"autotuned {tfs(lambda: FT.flash_forward(q, k, v, causal=causal))}"]
    for name, bm, bn, launch in table:
        try:
            def run(bm=bm, bn=bn, launch=launch):
                if launch.get("GLUON"):
                    return FG.flash_forward_gluon(q, k, v, causal=causal, block_n=bn,
                                                  stages=launch["stages"],
                                                  pingpong=launch["pingpong"])[0]
                return FT.flash_forward(q, k, v, causal=causal, block_m=bm, block_n=bn,
                                        use_tma=True, launch=launch)[0]
            err = (run().float() - ref.float()).abs().max().item()
            line.append(f"{name} {tfs(run)} (err {err:.0e})")
        except Exception as exc:  # noqa: BLE001 - a configuration that fails is an entry
            line.append(f"{name}: {type(exc).__name__} {str(exc)[:120]}")
    line.append(f"cudnn again {tfs(backend(SDPBackend.CUDNN_ATTENTION))}")
    print(" | ".join(line), flush=True)


def host(calls: int = 500) -> None:
    """Where the host's time per call goes (``--host``): a tiny shape (B1 H1 N128 d128), so
    the GPU waits on the host; wall time per call of the forward and of forward + backward
    through autograd, then cProfile's 15 heaviest functions of each Triton path."""
    import cProfile
    import pstats
    import time

    q, k, v, do = (torch.randn(1, 1, 128, 128, device="cuda", dtype=torch.bfloat16)
                   for _ in range(4))
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def step(attend):
        return lambda: torch.autograd.grad(attend(*leaves), leaves, do)

    paths = {f"default ({FT.forward_kernel(q, k, v)})": lambda: FT.flash_forward(q, k, v),
             "TMA autotuned": lambda: FT.flash_forward(q, k, v, use_tma=True),
             "fixed 128x64 w4 s2": lambda: FT.flash_forward(
                 q, k, v, block_m=128, block_n=64, use_tma=True,
                 launch={"num_warps": 4, "num_stages": 2}),
             "sdpa (cuDNN picks)": lambda: sdpa(q, k, v),
             "fwd+bwd autotuned": step(FB.flash_attention),
             "fwd+bwd sdpa": step(sdpa)}
    for name, fn in paths.items():
        for _ in range(20):
            fn()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
        print(f"{name}: {(time.perf_counter() - t0) / calls * 1e6:.1f} µs per call (host-bound)",
              flush=True)
    for name in (next(iter(paths)), "fwd+bwd autotuned"):
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(calls):
            paths[name]()
        profile.disable()
        torch.cuda.synchronize()
        print(f"cProfile, {name}:", flush=True)
        pstats.Stats(profile).sort_stats("tottime").print_stats(15)


def main() -> None:
    print(torch.cuda.get_device_name(0), "torch", torch.__version__, "triton",
          triton.__version__, "TMA path:", FT.tma_applies(*(torch.empty(1, 1, 128, 128,
                                                                     device="cuda"),) * 3),
          flush=True)
    for d, n, causal in [(128, 4096, False), (128, 8192, False), (128, 16384, False),
                         (128, 16384, True), (64, 8192, False)]:
        bench_case(d, n, causal)


if __name__ == "__main__":
    if sys.argv[1:] == ["--sweep"]:
        print(torch.cuda.get_device_name(0), "triton", triton.__version__, flush=True)
        sweep(16384)
        sweep(4096)
    elif len(sys.argv) == 2 and sys.argv[1] in TABLES:
        print(torch.cuda.get_device_name(0), "triton", triton.__version__, "(TF/s)", flush=True)
        table = TABLES[sys.argv[1]]
        for d, n, causal in [(128, 4096, False), (128, 8192, False), (128, 16384, False),
                             (128, 16384, True)]:
            variants(d, n, causal, table)
    elif sys.argv[1:] == ["--bwd"]:
        print(torch.cuda.get_device_name(0), "triton", triton.__version__, flush=True)
        for n, causal in ((16384, False), (4096, False), (16384, True)):
            bwd_sweep(n, causal=causal)
    elif sys.argv[1:] == ["--host"]:
        host()
    elif sys.argv[1:] == ["--dq"]:
        print(torch.cuda.get_device_name(0), "triton", triton.__version__, flush=True)
        for d, n, causal in [(128, 16384, False), (128, 4096, False), (128, 16384, True),
                             (64, 16384, False), (128, 1024, False)]:
            dq_modes(d, n, causal)
    else:
        main()
