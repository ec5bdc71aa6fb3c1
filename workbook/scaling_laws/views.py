"""Scaling laws' views: the published laws as a table, the IsoFLOP and frontier figures, the
compute-allocation and over-training explorers, the fit summary and the claims table."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pandas as pd

from workbook.claims import Claim, claims_table
from workbook.config import check_range, takes_rows
from workbook.results import where_label
from workbook.scaling_laws.fits import (
    ExponentFit,
    fit_exponents,
    fit_parametric,
    fit_power_law,
    isoflop_minima,
    ok_points,
)
from workbook.scaling_laws.laws import (
    CHINCHILLA,
    CHINCHILLA_REPLICATION,
    LAWS,
    law_optimal,
    overtraining_costs,
    placement,
    rule_of_thumb_optimal,
)


@takes_rows
def fit_summary(rows: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """The sweep's headline numbers: a and b (bootstrap 10-90 %), and the parametric fit,
    once with total N (Chinchilla's convention) and once with non-embedding N (Kaplan's)."""
    points = ok_points(rows)
    out = []
    for label, col in (("total N", "n_params"), ("non-embedding N", "n_params_non_embedding")):
        fit = fit_exponents(points, n_boot=n_boot, seed=seed, n_column=col,
                            progress=f"bootstrap, {label}")
        law = fit_parametric(points[col], points["n_tokens"], points["loss"])
        out.append({"N counted as": label, **asdict(fit), "alpha": law.alpha, "beta": law.beta,
                    "E": law.E, "A": law.A, "B": law.B, "a from alpha, beta": law.a})
    return pd.DataFrame(out)


@takes_rows
def claims(rows: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """The lecture's scaling claims against a sweep's ``rows`` and their ``fit_summary``:
    the exponent judged by its bootstrap interval, the sweep's time as a budget."""
    nan = float("nan")
    fit = summary.iloc[0] if len(summary) else pd.Series(dtype=float)
    minima = isoflop_minima(ok_points(rows)) if len(rows) else pd.DataFrame()
    ratio = float((minima["d_opt"] / minima["n_opt"]).median()) if len(minima) else nan
    wall = rows.loc[rows["metric"] == "sweep_wall_s", "value"] if len(rows) else []
    where = where_label(rows)
    interval = {"low": fit.get("a_low", nan), "high": fit.get("a_high", nan)}
    gpt3 = placement("20 tokens/param").set_index("model").loc["GPT-3 175B"]
    return claims_table([
        Claim("compute-optimal N grows as C^0.5", "Chinchilla Table 2 (approach 2)", 0.49,
              fit.get("a", nan), where=where, **interval),
        Claim("Kaplan: N grows as C^0.73", "Kaplan et al. 2020", 0.73, fit.get("a", nan),
              where=where, **interval),
        Claim("tokens ≈ 20 × params at the optimum", "lecture", 20.0, ratio, where=where,
              rel_tol=0.5),
        Claim("GPT-3 saw ~1.7 tokens per parameter", "lecture", 1.7,
              float(gpt3["tokens_per_param"]), where="published sizes"),
        Claim("IsoFLOP sweep ≤ 600 s on one H100", "issue target", 600.0,
              float(max(wall)) if len(wall) else nan, "s", where, kind="at_most"),
    ])


def published_laws() -> pd.DataFrame:
    """Chinchilla's parametric fit and its replication, with the exponents they imply."""
    return pd.DataFrame([{"law": law.name, "E": law.E, "A": law.A, "B": law.B,
                          "alpha": law.alpha, "beta": law.beta, "a = β/(α+β)": law.a,
                          "b = α/(α+β)": law.b, "source": law.source}
                         for law in (CHINCHILLA, CHINCHILLA_REPLICATION)])


def _style(source: str) -> dict:
    return {"measured": {"mode": "markers", "marker": {"size": 9}},
            "recorded": {"mode": "markers", "marker": {"size": 9, "symbol": "circle-open",
                                                       "line": {"width": 2}}}}[source]


@takes_rows
def isoflop_figure(rows: pd.DataFrame, n_column: str = "n_params"):
    """Loss against N, one colour per budget; dashed: the parabola fitted in log N."""
    from workbook import plots

    points = ok_points(rows)
    source = "recorded" if (rows.get("source") == "recorded").any() else "measured"
    fig = plots.figure(plots.title_with_source("IsoFLOP profiles: loss vs model size", rows),
                       "parameters N", "held-out loss (nats/token)", log_x=True)
    for i, (budget, group) in enumerate(points.groupby("budget")):
        color = plots.COLORS[i % len(plots.COLORS)]
        group = group.sort_values(n_column)
        fig.add_scatter(x=group[n_column], y=group["loss"], name=f"C={budget:.0e} ({source})",
                        marker_color=color, **_style(source))
        if len(group) >= 3:
            c2, c1, c0 = np.polyfit(np.log(group[n_column]), group["loss"], 2)
            x = np.geomspace(group[n_column].min(), group[n_column].max(), 50)
            fig.add_scatter(x=x, y=c0 + c1 * np.log(x) + c2 * np.log(x) ** 2, mode="lines",
                            line={"dash": "dash", "color": color}, showlegend=False)
    return fig


@takes_rows
def frontier_figure(rows: pd.DataFrame, fit: ExponentFit | None = None):
    """The IsoFLOP minima N_opt(C) with the fitted power law, Chinchilla's and Kaplan's slopes
    drawn through the middle budget, and N at 20 tokens/param."""
    from workbook import plots

    minima = isoflop_minima(ok_points(rows))
    fig = plots.figure(plots.title_with_source("Compute-optimal model size N_opt(C)", rows),
                       "compute C (FLOPs)", "N_opt (parameters)", log_x=True, log_y=True)
    if minima.empty:
        return fig
    fit = fit or fit_exponents(ok_points(rows), n_boot=1000)  # as fit_summary: same numbers
    c = np.geomspace(minima["budget"].min() / 2, minima["budget"].max() * 2, 30)
    mid = minima.iloc[len(minima) // 2]
    fig.add_scatter(x=minima["budget"], y=minima["n_opt"], mode="markers", name="parabola minima",
                    marker={"size": 10, "symbol": "diamond"})
    _, k = fit_power_law(minima["budget"], minima["n_opt"])
    lines = [(f"fit: a = {fit.a:.2f} [{fit.a_low:.2f}, {fit.a_high:.2f}]", k * c**fit.a, "solid"),
             ("Chinchilla slope a = 0.50", mid["n_opt"] * (c / mid["budget"]) ** 0.5, "dash"),
             ("Kaplan slope a = 0.73", mid["n_opt"] * (c / mid["budget"]) ** 0.73, "dot"),
             ("20 tokens/param", rule_of_thumb_optimal(c)[0], "dashdot")]
    for name, y, dash in lines:
        fig.add_scatter(x=c, y=y, mode="lines", name=name, line={"dash": dash})
    return fig


def allocation_explorer(compute: float = 5.76e23):
    """Slider: compute budget -> optimal N and D per law, and where famous models sit."""
    import plotly.graph_objects as go

    check_range("compute", compute, 1e18, 1e27)  # the slider's range

    from workbook import plots, widgets

    fig = plots.figure("Parameters vs training tokens", "parameters N", "training tokens D",
                       log_x=True, log_y=True)
    models = placement("20 tokens/param")
    fig.add_scatter(x=models["n_params"], y=models["n_tokens"], mode="markers+text",
                    text=[f"{m} ({r:.0f} tok/param)" for m, r in
                          zip(models["model"], models["tokens_per_param"], strict=True)],
                    textposition="top center", name="published models", marker={"size": 9})
    for name in ("frontier", "IsoFLOP line (this budget)", "optimum"):
        fig.add_trace(go.Scatter(x=[], y=[], name=name))
    c_range = np.geomspace(1e18, 1e27, 60)

    def draw(fig, compute: float, law: str) -> str:
        n, d = (float(v) for v in law_optimal(law, compute))
        fn, fd = law_optimal(law, c_range)
        fig.data[1].update(x=fn, y=fd, mode="lines", line={"dash": "dash"}, name=f"{law} frontier")
        line_n = np.geomspace(n / 100, n * 100, 40)
        fig.data[2].update(x=line_n, y=compute / (6 * line_n), mode="lines",
                           line={"dash": "dot", "color": "#7f7f7f"})
        fig.data[3].update(x=[n], y=[d], mode="markers", marker={"size": 14, "symbol": "star"})
        loss = float(CHINCHILLA.loss(n, d))
        return (f"C = {compute:.3g} FLOPs → N = {n:.3g}, D = {d:.3g}, D/N = {d / n:.1f}, "
                f"Chinchilla-fit loss {loss:.3f} nats")

    return widgets.Explorer({"compute": widgets.slider("compute (FLOPs)", 1e18, 1e27, 0.1,
                                                       compute, log=True),
                             "law": widgets.dropdown("law", list(LAWS), LAWS[0])}, draw, fig)


def overtraining_explorer(target_loss: float = 2.2, inference_tokens: float = 1e13):
    """Sliders: target loss and lifetime inference tokens -> the cheapest model to own."""
    import plotly.graph_objects as go

    check_range("target_loss", target_loss, 1.9, 3.0)  # the sliders' ranges
    check_range("inference_tokens", inference_tokens, 1e9, 1e15)

    from workbook import plots, widgets

    fig = plots.figure("Same loss, different sizes: training + inference FLOPs",
                       "parameters N", "FLOPs", log_x=True, log_y=True)
    for name, dash in (("training 6·N·D", "dash"), ("inference 2·N per token", "dot"),
                       ("total", "solid"), ("cheapest to own", None), ("compute-optimal", None)):
        fig.add_trace(go.Scatter(x=[], y=[], name=name,
                                 mode="lines" if dash else "markers",
                                 line={"dash": dash} if dash else None,
                                 marker={"size": 13, "symbol": "star"} if not dash else None))

    def draw(fig, target_loss: float, inference_tokens: float) -> str:
        costs = overtraining_costs(target_loss, inference_tokens)
        best = costs.loc[costs["total_flops"].idxmin()]
        train_best = costs.loc[costs["train_flops"].idxmin()]
        for i, col in enumerate(("train_flops", "inference_flops", "total_flops")):
            fig.data[i].update(x=costs["n_params"], y=costs[col])
        fig.data[3].update(x=[best["n_params"]], y=[best["total_flops"]])
        fig.data[4].update(x=[train_best["n_params"]], y=[train_best["train_flops"]])
        return (f"cheapest to own: N = {best['n_params']:.3g} trained on "
                f"{best['tokens_per_param']:.0f} tokens/param; compute-optimal: "
                f"N = {train_best['n_params']:.3g} at {train_best['tokens_per_param']:.0f} "
                "tokens/param (Epoch-replication law)")

    return widgets.Explorer({
        "target_loss": widgets.slider("target loss (nats)", 1.9, 3.0, 0.01, target_loss),
        "inference_tokens": widgets.slider("tokens served", 1e9, 1e15, 0.1, inference_tokens,
                                           log=True)}, draw, fig)
