"""What notebook 08 shows: the format explorer, histograms, the loss-scale explorer, the
GradScaler trace, the four-way training table and the lecture's claims. plotly and ipywidgets
are imported inside the view functions (a GPU machine may have neither)."""

from __future__ import annotations

import math

import pandas as pd
import torch

from workbook import registry
from workbook.claims import Claim, claims_table
from workbook.config import WorkbookError, check_range, check_rows, takes_rows
from workbook.hardware import roofline_peaks
from workbook.precision.experiments import MODE_DTYPE, TRAIN_MODES
from workbook.precision.formats import FORMATS, explore, format_table, parse_value
from workbook.precision.underflow import UNDERFLOW_FORMATS, share_rows
from workbook.results import dashed, where_label

__all__ = ["format_explorer", "histogram_figure", "loss_scale_explorer", "scaler_figure",
           "training_summary", "stagnation_summary", "matmul_figure", "settled_caption",
           "claims",
           "predicted_step_times", "speedup_caption"]


def format_explorer(value: str = "0.1"):
    """Type a value: its bits, stored value and relative error in every format."""
    import ipywidgets as w

    from workbook import plots, widgets

    if not isinstance(value, str):
        raise WorkbookError(f"value={value!r} is not allowed; allowed: text such as '0.1'")
    parse_value(value)  # a bad first value: one line now, not a message under an empty figure
    fig = plots.figure("relative error of the stored value", "format", "|stored - x| / |x|",
                       log_y=True)
    fig.add_bar(x=list(FORMATS), y=[None] * len(FORMATS), name="relative error",
                marker_color=plots.color_for("relative error"))
    box = w.Text(value=value, description="value x", continuous_update=False)

    def draw(fig, value: str) -> str:
        rows = explore(parse_value(value))
        # A relative error of exactly 0 cannot sit on a log axis: show it at 1e-17. No bar
        # (None, not NaN, which the widget cannot send) where the error is undefined (inf).
        fig.data[0].y = [max(e, 1e-17) if math.isfinite(e) else None
                         for e in rows["rel_error"]]
        fig.data[0].hovertext = rows["status"].tolist()
        shown = rows[["format", "stored", "bits", "rel_error", "spacing", "status"]]
        return shown.to_html(index=False, float_format=lambda v: f"{v:.6g}")

    return widgets.Explorer({"value": box}, draw, fig)


@takes_rows
def histogram_figure(hist: pd.DataFrame, lines: pd.DataFrame):
    """Share of gradients per power of two (bin k: 2^k <= |g| < 2^(k+1), drawn from k to k+1),
    with where each format starts to flush to 0 (dotted: half its smallest subnormal) and where
    its subnormals begin (dashed: its smallest normal). Formats whose lines fall at the same
    power share one label; lines far outside the gradients (BF16's) are named in a note at the
    left edge instead of stretching the axis."""
    from workbook import plots

    check_rows("lines", lines, ("format", "log2_flush_below", "log2_smallest_normal"))
    fig = plots.figure("log2 |gradient| of one training step (FP32)",
                       "log2 |g| (bin k: 2^k <= |g| < 2^(k+1))", "share of nonzero gradients")
    seen = hist[hist["count"] > 0] if "count" in hist.columns else hist
    lo = int(seen["log2_abs"].min()) if len(seen) else -40
    hi = int(seen["log2_abs"].max()) + 1 if len(seen) else 10
    for kind, part in hist.groupby("kind", sort=False):
        part = part.sort_values("log2_abs")  # one more point: the last bin ends at k + 1
        x = [*part["log2_abs"], int(part["log2_abs"].max()) + 1]
        fig.add_scatter(x=x, y=[*part["share"], part["share"].iloc[-1]], name=kind,
                        mode="lines", line={"color": plots.color_for(kind), "shape": "hv"})
    marks: dict[tuple[float, str], list[str]] = {}
    for row in lines.itertuples():
        marks.setdefault((float(row.log2_flush_below), "dot"), []).append(row.format)
        marks.setdefault((float(row.log2_smallest_normal), "dash"), []).append(row.format)
    off = []
    for (x, dash), formats in sorted(marks.items()):
        what = "0 below" if dash == "dot" else "subnormal below"
        if not lo - 2 <= x <= hi + 2:
            off.append(f"{', '.join(formats)}: {what} 2^{x:g}")
            continue
        fig.add_vline(x=x, line={"dash": dash, "color": plots.color_for(formats[0])},
                      annotation_text=f"{', '.join(formats)}: {what}", annotation_textangle=-90,
                      # on a white box: the label crosses the histograms' lines
                      annotation_bgcolor="rgba(255,255,255,0.85)", annotation_font_size=11)
    fig.update_xaxes(range=[lo - 2, hi + 2])
    if off:
        fig.add_annotation(text="off the chart: " + "; ".join(off), showarrow=False, x=0,
                           y=1, xref="paper", yref="paper", xanchor="left", yanchor="top",
                           font={"size": 11})
    return fig


def loss_scale_explorer(grads: dict[str, torch.Tensor], log2_scale: int = 0):
    """Slide the loss scale: the share of each gradient kind lost to 0 or to inf."""
    from workbook import plots, widgets

    check_range("log2_scale", log2_scale, 0, 40)  # the slider's range

    fig = plots.figure("gradients lost when stored, after the loss scale set below",
                       "gradient kind", "share of nonzero gradients")
    fig.update_layout(barmode="group")
    traces = [(f, m) for f in UNDERFLOW_FORMATS for m in ("share_zero", "share_overflow")]
    for fmt, metric in traces:  # colour: the format; hatched: overflow
        fig.add_bar(x=list(grads), y=[0.0] * len(grads), name=f"{fmt} {metric[6:]}",
                    marker_color=plots.color_for(fmt),
                    marker_pattern_shape="" if metric == "share_zero" else "/")

    def draw(fig, log2_scale: int) -> str:
        rows = share_rows(grads, (log2_scale,)).set_index(["kind", "format", "metric"])
        for trace, (fmt, metric) in zip(fig.data, traces, strict=True):
            lost = [rows.loc[(k, fmt, metric), "value"] for k in grads]
            # from `lost`: inside the explorer's batch_update, trace.y still reads the old values
            trace.update(y=lost, text=plots.zero_labels(lost), textposition="outside")
        z = rows.loc[("logit_grad", "fp16", "share_zero"), "value"]
        o = rows.loc[("weight_grad", "fp16", "share_overflow"), "value"]
        return (f"scale 2^{log2_scale}: FP16 flushes {z:.1%} of the logit gradients to 0 "
                f"and turns {o:.2%} of the weight gradients into inf.")

    slider = widgets.slider("log2 loss scale", 0, 40, 1, log2_scale)
    return widgets.Explorer({"log2_scale": slider}, draw, fig)


@takes_rows
def scaler_figure(rows: pd.DataFrame, title: str = "GradScaler: loss scale per step"):
    """The dynamic loss scale (log axis) with skipped steps marked."""
    from workbook import plots

    part = rows[rows["metric"].isin(["loss_scale", "skipped"])]
    fig = plots.figure(plots.title_with_source(title, part), "step", "loss scale", log_y=True)
    if part.empty:
        fig.add_annotation(text="no recorded loss-scale rows yet", showarrow=False, x=0.5,
                           y=0.5, xref="paper", yref="paper")
        return fig
    wide = part.pivot_table(index="step", columns="metric", values="value").reset_index()
    fig.add_scatter(x=wide["step"], y=wide["loss_scale"], name="scale", mode="lines+markers",
                    line={"shape": "hv", "color": plots.color_for("scale")})
    if "skipped" in wide:
        hit = wide[wide["skipped"] > 0]
        fig.add_scatter(x=hit["step"], y=hit["loss_scale"], name="skipped (inf/NaN found)",
                        mode="markers", marker={"symbol": "x", "size": 12,
                                                "color": plots.color_for("skipped")})
    return fig


def _summary_numbers(rows: pd.DataFrame, roofline: pd.DataFrame | None = None) -> pd.DataFrame:
    """One machine's rows: per mode (the index) its step time, peak memory, model TFLOP/s,
    skipped steps, final loss, the ratios to ``fp32`` and (from predicted rows, or from
    ``roofline`` of the same device) the roofline bound on the step time."""
    ok = rows[rows["status"] == "ok"] if "status" in rows.columns else rows
    measured = ok[ok["source"].isin(["measured", "recorded"])]
    scalar = measured[measured["metric"].isin(["step_time", "peak_memory", "model_tflops",
                                               "skipped_steps"])]
    table = scalar.pivot_table(index="mode", columns="metric", values="value")
    losses = measured[measured["metric"] == "loss"].sort_values("step")
    table["final_loss"] = losses.groupby("mode")["value"].apply(lambda v: v.tail(5).mean())
    table = table.reindex([m for m in TRAIN_MODES if m in table.index])
    if "fp32" in table.index and "step_time" in table:
        table["speedup_vs_fp32"] = table.loc["fp32", "step_time"] / table["step_time"]
        if "peak_memory" in table:
            table["memory_vs_fp32"] = table["peak_memory"] / table.loc["fp32", "peak_memory"]
    predicted = ok[(ok["source"] == "predicted") & (ok["metric"] == "step_time")]
    if predicted.empty and roofline is not None and not roofline.empty:
        predicted = predicted_step_times(measured, roofline)
    if not predicted.empty:
        table["step_time_roofline_bound"] = predicted.set_index("mode")["value"]
    return table


# the readable table's columns: (number column, header, format)
_SUMMARY_COLUMNS = (
    ("step_time", "step time (ms)", "{:.1f}"),
    ("step_time_roofline_bound", "roofline bound (ms)", "{:.1f}"),
    ("speedup_vs_fp32", "speed-up vs fp32 (×)", "{:.2f}"),
    ("model_tflops", "model TFLOP/s", "{:.1f}"),
    ("peak_memory", "peak memory (GiB)", "{:.2f}"),
    ("memory_vs_fp32", "memory vs fp32 (×)", "{:.2f}"),
    ("skipped_steps", "skipped steps", "{:.0f}"),
    ("final_loss", "final loss (nats, mean of last 5 steps)", "{:.3f}"),
)
_SUMMARY_GAPS = {
    "roofline bound (ms)": "– (no roofline of this device)",
    "peak memory (GiB)": "– (no CUDA allocator statistics here)",
    "memory vs fp32 (×)": "– (no peak memory here)",
    "speed-up vs fp32 (×)": "– (no fp32 run)",
}


@takes_rows
def training_summary(rows: pd.DataFrame, roofline: pd.DataFrame | None = None
                     ) -> pd.DataFrame:
    """One row per machine and mode (this machine's first, then each recording, labelled with
    device and date): step time and its roofline bound (the fp32 step divided by how much
    faster the mode's matmuls are in ``roofline`` of that device), speed-up and peak memory
    against fp32, model TFLOP/s, GradScaler's skipped steps and the final loss. Units in the
    headers; a mode that could not run reads '– (…)' with the reason."""
    from workbook.claims import ClaimsTable

    out = []
    for label, part in registry.machine_blocks(rows):
        numbers = _summary_numbers(part, roofline)
        for mode, row in numbers.iterrows():
            cells = {"measured on": label, "mode": mode}
            for column, header, fmt in _SUMMARY_COLUMNS:
                value = row.get(column, math.nan)
                cells[header] = fmt.format(value) if value == value else math.nan
            out.append(cells)
        if "status" in part.columns:  # e.g. tf32 on a CPU: a row saying why, not a gap
            for _, bad in part[part["status"] != "ok"].drop_duplicates("mode").iterrows():
                if bad["mode"] not in numbers.index:
                    error = bad.get("error", "")
                    why = f": {error}" if isinstance(error, str) and error else ""
                    reason = f"– ({bad['status']}{why})"
                    out.append({"measured on": label, "mode": bad["mode"],
                                **{h: reason if i == 0 else "–"
                                   for i, (_, h, _) in enumerate(_SUMMARY_COLUMNS)}})
    headers = ["measured on", "mode", *(h for _, h, _ in _SUMMARY_COLUMNS)]
    return ClaimsTable(dashed(pd.DataFrame(out, columns=headers), _SUMMARY_GAPS))


@takes_rows
def stagnation_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """The master-weight training runs (``part == 'training'``), one row per machine and mode:
    the share of weights whose update was lost to rounding, the mean over the steps, in %
    (fixed notation), and the final loss."""
    from workbook.claims import ClaimsTable

    out = []
    train = rows[rows["part"] == "training"] if "part" in rows.columns else rows.iloc[0:0]
    for label, part in registry.machine_blocks(train):
        lost = part[part["metric"] == "updates_lost"].groupby("mode", sort=False)["value"].mean()
        loss = part[part["metric"] == "loss"].sort_values("step").groupby("mode")["value"]
        # a small-preset run trains another, smaller model: its loss is not the full one's
        col = next((c for c in ("model_preset", "preset") if c in part.columns), None)
        model = ", ".join(sorted(part[col].dropna().astype(str).unique())) if col else ""
        for mode, share in lost.items():
            out.append({"measured on": label, "model (preset)": model or "–", "mode": mode,
                        "updates lost (% of weights, mean over steps)": f"{100 * share:.3f}",
                        "final loss (nats)": f"{loss.last().get(mode, math.nan):.3f}"})
    return ClaimsTable(pd.DataFrame(out, columns=[
        "measured on", "model (preset)", "mode", "updates lost (% of weights, mean over steps)",
        "final loss (nats)"]))


@takes_rows
def matmul_figure(roofline: pd.DataFrame):
    """One machine's matmul TFLOP/s per dtype beside its datasheet; the title and the legend
    say whether the bars were measured here or recorded (the subtitle: where and when)."""
    from workbook import plots

    mm = roofline[roofline["kind"] == "matmul"] if "kind" in roofline.columns else roofline
    ran = "measured here" if (mm.get("source", pd.Series(dtype=str)) == "measured").any() \
        else "recorded"
    run = mm["source"].map({"measured": "measured here", "recorded": "recorded"}) \
        .fillna(mm["source"]) if "source" in mm.columns else ran
    size = (f" ({int(mm['size'].iloc[0])}³)" if "size" in mm.columns and len(mm)
            and mm["size"].nunique() == 1 else "")
    # a CPU has no datasheet row: the title does not promise one
    sheet = " vs datasheet" if "source" in mm.columns and (mm["source"] == "datasheet").any() \
        else ""
    return plots.bars(mm.assign(run=run), x="dtype", group="run", log_y=True,
                      y_title="TFLOP/s (dense)",
                      title=f"matmul throughput per dtype{size}: {ran}{sheet}")


@takes_rows
def settled_caption(underflow: pd.DataFrame) -> str:
    """Markdown: where GradScaler's trace ended, which steps it skipped at that very scale, and
    why the shares table at that scale can still show no overflow (numbers from the rows)."""
    from workbook.precision.experiments import UNDERFLOW_PRESETS
    from workbook.results import preset_of

    rows = registry.main_rows(underflow.reset_index(drop=True))
    trace = rows[rows["part"] == "gradscaler"] if "part" in rows.columns else rows.iloc[0:0]
    wide = trace.pivot_table(index="step", columns="metric", values="value") \
        if len(trace) else pd.DataFrame()
    if wide.empty or not {"loss_scale", "skipped"} <= set(wide.columns):
        return "*No GradScaler trace in these rows yet.*"
    settled = int(math.log2(wide["loss_scale"].iloc[-1]))
    skipped = wide[wide["skipped"] > 0]
    here = skipped[skipped["loss_scale"] == 2.0 ** settled].index.astype(int).tolist()
    shares = rows[(rows["part"] == "underflow") & (rows["scaling"] == "gradscaler")
                  & (rows["metric"] == "share_overflow")]
    worst = float(shares["value"].max()) if len(shares) else math.nan
    interval = UNDERFLOW_PRESETS.get(preset_of(rows), UNDERFLOW_PRESETS["small"]).growth_interval
    text = (f"*{where_label(rows)}:* GradScaler skipped {len(skipped)} of its {len(wide)} steps "
            f"and ended at 2^{settled}")
    if not here:
        return text + f"; none of its skips happened at 2^{settled} itself."
    steps = ", ".join(map(str, here))
    word = "step" if len(here) == 1 else "steps"
    return (text + f". It skipped at 2^{settled} itself too ({word} {steps}), yet the "
            f"largest overflow share in the table at 2^{settled} is {worst:.5f}. The two look "
            "at different gradients: the table casts the FP32 gradients of one batch, captured "
            "before the trace (logits, hidden states, weights), after scaling, while "
            "GradScaler checks the FP16 backward pass of its own batches, one per step, where a "
            "gradient inside attention or the MLP, or a matmul's FP16 output, can pass 65 504 "
            "although the sampled ones would not. A scale is safe only for the batches seen so "
            f"far: GradScaler keeps probing, doubling after {interval} clean steps and halving at "
            "the next overflow.")


@takes_rows
def claims(training: pd.DataFrame, roofline: pd.DataFrame,
                   underflow: pd.DataFrame) -> pd.DataFrame:
    """The lecture's precision claims, checked against the roofline and the recorded runs."""
    # main_rows: one machine's rows (a duplicate index, from a concat, would confuse it)
    training = registry.main_rows(training.reset_index(drop=True))
    roofline = registry.main_rows(roofline.reset_index(drop=True))
    peaks = roofline_peaks(roofline) if not roofline.empty else {}
    nan = math.nan
    summary = _summary_numbers(training) if not training.empty else None

    def cell(mode: str, col: str) -> float:
        ok = summary is not None and mode in summary.index and col in summary.columns
        return float(summary.loc[mode, col]) if ok else nan

    def share(fmt: str, log2_scale: int = 0) -> float:
        if underflow.empty:
            return nan
        u = underflow
        sel = u[(u["part"] == "underflow") & (u["format"] == fmt) & (u["kind"] == "logit_grad")
                & (u["log2_scale"] == log2_scale) & (u["metric"] == "share_zero")]
        return float(sel["value"].iloc[0]) if len(sel) else nan

    # where_label: 'this machine (NVIDIA H200)' for rows measured in this kernel, else the
    # recording's device and date (provenance_label called live rows 'recorded on' too)
    where_t = where_label(training) if not training.empty else "no recorded rows yet"
    where_r = where_label(roofline) if not roofline.empty else "no recorded rows yet"
    where_u = where_label(underflow) if not underflow.empty else "no recorded rows yet"
    fp16_1e7 = explore(1e-7, ("fp16",))["stored"].iloc[0]
    return claims_table([
        Claim("FP16 is 33x faster than FP32 (H100 table: 1,979 vs 60 TFLOPS)", "lecture 7.2",
              33.0, peaks.get("fp16", nan) / peaks.get("fp32", nan), "x (matmul)", where_r),
        Claim("... and so a training step is that much faster (FP16 + GradScaler)",
              "lecture 7.2", 33.0, cell("fp16_gradscaler", "speedup_vs_fp32"), "x", where_t),
        Claim("mixed precision: 2-3x faster (BF16 autocast vs FP32)", "lecture 7.3", 2.5,
              cell("bf16_autocast", "speedup_vs_fp32"), "x", where_t, rel_tol=0.2),
        Claim("mixed precision: memory ~40 % lower (peak, BF16 autocast / FP32)",
              "lecture 7.3", 0.6, cell("bf16_autocast", "memory_vs_fp32"), "ratio", where_t),
        Claim("FP16 range reaches down to 6e-8 (smallest subnormal)", "lecture 7.2", 6e-8,
              float(format_table().set_index("format").loc["fp16", "smallest_subnormal"]),
              "value (unitless)", "torch.finfo / bit pattern", rel_tol=0.05),
        Claim("a gradient of 1e-7 becomes 0 in FP16", "lecture 7.3 (loss scaling)", 0.0,
              float(fp16_1e7), "stored value (unitless)",
              "torch cast (it is a subnormal, 2^-23)"),
        Claim("BF16 is more stable: no real gradient flushed to 0 (logit grads, unscaled)",
              "lecture 7.2", 0.0, share("bf16"), "share", where_u),
        Claim("a loss scale of 1024 rescues the gradients FP16 flushes to 0 (share of "
              "flushed logit grads rescued)", "lecture 7.3", 1.0,
              1 - share("fp16", 10) / share("fp16"), "share", where_u, rel_tol=0.01),
        Claim("BF16 training reaches FP32's loss (mean of last 5 steps)", "lecture 7.3",
              cell("fp32", "final_loss"), cell("bf16_autocast", "final_loss"), "nats",
              where_t, rel_tol=0.02),
    ])


@takes_rows
def predicted_step_times(rows: pd.DataFrame, roofline: pd.DataFrame) -> pd.DataFrame:
    """Step time if every mode were as much faster than FP32 as its matmuls are (roofline).

    An upper bound on the speed-up: softmax, norms, the optimizer and memory-bound kernels do
    not speed up with the matmul units. Empty if the roofline is not from this device.
    """
    ok = rows[(rows["metric"] == "step_time") & (rows["status"] == "ok")]
    if ok.empty or roofline.empty or "fp32" not in set(ok["mode"]):
        return pd.DataFrame()
    device = str(rows["device"].iloc[0]) if "device" in rows.columns else None
    if device and "device" in roofline.columns:
        roofline = roofline[roofline["device"].astype(str) == device]
    peaks = roofline_peaks(roofline) if not roofline.empty else {}
    if "fp32" not in peaks:
        return pd.DataFrame()
    fp32_ms = float(ok.loc[ok["mode"] == "fp32", "value"].iloc[0])
    return pd.DataFrame([{"mode": mode, "metric": "step_time",
                          "value": fp32_ms * peaks["fp32"] / peaks[dtype], "unit": "ms",
                          "source": "predicted", "status": "ok", "device": device}
                         for mode, dtype in MODE_DTYPE.items() if dtype in peaks])


@takes_rows
def speedup_caption(training: pd.DataFrame) -> str:
    """Markdown: each mode's step-time speed-up over ``fp32`` (matmuls on CUDA cores) and over
    ``tf32`` (FP32 on tensor cores), and peak memory over ``fp32``, from the training rows."""
    training = registry.main_rows(training.reset_index(drop=True))
    table = _summary_numbers(training) if not training.empty else None
    if table is None or "fp32" not in table.index or "step_time" not in table:
        return "*No training rows with an fp32 run yet.*"

    def over(base: str, col: str, faster: bool) -> str:  # speed-up base/mode; memory mode/base
        ratios = table.loc[base, col] / table[col] if faster else table[col] / table.loc[base, col]
        return ", ".join(f"{m} {r:.2f}×" for m, r in ratios.items() if m not in ("fp32", base))

    text = (f"Step time ({where_label(training)}), speed-up over fp32: "
            + over("fp32", "step_time", True))
    if "tf32" in table.index:
        text += "; over tf32: " + over("tf32", "step_time", True)
    if "peak_memory" in table:
        text += ". Peak memory over fp32: " + over("fp32", "peak_memory", False)
    return text + "."
