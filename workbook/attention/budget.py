"""The exponentials' budget: how much of the tensor cores' peak attention's forward can reach
when its exponentials and its matrix products take turns, and when they overlap.

Per score s_ij the forward does 4·d FLOPs of matrix products (S = Q·Kᵀ and P·V, two FLOPs per
multiply-add each) and one exponential. The tensor cores and the special-function units (which
compute the exponentials) are separate hardware with very different rates: FlashAttention-3's
paper gives 989 TFLOPS of FP16 matmul against 3.9 TFLOPS of special functions on an H100 SXM5,
a ratio r ≈ 254. So per score the exponential costs r / (4·d) of the matmuls' time:

* **taking turns** (one, then the other, nothing under each other): the forward reaches at
  most 1 / (1 + r/(4d)) of the matmul peak: two thirds at d = 128, one half at d = 64;
* **overlapped** (one tile's softmax under another's matmuls, FA3's point): at most
  1 / max(1, r/(4d)): the whole peak at d = 128, where the matmuls take twice the
  exponentials' time, and about the whole peak at d = 64, where the two are nearly equal.

Both are upper bounds: the model leaves out everything else a kernel does (the row max, the
sums, the rescaling, the loads). A kernel measured above the first line must be running its
exponentials under its matmuls, whether its code arranges it (FA3, cuDNN) or the warp
scheduler interleaves warps that happen to be in different phases. :func:`exp_budget` sets
each recorded forward beside both lines, per machine.
"""

from __future__ import annotations

import pandas as pd

from workbook import registry
from workbook.config import check_range, takes_rows
from workbook.hardware import datasheet

__all__ = ["MATMUL_PER_EXP", "exp_ceilings", "exp_budget", "exp_budget_caption"]

# Tensor-core FLOP/s per special-function op/s. FlashAttention-3 (Shah et al. 2024, §3.1):
# H100 SXM5, 989 TFLOPS FP16 matmul, 3.9 TFLOPS special functions. The H200 has the same SMs
# and clocks (the same 989.4 dense TFLOP/s in its datasheet): the same ratio. Other GPUs: not
# known here, and their rows get no lines.
MATMUL_PER_EXP: dict[str, float] = {"H100 SXM": 989.0 / 3.9, "H200 SXM": 989.0 / 3.9}


def exp_ceilings(head_dim: int, ratio: float = 989.0 / 3.9) -> dict[str, float]:
    """The two upper bounds, as fractions of the matmul peak: 'taking turns' and
    'overlapped' (the module's docstring derives them)."""
    check_range("head_dim", head_dim, 1, 1024)
    check_range("ratio", ratio, 1.0, 1e5)
    exp_per_matmul = ratio / (4 * head_dim)   # an exponential's time per unit of matmul time
    return {"taking turns": 1 / (1 + exp_per_matmul),
            "overlapped": 1 / max(1.0, exp_per_matmul)}


@takes_rows
def exp_budget(timing: pd.DataFrame) -> pd.DataFrame:
    """Each machine's forward TFLOP/s (non-causal, each head_dim at its longest N, each call
    timed alone) as a share of its datasheet's dense peak for the dtype (``peak TFLOP/s``),
    beside the two
    ceilings; this machine's rows first. Machines without a known ratio get no ceilings."""
    out = []
    for where, rows in registry.machine_blocks(timing):
        ok = rows[(rows["status"] == "ok") & (rows["metric"] == "throughput")
                  & (rows["mode"] == "fwd") & ~rows["causal"].astype(bool)]
        for (head_dim, dtype), part in ok.groupby(["head_dim", "dtype"]):
            sheet = datasheet(str(part["device"].iloc[0]))
            key = {"bfloat16": "bf16", "float16": "fp16"}.get(str(dtype))
            if sheet is None or key not in sheet.tflops:
                continue
            peak = sheet.tflops[key]
            ratio = MATMUL_PER_EXP.get(sheet.name)
            lines = exp_ceilings(int(head_dim), ratio) if ratio else {}
            n = int(part["seq_len"].max())
            at_n = part[part["seq_len"] == n].groupby("variant")["value"].max()
            for variant, tflops in at_n.sort_values(ascending=False).items():
                turns = lines.get("taking turns")
                out.append({"where": where, "head_dim": int(head_dim), "seq_len": n,
                            "variant": variant, "TFLOP/s": tflops, "peak TFLOP/s": peak,
                            "% of peak": 100 * tflops / peak,
                            "taking turns ≤ %": 100 * turns if turns else float("nan"),
                            "overlapped ≤ %": 100 * lines["overlapped"] if lines else
                            float("nan"),
                            "above the taking-turns line": (tflops / peak > turns) if turns
                            else None})
    return pd.DataFrame(out)


@takes_rows
def exp_budget_caption(budget: pd.DataFrame) -> str:
    """Markdown, per machine and head_dim: the two lines in TFLOP/s, and which forwards are
    above the taking-turns line (their exponentials run under their matmuls) and which
    below it. From :func:`exp_budget`'s table."""
    if budget.empty:
        return "*No forward timing rows yet.*"
    lines = []
    for (where, head_dim), part in budget.groupby(["where", "head_dim"], sort=False):
        if part["taking turns ≤ %"].isna().all():
            lines.append(f"* {where}, d = {head_dim}: no ratio of tensor-core to "
                         "special-function rates is known for this GPU; no lines drawn.")
            continue
        first = part.iloc[0]
        peak = first["peak TFLOP/s"]
        side = part["above the taking-turns line"].astype(bool)
        above = [f"{v} {t:,.0f}" for v, t in zip(part["variant"][side], part["TFLOP/s"][side],
                                                  strict=True)]
        below = [f"{v} {t:,.0f}" for v, t in zip(part["variant"][~side],
                                                  part["TFLOP/s"][~side], strict=True)]
        lines.append(
            f"* {where}, d = {head_dim}, N = {int(first['seq_len']):,}: taking turns "
            f"≤ {first['taking turns ≤ %']:.0f} % of the {peak:,.0f} TFLOP/s peak "
            f"({peak * first['taking turns ≤ %'] / 100:,.0f}), overlapped "
            f"≤ {first['overlapped ≤ %']:.0f} %. Above the first line: "
            f"{', '.join(above) or 'none'}; below it: {', '.join(below) or 'none'} (TFLOP/s).")
        target = part.set_index("variant")["TFLOP/s"]
        if {"triton", "sdpa_cudnn"} <= set(target.index):   # issue 22's bar for the forward
            bar = 0.9 * target["sdpa_cudnn"]
            lines.append(f"  The target for the workbook's forward, 0.9× cuDNN, is {bar:,.0f} "
                         f"TFLOP/s here, {100 * bar / peak:.0f} % of the peak: "
                         + ("below the taking-turns line: the exponentials' time alone does "
                            "not rule it out for a kernel that takes turns; the rest of a "
                            "kernel's work is what stands between it and the target."
                            if bar / peak < first["taking turns ≤ %"] / 100 else
                            "above the taking-turns line: only a kernel that overlaps its "
                            "exponentials with its matmuls can reach it."))
    if len(budget) and not budget["above the taking-turns line"].fillna(False).astype(bool).any():
        lines.append("No forward here is above the taking-turns line: the exponentials' time "
                     "alone does not account for any kernel's distance from the peak.")
    return "\n".join(lines)
