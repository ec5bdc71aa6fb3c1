"""The memory notebook's captions: each table in words (Markdown), every number read from
the rows through the views' tables, never typed."""

from __future__ import annotations

import math

import pandas as pd

from workbook.config import takes_rows
from workbook.memory.views import gap_items, recompute_table, sweep_exponents, sweep_table


@takes_rows
def gap_caption(rows: pd.DataFrame) -> str:
    """The gap table in words (Markdown), every number read from :func:`gap_items`' rows: this
    machine's where it measured a peak, else the recording that measured the most items."""
    table = gap_items(rows)
    if table.empty:
        return "No breakdown with a measured peak (a GPU's allocator) here or in the ledger yet."
    counts = table.dropna(subset=["measured GB"]).groupby("where", sort=False).size()
    where = table["where"].iloc[0] if table["where"].iloc[0].startswith("this machine") \
        else counts.idxmax()
    t = table[table["where"] == where].set_index("item")
    logits = t["one fp32 logits tensor GB"].iloc[0]
    t = t.dropna(subset=["measured GB"])  # the items this device measured
    peak, seq = t.loc["peak (allocated)"], int(t["seq_len"].iloc[0])
    parts = [f"**{where}**, seq_len {seq}, checkpointing {t['checkpointing'].iloc[0]}: the "
             f"measured peak is {peak['measured GB']:.2f} GB against the formula's "
             f"{peak['formula GB']:.2f} GB, {peak['Δ GB']:+.2f} GB. Item by item:"]
    split = "activations: s×s attention matrices" in t.index
    phases = [f"peak in {p}" for p in ("forward", "backward", "step")]
    skip = ["peak (allocated)", *phases, "activations (all)" if split else ""]
    for item, r in t.drop(index=skip, errors="ignore").iterrows():
        parts.append(f"- {item}: {r['measured GB']:.2f} GB measured, {r['formula GB']:.2f} GB "
                     f"by the formula ({r['Δ GB']:+.2f} GB)")
    trans = t.loc["transients at the peak", "measured GB"]
    parts.append(f"\nThe transients are {trans / logits:.1f}× one b·s·V tensor of fp32 logits "
                 f"({logits:.2f} GB), the unit the loss's temporaries come in.")
    at = t["measured GB"].reindex(phases).dropna()
    if len(at):
        each = ", ".join(f"{k.removeprefix('peak in ')} {v:.2f} GB" for k, v in at.items())
        parts.append(f"The peak falls in the {at.idxmax().removeprefix('peak in ')} "
                     f"(each phase's peak: {each}).")
    return "\n".join(parts)


@takes_rows
def sweep_caption(rows: pd.DataFrame) -> str:
    """The sweep in words (Markdown) for the first device in the rows (this machine where it
    measured), every number read from the rows."""
    k = sweep_exponents(rows)
    if k.empty:
        return "No activation sweep here or in the ledger yet."
    where = k["where"].iloc[0]
    table = sweep_table(rows)
    t = table[table["where"] == where]
    k = k[k["where"] == where].set_index("series")
    col = "peak (MB)" if k["method"].iloc[0] == "peak" else "saved (MB)"
    parts = [f"**{where}** ({k['method'].iloc[0]}):"]
    for attention in ("eager", "sdpa"):
        ran = t[(t["attention"] == attention) & (t["status"] == "ok")]
        if attention not in k.index or ran.empty:
            continue
        lo, hi = ran.iloc[0], ran.iloc[-1]
        parts.append(f"- {attention}: {lo[col]:.1f} MB at seq_len {lo['seq_len']} → "
                     f"{hi[col]:.1f} MB at {hi['seq_len']} ({hi[col] / lo[col]:.1f}× for "
                     f"{hi['seq_len'] / lo['seq_len']:.0f}× the length), k = "
                     f"{k.loc[attention, 'measured k']:.2f} (formula "
                     f"{k.loc[attention, 'formula k']:.2f})")
    oom = t[t["status"] == "oom"]
    if len(oom):
        where_oom = [f"{a} at {s}" for a, s in zip(oom["attention"], oom["seq_len"], strict=True)]
        parts.append(f"- did not fit (oom): {', '.join(where_oom)}")
    return "\n".join(parts)


@takes_rows
def recompute_caption(rows: pd.DataFrame) -> str:
    """Checkpointing's price in words (Markdown), every number read from the rows."""
    table = recompute_table(rows)
    if table.empty:
        return "No checkpointing timings here or in the ledger yet."
    r, blocks = table.iloc[0], "predicted %: blocks' forward"
    mem = (f"peak {r['peak MB (no ckpt)']:.0f} → {r['peak MB (ckpt)']:.0f} MB"
           if not math.isnan(r["peak MB (no ckpt)"]) else
           f"saved for backward {r['saved MB (no ckpt)']:.2f} → {r['saved MB (ckpt)']:.2f} MB")
    return (f"**{r['where']}**: a step took {r['step ms (no ckpt)']:.1f} ms without "
            f"checkpointing and {r['step ms (ckpt)']:.1f} ms with it (medians of "
            f"{int(r['repeats'])} repeats): {r['overhead % (median)']:+.0f}% "
            f"(repeats from {r['overhead % low']:+.0f}% to {r['overhead % high']:+.0f}%), "
            f"against {r['predicted %: one forward (lecture)']:+.0f}% for one more forward and "
            f"{r[blocks]:+.0f}% for the blocks' forward alone; memory: {mem}.")
