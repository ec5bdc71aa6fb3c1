"""Captions: the prose of notebook 02 printed from the rows (MFU, kernels, the loss kernel,
energy, ncu's bytes), so no measured number is typed into a markdown cell."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from workbook import results
from workbook.config import takes_rows
from workbook.flops.views import (
    bf16_rooflines,
    energy_table,
    kernel_values,
    loss_kernel_table,
    mfu_values,
    ordered_wheres,
    where_of,
)
from workbook.hardware import datasheet

__all__ = ["counted_caption", "mfu_caption", "kernel_caption", "loss_kernel_caption",
           "energy_caption", "ncu_loss_bytes", "ncu_caption", "claims_caption"]

def _fmt(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:,.{digits}g}"


def _roofline_note(rows: pd.DataFrame, roofs: pd.DataFrame) -> str:
    """'775 TFLOP/s, this machine's live run' for the device of ``rows``, or ''."""
    device = str(rows["device"].iloc[0]) if "device" in rows and len(rows) else ""
    hit = roofs[roofs["device"] == device]
    return (f"{hit['tflops'].iloc[0]:,.0f} TFLOP/s, {hit['label'].iloc[0]}" if len(hit)
            else "")


@takes_rows
def counted_caption(counted: pd.DataFrame) -> str:
    """Markdown: how close FlopCounterMode's count comes to the formula, part by part, from
    :func:`formula_vs_counted`'s table ("agrees exactly", or by how many FLOPs and ppm)."""
    table = counted.set_index("part")
    lines = []
    for part, row in table.iterrows():
        predicted, found = float(row["predicted FLOPs"]), float(row["counted FLOPs"])
        gap = found - predicted
        if gap == 0:
            said = f"agrees exactly ({found:,.0f} FLOPs)"
        elif abs(gap) / predicted < 1e-3:
            said = (f"agrees to {1e6 * abs(gap) / predicted:,.0f} ppm ({abs(gap):,.0f} FLOPs "
                    f"{'more' if gap > 0 else 'fewer'} than {predicted:,.0f})")
        else:
            said = f"is counted {found / predicted:.3f}× the formula ({found:,.0f} FLOPs)"
        lines.append(f"* {part}: {said}")
    return "\n".join(lines)


@takes_rows
def mfu_caption(rows: pd.DataFrame, roofline: pd.DataFrame | None = None) -> str:
    """Markdown: per place, each run's step time and MFU (the ladder), the best run against the
    40 % target and nanoGPT's 38 %, against the measured roofline (``roofline``: 00's rows,
    default the ledger's; which run of it is named), and the spread of peak memory. Every
    number is formatted from the unrounded values."""
    roofline = results.load("roofline") if roofline is None else roofline
    table = mfu_values(rows, roofline)
    if table.empty:
        return "*No MFU rows to describe yet.*"
    roofs = bf16_rooflines(roofline)
    lines = []
    groups = (table.columns.get_level_values(0).unique()
              if isinstance(table.columns, pd.MultiIndex) else [None])
    where = where_of(rows)
    for place in groups:
        part = table[place] if place is not None else table
        label = place or str(where.iloc[0])
        ladder = []
        for run in part.columns:
            ms = part.loc["step_time", run] if "step_time" in part.index else float("nan")
            mfu = (part.loc["mfu_datasheet", run] if "mfu_datasheet" in part.index
                   else float("nan"))
            ladder.append(f"`{run}` {ms:.1f} ms" + (f" → {mfu:.1f} %" if np.isfinite(mfu)
                                                    else ""))
        best = ""
        if "mfu_datasheet" in part.index and part.loc["mfu_datasheet"].notna().any():
            top = part.loc["mfu_datasheet"].idxmax()
            roof = (part.loc["mfu_roofline", top] if "mfu_roofline" in part.index
                    else float("nan"))
            note = _roofline_note(rows[where == label], roofs)
            best = (f" Best: `{top}` at **{part.loc['mfu_datasheet', top]:.1f} %** of the "
                    f"datasheet peak (target 40 %, nanoGPT 38 %)"
                    + (f", {roof:.0f} % of the measured bf16 roofline ({note})."
                       if np.isfinite(roof) else ", no measured roofline of this GPU."))
        memory = ""
        if "peak_memory" in part.index and part.loc["peak_memory"].fillna(0).gt(0).any():
            mem = part.loc["peak_memory"].dropna()
            memory = f" Peak memory {mem.min():.2f}–{mem.max():.2f} GB."
        if not best:
            best = " No MFU: no datasheet peak for this device."
        lines.append(f"**{label}** (ms per step → % of the datasheet): "
                     + "; ".join(ladder) + "." + best + memory)
    return "\n\n".join(lines)


@takes_rows
def kernel_caption(rows: pd.DataFrame, roofline: pd.DataFrame | None = None) -> str:
    """Markdown: for the slowest and the fastest run of each place, GPU ms per kernel family
    and the idle time; the matmuls' own TFLOP/s in the fastest run, against the measured bf16
    roofline of ``roofline`` (00's rows, default the ledger's)."""
    table = kernel_values(rows)
    if table.empty:
        return "*No kernel breakdown in these rows (it is measured on a GPU only).*"
    roofs = bf16_rooflines(results.load("roofline") if roofline is None else roofline)
    groups = (table.columns.get_level_values(0).unique()
              if isinstance(table.columns, pd.MultiIndex) else [None])
    lines = []
    for place in groups:
        part = (table[place] if place is not None else table).dropna(axis=1, how="all")
        if "step_time" not in part.index or part.empty:
            continue
        fast, slow = part.loc["step_time"].idxmin(), part.loc["step_time"].idxmax()
        label = place or str(where_of(rows).iloc[0])
        here = rows if place is None else rows[where_of(rows) == place]
        lines.append(f"**{label}** (ms per step): slowest {_describe_run(part, slow)}; "
                     f"fastest {_describe_run(part, fast)}."
                     + _matmul_rate(here, part, fast, roofs))
    return "\n\n".join(lines) or "*No kernel breakdown in these rows.*"


def _matmul_rate(rows: pd.DataFrame, part: pd.DataFrame, run: str, roofs: pd.DataFrame) -> str:
    """' Its matmuls: 6·N·tokens in X ms = Y TFLOP/s, Z % of the measured bf16 roofline (R
    TFLOP/s, which run).' (the roofline of the rows' device in ``roofs``), or ''."""
    if "matmul" not in part.index or not np.isfinite(part.loc["matmul", run]) or not {
            "n_params", "batch_size", "seq_len"} <= set(rows.columns):
        return ""
    shape = rows[["n_params", "batch_size", "seq_len"]].dropna()
    if shape.empty or part.loc["matmul", run] <= 0:
        return ""
    n, batch, seq = (float(v) for v in shape.iloc[0])
    tflops = 6 * n * batch * seq / (part.loc["matmul", run] / 1e3) / 1e12
    device = str(rows["device"].iloc[0]) if "device" in rows else ""
    hit = roofs[roofs["device"] == device]
    roof = (f", {100 * tflops / hit['tflops'].iloc[0]:.0f} % of the measured bf16 roofline "
            f"({_roofline_note(rows, roofs)})" if len(hit) else "")
    return (f" Its matmuls: 6·N·tokens in {part.loc['matmul', run]:.2f} ms = {tflops:,.0f} "
            f"TFLOP/s{roof}.")


def _describe_run(part: pd.DataFrame, run: str) -> str:
    """One run's column of :func:`kernel_table` in words: step time, each family, idle."""
    skip = ("step_time", "kernels total", "GPU idle (step - kernels)")
    families = ", ".join(f"{f} {part.loc[f, run]:.2f}" for f in part.index
                         if f not in skip and np.isfinite(part.loc[f, run])
                         and part.loc[f, run] > 0)
    return (f"`{run}` {part.loc['step_time', run]:.2f} ms: {families}; idle "
            f"{part.loc['GPU idle (step - kernels)', run]:.2f}")


@takes_rows
def loss_kernel_caption(rows: pd.DataFrame) -> str:
    """Markdown: per device, F.cross_entropy's ms against the fastest launch of the kernel,
    the bandwidth it reaches and its share of the datasheet's HBM bandwidth; and, for the L2
    hints and the persistent grid, in how many pairs of otherwise equal launches each was
    faster, with the range of its change."""
    if rows.empty:
        return "*No loss-kernel rows yet.*"
    lines = []
    where = where_of(rows)
    for place in ordered_wheres(rows):
        table = loss_kernel_table(rows[where == place])
        base = table[table["variant"] == "torch_ce"]["ms (measured)"]
        kernel = table[table["variant"] != "torch_ce"]
        if kernel.empty:
            continue
        best = kernel.iloc[0]
        sheet = datasheet(str(rows[where == place]["device"].iloc[0]))
        share = (f" ({100 * best['GB/s'] / sheet.hbm_gb_s:.0f} % of the datasheet's "
                 f"{sheet.hbm_gb_s / 1000:.2f} TB/s)" if sheet else "")
        options = [text for text in (_option_pairs(kernel, "evict", "L2 eviction hints"),
                                     _option_pairs(kernel, "per_sm", "a persistent grid"))
                   if text]
        lines.append(f"**{place}**: `{best['variant']}` fastest launch {best['ms (measured)']:.2f}"
                     f" ms (launches {kernel['ms (measured)'].min():.2f}–"
                     f"{kernel['ms (measured)'].max():.2f} ms) against F.cross_entropy's "
                     f"{_fmt(base.min())} ms; it moves {best['GB moved (predicted)']:.2f} GB at "
                     f"{best['GB/s']:,.0f} GB/s{share}."
                     + (" Launches that differ in one option only (same commit): "
                        + "; ".join(options) + ". Each launch is one median, with no repeat "
                        "of the sweep and so no interval: nothing here tells a change of a few "
                        "per cent from noise." if options else ""))
    return "\n\n".join(lines) or "*No loss-kernel launches in these rows.*"


def _option_pairs(kernel: pd.DataFrame, option: str, name: str) -> str | None:
    """In words: of the launches that differ only in ``option`` (on vs off, same commit and
    other settings), how many were faster with it on, and the range of its change in time."""
    if option not in kernel or kernel[option].isna().all():
        return None
    # evict is True/False, per_sm a count (0 = off); either may come back from a CSV as text
    level = pd.to_numeric(kernel[option].replace({"True": 1, "False": 0, "true": 1,
                                                  "false": 0}), errors="coerce")
    on, off = level > 0, level == 0
    keys = [k for k in ("block", "warps", "per_sm", "evict", "commit")
            if k in kernel and k != option]
    base = kernel[off].set_index(keys)["ms (measured)"]
    base = base[~base.index.duplicated(keep="last")]
    changes = []
    for _, row in kernel[on].iterrows():
        key = tuple(row[k] for k in keys)
        if key in base.index:
            changes.append(row["ms (measured)"] / base.loc[key] - 1)
    if not changes:
        return None
    faster = sum(c < 0 for c in changes)
    return (f"{name} (`{option}`) made {faster} of {len(changes)} launches faster "
            f"(time {100 * min(changes):+.1f} % to {100 * max(changes):+.1f} %)")


@takes_rows
def energy_caption(rows: pd.DataFrame) -> str:
    """Markdown: J/token, W and tokens/s per place, or why there are none (no NVML)."""
    table = energy_table(rows)
    if table.empty:
        return "*No energy rows yet.*"
    lines = []
    for _, row in table.iterrows():
        jpt = row["J/token"]
        if not np.isfinite(jpt):
            lines.append(f"**{row['where']}**, `{row['run']}`: {row['tokens/s']:,.0f} "
                         f"tokens/s; energy not measured ({row['energy from']}).")
            continue
        lines.append(f"**{row['where']}**, `{row['run']}`: **{jpt:.3g} J per token** at "
                     f"{row['average W']:,.0f} W (idle {_fmt(row['idle W'])} W), "
                     f"{row['tokens/s']:,.0f} tokens/s, MFU {_fmt(row['MFU (% datasheet)'])} %"
                     f" (energy from NVML's {row['energy from']}).")
    return "\n\n".join(lines)


def ncu_loss_bytes() -> pd.DataFrame:
    """The DRAM bytes Nsight Compute counted per launch of the loss kernel
    (``data/results/ncu/loss_kernel_dram_bytes_<commit>.txt``, from scripts/gpu_loss_kernel.sh):
    one row per (commit, launch) with GB read, GB written and the logits' GB."""

    lines = []
    for path in sorted((results.results_dir() / "ncu").glob("loss_kernel_dram_bytes_*.txt")):
        commit = path.stem.rsplit("_", 1)[-1]
        launch = None
        for text in path.read_text().splitlines():
            if (head := re.match(r"== (.*) \(logits: (\d+) bytes\)", text)):
                launch = {"commit": commit, "launch": head[1].strip(),
                          "logits GB": int(head[2]) / 1e9}
                lines.append(launch)
            elif launch is not None and (m := re.match(r"\s*dram__bytes_(read|write)\.sum\s+"
                                                        r"Gbyte\s+([\d.]+)", text)):
                launch[f"{m[1]} GB"] = float(m[2])
    return pd.DataFrame(lines)


def _span(values: pd.Series, digits: int = 2) -> str:
    """'1.28–1.46' for a spread, '1.21' where every value reads the same at ``digits``."""
    low, high = f"{values.min():.{digits}f}", f"{values.max():.{digits}f}"
    return low if low == high else f"{low}–{high}"


def _devices_of(commits: list[str]) -> str:
    """Which GPU the ledger records for ``commits`` (the count files name no device): from the
    loss kernel's and the MFU ladder's rows of the same commits."""
    found = []
    for name in ("loss_kernel", "mfu_benchmark"):
        rows = results.load(name)
        if not rows.empty and {"commit", "device"} <= set(rows.columns):
            found += list(rows[rows["commit"].astype(str).isin(commits)]["device"].astype(str))
    devices = list(dict.fromkeys(found))
    return (f"on {', '.join(devices)}" if devices
            else "on a GPU the ledger does not name for these commits")


def ncu_caption() -> str:
    """Markdown: the logits' size against what Nsight Compute saw the kernel read and write,
    and on which GPU (looked up by commit in the ledger)."""
    table = ncu_loss_bytes()
    if table.empty or "read GB" not in table:
        return "*No Nsight Compute counts recorded (scripts/gpu_loss_kernel.sh records them).*"
    logits = table["logits GB"].iloc[0]
    commits = list(table["commit"].unique())
    return (f"Logits {logits:.2f} GB: `F.cross_entropy` must move 3 × that = "
            f"{3 * logits:.2f} GB, the kernel 2 × = {2 * logits:.2f} GB. Nsight Compute counted "
            f"{_span(table['read GB'])} GB read and {_span(table['write GB'])} GB written from "
            f"DRAM per launch ({len(table)} launches, commits {', '.join(commits)}, "
            f"{_devices_of(commits)}).")


@takes_rows
def claims_caption(mfu_rows: pd.DataFrame, energy_rows: pd.DataFrame | None = None) -> str:
    """Markdown above 02's claims table: whose rows the MFU and energy claims judge, this
    machine's where it has run them (they sit behind Run buttons), else which recorded GPUs,
    and what to press to get this machine's own."""
    said, missing = [], []
    for name, rows in (("mfu_benchmark", mfu_rows), ("energy_per_token", energy_rows)):
        rows = pd.DataFrame() if rows is None else rows
        live = rows[rows["source"] == "measured"] if "source" in rows else rows.iloc[0:0]
        if len(live):
            said.append(f"`{name}`: {where_of(live).iloc[0]}, then the recorded GPUs")
        else:
            missing.append(name)
            recorded = ordered_wheres(rows) if len(rows) else []
            said.append(f"`{name}`: no row from this machine yet; "
                        + (f"recorded GPUs only ({'; '.join(recorded)})" if recorded
                           else "no recorded rows either"))
    text = ("The worked examples and the counted FLOPs are computed here. MFU and energy "
            "rows: " + "; ".join(said) + ".")
    if missing:
        text += (f" Press Run above for {' and '.join(f'`{m}`' for m in missing)}, then run "
                 "this cell again: its rows then come first and their verdicts use them.")
    return text
