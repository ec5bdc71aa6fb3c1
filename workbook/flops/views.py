"""What notebook 02 shows: formula vs counted, the recorded tables, the calculator, claims.
plotly and ipywidgets are imported inside the view functions (a GPU machine may have neither).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from workbook import registry, results
from workbook.claims import Claim, claims_table
from workbook.config import WorkbookError, check_range, takes_rows
from workbook.flops.experiments import MFU_PRESETS
from workbook.flops.formulas import (
    flops_per_token,
    gpu_peak_tflops,
    lecture_examples,
    step_flops,
    training_dtype,
    training_time,
)
from workbook.flops.runs import RUN_ORDER, RunSpec, run_labels
from workbook.flops.step import count_step_flops, kernel_times, make_train_step
from workbook.hardware import datasheet
from workbook.model import ModelConfig
from workbook.results import where_label

__all__ = ["formula_vs_counted", "recorded_or_note", "mfu_table", "kernel_table",
           "sweep_figure", "calculator", "claims", "loss_kernel_table", "top_kernels"]


def formula_vs_counted(cfg: ModelConfig, batch_size: int, seed: int = 0) -> pd.DataFrame:
    """One training step of ``cfg`` (eager, this machine): formula next to FlopCounterMode."""
    check_range("batch_size", batch_size, 1, 1024)
    check_range("seed", seed, 0, 2**31 - 1)
    counted = count_step_flops(cfg, batch_size, seed)
    tokens = batch_size * cfg.seq_len
    per_token = flops_per_token(cfg)
    rows = [("matmuls (6·N per token)", per_token["dense"] * tokens, counted["matmul"]),
            ("attention (12·L·T·d per token)", per_token["attention"] * tokens,
             counted["attention"]),
            ("total", step_flops(cfg, batch_size), counted["total"])]
    frame = pd.DataFrame(rows, columns=["part", "predicted FLOPs", "counted FLOPs"])
    frame["counted / predicted"] = frame["counted FLOPs"] / frame["predicted FLOPs"]
    return frame


def recorded_or_note(name: str) -> pd.DataFrame:
    """The ledger's rows of ``name``, printing where they come from (or that there are none)."""
    registry.get(name)  # an unknown name: one line listing the experiments
    rows = results.load(name)
    if rows.empty:
        print(f"{name}: no recorded rows yet; run `python -m workbook run {name} --preset full "
              "--record` on a GPU.")
    else:
        label = results.provenance_label(rows[rows["source"] == "recorded"])
        print(f"{name}: {len(rows)} rows, {label}")
    return rows


@takes_rows
def mfu_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Eager vs compiled side by side: step time, TFLOP/s, MFU vs datasheet and roofline."""
    if rows.empty:
        return pd.DataFrame()
    keep = ["step_time", "tokens_per_s", "achieved_tflops", "mfu_datasheet", "mfu_roofline",
            "peak_memory"]
    ok = rows[rows["metric"].isin(keep) & (rows["status"] == "ok")]
    ok = ok.assign(run=run_labels(ok))
    table = ok.pivot_table(index="metric", columns="run", values="value", aggfunc="last")
    order = [r for r in RUN_ORDER if r in table.columns]
    table = table[order + [c for c in table.columns if c not in order]]
    return table.reindex([k for k in keep if k in table.index]).round(2)


@takes_rows
def kernel_table(rows: pd.DataFrame) -> pd.DataFrame:
    """GPU ms per step by kernel family (rows), per run (columns), with the step time."""
    if rows.empty or not rows["metric"].astype(str).str.startswith("kernel_ms_").any():
        return pd.DataFrame()
    ok = rows[(rows["status"] == "ok") & (rows["metric"].astype(str).str.startswith("kernel_ms_")
                                          | (rows["metric"] == "step_time"))]
    ok = ok.assign(run=run_labels(ok),
                   part=ok["metric"].astype(str).str.replace("kernel_ms_", "", regex=False))
    table = ok.pivot_table(index="part", columns="run", values="value", aggfunc="last")
    table = table[[r for r in RUN_ORDER if r in table.columns]]
    kernels = table.drop(index="step_time", errors="ignore")
    table.loc["kernels total"] = kernels.sum()
    if "step_time" in table.index:
        table.loc["GPU idle (step - kernels)"] = table.loc["step_time"] - table.loc["kernels total"]
    return table.round(2)


@takes_rows
def sweep_figure(rows: pd.DataFrame):
    """Achieved TFLOP/s vs model size, with the datasheet and measured-roofline peaks."""
    from workbook import plots

    ok = rows[rows["status"] == "ok"] if not rows.empty else rows
    achieved = ok[ok["metric"] == "achieved_tflops"].assign(what="achieved")
    peaks = ok[ok["metric"].isin(["peak_datasheet", "peak_roofline"])]
    peaks = peaks.assign(what=peaks["metric"].str.replace("peak_", "peak: "))
    both = pd.concat([achieved, peaks], ignore_index=True)
    return plots.compare(both, x="n_params", group="what", log_x=True,
                         title="Training-step FLOP/s grows with model size (eager, bf16)",
                         x_title="matmul parameters N", y_title="TFLOP/s")


def calculator():
    """The training-time calculator: parameters, tokens, GPU, count, utilisation -> time."""
    from workbook import plots, widgets

    gpus = ["A100", "H100", "H200", "L4", "T4"]
    controls = {
        "n_params": widgets.slider("parameters", 1e8, 2e12, 0.01, 175e9, log=True),
        "n_tokens": widgets.slider("tokens", 1e9, 1e14, 0.01, 300e9, log=True),
        "gpu": widgets.dropdown("GPU", gpus, "A100"),
        "n_gpus": widgets.slider("GPUs", 1, 1e5, 0.01, 10_000, log=True),
        "utilization": widgets.slider("MFU", 0.05, 1.0, 0.01, 0.5),
    }
    fig = plots.figure("Training time vs utilisation (6·N·D / (peak × GPUs × MFU))",
                       "model FLOPs utilisation (MFU)", "days", log_y=True)
    fig.add_scatter(name="this run", mode="lines")
    fig.add_scatter(name="chosen MFU", mode="markers", marker={"size": 12})

    def draw(fig, n_params, n_tokens, gpu, n_gpus, utilization) -> str:
        n_gpus = int(round(n_gpus))
        grid = np.linspace(0.05, 1.0, 96)
        dtype = training_dtype(gpu)
        days = [training_time(n_params, n_tokens, gpu=gpu, n_gpus=n_gpus,
                              utilization=float(u), dtype=dtype)["days"] for u in grid]
        t = training_time(n_params, n_tokens, gpu=gpu, n_gpus=n_gpus, utilization=utilization,
                          dtype=dtype)
        fig.data[0].x, fig.data[0].y = grid, days
        fig.data[1].x, fig.data[1].y = [utilization], [t["days"]]
        return (f"C = 6·N·D = {t['flops']:.3g} FLOPs on {n_gpus:,} × {gpu} "
                f"({gpu_peak_tflops(gpu, dtype):g} TFLOP/s {dtype} dense) at {utilization:.0%} "
                f"MFU: "
                f"{t['seconds']:,.0f} s = {t['hours']:,.1f} h = {t['days']:,.2f} days, "
                f"{t['gpu_hours']:,.0f} GPU-hours")

    return widgets.Explorer(controls, draw, fig)


@takes_rows
def claims(mfu_rows: pd.DataFrame, counted: pd.DataFrame) -> pd.DataFrame:
    """The lecture's and the issue's claims, checked against this notebook's numbers; every
    verdict computed by :func:`workbook.claims.verdict`."""
    ex = lecture_examples().set_index("run")
    gpt3, llama = ex.loc["GPT-3 175B"], ex.loc["Llama 3 405B"]
    h100 = datasheet("H100").tflops
    total = counted.set_index("part").loc["total", "counted / predicted"]
    out = [
        Claim("GPT-3: 6·N·D ≈ 3.15e23 FLOPs", "lecture", 3.15e23, float(gpt3["flops"]), "FLOPs",
              "6·N·D with N, D as published", rel_tol=0.02),
        Claim("GPT-3 on 10,000 A100 at 50 % ≈ 2.3 days (no restarts, no communication)",
              "lecture", 2.3, float(gpt3["days"]), "days", "training_time()", rel_tol=0.05),
        Claim("Llama 3 405B: 6·N·D ≈ 3.6e25 FLOPs", "lecture", 3.6e25, float(llama["flops"]),
              "FLOPs", "6·N·D with N, D as published", rel_tol=0.05),
        # The lecture's 1,979 is the 2:4-sparse figure; the datasheet's dense peak is half.
        Claim("H100 BF16 = 1,979 TFLOP/s (dense)", "lecture", 1979.0, float(h100["bf16"]),
              "TFLOP/s", "NVIDIA datasheet, dense", rel_tol=0.05),
        Claim("6·N·D (+ attention) is the FLOPs of a step (counted / predicted)",
              "Kaplan 2020, PaLM", 1.0, float(total), "×", "FlopCounterMode, this machine",
              rel_tol=0.05),
    ]
    table = mfu_table(mfu_rows)
    compiled = [c for c in table.columns if not str(c).startswith("eager")]
    mfu_c = float("nan")
    if compiled and "eager:sdpa" in table.columns and "mfu_datasheet" in table.index:
        mfu = table.loc["mfu_datasheet"]
        mfu_c = float(mfu[compiled].max())
    where = where_label(mfu_rows)
    out.append(Claim("MFU ≥ 40 % of the bf16 dense peak at nanoGPT's shape (compiled)",
                     "issue (nanoGPT: 38 %)", 40.0, mfu_c, "%", where, kind="at_least"))
    return claims_table(out)


@takes_rows
def loss_kernel_table(rows: pd.DataFrame, top: int | None = None) -> pd.DataFrame:
    """One row per launch of the recorded loss_kernel sweep (the latest measurement of each):
    ms, the bytes it must move, and the bandwidth that implies, with the commit that measured
    it (the kernel changed between commits). The baselines (F.cross_entropy, the PyTorch twin)
    first, then the kernel's launches, fastest first; ``top``: only that many launches."""
    if rows.empty:
        return rows
    keys = [k for k in ("variant", "block", "warps", "per_sm", "evict", "commit") if k in rows]
    ok = rows[rows["status"] == "ok"]
    table = ok.pivot_table(index=keys, columns="metric", values="value", aggfunc="last",
                           dropna=False).dropna(how="all").reset_index()
    table["GB moved (predicted)"] = table["bytes_moved"] / 1e9
    table = table.rename(columns={"ms": "ms (measured)", "achieved_gbps": "GB/s"})
    cols = keys + ["ms (measured)", "GB moved (predicted)", "GB/s"]
    table = table[cols].sort_values("ms (measured)", ignore_index=True).round(3)
    kernel = table["variant"] == "triton_ce"
    launches = table[kernel] if top is None else table[kernel].head(top)
    return pd.concat([table[~kernel], launches], ignore_index=True)



def top_kernels(run: str = "compiled:causal", cfg: ModelConfig | None = None,
                batch_size: int | None = None, n: int = 20, seed: int = 0) -> pd.DataFrame:
    """The ``n`` longest CUDA kernels of one training step for ``run`` (see :func:`parse_run`),
    at the full MFU preset's shape unless ``cfg``/``batch_size`` are given. GPU only."""
    if not torch.cuda.is_available():
        raise WorkbookError("top_kernels profiles CUDA kernels and needs a GPU")
    preset = MFU_PRESETS["full"]
    step, _ = make_train_step(cfg or preset.model(), batch_size or preset.batch_size,
                              RunSpec.parse(run), seed, torch.device("cuda"))
    for _ in range(3):
        step()   # compile and warm up
    return kernel_times(step).head(n)
