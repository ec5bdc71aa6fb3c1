"""The memory notebook's views: the formula explorer, measured-vs-formula tables and
figures, the largest-fit summary and the closing claims table."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from workbook.claims import Claim, claims_table
from workbook.config import takes_rows
from workbook.memory.formulas import (
    ATTENTIONS,
    GB,
    MODEL_SHAPES,
    PRECISIONS,
    activation_bytes,
    bytes_per_param,
    fit_exponent,
    formula_fit,
    gpt_params,
    lecture_175b,
    predicted_breakdown,
    scenario,
)
from workbook.memory.measure import fit_probe
from workbook.registry import main_rows
from workbook.results import where_label
from workbook.stats import median_interval


def gpu_gb_default() -> int:
    """The explorers' GPU memory to start from: this machine's GPU (``hardware.detect``, in
    GB), else an H100's 80 GB, the lecture's card."""
    from workbook.hardware import detect

    machine = detect()
    return int(round(min(192, max(16, machine.memory_gb)))) if machine.device == "cuda" else 80


def memory_explorer() -> Any:
    """The formula at any scale: stacked GB per component against one GPU's memory (this
    machine's GPU to start with, :func:`gpu_gb_default`)."""
    from workbook import plots, widgets

    fig = plots.figure("Training memory (formula)", "component", "GB")
    fig.add_bar(x=[], y=[], name="needed", marker_color=plots.color_for("needed"))
    fig.add_bar(x=[], y=[], name="one GPU", marker_color=plots.color_for("one GPU"))

    def draw(fig: Any, model: str, precision: str, seq_len: int, batch: int,
             checkpointing: bool, attention: str, gpu_gb: int) -> str:
        table = scenario(model, precision, seq_len, batch, checkpointing, attention)
        total = table["GB"].sum()
        fig.data[0].x, fig.data[0].y = list(table["component"]) + ["total"], list(
            table["GB"]) + [total]
        fig.data[1].x, fig.data[1].y = ["total"], [gpu_gb]
        psi = table["n_params"].iloc[0]
        return (f"{model}: Ψ = {psi / 1e9:.2f}B, {total:,.0f} GB to train "
                f"({precision}, batch {batch} × {seq_len}, checkpointing {checkpointing}, "
                f"{attention} attention) = "
                f"{total / gpu_gb:.1f}× one {gpu_gb} GB GPU")

    return widgets.Explorer({
        "model": widgets.dropdown("model", list(MODEL_SHAPES), "GPT-3 (175B)"),
        "precision": widgets.dropdown("precision", list(PRECISIONS), "fp32"),
        "seq_len": widgets.slider("seq_len", 128, 32768, 128, 2048),
        "batch": widgets.slider("batch", 1, 64, 1, 1),
        "checkpointing": widgets.dropdown("checkpointing", [False, True], False),
        "attention": widgets.dropdown("attention", list(ATTENTIONS), "eager"),
        "gpu_gb": widgets.slider("GPU GB", 16, 192, 1, gpu_gb_default()),
    }, draw, fig)


@takes_rows
def breakdown_table(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per device and component: formula beside each measurement method, in MB
    (this machine's rows first, other devices' recorded rows after them). A method that has no
    value for a component (no allocator count of the attention scores, no formula for the CUDA
    context) reads '–'; the value columns are text, for display."""
    out = []
    for where, part in by_device(rows):
        ok = part[part["status"] == "ok"]
        table = ok.pivot_table(index=["seq_len", "checkpointing", "component"],
                               columns="method", values="value", aggfunc="mean") / 1e6
        out.append(table.reset_index().assign(where=where))
    if not out:
        return pd.DataFrame()
    frame = pd.concat(out, ignore_index=True)
    methods = [c for c in frame.columns if c not in ("seq_len", "checkpointing", "component",
                                                     "where")]
    for method in methods:
        frame[method] = [f"{mb:,.2f}" if mb == mb else _no_value(method, component)
                         for mb, component in zip(frame[method], frame["component"],
                                                  strict=True)]
    frame.columns = [f"{c} (MB)" if c in methods else c for c in frame.columns]
    return frame


def _no_value(method: str, component: str) -> str:
    """Why a breakdown cell has no number, said in the cell."""
    if method == "formula":
        return "– (no term for it in the formula)"
    if method == "tensors":
        return "– (model states only)"
    if method == "saved":
        return "– (activations only)"
    if method == "allocator" and component in ("attention scores", "logits (fp32)"):
        return "– (inside activations: no allocation of its own)"
    return "– (not measured on this device)"


@takes_rows
def plot_breakdown(rows: pd.DataFrame, seq_len: int | None = None, title: str = "") -> Any:
    """Grouped bars per component: formula vs each measurement method, ckpt off and on, for
    the first device in the rows (this machine's, where it measured) at ``seq_len`` (default:
    that device's longest)."""
    from workbook import plots

    devices = by_device(rows)
    where, part = devices[0] if devices else ("", rows)
    if seq_len is None:
        seq_len = int(part["seq_len"].max()) if len(part) else 0
    ok = part[(part["status"] == "ok") & (part["seq_len"] == seq_len)]
    ok = ok[~ok["component"].isin(["peak in forward", "peak in backward", "peak in step"])]
    fig = plots.figure(f"{title or f'Memory by component, seq_len {seq_len}'}<br><sup>{where}"
                       "</sup>", "component", "MB")
    for (ckpt, method), g in ok.groupby(["checkpointing", "method"]):
        on = ckpt in (True, "True")  # colour: the method; hatched: with checkpointing
        fig.add_bar(x=g["component"], y=g["value"] / 1e6,
                    name=f"{method}{' (ckpt)' if on else ''}",
                    marker_color=plots.color_for(method), marker_pattern_shape="/" if on else "")
    fig.update_layout(barmode="group")
    return fig


@takes_rows
def fit_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Largest fitting n_layer measured beside the formula's, per device (``where``: this
    machine, or recorded on which device and date; ``probe``: which version of the search
    made the rows, :func:`fit_probe`) and checkpointing setting."""
    if rows.empty:
        return pd.DataFrame()
    out = []
    for _, device in by_device(rows):  # this machine's first (registry.main_rows' device)
        for ckpt, part in device.groupby("checkpointing", sort=True):
            out.append(_fit_row(part, ckpt))
    return pd.DataFrame(out).round({"params (B)": 2, "peak (GB)": 1})


def _fit_row(part: pd.DataFrame, ckpt: Any) -> dict[str, Any]:
    """One row of :func:`fit_summary`: a device's search at one checkpointing setting."""
    r = part.iloc[0]
    fits = part[part["status"] == "ok"]
    best = fits.loc[fits["n_layer"].idxmax()] if len(fits) else None
    return {
        "where": where_label(part), "probe": fit_probe(r.get("recorded_at")),
        "checkpointing": ckpt, "d_model": r["d_model"],
        "batch x seq": f"{r['batch']} x {r['seq_len']}",
        "largest n_layer measured": int(r["largest_fitting_layers"]),
        "params (B)": best["n_params"] / 1e9 if best is not None else float("nan"),
        "peak (GB)": best["value"] / 1e9 if best is not None else float("nan"),
        "largest n_layer by formula": formula_fit(
            int(r["d_model"]), 32, 50304, int(r["seq_len"]), int(r["batch"]),
            str(r["precision"]), ckpt in (True, "True"), float(r["gpu_bytes"])),
    }


def fit_formula_gb(r: pd.Series, n_layer: int) -> float:
    """The formula's peak (GB) of a largest-fit probe's model with ``n_layer`` layers: its
    model states (bytes per parameter × Ψ) + the activations of fused-attention layers."""
    e = 4 if r["precision"] == "fp32" else 2
    states = (sum(bytes_per_param(str(r["precision"])).values())
              * gpt_params(n_layer, int(r["d_model"]), 50304, int(r["seq_len"])))
    act = activation_bytes(n_layer, int(r["d_model"]), 32, int(r["seq_len"]), int(r["batch"]),
                           act_bytes=e, checkpointing=r["checkpointing"] in (True, "True"),
                           attention_matrix=False, vocab=50304)["total"]
    return (states + act) / GB


@takes_rows
def claims(rows: pd.DataFrame, sweep: pd.DataFrame | None = None,
           recompute: pd.DataFrame | None = None) -> pd.DataFrame:
    """The lecture's memory claims: predicted, measured here (or recorded), verdict.

    ``rows``: the breakdown; ``sweep``: activations vs seq_len; ``recompute``: checkpointing's
    time. Each claim uses this machine's rows where there are some (``by_device`` puts them
    first), else the first recorded device's.
    """
    lect = lecture_175b().set_index("component")["GB"]
    need = float(lect.iloc[:4].sum())
    # nothing of 175B parameters runs here: the 'measured' cell is the formula's own sum
    out = [Claim("175B needs ~3 TB to train (≈ 38 H100s of 80 GB); checked against the "
                 "formula's sum, not a measurement", "lecture, sec. 3.2", 3000.0, need, "GB",
                 "formula's sum (bytes per parameter + activations), not measured: no 175B run",
                 rel_tol=0.1)]
    devices = by_device(rows[rows["status"] == "ok"]) if len(rows) else []
    if devices:
        where, ok = devices[0]
        t = ok[ok["method"] == "tensors"]
        opt = t[t["component"] == "optimizer"]["value"].mean()
        par = t[t["component"] == "params"]["value"].mean()
        states = ok[ok["component"].isin(["params", "grads", "optimizer"])]

        def state_mb(method: str) -> float:  # Ψ × bytes per parameter, summed over the three
            part = states[states["method"] == method].groupby("component")["value"].mean()
            return float(part.sum(min_count=1)) / 1e6

        prec = f"{ok['precision'].iloc[0]}; " if "precision" in ok else ""
        out.append(Claim(f"parameters, gradients and Adam states take the formula's bytes "
                         f"({prec}the bytes of their tensors)",
                         "lecture, sec. 3.1 (bytes per parameter)", state_mb("formula"),
                         state_mb("tensors"), "MB", where, rel_tol=0.0))
        out.append(Claim("Adam's states take twice the parameters' memory",
                         "lecture, sec. 3.1 (1,400 GB vs 700 GB)", 2.0, float(opt / par), "×",
                         where))
        saved = ok[(ok["method"] == "saved") & (ok["component"] == "activations")]
        seq = saved["seq_len"].max()
        on = saved[(saved["seq_len"] == seq) & _is(saved["checkpointing"], True)]
        off = saved[(saved["seq_len"] == seq) & _is(saved["checkpointing"], False)]
        pred = ok[(ok["method"] == "formula") & (ok["component"] == "activations")
                  & (ok["seq_len"] == seq)]
        if len(on) and len(off):
            r_meas = off["value"].mean() / on["value"].mean()
            p_off = pred[_is(pred["checkpointing"], False)]["value"].mean()
            p_on = pred[_is(pred["checkpointing"], True)]["value"].mean()
            out.append(Claim(f"recomputation (checkpointing) saves activation memory "
                             f"(× less at seq_len {seq})", "lecture (recomputation)",
                             float(p_off / p_on), float(r_meas), "×", where))
    if sweep is not None and len(sweep):
        out += sweep_claims(sweep)
    if recompute is not None and len(recompute):
        out += recompute_claims(recompute)
    return claims_table(out)


EXPONENT_TOL = 0.1  # |k measured − k predicted| that still holds: a tenth of the s→s² step


@takes_rows
def sweep_claims(rows: pd.DataFrame) -> list[Claim]:
    """Eager grows ~s², SDPA ~s: fitted exponents against the formula's over the same
    lengths, and the eager − SDPA difference against 2, each within :data:`EXPONENT_TOL`."""
    k = sweep_exponents(rows)
    if k.empty:
        return []
    k = k[k["where"] == k["where"].iloc[0]].set_index("series")
    words = {"eager": "eager attention's activations grow with the s² term (formula's k over "
                      "the same lengths)",
             "sdpa": "fused attention (SDPA/flash) activations grow ~s (k = 1)",
             "eager s×s": "the s×s matrices eager attention saves grow ~s² (k = 2)"}
    out = []
    for series, text in words.items():
        if series in k.index:
            r = k.loc[series]
            out.append(Claim(f"{text}; seq_len {r['lengths']}, {r['method']}",
                             "lecture 6.4 (standard attention O(N²) memory, FlashAttention "
                             "O(N))",
                             float(r["formula k"]), float(r["measured k"]), "k",
                             str(r["where"]), rel_tol=0.0, abs_tol=EXPONENT_TOL))
    per = score_bytes_per_element(rows)
    if len(per):
        r = per.iloc[0]
        out.append(Claim(f"bytes kept per attention-matrix element ({r['precision']}, "
                         f"seq_len {r['seq_len']})", "Korthikanti et al. 2022 (e bytes per "
                         "softmax output, no dropout)", float(r["formula bytes/element"]),
                         float(r["measured bytes/element"]), "bytes", str(r["where"])))
    return out


@takes_rows
def recompute_claims(rows: pd.DataFrame) -> list[Claim]:
    """Checkpointing's recompute time: the median of each repeat's pair with the median's
    interval (:func:`median_interval`), against one extra forward (+1/3, the lecture) and
    against the blocks' forward alone (what transformers recomputes). Holds only if the
    prediction lies in the interval."""
    table = recompute_table(rows)
    if table.empty:
        return []
    r = table.iloc[0]
    out = []
    for col, source in (("predicted %: one forward (lecture)", "one extra forward: 2 of a "
                         "step's 6 FLOPs per parameter-token (Chen et al. 2016)"),
                        ("predicted %: blocks' forward", "formula: the blocks' forward over "
                         "the step's FLOPs (the LM head is not recomputed)")):
        out.append(Claim(f"checkpointing's step-time overhead (median of {int(r['repeats'])} "
                         f"repeats' pairs; interval: the median's, "
                         f"{r['median interval coverage %']:.3g}% confidence)",
                         source, float(r[col]), float(r["overhead % (median of pairs)"]), "%",
                         str(r["where"]), low=float(r["overhead % (median: low)"]),
                         high=float(r["overhead % (median: high)"])))
    return out


@takes_rows
def plot_fit(rows: pd.DataFrame) -> Any:
    """The largest-fit search of the first device in ``rows``: each probe's peak (oom probes
    at the GPU's size, marked x), the formula's curve and the GPU's memory; the title's
    provenance is that device's (call it once per device for several)."""
    from workbook import plots

    if not rows.empty and "device" in rows:  # one device's search per figure, and its title
        rows = rows[rows["device"] == rows["device"].iloc[0]]  # names that device alone
    fig = plots.figure(plots.title_with_source("Peak memory of two training steps vs depth",
                                               rows), "n_layer", "GB")
    if rows.empty:
        return fig
    r = rows.iloc[0]
    gpu = float(r["gpu_bytes"]) / GB
    ok, oom = rows[rows["status"] == "ok"], rows[rows["status"] == "oom"]
    color = plots.color_for("peak")  # the measured peak and the formula's: one quantity
    fig.add_scatter(x=ok["n_layer"], y=ok["value"] / GB, mode="markers",
                    name="peak (measured, fits)", marker={"size": 9, "color": color})
    fig.add_scatter(x=oom["n_layer"], y=[gpu] * len(oom), mode="markers", name="oom",
                    marker={"symbol": "x", "size": 11, "color": plots.color_for("oom")})
    n = list(range(1, int(rows["n_layer"].max()) + 1))
    need = [fit_formula_gb(r, k) for k in n]
    fig.add_scatter(x=n, y=need, mode="lines", name="peak (formula: states + activations)",
                    line={"dash": "dash", "color": color})
    fig.add_hline(y=gpu, line={"dash": "dot", "color": "#555"},
                  # in GiB too: the card's name counts GiB ('80GB' is 85 GB of 10⁹ bytes)
                  annotation_text=f"{r['device']}: {gpu:.0f} GB "
                                  f"({float(r['gpu_bytes']) / 2**30:.0f} GiB)")
    return fig


# --------------------------------------------------------------- one device at a time


@takes_rows
def by_device(rows: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The rows split by device, this machine's first: ``(where_label, rows)`` pairs. Rows
    measured here are the numbers; the ledger's rows of other devices come after them as
    references (``registry.with_references`` put them together)."""
    if rows.empty:
        return []
    if "device" not in rows.columns:
        return [(where_label(rows), rows)]
    main = main_rows(rows)["device"]  # this machine's, else the latest recording's
    first = str(main.iloc[0]) if len(main) else None
    parts = [(where_label(part), part) for _, part in rows.groupby("device", sort=False)]
    return sorted(parts, key=lambda p: (not p[0].startswith("this machine"),
                                        str(p[1]["device"].iloc[0]) != first))


def _is(column: pd.Series, value: bool) -> pd.Series:
    return column.astype(str) == str(value)


# --------------------------------------------------------------- activations vs seq_len


def sweep_method(rows: pd.DataFrame) -> str:
    """The measurement a sweep's figure and claims use: the allocator's ``peak`` where the
    rows have it (a GPU), else the bytes ``saved`` for backward (exact on any device)."""
    ok = rows[(rows["status"] == "ok") & (rows["method"] == "peak")]
    return "peak" if len(ok) else "saved"


@takes_rows
def sweep_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per device, attention and seq_len: the formula with and without its s² term beside the
    measured bytes, in MB (``oom`` where the length did not fit)."""
    out = []
    for where, part in by_device(rows):
        for (attention, s), g in part.groupby(["attention", "seq_len"]):
            value = g.set_index("method")["value"]
            status = "oom" if (g["status"] == "oom").any() else "ok"
            row = {"where": where, "attention": attention, "seq_len": int(s),
                   "formula (MB)": value.get("formula", math.nan) / 1e6,
                   "formula s² part (MB)": value.get("formula scores", math.nan) / 1e6,
                   "saved (MB)": value.get("saved", math.nan) / 1e6,
                   "saved s×s (MB)": value.get("saved scores", math.nan) / 1e6,
                   "peak (MB)": value.get("peak", math.nan) / 1e6 if status == "ok"
                   else math.nan, "status": status}
            out.append(row)
    return pd.DataFrame(out).round(2)


@takes_rows
def sweep_exponents(rows: pd.DataFrame) -> pd.DataFrame:
    """k of bytes ∝ seq_len^k per device and attention, fitted through the lengths that ran:
    measured (:func:`sweep_method`), the formula over the same lengths, and the eager − SDPA
    difference (the s×s matrices alone, predicted k = 2)."""
    out = []
    for where, part in by_device(rows):
        method = sweep_method(part)
        ok = part[part["status"] == "ok"]
        meas = ok[ok["method"] == method].pivot_table(index="seq_len", columns="attention",
                                                      values="value")
        pred = ok[ok["method"] == "formula"].pivot_table(index="seq_len",
                                                         columns="attention", values="value")
        for attention in meas.columns:
            m = meas[attention].dropna()
            if len(m) < 2:
                continue
            p = pred[attention].reindex(m.index)
            out.append({"where": where, "series": attention, "method": method,
                        "lengths": ", ".join(str(int(s)) for s in m.index),
                        "measured k": fit_exponent(list(m.index), list(m)),
                        "formula k": fit_exponent(list(p.index), list(p))})
        scores = ok[(ok["method"] == "saved scores") & (ok["attention"] == "eager")]
        scores = scores[scores["value"] > 0].sort_values("seq_len")
        if len(scores) >= 2:
            out.append({"where": where, "series": "eager s×s", "method": "saved scores",
                        "lengths": ", ".join(str(int(s)) for s in scores["seq_len"]),
                        "measured k": fit_exponent(list(scores["seq_len"]),
                                                   list(scores["value"])),
                        "formula k": 2.0})
    return pd.DataFrame(out).round(3)


@takes_rows
def score_bytes_per_element(rows: pd.DataFrame) -> pd.DataFrame:
    """Bytes eager attention keeps per element of the s×s matrices (b·a·s² of them per
    layer), measured (``saved scores``) beside the formula's, at the longest length that ran,
    per device. Under autocast the softmax runs in fp32 and its bf16 copy is kept too."""
    out = []
    for where, part in by_device(rows):
        ok = part[(part["status"] == "ok") & (part["attention"] == "eager")]
        s = ok[ok["method"] == "saved scores"]["seq_len"].max()
        if pd.isna(s):
            continue
        g = ok[ok["seq_len"] == s].set_index("method")["value"]
        r = ok.iloc[0]
        n = int(r["n_layer"]) * int(r["n_head"]) * int(r["batch"]) * int(s) ** 2
        out.append({"where": where, "seq_len": int(s), "precision": r["precision"],
                    "formula bytes/element": g.get("formula scores", math.nan) / n,
                    "measured bytes/element": g.get("saved scores", math.nan) / n})
    return pd.DataFrame(out)


@takes_rows
def plot_seq_sweep(rows: pd.DataFrame) -> Any:
    """Activation bytes against seq_len (log-log): measured points, the formula's lines (eager
    with the s² term, SDPA without) for each device's own model, ``oom`` lengths as ✕ at the
    formula's value; other devices' recorded rows hollow and their formulas dotted, labelled,
    each device named in the subtitle."""
    from workbook import plots

    fig, lines = plots.figure("", "seq_len", "MB", log_x=True, log_y=True), []
    for i, (where, part) in enumerate(by_device(rows)):
        method = sweep_method(part)
        tag = "" if i == 0 else f" [{part['device'].iloc[0]}]"
        for attention, g in part.groupby("attention"):
            color = plots.color_for(str(attention))
            pred = g[(g["method"] == "formula") & (g["status"] == "ok")].sort_values("seq_len")
            meas = g[(g["method"] == method) & (g["status"] == "ok")].sort_values("seq_len")
            oom = g[g["status"] == "oom"].merge(pred[["seq_len", "value"]], on="seq_len",
                                                suffixes=("", "_pred"))
            words = "with s²" if attention == "eager" else "without s²"
            fig.add_scatter(x=pred["seq_len"], y=pred["value"] / 1e6, mode="lines",
                            name=f"{attention}: formula ({words}){tag}",
                            line={"dash": "dash" if i == 0 else "dot", "color": color})
            fig.add_scatter(x=meas["seq_len"], y=meas["value"] / 1e6, mode="markers",
                            name=f"{attention}: measured ({method}){tag}",
                            marker={"size": 10, "color": color,
                                    "symbol": "circle" if i == 0 else "circle-open"})
            if len(oom):
                fig.add_scatter(x=oom["seq_len"], y=oom["value_pred"] / 1e6, mode="markers",
                                name=f"oom ({attention}){tag}",
                                marker={"symbol": "x", "size": 12,
                                        "color": plots.color_for("oom")})
        lines.append(f"<br><sup>{where}, measured: {method}</sup>")
    return fig.update_layout(title="Activations of one forward vs seq_len" + "".join(lines))


# --------------------------------------------------------------- checkpointing: time


@takes_rows
def recompute_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per device: the batch, step time with and without checkpointing (medians over the
    repeats), the overhead twice — the ratio of those medians, and the median of each repeat's
    own pair (``overhead % (median of pairs)``) with its [min, max] (``low``, ``high``) —, memory
    saved, and the predicted overhead (overheads in %; every number to two decimals)."""
    out = []
    for where, part in by_device(rows):
        ok = part[part["status"] == "ok"]
        timed = ok[ok["metric"] == "step_ms"]
        if timed.empty:
            continue
        pairs = timed.pivot_table(index="repeat", columns="checkpointing", values="value")
        pairs.columns = [str(c) for c in pairs.columns]
        ratio = (pairs["True"] / pairs["False"] - 1).dropna()
        mem = ok[ok["metric"] == "bytes"]
        pred = ok[ok["metric"] == "overhead"].set_index("method")["value"]

        def mb(method: str, ckpt: bool, mem: pd.DataFrame = mem) -> float:
            v = mem[(mem["method"] == method) & _is(mem["checkpointing"], ckpt)]["value"]
            return float(v.mean()) / 1e6 if len(v) else math.nan

        shape = timed.iloc[0]
        out.append({
            "where": where, "batch x seq_len": f"{int(shape['batch'])} x "
                                                f"{int(shape['seq_len'])}",
            "repeats": len(ratio),
            "step ms (no ckpt)": pairs["False"].median(),
            "step ms (ckpt)": pairs["True"].median(),
            # two statistics, named apart: the step times' medians compared (what the two ms
            # columns give) and the median of each repeat's own pair (what the claims judge)
            "overhead % (ratio of medians)": 100 * (pairs["True"].median()
                                                    / pairs["False"].median() - 1),
            "overhead % (median of pairs)": 100 * ratio.median(),
            "overhead % (pairs: min)": 100 * ratio.min(),
            "overhead % (pairs: max)": 100 * ratio.max(),
            # the median's own interval (order statistics, ≥ 80 %): what the claims judge by,
            # so that one odd repeat at either end does not decide a verdict
            **dict(zip(("overhead % (median: low)", "overhead % (median: high)",
                        "median interval coverage %"),
                       [100 * x for x in median_interval(list(ratio))], strict=True)),
            "predicted %: one forward (lecture)": 100 * pred.get("formula (lecture)", math.nan),
            "predicted %: blocks' forward": 100 * pred.get("formula (blocks)", math.nan),
            "saved MB (no ckpt)": mb("saved", False), "saved MB (ckpt)": mb("saved", True),
            "peak MB (no ckpt)": mb("peak", False), "peak MB (ckpt)": mb("peak", True)})
    return pd.DataFrame(out).round(2)


# --------------------------------------------------------------- the gap, item by item


def _formula_items(r: pd.Series) -> dict[str, float]:
    pred = predicted_breakdown(int(r["n_params"]), int(r["n_layer"]), int(r["d_model"]),
                               int(r["n_head"]), int(r["vocab"]), int(r["seq_len"]),
                               int(r["batch"]), str(r["precision"]), str(r["optimizer"]),
                               str(r["checkpointing"]) == "True", str(r["attention"]))
    return pred.set_index("component")["value"].to_dict()


@takes_rows
def gap_table(rows: pd.DataFrame) -> pd.DataFrame:
    """:func:`gap_items` as the notebook shows it: the items with a formula and a measurement
    on that device (an older recording lacks some; the formula has no per-phase peaks, which
    the caption prints), rounded to the MB. One fp32 logits tensor's size is in the caption."""
    table = gap_items(rows)
    if table.empty:
        return table
    shown = table.dropna(subset=["formula GB", "measured GB"]).drop(
        columns="one fp32 logits tensor GB")
    return shown.round(3).reset_index(drop=True)


@takes_rows
def gap_items(rows: pd.DataFrame) -> pd.DataFrame:
    """Where the measured peak parts from the formula's, item by item, in GB, for the
    breakdown configuration with the largest gap on each device that measured a peak (a GPU).

    Items: the three model states (allocator), the saved s×s attention matrices and the rest
    of the activations (the formula splits the same way), the transients at the peak (peak
    minus everything held after the forward: the loss's fp32 logits and their gradient, the
    backward's buffers) — their sum is the measured peak. Then what the allocator count does
    not see: the caching allocator's reserve and the CUDA context.
    """
    out = []
    for where, part in by_device(rows):
        ok = part[(part["status"] == "ok") & (part["method"].isin(["allocator", "saved"]))]
        peaks = ok[(ok["component"] == "peak") & (ok["method"] == "allocator")]
        if peaks.empty:
            continue
        keys = ["seq_len", "checkpointing"]
        gaps = []
        for key, g in ok.groupby(keys):
            got = g.set_index(["component", "method"])["value"]
            if ("peak", "allocator") not in got:
                continue
            formula = _formula_items(g.iloc[0])
            gaps.append((got[("peak", "allocator")] - formula["peak"], key, got, formula))
        _, key, got, formula = max(gaps, key=lambda t: t[0])
        held = {c: got.get((c, "allocator"), math.nan)
                for c in ("params", "grads", "optimizer", "activations")}
        scores = got.get(("attention scores", "saved"), math.nan)
        peak = got[("peak", "allocator")]
        items = [("parameters", formula["params"], held["params"]),
                 ("gradients (+ first backward's buffers)", formula["grads"], held["grads"]),
                 ("optimizer states", formula["optimizer"], held["optimizer"]),
                 ("activations: s×s attention matrices", formula["attention scores"], scores),
                 ("activations: the rest", formula["activations"] - formula["attention scores"],
                  held["activations"] - scores),
                 ("activations (all)", formula["activations"], held["activations"]),
                 ("transients at the peak", 0.0, peak - sum(held.values())),
                 ("peak (allocated)", formula["peak"], peak),
                 ("allocator reserve (not in the count)", 0.0,
                  got.get(("allocator reserve", "allocator"), math.nan)),
                 ("CUDA context (not in the count)", 0.0,
                  got.get(("CUDA context", "allocator"), math.nan))]
        items += [(f"peak in {phase}", math.nan, got.get((f"peak in {phase}", "allocator"),
                                                         math.nan))
                  for phase in ("forward", "backward", "step")]
        for item, f, m in items:
            out.append({"where": where, "seq_len": int(key[0]), "checkpointing": key[1],
                        "item": item, "formula GB": f / GB, "measured GB": m / GB,
                        "Δ GB": (m - f) / GB,
                        "one fp32 logits tensor GB": formula["logits (fp32)"] / GB})
    return pd.DataFrame(out)
