"""Scaling laws' explorers: sliders over the published laws (no training), the compute-optimal
allocation of a budget and the cheapest model to own once inference is counted."""

from __future__ import annotations

import numpy as np

from workbook.claims import fixed
from workbook.config import check_range
from workbook.scaling_laws.laws import (
    CHINCHILLA_REPLICATION,
    LAWS,
    law_optimal,
    overtraining_costs,
    placement,
)


def allocation_explorer(compute: float = 5.76e23):
    """Slider: compute budget -> optimal N and D per law, and where famous models sit."""
    import plotly.graph_objects as go

    check_range("compute", compute, 1e18, 1e27)  # the slider's range

    from workbook import plots, widgets

    fig = plots.figure("Parameters vs training tokens", "parameters N", "training tokens D",
                       log_x=True, log_y=True)
    models = placement("20 tokens/param")
    # the name over its tokens per parameter, each label where it covers no other (a 10 px
    # font; the axis' top is about twice the top point)
    text = [f"{m}<br>{r:.{1 if r < 10 else 0}f} tok/param" for m, r in
            zip(models["model"], models["tokens_per_param"], strict=True)]
    where = plots.text_positions(models["n_params"], models["n_tokens"], text, char_px=5.5,
                                 line_px=13, y_top=2 * models["n_tokens"].max())
    fig.add_scatter(x=models["n_params"], y=models["n_tokens"], mode="markers+text", text=text,
                    textposition=where, textfont={"size": 10}, name="published models",
                    marker={"size": 9})
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
        loss = float(CHINCHILLA_REPLICATION.loss(n, d))  # one judge for every law's choice
        return (f"C = {fixed(compute)} FLOPs → N = {fixed(n)}, D = {fixed(d)}, "
                f"D/N = {d / n:.1f}; loss by the Epoch replication {loss:.3f} nats/token")

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
