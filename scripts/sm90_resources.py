"""Registers, spills and shared memory of the attention kernels' TMA configurations, compiled
for Hopper (sm_90) on this machine, no GPU needed (workbook.profiling.kernel_resources).

    python scripts/sm90_resources.py            # every configuration the autotuners offer
    python scripts/sm90_resources.py 256 128 8 3 PAIR   # one forward tile: M N warps stages

The Gluon forward (workbook.attention.flash_gluon) closes the list, one line per K/V tile and
ring depth; its registers are those at launch (168, shared by 12 warps), before the producer
warp hands most of its own to the two consumer warpgroups (240 each).

A configuration that spills (spill bytes > 0) ran at a fraction of the speed on the H200
(PAIR 256x128: 262-310 TF/s against 539 for 256x64; issue 22's tuning log), so look here before
spending device time on one. The numbers are this Triton's: the device's may allocate
differently (the header line names the version).
"""

from __future__ import annotations

import sys

import triton

from workbook.attention import flash_gluon as G
from workbook.attention import flash_triton_backward as B
from workbook.attention import flash_triton_hopper as H
from workbook.profiling import kernel_resources

D = 128
FLAGS = ("WARP_SPEC", "OVERLAP", "PERSISTENT", "PAIR", "LAZY", "EXP16")


def _desc(rows: int) -> str:
    return f"tensordesc<bf16[{rows},{D}]>"


def forward(bm: int, bn: int, warps: int, stages: int, **flags) -> dict:
    half = bm // 2 if flags.get("PAIR") else bm   # PAIR fetches and stores half-tiles
    sig = {"desc_q": _desc(half), "desc_k": _desc(bn), "desc_v": _desc(bn), "desc_o": _desc(half),
           "LSE": "*fp32", "qk_scale": "fp32", "seq_len": "i32", "n_bh": "i32"}
    const = {"HEAD_DIM": D, "BLOCK_M": bm, "BLOCK_N": bn, "CAUSAL": False, "STORE_LSE": True,
             **{f: flags.get(f, 0 if f == "PERSISTENT" else False) for f in FLAGS}}
    sig.update(dict.fromkeys(const, "constexpr"))
    return kernel_resources(H.TMA_FORWARD_KERNEL, sig, const, num_warps=warps, num_stages=stages)


def backward(kernel, bm: int, bn: int, warps: int, stages: int) -> dict:
    names = ["desc_q", "desc_k", "desc_v", "desc_do", "LSE2", "DELTA"]
    outs = ["desc_dk", "desc_dv"] if kernel is B.TMA_BACKWARD_KERNELS["dK/dV"] else ["desc_dq"]
    rows = {"desc_q": bm, "desc_do": bm, "desc_dq": bm}
    sig = {n: "*fp32" if n in ("LSE2", "DELTA") else _desc(rows.get(n, bn))
           for n in names + outs}
    sig.update({"qk_scale": "fp32", "sm_scale": "fp32", "seq_len": "i32"})
    const = {"HEAD_DIM": D, "BLOCK_M": bm, "BLOCK_N": bn, "CAUSAL": False}
    sig.update(dict.fromkeys(const, "constexpr"))
    return kernel_resources(kernel, sig, const, num_warps=warps, num_stages=stages)


SHARED_MAX = 227 * 1024   # shared memory one block may use on sm_90 (H100, H200)


def line(name: str, config: str, found: dict) -> str:
    spills, shared = found["spill_bytes"], found["shared_bytes"]
    return (f"{name:10s} {config:28s} {found['registers']:4d} regs  "
            f"{shared / 1024:6.1f} KiB shared  "
            + (f"SPILLS {spills} B" if spills else "no spills")
            + ("  (over the 227 KiB a block may use: will not launch)"
               if shared > SHARED_MAX else ""))


def main(argv: list[str]) -> None:
    print(f"sm_90, head_dim {D}, bf16, non-causal; triton {triton.__version__}")
    if argv:
        bm, bn, warps, stages = map(int, argv[:4])
        flags = {f: True for f in argv[4:]}
        print(line("forward", " ".join(argv), forward(bm, bn, warps, stages, **flags)))
        return
    for c in H.FORWARD_TMA_CONFIGS:
        flags = {k: v for k, v in c.kwargs.items() if k in FLAGS}
        name = f"{c.kwargs['BLOCK_M']}x{c.kwargs['BLOCK_N']} w{c.num_warps} s{c.num_stages}"
        name += "".join(f" {f}" for f in flags)
        print(line("forward", name, forward(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"],
                                            c.num_warps, c.num_stages, **flags)), flush=True)
    for label, configs in (("dK/dV", B.DKDV_TMA_CONFIGS), ("dQ", B.DQ_TMA_CONFIGS)):
        kernel = B.TMA_BACKWARD_KERNELS[label]
        for c in configs:
            bm, bn = c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]
            print(line(label, f"{bm}x{bn} w{c.num_warps} s{c.num_stages}",
                       backward(kernel, bm, bn, c.num_warps, c.num_stages)), flush=True)
    if G.gluon_available():   # registers here are the launch's; the partitions then move them
        for bn, stages, pp in ((128, 2, False), (128, 3, False), (64, 3, False),
                               (128, 2, True), (128, 3, True), (64, 3, True)):
            print(line("gluon", f"128x{bn} ring {stages}{' PINGPONG' if pp else ''}",
                       G.resources(bn, stages, pingpong=pp)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
