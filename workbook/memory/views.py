"""The memory notebook's views: the formula explorer, measured-vs-formula tables and
figures, the largest-fit summary and the closing claims table."""

from __future__ import annotations

from typing import Any

import pandas as pd

from workbook.claims import Claim, claims_table
from workbook.config import takes_rows
from workbook.memory.formulas import (
    GB,
    MODEL_SHAPES,
    PRECISIONS,
    activation_bytes,
    bytes_per_param,
    formula_fit,
    gpt_params,
    lecture_175b,
    scenario,
)
from workbook.results import where_label


def memory_explorer() -> Any:
    """The formula at any scale: stacked GB per component against one GPU's memory."""
    from workbook import plots, widgets

    fig = plots.figure("Training memory (formula)", "component", "GB")
    fig.add_bar(x=[], y=[], name="needed", marker_color=plots.COLORS[0])
    fig.add_bar(x=[], y=[], name="one GPU", marker_color=plots.COLORS[1])

    def draw(fig: Any, model: str, precision: str, seq_len: int, batch: int,
             checkpointing: bool, gpu_gb: int) -> str:
        table = scenario(model, precision, seq_len, batch, checkpointing)
        total = table["GB"].sum()
        fig.data[0].x, fig.data[0].y = list(table["component"]) + ["total"], list(
            table["GB"]) + [total]
        fig.data[1].x, fig.data[1].y = ["total"], [gpu_gb]
        psi = table["n_params"].iloc[0]
        return (f"{model}: Ψ = {psi / 1e9:.2f}B, {total:,.0f} GB to train "
                f"({precision}, batch {batch} × {seq_len}, checkpointing {checkpointing}) = "
                f"{total / gpu_gb:.1f}× one {gpu_gb} GB GPU")

    return widgets.Explorer({
        "model": widgets.dropdown("model", list(MODEL_SHAPES), "GPT-3 (175B)"),
        "precision": widgets.dropdown("precision", list(PRECISIONS), "fp32"),
        "seq_len": widgets.slider("seq_len", 128, 32768, 128, 2048),
        "batch": widgets.slider("batch", 1, 64, 1, 1),
        "checkpointing": widgets.dropdown("checkpointing", [False, True], False),
        "gpu_gb": widgets.slider("GPU GB", 16, 192, 8, 80),
    }, draw, fig)


@takes_rows
def breakdown_table(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per component: formula beside each measurement method, in MB."""
    ok = rows[rows["status"] == "ok"]
    table = ok.pivot_table(index=["seq_len", "checkpointing", "component"],
                           columns="method", values="value", aggfunc="mean") / 1e6
    return table.round(2).reset_index()


@takes_rows
def plot_breakdown(rows: pd.DataFrame, seq_len: int, title: str = "") -> Any:
    """Grouped bars per component: formula vs each measurement method, ckpt off and on."""
    from workbook import plots

    ok = rows[(rows["status"] == "ok") & (rows["seq_len"] == seq_len)]
    fig = plots.figure(plots.title_with_source(title or f"Memory by component, seq_len "
                                               f"{seq_len}", ok), "component", "MB")
    for i, ((ckpt, method), part) in enumerate(ok.groupby(["checkpointing", "method"])):
        fig.add_bar(x=part["component"], y=part["value"] / 1e6,
                    name=f"{method}{' (ckpt)' if ckpt in (True, 'True') else ''}",
                    marker_color=plots.COLORS[i % len(plots.COLORS)])
    fig.update_layout(barmode="group")
    return fig


@takes_rows
def fit_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Largest fitting n_layer measured beside the formula's, per checkpointing setting."""
    if rows.empty:
        return pd.DataFrame()
    out = []
    for (device, ckpt), part in rows.groupby(["device", "checkpointing"]):
        r = part.iloc[0]
        fits = part[part["status"] == "ok"]
        best = fits.loc[fits["n_layer"].idxmax()] if len(fits) else None
        out.append({
            "device": device, "checkpointing": ckpt, "d_model": r["d_model"],
            "batch x seq": f"{r['batch']} x {r['seq_len']}",
            "largest n_layer measured": int(r["largest_fitting_layers"]),
            "params (B)": best["n_params"] / 1e9 if best is not None else float("nan"),
            "peak (GB)": best["value"] / 1e9 if best is not None else float("nan"),
            "largest n_layer by formula": formula_fit(
                int(r["d_model"]), 32, 50304, int(r["seq_len"]), int(r["batch"]),
                str(r["precision"]), ckpt in (True, "True"), float(r["gpu_bytes"])),
        })
    return pd.DataFrame(out)


@takes_rows
def claims(rows: pd.DataFrame) -> pd.DataFrame:
    """The lecture's memory claims: predicted, measured here (or recorded), verdict."""
    lect = lecture_175b().set_index("component")["GB"]
    need = float(lect.iloc[:4].sum())
    out = [Claim("175B needs ~3 TB to train (≈ 38 H100s of 80 GB)", "lecture, sec. 3.2",
                 3000.0, need, "GB", "formula only (no 175B run)", rel_tol=0.1)]
    ok = rows[(rows["status"] == "ok")] if len(rows) else rows
    where = where_label(ok)
    if len(ok):
        t = ok[ok["method"] == "tensors"]
        opt = t[t["component"] == "optimizer"]["value"].mean()
        par = t[t["component"] == "params"]["value"].mean()
        out.append(Claim("Adam's states take twice the parameters' memory",
                         "lecture, sec. 3.1 (1,400 GB vs 700 GB)", 2.0, float(opt / par), "×",
                         where))
        saved = ok[(ok["method"] == "saved") & (ok["component"] == "activations")]
        seq = saved["seq_len"].max()
        on = saved[(saved["seq_len"] == seq) & (saved["checkpointing"].astype(str) == "True")]
        off = saved[(saved["seq_len"] == seq) & (saved["checkpointing"].astype(str) == "False")]
        pred = ok[(ok["method"] == "formula") & (ok["component"] == "activations")
                  & (ok["seq_len"] == seq)]
        if len(on) and len(off):
            r_meas = off["value"].mean() / on["value"].mean()
            p_off = pred[pred["checkpointing"].astype(str) == "False"]["value"].mean()
            p_on = pred[pred["checkpointing"].astype(str) == "True"]["value"].mean()
            out.append(Claim(f"recomputation (checkpointing) saves activation memory "
                             f"(× less at seq_len {seq})", "lecture (recomputation)",
                             float(p_off / p_on), float(r_meas), "×", where))
    return claims_table(out)


@takes_rows
def plot_fit(rows: pd.DataFrame) -> Any:
    """The largest-fit search: each probe's peak (oom probes at the GPU's size, marked x),
    the formula's curve and the GPU's memory."""
    from workbook import plots

    fig = plots.figure(plots.title_with_source("Peak memory of two training steps vs depth",
                                               rows), "n_layer", "GB")
    if rows.empty:
        return fig
    if "device" in rows:  # one device's search per figure
        rows = rows[rows["device"] == rows["device"].iloc[0]]
    r = rows.iloc[0]
    gpu = float(r["gpu_bytes"]) / GB
    ok, oom = rows[rows["status"] == "ok"], rows[rows["status"] == "oom"]
    fig.add_scatter(x=ok["n_layer"], y=ok["value"] / GB, mode="markers", name="fits (peak)",
                    marker={"size": 9, "color": plots.COLORS[0]})
    fig.add_scatter(x=oom["n_layer"], y=[gpu] * len(oom), mode="markers", name="oom",
                    marker={"symbol": "x", "size": 11, "color": plots.COLORS[1]})
    n = list(range(1, int(rows["n_layer"].max()) + 1))
    e = 4 if r["precision"] == "fp32" else 2
    ckpt = r["checkpointing"] in (True, "True")
    need = [(sum(bytes_per_param(str(r["precision"])).values())
             * gpt_params(k, int(r["d_model"]), 50304, int(r["seq_len"]))
             + activation_bytes(k, int(r["d_model"]), 32, int(r["seq_len"]), int(r["batch"]),
                                act_bytes=e, checkpointing=ckpt, attention_matrix=False,
                                vocab=50304)["total"]) / GB for k in n]
    fig.add_scatter(x=n, y=need, mode="lines", name="formula: states + activations",
                    line={"dash": "dash", "color": plots.COLORS[2]})
    fig.add_hline(y=gpu, line={"dash": "dot", "color": "#555"},
                  annotation_text=f"{r['device']}: {gpu:.0f} GB")
    return fig
